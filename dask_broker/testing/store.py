"""Conformance tests that every :class:`~dask_broker.stores.Store` backend passes.

A backend's test module -- in dask_broker or in a third-party package --
subclasses :class:`StoreConformance` and overrides the ``make_store`` fixture
so that it returns a fresh, empty store::

    import pytest
    from dask_broker.testing import StoreConformance
    from mypackage import MyStore

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def make_store(self, tmp_path):
            return MyStore.from_uri(f"mystore:///{tmp_path}/catalog")

Every test goes through the methods of the Store ABC only (no backend
internals), with documents built by :mod:`event_model`, so the suite applies to
any backend; the searches are in :mod:`~dask_broker.testing.store_queries`
and :mod:`~dask_broker.testing.store_text`, which the suite includes.
``MANY_EVENTS`` (the number of single-event pages written by
:meth:`StoreConformance.test_many_single_event_pages`) may be raised by a
backend whose paging threshold is larger.

This module needs pytest (a test dependency of dask_broker).
"""

from __future__ import annotations

import math
import pickle

import event_model
import numpy as np
import pytest

from ..errors import (
    DuplicateUidError,
    ReadOnlyCatalogError,
    RunAlreadyStoppedError,
    UnsupportedQueryError,
)
from ..stores import roles
from ..stores.roles import FIND_RESOURCES, LIST_RESOURCES
from .runs import DATA_KEYS, RunBuilder, value_of
from .store_queries import QueryConformance
from .store_text import TextSearchConformance

__all__ = ["StoreConformance"]

_T0 = 1_700_000_000.0

# ---------------------------------------------------------------- builders
# (the run builder every test suite shares: dask_broker.testing.runs)
_DATA_KEYS, _Run, _value = DATA_KEYS, RunBuilder, value_of


def _events_of_pages(pages) -> list[dict]:
    """Unpack event_page documents into event dicts (without ``filled``)."""
    out = []
    for page in pages:
        for event in event_model.unpack_event_page(page):
            out.append({k: event[k] for k in
                        ("uid", "descriptor", "seq_num", "time", "data", "timestamps")})
    return out


def _column(col) -> list:
    if isinstance(col, np.ndarray):
        if col.ndim > 1:
            return [row for row in col]
        return col.tolist()
    return list(col)


def _read_events(store, descriptor_uids, **kwargs) -> list[dict]:
    """Events rebuilt from the columns of ``store.iter_event_pages`` (uids read)."""
    out = []
    for page in store.iter_event_pages(list(descriptor_uids), uids=True, **kwargs):
        n = len(page)
        assert len(page.uid) == n and len(page.time) == n
        data = {k: _column(v) for k, v in page.data.items()}
        ts = {k: _column(v) for k, v in page.timestamps.items()}
        seq = _column(page.seq_num)
        time = _column(page.time)
        for i in range(n):
            out.append({
                "uid": page.uid[i], "descriptor": page.descriptor, "seq_num": seq[i],
                "time": time[i], "data": {k: v[i] for k, v in data.items()},
                "timestamps": {k: v[i] for k, v in ts.items()},
            })
    return out


def _same(got, expected) -> bool:
    """Equal in value *and* kind: an int stays int, a bool a bool, an array an array."""
    if isinstance(expected, np.ndarray):
        return (isinstance(got, np.ndarray) and got.shape == expected.shape
                and got.dtype.kind == expected.dtype.kind
                and np.array_equal(got, expected, equal_nan=expected.dtype.kind == "f"))
    if isinstance(got, np.generic):
        got = got.item()
    if isinstance(expected, np.generic):
        expected = expected.item()
    if isinstance(expected, dict):
        return (isinstance(got, dict) and got.keys() == expected.keys()
                and all(_same(got[k], expected[k]) for k in expected))
    if isinstance(expected, (list, tuple)):
        return (isinstance(got, list) and len(got) == len(expected)
                and all(_same(g, e) for g, e in zip(got, expected, strict=True)))
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(expected) and got == expected


def _assert_same_events(got: list[dict], expected: list[dict]) -> None:
    assert [e["uid"] for e in got] == [e["uid"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert _same(g, e), f"event {e['uid']} read back as {g!r}, stored {e!r}"


def _dump(store, runs) -> dict:
    """Everything the store returns about these runs (to check nothing changed)."""
    out = {}
    for run in runs:
        uid = run.start["uid"]
        descs = store.descriptors(uid)
        resources = store.resources(uid)
        out[uid] = {
            "start": store.get_start(uid),
            "stop": store.get_stop(uid),
            "descriptors": descs,
            "resources": resources,
            "datum": {r["uid"]: list(store.datum_of_resource(r["uid"])) for r in resources},
            "counts": store.event_counts([d["uid"] for d in descs]),
            "events": _read_events(store, [d["uid"] for d in descs]) if descs else [],
        }
    out["starts"] = [s["uid"] for s in store.iter_starts()]
    return out


class StoreConformance(QueryConformance, TextSearchConformance):
    """Tests of the Store contract; subclass and override ``make_store``.

    The searches of :class:`~dask_broker.testing.store_queries.QueryConformance`
    and :class:`~dask_broker.testing.store_text.TextSearchConformance` are part of
    it: every store returns the same runs for a query and a full-text search.
    """

    #: How many single-event pages ``test_many_single_event_pages`` writes.
    MANY_EVENTS = 1100

    @pytest.fixture
    def make_store(self):
        """Return a fresh, empty store (override in the backend's test class)."""
        raise NotImplementedError("override the make_store fixture to return an empty store")

    @pytest.fixture
    def store(self, make_store):
        yield make_store
        make_store.close()

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _run_with_descriptor(store, **kwargs):
        run = _Run(**kwargs)
        store.insert_start(run.start)
        desc = run.descriptor()
        store.insert_descriptor(desc.descriptor_doc)
        return run, desc

    def open_read_only(self, store):
        """The same catalog opened read-only (``read_only=True``), or None where the
        backend has no read-only mode (the read-only tests then skip).  Override for
        a backend opened otherwise."""
        options = {**dict(store.ref.options), "read_only": True}
        try:
            return type(store).open_existing(store.uri, **options)
        except TypeError:  # no read_only keyword
            return None

    # ------------------------------------------------------------ capabilities
    def test_capabilities_and_roles(self, store):
        caps = store.capabilities
        assert isinstance(caps, frozenset) and caps <= roles.CAPABILITIES
        assert store.read_only is False and roles.WRITE in caps
        assert (roles.STREAM_DATA in caps) == bool(store.supports_stream_data)
        assert (roles.RESOURCE_UPDATES in caps) == bool(store.supports_resource_updates)
        for role in (roles.RunReader, roles.DocumentWriter, roles.RunSearch):
            assert isinstance(store, role), role.__name__
        if store.supports_stream_data:
            assert isinstance(store, roles.StreamData)

    def test_read_only_refuses_writes(self, store):
        run, desc = self._run_with_descriptor(store)
        store.insert_event_page(run.page(desc, range(1, 4)))
        ro = self.open_read_only(store)
        if ro is None:
            pytest.skip(f"{type(store).__name__} has no read-only mode")
        try:
            assert ro.read_only is True and roles.WRITE not in ro.capabilities
            duid = desc.descriptor_doc["uid"]
            assert ro.get_start(run.start["uid"]) == store.get_start(run.start["uid"])
            assert ro.event_counts([duid]) == {duid: (3, 1, 3)}
            other = _Run()
            writes = [
                lambda: ro.insert_start(other.start),
                lambda: ro.insert_descriptor(run.descriptor().descriptor_doc),
                lambda: ro.insert_event_page(run.page(desc, range(4, 6))),
                lambda: ro.insert_stop(run.stop()),
            ]
            for write in writes:
                with pytest.raises(ReadOnlyCatalogError):
                    write()
            assert ro.get_start(other.start["uid"]) is None
            assert ro.event_counts([duid]) == {duid: (3, 1, 3)}
            assert ro.get_stop(run.start["uid"]) is None
            assert pickle.loads(pickle.dumps(ro)).read_only is True
        finally:
            ro.close()

    # ------------------------------------------------------------ empty
    def test_empty_store(self, store):
        assert list(store.iter_starts()) == []
        assert list(store.search({})) == []
        assert store.get_start("nope") is None
        assert store.get_stop("nope") is None
        assert store.get_descriptor("nope") is None
        assert store.get_resource("nope") is None
        assert store.descriptors("nope") == []
        assert store.resources("nope") == []
        assert store.datum(["nope"]) == {}
        assert list(store.datum_of_resource("nope")) == []
        assert store.event_counts(["nope"]) == {}
        assert list(store.iter_event_pages(["nope"])) == []
        assert store.start_uids_with_prefix("") == []

    # ------------------------------------------------------------ round trips
    def test_start_round_trip(self, store):
        run = _Run(metadata={"scan_id": 3, "sample": {"name": "Si", "T": 293.5},
                             "tags": ["a", "b"], "note": None})
        store.insert_start(run.start)
        assert store.get_start(run.start["uid"]) == run.start
        assert [s["uid"] for s in store.iter_starts()] == [run.start["uid"]]

    def test_stop_round_trip(self, store):
        run = _Run()
        store.insert_start(run.start)
        assert store.get_stop(run.start["uid"]) is None
        stop = run.stop(exit_status="abort", reason="beam dump")
        store.insert_stop(stop)
        assert store.get_stop(run.start["uid"]) == stop

    def test_descriptors_round_trip_in_insertion_order(self, store):
        run, other = _Run(), _Run()
        store.insert_start(run.start)
        store.insert_start(other.start)
        # Later-inserted descriptors get *earlier* times: order must be insertion order.
        t = run.start["time"] + 100
        descs = [run.descriptor(name=name, time=t - i).descriptor_doc
                 for i, name in enumerate(["primary", "baseline", "monitor"])]
        other_desc = other.descriptor().descriptor_doc
        for i, d in enumerate(descs):
            store.insert_descriptor(d)
            if i == 0:
                store.insert_descriptor(other_desc)
        assert store.descriptors(run.start["uid"]) == descs
        assert store.descriptors(other.start["uid"]) == [other_desc]
        for d in descs:
            assert store.get_descriptor(d["uid"]) == d

    def test_resources_round_trip_in_insertion_order(self, store):
        run, other = _Run(), _Run()
        store.insert_start(run.start)
        store.insert_start(other.start)
        resources = [run.resource(f"file-{i}.h5").resource_doc for i in range(4)]
        other_res = other.resource().resource_doc
        for i, r in enumerate(resources):
            store.insert_resource(r)
            if i == 1:
                store.insert_resource(other_res)
        assert store.resources(run.start["uid"]) == resources
        assert store.resources(other.start["uid"]) == [other_res]
        for r in resources:
            assert store.get_resource(r["uid"]) == r

    def test_find_resources_by_path_across_runs(self, store):
        run, other = _Run(), _Run()
        store.insert_start(run.start)
        store.insert_start(other.start)
        mine = run.resource("shared.h5").resource_doc
        theirs = other.resource("shared.h5").resource_doc
        elsewhere = other.resource("other.h5").resource_doc
        for r in (mine, theirs, elsewhere):
            store.insert_resource(r)
        if FIND_RESOURCES not in store.capabilities:
            pytest.skip(f"{type(store).__name__} cannot search resources by path")
        found = store.find_resources(root=mine["root"], resource_path="shared.h5")
        assert sorted(r["uid"] for r in found) == sorted([mine["uid"], theirs["uid"]])
        assert store.find_resources(root="/nowhere", resource_path="shared.h5") == []

    def test_iter_resources_of_every_run(self, store):
        run, other = _Run(), _Run()
        store.insert_start(run.start)
        store.insert_start(other.start)
        docs = [run.resource("a.h5").resource_doc, other.resource("b.h5").resource_doc,
                run.resource("c.h5").resource_doc]
        for r in docs:
            store.insert_resource(r)
        if LIST_RESOURCES not in store.capabilities:
            pytest.skip(f"{type(store).__name__} cannot list all its resources")
        found = list(store.iter_resources())
        assert found == docs

    def test_datum_pages_round_trip(self, store):
        run = _Run()
        store.insert_start(run.start)
        res_a, res_b = run.resource("a.h5"), run.resource("b.h5")
        store.insert_resource(res_a.resource_doc)
        store.insert_resource(res_b.resource_doc)
        pages = [
            res_a.compose_datum_page(datum_kwargs={"index": [0, 1, 2], "frame": ["f0", "f1", "f2"]}),
            res_b.compose_datum_page(datum_kwargs={"index": [10, 11], "frame": ["g0", "g1"]}),
            res_a.compose_datum_page(datum_kwargs={"index": [3], "frame": ["f3"]}),
        ]
        for p in pages:
            store.insert_datum_page(p)
        datum = [d for p in pages for d in event_model.unpack_datum_page(p)]
        by_id = {d["datum_id"]: dict(d) for d in datum}

        wanted = [datum[4]["datum_id"], datum[0]["datum_id"], "missing/0", datum[0]["datum_id"]]
        got = store.datum(wanted)
        assert got == {i: by_id[i] for i in wanted if i in by_id}
        assert store.datum([]) == {}

        for res in (res_a, res_b):
            uid = res.resource_doc["uid"]
            expected = [dict(d) for d in datum if d["resource"] == uid]
            assert list(store.datum_of_resource(uid)) == expected

    def test_event_page_round_trip(self, store):
        run, desc = self._run_with_descriptor(store)
        pages = [run.page(desc, range(1, 6)), run.page(desc, range(6, 9))]
        for p in pages:
            store.insert_event_page(p)
        _assert_same_events(_read_events(store, [desc.descriptor_doc["uid"]]),
                            _events_of_pages(pages))
        for page in store.iter_event_pages([desc.descriptor_doc["uid"]]):
            assert page.descriptor == desc.descriptor_doc["uid"]

    def test_pages_of_several_descriptors(self, store):
        run, primary = self._run_with_descriptor(store)
        baseline = run.descriptor(name="baseline")
        store.insert_descriptor(baseline.descriptor_doc)
        written = {
            primary.descriptor_doc["uid"]: [run.page(primary, range(1, 4)), run.page(primary, [4])],
            baseline.descriptor_doc["uid"]: [run.page(baseline, [1]), run.page(baseline, [2])],
        }
        for i in range(2):
            for pages in written.values():
                store.insert_event_page(pages[i])
        pages = list(store.iter_event_pages(list(written), uids=True))
        assert {p.descriptor for p in pages} == set(written)
        for uid, expected in written.items():
            got = [e for e in _read_events(store, list(written)) if e["descriptor"] == uid]
            _assert_same_events(got, _events_of_pages(expected))
            _assert_same_events(_read_events(store, [uid]), _events_of_pages(expected))

    # ------------------------------------------------------------ duplicates
    def test_duplicate_start(self, store):
        run = _Run(metadata={"scan_id": 1})
        store.insert_start(run.start)
        again = {**run.start, "scan_id": 2, "time": run.start["time"] + 1}
        with pytest.raises(DuplicateUidError, match=run.start["uid"]):
            store.insert_start(again)
        assert store.get_start(run.start["uid"]) == run.start
        assert [s["uid"] for s in store.iter_starts()] == [run.start["uid"]]

    def test_duplicate_stop_uid(self, store):
        first, second = _Run(), _Run()
        store.insert_start(first.start)
        store.insert_start(second.start)
        stop = first.stop()
        store.insert_stop(stop)
        clash = {**second.stop(), "uid": stop["uid"]}
        with pytest.raises(DuplicateUidError, match=stop["uid"]):
            store.insert_stop(clash)
        assert store.get_stop(second.start["uid"]) is None
        assert store.get_stop(first.start["uid"]) == stop

    def test_second_stop(self, store):
        run = _Run()
        store.insert_start(run.start)
        stop = run.stop()
        store.insert_stop(stop)
        second = {**stop, "uid": stop["uid"] + "-again", "exit_status": "fail"}
        with pytest.raises(RunAlreadyStoppedError, match=run.start["uid"]):
            store.insert_stop(second)
        assert store.get_stop(run.start["uid"]) == stop

    def test_duplicate_descriptor(self, store):
        run, desc = self._run_with_descriptor(store)
        again = {**desc.descriptor_doc, "name": "other"}
        with pytest.raises(DuplicateUidError, match=desc.descriptor_doc["uid"]):
            store.insert_descriptor(again)
        assert store.descriptors(run.start["uid"]) == [desc.descriptor_doc]
        assert store.get_descriptor(desc.descriptor_doc["uid"]) == desc.descriptor_doc

    def test_duplicate_resource(self, store):
        run = _Run()
        store.insert_start(run.start)
        res = run.resource().resource_doc
        store.insert_resource(res)
        with pytest.raises(DuplicateUidError, match=res["uid"]):
            store.insert_resource({**res, "resource_path": "elsewhere.h5"})
        assert store.resources(run.start["uid"]) == [res]
        assert store.get_resource(res["uid"]) == res

    @pytest.mark.parametrize("within_page", [False, True], ids=["across-pages", "within-page"])
    def test_duplicate_datum_id(self, store, within_page):
        run = _Run()
        store.insert_start(run.start)
        res = run.resource()
        store.insert_resource(res.resource_doc)
        first = res.compose_datum_page(datum_kwargs={"index": [0, 1, 2]})
        store.insert_datum_page(first)
        before = list(store.datum_of_resource(res.resource_doc["uid"]))
        fresh = res.compose_datum_page(datum_kwargs={"index": [3, 4, 5]})
        ids = list(fresh["datum_id"])
        dup = ids[0] if within_page else first["datum_id"][1]
        bad = {**fresh, "datum_id": [ids[0], dup, ids[2]]}
        with pytest.raises(DuplicateUidError, match=dup):
            store.insert_datum_page(bad)
        assert list(store.datum_of_resource(res.resource_doc["uid"])) == before
        assert store.datum(ids) == {}
        # the rejected page left nothing behind: its ids are still free
        store.insert_datum_page(fresh)
        assert set(store.datum(ids)) == set(ids)

    @pytest.mark.parametrize("where", ["across-pages", "within-page", "across-descriptors"])
    def test_duplicate_event_uid_writes_nothing(self, store, where):
        run, desc = self._run_with_descriptor(store)
        other = run.descriptor(name="baseline")
        store.insert_descriptor(other.descriptor_doc)
        first = run.page(desc, range(1, 4))
        store.insert_event_page(first)
        descs = [desc.descriptor_doc["uid"], other.descriptor_doc["uid"]]
        counts_before = store.event_counts(descs)
        events_before = _read_events(store, descs)

        target = other if where == "across-descriptors" else desc
        fresh = run.page(target, range(4, 8) if target is desc else range(1, 5))
        uids = list(fresh["uid"])
        dup = uids[0] if where == "within-page" else first["uid"][1]
        bad = {**fresh, "uid": [uids[0], uids[1], dup, uids[3]]}
        with pytest.raises(DuplicateUidError, match=dup):
            store.insert_event_page(bad)

        assert store.event_counts(descs) == counts_before
        _assert_same_events(_read_events(store, descs), events_before)
        # nothing of the rejected page was written: its other uids are still free
        store.insert_event_page(fresh)
        assert store.event_counts([target.descriptor_doc["uid"]])[
            target.descriptor_doc["uid"]][0] == counts_before.get(
                target.descriptor_doc["uid"], (0,))[0] + len(uids)

    # ------------------------------------------------------------ starts
    def test_iter_starts_newest_first(self, store):
        offsets = [3.0, 1.0, 5.0, 2.0, 5.0, 4.0, 1.0]
        runs = [_Run(time=_T0 + o, metadata={"i": i}) for i, o in enumerate(offsets)]
        for run in runs:
            store.insert_start(run.start)
        # newest start time first; equal times: the later-inserted first
        expected = sorted(range(len(runs)), key=lambda i: (offsets[i], i), reverse=True)
        assert [s["uid"] for s in store.iter_starts()] == [runs[i].start["uid"] for i in expected]
        assert list(store.iter_starts()) == [runs[i].start for i in expected]

    def test_start_uids_with_prefix(self, store):
        uids = ["abc-001", "abc-002", "abd-001", "b-001", "abc"]
        for i, uid in enumerate(uids):
            store.insert_start(_Run(uid=uid, time=_T0 + i).start)
        for prefix in ["ab", "abc", "abc-", "abd", "b", "abc-002", "c", "abcd", "a"]:
            matching = {u for u in uids if u.startswith(prefix)}
            for limit in (1, 2, 10):
                got = store.start_uids_with_prefix(prefix, limit=limit)
                assert len(got) == min(limit, len(matching)), (prefix, limit, got)
                assert len(set(got)) == len(got)
                assert set(got) <= matching
        assert len(store.start_uids_with_prefix("ab")) == 2  # default limit

    SEARCH_QUERIES = [
        ({}, lambda d: True),
        ({"plan_name": "scan"}, lambda d: d["plan_name"] == "scan"),
        ({"scan_id": 2}, lambda d: d["scan_id"] == 2),
        ({"scan_id": {"$gt": 2}}, lambda d: d["scan_id"] > 2),
        ({"scan_id": {"$gte": 2}}, lambda d: d["scan_id"] >= 2),
        ({"scan_id": {"$lt": 3}}, lambda d: d["scan_id"] < 3),
        ({"scan_id": {"$lte": 3}}, lambda d: d["scan_id"] <= 3),
        ({"scan_id": {"$gte": 2, "$lt": 4}}, lambda d: 2 <= d["scan_id"] < 4),
        ({"scan_id": {"$in": [1, 4, 99]}}, lambda d: d["scan_id"] in (1, 4, 99)),
        ({"plan_name": {"$ne": "scan"}}, lambda d: d["plan_name"] != "scan"),
        ({"sample.name": "Si"}, lambda d: d.get("sample", {}).get("name") == "Si"),
        ({"tags": "hot"}, lambda d: "hot" in d.get("tags", [])),
        ({"plan_name": "count", "sample.name": "Ge"},
         lambda d: d["plan_name"] == "count" and d.get("sample", {}).get("name") == "Ge"),
        ({"$or": [{"plan_name": "count"}, {"scan_id": 1}]},
         lambda d: d["plan_name"] == "count" or d["scan_id"] == 1),
        ({"temperature": {"$exists": False}}, lambda d: "temperature" not in d),
        ({"temperature": {"$gt": 250.0}}, lambda d: d.get("temperature", -1) > 250.0),
    ]

    @pytest.fixture
    def search_runs(self, store):
        md = [
            {"scan_id": 1, "plan_name": "scan", "sample": {"name": "Si"}, "tags": ["hot", "dry"],
             "temperature": 300.0},
            {"scan_id": 2, "plan_name": "count", "sample": {"name": "Ge"}, "tags": ["cold"]},
            {"scan_id": 3, "plan_name": "scan", "sample": {"name": "Ge"}, "temperature": 200.0},
            {"scan_id": 4, "plan_name": "count", "tags": ["hot"], "temperature": 260.5},
            {"scan_id": 2, "plan_name": "scan", "sample": {"name": "Si"}},
        ]
        runs = [_Run(time=_T0 + i, metadata=m) for i, m in enumerate(md)]
        for run in runs:
            store.insert_start(run.start)
        return [r.start for r in reversed(runs)]  # newest first

    @pytest.mark.parametrize("case", range(len(SEARCH_QUERIES)))
    def test_search(self, store, search_runs, case):
        query, predicate = self.SEARCH_QUERIES[case]
        expected = [d["uid"] for d in search_runs if predicate(d)]
        assert [d["uid"] for d in store.search(query)] == expected
        assert [d["uid"] for d in store.search(query)] == expected  # repeatable

    def test_search_docs_are_start_docs(self, store, search_runs):
        assert list(store.search({"scan_id": 2})) == [d for d in search_runs if d["scan_id"] == 2]
        assert [d["uid"] for d in store.search(None)] == [d["uid"] for d in search_runs]

    def test_search_unsupported_operator(self, store, search_runs):
        with pytest.raises(UnsupportedQueryError, match=r"\$size"):
            list(store.search({"tags": {"$size": 2}}))
        with pytest.raises(UnsupportedQueryError, match=r"\$where"):
            list(store.search({"$where": "true"}))

    # ------------------------------------------------------------ events
    def test_event_counts(self, store):
        run, desc = self._run_with_descriptor(store)
        empty = run.descriptor(name="empty")
        store.insert_descriptor(empty.descriptor_doc)
        other = run.descriptor(name="other")
        store.insert_descriptor(other.descriptor_doc)
        seqs = {desc.descriptor_doc["uid"]: [[3, 4, 5], [6], [7, 8]],
                other.descriptor_doc["uid"]: [[1], [2]]}
        bundles = {desc.descriptor_doc["uid"]: desc, other.descriptor_doc["uid"]: other}
        for uid, groups in seqs.items():
            for g in groups:
                store.insert_event_page(run.page(bundles[uid], g))
        expected = {uid: (sum(map(len, g)), min(map(min, g)), max(map(max, g)))
                    for uid, g in seqs.items()}
        everything = [*seqs, empty.descriptor_doc["uid"], "unknown"]
        got = store.event_counts(everything)
        assert {k: tuple(int(x) for x in v) for k, v in got.items()} == expected
        assert store.event_counts([desc.descriptor_doc["uid"]]) == {
            desc.descriptor_doc["uid"]: expected[desc.descriptor_doc["uid"]]}
        assert store.event_counts([]) == {}

    @pytest.mark.parametrize("lo,hi", [(4, 12), (1, 16), (0, 100), (6, 11), (5, 6), (7, 7),
                                       (15, 16), (16, 20), (-5, 1)])
    def test_iter_event_pages_seq_range(self, store, lo, hi):
        run, desc = self._run_with_descriptor(store)
        pages = [run.page(desc, range(a, a + 5)) for a in (1, 6, 11)]
        for p in pages:
            store.insert_event_page(p)
        expected = [e for e in _events_of_pages(pages) if lo <= e["seq_num"] < hi]
        got = _read_events(store, [desc.descriptor_doc["uid"]], seq_range=(lo, hi))
        _assert_same_events(got, expected)

    def test_iter_event_pages_fields_projection(self, store):
        run, desc = self._run_with_descriptor(store)
        pages = [run.page(desc, range(1, 4)), run.page(desc, [4])]
        for p in pages:
            store.insert_event_page(p)
        expected = _events_of_pages(pages)
        for fields in (["x"], ["label", "flag"], []):
            got_pages = list(store.iter_event_pages([desc.descriptor_doc["uid"]], fields=fields,
                                                    uids=True))
            assert sum(len(p) for p in got_pages) == len(expected)
            for p in got_pages:
                assert set(p.data) == set(fields)
                assert set(p.timestamps) <= set(fields)
            got = _read_events(store, [desc.descriptor_doc["uid"]], fields=fields)
            projected = [{**e, "data": {f: e["data"][f] for f in fields},
                          "timestamps": {f: e["timestamps"][f] for f in fields}}
                         for e in expected]
            _assert_same_events(got, projected)

    def test_iter_event_pages_without_timestamps(self, store):
        run, desc = self._run_with_descriptor(store)
        page = run.page(desc, range(1, 5))
        store.insert_event_page(page)
        got_pages = list(store.iter_event_pages([desc.descriptor_doc["uid"]], timestamps=False))
        assert got_pages and all(not p.timestamps for p in got_pages)
        got = _read_events(store, [desc.descriptor_doc["uid"]], timestamps=False)
        expected = [{**e, "timestamps": {}} for e in _events_of_pages([page])]
        _assert_same_events(got, expected)

    def test_iter_event_pages_uids_flag(self, store):
        run, desc = self._run_with_descriptor(store)
        page = run.page(desc, range(1, 4))
        store.insert_event_page(page)
        without = list(store.iter_event_pages([desc.descriptor_doc["uid"]]))
        assert without and all(p.uid is None for p in without)
        with_uids = list(store.iter_event_pages([desc.descriptor_doc["uid"]], uids=True))
        assert [u for p in with_uids for u in p.uid] == list(page["uid"])
        assert [s for p in without for s in _column(p.seq_num)] == list(page["seq_num"])

    def test_many_single_event_pages(self, store):
        run, desc = self._run_with_descriptor(store)
        duid = desc.descriptor_doc["uid"]
        n = self.MANY_EVENTS
        singles = [run.single(desc, s) for s in range(1, n + 1)]
        for p in singles:
            store.insert_event_page(p)
        expected = _events_of_pages(singles)
        assert store.event_counts([duid]) == {duid: (n, 1, n)}
        got = _read_events(store, [duid])
        assert [e["seq_num"] for e in got] == list(range(1, n + 1))
        _assert_same_events(got, expected)
        lo, hi = n // 2 - 7, n - 3
        _assert_same_events(_read_events(store, [duid], seq_range=(lo, hi)),
                            [e for e in expected if lo <= e["seq_num"] < hi])
        projected = _read_events(store, [duid], fields=["n"])
        assert [e["data"] for e in projected] == [{"n": e["data"]["n"]} for e in expected]

    @pytest.mark.parametrize("seq_range", [None, (2, 4)])
    def test_repeated_seq_num_in_stored_order(self, store, seq_range):
        """Events sharing a (descriptor, seq_num) come in the order they were stored
        (not by time), so the reader's "last one wins" keeps the last stored."""
        run, desc = self._run_with_descriptor(store)
        duid = desc.descriptor_doc["uid"]
        first = run.page(desc, [2, 3])
        later = run.page(desc, [1, 2])  # stored later, with a lower seq_min
        last = run.page(desc, [3])
        # times run backwards, so that "last by time" would pick the first stored
        first["time"], later["time"], last["time"] = [300.0, 301.0], [200.0, 201.0], [100.0]
        for page in (first, later, last):
            store.insert_event_page(page)
        seen: dict[int, list[str]] = {}
        for page in store.iter_event_pages([duid], uids=True, seq_range=seq_range):
            for seq, uid in zip(_column(page.seq_num), page.uid):
                seen.setdefault(seq, []).append(uid)
        expected = {1: [later["uid"][0]], 2: [first["uid"][0], later["uid"][1]],
                    3: [first["uid"][1], last["uid"][0]]}
        if seq_range is not None:
            expected = {k: v for k, v in expected.items() if seq_range[0] <= k < seq_range[1]}
        assert seen == expected
        assert store.event_counts([duid]) == {duid: (5, 1, 3)}

    def test_singles_and_pages_interleaved_keep_order(self, store):
        """Single events, then a large page, then single events again: all in order."""
        run, desc = self._run_with_descriptor(store)
        duid = desc.descriptor_doc["uid"]
        n1, n2, n3 = 10, self.MANY_EVENTS + 500, self.MANY_EVENTS
        written = [run.single(desc, s) for s in range(1, n1 + 1)]
        written.append(run.page(desc, range(n1 + 1, n1 + n2 + 1)))
        written += [run.single(desc, s) for s in range(n1 + n2 + 1, n1 + n2 + n3 + 1)]
        for p in written:
            store.insert_event_page(p)
        total = n1 + n2 + n3
        assert store.event_counts([duid]) == {duid: (total, 1, total)}
        got = _read_events(store, [duid])
        assert [e["seq_num"] for e in got] == list(range(1, total + 1))
        _assert_same_events(got, _events_of_pages(written))

    VALUE_KINDS = {
        "float": lambda i: 1.5 * i - 0.1,
        "float-nan-inf": lambda i: [math.nan, math.inf, -math.inf, 2.5][i % 4],
        "int": lambda i: -3 * i + 1,
        "big-int": lambda i: 2 ** 70 + i,
        "bool": lambda i: i % 2 == 0,
        "string": lambda i: f"sample \u00e9 {i}",
        "none": lambda i: None,
        "list": lambda i: [i, i + 1, i + 2],
        "ragged-list": lambda i: list(range(i)),
        "nested-list": lambda i: [[i, 0.5], [1.5, i]],
        "ndarray-float": lambda i: np.arange(6, dtype=float).reshape(2, 3) * i,
        "ndarray-int": lambda i: np.arange(4, dtype=np.int64) + i,
        "ndarray-bool": lambda i: np.array([True, False, i % 2 == 1]),
        "dict": lambda i: {"a": i, "b": [1, 2]},
    }

    @pytest.mark.parametrize("kind", list(VALUE_KINDS))
    @pytest.mark.parametrize("packing", ["page", "singles"])
    def test_value_types_round_trip(self, store, kind, packing):
        make = self.VALUE_KINDS[kind]
        run = _Run()
        store.insert_start(run.start)
        desc = run.descriptor(data_keys={
            "v": {"source": "sim", "dtype": "number", "shape": []},
            "x": {"source": "sim", "dtype": "number", "shape": []},
        })
        store.insert_descriptor(desc.descriptor_doc)

        def values(field, seq):
            return make(seq) if field == "v" else float(seq)

        if packing == "page":
            written = [run.page(desc, range(1, 5), values), run.page(desc, range(5, 7), values)]
        else:
            written = [run.single(desc, s, values) for s in range(1, 7)]
        for p in written:
            store.insert_event_page(p)
        _assert_same_events(_read_events(store, [desc.descriptor_doc["uid"]]),
                            _events_of_pages(written))

    def test_numpy_page_columns_round_trip(self, store):
        """A page whose columns are numpy arrays (any dtype) reads back value for value."""
        run = _Run()
        store.insert_start(run.start)
        n = 5
        data = {
            "f64": np.linspace(-1.0, 1.0, n),
            "f32": np.linspace(0.0, 1.0, n, dtype=np.float32),
            "i32": np.arange(n, dtype=np.int32) - 2,
            "u64": np.arange(n, dtype=np.uint64),
            "big_u64": np.arange(n, dtype=np.uint64) + np.uint64(2 ** 63 + 5),
            "b": np.arange(n) % 2 == 0,
            "img": np.arange(n * 6, dtype=float).reshape(n, 2, 3),
        }
        desc = run.descriptor(data_keys={
            k: {"source": "sim", "dtype": "array" if v.ndim > 1 else "number",
                "shape": list(v.shape[1:])} for k, v in data.items()})
        store.insert_descriptor(desc.descriptor_doc)
        times = [run.tick() for _ in range(n)]
        page = desc.compose_event_page(
            data=data, timestamps={k: np.full(n, 2.5) for k in data},
            seq_num=list(range(1, n + 1)), time=times)
        store.insert_event_page(page)
        expected = [{
            "uid": page["uid"][i], "descriptor": desc.descriptor_doc["uid"], "seq_num": i + 1,
            "time": times[i], "data": {k: v[i] for k, v in data.items()},
            "timestamps": {k: 2.5 for k in data},
        } for i in range(n)]
        _assert_same_events(_read_events(store, [desc.descriptor_doc["uid"]]), expected)

    # ------------------------------------------------------------ pickling
    def test_pickle_round_trip(self, store):
        run, desc = self._run_with_descriptor(store, metadata={"scan_id": 9})
        res = run.resource()
        store.insert_resource(res.resource_doc)
        store.insert_datum_page(res.compose_datum_page(datum_kwargs={"index": [0, 1]}))
        page = run.page(desc, range(1, 6))
        store.insert_event_page(page)
        store.insert_stop(run.stop())

        copy = pickle.loads(pickle.dumps(store))
        try:
            assert copy == store and store == copy
            assert hash(copy) == hash(store)
            assert copy.uri == store.uri
            assert _dump(copy, [run]) == _dump(store, [run])
            assert copy.get_start(run.start["uid"]) == run.start
            assert copy.descriptors(run.start["uid"]) == [desc.descriptor_doc]
            _assert_same_events(_read_events(copy, [desc.descriptor_doc["uid"]]),
                                _events_of_pages([page]))
            # the copy opens the same database: writes through it are seen here
            later = _Run(time=run.start["time"] + 10)
            copy.insert_start(later.start)
            assert store.get_start(later.start["uid"]) == later.start
            assert [s["uid"] for s in store.iter_starts()] == [later.start["uid"],
                                                                run.start["uid"]]
        finally:
            copy.close()

    def test_closed_store_reopens(self, store):
        run = _Run()
        store.insert_start(run.start)
        store.close()
        assert store.get_start(run.start["uid"]) == run.start
        other = _Run()
        store.insert_start(other.start)
        assert {s["uid"] for s in store.iter_starts()} == {run.start["uid"], other.start["uid"]}

    # ================================================================ resource updates
    # Store.update_resource / Store.resource_history (not abstract: a backend that
    # has not implemented them yet -- the base class raises NotImplementedError --
    # skips these tests).
    @staticmethod
    def _skip_without_resource_updates(store):
        if not store.supports_resource_updates:
            pytest.skip(f"{type(store).__name__} does not implement update_resource yet")

    def _stored_resources(self, store, n=2):
        self._skip_without_resource_updates(store)
        run = _Run()
        store.insert_start(run.start)
        bundles = [run.resource(f"sub/file-{i}.h5") for i in range(n)]
        for b in bundles:
            store.insert_resource(b.resource_doc)
        store.insert_datum_page(bundles[0].compose_datum_page(datum_kwargs={"index": [0, 1]}))
        return run, [b.resource_doc for b in bundles]

    def test_update_resource_replaces_document(self, store):
        run, (res, other) = self._stored_resources(store)
        datum_before = list(store.datum_of_resource(res["uid"]))
        new = store.update_resource(res["uid"], {"root": "/archive", "resource_kwargs": {"k": 2}},
                                    cmd="move_files", cmd_kwargs={"new_root": "/archive"})
        expected = {**res, "root": "/archive", "resource_kwargs": {"k": 2}}
        assert new == expected
        assert store.get_resource(res["uid"]) == expected
        assert store.resources(run.start["uid"]) == [expected, other]  # order kept
        assert store.get_resource(other["uid"]) == other
        assert list(store.datum_of_resource(res["uid"])) == datum_before

    def test_resource_history_oldest_first(self, store):
        _, (res, other) = self._stored_resources(store)
        assert store.resource_history(res["uid"]) == []
        first = store.update_resource(res["uid"], {"root": "/a"}, cmd="c1", cmd_kwargs={"x": 1})
        second = store.update_resource(res["uid"], {"resource_path": "p.h5"}, cmd="c2",
                                       cmd_kwargs={})
        history = store.resource_history(res["uid"])
        assert [h["cmd"] for h in history] == ["c1", "c2"]
        assert [h["cmd_kwargs"] for h in history] == [{"x": 1}, {}]
        assert all(h["resource"] == res["uid"] for h in history)
        assert history[0]["old"] == res and history[0]["new"] == first
        assert history[1]["old"] == first and history[1]["new"] == second
        assert all(isinstance(h["time"], float) for h in history)
        assert history[0]["time"] <= history[1]["time"]
        assert store.resource_history(other["uid"]) == []

    def test_update_unknown_resource_writes_nothing(self, store):
        from ..errors import UnknownReferenceError

        _, (res, _) = self._stored_resources(store)
        with pytest.raises(UnknownReferenceError, match="nope"):
            store.update_resource("nope", {"root": "/x"}, cmd="c", cmd_kwargs={})
        with pytest.raises(KeyError):
            store.update_resource("nope", {"root": "/x"}, cmd="c", cmd_kwargs={})
        assert store.resource_history("nope") == []
        assert store.get_resource(res["uid"]) == res

    def test_update_resource_refuses_identity_keys(self, store):
        _, (res, _) = self._stored_resources(store)
        for key in ("uid", "run_start"):
            with pytest.raises(ValueError, match=key):
                store.update_resource(res["uid"], {key: "other"}, cmd="c", cmd_kwargs={})
        assert store.get_resource(res["uid"]) == res
        assert store.resource_history(res["uid"]) == []

    def test_resource_history_seen_by_a_pickled_copy(self, store):
        _, (res, _) = self._stored_resources(store)
        store.update_resource(res["uid"], {"root": "/b"}, cmd="c", cmd_kwargs={"n": 1})
        copy = pickle.loads(pickle.dumps(store))
        try:
            assert copy.get_resource(res["uid"])["root"] == "/b"
            assert copy.resource_history(res["uid"]) == store.resource_history(res["uid"])
        finally:
            copy.close()

    # ================================================================ stream data
    # stream_resource / stream_datum (ophyd-async detectors).  Not abstract in the
    # Store ABC: a backend whose ``supports_stream_data`` is False skips these tests.
    @staticmethod
    def _skip_without_stream_data(store):
        if not store.supports_stream_data:
            pytest.skip(f"{type(store).__name__} does not store stream_resource / "
                        "stream_datum documents (supports_stream_data is False)")

    @staticmethod
    def _stream_run(store, n_descriptors=1):
        """A stored run with descriptors holding a ``STREAM:`` data key ``det``."""
        run = _Run()
        store.insert_start(run.start)
        keys = {"det": {"source": "sim", "dtype": "array", "shape": [1, 4, 5],
                        "dtype_numpy": "<u2", "external": "STREAM:"},
                "x": {"source": "sim", "dtype": "number", "shape": []}}
        descs = [run.descriptor(name=name, data_keys=keys)
                 for name in ["primary", "baseline", "monitor"][:n_descriptors]]
        for d in descs:
            store.insert_descriptor(d.descriptor_doc)
        return run, descs

    @staticmethod
    def _sr(run, path="det.h5", *, run_start=True):
        """A modern stream_resource bundle; without ``run_start`` as ophyd-async emits it."""
        bundle = run.bundle.compose_stream_resource(
            mimetype="application/x-hdf5", uri=f"file://localhost/data/{path}",
            data_key="det", parameters={"dataset": "/entry/data/data", "chunk_shape": [1, 4, 5],
                                        "swmr": True, "note": None})
        if not run_start:
            bundle.stream_resource_doc.pop("run_start")
        return bundle

    @staticmethod
    def _sd(sr_bundle, desc_bundle, start, stop, seq_start=None):
        seq_start = start + 1 if seq_start is None else seq_start
        return sr_bundle.compose_stream_datum(
            indices={"start": start, "stop": stop},
            seq_nums={"start": seq_start, "stop": seq_start + stop - start},
            descriptor=desc_bundle.descriptor_doc)

    def test_stream_resource_round_trip(self, store):
        self._skip_without_stream_data(store)
        run, _ = self._stream_run(store)
        modern = self._sr(run).stream_resource_doc
        # the pre-1.21 form (event-model 1.19/1.20), with its own keys
        older = {"uid": "old-form-" + run.start["uid"], "run_start": run.start["uid"],
                 "data_key": "det", "spec": "AD_HDF5_SWMR_STREAM", "root": "/data",
                 "resource_path": "old/det.h5", "path_semantics": "posix",
                 "resource_kwargs": {"frame_per_point": 1, "dataset": "/entry/data/data"},
                 "stream_names": ["det"]}
        bare = self._sr(run, "bare.h5", run_start=False).stream_resource_doc
        for doc in (modern, older, bare):
            before = pickle.loads(pickle.dumps(doc))
            store.insert_stream_resource(doc)
            assert doc == before and "_id" not in doc  # the caller's document is untouched
        for doc in (modern, older, bare):
            assert store.get_stream_resource(doc["uid"]) == doc
        assert "run_start" not in store.get_stream_resource(bare["uid"])
        # stream_resources are not resources
        assert store.get_resource(modern["uid"]) is None
        assert store.resources(run.start["uid"]) == []

    def test_stream_data_unknown(self, store):
        self._skip_without_stream_data(store)
        assert store.get_stream_resource("nope") is None
        assert store.stream_resources("nope") == []
        assert store.stream_datums(["nope"]) == []
        assert store.stream_datums([]) == []
        store.insert_stream_datums([])  # nothing to write is no error
        run, (desc,) = self._stream_run(store)
        assert store.stream_resources(run.start["uid"]) == []
        assert store.stream_datums([desc.descriptor_doc["uid"]]) == []

    def test_stream_datums_round_trip_in_insertion_order(self, store):
        self._skip_without_stream_data(store)
        run, (d1, d2, d3) = self._stream_run(store, 3)
        sr1, sr2 = self._sr(run, "a.h5"), self._sr(run, "b.h5", run_start=False)
        store.insert_stream_resource(sr1.stream_resource_doc)
        store.insert_stream_resource(sr2.stream_resource_doc)
        other, (od,) = self._stream_run(store)
        osr = self._sr(other, "other.h5")
        store.insert_stream_resource(osr.stream_resource_doc)
        # several calls, interleaving descriptors and resources; later seq_nums
        # and indices do not decide the order, insertion does
        batches = [
            [self._sd(sr1, d2, 5, 8), self._sd(sr2, d1, 0, 1, seq_start=9)],
            [self._sd(osr, od, 0, 3)],
            [self._sd(sr1, d1, 0, 2), self._sd(sr2, d3, 1, 2),
             self._sd(sr1, d2, 2, 5, seq_start=1)],
            [self._sd(sr2, d1, 1, 4, seq_start=10)],
        ]
        for batch in batches:
            copies = pickle.loads(pickle.dumps(batch))
            store.insert_stream_datums(batch)
            assert batch == copies and all("_id" not in d for d in batch)
        written = [d for batch in batches for d in batch]
        uids = [d.descriptor_doc["uid"] for d in (d1, d2, d3)]
        expected = [d for d in written if d["descriptor"] in uids]
        assert store.stream_datums(uids) == expected
        assert store.stream_datums(list(reversed(uids))) == expected
        assert store.stream_datums(uids + ["nope", uids[0]]) == expected
        for uid in uids:
            assert store.stream_datums([uid]) == [d for d in written if d["descriptor"] == uid]
        assert store.stream_datums([od.descriptor_doc["uid"]]) == batches[1]

    def test_stream_resources_of_a_run(self, store):
        """Those with the run's run_start and those (without run_start) that an SD of
        the run's descriptors points at: each once, in insertion order."""
        self._skip_without_stream_data(store)
        run, (desc, baseline) = self._stream_run(store, 2)
        other, (odesc,) = self._stream_run(store)
        mine = self._sr(run, "mine.h5")                           # run_start, with SDs
        theirs = self._sr(other, "theirs.h5")                     # the other run's
        bare = self._sr(run, "bare.h5", run_start=False)          # reached by an SD
        bare_other = self._sr(other, "bare-o.h5", run_start=False)
        silent = self._sr(run, "silent.h5")                       # run_start, no SD yet
        orphan = self._sr(run, "orphan.h5", run_start=False)      # no run_start, no SD
        for b in (mine, theirs, bare, bare_other, silent, orphan):
            store.insert_stream_resource(b.stream_resource_doc)
        store.insert_stream_datums([self._sd(mine, desc, 0, 2), self._sd(bare_other, odesc, 0, 1)])
        store.insert_stream_datums([self._sd(bare, baseline, 0, 3), self._sd(mine, desc, 2, 3),
                                    self._sd(theirs, odesc, 1, 2)])
        assert store.stream_resources(run.start["uid"]) == [
            mine.stream_resource_doc, bare.stream_resource_doc, silent.stream_resource_doc]
        assert store.stream_resources(other.start["uid"]) == [
            theirs.stream_resource_doc, bare_other.stream_resource_doc]
        assert store.get_stream_resource(orphan.stream_resource_doc["uid"]) == \
            orphan.stream_resource_doc

    def test_stream_datums_of_resource_and_every_stream_resource(self, store):
        self._skip_without_stream_data(store)
        assert list(store.iter_stream_resources()) == []
        run, (desc, baseline) = self._stream_run(store, 2)
        other, (odesc,) = self._stream_run(store)
        mine, bare = self._sr(run, "mine.h5"), self._sr(run, "bare.h5", run_start=False)
        theirs = self._sr(other, "theirs.h5")
        for b in (mine, theirs, bare):
            store.insert_stream_resource(b.stream_resource_doc)
        first = [self._sd(mine, desc, 0, 2), self._sd(bare, baseline, 0, 1),
                 self._sd(theirs, odesc, 0, 3)]
        later = [self._sd(mine, baseline, 2, 4, seq_start=2), self._sd(mine, desc, 4, 5)]
        store.insert_stream_datums(first)
        store.insert_stream_datums(later)
        assert list(store.iter_stream_resources()) == [
            mine.stream_resource_doc, theirs.stream_resource_doc, bare.stream_resource_doc]
        assert store.stream_datums_of_resource(mine.stream_resource_doc["uid"]) == \
            [first[0], *later]
        assert store.stream_datums_of_resource(bare.stream_resource_doc["uid"]) == [first[1]]
        assert store.stream_datums_of_resource("nope") == []

    def test_duplicate_stream_resource(self, store):
        self._skip_without_stream_data(store)
        run, _ = self._stream_run(store)
        sr = self._sr(run).stream_resource_doc
        store.insert_stream_resource(sr)
        with pytest.raises(DuplicateUidError, match=sr["uid"]):
            store.insert_stream_resource({**sr, "uri": "file://localhost/elsewhere.h5"})
        with pytest.raises(DuplicateUidError, match=sr["uid"]):
            store.insert_stream_resource({k: v for k, v in sr.items() if k != "run_start"})
        assert store.get_stream_resource(sr["uid"]) == sr
        assert store.stream_resources(run.start["uid"]) == [sr]

    @pytest.mark.parametrize("within_call", [False, True], ids=["already-stored", "within-call"])
    def test_duplicate_stream_datum_writes_nothing(self, store, within_call):
        import re

        self._skip_without_stream_data(store)
        run, (desc, baseline) = self._stream_run(store, 2)
        sr = self._sr(run)
        store.insert_stream_resource(sr.stream_resource_doc)
        first = [self._sd(sr, desc, 0, 1), self._sd(sr, desc, 1, 2)]
        store.insert_stream_datums(first)
        descs = [desc.descriptor_doc["uid"], baseline.descriptor_doc["uid"]]
        before = store.stream_datums(descs)
        fresh = [self._sd(sr, baseline, 0, 1), self._sd(sr, desc, 2, 3),
                 self._sd(sr, baseline, 1, 2)]
        clash = dict(fresh[0] if within_call else first[1])
        clash["indices"] = {"start": 7, "stop": 8}
        bad = [fresh[0], fresh[1], clash, fresh[2]]
        with pytest.raises(DuplicateUidError, match=re.escape(clash["uid"])):
            store.insert_stream_datums(bad)
        assert store.stream_datums(descs) == before
        # nothing of the rejected call was written: its other uids are still free
        store.insert_stream_datums(fresh)
        assert store.stream_datums(descs) == before + fresh

    def test_update_stream_resource_and_history(self, store):
        self._skip_without_stream_data(store)
        self._skip_without_resource_updates(store)
        run, (desc,) = self._stream_run(store)
        sr, other = self._sr(run, "a.h5"), self._sr(run, "b.h5", run_start=False)
        store.insert_stream_resource(sr.stream_resource_doc)
        store.insert_stream_resource(other.stream_resource_doc)
        store.insert_stream_datums([self._sd(other, desc, 0, 2)])
        old = sr.stream_resource_doc
        assert store.resource_history(old["uid"]) == []
        new = store.update_resource(old["uid"], {"uri": "file://localhost/archive/a.h5"},
                                    cmd="move_files", cmd_kwargs={"new_root": "/archive"})
        expected = {**old, "uri": "file://localhost/archive/a.h5"}
        assert new == expected
        assert store.get_stream_resource(old["uid"]) == expected
        assert store.get_resource(old["uid"]) is None  # still not a resource
        assert store.stream_resources(run.start["uid"]) == [expected, other.stream_resource_doc]
        (record,) = store.resource_history(old["uid"])
        assert record["resource"] == old["uid"] and record["cmd"] == "move_files"
        assert record["cmd_kwargs"] == {"new_root": "/archive"}
        assert record["old"] == old and record["new"] == expected
        assert isinstance(record["time"], float)
        # one without run_start, and refusing the identity keys
        later = store.update_resource(other.stream_resource_doc["uid"],
                                      {"parameters": {"dataset": "/d", "chunk_shape": [1]}},
                                      cmd="c", cmd_kwargs={})
        assert store.get_stream_resource(later["uid"]) == later and "run_start" not in later
        for key in ("uid", "run_start"):
            with pytest.raises(ValueError, match=key):
                store.update_resource(old["uid"], {key: "other"}, cmd="c", cmd_kwargs={})
        assert store.get_stream_resource(old["uid"]) == expected
        assert len(store.resource_history(old["uid"])) == 1

    def test_stream_data_seen_by_a_pickled_copy(self, store):
        self._skip_without_stream_data(store)
        run, (desc,) = self._stream_run(store)
        sr = self._sr(run, run_start=False)
        store.insert_stream_resource(sr.stream_resource_doc)
        sds = [self._sd(sr, desc, 0, 2), self._sd(sr, desc, 2, 3)]
        store.insert_stream_datums(sds)
        duid = desc.descriptor_doc["uid"]
        copy = pickle.loads(pickle.dumps(store))
        try:
            assert copy.supports_stream_data
            assert copy.get_stream_resource(sr.stream_resource_doc["uid"]) == \
                sr.stream_resource_doc
            assert copy.stream_resources(run.start["uid"]) == [sr.stream_resource_doc]
            assert copy.stream_datums([duid]) == sds
            # writes through the copy are seen here
            more = [self._sd(sr, desc, 3, 5)]
            copy.insert_stream_datums(more)
            assert store.stream_datums([duid]) == sds + more
        finally:
            copy.close()
