"""Values no store keeps faithfully are refused at insert, naming the document, its uid
and the key, and leave the store unchanged; integers are never read back changed."""

from __future__ import annotations

import copy
import datetime
import uuid
from types import SimpleNamespace

import event_model
import numpy as np
import pytest

from dask_broker import Broker, DocumentValidationError, DuplicateUidError
from dask_broker.stores.mongo import MongoStore


def _deep(levels: int = 3000):
    value: object = 1.0
    for _ in range(levels):
        value = [value]
    return value


#: name -> a value (or a dict holding a key) that no store keeps faithfully
UNSTORABLE = {
    "bytes": b"\x00\x01",
    "datetime": datetime.datetime(2024, 5, 1, 12, 0),
    "set": {1, 2},
    "complex": 1 + 2j,
    "int key": {1: "a"},
    "lone surrogate": "caf\udce9",
    "lone surrogate in a key": {"caf\udce9": 1},
    "3000 deep": _deep(),
    "dollar key": {"$gt": 1},
    "NUL in a key": {"a\x00b": 1},
    "numpy datetime64": np.datetime64("2024-05-01"),
    "numpy complex array": np.array([1j, 2j]),
    "int of 40 digits": 10**40,
}
#: a few of them, placed in every kind of document
SAMPLE = ["bytes", "lone surrogate in a key", "3000 deep"]
#: the kinds of document besides "start" and "event_page data" (which get every value)
KINDS = ["descriptor", "event", "event_page timestamps", "resource", "datum", "datum_page",
         "stop", "stream_resource", "stream_datum"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo),
                                        pytest.param("postgres", marks=pytest.mark.postgres)])
def _catalog(request):
    """A catalog per store for the module's refusals (each leaves it unchanged, and checks so)."""
    if request.param == "sqlite":
        yield Broker.temp()
        return
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        name = server.new_schema()
        yield Broker.from_uri(server.uri(name))
        server.drop_schemas([name])
        return
    from pymongo import MongoClient

    server = request.getfixturevalue("mongo_server")
    name = f"dbtest_{uuid.uuid4().hex[:12]}"
    yield Broker(MongoStore.from_uri(server.uri(name)))
    client = MongoClient(server.uri("admin"), serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="module")
def live(_catalog):
    """A run in progress holding a document of every kind (shared by the module's tests,
    which leave it unchanged)."""
    return _live_run(_catalog)


def _live_run(any_db):
    run = event_model.compose_run(metadata={"scan_id": 7})
    keys = {"x": {"source": "m", "dtype": "number", "shape": []},
            "cam": {"source": "c", "dtype": "array", "shape": [2], "external": "STREAM:"}}
    desc = run.compose_descriptor(name="primary", data_keys=keys)
    res = run.compose_resource(spec="NPY", root="/r", resource_path="a.npy", resource_kwargs={})
    sr = run.compose_stream_resource(mimetype="application/x-hdf5",
                                     uri="file://localhost/r/cam.h5", data_key="cam",
                                     parameters={"dataset": "/d"})
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
            ("resource", res.resource_doc), ("datum", res.compose_datum(datum_kwargs={"i": 0})),
            ("stream_resource", sr.stream_resource_doc),
            ("stream_datum", sr.compose_stream_datum(indices={"start": 0, "stop": 1},
                                                     seq_nums={"start": 1, "stop": 2},
                                                     descriptor=desc.descriptor_doc)),
            ("event", desc.compose_event(data={"x": 1.0}, timestamps={"x": 1.0}, seq_num=1))]
    for name, doc in docs:
        any_db.insert(name, doc)
    return SimpleNamespace(db=any_db, run=run, desc=desc, res=res, sr=sr)


def _page(live, n=3, first_seq=10):
    events = [live.desc.compose_event(data={"x": float(i)}, timestamps={"x": 1.0},
                                      seq_num=first_seq + i) for i in range(n)]
    return event_model.pack_event_page(*events)


def _placed(live, kind: str, value) -> tuple[str, dict, str, str]:
    """``(name, doc, uid, key)``: a new document of ``kind`` holding ``value`` at ``key``."""
    if kind == "start":
        doc = event_model.compose_run().start_doc
        doc["bad"] = value
        return "start", doc, doc["uid"], "bad"
    if kind == "descriptor":
        doc = copy.deepcopy(live.desc.descriptor_doc)
        doc.update(uid="desc-2", name="other", bad=value)
        return "descriptor", doc, "desc-2", "bad"
    if kind == "event":
        doc = live.desc.compose_event(data={"x": 2.0}, timestamps={"x": 1.0}, seq_num=2)
        doc["data"]["x"] = value
        return "event", doc, doc["uid"], "data/x"
    if kind.startswith("event_page"):
        doc = _page(live)
        part = kind.split()[1]
        doc[part]["x"] = [1.0, value, 3.0]
        return "event_page", doc, doc["uid"][0], f"{part}/x/1"
    if kind == "resource":
        doc = live.run.compose_resource(spec="NPY", root="/r", resource_path="b.npy",
                                        resource_kwargs={}).resource_doc
        doc["resource_kwargs"]["bad"] = value
        return "resource", doc, doc["uid"], "resource_kwargs/bad"
    if kind == "datum":
        doc = live.res.compose_datum(datum_kwargs={"i": 1})
        doc["datum_kwargs"]["bad"] = value
        return "datum", doc, doc["datum_id"], "datum_kwargs/bad"
    if kind == "datum_page":
        doc = event_model.pack_datum_page(*[live.res.compose_datum(datum_kwargs={"i": i})
                                            for i in (5, 6)])
        doc["datum_kwargs"]["i"] = [5, value]
        return "datum_page", doc, doc["datum_id"][0], "datum_kwargs/i/1"
    if kind == "stop":
        doc = {"uid": str(uuid.uuid4()), "run_start": live.run.start_doc["uid"], "time": 2.0,
               "exit_status": "success", "num_events": {}, "bad": value}
        return "stop", doc, doc["uid"], "bad"
    if kind == "stream_resource":
        doc = live.run.compose_stream_resource(
            mimetype="application/x-hdf5", uri="file://localhost/r/b.h5", data_key="cam",
            parameters={"dataset": "/d"}).stream_resource_doc
        doc["parameters"]["bad"] = value
        return "stream_resource", doc, doc["uid"], "parameters/bad"
    assert kind == "stream_datum"
    doc = live.sr.compose_stream_datum(indices={"start": 1, "stop": 2},
                                       seq_nums={"start": 2, "stop": 3},
                                       descriptor=live.desc.descriptor_doc)
    doc["bad"] = value
    return "stream_datum", doc, doc["uid"], "bad"


def _refused(rejects, live, kind, value):
    name, doc, uid, key = _placed(live, kind, value)
    err = rejects(live.db, name, doc, DocumentValidationError, ValueError, name, uid)
    assert "cannot be stored faithfully" in str(err)
    assert f" at {key}" in str(err), str(err)
    return err


@pytest.mark.parametrize("value", list(UNSTORABLE))
@pytest.mark.parametrize("kind", ["start", "event_page data"])
def test_unstorable_value_is_refused(live, rejects, kind, value):
    _refused(rejects, live, kind, UNSTORABLE[value])


@pytest.mark.parametrize("value", SAMPLE)
@pytest.mark.parametrize("kind", KINDS)
def test_every_document_kind_is_checked(live, rejects, kind, value):
    _refused(rejects, live, kind, UNSTORABLE[value])


def test_message_says_what_to_do(live, rejects):
    err = _refused(rejects, live, "start", datetime.datetime(2024, 5, 1))
    assert "datetime" in str(err) and ".timestamp()" in str(err)
    err = _refused(rejects, live, "event_page data", b"raw")
    assert "bytes" in str(err) and ".decode()" in str(err)


def test_numpy_values_stay_accepted(any_db):
    live = _live_run(any_db)
    db = live.db
    start = event_model.compose_run().start_doc
    start.update(f32=np.float32(1.5), i8=np.int64(-3), flag=np.bool_(True), name=np.str_("Si"),
                 u64=np.uint64(2**63 - 1), grid=np.arange(6, dtype="u1").reshape(2, 3),
                 objects=np.array(["a", 1], dtype=object))
    db.insert("start", start)
    got = db[start["uid"]].start
    assert (got["f32"], got["i8"], got["flag"], got["name"]) == (1.5, -3, True, "Si")
    assert got["u64"] == 2**63 - 1 and got["grid"] == [[0, 1, 2], [3, 4, 5]]
    assert got["objects"] == ["a", 1]
    page = _page(live)
    page["seq_num"] = np.asarray(page["seq_num"], dtype="u4")
    page["data"]["x"] = np.linspace(0.0, 1.0, 3, dtype="f4")
    page["timestamps"]["x"] = np.ones(3)
    db.insert("event_page", page)
    events = [e for n, e in db[live.run.start_doc["uid"]].docs() if n == "event"]
    assert [e["seq_num"] for e in events] == [1, 10, 11, 12]
    assert [e["data"]["x"] for e in events[1:]] == [0.0, 0.5, 1.0]


# ---------------------------------------------------------------- descriptor keys
@pytest.mark.parametrize("key", ["$x", "", "a.b", "a\x00b"])
def test_data_key_that_cannot_be_read_back_is_refused(live, rejects, key):
    doc = copy.deepcopy(live.desc.descriptor_doc)
    doc["uid"] = "desc-bad-key"
    doc["data_keys"][key] = {"source": "s", "dtype": "number", "shape": []}
    err = rejects(live.db, "descriptor", doc, DocumentValidationError, ValueError, "descriptor",
                  "desc-bad-key")
    assert "data_keys" in str(err)


# ---------------------------------------------------------------- repeated uids
def test_uid_repeated_within_an_event_page(live, rejects):
    page = _page(live, n=4)
    page["uid"][3] = page["uid"][1]
    err = rejects(live.db, "event_page", page, DuplicateUidError, ValueError, "event",
                  page["uid"][1])
    assert "repeated within this event_page" in str(err)
    assert "already stored" not in str(err)


def test_datum_id_repeated_within_a_datum_page(live, rejects):
    page = event_model.pack_datum_page(*[live.res.compose_datum(datum_kwargs={"i": i})
                                         for i in (5, 6, 7)])
    page["datum_id"][2] = page["datum_id"][0]
    err = rejects(live.db, "datum_page", page, DuplicateUidError, ValueError, "datum",
                  page["datum_id"][0])
    assert "repeated within this datum_page" in str(err)


def test_uid_repeated_within_bulk_events(live, rejects):
    events = [live.desc.compose_event(data={"x": 1.0}, timestamps={"x": 1.0}, seq_num=s)
              for s in (20, 21)]
    events[1]["uid"] = events[0]["uid"]
    err = rejects(live.db, "bulk_events", {"primary": events}, DuplicateUidError, ValueError,
                  "event", events[0]["uid"])
    assert "repeated within this bulk_events" in str(err)


# ---------------------------------------------------------------- integers
_BEYOND_I64 = 2**63 + 5


@pytest.mark.parametrize("where", ["event seq_num", "event_page seq_num (uint64 array)",
                                   "event_page seq_num (list)", "event time",
                                   "stream_datum seq_nums", "stream_datum indices"])
def test_integer_fields_beyond_int64_are_refused(live, rejects, where):
    """seq_num (and time, and stream_datum ranges) are kept as 64-bit numbers: one that
    does not fit is refused, naming the field, never stored and read back changed."""
    if where.startswith("event_page"):
        page = _page(live, n=2)
        page["seq_num"] = (np.array([12, _BEYOND_I64], dtype="u8") if "uint64" in where
                           else [12, _BEYOND_I64])
        name, doc, uid, field = "event_page", page, page["uid"][0], "seq_num/1"
    elif where.startswith("event"):
        doc = live.desc.compose_event(data={"x": 1.0}, timestamps={"x": 1.0}, seq_num=2)
        field = where.split()[1]
        doc[field] = _BEYOND_I64
        name, uid = "event", doc["uid"]
    else:
        doc = live.sr.compose_stream_datum(indices={"start": 1, "stop": 2},
                                           seq_nums={"start": 2, "stop": 3},
                                           descriptor=live.desc.descriptor_doc)
        part = where.split()[1]
        doc[part] = {"start": _BEYOND_I64, "stop": _BEYOND_I64 + 1}
        name, uid, field = "stream_datum", doc["uid"], f"{part}/start"
    err = rejects(live.db, name, doc, DocumentValidationError, ValueError, name, uid)
    assert f"the integer {_BEYOND_I64}, beyond 64 bits, at {field};" in str(err)


@pytest.mark.parametrize("kind", ["start", "event", "event_page data"])
def test_integers_beyond_34_digits_are_refused_on_every_store(live, rejects, kind):
    err = _refused(rejects, live, kind, -(10**40))
    assert "an integer of 41 digits" in str(err)
    assert "Decimal128" in str(err)


@pytest.fixture(params=["sqlite", "mongomock",
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def big_int_db(request):
    """nx-27017 cannot hold Decimal128, MongoDB's form of integers beyond 64 bits: mongomock."""
    if request.param == "sqlite":
        return Broker.temp()
    if request.param == "postgres":
        return Broker.from_uri(request.getfixturevalue("postgres_uri"))
    return Broker(request.getfixturevalue("mock_store"))


def test_integers_beyond_64_bits_round_trip(big_int_db):
    db = big_int_db
    run = event_model.compose_run(metadata={"scan_id": 2**70, "big": -(2**80),
                                            "largest": 10**34 - 1, "u64": np.uint64(2**64 - 1)})
    desc = run.compose_descriptor(name="primary",
                                  data_keys={"n": {"source": "s", "dtype": "integer",
                                                   "shape": []}})
    db.insert("start", run.start_doc)
    db.insert("descriptor", desc.descriptor_doc)
    db.insert("event", desc.compose_event(data={"n": 2**70}, timestamps={"n": 1.0}, seq_num=1))
    page = event_model.pack_event_page(*[
        desc.compose_event(data={"n": 1}, timestamps={"n": 1.0}, seq_num=s) for s in (2, 3)])
    page["data"]["n"] = np.array([2**64 - 1, 5], dtype="u8")
    db.insert("event_page", page)
    start = db[run.start_doc["uid"]].start
    assert (start["scan_id"], start["big"], start["largest"], start["u64"]) == (
        2**70, -(2**80), 10**34 - 1, 2**64 - 1)
    events = [e for n, e in db[run.start_doc["uid"]].docs() if n == "event"]
    assert [e["data"]["n"] for e in events] == [2**70, 2**64 - 1, 5]
    assert [e["seq_num"] for e in events] == [1, 2, 3]
    # Stored faithfully, but a query cannot compare them on every store (BSON): a QueryError.
    from dask_broker.errors import QueryError

    with pytest.raises(QueryError, match="64 bits"):
        db.search({"scan_id": 2**70})
