"""``db.v2``: databroker 1.x's catalog, run and stream accessors (issue #11)."""

from __future__ import annotations

import uuid

import event_model
import h5py
import numpy as np
import pytest
import xarray as xr

from dask_broker import Broker
from dask_broker.errors import (
    AmbiguousKeyError,
    InvalidArgumentError,
    NoEventDescriptors,
    QueryError,
    RunIndexError,
    RunNotFoundError,
)
from dask_broker.handlers.testing import make_external_run, write_npy
from dask_broker.v2 import BlueskyEventStream, BlueskyRun, Document


@pytest.fixture
def db(any_db):
    """The tests that name ``db`` run on each store backend too."""
    return any_db


def _runs(db, make_run, insert, n=3):
    """``n`` runs, oldest first: scan_ids 10, 11, ...; plan_name 'scan' for even i;
    uids ``run<i>-<uuid>``."""
    return [insert(db, make_run(external=False, n_baseline=1, uid=f"run{i}-{uuid.uuid4()}",
                                metadata={"scan_id": 10 + i,
                                          "plan_name": "scan" if i % 2 == 0 else "count"}))
            for i in range(n)]


def _insert(db, documents):
    for name, doc in documents:
        db.insert(name, doc)


def _unpacked(docs, name):
    """The events (or datum) of ``event_page`` (``datum_page``) documents."""
    unpack = {"event_page": event_model.unpack_event_page,
              "datum_page": event_model.unpack_datum_page}[name]
    return [item for n, page in docs if n == name for item in unpack(page)]


def _frame(path, point):
    with h5py.File(path, "r") as f:
        return f["entry/data/data"][point:point + 1]


# ---------------------------------------------------------------- the catalog
def test_catalog_lists_and_looks_up_runs_as_db_does(any_db, make_run, insert):
    runs = _runs(any_db, make_run, insert)
    uids = [r.uid for r in reversed(runs)]  # newest first
    cat = any_db.v2
    assert list(cat) == uids == cat.keys()
    assert len(cat) == 3
    assert [uid for uid, _ in cat.items()] == uids
    assert all(isinstance(run, BlueskyRun) for run in cat.values())

    def uid(run):
        return run.metadata["start"]["uid"]

    assert uid(cat[-1]) == uids[0] and uid(cat["-2"]) == uids[1]
    assert uid(cat[runs[0].uid]) == uid(cat[runs[0].uid[:8]]) == runs[0].uid
    assert uid(cat[11]) == uid(cat["11"]) == runs[1].uid
    assert [uid(r) for r in cat[-2:]] == uids[:2]
    assert [[uid(r) for r in inner] if isinstance(inner, list) else uid(inner)
            for inner in cat[[runs[0].uid, [-1]]]] == [runs[0].uid, [uids[0]]]
    assert runs[0].uid in cat and "no-such-run" not in cat
    with pytest.raises(RunNotFoundError):
        cat["no-such-run"]
    with pytest.raises(IndexError):
        cat[-4]
    with pytest.raises(KeyError):
        cat[99]
    with pytest.raises(AmbiguousKeyError):
        cat["run"]


def test_search_gives_a_catalog_of_the_matching_runs(any_db, make_run, insert):
    runs = _runs(any_db, make_run, insert, n=4)  # scans: scan_id 10 and 12
    scans = any_db.v2.search({"plan_name": "scan"})
    assert list(scans) == [runs[2].uid, runs[0].uid]
    assert len(scans) == 2
    assert scans[-1].metadata["start"]["uid"] == runs[2].uid
    assert scans[-2].metadata["start"]["uid"] == runs[0].uid
    assert [r.metadata["start"]["scan_id"] for r in scans[-2:]] == [12, 10]
    assert scans[10].metadata["start"]["uid"] == runs[0].uid
    assert scans[runs[2].uid[:8]].metadata["start"]["uid"] == runs[2].uid
    assert scans["run2"].metadata["start"]["uid"] == runs[2].uid
    with pytest.raises(AmbiguousKeyError):
        scans["run"]
    # lookups find only the matching runs
    with pytest.raises(RunNotFoundError):
        scans[11]
    with pytest.raises(RunNotFoundError):
        scans[runs[1].uid]
    with pytest.raises(RunIndexError):
        scans[-3]
    assert runs[1].uid not in scans and runs[0].uid in scans
    # searches of a search AND the queries
    assert list(scans.search({"scan_id": {"$gt": 10}})) == [runs[2].uid]
    assert len(scans.search({"scan_id": 11})) == 0
    with pytest.raises(QueryError):
        scans.search({"scan_id": {"$bogus": 1}})


def test_v2_ignores_the_brokers_filters_as_databroker_does(db, make_run, insert):
    runs = _runs(db, make_run, insert)
    db.add_filter(plan_name="count")
    assert len(db()) == 1
    assert list(db.v2) == [r.uid for r in reversed(runs)]
    assert list(db.v2.search({"scan_id": {"$gte": 11}})) == [runs[2].uid, runs[1].uid]
    assert db.filters == {"plan_name": "count"}  # left as they were


# ---------------------------------------------------------------- a run
def test_run_metadata_start_and_stop(any_db, make_run, insert):
    done = insert(any_db, make_run(external=False, metadata={"scan_id": 1}))
    running = insert(any_db, make_run(external=False, stop=False))
    run = any_db.v2[done.uid]
    assert run.metadata["start"] == done.start
    assert run.metadata["stop"] == done.stop
    assert any_db.v2[running.uid].metadata["stop"] is None
    start = run.metadata["start"]
    assert isinstance(start, Document) and isinstance(start, dict)
    with pytest.raises(TypeError):
        start["scan_id"] = 2
    copy = start.to_dict()
    copy["scan_id"] = 2
    assert type(copy) is dict and run.metadata["start"]["scan_id"] == 1


def test_streams_by_name_and_as_attributes(any_db, make_run, insert):
    docs = insert(any_db, make_run(external=False))
    run = any_db.v2[-1]
    assert list(run) == ["primary", "baseline"] and len(run) == 2
    assert "baseline" in run and "dark" not in run
    assert isinstance(run.primary, BlueskyEventStream)
    assert run.primary.name == run["primary"].name == "primary"
    assert run.baseline.metadata["descriptors"] == [docs.descriptors["baseline"]]
    assert run.primary.metadata["start"] == docs.start
    assert run.primary.metadata["stop"] == docs.stop
    assert "primary" in dir(run)
    with pytest.raises(KeyError, match="primary") as info:
        run["dark"]
    assert isinstance(info.value, NoEventDescriptors)
    with pytest.raises(AttributeError, match="'primary', 'baseline'"):
        run.dark


# ---------------------------------------------------------------- read / to_dask
def test_read_is_in_memory_and_to_dask_lazy_with_the_events_values(any_db, make_run, insert):
    docs = insert(any_db, make_run(external=False))
    stream = any_db.v2[-1].primary
    events = docs.events["primary"]
    ds = stream.read()
    lazy = stream.to_dask()
    assert isinstance(ds, xr.Dataset)
    assert all(isinstance(v.data, np.ndarray) for v in ds.data_vars.values())
    assert all(v.chunks is not None for v in lazy.data_vars.values())
    for key in ("x", "n", "flag", "label"):
        want = [e["data"][key] for e in events]
        assert ds[key].dims == ("time",)
        assert ds[key].values.tolist() == want
        assert lazy[key].compute().values.tolist() == want
    # time: float epoch seconds (as databroker's); seq_num: a coordinate (not in databroker)
    assert ds["time"].dtype == np.float64
    assert ds["time"].values.tolist() == [e["time"] for e in events]
    assert ds["seq_num"].values.tolist() == [e["seq_num"] for e in events]
    assert set(ds.data_vars) == {"x", "n", "flag", "label"}
    assert stream.read().identical(ds)


def test_read_fills_external_data_from_the_files(any_db, tmp_path):
    ext = make_external_run(tmp_path, n_files=2, points_per_file=2)
    _insert(any_db, ext.documents)
    stream = any_db.v2[-1].primary
    ds = stream.read()
    lazy = stream.to_dask()
    assert isinstance(ds["img"].data, np.ndarray)
    assert lazy["img"].chunks is not None
    for i, event in enumerate(ext.events):
        path, point, _ = ext.locations[event["data"]["img"]]
        np.testing.assert_array_equal(ds["img"].values[i], _frame(path, point))
        npy, _, _ = ext.locations[event["data"]["spectrum"]]
        np.testing.assert_array_equal(ds["spectrum"].values[i], np.load(npy))
    np.testing.assert_array_equal(lazy["img"][2].compute().values, ds["img"].values[2])
    assert ds["spectrum"].dims == ("time", "spectrum_dim_0")  # databroker: dim_<n>


def test_read_of_stream_resource_data(any_db, streamdata_recordings):
    rec = streamdata_recordings["hdf5_handmade"]
    _insert(any_db, rec.docs)
    ds = any_db.v2[rec.uid].primary.read()
    for key in rec.stream_keys("primary"):
        want = rec.expected["primary"][key]
        np.testing.assert_array_equal(ds[key].values.reshape(want.shape), want)


# ---------------------------------------------------------------- config
def _config_run(db, exposures=(0.1, 0.2), *, clash=None):
    """A run whose primary stream has one descriptor per exposure (2 events each, seq_nums
    going on), with configuration of 'det' (exposure, an ROI) and 'motor' (velocity).

    ``clash``: ``"data_key"`` (motor_velocity is a data key too), ``"missing"`` (the
    second descriptor has no det_roi), ``"other_device"`` (motor configures det_exposure too).
    """
    run = event_model.compose_run()
    docs = [("start", run.start_doc)]
    data_keys = {"det": {"source": "s:det", "dtype": "number", "shape": []}}
    if clash == "data_key":
        data_keys["motor_velocity"] = {"source": "s:x", "dtype": "number", "shape": []}
    number = {"source": "s:c", "dtype": "number", "shape": []}
    seq = 0
    for i, exposure in enumerate(exposures):
        det = {"det_exposure": exposure, "det_roi": [1, 2, 3]}
        if clash == "missing" and i == 1:
            del det["det_roi"]
        motor = {"motor_velocity": 2.0}
        if clash == "other_device":
            motor["det_exposure"] = 5.0
        conf = {dev: {"data": values, "timestamps": {k: 1.0 for k in values},
                      "data_keys": {k: {**number, "shape": list(np.shape(v))}
                                    for k, v in values.items()}}
                for dev, values in (("det", det), ("motor", motor))}
        desc = run.compose_descriptor(name="primary", data_keys=data_keys, configuration=conf,
                                      object_keys={"det": ["det"]})
        docs.append(("descriptor", desc.descriptor_doc))
        for _ in range(2):
            seq += 1
            data = {k: float(seq) for k in data_keys}
            docs.append(("event", desc.compose_event(
                data=data, timestamps={k: 0.0 for k in data}, seq_num=seq)))
    docs.append(("stop", run.compose_stop()))
    _insert(db, docs)
    return db.v2[run.start_doc["uid"]]


def test_config_read_tiles_each_descriptors_values_along_time(any_db):
    stream = _config_run(any_db).primary
    assert sorted(stream.config) == ["det", "motor"]
    ds = stream.config["det"].read()
    assert set(ds.data_vars) == {"det_exposure", "det_roi"}
    assert ds["det_exposure"].values.tolist() == [0.1, 0.1, 0.2, 0.2]
    assert ds["det_roi"].dims == ("time", "det_roi_dim_0")
    assert ds["det_roi"].values.tolist() == [[1, 2, 3]] * 4
    data = stream.read()
    assert ds["time"].values.tolist() == data["time"].values.tolist()
    assert ds["seq_num"].values.tolist() == [1, 2, 3, 4]
    assert stream.config.motor.read()["motor_velocity"].values.tolist() == [2.0] * 4
    with pytest.raises(KeyError, match="'det', 'motor'"):
        stream.config["nope"]


@pytest.mark.parametrize("clash, device, key, fine", [
    ("data_key", "motor", "motor_velocity", "det"),
    ("missing", "det", "det_roi", "motor"),
    ("other_device", "det", "det_exposure", None),
])
def test_config_read_of_keys_not_tiled_simply_is_not_implemented(db, clash, device, key, fine):
    stream = _config_run(db, clash=clash).primary
    with pytest.raises(NotImplementedError, match=key):
        stream.config[device].read()
    if fine is not None:  # the other device reads
        assert len(stream.config[fine].read()["time"]) == 4


# ---------------------------------------------------------------- documents
def test_documents_fill_no_gives_pages_of_the_stored_documents(any_db, make_run, insert):
    docs = insert(any_db, make_run())
    out = list(any_db.v2[-1].documents(fill="no"))
    names = [n for n, _ in out]
    assert "event" not in names and "datum" not in names
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("descriptor") == 2 and names.count("resource") == 1
    assert all(len(page["seq_num"]) == 1 for n, page in out if n == "event_page")
    assert names.count("datum_page") == 1  # the resource's datum together, as databroker
    assert _unpacked(out, "datum_page") == docs.datum
    got = sorted(_unpacked(out, "event_page"), key=lambda e: e["time"])
    want = sorted((docs.expected_event(e) for s in docs.events.values() for e in s),
                  key=lambda e: e["time"])
    assert got == want
    assert dict(out)["start"] == docs.start and dict(out)["stop"] == docs.stop
    # every document comes after those it refers to
    seen = set()
    for name, doc in out:
        if name == "event_page":
            assert doc["descriptor"] in seen
            assert set(doc["data"].get("img", [])) <= seen
        elif name == "datum_page":
            assert doc["resource"] in seen
            seen.update(doc["datum_id"])
        else:
            seen.add(doc["uid"])


def test_documents_fill_yes_holds_the_files_data(any_db, tmp_path):
    ext = make_external_run(tmp_path, n_files=2, points_per_file=2)
    _insert(any_db, ext.documents)
    out = list(any_db.v2[-1].documents(fill="yes"))
    events = _unpacked(out, "event_page")
    assert [e["uid"] for e in events] == [e["uid"] for e in ext.events]
    for event, stored in zip(events, ext.events, strict=True):
        path, point, _ = ext.locations[stored["data"]["img"]]
        np.testing.assert_array_equal(event["data"]["img"], _frame(path, point))
        npy, _, _ = ext.locations[stored["data"]["spectrum"]]
        np.testing.assert_array_equal(event["data"]["spectrum"], np.load(npy))
        assert event["data"]["motor"] == stored["data"]["motor"]
        assert all(event["filled"].values())
    assert sorted(d["datum_id"] for d in _unpacked(out, "datum_page")) == sorted(ext.datum)


def test_documents_fill_delayed_holds_dask_arrays_of_the_files_data(any_db, tmp_path):
    import dask.array as da

    ext = make_external_run(tmp_path, n_files=2, points_per_file=2)
    _insert(any_db, ext.documents)
    run = any_db.v2[-1]
    filled = _unpacked(list(run.documents(fill="yes")), "event_page")
    delayed = _unpacked(list(run.documents(fill="delayed")), "event_page")
    assert len(delayed) == len(ext.events)
    for lazy, event in zip(delayed, filled, strict=True):
        for key in ("img", "spectrum"):
            assert isinstance(lazy["data"][key], da.Array)
            np.testing.assert_array_equal(lazy["data"][key].compute(), event["data"][key])
        assert lazy["data"]["motor"] == event["data"]["motor"]


def test_documents_fill_delayed_with_repeated_seq_nums_is_not_implemented(db, tmp_path):
    run = event_model.compose_run()
    docs = [("start", run.start_doc)]
    keys = {"spectrum": {"source": "s:mca", "dtype": "array", "shape": [6],
                         "external": "FILESTORE:"}}
    for d in range(2):  # two descriptors of one stream, each with seq_nums 1, 2
        desc = run.compose_descriptor(name="primary", data_keys=keys)
        docs.append(("descriptor", desc.descriptor_doc))
        for i in range(2):
            path = write_npy(tmp_path / f"s{d}{i}.npy", np.full(6, 10.0 * d + i))
            res = run.compose_resource(spec="NPY", root=str(tmp_path),
                                       resource_path=path.rsplit("/", 1)[1], resource_kwargs={})
            datum = res.compose_datum(datum_kwargs={})
            docs += [("resource", res.resource_doc), ("datum", datum),
                     ("event", desc.compose_event(seq_num=i + 1,
                                                  data={"spectrum": datum["datum_id"]},
                                                  timestamps={"spectrum": 0.0},
                                                  filled={"spectrum": False}))]
    docs.append(("stop", run.compose_stop()))
    _insert(db, docs)
    v2run = db.v2[-1]
    filled = _unpacked(list(v2run.documents(fill="yes")), "event_page")
    assert sorted(float(e["data"]["spectrum"][0]) for e in filled) == [0.0, 1.0, 10.0, 11.0]
    with pytest.raises(NotImplementedError, match="seq_num"):
        list(v2run.documents(fill="delayed"))


def test_documents_stream_resource_and_stream_datum_pass_through(any_db, streamdata_recordings):
    rec = streamdata_recordings["hdf5_handmade"]
    _insert(any_db, rec.docs)
    for fill in ("no", "yes"):
        out = list(any_db.v2[rec.uid].documents(fill=fill))
        names = [n for n, _ in out]
        for name in ("stream_resource", "stream_datum", "descriptor"):
            assert names.count(name) == rec.names.count(name), (fill, name)
        assert [d for n, d in out if n == "stream_datum"] == rec.of("stream_datum")
        assert len(_unpacked(out, "event_page")) == rec.names.count("event")


def test_documents_fill_is_required_and_checked(db, make_run, insert):
    insert(db, make_run(external=False))
    run = db.v2[-1]
    with pytest.raises(TypeError):
        run.documents()
    for bad in ("maybe", True, None, "YES"):
        with pytest.raises(ValueError, match="'yes'") as info:
            run.documents(fill=bad)  # raised at the call, before iterating
        assert isinstance(info.value, InvalidArgumentError)


def test_canonical_is_a_deprecated_alias_of_documents(db, make_run, insert):
    insert(db, make_run(external=False))
    run = db.v2[-1]
    with pytest.warns(FutureWarning, match="documents"):
        docs = list(run.canonical(fill="no"))
    assert docs == list(run.documents(fill="no"))


# ---------------------------------------------------------------- reprs
def test_reprs_are_short_and_hide_passwords(make_run, insert):
    from _mongo_testing import SharedMongomockClient

    from dask_broker.stores.mongo import MongoStore

    secret = "s3cretPassw0rd"
    store = MongoStore(f"mongodb://alice:{secret}@mock-v2:27017/mds",
                       mongo_client_class=SharedMongomockClient)
    try:
        db = Broker(store)
        docs = insert(db, make_run(external=False, metadata={"scan_id": 7, "plan_name": "scan"}))
        cat = db.v2
        objects = [cat, cat.search({"plan_name": "scan"}), cat[-1], cat[-1].primary,
                   cat[-1].primary.config]
        for obj in objects:
            text = repr(obj)
            assert secret not in text and "\n" not in text and len(text) < 200, text
        assert "alice:***@mock-v2" in repr(cat)
        assert docs.uid in repr(cat[-1]) and "scan_id=7" in repr(cat[-1])
        for obj in objects[:3]:
            page = obj._repr_html_()
            assert secret not in page
        assert docs.uid in cat[-1]._repr_html_()
    finally:
        store.close()
