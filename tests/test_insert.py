"""Validation of inserted documents: every bad input is rejected, precisely, and
leaves the catalog exactly as it was."""

from __future__ import annotations

import copy

import event_model
import numpy as np
import pytest

from dask_broker import (
    Broker,
    DataKeysMismatchError,
    DocumentValidationError,
    DuplicateUidError,
    PageLengthError,
    RunAlreadyStoppedError,
    UnknownDocumentNameError,
    UnknownReferenceError,
)


@pytest.fixture
def db(any_db):
    """Every insert test runs on each store backend: the rules are the Broker's."""
    return any_db


@pytest.fixture
def catalog(db, make_run, insert):
    """A catalog holding a stopped run and a run in progress."""
    done = insert(db, make_run(metadata={"scan_id": 1}))
    live = insert(db, make_run(metadata={"scan_id": 2}, stop=False))
    return db, done, live


def _only(run, name):
    docs = run.of(name)
    return docs[0]


# ---------------------------------------------------------------- schema
def test_start_missing_time(db, rejects):
    rejects(db, "start", {"uid": "start-without-time"}, DocumentValidationError, ValueError,
            "start", "start-without-time")
    assert len(db) == 0


def test_start_not_a_dict(db, dump):
    with pytest.raises(DocumentValidationError, match="start") as info:
        db.insert("start", ["uid", "time"])
    assert isinstance(info.value, ValueError)
    assert dump(db) == {"runs": [], "counts": {}}


def test_start_wrong_type(catalog, rejects):
    db, done, _ = catalog
    bad = event_model.compose_run().start_doc
    bad["time"] = "yesterday"
    rejects(db, "start", bad, DocumentValidationError, ValueError, "start", bad["uid"])


def test_descriptor_schema_violation(catalog, rejects):
    db, _, live = catalog
    bad = copy.deepcopy(live.descriptors["primary"])
    bad["uid"] = "bad-descriptor"
    del bad["data_keys"]["x"]["dtype"]
    err = rejects(db, "descriptor", bad, DocumentValidationError, ValueError, "descriptor",
                  "bad-descriptor")
    assert "data_keys" in str(err)


def test_event_schema_violation(catalog, rejects):
    db, _, live = catalog
    ev = copy.deepcopy(live.events["primary"][-1])
    ev["uid"] = "bad-event"
    ev["seq_num"] = "seven"
    rejects(db, "event", ev, DocumentValidationError, ValueError, "event", "bad-event")


@pytest.mark.parametrize("column,value", [("seq_num", "2"), ("time", "noon"), ("uid", 5)])
def test_event_page_schema_violation_past_first_row(catalog, rejects, column, value):
    db, _, live = catalog
    desc = live.descriptors["primary"]
    events = [copy.deepcopy(e) for e in live.events["primary"]]
    for i, e in enumerate(events):
        e["uid"] = f"page-event-{i}"
        e["seq_num"] = 100 + i
    page = event_model.pack_event_page(*events)
    page[column] = list(page[column])
    page[column][2] = value
    assert page["descriptor"] == desc["uid"]
    rejects(db, "event_page", page, DocumentValidationError, ValueError, "event_page",
            "page-event-0")


def test_stop_schema_violation(db, rejects, make_run, insert):
    run = make_run(stop=False)
    insert(db, run)
    stop = dict(make_run().stop, run_start=run.uid, uid="bad-stop", exit_status="exploded")
    rejects(db, "stop", stop, DocumentValidationError, ValueError, "stop", "bad-stop")
    assert db[run.uid].stop is None


def test_resource_schema_violation(catalog, rejects):
    db, _, live = catalog
    res = dict(live.resources[0], uid="bad-resource")
    del res["spec"]
    rejects(db, "resource", res, DocumentValidationError, ValueError, "resource", "bad-resource")


def test_datum_schema_violation(catalog, rejects):
    db, _, live = catalog
    datum = {"datum_id": "bad-datum", "resource": live.resources[0]["uid"]}
    rejects(db, "datum", datum, DocumentValidationError, ValueError, "datum", "bad-datum")


# ---------------------------------------------------------------- duplicates
def test_duplicate_start(catalog, rejects):
    db, done, _ = catalog
    again = dict(done.start, scan_id=99)
    rejects(db, "start", again, DuplicateUidError, ValueError, "start", done.uid)
    assert db[done.uid].start == done.start


def test_duplicate_descriptor(catalog, rejects):
    db, _, live = catalog
    desc = live.descriptors["baseline"]
    rejects(db, "descriptor", dict(desc, name="other"), DuplicateUidError, ValueError,
            "descriptor", desc["uid"])


def test_duplicate_event(catalog, rejects):
    db, done, live = catalog
    old = done.events["primary"][0]
    ev = dict(live.events["primary"][-1], uid=old["uid"], seq_num=99)
    rejects(db, "event", ev, DuplicateUidError, ValueError, "event", old["uid"])


def test_duplicate_resource(catalog, rejects):
    db, _, live = catalog
    res = live.resources[0]
    rejects(db, "resource", dict(res, resource_path="other.npy"), DuplicateUidError, ValueError,
            "resource", res["uid"])


def test_duplicate_datum(catalog, rejects):
    db, _, live = catalog
    datum = live.datum[2]
    rejects(db, "datum", dict(datum, datum_kwargs={"index": 1000}), DuplicateUidError,
            ValueError, "datum", datum["datum_id"])


def test_duplicate_datum_in_datum_page(catalog, rejects):
    db, _, live = catalog
    res = live.resources[0]
    dup = live.datum[1]["datum_id"]
    page = {"resource": res["uid"], "datum_id": [f"{res['uid']}/new-{i}" for i in range(4)],
            "datum_kwargs": {"index": [100, 101, 102, 103]}}
    page["datum_id"][2] = dup
    rejects(db, "datum_page", page, DuplicateUidError, ValueError, "datum", dup)
    # none of the page's other ids were written
    assert db.store.datum([page["datum_id"][0], page["datum_id"][3]]) == {}


def test_event_page_with_one_duplicate_leaves_no_partial_page(catalog, rejects):
    db, _, live = catalog
    desc = live.descriptors["primary"]
    existing = live.events["primary"][3]["uid"]
    seqs = list(range(100, 140))
    page = {
        "descriptor": desc["uid"],
        "uid": [f"new-{s}" for s in seqs],
        "seq_num": seqs,
        "time": [live.start["time"] + 50 + 0.1 * i for i in range(len(seqs))],
        "data": {"x": [float(s) for s in seqs], "n": seqs, "flag": [s % 2 == 0 for s in seqs],
                 "label": [f"s{s}" for s in seqs], "img": [f"missing/{s}" for s in seqs]},
        "timestamps": {k: [1.0] * len(seqs) for k in desc["data_keys"]},
    }
    page["uid"][23] = existing
    rejects(db, "event_page", page, DuplicateUidError, ValueError, "event", existing)
    # the page can go in once its uid is fixed: nothing of it was left behind
    page["uid"][23] = "new-fixed"
    db.insert("event_page", page)
    n_before = len(live.events["primary"])
    assert db.store.event_counts([desc["uid"]])[desc["uid"]] == (n_before + len(seqs), 1, 139)


def test_event_page_duplicate_within_page(catalog, rejects):
    db, _, live = catalog
    desc = live.descriptors["baseline"]
    page = {
        "descriptor": desc["uid"], "uid": ["b-1", "b-2", "b-1"], "seq_num": [10, 11, 12],
        "time": [1.0, 2.0, 3.0],
        "data": {"temp": [1.0, 2.0, 3.0], "motor_setpoint": [0.0, 0.0, 0.0]},
        "timestamps": {"temp": [1.0, 2.0, 3.0], "motor_setpoint": [1.0, 2.0, 3.0]},
    }
    rejects(db, "event_page", page, DuplicateUidError, ValueError, "event", "b-1")


# ---------------------------------------------------------------- references
def test_event_unknown_descriptor(catalog, rejects):
    db, _, live = catalog
    ev = dict(live.events["primary"][0], uid="orphan-event", descriptor="no-such-descriptor")
    err = rejects(db, "event", ev, UnknownReferenceError, KeyError, "event", "orphan-event")
    assert "no-such-descriptor" in str(err)


def test_event_page_unknown_descriptor(catalog, rejects):
    db, _, live = catalog
    page = event_model.pack_event_page(
        *[dict(e, uid=f"orphan-{i}", descriptor="no-such-descriptor")
          for i, e in enumerate(live.events["baseline"])])
    err = rejects(db, "event_page", page, UnknownReferenceError, KeyError, "event_page",
                  "orphan-0")
    assert "no-such-descriptor" in str(err)


@pytest.mark.parametrize("name", ["descriptor", "resource", "stop"])
def test_unknown_start(db, rejects, make_run, name):
    run = make_run()
    doc = dict(_only(run, name), uid=f"orphan-{name}")
    err = rejects(db, name, doc, UnknownReferenceError, KeyError, name, f"orphan-{name}")
    assert run.uid in str(err)


def test_datum_unknown_resource(catalog, rejects):
    db, _, live = catalog
    datum = {"datum_id": "orphan-datum", "resource": "no-such-resource", "datum_kwargs": {}}
    err = rejects(db, "datum", datum, UnknownReferenceError, KeyError, "datum", "orphan-datum")
    assert "no-such-resource" in str(err)


def test_datum_page_unknown_resource(catalog, rejects):
    db, _, _ = catalog
    page = {"datum_id": ["orphan-0", "orphan-1"], "resource": "no-such-resource",
            "datum_kwargs": {"index": [0, 1]}}
    rejects(db, "datum_page", page, UnknownReferenceError, KeyError, "datum_page", "orphan-0")


def test_references_are_found_in_a_reopened_catalog(catalog, dump):
    """A new Broker (no cached knowledge) resolves references from the store."""
    db, _, live = catalog
    other = Broker.from_uri(db.uri)
    desc = live.descriptors["primary"]
    res = live.resources[0]
    datum = {"datum_id": f"{res['uid']}/late", "resource": res["uid"], "datum_kwargs": {"i": 9}}
    other.insert("datum", datum)
    ev = dict(live.events["primary"][-1], uid="late-event", seq_num=50,
              time=live.events["primary"][-1]["time"] + 1,
              data=dict(live.events["primary"][-1]["data"], img=datum["datum_id"]))
    other.insert("event", ev)
    stop = event_model.compose_run().compose_stop()
    other.insert("stop", dict(stop, run_start=live.uid))
    assert dump(db) == dump(other)
    assert db.store.event_counts([desc["uid"]])[desc["uid"]][0] == len(live.events["primary"]) + 1
    with pytest.raises(UnknownReferenceError):
        Broker.from_uri(db.uri).insert("event", dict(ev, uid="x", descriptor="missing"))


# ---------------------------------------------------------------- stop
def test_second_stop(catalog, rejects):
    db, done, _ = catalog
    second = dict(done.stop, uid="second-stop", exit_status="fail")
    err = rejects(db, "stop", second, RunAlreadyStoppedError, ValueError, "stop", "second-stop")
    assert done.uid in str(err)
    assert db[done.uid].stop == done.stop


def test_second_stop_in_new_broker(catalog, rejects):
    db, done, _ = catalog
    fresh = Broker.from_uri(db.uri)
    second = dict(done.stop, uid="second-stop")
    rejects(fresh, "stop", second, RunAlreadyStoppedError, ValueError, "stop", "second-stop")


# ---------------------------------------------------------------- data keys
@pytest.mark.parametrize("change", ["missing-data", "extra-data", "missing-timestamp",
                                    "extra-timestamp"])
def test_event_data_keys_mismatch(catalog, rejects, change):
    db, _, live = catalog
    ev = copy.deepcopy(live.events["primary"][-1])
    ev["uid"] = "mismatched"
    ev["seq_num"] = 77
    part, how = ("data" if "data" in change else "timestamps"), change.split("-")[0]
    if how == "missing":
        del ev[part]["label"]
    else:
        ev[part]["intruder"] = 1.0
    err = rejects(db, "event", ev, DataKeysMismatchError, ValueError, "event", "mismatched")
    assert ("label" if how == "missing" else "intruder") in str(err)


def test_event_page_data_keys_mismatch(catalog, rejects):
    db, _, live = catalog
    page = event_model.pack_event_page(
        *[dict(e, uid=f"bp-{i}", seq_num=20 + i) for i, e in enumerate(live.events["baseline"])])
    page["data"]["pressure"] = [1.0] * len(page["uid"])
    page["timestamps"]["pressure"] = [1.0] * len(page["uid"])
    err = rejects(db, "event_page", page, DataKeysMismatchError, ValueError, "event_page", "bp-0")
    assert "pressure" in str(err)


def test_bulk_events_data_keys_mismatch_in_a_later_event(catalog, rejects):
    db, _, live = catalog
    events = [dict(e, uid=f"be-{i}", seq_num=30 + i, data=dict(e["data"]),
                   timestamps=dict(e["timestamps"]))
              for i, e in enumerate(live.events["primary"][:3])]
    del events[2]["data"]["x"]
    del events[2]["timestamps"]["x"]
    rejects(db, "bulk_events", {"primary": events}, DataKeysMismatchError, ValueError,
            "event", "be-2")


def test_bulk_events_duplicate_in_a_later_descriptor_writes_nothing(catalog, rejects):
    """bulk_events over two streams: a duplicate uid in the second stream's page rejects
    the whole document, the first stream's page included."""
    db, _, live = catalog
    primary = [dict(e, uid=f"bd-p{i}", seq_num=60 + i) for i, e in
               enumerate(live.events["primary"][:2])]
    baseline = [dict(e, seq_num=60 + i) for i, e in enumerate(live.events["baseline"][:1])]
    dup = baseline[0]["uid"]  # already stored
    rejects(db, "bulk_events", {"primary": primary, "baseline": baseline}, DuplicateUidError,
            ValueError, "event", dup)


# ---------------------------------------------------------------- page lengths
@pytest.mark.parametrize("column", ["data.x", "timestamps.label", "uid", "time", "seq_num"])
def test_event_page_unequal_columns(catalog, rejects, column):
    db, _, live = catalog
    page = event_model.pack_event_page(
        *[dict(e, uid=f"up-{i}", seq_num=40 + i) for i, e in enumerate(live.events["primary"])])
    part, _, key = column.partition(".")
    if key:
        page[part][key] = page[part][key][:-1]
    else:
        page[part] = page[part][:-1]
    err = rejects(db, "event_page", page, PageLengthError, ValueError, "event_page", "up-0")
    assert column in str(err)


def test_datum_page_unequal_columns(catalog, rejects):
    db, _, live = catalog
    page = {"resource": live.resources[0]["uid"], "datum_id": ["dp-0", "dp-1", "dp-2"],
            "datum_kwargs": {"index": [0, 1]}}
    rejects(db, "datum_page", page, PageLengthError, ValueError, "datum_page", "dp-0")


# ---------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["events", "Start", "run_start", "", "event-page"])
def test_unknown_document_name(catalog, rejects, name):
    db, _, live = catalog
    ev = dict(live.events["primary"][-1], uid="named-wrong", seq_num=60)
    err = rejects(db, name, ev, UnknownDocumentNameError, ValueError, repr(name), "named-wrong")
    assert "event_page" in str(err)  # lists the accepted names


def test_unknown_document_name_not_a_string(db):
    with pytest.raises(UnknownDocumentNameError) as info:
        db.insert(None, {"uid": "u"})
    assert isinstance(info.value, ValueError) and "None" in str(info.value)
    with pytest.raises(UnknownDocumentNameError):
        db.insert(["start"], {"uid": "u"})
    assert len(db) == 0


# ---------------------------------------------------------------- bulk names
@pytest.mark.parametrize("events_name", ["bulk_events", "bulkevent"])
@pytest.mark.parametrize("datum_name", ["bulk_datum", "bulkdatum"])
def test_bulk_names_equal_unpacked_docs(any_uri, make_run, insert, dump, events_name,
                                        datum_name):
    run = make_run(n_primary=6, n_baseline=3)
    plain = Broker.from_uri(any_uri())
    insert(plain, run)
    bulk = Broker.from_uri(any_uri())
    for name in ("start", "descriptor", "resource"):
        for doc in run.of(name):
            bulk.insert(name, doc)
    res = run.resources[0]
    half = len(run.datum) // 2
    for chunk in (run.datum[:half], run.datum[half:]):
        bulk.insert(datum_name, {"resource": res["uid"],
                                 "datum_ids": [d["datum_id"] for d in chunk],
                                 "datum_kwarg_list": [d["datum_kwargs"] for d in chunk]})
    # one bulk document holding events of both streams
    bulk.insert(events_name, {"primary": run.events["primary"],
                              "baseline": run.events["baseline"]})
    bulk.insert("stop", run.stop)
    assert dump(bulk) == dump(plain)
    expected = [run.expected_event(e) for e in run.events["primary"]]
    assert [doc for name, doc in bulk[run.uid].docs("primary") if name == "event"] == expected


def test_event_page_and_datum_page_equal_unpacked_docs(any_uri, make_run, insert, dump):
    run = make_run(n_primary=7)
    plain = Broker.from_uri(any_uri())
    insert(plain, run)
    paged = Broker.from_uri(any_uri())
    for name in ("start", "descriptor", "resource"):
        for doc in run.of(name):
            paged.insert(name, doc)
    paged.insert("datum_page", event_model.pack_datum_page(*run.datum))
    paged.insert("event_page", event_model.pack_event_page(*run.events["primary"]))
    for ev in run.events["baseline"]:
        paged.insert("event", ev)
    paged.insert("stop", run.stop)
    assert dump(paged) == dump(plain)


def test_event_page_with_numpy_columns(catalog):
    db, _, live = catalog
    desc = live.descriptors["baseline"]
    n = 6
    page = {
        "descriptor": desc["uid"], "uid": [f"np-{i}" for i in range(n)],
        "seq_num": np.arange(10, 10 + n), "time": np.linspace(1.0, 2.0, n),
        "data": {"temp": np.linspace(280.0, 290.0, n), "motor_setpoint": np.zeros(n)},
        "timestamps": {"temp": np.ones(n), "motor_setpoint": np.ones(n)},
    }
    db.insert("event_page", page)
    got = [e for name, e in db[live.uid].docs("baseline") if name == "event"
           and e["uid"].startswith("np-")]
    assert [e["seq_num"] for e in got] == page["seq_num"].tolist()
    assert [e["data"]["temp"] for e in got] == page["data"]["temp"].tolist()
