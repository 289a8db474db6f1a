"""Reading runs back: lookups, search, Header and EventSource.docs()."""

from __future__ import annotations

import pickle

import event_model
import pytest

from dask_broker import (
    AmbiguousKeyError,
    Broker,
    DaskBrokerError,
    Header,
    NoEventDescriptors,
    RunNotFoundError,
    UnknownFieldError,
    UnsupportedQueryError,
)
from dask_broker.errors import MissingFileError

METADATA = [
    {"scan_id": 1, "plan_name": "scan", "sample": {"name": "Si", "thickness": 0.5},
     "tags": ["calib", "hot"], "operator": "ann"},
    {"scan_id": 2, "plan_name": "count", "sample": {"name": "Ge"}, "tags": ["hot"]},
    {"scan_id": 3, "plan_name": "scan", "sample": {"name": "Si", "thickness": 1.5}},
    {"scan_id": 2, "plan_name": "rel_scan", "tags": ["cold"], "operator": "bob"},
    {"scan_id": 5, "plan_name": "count", "sample": {"name": "Ge", "thickness": 2.0},
     "operator": "ann"},
]


@pytest.fixture
def db(any_db):
    """Every read test runs on each store backend: lookups and replay are the Broker's."""
    return any_db


@pytest.fixture
def many(db, make_run, insert):
    """Five small runs with varied metadata; returns their start docs."""
    runs = [insert(db, make_run(metadata=md, n_primary=1, n_baseline=0, external=False))
            for md in METADATA]
    return [r.start for r in runs]


def newest_first(starts):
    return sorted(starts, key=lambda s: s["time"], reverse=True)


# ---------------------------------------------------------------- lookups
def test_lookup_by_full_uid(db, many):
    for start in many:
        h = db[start["uid"]]
        assert isinstance(h, Header)
        assert h.uid == start["uid"] and h.start == start
        assert start["uid"] in db


def test_lookup_by_unique_prefix(db, make_run, insert):
    uids = ["abc123-1", "abc124-1", "abd000-1", "f00"]
    for uid in uids:
        insert(db, make_run(uid=uid, n_primary=1, n_baseline=0, external=False))
    for uid in uids:
        for k in range(1, len(uid) + 1):
            prefix = uid[:k]
            matching = [u for u in uids if u.startswith(prefix)]
            if len(matching) == 1:
                assert db[prefix].uid == uid
                assert prefix in db


@pytest.mark.parametrize("prefix", ["ab", "abc12", "a"])
def test_ambiguous_prefix(db, make_run, insert, prefix):
    for uid in ["abc123-1", "abc124-1", "abd000-1"]:
        insert(db, make_run(uid=uid, n_primary=1, n_baseline=0, external=False))
    with pytest.raises(AmbiguousKeyError) as info:
        db[prefix]
    assert isinstance(info.value, ValueError) and isinstance(info.value, DaskBrokerError)
    assert repr(prefix) in str(info.value)
    assert prefix not in db


@pytest.mark.parametrize("key", ["zzz", "abc123-1x", ""])
def test_unknown_uid(db, make_run, insert, key):
    insert(db, make_run(uid="abc123-1", n_primary=1, n_baseline=0, external=False))
    with pytest.raises(RunNotFoundError) as info:
        db[key]
    assert isinstance(info.value, KeyError) and isinstance(info.value, DaskBrokerError)
    assert repr(key) in str(info.value)
    assert key not in db


def test_recency(db, many):
    expected = newest_first(many)
    for n in range(1, len(many) + 1):
        assert db[-n].start == expected[n - 1]
    with pytest.raises(RunNotFoundError):
        db[-(len(many) + 1)]
    assert len(db) == len(many)
    assert [h.uid for h in db] == [s["uid"] for s in expected]


def test_recency_of_empty_catalog(db):
    with pytest.raises(RunNotFoundError):
        db[-1]
    assert len(db) == 0 and list(db) == []


def test_scan_id_gives_most_recent(db, many):
    for scan_id in {s["scan_id"] for s in many}:
        candidates = [s for s in many if s["scan_id"] == scan_id]
        expected = max(candidates, key=lambda s: s["time"])
        assert db[scan_id].uid == expected["uid"]
    with pytest.raises(RunNotFoundError, match="4"):
        db[4]
    assert 4 not in db and 3 in db


def test_zero_is_not_a_run(db, many):
    with pytest.raises(RunNotFoundError) as info:
        db[0]
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize("key", [1.0, True, None, b"abc"])
def test_bad_key_type(db, many, key):
    with pytest.raises(TypeError):
        db[key]


def test_headers_compare_by_uid_and_catalog(db, many):
    assert db[-1] == db[newest_first(many)[0]["uid"]]
    assert db[-1] != db[-2]
    assert hash(db[-1]) == hash(db[newest_first(many)[0]["uid"]])
    assert Broker.from_uri(db.uri)[-1] == db[-1]


# ---------------------------------------------------------------- search
QUERIES = [
    ({}, lambda s: True),
    ({"plan_name": "scan"}, lambda s: s["plan_name"] == "scan"),
    ({"plan_name": "scan", "scan_id": 3}, lambda s: s["plan_name"] == "scan" and s["scan_id"] == 3),
    ({"scan_id": {"$in": [2, 5]}}, lambda s: s["scan_id"] in (2, 5)),
    ({"plan_name": {"$in": ["count", "nothing"]}}, lambda s: s["plan_name"] == "count"),
    ({"scan_id": {"$gt": 2}}, lambda s: s["scan_id"] > 2),
    ({"scan_id": {"$gte": 2}}, lambda s: s["scan_id"] >= 2),
    ({"scan_id": {"$lt": 3}}, lambda s: s["scan_id"] < 3),
    ({"scan_id": {"$lte": 3}}, lambda s: s["scan_id"] <= 3),
    ({"scan_id": {"$gt": 1, "$lte": 3}}, lambda s: 1 < s["scan_id"] <= 3),
    ({"plan_name": {"$ne": "count"}}, lambda s: s["plan_name"] != "count"),
    ({"operator": {"$ne": "ann"}}, lambda s: s.get("operator") != "ann"),
    ({"sample.name": "Si"}, lambda s: s.get("sample", {}).get("name") == "Si"),
    ({"sample.thickness": {"$gte": 1.0}}, lambda s: s.get("sample", {}).get("thickness", 0) >= 1.0),
    ({"tags": "hot"}, lambda s: "hot" in s.get("tags", [])),
    ({"tags": {"$in": ["cold", "calib"]}}, lambda s: bool({"cold", "calib"} & set(s.get("tags", [])))),
    ({"operator": {"$exists": True}}, lambda s: "operator" in s),
    ({"$or": [{"sample.name": "Ge"}, {"tags": "cold"}]},
     lambda s: s.get("sample", {}).get("name") == "Ge" or "cold" in s.get("tags", [])),
    ({"scan_id": {"$nin": [1, 2]}}, lambda s: s["scan_id"] not in (1, 2)),
    ({"plan_name": "nonexistent"}, lambda s: False),
]


@pytest.mark.parametrize("case", range(len(QUERIES)), ids=[str(q) for q, _ in QUERIES])
def test_search(db, many, case):
    query, predicate = QUERIES[case]
    expected = [s["uid"] for s in newest_first(many) if predicate(s)]
    got = db.search(query)
    assert all(isinstance(h, Header) for h in got)
    assert [h.uid for h in got] == expected
    if all(not k.startswith("$") for k in query):
        assert [h.uid for h in db(**query)] == expected


def test_search_none_is_everything(db, many):
    assert [h.uid for h in db.search()] == [s["uid"] for s in newest_first(many)]


@pytest.mark.parametrize("query,op", [
    ({"plan_name": {"$expr": "^sc"}}, "$expr"),
    ({"$where": "this.scan_id > 1"}, "$where"),
    ({"scan_id": {"$not": {"$mod": [2, 0]}}}, "$mod"),
    ({"$text": {"$search": "Si"}}, "$text"),
    ({"$and": [{"scan_id": 1}, {"tags": {"$elemMatch": {"$size": 1}}}]}, "$size"),
    ({"scan_id": {"$in": 2}}, "$in"),
])
def test_unsupported_query(db, many, query, op):
    with pytest.raises(UnsupportedQueryError) as info:
        db.search(query)
    assert isinstance(info.value, ValueError)
    assert op in str(info.value)


def test_unsupported_query_through_call(db, many):
    with pytest.raises(UnsupportedQueryError, match=r"\$size"):
        db(tags={"$size": 2})


# ---------------------------------------------------------------- Header
def test_header_attributes(db, make_run, insert):
    run = make_run(metadata={"scan_id": 7}, stop=False)
    insert(db, run)
    h = db[run.uid]
    assert h.uid == run.uid
    assert h.start == run.start
    assert h.stop is None
    assert h.descriptors == run.of("descriptor")
    assert h.stream_names == ["primary", "baseline"]
    primary, baseline = run.descriptors["primary"], run.descriptors["baseline"]
    # a set on the Header (as databroker's), a list in descriptor order on the EventSource
    assert h.fields("primary") == set(primary["data_keys"])
    assert h.fields("baseline") == set(baseline["data_keys"])
    assert h.fields() == set(primary["data_keys"]) | set(baseline["data_keys"])
    es = db.event_source
    assert es.fields(h, "primary") == list(primary["data_keys"])
    assert es.fields(h, "baseline") == list(baseline["data_keys"])
    assert es.fields(h) == list(primary["data_keys"]) + list(baseline["data_keys"])
    assert h.resources() == run.resources
    with pytest.raises(NoEventDescriptors) as info:
        h.fields("nope")
    assert isinstance(info.value, KeyError) and "nope" in str(info.value)

    stop = make_run().stop
    stop = dict(stop, run_start=run.uid)
    db.insert("stop", stop)
    assert h.stop == stop  # the same Header now sees the stop
    assert db[run.uid].stop == stop
    assert "stopped" in repr(h)


def test_header_unknown_attribute(db, run_in_db):
    with pytest.raises(AttributeError):
        db[-1].no_such_method


def test_broker_and_header_pickle(db, run_in_db):
    db2 = pickle.loads(pickle.dumps(db))
    assert db2.uri == db.uri
    h = pickle.loads(pickle.dumps(db[-1]))
    assert h == db[-1]
    assert list(h.docs()) == list(db[-1].docs())


# ---------------------------------------------------------------- docs()
def assert_valid_order(docs, run):
    """The ordering rules of EventSource.docs."""
    names = [n for n, _ in docs]
    assert names[0] == "start" and names.count("start") == 1
    if run.stop is not None:
        assert names[-1] == "stop" and names.count("stop") == 1
    else:
        assert "stop" not in names
    descriptors, resources, datum = set(), set(), set()
    external = {d["uid"]: [k for k, v in d["data_keys"].items() if v.get("external")]
                for d in run.descriptors.values()}
    for name, doc in docs[1:]:
        if name == "descriptor":
            descriptors.add(doc["uid"])
        elif name == "resource":
            resources.add(doc["uid"])
        elif name == "datum":
            assert doc["resource"] in resources, "datum before its resource"
            datum.add(doc["datum_id"])
        elif name == "event":
            assert doc["descriptor"] in descriptors, "event before its descriptor"
            for key in external[doc["descriptor"]]:
                if key in doc["data"]:
                    assert doc["data"][key] in datum, "event before its datum"
        else:
            assert name == "stop"


def test_docs_round_trip(db, run_in_db, make_run, insert):
    other = insert(db, make_run())  # another run in the catalog must not leak in
    run = run_in_db
    docs = list(db[run.uid].docs())
    assert_valid_order(docs, run)
    got = {}
    for name, doc in docs:
        got.setdefault(name, []).append(doc)
    assert got["start"] == [run.start]
    assert got["stop"] == [run.stop]
    # a descriptor comes when its stream's first event does (any order is valid)
    by_uid = sorted(run.of("descriptor"), key=lambda d: d["uid"])
    assert sorted(got["descriptor"], key=lambda d: d["uid"]) == by_uid
    assert got["resource"] == run.resources
    assert got["datum"] == run.datum
    # events in time order across streams (the times were given increasing)
    expected_events = sorted(run.of("event"), key=lambda e: e["time"])
    assert got["event"] == [run.expected_event(e) for e in expected_events]
    assert other.uid not in {d.get("run_start") for d in got["descriptor"]}


def test_docs_event_values_and_types(db, run_in_db):
    run = run_in_db
    events = [doc for name, doc in db[run.uid].docs("primary") if name == "event"]
    for got, sent in zip(events, run.events["primary"], strict=True):
        for key, value in sent["data"].items():
            assert type(got["data"][key]) is type(value)
            assert got["data"][key] == value
        assert got["filled"] == {"img": False}
        assert got["seq_num"] == sent["seq_num"]


def test_docs_stream_name(db, run_in_db):
    run = run_in_db
    baseline = list(db[run.uid].docs("baseline"))
    assert_valid_order(baseline, run)
    assert [n for n, _ in baseline] == (["start", "descriptor"] + ["event"] * len(run.events["baseline"])
                                        + ["stop"])
    assert baseline[1][1] == run.descriptors["baseline"]
    assert [d for n, d in baseline if n == "event"] == [
        run.expected_event(e) for e in run.events["baseline"]]

    primary = list(db[run.uid].docs(stream_name="primary"))
    assert_valid_order(primary, run)
    names = [n for n, _ in primary]
    assert names.count("descriptor") == 1 and names.count("resource") == 1
    assert [d for n, d in primary if n == "datum"] == run.datum
    assert [d for n, d in primary if n == "event"] == [
        run.expected_event(e) for e in run.events["primary"]]


def test_docs_unknown_stream(db, run_in_db):
    with pytest.raises(NoEventDescriptors) as info:
        list(db[-1].docs("nope"))
    assert "nope" in str(info.value) and isinstance(info.value, KeyError)


@pytest.mark.parametrize("fields", [["x"], ["label", "img"], ["temp"], ["n", "temp"]])
def test_docs_fields_projection(db, run_in_db, fields):
    run = run_in_db
    docs = list(db[run.uid].docs(fields=fields))
    assert_valid_order(docs, run)
    for name, doc in docs:
        if name == "descriptor":
            original = next(d for d in run.of("descriptor") if d["uid"] == doc["uid"])
            assert list(doc["data_keys"]) == [k for k in original["data_keys"] if k in fields]
            assert {k: v for k, v in doc.items() if k != "data_keys"} == {
                k: v for k, v in original.items() if k != "data_keys"}
    # every event of a stream holding a requested field, projected (whether a stream
    # holding none of them yields events with empty data is left open)
    relevant = {d["uid"] for d in run.of("descriptor") if set(d["data_keys"]) & set(fields)}
    events = [d for n, d in docs if n == "event" and d["descriptor"] in relevant]
    expected = sorted((e for e in run.of("event") if e["descriptor"] in relevant),
                      key=lambda e: e["time"])
    assert events == [run.expected_event(e, fields) for e in expected]


def test_docs_unknown_field(db, run_in_db):
    with pytest.raises(UnknownFieldError) as info:
        list(db[-1].docs("baseline", fields=["x"]))
    assert "'x'" in str(info.value) and isinstance(info.value, KeyError)


def test_docs_fill_without_external_fields_is_unchanged(db, make_run, insert):
    run = insert(db, make_run(external=False))
    assert list(db[run.uid].docs(fill=True)) == list(db[run.uid].docs())


def test_docs_fill_with_missing_files(db, run_in_db):
    """Filling was once not available (FillNotAvailableError); now a missing file is named."""
    with pytest.raises(MissingFileError) as info:
        list(db[-1].docs(fill=True))
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, DaskBrokerError)
    assert run_in_db.resources[0]["uid"] in str(info.value)
    assert run_in_db.resources[0]["root"] in str(info.value)
    # without fill the same run reads fine
    assert sum(n == "event" for n, _ in db[-1].docs()) == len(run_in_db.of("event"))


def test_run_in_progress_is_readable(db, make_run):
    run = make_run(n_primary=6, stop=False)
    h = None
    inserted = []
    for name, doc in run.docs:
        db.insert(name, doc)
        inserted.append((name, doc))
        if name == "start":
            h = db[-1]
        if name == "event":
            seen = [d for n, d in h.docs() if n == "event"]
            sent = [d for n, d in inserted if n == "event"]
            assert seen == [run.expected_event(e) for e in sorted(sent, key=lambda e: e["time"])]
            assert h.stop is None
    docs = list(db[run.uid].docs())
    assert_valid_order(docs, run)
    assert [n for n, _ in docs][-1] == "event"


def test_run_without_events(db, make_run):
    run = make_run(n_primary=0, n_baseline=0, external=False)
    for name, doc in run.docs:
        db.insert(name, doc)
    docs = list(db[run.uid].docs())
    assert docs == [("start", run.start), ("descriptor", run.descriptors["primary"]),
                    ("stop", run.stop)]


def test_reopen_from_uri(db, run_in_db, make_run, insert, dump):
    insert(db, make_run(stop=False))
    again = Broker.from_uri(db.uri)
    assert dump(again) == dump(db)
    for h_old, h_new in zip(db, again, strict=True):
        assert list(h_new.docs()) == list(h_old.docs())


def test_resource_without_run_start(db, make_run):
    """A legacy resource (no run_start) is still emitted before the datum that need it."""
    run = make_run(n_primary=3, stop=False)
    legacy = event_model.compose_resource(spec="NPY_SEQ", root="/tmp", resource_path="old.npy",
                                          resource_kwargs={})
    assert "run_start" not in legacy.resource_doc
    for name, doc in run.docs:
        if name == "event" and doc["descriptor"] == run.descriptors["primary"]["uid"]:
            datum = legacy.compose_datum(datum_kwargs={"index": doc["seq_num"]})
            if doc["seq_num"] == 1:
                db.insert("resource", legacy.resource_doc)
            db.insert("datum", datum)
            doc = {**doc, "data": {**doc["data"], "img": datum["datum_id"]}}
        db.insert(name, doc)
    for stream in (None, "primary"):
        docs = list(db[run.uid].docs(stream))
        assert_valid_order(docs, run)
        assert [d for n, d in docs if n == "resource"].count(legacy.resource_doc) == 1
        legacy_datum = [d for n, d in docs if n == "datum"
                        and d["resource"] == legacy.resource_doc["uid"]]
        assert [d["datum_kwargs"]["index"] for d in legacy_datum] == [1, 2, 3]


def test_since_until_slices_and_contains(db):
    """databroker v0 habits: db(since=..., until=...), db[-3:], `prefix in db`."""
    from dask_broker.errors import InvalidArgumentError

    t0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    uids = []
    for day in range(5):
        bundle = event_model.compose_run(time=t0 + day * 86400, metadata={"scan_id": day + 1})
        db.insert("start", bundle.start_doc)
        uids.append(bundle.start_doc["uid"])
    got = db(since=t0 + 86400, until=t0 + 3 * 86400)
    assert [h.uid for h in got] == [uids[2], uids[1]]
    iso = db.search({"scan_id": {"$gte": 2}}, since="2023-11-16T00:00:00Z")
    assert [h.uid for h in iso] == [uids[4], uids[3], uids[2]]
    with pytest.raises(InvalidArgumentError, match="since"):
        db(since="not a date")
    # newest first, as databroker (db[-3:] == [db[-1], db[-2], db[-3]])
    assert [h.uid for h in db[-3:]] == uids[2:][::-1]
    assert [h.uid for h in db[-4:-2]] == uids[1:3][::-1]
    with pytest.raises(InvalidArgumentError, match="negative"):
        db[1:3]
    assert uids[0][:8] in db and "zzzz" not in db and 99 not in db


def test_indexed_search_agrees_with_python_matching(db):
    """Each store narrows scan_id/uid/time conditions with its index (SQLite and PostgreSQL
    with SQL, MongoDB with its query), with the same results as Python."""
    from dask_broker.query import match_query

    starts = []
    for i, scan_id in enumerate([3, 3, 4, 1, None, 5, 2]):
        meta = {} if scan_id is None else {"scan_id": scan_id}
        bundle = event_model.compose_run(time=1000.0 + i, metadata=meta)
        db.insert("start", bundle.start_doc)
        starts.append(bundle.start_doc)
    for query in ({"scan_id": 3}, {"scan_id": {"$gte": 3}}, {"scan_id": {"$ne": 3}},
                  {"time": {"$lt": 1003.0}}, {"scan_id": {"$lt": 5}, "time": {"$gt": 1000.5}},
                  {"uid": starts[2]["uid"]}):
        want = [s["uid"] for s in reversed(starts) if match_query(s, query)]
        assert [h.uid for h in db.search(query)] == want, query
    assert len(db) == 7
