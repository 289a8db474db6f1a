"""Conformance tests of full-text search: one text, the same runs from every store,
directly (``store.search(query, text=...)``) and through a Broker (``db("words")``).

:class:`~dask_broker.testing.StoreConformance` inherits
:class:`TextSearchConformance`.  The expected runs are written out by hand from the
rule of :mod:`dask_broker.text_search` (every word, in any string value, at any
depth; case-insensitive; accents count; no stemming; stop words are words).

This module needs pytest (a test dependency of dask_broker).
"""

from __future__ import annotations

import event_model
import pytest

from ..errors import ConflictingArgumentsError, QueryError

__all__ = ["TextSearchConformance"]

_T0 = 1_700_000_000.0

#: The runs the searches run over, by label, oldest first.
TEXT_RUNS = {
    "t1": {"scan_id": 1, "plan_name": "grid_scan", "operator": "O'Brien",
           "sample": {"name": "Silicon wafer", "holder": {"note": "Batch A-17"}},
           "tags": ["hot", "Dry"]},
    "t2": {"scan_id": 2, "plan_name": "scan", "sample": "Germanium", "tags": ["cold"],
           "note": "silicon-free, grid"},
    "t3": {"scan_id": 3, "plan_name": "count", "purpose": "The calibration of the detector",
           "language": "english", "count": 17},
    "t4": {"scan_id": 4, "plan_name": "rel_scan", "samples": [{"name": "Si"}, {"name": "GaAs"}],
           "comment": "café scans"},
    "t5": {"scan_id": 5, "plan_name": "Scan", "matrix": [["deep", ["deeper"]]],
           "notes": ["Silicon"]},
}

#: (text, the labels of the runs it matches).
TEXT_CASES = [
    ("silicon", {"t1", "t2", "t5"}),       # nested, inside "silicon-free", in a list
    ("SILICON Wafer", {"t1"}),             # case-insensitive; every word
    ("wafer silicon", {"t1"}),             # in any order
    ("silicon  cold", {"t2"}),             # in different values
    ("wafer", {"t1"}),
    ("english", set()),                    # a field named language is not searched
    ("grid", {"t2"}),                      # grid_scan is one word
    ("grid_scan", {"t1"}),
    ("scan", {"t2", "t5"}),                # rel_scan and scans are other words
    ("scans", {"t4"}),
    ("17", {"t1"}),                        # numbers are not searched, strings are
    ("A-17", {"t1"}),                      # punctuation separates words
    ("o'brien", {"t1"}),                   # the apostrophe belongs to the word
    ("brien", set()),
    ("the", {"t3"}),                       # a stop word is a word
    ("of the", {"t3"}),
    ("calibration, detector!", {"t3"}),
    ("café", {"t4"}),
    ("CAFÉ", {"t4"}),
    ("cafe", set()),                       # accents count
    ("deeper", {"t5"}),                    # lists in lists
    ("si", {"t4"}),
    ("germanium si", set()),
    ("nothing", set()),
]

#: (query, text, labels): text search AND-ed with a query.
COMBINED_CASES = [
    ({"plan_name": "scan"}, "silicon", {"t2"}),
    ({"scan_id": {"$gte": 2}}, "silicon", {"t2", "t5"}),
    ({"scan_id": {"$in": [1, 3]}}, "the", {"t3"}),
    ({"plan_name": {"$regex": "^Sc"}}, "silicon", {"t5"}),
    ({"scan_id": 1}, "cold", set()),
]

#: (text, what the QueryError says).
BAD_TEXTS = [
    ("", "has no word"),
    ("-- !", "has no word"),
    (3, "give the words as a str"),
    (b"silicon", "give the words as a str"),
    ("x" * 10_001, "at most 10000"),
]


class TextSearchConformance:
    """Full-text searches; mixed into StoreConformance (which provides ``store``)."""

    @pytest.fixture
    def text_runs(self, store) -> dict[str, str]:
        """The TEXT_RUNS in the store: their uids by label."""
        uids = {}
        for i, (label, metadata) in enumerate(TEXT_RUNS.items()):
            start = event_model.compose_run(time=_T0 + i, metadata=metadata).start_doc
            store.insert_start(start)
            uids[label] = start["uid"]
        return uids

    @staticmethod
    def _expected(uids: dict, labels: set) -> list[str]:
        return [uids[k] for k in reversed(uids) if k in labels]  # newest first

    def test_text_search_matches_the_rule(self, store, text_runs):
        """Each of TEXT_CASES returns its runs, newest first (a failure lists them all)."""
        wrong = []
        for text, labels in TEXT_CASES:
            got = [d["uid"] for d in store.search(text=text)]
            if got != self._expected(text_runs, labels):
                wrong.append(f"{text!r}: got {got}, expected {sorted(labels)}")
        assert not wrong, "\n".join(wrong)

    def test_text_search_and_query(self, store, text_runs):
        wrong = []
        for query, text, labels in COMBINED_CASES:
            got = [d["uid"] for d in store.search(query, text=text)]
            if got != self._expected(text_runs, labels):
                wrong.append(f"{query!r} + {text!r}: got {got}, expected {sorted(labels)}")
        assert not wrong, "\n".join(wrong)

    def test_text_search_through_a_broker(self, store, text_runs):
        """``db("words")``, ``db(text_search=...)``, ``db.search(text=...)``, with keyword
        conditions, the time window and the filters in force (all AND-ed)."""
        from ..broker import Broker

        db = Broker(store)

        def uids(headers):
            return [h.uid for h in headers]

        want = self._expected(text_runs, {"t1", "t2", "t5"})
        assert uids(db("Silicon")) == want
        assert uids(db(text_search="silicon")) == want
        assert uids(db.search(text="silicon")) == want
        assert uids(db("silicon", plan_name="scan")) == self._expected(text_runs, {"t2"})
        assert uids(db.search({"scan_id": {"$gt": 1}}, text="silicon")) == \
            self._expected(text_runs, {"t2", "t5"})
        assert uids(db("silicon", since=_T0 + 1, until=_T0 + 4)) == \
            self._expected(text_runs, {"t2"})
        db.add_filter(plan_name="grid_scan")
        assert uids(db("silicon")) == self._expected(text_runs, {"t1"})
        assert uids(db("cold")) == []
        db.clear_filters()
        assert uids(db("nothing", plan_name="scan")) == []
        with pytest.raises(ConflictingArgumentsError, match="text_search"):
            db("silicon", text_search="wafer")

    def test_bad_texts_are_query_errors(self, store, text_runs):
        """A text that is no str, too long or without a word: QueryError when search is
        called, from the store and from a Broker."""
        from ..broker import Broker

        db = Broker(store)
        for text, named in BAD_TEXTS:
            for call in (lambda: store.search(text=text), lambda: db(text),
                         lambda: db.search({"scan_id": 1}, text=text)):
                with pytest.raises(QueryError, match=named):
                    call()
