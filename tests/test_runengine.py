"""db.insert as the subscriber of a real bluesky RunEngine."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

bluesky = pytest.importorskip("bluesky")
pytest.importorskip("ophyd")


def _json_normal(doc):
    """What a JSON store gives back: tuples become lists, OrderedDicts dicts."""
    def default(obj):
        if isinstance(obj, (np.ndarray, np.generic)):
            return obj.tolist()
        raise TypeError(type(obj))
    return json.loads(json.dumps(doc, default=default))


@pytest.fixture
def devices(tmp_path):
    from ophyd.sim import hw

    return hw(save_path=str(tmp_path))


@pytest.fixture
def engine(any_db):
    """A RunEngine whose documents go to a new catalog (of each store) and to a plain list."""
    from bluesky import RunEngine

    RE = RunEngine({})
    db = any_db
    emitted: list[tuple[str, dict]] = []
    RE.subscribe(db.insert)
    RE.subscribe(lambda name, doc: emitted.append((name, copy.deepcopy(doc))))
    return RE, db, emitted


def _expected_event(event, descriptor):
    external = [k for k, v in descriptor["data_keys"].items() if v.get("external")]
    return {**_json_normal(event), "filled": {k: False for k in external}}


def _check_run(db, emitted, uid):
    """The stored run is what the RunEngine emitted."""
    sent = [(n, d) for n, d in emitted]
    start = next(d for n, d in sent if n == "start")
    assert start["uid"] == uid
    h = db[uid]
    assert h.start == _json_normal(start)
    assert h.stop == _json_normal(next(d for n, d in sent if n == "stop"))
    descriptors = [d for n, d in sent if n == "descriptor"]
    assert h.descriptors == _json_normal(descriptors)
    assert h.stream_names == list(dict.fromkeys(d["name"] for d in descriptors))
    by_uid = {d["uid"]: d for d in descriptors}

    stored = list(h.docs())
    got_events = [d for n, d in stored if n == "event"]
    sent_events = [d for n, d in sent if n == "event"]
    key = lambda e: e["uid"]  # noqa: E731
    assert sorted(got_events, key=key) == sorted(
        (_expected_event(e, by_uid[e["descriptor"]]) for e in sent_events), key=key)
    assert [d for n, d in stored if n == "resource"] == _json_normal(
        [d for n, d in sent if n == "resource"])
    assert sorted((d for n, d in stored if n == "datum"), key=lambda d: d["datum_id"]) == sorted(
        _json_normal([d for n, d in sent if n == "datum"]), key=lambda d: d["datum_id"])
    return h, sent_events


def _table(events, fields):
    return {f: [e["data"][f] for e in sorted(events, key=lambda e: e["seq_num"])] for f in fields}


def test_scan(engine, devices):
    from bluesky.plans import scan

    RE, db, emitted = engine
    num = 7
    (uid,) = RE(scan([devices.det, devices.det_with_conf], devices.motor, -1.5, 1.5, num))
    assert len(db) == 1 and db[-1].uid == uid
    h, sent_events = _check_run(db, emitted, uid)
    assert h.stream_names == ["primary"]
    descriptor = h.descriptors[0]
    counts = db.store.event_counts([descriptor["uid"]])
    assert counts == {descriptor["uid"]: (num, 1, num)}
    assert h.stop["num_events"] == {"primary": num}

    fields = h.fields("primary")
    assert set(fields) == set(descriptor["data_keys"])
    got = [d for n, d in h.docs("primary") if n == "event"]
    assert _table(got, fields) == _table(sent_events, fields)
    motor_field = "motor"
    assert _table(got, [motor_field])[motor_field] == pytest.approx(
        list(np.linspace(-1.5, 1.5, num)))


def test_count_with_external_image_and_baseline(engine, devices):
    from bluesky.plans import count
    from bluesky.preprocessors import SupplementalData

    RE, db, emitted = engine
    RE.preprocessors.append(SupplementalData(baseline=[devices.motor1, devices.motor2]))
    num = 4
    (uid,) = RE(count([devices.img, devices.det], num=num))
    h, sent_events = _check_run(db, emitted, uid)
    assert set(h.stream_names) == {"primary", "baseline"}
    primary = [d for d in h.descriptors if d["name"] == "primary"][0]
    assert primary["data_keys"]["img"].get("external")
    assert db.store.event_counts([primary["uid"]])[primary["uid"]][0] == num

    docs = list(h.docs())
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    seen_datum = set()
    for name, doc in docs:
        if name == "datum":
            seen_datum.add(doc["datum_id"])
        if name == "event" and doc["descriptor"] == primary["uid"]:
            assert doc["data"]["img"] in seen_datum
            assert doc["filled"] == {"img": False}
    assert len([1 for n, _ in docs if n == "datum"]) == num
    baseline_events = [d for n, d in docs if n == "event" and d["descriptor"] != primary["uid"]]
    assert len(baseline_events) == 2  # read at the start and at the end


def test_several_runs(engine, devices):
    from bluesky.plans import count, scan

    RE, db, emitted = engine
    uids = []
    uids += RE(count([devices.det], num=2))
    uids += RE(scan([devices.det], devices.motor, 0, 1, 3))
    uids += RE(count([devices.det], num=1))
    assert [h.uid for h in db] == uids[::-1]
    assert [h.start["scan_id"] for h in db] == [3, 2, 1]
    assert db[2].uid == uids[1]
    assert [h.uid for h in db(plan_name="count")] == [uids[2], uids[0]]
    for uid in uids:
        start_index = next(i for i, (n, d) in enumerate(emitted)
                           if n == "start" and d["uid"] == uid)
        stop_index = next(i for i, (n, d) in enumerate(emitted)
                          if n == "stop" and d["run_start"] == uid)
        _check_run(db, emitted[start_index:stop_index + 1], uid)


def test_ophyd_npy_seq_frames_filled_through_entry_point(engine, devices):
    """ophyd.sim's img writes NPY_SEQ resources; ophyd's handler comes from its entry point."""
    import glob
    import os

    from bluesky.plans import count

    RE, db, emitted = engine
    (uid,) = RE(count([devices.img], num=3))
    h = db[uid]
    (resource,) = h.resources()
    assert resource["spec"] == "NPY_SEQ"
    assert db.handlers.lookup("NPY_SEQ").__module__ == "ophyd.sim"
    frames = h.table(fill=True)["img"].compute()
    datum = {d["datum_id"]: d for n, d in emitted if n == "datum"}
    for datum_id, frame in zip(h.table()["img"].compute(), frames, strict=True):
        index = datum[datum_id]["datum_kwargs"]["index"]
        path = os.path.join(resource["root"], resource["resource_path"])
        expected = np.load(f"{path}_{index}.npy")
        np.testing.assert_array_equal(frame, expected)
    assert len(glob.glob(os.path.join(resource["root"], resource["resource_path"]) + "_*.npy")) == 3
