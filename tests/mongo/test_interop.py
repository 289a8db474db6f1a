"""Interoperability with the mongo_normalized layout's other users.

* Documents written by suitcase-mongo's ``suitcase.mongo_normalized.Serializer``
  read back through dask_broker (Broker over MongoStore) equal to the originals.
* What dask_broker writes is readable with plain pymongo queries in that layout,
  and suitcase-mongo's indexes fit a database dask_broker made.
"""

from __future__ import annotations

import event_model
import pytest
from suitcase.mongo_normalized import Serializer

from dask_broker import Broker
from dask_broker.stores.mongo import MongoStore

pytestmark = pytest.mark.mongo


def _as_pages(run):
    """The run's documents with datum as one datum_page and each stream's events as
    one event_page (what a RunEngine with paging, or a bulk export, sends)."""
    out = [("start", run.start)]
    out += [("descriptor", d) for d in run.descriptors.values()]
    for res in run.resources:
        out.append(("resource", res))
        datum = [d for d in run.datum if d["resource"] == res["uid"]]
        out.append(("datum_page", event_model.pack_datum_page(*datum)))
    for events in run.events.values():
        if events:
            out.append(("event_page", event_model.pack_event_page(*events)))
    out.append(("stop", run.stop))
    return out


def _expected_docs(run):
    return {
        "start": [run.start],
        "descriptor": sorted(run.descriptors.values(), key=lambda d: d["uid"]),
        "resource": run.resources,
        "datum": run.datum,
        "event": sorted((run.expected_event(e) for evs in run.events.values() for e in evs),
                        key=lambda e: e["time"]),
        "stop": [run.stop],
    }


def _read_docs(db, uid):
    docs = list(db[uid].docs())
    out = {}
    for name, doc in docs:
        out.setdefault(name, []).append(doc)
    out["descriptor"] = sorted(out["descriptor"], key=lambda d: d["uid"])
    return docs, out


def _serializer(mds_uri, assets_uri, mongo_server):
    serializer = Serializer(mds_uri, assets_uri)
    if mongo_server.is_real_mongod:
        serializer.create_indexes()  # nx-27017 cannot make its text and _id indexes
    return serializer


@pytest.mark.parametrize("packing", ["documents", "pages"])
def test_suitcase_written_runs_read_back_equal(new_mongo_uri, mongo_server, make_run, packing):
    uri = new_mongo_uri()
    serializer = _serializer(uri, uri, mongo_server)
    runs = [make_run(metadata={"scan_id": i, "plan_name": "scan"}) for i in (1, 2)]
    for run in runs:
        for name, doc in (run.docs if packing == "documents" else _as_pages(run)):
            serializer(name, doc)

    db = Broker.from_uri(uri)
    assert [h.uid for h in db] == [r.uid for r in reversed(runs)]
    for run in runs:
        docs, by_name = _read_docs(db, run.uid)
        assert docs[0] == ("start", run.start) and docs[-1] == ("stop", run.stop)
        assert by_name == _expected_docs(run)
        h = db[run.uid]
        assert h.stop == run.stop
        assert h.resources() == run.resources
        assert h.fields("primary") == set(run.descriptors["primary"]["data_keys"])
    # the table of a suitcase-written run
    run = runs[0]
    table = db[run.uid].table().compute(scheduler="sync")
    assert list(table.index) == [e["seq_num"] for e in run.events["primary"]]
    assert table["x"].tolist() == [e["data"]["x"] for e in run.events["primary"]]
    assert table["label"].tolist() == [e["data"]["label"] for e in run.events["primary"]]


def test_suitcase_with_separate_asset_registry(new_mongo_uri, mongo_server, make_run):
    mds_uri, assets_uri = new_mongo_uri(), new_mongo_uri()
    serializer = _serializer(mds_uri, assets_uri, mongo_server)
    run = make_run(metadata={"scan_id": 3})
    for name, doc in run.docs:
        serializer(name, doc)

    store = MongoStore.from_uri(mds_uri, asset_registry_uri=assets_uri)
    for db in (Broker(store), Broker.from_uri(store.uri)):  # the asset URI travels in the URI
        _, by_name = _read_docs(db, run.uid)
        assert by_name == _expected_docs(run)
    # without the asset registry, the run's resources are not found
    assert Broker.from_uri(mds_uri)[run.uid].resources() == []


def test_dask_broker_writes_the_mongo_normalized_layout(new_mongo_uri, make_run, insert):
    from pymongo import MongoClient

    mds_uri, assets_uri = new_mongo_uri(), new_mongo_uri()
    db = Broker(MongoStore.from_uri(mds_uri, asset_registry_uri=assets_uri))
    run = insert(db, make_run(metadata={"scan_id": 4, "sample": "Si"}))

    client = MongoClient(mds_uri, serverSelectionTimeoutMS=5000)
    try:
        mds = client.get_database(MongoStore.from_uri(mds_uri).database_name)
        ar = client.get_database(MongoStore.from_uri(assets_uri).database_name)
        no_id = {"_id": False}
        assert mds.run_start.find_one({"uid": run.uid}, no_id) == run.start
        assert list(mds.run_start.find({"sample": "Si"}, no_id)) == [run.start]
        assert sorted(mds.event_descriptor.find({"run_start": run.uid}, no_id),
                      key=lambda d: d["uid"]) == sorted(run.descriptors.values(),
                                                        key=lambda d: d["uid"])
        for name, desc in run.descriptors.items():
            events = list(mds.event.find({"descriptor": desc["uid"]}, no_id).sort("time", 1))
            assert events == run.events[name]  # filled ({} from compose_event) included
        assert mds.run_stop.find_one({"run_start": run.uid}, no_id) == run.stop
        # resources and datum live in the asset registry only
        assert list(ar.resource.find({"run_start": run.uid}, no_id)) == run.resources
        res_uid = run.resources[0]["uid"]
        assert list(ar.datum.find({"resource": res_uid}, no_id)) == run.datum
        assert mds.resource.count_documents({}) == 0 and mds.datum.count_documents({}) == 0
        assert ar.event.count_documents({}) == 0
    finally:
        client.close()


@pytest.mark.requires_real_mongod(
    reason="suitcase-mongo's create_indexes makes text and _id indexes nx-27017 cannot")
def test_suitcase_indexes_fit_a_dask_broker_database(new_mongo_uri, make_run, insert):
    uri = new_mongo_uri()
    db = Broker.from_uri(uri)
    insert(db, make_run())
    serializer = Serializer(uri, uri)
    serializer.create_indexes()  # raises if an index of the same keys differs in options
    run = make_run()
    for name, doc in run.docs:
        serializer(name, doc)
    _, by_name = _read_docs(db, run.uid)
    assert by_name == _expected_docs(run)


def test_dask_broker_appends_to_a_suitcase_database(new_mongo_uri, mongo_server, make_run,
                                                    insert):
    uri = new_mongo_uri()
    serializer = _serializer(uri, uri, mongo_server)
    first = make_run(metadata={"scan_id": 1})
    for name, doc in first.docs:
        serializer(name, doc)
    db = Broker.from_uri(uri)
    second = insert(db, make_run(metadata={"scan_id": 2}))
    assert [h.start["scan_id"] for h in db] == [2, 1]
    for run in (first, second):
        _, by_name = _read_docs(db, run.uid)
        assert by_name == _expected_docs(run)


def _raw(uri):
    """Every document of every collection of the database at ``uri`` (without ``_id``),
    in a canonical order."""
    from pymongo import MongoClient

    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        db = client.get_database(MongoStore.from_uri(uri).database_name)
        out = {}
        for name in ("run_start", "run_stop", "event_descriptor", "event", "resource", "datum"):
            docs = list(db[name].find({}, {"_id": False}))
            out[name] = sorted(docs, key=lambda d: str(d.get("uid", d.get("datum_id"))))
        return out
    finally:
        client.close()


def _filled_forms(run):
    """The run's events in the forms a database holds: primary events as a RunEngine
    emits them (``filled: {"img": False}``), baseline events without ``filled`` (as
    databroker v0 stored them)."""
    for event in run.events["primary"]:
        event["filled"] = {"img": False}
    for event in run.events["baseline"]:
        del event["filled"]
    return run


@pytest.mark.parametrize("packing", ["documents", "pages"])
def test_dask_broker_stores_what_suitcase_stores(new_mongo_uri, mongo_server, make_run, packing):
    """The same documents, written by suitcase-mongo and by dask_broker: the same
    collections, document for document (``filled`` of events as suitcase stores it:
    as given, and for an event_page each event's row, ``{}`` when the page has none), so
    databroker 2.x and tiled, which return documents as stored, read the same."""
    run = _filled_forms(make_run(metadata={"scan_id": 5, "plan_name": "scan"}))
    docs = run.docs if packing == "documents" else _as_pages(run)
    suitcase_uri, our_uri = new_mongo_uri(), new_mongo_uri()
    serializer = _serializer(suitcase_uri, suitcase_uri, mongo_server)
    db = Broker.from_uri(our_uri)
    for name, doc in docs:
        serializer(name, doc)
        db.insert(name, doc)
    ours, theirs = _raw(our_uri), _raw(suitcase_uri)
    assert ours == theirs
    events = {e["uid"]: e for e in ours["event"]}
    for event in run.events["primary"]:
        assert events[event["uid"]]["filled"] == {"img": False}
    for event in run.events["baseline"]:  # none in an event, {} in an event_page's rows
        assert events[event["uid"]].get("filled", "absent") == (
            "absent" if packing == "documents" else {})
    # read back (by dask_broker, from either database): filled {key: False} as databroker's
    for uri in (our_uri, suitcase_uri):
        _, by_name = _read_docs(Broker.from_uri(uri), run.uid)
        assert by_name == _expected_docs(run)
