"""Legacy documents (dask_broker/legacy.py): what databroker accepted and facilities'
databases hold is inserted, ingested and copied from MongoDB as it is -- nothing added,
nothing dropped -- and read back; every other document is checked as strictly as before."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import pytest

from dask_broker import Broker, DocumentValidationError
from dask_broker.ingest import ingest
from dask_broker.legacy import LEGACY_FORMS, legacy_form
from dask_broker.stores.mongo import MongoStore

T0 = 1_400_000_000.0


@dataclass
class LegacyRun:
    start: dict
    descriptor: dict
    resource: dict
    datum: list[dict]
    events: list[dict]
    stop: dict
    docs: list[tuple[str, dict]] = field(default_factory=list)


def legacy_run(*, interleaved: bool = True) -> LegacyRun:
    """A run as metadatastore / filestore left it: a descriptor without object_keys,
    configuration, hints or name; a resource without root or run_start; events without
    filled; a stop without exit_status.  ``interleaved``: each datum before its event
    (else all datum, then all events, as a page)."""
    uid = str(uuid.uuid4())
    start = {"uid": uid, "time": T0, "scan_id": 7, "plan_name": "count"}
    descriptor = {"uid": f"{uid}-d", "run_start": uid, "time": T0 + 1,
                  "data_keys": {"det": {"source": "PV:det", "dtype": "number", "shape": []},
                                "img": {"source": "PV:img", "dtype": "array", "shape": [2, 2],
                                        "external": "FILESTORE:"}}}
    resource = {"uid": f"{uid}-r", "spec": "NPY_SEQ", "resource_path": "/nonexistent/old/img",
                "resource_kwargs": {}}
    datum = [{"datum_id": f"{uid}-r/{i}", "resource": f"{uid}-r", "datum_kwargs": {"index": i}}
             for i in range(3)]
    events = [{"uid": f"{uid}-e{i}", "descriptor": f"{uid}-d", "seq_num": i + 1,
               "time": T0 + 2 + i, "data": {"det": 0.5 * i, "img": f"{uid}-r/{i}"},
               "timestamps": {"det": T0 + 2 + i, "img": T0 + 2 + i}} for i in range(3)]
    stop = {"uid": f"{uid}-s", "run_start": uid, "time": T0 + 10}
    docs = [("start", start), ("descriptor", descriptor), ("resource", resource)]
    if interleaved:
        for d, e in zip(datum, events):
            docs += [("datum", d), ("event", e)]
    else:
        docs += [("datum", d) for d in datum] + [("event", e) for e in events]
    docs.append(("stop", stop))
    return LegacyRun(start, descriptor, resource, datum, events, stop, docs)


def raw_mongo(store: MongoStore) -> dict:
    """The stored documents (without _id) of a MongoStore's collections, by collection."""
    from pymongo import MongoClient

    client = MongoClient(store.uri, serverSelectionTimeoutMS=5000)
    try:
        db = client[store.database_name]
        return {name: list(db[name].find({}, {"_id": False}))
                for name in ("run_start", "run_stop", "event_descriptor", "event", "resource",
                             "datum")}
    finally:
        client.close()


def assert_stored_as_given(db: Broker, run: LegacyRun) -> None:
    """The run reads back as inserted (and, on MongoDB, is stored as inserted)."""
    h = db[run.start["uid"]]
    assert h.start == run.start
    assert h.stop == run.stop and "exit_status" not in h.stop
    assert h.descriptors == [run.descriptor]
    assert h.stream_names == ["primary"]
    assert h.devices() == set() and h.config_data("det") == {}
    docs = list(h.docs())
    assert [name for name, _ in docs] == ["start", "descriptor", "resource", "datum", "event",
                                          "datum", "event", "datum", "event", "stop"]
    assert [d for n, d in docs if n == "resource"] == [run.resource]  # no root added
    assert [d for n, d in docs if n == "datum"] == run.datum
    # read back as databroker reads events: filled False for the external keys
    assert [d for n, d in docs if n == "event"] == [{**e, "filled": {"img": False}}
                                                    for e in run.events]
    table = h.table().compute()
    assert list(table["det"]) == [0.0, 0.5, 1.0]
    assert list(table["img"]) == [d["datum_id"] for d in run.datum]
    if isinstance(db.store, MongoStore):
        raw = raw_mongo(db.store)
        assert raw["run_stop"] == [run.stop]
        assert raw["event_descriptor"] == [run.descriptor]
        assert raw["resource"] == [run.resource]
        assert sorted(raw["event"], key=lambda e: e["seq_num"]) == run.events  # no filled


# ---------------------------------------------------------------- the forms
def test_legacy_forms_are_the_documented_ones():
    assert [(f.name, f.missing) for f in LEGACY_FORMS] == [("stop", ("exit_status",)),
                                                           ("resource", ("root",))]
    run = legacy_run()
    assert legacy_form("stop", run.stop) is LEGACY_FORMS[0]
    assert legacy_form("resource", run.resource) is LEGACY_FORMS[1]
    assert legacy_form("stop", {**run.stop, "exit_status": "success"}) is None  # not legacy
    assert legacy_form("start", {"uid": "u"}) is None


# ---------------------------------------------------------------- insert
def test_legacy_run_is_inserted_as_given(any_db):
    run = legacy_run()
    for name, doc in run.docs:
        any_db.insert(name, doc)
    assert_stored_as_given(any_db, run)


@pytest.mark.parametrize("name, change, named", [
    ("stop", {"time": None}, "time"),                         # legacy, but no time either
    ("stop", {"exit_status": "exploded"}, "exit_status"),     # given: must be valid
    ("stop", {"extra.dotted": 1}, "extra.dotted"),
    ("resource", {"uid": None}, "uid"),                        # no root, and no uid
    ("resource", {"spec": 3}, "spec"),
    ("resource", {"root": 3}, "root"),
    ("start", {"time": None}, "time"),                         # not a legacy form
    ("descriptor", {"data_keys": None}, "data_keys"),
    ("datum", {"datum_id": None}, "datum_id"),
])
def test_other_invalid_documents_are_still_refused(any_db, rejects, name, change, named):
    run = legacy_run()
    for doc_name, doc in run.docs:
        if doc_name == name:
            break
        any_db.insert(doc_name, doc)
    bad = {k: v for k, v in {**doc, **change}.items() if v is not None}
    err = rejects(any_db, name, bad, DocumentValidationError, ValueError, name,
                  bad.get("uid", bad.get("datum_id", "<no uid>")))
    assert named in str(err)


# ---------------------------------------------------------------- ingest and copy
def test_ingest_takes_legacy_documents_as_they_are(any_db, tmp_path):
    run = legacy_run(interleaved=False)  # the events go in as one page
    path = tmp_path / "legacy.jsonl"
    path.write_text("".join(json.dumps([name, doc]) + "\n" for name, doc in run.docs))
    counts = ingest(any_db, [str(path)], progress=False).inserted
    assert counts == {"start": 1, "descriptor": 1, "resource": 1, "datum": 3, "event": 3,
                      "stop": 1}
    run.docs = legacy_run().docs  # (assert_stored_as_given reads them back interleaved)
    assert_stored_as_given(any_db, run)


def test_ingest_keeps_filled_as_saved(any_db, tmp_path):
    """Events saved with filled and without it are not packed into one page."""
    run = legacy_run(interleaved=False)
    run.events[1]["filled"] = {"img": False}
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps([name, doc]) + "\n" for name, doc in run.docs))
    ingest(any_db, [str(path)], progress=False)
    assert len(list(any_db[-1].docs())) == 10
    if isinstance(any_db.store, MongoStore):
        events = sorted(raw_mongo(any_db.store)["event"], key=lambda e: e["seq_num"])
        assert ["filled" in e for e in events] == [False, True, False]
        assert events[1]["filled"] == {"img": False}


@pytest.mark.mongo
def test_export_from_a_legacy_mongo_database(mongo_store, tmp_path):
    """Copying runs out of a facility's MongoDB (db.export): legacy documents go in."""
    from bson import ObjectId
    from pymongo import MongoClient

    run = legacy_run()
    client = MongoClient(mongo_store.uri, serverSelectionTimeoutMS=5000)
    try:  # written as metadatastore and filestore wrote them, with pymongo
        raw = client[mongo_store.database_name]
        raw.run_start.insert_one(dict(run.start))
        descriptor = {k: v for k, v in run.descriptor.items() if k != "run_start"}
        raw.event_descriptor.insert_one({**descriptor, "run_start_id": run.start["uid"]})
        raw.resource.insert_one({"_id": ObjectId(), **run.resource})
        raw.datum.insert_many([dict(d) for d in run.datum])
        raw.event.insert_many([dict(e) for e in run.events])
        raw.run_stop.insert_one(dict(run.stop))
    finally:
        client.close()
    source = Broker(mongo_store)
    target = Broker.from_uri(f"sqlite:///{tmp_path}/copy.db")
    source.export(source[run.start["uid"]], target)
    h = target[run.start["uid"]]
    assert h.stop == run.stop and h.descriptors == [run.descriptor]
    assert [d for n, d in h.docs() if n == "resource"] == [run.resource]
    assert list(h.table().compute()["det"]) == [0.0, 0.5, 1.0]


def test_resource_without_root_fills_from_its_resource_path(any_db, tmp_path):
    import numpy as np

    frame = np.arange(4.0).reshape(2, 2)
    np.save(tmp_path / "img.npy", frame)
    run = legacy_run()
    # (with run_start: the handlers of a table's recipe are those of the run's resources)
    run.resource.update(spec="NPY", resource_path=str(tmp_path / "img.npy"),
                        run_start=run.start["uid"])
    for datum in run.datum:
        datum["datum_kwargs"] = {}
    for name, doc in run.docs:
        any_db.insert(name, doc)
    h = any_db[-1]
    assert [d for n, d in h.docs() if n == "resource"] == [run.resource]  # without root
    images = h.table(fill=True).compute(scheduler="sync")["img"]
    assert len(images) == 3 and all(np.array_equal(img, frame) for img in images)


def test_resource_without_run_start_fills(any_db, tmp_path):
    """A legacy resource that names no run (found through its datum) is filled too: its
    handler is looked up in the Broker's registry where the task needs it."""
    import numpy as np

    frame = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "img.npy", frame)
    run = legacy_run()
    run.resource.update(spec="NPY", resource_path=str(tmp_path / "img.npy"))
    run.resource.pop("run_start", None)
    for datum in run.datum:
        datum["datum_kwargs"] = {}
    for name, doc in run.docs:
        any_db.insert(name, doc)
    h = any_db[-1]
    assert h.resources() == []  # nothing names the run: the resource is reached by datum
    for images in (h.table(fill=True).compute(scheduler="sync")["img"],
                   h.table(fill=True).compute(scheduler="threads")["img"]):
        assert len(images) == 3 and all(np.array_equal(img, frame) for img in images)
