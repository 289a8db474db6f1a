"""Conformance tests of searches: one query, the same runs (or the same error) from
every store, directly and through a :class:`~dask_broker.Broker`.

:class:`~dask_broker.testing.StoreConformance` inherits
:class:`QueryConformance`, so a backend's test class runs these with the rest of
the suite.  The expected runs are written out by hand with MongoDB's meaning of
each query (lists of documents, regular expressions, ``$elemMatch``, ...).

This module needs pytest (a test dependency of dask_broker).
"""

from __future__ import annotations

import datetime
import re
import reprlib

import event_model
import pytest

from ..errors import DaskBrokerError, QueryError, UnsupportedQueryError
from ..query import MAX_IN_VALUES, MAX_QUERY_DEPTH

__all__ = ["QueryConformance"]

_T0 = 1_700_000_000.0

#: The runs the searches run over, by label, oldest first.
QUERY_RUNS = {
    "r1": {"scan_id": 1, "plan_name": "scan", "tags": ["hot", "dry"], "flag": True,
           "samples": [{"name": "Si", "mass": 2.0}, {"name": "Ge", "mass": 5.0}],
           "sample": {"name": "Si", "T": 300}},
    "r2": {"scan_id": 2, "plan_name": "Scan", "tags": ["cold"], "flag": False,
           "samples": [{"name": "Ge"}, {"mass": 1.0}]},
    "r3": {"scan_id": 3, "plan_name": "count", "tags": "hot", "flag": 1,
           "samples": {"name": "Si"}},
    "r4": {"scan_id": 4, "plan_name": "grid\nscan", "flag": 0, "samples": [],
           "matrix": [[1, 2], [3, 4]]},
    "r5": {"scan_id": 5, "plan_name": "rel_scan", "note": None},
}

#: (query, the labels of the runs it matches).
QUERY_CASES = [
    # dotted keys reach into lists of documents; a list matches if any element does
    ({"samples.name": "Si"}, {"r1", "r3"}),
    ({"samples.name": "Ge"}, {"r1", "r2"}),
    ({"samples.name": {"$eq": "Ge"}}, {"r1", "r2"}),
    ({"samples.name": {"$in": ["Si", "Xe"]}}, {"r1", "r3"}),
    ({"samples.name": {"$nin": ["Si"]}}, {"r2", "r4", "r5"}),
    ({"samples.name": {"$ne": "Si"}}, {"r2", "r4", "r5"}),
    ({"samples.name": {"$exists": True}}, {"r1", "r2", "r3"}),
    ({"samples.name": {"$exists": False}}, {"r4", "r5"}),
    ({"samples.name": None}, {"r2", "r5"}),  # r2's second sample has no name
    ({"samples.mass": {"$gt": 3}}, {"r1"}),
    ({"samples.mass": {"$lt": 3}}, {"r1", "r2"}),
    ({"samples.mass": {"$gte": 2, "$lte": 5}}, {"r1"}),
    ({"samples.name": "Si", "samples.mass": {"$gt": 3}}, {"r1"}),  # different samples
    ({"samples.0.name": "Si"}, {"r1"}),
    ({"samples.1.mass": 1.0}, {"r2"}),
    ({"tags": {"$ne": "hot"}}, {"r2", "r4", "r5"}),
    ({"tags": ["hot", "dry"]}, {"r1"}),
    ({"tags": ["dry", "hot"]}, set()),
    ({"matrix": [1, 2]}, {"r4"}),  # an element equals the list
    ({"matrix.1.0": 3}, {"r4"}),
    ({"sample": {"name": "Si", "T": 300}}, {"r1"}),
    ({"sample": {"T": 300, "name": "Si"}}, set()),  # documents equal in key order
    # booleans are not numbers: they neither equal nor compare with 0 and 1
    ({"flag": {"$gt": False}}, {"r1"}),
    ({"flag": False}, {"r2"}),
    ({"flag": {"$in": [0, 1]}}, {"r3", "r4"}),
    ({"flag": {"$lt": 1}}, {"r4"}),
    # $elemMatch: one element meets every condition
    ({"samples": {"$elemMatch": {"name": "Ge", "mass": {"$gt": 3}}}}, {"r1"}),
    ({"samples": {"$elemMatch": {"name": "Si", "mass": {"$gt": 3}}}}, set()),
    ({"tags": {"$elemMatch": {"$regex": "^h"}}}, {"r1"}),
    ({"matrix": {"$elemMatch": {"$elemMatch": {"$gt": 3}}}}, {"r4"}),
    # regular expressions: $regex with $options, compiled patterns
    ({"plan_name": re.compile("^sc")}, {"r1"}),
    ({"plan_name": re.compile("^sc", re.IGNORECASE)}, {"r1", "r2"}),
    ({"plan_name": {"$regex": "^sc"}}, {"r1"}),
    ({"plan_name": {"$regex": re.compile("^SC", re.I)}}, {"r1", "r2"}),
    ({"plan_name": {"$regex": "^SC", "$options": "i"}}, {"r1", "r2"}),
    ({"plan_name": {"$regex": "^scan$", "$options": "m"}}, {"r1", "r4"}),
    ({"plan_name": {"$regex": "grid.scan", "$options": "s"}}, {"r4"}),
    ({"plan_name": {"$regex": "grid.scan"}}, set()),
    ({"plan_name": {"$regex": "s c a n  # spaced", "$options": "x"}}, {"r1", "r4", "r5"}),
    ({"tags": {"$regex": "^h"}}, {"r1", "r3"}),
    ({"samples.name": re.compile("^G")}, {"r1", "r2"}),
    ({"scan_id": re.compile("1")}, set()),  # a regex matches strings only
    ({"plan_name": {"$in": [re.compile("^c"), "Scan"]}}, {"r2", "r3"}),
    ({"plan_name": {"$nin": [re.compile("scan")]}}, {"r2", "r3"}),
    # $not
    ({"plan_name": {"$not": re.compile("^s")}}, {"r2", "r3", "r4", "r5"}),
    ({"plan_name": {"$not": {"$regex": "scan"}}}, {"r2", "r3"}),
    ({"scan_id": {"$not": {"$gt": 2}}}, {"r1", "r2"}),
    ({"samples.mass": {"$not": {"$gt": 3}}}, {"r2", "r3", "r4", "r5"}),
    # logic over all of it
    ({"$and": [{"samples.name": "Ge"}, {"$or": [{"tags": "cold"}, {"scan_id": {"$gte": 4}}]}]},
     {"r2"}),
    ({"$nor": [{"samples.name": "Si"}, {"plan_name": "Scan"}]}, {"r4", "r5"}),
    ({"$or": [{"samples.mass": {"$gt": 3}}, {"plan_name": re.compile("count")}]}, {"r1", "r3"}),
    ({"scan_id": {"$gt": 2, "$lt": 5}, "$or": [{"scan_id": 3}, {"samples.name": None}]}, {"r3"}),
]


def _case_id(query) -> str:
    return reprlib.repr(query)


def _uids(search) -> list | str:
    """The uids ``search()`` returns, or the error it raised (a failure lists them all)."""
    try:
        return search()
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {str(err)[:200]}"


def _mismatch(query, got: list | str, expected: list, uids: dict) -> str:
    labels = {u: k for k, u in uids.items()}
    if isinstance(got, str):
        return f"{_case_id(query)} raised {got}"
    return (f"{_case_id(query)} returned {[labels.get(u, u) for u in got]}, "
            f"expected {[labels.get(u, u) for u in expected]}")


def _deep_and(levels: int) -> dict:
    query: dict = {"scan_id": 1}
    for _ in range(levels):
        query = {"$and": [query]}
    return query


def _deep_list(levels: int) -> list:
    value: list = [1]
    for _ in range(levels):
        value = [value]
    return value


#: (query, text the QueryError names) for queries every store refuses, unasked (a
#: function makes the big ones when a test needs them).
BAD_QUERIES = [
    ({"$and": []}, '["$and"]: $and takes a non-empty list'),
    ({"$or": []}, '["$or"]: $or takes a non-empty list'),
    ({"$nor": []}, '["$nor"]: $nor takes a non-empty list'),
    ({"$or": {"scan_id": 1}}, "$or takes a non-empty list"),
    ({"scan_id": {"$gt": 1, "x": 2}}, 'query["scan_id"] mixes operators ($gt) with plain keys (x)'),
    ({"scan_id": {"x": 2, "$lt": 1}}, "mixes operators ($lt) with plain keys (x)"),
    ({"scan_id": {1, 2}}, 'query["scan_id"]: a set is not a query value'),
    ({"scan_id": 2**64}, "beyond 64 bits"),
    ({"scan_id": {"$in": [1, -(2**70)]}}, 'query["scan_id"]["$in"][1]: the integer'),
    (lambda: {"scan_id": {"$in": list(range(2_000_000))}}, f"MAX_IN_VALUES ({MAX_IN_VALUES:,})"),
    (lambda: {"plan_name": {"$nin": ["x" * 100] * 90_000}}, "MAX_QUERY_SIZE"),
    (lambda: _deep_and(3000), f"MAX_QUERY_DEPTH ({MAX_QUERY_DEPTH})"),
    (lambda: {"matrix": _deep_list(3000)}, f"MAX_QUERY_DEPTH ({MAX_QUERY_DEPTH})"),
    ({"plan_name": {"$regex": "(sc"}}, "the regular expression '(sc' does not compile"),
    ({"plan_name": {"$regex": "sc", "$options": "q"}}, "$options takes letters among i, m, s"),
    ({"plan_name": {"$options": "i"}}, "$options goes with $regex"),
    ({"plan_name": {"$regex": 3}}, "$regex takes a pattern"),
    ({"plan_name": {"$regex": re.compile("sc"), "$options": "i"}}, "not both"),
    ({"plan_name": re.compile(b"sc")}, "not a str pattern"),
    ({"plan_name": {"$ne": re.compile("sc")}}, "a regex cannot be compared with $eq, $ne"),
    ({"$not": {"scan_id": 1}}, '["$not"]: $not applies to one field'),
    ({"scan_id": {"$not": 3}}, "$not takes a dict of operators or a regex"),
    ({"samples": {"$elemMatch": {}}}, "$elemMatch takes a non-empty dict"),
    ({"scan_id": {"$gt": None}}, "$gt compares with a number, a string or a boolean"),
    ({"scan_id": {"$lte": [3]}}, "$lte compares with a number"),
    ({"time": {"$gt": datetime.datetime(2024, 1, 1)}}, "cannot be a datetime"),
    ({"scan_id": b"1"}, "cannot be a bytes"),
    ({"": 1}, "has an empty part"),
    ({"samples..name": "Si"}, "has an empty part"),
    ({"$where": "this.scan_id > 1"}, "the query operator '$where' is not supported"),
    ({"tags": {"$size": 2}}, "the query operator '$size' is not supported"),
    (["scan_id", 1], "a query is a dict of field conditions"),
]


class QueryConformance:
    """Searches; mixed into StoreConformance, which provides the ``store`` fixture."""

    @pytest.fixture
    def query_runs(self, store) -> dict[str, str]:
        """The QUERY_RUNS in the store: their uids by label."""
        uids = {}
        for i, (label, metadata) in enumerate(QUERY_RUNS.items()):
            start = event_model.compose_run(time=_T0 + i, metadata=metadata).start_doc
            store.insert_start(start)
            uids[label] = start["uid"]
        return uids

    def test_queries_match_as_mongodb(self, store, query_runs):
        """Each of QUERY_CASES returns its runs, newest first (a failure lists every case
        that does not, with what it returned)."""
        wrong = []
        for query, labels in QUERY_CASES:
            expected = [query_runs[k] for k in reversed(query_runs) if k in labels]
            got = _uids(lambda q=query: [d["uid"] for d in store.search(q)])
            if got != expected:
                wrong.append(_mismatch(query, got, expected, query_runs))
        assert not wrong, "\n".join(wrong)

    def test_broker_queries_match_as_mongodb(self, store, query_runs):
        """The same through ``db.search``, ``db(**query)`` and ``since``/``until``."""
        from ..broker import Broker

        db = Broker(store)
        window = {"since": _T0 + 1, "until": _T0 + 4}  # r2, r3 and r4
        in_window = {query_runs[k] for k in ("r2", "r3", "r4")}
        wrong = []
        for query, labels in QUERY_CASES:
            expected = [query_runs[k] for k in reversed(query_runs) if k in labels]
            searches = [("db.search", lambda q=query: db.search(q), expected),
                        ("db.search(since, until)", lambda q=query: db.search(q, **window),
                         [u for u in expected if u in in_window])]
            if all(not k.startswith("$") and "." not in k for k in query):
                searches.append(("db(**query)", lambda q=query: db(**q), expected))
            for how, search, want in searches:
                got = _uids(lambda: [h.uid for h in search()])
                if got != want:
                    wrong.append(f"{how}: " + _mismatch(query, got, want, query_runs))
        assert not wrong, "\n".join(wrong)

    def test_bad_queries_are_query_errors(self, store, query_runs):
        """Each of BAD_QUERIES raises QueryError naming its fault, when search is called
        (before a document is read), from the store and from a Broker."""
        from ..broker import Broker

        db = Broker(store)
        wrong = []
        for query, named in BAD_QUERIES:
            query = query() if callable(query) else query
            calls = [("store.search", lambda q=query: store.search(q)),
                     ("db.search", lambda q=query: db.search(q)),
                     # named as the user wrote it, not as combined with the time window
                     ("db.search(since)", lambda q=query: db.search(q, since=_T0))]
            if isinstance(query, dict) and all(isinstance(k, str) and k and k[0] != "$"
                                               and "." not in k for k in query):
                calls.append(("db(**query)", lambda q=query: db(**q)))
            for how, call in calls:
                try:
                    call()
                except QueryError as err:
                    if named not in str(err):
                        wrong.append(f"{how}({_case_id(query)}): {err} -- does not say {named!r}")
                    assert isinstance(err, DaskBrokerError) and isinstance(err, ValueError)
                    assert isinstance(err, UnsupportedQueryError)  # the former name
                    assert err.__cause__ is None or isinstance(err.__cause__, re.error)
                except Exception as err:  # noqa: BLE001 -- listed as wrong, with the rest
                    wrong.append(f"{how}({_case_id(query)}): {type(err).__name__}: "
                                 f"{str(err)[:200]}")
                else:
                    wrong.append(f"{how}({_case_id(query)}): no QueryError")
        assert not wrong, "\n".join(wrong)

    def test_set_of_values_in_in(self, store, query_runs):
        """``$in`` / ``$nin`` take any collection of values (a set, a tuple)."""
        assert {d["uid"] for d in store.search({"scan_id": {"$in": {2, 4}}})} == {
            query_runs["r2"], query_runs["r4"]}
        assert {d["uid"] for d in store.search({"scan_id": {"$nin": (1, 2, 3)}})} == {
            query_runs["r4"], query_runs["r5"]}
