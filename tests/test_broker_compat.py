"""A databroker user's Broker calls run unchanged (issue #11): lookups, search, the
eager readers (get_table, get_events, get_documents, get_images), export and db.reg.

Every test runs on SQLite and on MongoDB (``any_db``); expected values are
computed from the documents composed with event_model.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections import Counter
from collections.abc import Mapping

import h5py
import numpy as np
import pandas as pd
import pytest

from dask_broker import ALL, Broker
from dask_broker.errors import (
    ConflictingArgumentsError,
    DuplicateHandlerError,
    DuplicateUidError,
    HandlerNotFoundError,
    InvalidArgumentError,
    RenamedArgumentWarning,
    RunIndexError,
    RunNotFoundError,
)
from dask_broker.handlers.testing import make_external_run
from dask_broker.images import Images

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def six(any_db, make_run, insert):
    """Six small runs a day apart (scan_id 1..6, alternating plan names); oldest first."""
    runs = []
    for i in range(6):
        md = {"scan_id": i + 1, "plan_name": "scan" if i % 2 == 0 else "count"}
        runs.append(insert(any_db, make_run(metadata=md, n_primary=1, n_baseline=0,
                                            external=False, time=T0 + i * DAY)))
    return any_db, [r.start for r in runs]


def uids(headers):
    return [h.uid for h in headers]


# ---------------------------------------------------------------- lookups
def test_list_tuple_set_and_nested_keys(six):
    db, starts = six
    a, b, c = starts[0]["uid"], starts[3]["uid"], starts[5]["uid"]
    assert uids(db[[a, b]]) == [a, b]
    assert uids(db[(b, a, -1)]) == [b, a, c]
    assert sorted(uids(db[{a, b}])) == sorted([a, b])
    assert uids(db[(k for k in (c, a))]) == [c, a]
    nested = db[[-1, [a[:8], 4]]]  # nesting is kept, as databroker v1
    assert nested[0].uid == c and uids(nested[1]) == [a, b]
    assert db[[]] == []
    with pytest.raises(RunNotFoundError):
        db[[a, "no-such-uid"]]


def test_recent_slices_are_newest_first(six):
    db, starts = six
    newest = [s["uid"] for s in reversed(starts)]
    assert uids(db[-5:]) == newest[:5]
    assert uids(db[-3:]) == [db[-1].uid, db[-2].uid, db[-3].uid]
    assert uids(db[-5:-2]) == [newest[2], newest[3], newest[4]]
    assert uids(db[-6::2]) == [newest[1], newest[3], newest[5]]
    assert uids(db[-1:-4:-1]) == [newest[2], newest[1], newest[0]]
    assert uids(db[-3:0]) == newest[:3]
    assert uids(db[-100:]) == newest  # past the oldest run: the runs there are
    assert db[-2:-2] == []


@pytest.mark.parametrize("key", [slice(1, None), slice(-1, 2), slice(None, None), slice(0, None),
                                 slice(None, -2), slice(-3, None, 0)])
def test_unsupported_slices_are_value_errors(six, key):
    db, _ = six
    with pytest.raises(InvalidArgumentError) as info:
        db[key]
    assert isinstance(info.value, ValueError) and "db[-5:]" in str(info.value)


def test_out_of_range_index_is_index_and_key_error(six):
    db, starts = six
    for key in (-7, -100, "-7"):
        with pytest.raises(RunIndexError) as info:
            db[key]
        assert isinstance(info.value, IndexError) and isinstance(info.value, KeyError)
        assert isinstance(info.value, RunNotFoundError) and "fewer than" in str(info.value)
    assert db[-6].uid == starts[0]["uid"]
    with pytest.raises(IndexError):
        Broker.temp()[-1]


def test_numeric_strings_count_as_numbers(any_db, make_run, insert):
    db = any_db
    # uids chosen so that no uid starts with the digits looked up below
    zero = insert(db, make_run(uid="aaaa-zero", metadata={"scan_id": 0}, n_primary=1,
                               n_baseline=0, external=False, time=T0))
    twelve = insert(db, make_run(uid="bbbb-twelve", metadata={"scan_id": 12}, n_primary=1,
                                 n_baseline=0, external=False, time=T0 + 1))
    digits = insert(db, make_run(uid="12345678-aaaa", metadata={"scan_id": 5}, n_primary=1,
                                 n_baseline=0, external=False, time=T0 + 2))
    assert db["-1"].uid == digits.uid and db["-3"].uid == zero.uid
    assert db["12"].uid == twelve.uid         # a scan_id wins over the uid prefix "12"
    assert db["5"].uid == digits.uid and db[5].uid == digits.uid
    assert db["12345678"].uid == digits.uid   # no such scan_id: the uid prefix
    assert db[0].uid == zero.uid and db["0"].uid == zero.uid  # scan_id 0, as databroker
    with pytest.raises(RunNotFoundError, match="scan_id 99 or uid prefix '99'"):
        db["99"]
    with pytest.raises(RunNotFoundError, match="db\\[-1\\] is the latest"):
        Broker.temp()[0]


# ---------------------------------------------------------------- search
def test_start_time_stop_time_are_older_names(six):
    db, starts = six
    want = uids(db(since=T0 + DAY, until=T0 + 3 * DAY))
    assert want == [starts[2]["uid"], starts[1]["uid"]]
    with pytest.warns(RenamedArgumentWarning, match="since"):
        got = db(start_time=T0 + DAY, until=T0 + 3 * DAY)
    assert uids(got) == want
    with pytest.warns(RenamedArgumentWarning) as record:
        got = db(start_time=T0 + DAY, stop_time=T0 + 3 * DAY, plan_name="count")
    assert len(record) == 2 and issubclass(RenamedArgumentWarning, UserWarning)
    assert uids(got) == [starts[1]["uid"]]
    for bad in ({"start_time": T0, "since": T0}, {"stop_time": T0, "until": T0}):
        with pytest.raises(ConflictingArgumentsError) as info:
            db(**bad)
        assert isinstance(info.value, TypeError)


def test_data_key_search(any_db, make_run, insert):
    db = any_db
    with_img = insert(db, make_run(metadata={"plan_name": "scan"}, n_baseline=0))
    plain = insert(db, make_run(metadata={"plan_name": "scan"}, external=False, n_baseline=2))
    other = insert(db, make_run(metadata={"plan_name": "count"}, external=False, n_baseline=0))
    runs = [with_img, plain, other]

    def expected(key, plan=None):
        return [r.uid for r in reversed(runs)
                if any(key in d["data_keys"] for d in r.descriptors.values())
                and (plan is None or r.start["plan_name"] == plan)]

    for key in ("img", "temp", "x"):
        assert uids(db(data_key=key)) == expected(key), key
        assert uids(db.search(data_key=key)) == expected(key), key
    assert uids(db(data_key="x", plan_name="scan")) == expected("x", "scan")
    assert expected("img") == [with_img.uid] and len(expected("x")) == 3
    assert db(data_key="no_such_key") == []


def test_filters(six):
    db, starts = six
    scans = [s["uid"] for s in reversed(starts) if s["plan_name"] == "scan"]
    db.add_filter(plan_name="scan")
    assert db.filters == {"plan_name": "scan"}
    assert uids(db()) == scans
    assert uids(db.search({"scan_id": {"$gte": 3}})) == scans[:2]
    assert uids(db(plan_name="count")) == []          # AND-ed with the filter
    with pytest.warns(RenamedArgumentWarning):
        db.add_filter(start_time=T0 + 3 * DAY)
    assert db.filters == {"plan_name": "scan", "since": T0 + 3 * DAY}
    assert uids(db()) == [starts[4]["uid"]]
    assert db[starts[1]["uid"]].uid == starts[1]["uid"]  # lookups ignore filters
    assert uids(pickle.loads(pickle.dumps(db))()) == [starts[4]["uid"]]
    db.clear_filters()
    assert db.filters == {} and len(db()) == 6
    with pytest.raises(InvalidArgumentError, match="since"):
        db.add_filter(since="not a date")
    assert db.filters == {}


def test_alias_and_dynamic_alias(six):
    db, starts = six
    db.alias("counts", plan_name="count")
    assert uids(db.counts) == [s["uid"] for s in reversed(starts) if s["plan_name"] == "count"]
    calls = []

    def recent():
        calls.append(1)
        return {"since": T0 + 4 * DAY}

    db.dynamic_alias("recent", recent)
    assert uids(db.recent) == [starts[5]["uid"], starts[4]["uid"]]
    assert uids(db.recent) and len(calls) == 2  # the query is built on each access
    db.alias("counts", plan_name="scan")        # an alias may be redefined
    assert len(db.counts) == 3
    for name in ("search", "insert", "filters"):
        with pytest.raises(InvalidArgumentError, match=name):
            db.alias(name, plan_name="scan")
    with pytest.raises(InvalidArgumentError):
        db.dynamic_alias("later", {"plan_name": "scan"})
    with pytest.raises(AttributeError, match="no_such_alias"):
        db.no_such_alias


# ---------------------------------------------------------------- get_table
def utc(times) -> np.ndarray:
    """Naive UTC datetime64[ns] of epoch seconds."""
    return pd.to_datetime(np.asarray(times, dtype="f8"), unit="s").to_numpy()


def assert_times(got, want_seconds, shift=pd.Timedelta(0)):
    diff = (pd.Series(got).to_numpy() - (utc(want_seconds) + shift.to_timedelta64()))
    assert np.all(np.abs(diff.astype("i8")) <= 1000), diff  # within 1 us


@pytest.fixture
def two_runs(any_db, make_run, insert):
    """Run a (3 points, no baseline) then run b (4 points, a baseline stream)."""
    a = insert(any_db, make_run(n_primary=3, n_baseline=0, external=False, time=T0))
    b = insert(any_db, make_run(n_primary=4, n_baseline=2, external=False, time=T0 + DAY))
    return any_db, a, b


def test_get_table_is_an_eager_pandas_frame(two_runs):
    db, a, b = two_runs
    df = db.get_table(db[a.uid], timezone="UTC")
    assert type(df) is pd.DataFrame and df.index.name == "seq_num"
    assert list(df.index) == [1, 2, 3]
    assert list(df.columns) == ["time", "x", "n", "flag", "label"]
    for key in ("x", "n", "flag", "label"):
        assert df[key].tolist() == [e["data"][key] for e in a.events["primary"]], key
    assert df["time"].dtype == np.dtype("datetime64[ns]")
    assert_times(df["time"], [e["time"] for e in a.events["primary"]])


def test_get_table_times(two_runs):
    db, a, _ = two_runs
    h = db[a.uid]
    seconds = [e["time"] for e in a.events["primary"]]
    raw = db.get_table(h, convert_times=False, localize_times=False)["time"]
    assert raw.dtype == np.float64 and raw.tolist() == seconds
    # datetimes unless both flags are False; localize_times: wall time in `timezone`
    for kw in ({}, {"convert_times": False}):
        got = db.get_table(h, timezone="America/New_York", **kw)["time"]
        assert_times(got, seconds, shift=pd.Timedelta(hours=-5))  # November: EST
    got = db.get_table(h, timezone="America/New_York", localize_times=False)["time"]
    assert_times(got, seconds)  # naive UTC
    assert_times(db.get_table(h, timezone="Asia/Kolkata")["time"], seconds,
                 shift=pd.Timedelta(hours=5, minutes=30))


def test_get_table_of_several_headers(two_runs):
    db, a, b = two_runs
    df = db.get_table([db[b.uid], db[a.uid]], fields=["x", "fl.*"], timezone="UTC")
    assert list(df.index) == [1, 2, 3, 4, 1, 2, 3] and df.index.name == "seq_num"
    assert list(df.columns) == ["time", "x", "flag"]  # regexes match whole names
    events = b.events["primary"] + a.events["primary"]
    assert df["x"].tolist() == [e["data"]["x"] for e in events]
    assert df["flag"].tolist() == [e["data"]["flag"] for e in events]
    assert_times(df["time"], [e["time"] for e in events])
    newest_first = db.get_table(db[-2:], fields=["n"])
    assert newest_first["n"].tolist() == [e["data"]["n"] for e in events]
    # a stream only b has: a adds no rows
    base = db.get_table([db[a.uid], db[b.uid]], "baseline", convert_times=False,
                        localize_times=False)
    assert base["temp"].tolist() == [e["data"]["temp"] for e in b.events["baseline"]]
    assert base["time"].tolist() == [e["time"] for e in b.events["baseline"]]


@pytest.mark.parametrize("kwargs", [{"fields": ["nothing"]}, {"stream_name": "nope"},
                                    {"fields": []}])
def test_get_table_with_nothing_to_show_is_empty(two_runs, kwargs):
    db, a, b = two_runs
    df = db.get_table(db[-2:], **kwargs)
    assert type(df) is pd.DataFrame and df.empty and list(df.columns) == []
    assert db.get_table([]).empty


def test_get_table_fill(any_db, tmp_path):
    ext = make_external_run(tmp_path, n_files=1, points_per_file=3)
    for name, doc in ext.documents:
        any_db.insert(name, doc)
    df = any_db.get_table(any_db[-1], fields=["motor", "spectrum"], fill=True)
    assert list(df.columns) == ["time", "motor", "spectrum"]
    for (_, row), event in zip(df.iterrows(), ext.events, strict=True):
        path, _, _ = ext.locations[event["data"]["spectrum"]]
        np.testing.assert_array_equal(row["spectrum"], np.load(path))
        assert row["motor"] == event["data"]["motor"]


# ---------------------------------------------------------------- documents
def test_get_documents_and_events(any_db, make_run, insert):
    db = any_db
    runs = [insert(db, make_run()), insert(db, make_run(n_primary=2))]
    headers = [db[r.uid] for r in runs]
    docs = list(db.get_documents(headers))
    per_run = [[], []]
    for name, doc in docs:
        if name == "start":
            current = per_run[[r.uid for r in runs].index(doc["uid"])]
        current.append((name, doc))
    for run, got in zip(runs, per_run, strict=True):
        assert got[0] == ("start", run.start) and got[-1] == ("stop", run.stop)
        assert Counter(n for n, _ in got) == Counter(n for n, _ in run.docs)
        events = [d for n, d in got if n == "event"]
        every = sorted(run.events["primary"] + run.events["baseline"], key=lambda e: e["time"])
        assert events == [run.expected_event(e) for e in every]
        assert [d for n, d in got if n == "datum"] == run.datum
    assert list(db.get_documents(headers[0], ALL)) == list(db.get_documents(headers[0], None))

    run, h = runs[0], headers[0]
    assert list(db.get_events(h)) == [run.expected_event(e) for e in run.events["primary"]]
    assert list(db.get_events(h, fields=["x", "la.*"])) == [
        run.expected_event(e, fields=["x", "label"]) for e in run.events["primary"]]
    assert list(db.get_events(h, "baseline")) == [
        run.expected_event(e) for e in run.events["baseline"]]
    assert list(db.get_events(headers, fields=["no_such_field"])) == []
    assert len(list(db.get_events(headers, ALL))) == sum(
        len(r.events["primary"]) + len(r.events["baseline"]) for r in runs)
    base = list(db.get_documents(h, "baseline"))
    assert Counter(n for n, _ in base) == Counter(start=1, descriptor=1, event=2, stop=1)
    assert list(db.get_documents(h, "nope")) == [("start", run.start), ("stop", run.stop)]


def test_restream_stream_and_process(any_db, make_run, insert):
    db = any_db
    runs = [insert(db, make_run(n_primary=2)), insert(db, make_run(n_primary=3))]
    headers = db[[r.uid for r in runs]]
    replay = list(db.restream(headers))
    assert replay == list(db.get_documents(headers, ALL))
    assert list(db.stream(headers)) == replay
    assert Counter(n for n, _ in replay) == Counter(n for r in runs for n, _ in r.docs)
    seen = []
    db.process(headers, lambda name, doc: seen.append((name, doc["uid"] if "uid" in doc
                                                       else doc["datum_id"])))
    assert seen == [(n, d["uid"] if "uid" in d else d["datum_id"]) for n, d in replay]
    with pytest.raises(InvalidArgumentError):
        db.process(headers, "not a function")
    with pytest.raises(InvalidArgumentError, match="Header"):
        list(db.get_documents(runs[0].uid))


# ---------------------------------------------------------------- get_images
def _frame(location) -> np.ndarray:
    path, point, fpp = location
    if point is None:
        return np.load(path)
    with h5py.File(path, "r") as f:
        return f["entry/data/data"][point * fpp:(point + 1) * fpp]  # (fpp, H, W) as ADH


def test_get_images(any_db, tmp_path):
    db = any_db
    exts = []
    for i in range(2):
        os.makedirs(tmp_path / str(i))
        exts.append(make_external_run(tmp_path / str(i), n_files=2, points_per_file=2, seed=i))
    for ext in exts:
        for name, doc in ext.documents:
            db.insert(name, doc)
    h = db[exts[0].start["uid"]]
    want = [_frame(exts[0].locations[e["data"]["img"]]) for e in exts[0].events]
    images = db.get_images(h, "img")
    assert isinstance(images, Images) and len(images) == 4
    assert images.frame_shape == (1, 4, 5) and images.dtype == np.uint16
    for i in range(4):
        np.testing.assert_array_equal(images[i], want[i])
    np.testing.assert_array_equal(images[-1], want[-1])
    part = images[1:3]
    assert isinstance(part, Images) and len(part) == 2
    np.testing.assert_array_equal(part[1], want[2])
    np.testing.assert_array_equal(np.stack(list(images)), np.stack(want))
    with pytest.raises(IndexError):
        images[4]
    both = db.get_images([db[e.start["uid"]] for e in exts], "img")
    want_both = want + [_frame(exts[1].locations[e["data"]["img"]]) for e in exts[1].events]
    assert len(both) == 8
    np.testing.assert_array_equal(np.stack(list(both)), np.stack(want_both))
    np.testing.assert_array_equal(both[5], want_both[5])
    spectra = db.get_images(h, "spectrum")
    np.testing.assert_array_equal(
        np.asarray(spectra), np.stack([np.load(exts[0].locations[e["data"]["spectrum"]][0])
                                       for e in exts[0].events]))


# ---------------------------------------------------------------- export
def _names(docs):
    return Counter(name for name, _ in docs)


def test_export_documents_and_files(any_db, make_run, insert, tmp_path):
    db = any_db
    src = tmp_path / "src"
    (src / "2024").mkdir(parents=True)
    ext = make_external_run(src / "2024", root=str(src), n_files=2, points_per_file=2)
    for name, doc in ext.documents:
        db.insert(name, doc)
    plain = insert(db, make_run(external=False))
    uid = ext.start["uid"]
    spectra = [np.load(ext.locations[e["data"]["spectrum"]][0]) for e in ext.events]
    frames = [_frame(ext.locations[e["data"]["img"]]) for e in ext.events]

    other = Broker.temp()
    assert db.export(db[[uid, plain.uid]], other) == []
    assert _names(other[uid].docs()) == _names(ext.documents)
    assert _names(other[plain.uid].docs()) == _names(plain.docs)
    assert list(other.get_events(other[plain.uid])) == [
        plain.expected_event(e) for e in plain.events["primary"]]
    with pytest.raises(DuplicateUidError):
        db.export(db[plain.uid], other)

    archive, new_root = Broker.temp(), tmp_path / "archive"
    pairs = db.export(db[uid], archive, new_root=str(new_root), copy_kwargs={"verify": True})
    want = [(f, os.path.join(new_root, os.path.relpath(f, src))) for f in ext.files]
    assert sorted(pairs) == sorted(want)
    for old, new in want:
        assert open(old, "rb").read() == open(new, "rb").read()
    assert {r["root"] for r in db[uid].resources()} == {str(src)}  # the source is unchanged
    assert {r["root"] for r in archive[uid].resources()} == {str(new_root)}
    shutil.rmtree(src)  # the archive reads its own copies
    df = archive.get_table(archive[uid], fields=["spectrum"], fill=True)
    for got, expected in zip(df["spectrum"], spectra, strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.stack(list(archive.get_images(archive[uid], "img"))),
                                  np.stack(frames))


def test_export_stream_resources(any_db, streamdata_recordings):
    rec = streamdata_recordings["hdf5_handmade"]
    for name, doc in rec.docs:
        any_db.insert(name, doc)
    other = Broker.temp()
    any_db.export(any_db[rec.uid], other)
    replay = list(other[rec.uid].docs())
    for name in ("stream_resource", "stream_datum", "event", "descriptor"):
        assert _names(replay)[name] == rec.names.count(name), name
    for key in rec.stream_keys("primary"):
        want = rec.expected["primary"][key]
        got = np.asarray(other.get_images(other[rec.uid], key))
        np.testing.assert_array_equal(got.reshape(want.shape), want)


# ---------------------------------------------------------------- db.reg
class ConstantHandler:
    def __init__(self, path, **kwargs):
        self.path = path

    def __call__(self, **kwargs):
        return np.full((4, 5), 7.0)


def _npy_seq_run(db, make_run, insert, tmp_path):
    """A run whose img frames are NPY_SEQ files (ophyd.sim's handler), mapped to tmp_path."""
    run = insert(db, make_run(n_baseline=0))
    frames = []
    for d in run.datum:
        frame = np.arange(20.0).reshape(4, 5) + d["datum_kwargs"]["index"]
        np.save(tmp_path / f"images.npy_{d['datum_kwargs']['index']}.npy", frame)
        frames.append(frame)
    db.reg.root_map[run.resources[0]["root"]] = str(tmp_path)  # a live dict, as databroker's
    return run, frames


def test_reg_handler_reg_and_root_map(any_db, make_run, insert, tmp_path):
    pytest.importorskip("ophyd.sim")
    from ophyd.sim import NumpySeqHandler

    db = any_db
    run, frames = _npy_seq_run(db, make_run, insert, tmp_path)
    assert db.root_map == {run.resources[0]["root"]: str(tmp_path)}
    reg = db.reg.handler_reg
    assert isinstance(reg, Mapping) and reg["NPY_SEQ"] is NumpySeqHandler  # entry point
    assert {"AD_HDF5", "NPY", "NPY_SEQ"} <= set(reg) and len(reg) == len(list(reg))
    assert reg["AD_HDF5"].__name__ == "AreaDetectorHDF5Handler"
    with pytest.raises(TypeError):
        reg["NPY_SEQ"] = ConstantHandler
    with pytest.raises(KeyError):
        reg["NO_SUCH_SPEC"]
    df = db.get_table(db[run.uid], fields=["img"], fill=True)
    for got, want in zip(df["img"], frames, strict=True):
        np.testing.assert_array_equal(got, want)
    db.reg.root_map = {}
    assert db.root_map == {}


def test_reg_deregisters_entry_point_handlers(any_db, make_run, insert, tmp_path):
    pytest.importorskip("ophyd.sim")
    from ophyd.sim import NumpySeqHandler

    db = any_db
    run, frames = _npy_seq_run(db, make_run, insert, tmp_path)
    h = db[run.uid]
    db.reg.deregister_handler("NPY_SEQ")  # an entry-point handler: gone for this Broker
    assert "NPY_SEQ" not in db.reg.handler_reg and "NPY_SEQ" not in db.handlers.specs()
    with pytest.raises(HandlerNotFoundError, match="deregistered"):
        db.get_table(h, fields=["img"], fill=True)
    with pytest.raises(HandlerNotFoundError):
        pickle.loads(pickle.dumps(db.handlers)).lookup("NPY_SEQ")  # also on workers
    db.reg.deregister_handler("NPY_SEQ")       # silent, as databroker's
    db.reg.deregister_handler("NO_SUCH_SPEC")
    assert Broker.temp().handlers.lookup("NPY_SEQ") is NumpySeqHandler  # other Brokers keep it

    db.reg.register_handler("NPY_SEQ", ConstantHandler)  # registered again: used
    db.reg.register_handler("NPY_SEQ", ConstantHandler)  # the same class: a no-op
    with pytest.raises(DuplicateHandlerError):
        db.reg.register_handler("NPY_SEQ", NumpySeqHandler)
    assert db.reg.handler_reg["NPY_SEQ"] is ConstantHandler
    df = db.get_table(h, fields=["img"], fill=True)
    assert all(np.array_equal(cell, np.full((4, 5), 7.0)) for cell in df["img"])
    db.reg.register_handler("NPY_SEQ", NumpySeqHandler, overwrite=True)
    df = db.get_table(h, fields=["img"], fill=True)
    for got, want in zip(df["img"], frames, strict=True):
        np.testing.assert_array_equal(got, want)
    db.reg.deregister_handler("NPY_SEQ")  # an explicit registration: gone too
    assert "NPY_SEQ" not in db.reg.handler_reg


def test_broker_deregister_removes_one_layer(any_db):
    pytest.importorskip("ophyd.sim")
    db = any_db
    db.register_handler("NPY_SEQ", ConstantHandler)   # overrides the entry point
    assert db.handlers.lookup("NPY_SEQ") is ConstantHandler
    db.deregister_handler("NPY_SEQ")                  # the entry point is back
    assert db.handlers.lookup("NPY_SEQ").__name__ == "NumpySeqHandler"
    db.deregister_handler("NPY_SEQ")                  # now the entry point goes too
    assert "NPY_SEQ" not in db.handlers
    with pytest.raises(HandlerNotFoundError):
        db.deregister_handler("NPY_SEQ")
    tiff = "multipart/related;type=image/tiff"
    db.deregister_reader(tiff)                         # a built-in reader
    assert tiff not in db.readers
