"""MongoStore: the shipped conformance suite (on the test server and on mongomock),
URIs, faults, atomic writes, batching, legacy data, and Broker end to end."""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import random
import socket
import time

import event_model
import numpy as np
import pytest
from _mongo_testing import SharedMongomockClient, mongomock_uri

from dask_broker import Broker
from dask_broker.errors import (
    DaskBrokerError,
    DuplicateUidError,
    StoreURIError,
    UnsupportedQueryError,
)
from dask_broker.query import parse_query
from dask_broker.stores import open_store, store_class
from dask_broker.stores.mongo import reads as mongo_module
from dask_broker.testing import StoreConformance
from dask_broker.stores.mongo import uri as mongo_uri, values as mongo_values
from dask_broker.stores.mongo import DEFAULT_SERVER_SELECTION_TIMEOUT_MS, MongoStore

pytestmark = pytest.mark.mongo

_NDARRAY_REASON = (
    "BSON has no array type apart from lists: numpy arrays are stored as lists (as "
    "suitcase-mongo stores them) and read back as lists, unless their data_key declares "
    "dtype 'array' (see test_ndarray_values_read_as_lists_unless_declared_arrays)")
_NO_DECIMAL = ("nx-27017 cannot store Decimal128, dask_broker's form of integers beyond 64 bits "
               "(the mongomock run covers them)")
_NX_GAPS = {  # a parameter "kind", or a test's name
    "float-nan-inf": "nx-27017 rejects NaN and Inf values (the mongomock run covers them)",
    "big-int": _NO_DECIMAL,
    "test_numpy_page_columns_round_trip": _NO_DECIMAL + " (its column big_u64)",
}


class _MongoConformance(StoreConformance):
    @pytest.fixture(autouse=True)
    def _known_limits(self, request):
        callspec = getattr(request.node, "callspec", None)
        kind = callspec.params.get("kind") if callspec else None
        if isinstance(kind, str) and kind.startswith("ndarray"):
            request.applymarker(pytest.mark.xfail(strict=True, reason=_NDARRAY_REASON))
        gap = _NX_GAPS.get(kind) or _NX_GAPS.get(request.node.originalname)
        if gap and self._on_nx(request):
            pytest.skip(f"needs a real mongod: {gap}")

    @staticmethod
    def _on_nx(request) -> bool:
        return False


class TestMongoServerConformance(_MongoConformance):
    """The conformance suite against the session's server, a new database per test."""

    @pytest.fixture
    def make_store(self, new_mongo_uri):
        return MongoStore.from_uri(new_mongo_uri())

    @staticmethod
    def _on_nx(request) -> bool:
        return not request.getfixturevalue("mongo_server").is_real_mongod


class TestMongomockConformance(_MongoConformance):
    """The conformance suite against mongomock, in process (covers NaN and big ints)."""

    #: mongomock scans a collection per query; the store has no paging threshold to
    #: cross (one Mongo document per event), and the server run keeps the default.
    MANY_EVENTS = 300

    @pytest.fixture
    def make_store(self):
        return MongoStore(mongomock_uri(), mongo_client_class=SharedMongomockClient)


# ---------------------------------------------------------------- helpers
def _run(metadata=None, time=None):
    return event_model.compose_run(metadata=metadata, time=time)


def _descriptor(bundle, name="primary", keys=("x", "label")):
    data_keys = {k: {"source": "sim", "dtype": "number", "shape": []} for k in keys}
    return bundle.compose_descriptor(name=name, data_keys=data_keys)


def _page(desc, seq_nums, *, t0=None, value=lambda k, s: float(s)):
    keys = list(desc.descriptor_doc["data_keys"])
    seq_nums = list(seq_nums)
    t0 = desc.descriptor_doc["time"] if t0 is None else t0
    return desc.compose_event_page(
        data={k: [value(k, s) for s in seq_nums] for k in keys},
        timestamps={k: [t0 + s for s in seq_nums] for k in keys},
        seq_num=seq_nums, time=[t0 + s for s in seq_nums])


def _events(store, descriptor_uids, **kwargs):
    out = []
    for page in store.iter_event_pages(descriptor_uids, uids=True, **kwargs):
        for i in range(len(page)):
            out.append({"uid": page.uid[i], "descriptor": page.descriptor,
                        "seq_num": int(page.seq_num[i]),
                        "data": {k: (v[i].item() if isinstance(v, np.ndarray) else v[i])
                                 for k, v in page.data.items()}})
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["server", "mongomock"])
def any_store(request):
    """A fresh MongoStore on the test server, then on mongomock."""
    if request.param == "server":
        return request.getfixturevalue("mongo_store")
    return request.getfixturevalue("mock_store")


# ---------------------------------------------------------------- URIs
def test_store_class_and_broker_from_uri(mongo_uri):
    assert store_class(mongo_uri) is MongoStore
    assert store_class("mongodb+srv://cluster.example.org/db") is MongoStore
    db = Broker.from_uri(mongo_uri)
    assert isinstance(db.store, MongoStore)
    assert db.uri == mongo_uri
    assert len(db) == 0
    assert open_store(mongo_uri) is open_store(mongo_uri)


@pytest.mark.parametrize("uri", [
    "mongodb://localhost:27017/mds",
    "mongodb://user:secret@h1:27017,h2:27018/mds?replicaSet=rs0&authSource=admin",
    "mongodb://localhost/mds?serverSelectionTimeoutMS=250",
])
def test_uri_round_trip(uri):
    store = MongoStore.from_uri(uri)
    assert store.uri == uri
    assert MongoStore.from_uri(store.uri) == store
    assert pickle.loads(pickle.dumps(store)).uri == uri
    assert "secret" not in repr(store)
    assert store.database_name == "mds"


def test_asset_registry_uri_is_carried_by_the_uri():
    assets = "mongodb://other:27018/assets?authSource=admin"
    store = MongoStore.from_uri("mongodb://localhost:27017/mds", asset_registry_uri=assets)
    assert store.asset_registry_uri == assets
    assert "asset_registry_uri=" in store.uri
    again = MongoStore.from_uri(store.uri)
    assert again == store and again.asset_registry_uri == assets
    assert pickle.loads(pickle.dumps(store)).asset_registry_uri == assets
    # the same database twice is one database
    same = MongoStore.from_uri("mongodb://localhost:27017/mds",
                               asset_registry_uri="mongodb://localhost:27017/mds")
    assert same.uri == "mongodb://localhost:27017/mds"
    # the encoded one and the argument must agree
    assert MongoStore.from_uri(store.uri, asset_registry_uri=assets) == store
    with pytest.raises(StoreURIError, match="give one"):
        MongoStore.from_uri(store.uri, asset_registry_uri="mongodb://x/other")


def test_timeout_argument_is_kept_in_the_uri():
    store = MongoStore.from_uri("mongodb://localhost/mds", server_selection_timeout_ms=250)
    assert "serverSelectionTimeoutMS=250" in store.uri
    assert MongoStore.from_uri(store.uri) == store
    assert 1000 <= DEFAULT_SERVER_SELECTION_TIMEOUT_MS <= 10_000


@pytest.mark.parametrize("uri,match", [
    ("mongodb://localhost:27017", "names no database"),
    ("mongodb://localhost:27017/", "names no database"),
    ("mongodb://localhost:27017/a.b", "cannot"),
    ("mongodb://localhost:notaport/db", "not valid"),
    ("mongodb:///db", "names no host"),
    ("postgres://localhost/db", "not a MongoDB URI"),
    ("localhost/db", "not a MongoDB URI"),
])
def test_bad_uris(uri, match):
    with pytest.raises(StoreURIError, match=match):
        MongoStore.from_uri(uri)


# ---------------------------------------------------------------- faults
@pytest.mark.parametrize("how", ["argument", "uri-option"])
def test_unreachable_server_fails_fast_naming_the_host(how):
    port = _free_port()  # nothing listens there
    host = f"127.0.0.1:{port}"
    if how == "argument":
        store = MongoStore.from_uri(f"mongodb://{host}/mds", server_selection_timeout_ms=150)
    else:
        store = MongoStore.from_uri(f"mongodb://{host}/mds?serverSelectionTimeoutMS=150")
    run = _run()
    calls = [
        lambda: store.get_start("x"),
        lambda: list(store.iter_starts()),
        lambda: list(store.search({"scan_id": 1})),
        lambda: store.insert_start(run.start_doc),
        lambda: list(store.iter_event_pages(["d"])),
        lambda: store.event_counts(["d"]),
        lambda: store.datum(["a/0"]),
    ]
    if how == "uri-option":
        calls = calls[:1]
    for call in calls:
        t0 = time.monotonic()
        with pytest.raises(StoreURIError, match=host) as info:
            call()
        assert time.monotonic() - t0 < 5
        assert "cannot reach the MongoDB server" in str(info.value)
    db = Broker.from_uri(store.uri)
    with pytest.raises(StoreURIError, match=host):
        db[-1]
    store.close()


def test_unreachable_asset_registry_names_its_host(mongo_uri):
    port = _free_port()
    store = MongoStore.from_uri(mongo_uri, asset_registry_uri=f"mongodb://127.0.0.1:{port}/ar",
                                server_selection_timeout_ms=300)
    assert store.get_start("x") is None  # the metadatastore answers
    with pytest.raises(StoreURIError, match=f"127.0.0.1:{port}"):
        store.get_resource("r")
    store.close()


def test_search_validates_before_asking_the_server(any_store):
    with pytest.raises(UnsupportedQueryError, match=r"\$where"):
        list(any_store.search({"$where": "1"}))


def test_search_sends_the_index_filter_the_server_answers(any_store, monkeypatch):
    """MongoDB (and mongomock) get the whole index filter; a server that is not MongoDB
    (nx-27017) only top-level equality and $in, which it answers right."""
    for i, md in enumerate([{"scan_id": 1, "sample": {"name": "Si"}}, {"scan_id": 2}]):
        any_store.insert_start(_run(metadata=md, time=1000.0 + i).start_doc)
    sent = []
    real_starts = any_store._starts
    monkeypatch.setattr(any_store, "_starts", lambda f: sent.append(f) or real_starts(f))
    query = {"scan_id": {"$in": [1, 2], "$gte": 1}, "sample.name": "Si"}
    assert [d["scan_id"] for d in any_store.search(query)] == [1]
    if any_store._is_mongodb():
        assert sent == [{"$and": [{"scan_id": {"$in": [1, 2]}}, {"scan_id": {"$gte": 1}},
                                  {"sample.name": "Si"}]}]
    else:
        assert sent == [{"scan_id": {"$in": [1, 2]}}]


@pytest.mark.parametrize("seed", range(2))
def test_index_filter_keeps_every_match_on_the_server(any_store, seed):
    """What the server returns for the index filter holds every run match() accepts --
    with lists, lists of documents, booleans and mixed types in the runs."""
    rng = random.Random(seed)
    scalars = [0, 1, 2.5, -1, "a", "b", "", True, False, None]

    def value(depth=0):
        r = rng.random()
        if r < 0.6 or depth > 1:
            return rng.choice(scalars)
        if r < 0.8:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {k: value(depth + 1) for k in rng.sample(["x", "name"], rng.randint(0, 2))}

    starts = []
    for i in range(40):
        md = {f: value() for f in ("a", "b", "c") if rng.random() < 0.8}
        starts.append(_run(metadata=md, time=1000.0 + i).start_doc)
        any_store.insert_start(starts[-1])
    basic = not any_store._is_mongodb()
    plain = [0, 1, 2.5, -1, "a", "b", ""]
    for _ in range(60):
        field = rng.choice(["a", "b", "c", "a.x", "b.name", "c.0"])
        op = rng.choice(["$eq", "$in", "$gt", "$gte", "$lt", "$lte"])
        cond = {op: rng.sample(plain, 2) if op == "$in" else rng.choice(plain)}
        query = parse_query(rng.choice([{field: cond}, {"$or": [{field: cond}, {"c": 1}]}]))
        filt = query.index_filter(basic=basic)
        passed = {d["uid"] for d in any_store._starts(filt)}
        matches = {d["uid"] for d in starts if query.match(d)}
        assert matches <= passed, (filt, dict(query))


# ---------------------------------------------------------------- layout
def test_layout_and_indexes(mongo_store, raw_db, mongo_server):
    run = _run(metadata={"scan_id": 7})
    mongo_store.insert_start(run.start_doc)
    desc = _descriptor(run)
    mongo_store.insert_descriptor(desc.descriptor_doc)
    page = _page(desc, range(1, 4))
    mongo_store.insert_event_page(page)
    res = run.compose_resource(spec="NPY_SEQ", root="/r", resource_path="p", resource_kwargs={})
    mongo_store.insert_resource(res.resource_doc)
    dpage = res.compose_datum_page(datum_kwargs={"index": [0, 1]})
    mongo_store.insert_datum_page(dpage)
    stop = run.compose_stop()
    mongo_store.insert_stop(stop)

    names = set(raw_db.list_collection_names())
    assert {"run_start", "run_stop", "event_descriptor", "event", "resource", "datum"} <= names
    events = list(raw_db.event.find({"descriptor": desc.descriptor_doc["uid"]}, {"_id": 0})
                  .sort("seq_num", 1))
    # unpacked as suitcase-mongo unpacks it: each event with its row of filled ({} here)
    assert events == list(event_model.unpack_event_page(page))
    assert all(e["filled"] == {} for e in events)
    datum = list(raw_db.datum.find({"resource": res.resource_doc["uid"]}, {"_id": 0}))
    assert datum == [dict(d) for d in event_model.unpack_datum_page(dpage)]
    assert raw_db.run_start.find_one({"uid": run.start_doc["uid"]}, {"_id": 0}) == run.start_doc
    assert raw_db.run_stop.find_one({"run_start": run.start_doc["uid"]}, {"_id": 0}) == stop

    def index_keys(coll):
        out = {}
        for info in coll.index_information().values():
            key = tuple(k for k, _ in info["key"])
            if mongo_server.is_real_mongod:
                key = tuple((k, d) for k, d in info["key"])
            out[key] = bool(info.get("unique"))
        return out

    def want(*fields):
        if mongo_server.is_real_mongod:
            return tuple(f if isinstance(f, tuple) else (f, 1) for f in fields)
        return tuple(f[0] if isinstance(f, tuple) else f for f in fields)

    expected = {
        "event": {want("uid"): True, want(("descriptor", -1), ("time", 1)): False,
                  want("descriptor", "seq_num", "time"): False},
        "datum": {want("datum_id"): True, want("resource"): False},
        "resource": {want("uid"): False, want("run_start"): False},
        "run_start": {want("uid"): True, want("scan_id"): False},
        "run_stop": {want("uid"): True, want("run_start"): True},
        "event_descriptor": {want("uid"): True,
                             want(("run_start", -1), ("time", -1)): False},
    }
    if mongo_server.is_real_mongod:
        expected["run_start"][want(("time", -1), ("_id", -1))] = True
    descending = {want(("descriptor", -1), ("time", 1)), want(("run_start", -1), ("time", -1))}
    for coll, indexes in expected.items():
        got = index_keys(raw_db[coll])
        for key, unique in indexes.items():
            if key in descending and not mongo_server.is_real_mongod:
                continue  # nx-27017 accepts indexes with descending keys but does not list them
            assert got.get(key) == unique, (coll, key, got)


def test_stream_collections_in_the_asset_registry(new_mongo_uri, mongo_server):
    """stream_resource / stream_datum: dask_broker's own collections beside resource
    and datum (suitcase-mongo has none), documents stored as given, with indexes."""
    from pymongo import MongoClient

    mds_uri, assets_uri = new_mongo_uri(), new_mongo_uri()
    store = MongoStore.from_uri(mds_uri, asset_registry_uri=assets_uri)
    run = _run()
    store.insert_start(run.start_doc)
    desc = _descriptor(run)
    store.insert_descriptor(desc.descriptor_doc)
    sr = run.compose_stream_resource(mimetype="application/x-hdf5", uri="file://localhost/d.h5",
                                     data_key="x", parameters={"dataset": "/d"})
    sds = [sr.compose_stream_datum(indices={"start": i, "stop": i + 1},
                                   seq_nums={"start": i + 1, "stop": i + 2},
                                   descriptor=desc.descriptor_doc) for i in range(3)]
    store.insert_stream_resource(sr.stream_resource_doc)
    store.insert_stream_datums(sds)
    store.close()

    client = MongoClient(mds_uri, serverSelectionTimeoutMS=5000)
    try:
        mds = client.get_database(MongoStore.from_uri(mds_uri).database_name)
        ar = client.get_database(MongoStore.from_uri(assets_uri).database_name)
        assert not {"stream_resource", "stream_datum"} & set(mds.list_collection_names())
        no_id = {"_id": False}
        assert list(ar.stream_resource.find({}, no_id)) == [sr.stream_resource_doc]
        assert list(ar.stream_datum.find({}, no_id).sort("_id", 1)) == sds

        def keys(coll):
            return {tuple(k for k, _ in i["key"]): bool(i.get("unique"))
                    for i in coll.index_information().values()}

        got_sr, got_sd = keys(ar.stream_resource), keys(ar.stream_datum)
        assert got_sr.get(("uid",)) is True and got_sr.get(("run_start",)) is False
        assert got_sd.get(("uid",)) is True and got_sd.get(("stream_resource",)) is False
        if mongo_server.is_real_mongod:
            assert got_sd.get(("descriptor", "_id")) is False
        else:  # nx-27017 gets no index holding _id (see MongoStore._create_indexes)
            assert got_sd.get(("descriptor",)) is False
    finally:
        client.close()


def test_extra_indexes_only_on_an_empty_database(mongo_store, raw_db):
    raw_db.event.insert_one({"uid": "legacy", "descriptor": "d", "seq_num": 1, "time": 0.0,
                             "data": {}, "timestamps": {}})
    mongo_store.insert_start(_run().start_doc)  # the first write creates suitcase's indexes
    keys = [tuple(k for k, _ in i["key"]) for i in raw_db.event.index_information().values()]
    assert ("uid",) in keys
    assert ("descriptor", "seq_num", "time") not in keys
    mongo_store.create_indexes()
    keys = [tuple(k for k, _ in i["key"]) for i in raw_db.event.index_information().values()]
    assert ("descriptor", "seq_num", "time") in keys


# ---------------------------------------------------------------- atomic writes
def _patch_insert_many(monkeypatch, store, behaviour):
    """Replace insert_many of the store's client's Collection class by ``behaviour``."""
    coll_cls = type(store._mds().event)
    original = coll_cls.insert_many

    def patched(self, documents, *args, **kwargs):
        return behaviour(original, self, list(documents), *args, **kwargs)

    monkeypatch.setattr(coll_cls, "insert_many", patched)


@pytest.mark.parametrize("kind", ["event", "datum", "stream_datum"])
def test_concurrent_duplicate_rolls_back_the_whole_page(any_store, monkeypatch, kind):
    run = _run()
    any_store.insert_start(run.start_doc)
    desc = _descriptor(run)
    any_store.insert_descriptor(desc.descriptor_doc)
    res = run.compose_resource(spec="NPY_SEQ", root="/r", resource_path="p", resource_kwargs={})
    any_store.insert_resource(res.resource_doc)
    if kind == "event":
        page = _page(desc, range(1, 6))
        key, ids = "uid", list(page["uid"])
        insert = any_store.insert_event_page
    elif kind == "datum":
        page = res.compose_datum_page(datum_kwargs={"index": list(range(5))})
        key, ids = "datum_id", list(page["datum_id"])
        insert = any_store.insert_datum_page
    else:
        sr = run.compose_stream_resource(mimetype="application/x-hdf5", uri="file://localhost/d",
                                         data_key="x", parameters={})
        any_store.insert_stream_resource(sr.stream_resource_doc)
        page = [sr.compose_stream_datum(indices={"start": i, "stop": i + 1},
                                        seq_nums={"start": i + 1, "stop": i + 2},
                                        descriptor=desc.descriptor_doc) for i in range(5)]
        key, ids = "uid", [d["uid"] for d in page]
        insert = any_store.insert_stream_datums
    clash = ids[3]

    def racing(original, coll, docs, *args, **kwargs):
        # another client writes one of the ids between the check and the insert
        coll.insert_one({key: clash, "written_by": "someone else"})
        return original(coll, docs, *args, **kwargs)

    _patch_insert_many(monkeypatch, any_store, racing)
    with pytest.raises(DuplicateUidError, match=clash) as info:
        insert(page)
    assert "removed again" in str(info.value)
    monkeypatch.undo()
    coll = any_store._mds().event if kind == "event" else any_store._ar()[kind]
    left = list(coll.find({key: {"$in": ids}}, {"_id": 0}))
    assert left == [{key: clash, "written_by": "someone else"}]


@pytest.mark.parametrize("failure", ["bulk-write-error", "connection-lost"])
def test_partial_failure_is_undone_and_reported(any_store, monkeypatch, failure):
    from pymongo.errors import AutoReconnect, BulkWriteError

    run = _run()
    any_store.insert_start(run.start_doc)
    desc = _descriptor(run)
    any_store.insert_descriptor(desc.descriptor_doc)
    first = _page(desc, [1])
    any_store.insert_event_page(first)
    page = _page(desc, range(2, 12))
    uids = list(page["uid"])

    def half(original, coll, docs, *args, **kwargs):
        original(coll, docs[:4], *args, **kwargs)
        if failure == "connection-lost":
            raise AutoReconnect("connection reset by peer")
        raise BulkWriteError({
            "writeErrors": [{"index": i, "code": 121, "errmsg": "Document failed validation",
                             "op": docs[i]} for i in range(4, len(docs))],
            "nInserted": 4})

    _patch_insert_many(monkeypatch, any_store, half)
    expected = StoreURIError if failure == "connection-lost" else DaskBrokerError
    with pytest.raises(expected) as info:
        any_store.insert_event_page(page)
    message = str(info.value)
    assert not isinstance(info.value, DuplicateUidError)
    assert "removed again" in message and "nothing of this event page is stored" in message
    if failure == "bulk-write-error":
        assert uids[4] in message and "6 event documents were not written" in message
        assert "4 of its 10 event documents were written" in message
    monkeypatch.undo()
    duid = desc.descriptor_doc["uid"]
    assert any_store.event_counts([duid]) == {duid: (1, 1, 1)}
    any_store.insert_event_page(page)  # its uids are free again
    assert any_store.event_counts([duid]) == {duid: (11, 1, 11)}


def test_duplicate_key_error_names_the_document(any_store):
    run = _run()
    any_store.insert_start(run.start_doc)
    with pytest.raises(DuplicateUidError, match=run.start_doc["uid"]):
        any_store.insert_start(dict(run.start_doc))


def test_caller_documents_are_not_modified(any_store):
    run = _run()
    start = run.start_doc
    before = dict(start)
    any_store.insert_start(start)
    assert start == before and "_id" not in start


# ---------------------------------------------------------------- reads
@pytest.mark.parametrize("target,max_events", [(1, 50_000), (10**9, 3)])
def test_small_batches_and_duplicate_seq_nums(any_store, monkeypatch, target, max_events):
    """Pages follow the batch size; every stored event is read (repeats of a seq_num
    included, in stored order), also where the repeats straddle two pages; a table
    keeps the last stored of each repeated seq_num."""
    monkeypatch.setattr(mongo_module, "TARGET_BATCH_BYTES", target)
    monkeypatch.setattr(mongo_module, "MAX_PAGE_EVENTS", max_events)
    run = _run()
    any_store.insert_start(run.start_doc)
    d1, d2 = _descriptor(run), _descriptor(run, "baseline")
    for d in (d1, d2):
        any_store.insert_descriptor(d.descriptor_doc)
    t0 = run.start_doc["time"]
    any_store.insert_event_page(_page(d1, range(1, 8), t0=t0))
    any_store.insert_event_page(_page(d2, range(1, 4), t0=t0))
    later = _page(d1, [3, 3, 5], t0=t0 + 100, value=lambda k, s: -float(s))
    later["time"] = [t0 + 100, t0 + 101, t0 + 102]
    any_store.insert_event_page(later)
    d1uid, d2uid = d1.descriptor_doc["uid"], d2.descriptor_doc["uid"]

    pages = list(any_store.iter_event_pages([d1uid, d2uid]))
    assert all(len({p.descriptor}) == 1 for p in pages)
    assert max(len(p) for p in pages) <= (1 if target == 1 else max_events)
    got = _events(any_store, [d1uid])
    assert [e["seq_num"] for e in got] == [1, 2, 3, 3, 3, 4, 5, 5, 6, 7]
    threes = [e["uid"] for e in got if e["seq_num"] == 3]
    assert threes[1:] == later["uid"][:2]  # repeats in stored order
    assert [e["seq_num"] for e in _events(any_store, [d2uid])] == [1, 2, 3]
    assert [e["seq_num"] for e in _events(any_store, [d1uid], seq_range=(3, 6))] == [
        3, 3, 3, 4, 5, 5]
    both = _events(any_store, [d2uid, d1uid])
    assert len(both) == 13
    from dask_broker import Broker, TimeStruct

    table = Broker(any_store)[run.start_doc["uid"]].table(
        time_struct=TimeStruct(convert_times=False)).compute()
    assert list(table.index) == [1, 2, 3, 4, 5, 6, 7]
    assert table.loc[3, "x"] == -3.0 and table.loc[5, "x"] == -5.0 and table.loc[4, "x"] == 4.0
    # count counts stored documents (repeats included), the range is exact
    assert any_store.event_counts([d1uid]) == {d1uid: (10, 1, 7)}


def test_page_columns_types(any_store):
    run = _run()
    any_store.insert_start(run.start_doc)
    keys = {k: {"source": "s", "dtype": "number", "shape": []}
            for k in ("f", "i", "b", "s", "l", "mixed")}
    desc = run.compose_descriptor(name="primary", data_keys=keys)
    any_store.insert_descriptor(desc.descriptor_doc)
    values = {"f": lambda s: s + 0.5, "i": lambda s: s, "b": lambda s: s % 2 == 0,
              "s": lambda s: f"v{s}", "l": lambda s: [s, s], "mixed": lambda s: s if s % 2 else 0.5}
    any_store.insert_event_page(_page(desc, [1, 2, 3], value=lambda k, s: values[k](s)))
    (page,) = any_store.iter_event_pages([desc.descriptor_doc["uid"]])
    assert page.data["f"].dtype == np.float64 and page.data["f"].tolist() == [1.5, 2.5, 3.5]
    assert page.data["i"].dtype == np.int64 and page.data["i"].tolist() == [1, 2, 3]
    assert page.data["b"].dtype == bool and page.data["b"].tolist() == [False, True, False]
    assert page.data["s"] == ["v1", "v2", "v3"]
    assert page.data["l"] == [[1, 1], [2, 2], [3, 3]]
    assert page.data["mixed"].dtype == np.float64
    assert page.seq_num.dtype == np.int64 and page.time.dtype == np.float64
    assert set(page.timestamps) == set(keys) and page.timestamps["f"].dtype == np.float64
    assert page.uid is None and page.filled is None
    (page,) = any_store.iter_event_pages([desc.descriptor_doc["uid"]], fields=["s", "nope"])
    assert set(page.data) == {"s"} and set(page.timestamps) == {"s"}


def test_ndarray_values_read_as_lists_unless_declared_arrays(any_store):
    """BSON keeps arrays as lists: they read back as lists, except the fields whose
    data_key declares ``dtype: array`` with a shape, which read back as numpy arrays."""
    run = _run()
    any_store.insert_start(run.start_doc)
    keys = {"img": {"source": "s", "dtype": "number", "shape": []},
            "arr": {"source": "s", "dtype": "array", "shape": [2, 3]},
            "ragged": {"source": "s", "dtype": "array", "shape": [-1]}}
    desc = run.compose_descriptor(name="primary", data_keys=keys)
    any_store.insert_descriptor(desc.descriptor_doc)
    values = {"img": lambda s: np.arange(6).reshape(2, 3) * s,
              "arr": lambda s: np.arange(6).reshape(2, 3) * s,
              "ragged": lambda s: list(range(s))}
    any_store.insert_event_page(_page(desc, [1, 2], value=lambda k, s: values[k](s)))
    (got,) = any_store.iter_event_pages([desc.descriptor_doc["uid"]])
    assert got.data["img"] == [[[0, 1, 2], [3, 4, 5]], [[0, 2, 4], [6, 8, 10]]]
    assert isinstance(got.data["arr"], np.ndarray) and got.data["arr"].shape == (2, 2, 3)
    assert got.data["arr"].tolist() == got.data["img"]
    assert got.data["ragged"] == [[0], [0, 1]]


def test_projection_results_nested_or_flat():
    from dask_broker.stores.mongo.values import sub_document as part
    assert part({"data": {"x": 1}, "seq_num": 1}, "data", False) == {"x": 1}
    assert part({"seq_num": 1}, "data", False) == {}
    assert part({"data.x": 2, "data.y": 3, "timestamps.x": 4}, "data", True) == {"x": 2, "y": 3}
    rows = [{"descriptor": "d", "seq_num": 1, "time": 1.0, "data.x": 2.5, "timestamps.x": 9.0}]
    page = MongoStore._page(rows, ["x"], True, False, {})
    assert page.data["x"].tolist() == [2.5] and page.timestamps["x"].tolist() == [9.0]
    page = MongoStore._page([{"descriptor": "d", "seq_num": 1, "time": 1.0,
                              "data": {"x": 2.5}, "timestamps": {"x": 9.0}}], None, True, False, {})
    assert page.data["x"].tolist() == [2.5] and page.timestamps["x"].tolist() == [9.0]


@pytest.mark.parametrize("values,kind", [
    ([1.5, 2], "f"), ([1, 2], "i"), ([True, False], "b"), ([True, 2], None), ([1, None], None),
    (["a", "b"], None), ([[1], [2]], None), ([2**63 - 1, -(2**63)], "i"), ([1, 2**63], None),
    ([0.5, 2**63], "f"),
])
def test_column_conversion(values, kind):
    col = mongo_values.to_column(values)
    if kind is None:
        assert col == values and isinstance(col, list)
    else:
        assert isinstance(col, np.ndarray) and col.dtype.kind == kind
        assert col.tolist() == values


def _nan_inf_round_trip(store):
    run = _run()
    store.insert_start(run.start_doc)
    desc = _descriptor(run, keys=("x",))
    store.insert_descriptor(desc.descriptor_doc)
    vals = [math.nan, math.inf, -math.inf, 1.0]
    store.insert_event_page(_page(desc, [1, 2, 3, 4], value=lambda k, s: vals[s - 1]))
    (page,) = store.iter_event_pages([desc.descriptor_doc["uid"]])
    got = page.data["x"]
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == -math.inf and got[3] == 1.0


@pytest.mark.requires_real_mongod(reason="nx-27017 rejects NaN and Inf values")
def test_nan_and_inf_round_trip_on_server(mongo_store):
    _nan_inf_round_trip(mongo_store)


def test_nan_and_inf_round_trip_on_mongomock(mock_store):
    _nan_inf_round_trip(mock_store)


def test_integers_beyond_64_bits(mock_store):
    run = _run(metadata={"big": 2**70})
    mock_store.insert_start(run.start_doc)
    assert mock_store.get_start(run.start_doc["uid"])["big"] == 2**70
    with pytest.raises(DaskBrokerError, match="34 digits"):
        mock_store.insert_start(_run(metadata={"huge": 10**40}).start_doc)


# ---------------------------------------------------------------- legacy data
def test_legacy_documents(any_store):
    """Data as old databroker/metadatastore versions left it, written with plain pymongo."""
    from bson import ObjectId

    mds, ar = any_store._mds(), any_store._ar()
    run_uid, t0 = "legacy-run-0001", 1_500_000_000.0
    start_oid = ObjectId()
    mds.run_start.insert_one({"_id": start_oid, "uid": run_uid, "time": t0, "scan_id": 12,
                              "plan_name": "count"})
    keys = {"det": {"source": "d", "dtype": "number", "shape": []},
            "img": {"source": "c", "dtype": "array", "shape": [2], "external": "FILESTORE:"}}
    mds.event_descriptor.insert_one({"uid": "desc-a", "run_start_id": run_uid, "time": t0 + 1,
                                     "data_keys": keys, "name": "primary"})
    mds.event_descriptor.insert_one({"uid": "desc-b", "run_start_id": start_oid, "time": t0 + 2,
                                     "data_keys": {"det": keys["det"]}, "name": "baseline"})
    # a resource without uid, referenced by its _id; datum ids "{resource}/{n}"
    res_oid = ObjectId()
    ar.resource.insert_one({"_id": res_oid, "spec": "NPY_SEQ", "root": "/",
                            "resource_path": "old", "resource_kwargs": {}})
    res_id = str(res_oid)
    ar.datum.insert_many([{"datum_id": f"{res_id}/{n}", "resource": res_id,
                           "datum_kwargs": {"index": n}} for n in range(3)])
    # two resources with one uid (historical duplicates): the first is used
    ar.resource.insert_one({"uid": "dup-res", "spec": "A", "root": "/", "resource_path": "first",
                            "resource_kwargs": {}, "run_start": run_uid})
    ar.resource.insert_one({"uid": "dup-res", "spec": "A", "root": "/", "resource_path": "second",
                            "resource_kwargs": {}, "run_start": run_uid})
    # events without 'filled'; seq_num 2 twice: the later one wins
    events = [{"uid": f"ev-{n}", "descriptor": "desc-a", "seq_num": n, "time": t0 + 10 + n,
               "data": {"det": float(n), "img": f"{res_id}/{n - 1}"},
               "timestamps": {"det": t0, "img": t0}} for n in (1, 2, 3)]
    events.append({"uid": "ev-2-again", "descriptor": "desc-a", "seq_num": 2, "time": t0 + 20,
                   "data": {"det": -2.0, "img": f"{res_id}/1"},
                   "timestamps": {"det": t0, "img": t0}})
    mds.event.insert_many(events)
    mds.event.insert_one({"uid": "bev-1", "descriptor": "desc-b", "seq_num": 1, "time": t0 + 5,
                          "data": {"det": 0.0}, "timestamps": {"det": t0}})
    mds.run_stop.insert_one({"uid": "legacy-stop", "run_start": run_uid, "time": t0 + 30,
                             "exit_status": "success"})

    assert [d["uid"] for d in any_store.descriptors(run_uid)] == ["desc-a", "desc-b"]
    assert all(d["run_start"] == run_uid and "run_start_id" not in d
               for d in any_store.descriptors(run_uid))
    assert any_store.get_descriptor("desc-b")["run_start"] == run_uid
    legacy_res = any_store.get_resource(res_id)
    assert legacy_res["uid"] == res_id and "_id" not in legacy_res
    assert any_store.get_resource("dup-res")["resource_path"] == "first"
    assert [r["resource_path"] for r in any_store.resources(run_uid)] == ["first"]
    assert [d["datum_id"] for d in any_store.datum_of_resource(res_id)] == [
        f"{res_id}/{n}" for n in range(3)]

    db = Broker(any_store)
    h = db[12]
    assert h.uid == run_uid and db["legacy-run"].uid == run_uid
    docs = list(h.docs())
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    evs = [d for n, d in docs if n == "event" and d["descriptor"] == "desc-a"]
    # every stored event is replayed (in seq_num order), the repeated seq_num included ...
    assert [e["uid"] for e in evs] == ["ev-1", "ev-2", "ev-2-again", "ev-3"]
    # ... while a table keeps the last stored of a repeated seq_num, as databroker does
    table = h.table(fields=["det"]).compute()
    assert list(table.index) == [1, 2, 3] and list(table["det"]) == [1.0, -2.0, 3.0]
    assert all(e["filled"] == {"img": False} for e in evs)
    datum_docs = [d for n, d in docs if n == "datum"]
    assert {d["datum_id"] for d in datum_docs} >= {f"{res_id}/0", f"{res_id}/1", f"{res_id}/2"}
    emitted_res = [d for n, d in docs if n == "resource"]
    assert res_id in {r["uid"] for r in emitted_res}
    # every datum comes after its resource, every event after its datum
    seen = set()
    for name, doc in docs:
        if name == "resource":
            seen.add(doc["uid"])
        elif name == "datum":
            assert doc["resource"] in seen
            seen.add(doc["datum_id"])
        elif name == "event" and "img" in doc["data"]:
            assert doc["data"]["img"] in seen


# ---------------------------------------------------------------- processes
def _child_reads_and_writes(store, run_uid, conn, parent_client_id):
    try:
        start = store.get_start(run_uid)
        other = event_model.compose_run()
        store.insert_start(other.start_doc)
        client = mongo_uri.client_for(store._main, store._client_class)
        conn.send((start["uid"], other.start_doc["uid"], id(client) != parent_client_id,
                   mongo_uri._clients_pid == os.getpid()))
    except BaseException as err:  # pragma: no cover - reported to the parent
        conn.send(repr(err))
    finally:
        conn.close()


def test_forked_child_makes_its_own_client(mongo_store):
    run = _run()
    mongo_store.insert_start(run.start_doc)
    parent_client = mongo_uri.client_for(mongo_store._main, None)
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_reads_and_writes,
                       args=(mongo_store, run.start_doc["uid"], send, id(parent_client)))
    proc.start()
    send.close()
    result = recv.recv() if recv.poll(60) else "child timed out"
    proc.join(30)
    assert isinstance(result, tuple), result
    got_uid, new_uid, own_client, own_pid = result
    assert got_uid == run.start_doc["uid"] and own_client and own_pid
    assert mongo_store.get_start(new_uid) is not None


def test_unpickled_store_in_another_process(mongo_store):
    run = _run(metadata={"scan_id": 5})
    mongo_store.insert_start(run.start_doc)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.apply(_get_start, (mongo_store, run.start_doc["uid"]))
    assert got == run.start_doc


def _get_start(store, uid):
    return store.get_start(uid)


# ---------------------------------------------------------------- Broker end to end
def test_broker_end_to_end_matches_sqlite(mongo_store, make_run, insert, dump):
    db = Broker(mongo_store)
    reference = Broker.temp()
    runs = [make_run(metadata={"scan_id": i, "plan_name": "scan" if i % 2 else "count",
                               "sample": {"name": "Si"}}) for i in (1, 2, 3)]
    for run in runs:
        insert(db, run)
        insert(reference, run)
    insert(db, make_run(n_primary=2, stop=False, metadata={"scan_id": 4}))
    run = runs[0]
    h = db[run.uid]
    docs = list(h.docs())
    assert docs[0] == ("start", run.start) and docs[-1] == ("stop", run.stop)
    assert sorted((d for n, d in docs if n == "descriptor"), key=lambda d: d["uid"]) == sorted(
        run.descriptors.values(), key=lambda d: d["uid"])
    assert [d for n, d in docs if n == "resource"] == run.resources
    assert [d for n, d in docs if n == "datum"] == run.datum
    got_events = [d for n, d in docs if n == "event"]
    expected = sorted((run.expected_event(e) for evs in run.events.values() for e in evs),
                      key=lambda e: e["time"])
    assert got_events == expected
    assert [d["uid"] for n, d in h.docs(stream_name="primary", fields=["x"]) if n == "event"] == [
        e["uid"] for e in run.events["primary"]]

    assert db[-1].start["scan_id"] == 4 and db[2].uid == runs[1].uid
    assert db[run.uid[:8]].uid == run.uid
    assert [h.start["scan_id"] for h in db(plan_name="scan")] == [3, 1]
    assert [h.start["scan_id"] for h in db.search({"scan_id": {"$gte": 2}})] == [4, 3, 2]
    assert len(db) == 4

    # the same runs read the same through both stores
    mongo_dump = dump(Broker(mongo_store))
    mongo_dump["runs"] = mongo_dump["runs"][1:]  # the unstopped run only exists here
    ref_dump = dump(reference)
    assert mongo_dump["runs"] == ref_dump["runs"]
    assert {k: v for k, v in mongo_dump["counts"].items() if k in ref_dump["counts"]} == \
        ref_dump["counts"]
    assert {k: v for k, v in mongo_dump["datum"].items() if k in ref_dump["datum"]} == \
        ref_dump["datum"]

    # tables (computed in this process), the same as the embedded store's
    got = h.table(timestamps=True).compute(scheduler="sync")
    want = reference[run.uid].table(timestamps=True).compute(scheduler="sync")
    assert got.equals(want)
    got = h.table("baseline", fields=["temp"]).compute(scheduler="sync")
    want = reference[run.uid].table("baseline", fields=["temp"]).compute(scheduler="sync")
    assert got.equals(want)


def test_resource_updates_in_databroker_v0_layout(any_store):
    """update_resource writes databroker v0's resource_update records, also for a
    legacy resource without uid, and the first of duplicated uids."""
    from bson import ObjectId

    ar = any_store._ar()
    oid = ObjectId()
    ar.resource.insert_one({"_id": oid, "spec": "AD_HDF5", "root": "/old", "resource_path": "f.h5",
                            "resource_kwargs": {"frame_per_point": 1}})
    ar.resource.insert_many([{"uid": "dup", "spec": "A", "root": "/one", "resource_path": "p"},
                             {"uid": "dup", "spec": "A", "root": "/two", "resource_path": "p"}])
    new = any_store.update_resource(str(oid), {"root": "/new"}, cmd="move_files",
                                    cmd_kwargs={"new_root": "/new"})
    assert new["root"] == "/new" and new["uid"] == str(oid)
    assert ar.resource.find_one({"_id": oid})["root"] == "/new"
    assert "uid" not in ar.resource.find_one({"_id": oid})  # the legacy document stays legacy
    (record,) = ar.resource_update.find({"resource": str(oid)}, {"_id": 0})
    assert set(record) == {"resource", "old", "new", "time", "cmd", "cmd_kwargs"}
    assert record["old"]["root"] == "/old" and record["new"]["root"] == "/new"
    assert any_store.resource_history(str(oid)) == [record]

    any_store.update_resource("dup", {"root": "/three"}, cmd="c", cmd_kwargs={})
    assert [d["root"] for d in ar.resource.find({"uid": "dup"}).sort("_id", 1)] == [
        "/three", "/two"]
    assert any_store.get_resource("dup")["root"] == "/three"


# ------------------------------------------------------------------ read-only mode
def test_read_only_from_the_uri_and_kept_in_it():
    from dask_broker.errors import ReadOnlyCatalogError
    from dask_broker.stores.roles import WRITE

    uri = mongomock_uri()
    writer = MongoStore.from_uri(uri, mongo_client_class=SharedMongomockClient)
    writer.insert_start({"uid": "r1", "time": 1.0})
    store = MongoStore.from_uri(uri + "?mode=ro", mongo_client_class=SharedMongomockClient)
    assert store.read_only and WRITE not in store.capabilities
    assert store.uri == uri + "?mode=ro" and "mode" not in store._main.uri
    assert store.get_start("r1")["uid"] == "r1"
    for write in (lambda: store.insert_start({"uid": "r2", "time": 2.0}),
                  lambda: store.create_indexes(),
                  lambda: store.update_resource("x", {"root": "/"}, cmd="t", cmd_kwargs={})):
        with pytest.raises(ReadOnlyCatalogError, match="read-only"):
            write()
    assert store.get_start("r2") is None
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read_only and copy.uri == store.uri
    assert MongoStore.from_uri(uri, read_only=True,
                               mongo_client_class=SharedMongomockClient).uri == store.uri


def test_unknown_mode_in_the_uri_is_refused():
    with pytest.raises(StoreURIError, match="mode=ro"):
        MongoStore.from_uri(mongomock_uri() + "?mode=rw")
