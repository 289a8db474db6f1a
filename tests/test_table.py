"""Lazy tables: values, partitioning, projection pushdown, TimeStruct, multi-descriptor streams."""

from __future__ import annotations

import pickle

import dask
import dask.dataframe as dd
import event_model
import numpy as np
import pandas as pd
import pytest

from dask_broker import DaskBrokerError, NoEventDescriptors, UnknownFieldError
from dask_broker.timestruct import TimeStruct

RAW = TimeStruct(convert_times=False)

DATA_KEYS = {
    "motor": {"source": "m", "dtype": "number", "shape": []},
    "det": {"source": "d", "dtype": "number", "shape": []},
    "count": {"source": "c", "dtype": "integer", "shape": []},
    "ok": {"source": "o", "dtype": "boolean", "shape": []},
    "label": {"source": "l", "dtype": "string", "shape": []},
    "spectrum": {"source": "s", "dtype": "array", "shape": [4]},
}


def _event_data(i: int, rng) -> dict:
    return {"motor": i * 0.5, "det": float(rng.normal()), "count": int(rng.integers(0, 100)),
            "ok": bool(i % 3), "label": f"pt{i}", "spectrum": rng.random(4).tolist()}


def _expected_frame(events: list[dict], fields: list[str], timestamps: bool = False) -> pd.DataFrame:
    """The table built independently: one row per event document, in seq_num order."""
    rows = sorted(events, key=lambda e: e["seq_num"])
    cols = {"time": [e["time"] for e in rows]}
    for f in fields:
        cols[f] = [e["data"].get(f) for e in rows]
    if timestamps:
        for f in fields:
            cols[f"ts_{f}"] = [e["timestamps"].get(f, np.nan) for e in rows]
    return pd.DataFrame(cols, index=pd.Index([e["seq_num"] for e in rows], name="seq_num"))


@pytest.fixture
def db(any_db):
    """Every table test runs on each store backend (embedded SQLite and MongoDB)."""
    return any_db


@pytest.fixture
def scan(db):
    """A run of 57 events written one at a time, plus a baseline stream."""
    rng = np.random.default_rng(1)
    bundle = event_model.compose_run(metadata={"scan_id": 7})
    db.insert("start", bundle.start_doc)
    primary = bundle.compose_descriptor(name="primary", data_keys=DATA_KEYS)
    db.insert("descriptor", primary.descriptor_doc)
    events = []
    for i in range(1, 58):
        data = _event_data(i, rng)
        ev = primary.compose_event(data=data, timestamps={k: 1000.0 + i for k in data},
                                   time=1.7e9 + i * 0.25)
        db.insert("event", ev)
        events.append(ev)
    baseline = bundle.compose_descriptor(name="baseline",
                                         data_keys={"T": {"source": "t", "dtype": "number", "shape": []}})
    db.insert("descriptor", baseline.descriptor_doc)
    db.insert("event", baseline.compose_event(data={"T": 290.0}, timestamps={"T": 1.0}))
    db.insert("stop", bundle.compose_stop())
    return db[-1], events


def _assert_scalar_equal(got: pd.DataFrame, want: pd.DataFrame, fields: list[str]) -> None:
    assert list(got.index) == list(want.index)
    assert got.index.name == "seq_num"
    for f in fields:
        if f == "spectrum":
            for a, b in zip(got[f], want[f], strict=True):
                np.testing.assert_array_equal(a, np.asarray(b))
        else:
            assert list(got[f]) == list(want[f]), f


def test_table_values_match_documents(scan):
    h, events = scan
    fields = list(DATA_KEYS)
    df = h.table(time_struct=RAW)
    assert isinstance(df, dd.DataFrame)
    got = df.compute()
    want = _expected_frame(events, fields)
    assert list(got.columns) == ["time", *fields]
    np.testing.assert_array_equal(got["time"].to_numpy(), want["time"].to_numpy())
    _assert_scalar_equal(got, want, fields)


def test_dtypes_come_from_data_keys(scan):
    h, _ = scan
    df = h.table(time_struct=RAW)
    expected = {"time": np.dtype("f8"), "motor": np.dtype("f8"), "det": np.dtype("f8"),
                "count": np.dtype("i8"), "ok": np.dtype("bool"), "label": pd.StringDtype(),
                "spectrum": np.dtype("O")}
    assert dict(df.dtypes) == expected  # meta, no data read
    computed = df.compute()
    assert dict(computed.dtypes) == expected
    assert isinstance(computed["spectrum"].iloc[0], np.ndarray)


def test_meta_is_built_without_reading_events(scan, monkeypatch):
    h, _ = scan

    def boom(*args, **kwargs):
        raise AssertionError("planning read event data")

    monkeypatch.setattr(type(h.event_source.store), "iter_event_pages", boom)
    df = h.table(timestamps=True)
    assert list(df.columns) == ["time", *DATA_KEYS, *(f"ts_{f}" for f in DATA_KEYS)]


@pytest.mark.parametrize("chunk_size", [1, 10, 56, 57, 100])
def test_partitions_and_divisions(scan, chunk_size):
    h, events = scan
    df = h.table(chunk_size=chunk_size, fields=["det"])
    n = len(events)
    assert df.npartitions == -(-n // chunk_size)
    assert df.known_divisions
    starts = list(range(1, n + 1, chunk_size))
    assert list(df.divisions) == [*starts, n]
    parts = [p.compute() for p in df.partitions]
    assert [len(p) for p in parts] == [min(chunk_size, n - s + 1) for s in starts]
    for p, s in zip(parts, starts, strict=True):
        assert p.index[0] == s


def test_table_chunk_and_chunks(scan):
    h, events = scan
    full = h.table(time_struct=RAW).compute()
    chunks = list(h.table_chunks("primary", time_struct=RAW, chunk_size=10))
    assert len(chunks) == 6
    assert all(isinstance(c, pd.DataFrame) for c in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks), full)
    for k in (0, 3, 5):
        one = h.table_chunk("primary", k, chunk_size=10, time_struct=RAW)
        pd.testing.assert_frame_equal(one, full.loc[10 * k + 1: 10 * k + 10])
    with pytest.raises(IndexError, match="6 chunks"):
        h.table_chunk("primary", 6, chunk_size=10)


class _Recorder:
    """Records the arguments of every event read of the store class (projection pushdown)."""

    def __init__(self, monkeypatch, store_class):
        self.calls = []
        original = store_class.iter_event_pages
        recorder = self

        def recording(store, descriptor_uids, **kwargs):
            recorder.calls.append(kwargs)
            return original(store, descriptor_uids, **kwargs)

        monkeypatch.setattr(store_class, "iter_event_pages", recording)

    def fields(self):
        return {tuple(c["fields"]) for c in self.calls}


def test_projection_reaches_the_store(scan, monkeypatch):
    h, events = scan
    rec = _Recorder(monkeypatch, type(h.event_source.store))
    with dask.config.set(scheduler="threads"):
        got = h.table(chunk_size=20)[["det"]].compute()
    assert rec.fields() == {("det",)}
    assert list(got.columns) == ["det"]
    assert list(got["det"]) == [e["data"]["det"] for e in events]

    rec.calls.clear()
    with dask.config.set(scheduler="threads"):
        series = h.table(chunk_size=20).motor.compute()
    assert rec.fields() == {("motor",)}
    assert list(series) == [e["data"]["motor"] for e in events]

    rec.calls.clear()
    h.table(fields=["motor", "ok"]).compute()
    assert rec.fields() == {("motor", "ok")}
    assert all(c["timestamps"] is False for c in rec.calls)


def test_timestamps_columns(scan):
    h, events = scan
    got = h.table(fields=["det", "count"], timestamps=True, time_struct=RAW).compute()
    want = _expected_frame(events, ["det", "count"], timestamps=True)
    assert list(got.columns) == ["time", "det", "count", "ts_det", "ts_count"]
    np.testing.assert_array_equal(got["ts_det"].to_numpy(), want["ts_det"].to_numpy())


def test_timestruct_conversions(scan):
    h, events = scan
    seconds = np.array([e["time"] for e in events])
    naive_utc = h.table(fields=[], time_struct=TimeStruct(localize_times=False)).compute()["time"]
    expected_utc = pd.to_datetime(seconds, unit="s")
    np.testing.assert_array_equal(naive_utc.to_numpy(), expected_utc.to_numpy())

    ny = h.table(fields=[], time_struct=TimeStruct(timezone="America/New_York")).compute()["time"]
    expected_ny = (pd.Series(expected_utc).dt.tz_localize("UTC").dt.tz_convert("America/New_York")
                   .dt.tz_localize(None))
    np.testing.assert_array_equal(ny.to_numpy(), expected_ny.to_numpy())
    assert ny.dtype == np.dtype("datetime64[ns]")
    assert (ny.to_numpy() != naive_utc.to_numpy()).all()

    raw = h.table(fields=[], time_struct=RAW).compute()["time"]
    np.testing.assert_array_equal(raw.to_numpy(), seconds)

    with pytest.raises(DaskBrokerError, match="Not/AZone"):
        TimeStruct(timezone="Not/AZone")
    with pytest.raises(ValueError, match="TimeStruct"):
        h.table(time_struct={"convert_times": False})


def test_time_conversion_is_pandas_to_the_nanosecond():
    """The numpy conversion gives what pd.to_datetime(unit="s") gives, value for value."""
    from dask_broker.timestruct import epoch_seconds_to_datetime64

    rng = np.random.default_rng(7)
    seconds = np.concatenate([
        1.7e9 + np.cumsum(rng.random(100_000)),        # a scan's times
        rng.uniform(-9e9, 9e9, 10_000),                 # 1685 .. 2255
        [0.5, -1.5, 1e-9, -3e-10, 1.7e9 + 0.9999999999, 1.7e9 + 0.123456789, np.nan],
    ])
    got = epoch_seconds_to_datetime64(seconds)
    want = np.asarray(pd.to_datetime(seconds, unit="s"), dtype="datetime64[ns]")
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view("i8"), want.view("i8"))  # NaT == NaT as integers
    assert np.isnat(got[-1])
    for zone in ("UTC", "Europe/Berlin"):
        local = TimeStruct(timezone=zone).apply(seconds[:1000])
        want_local = (pd.Series(want[:1000]).dt.tz_localize("UTC").dt.tz_convert(zone)
                      .dt.tz_localize(None))
        np.testing.assert_array_equal(local, want_local.to_numpy())


@pytest.mark.parametrize("bad", [1e12, -1e11, np.inf])
def test_times_outside_datetime64_are_refused_not_wrapped(bad):
    with pytest.raises(DaskBrokerError, match="convert_times=False"):
        TimeStruct().apply(np.array([1.7e9, bad]))
    assert TimeStruct(convert_times=False).apply(np.array([bad]))[0] == bad


def test_default_timestruct_is_local_time(scan, monkeypatch):
    import dask_broker.timestruct as ts

    h, events = scan
    monkeypatch.setattr(ts, "local_timezone", lambda: "Asia/Tokyo")
    got = h.table(fields=[]).compute()["time"]
    want = (pd.Series(pd.to_datetime([e["time"] for e in events], unit="s"))
            .dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo").dt.tz_localize(None))
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def test_multi_descriptor_stream(db):
    """Configuration changed mid-run: two descriptors in one stream, different fields."""
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    keys_a = {"x": {"source": "x", "dtype": "number", "shape": []},
              "n": {"source": "n", "dtype": "integer", "shape": []}}
    keys_b = {"x": {"source": "x", "dtype": "number", "shape": []},
              "z": {"source": "z", "dtype": "number", "shape": []}}
    a = bundle.compose_descriptor(name="primary", data_keys=keys_a)
    # event-model's composer refuses differing keys within a stream; older data has them.
    b = bundle.compose_descriptor(name="primary", data_keys=keys_b, validate=False)
    db.insert("descriptor", a.descriptor_doc)
    db.insert("descriptor", b.descriptor_doc)
    events = []
    for seq in range(1, 21):
        if seq <= 8 or seq % 2:
            ev = a.compose_event(data={"x": seq * 1.0, "n": seq}, timestamps={"x": 0.0, "n": 0.0},
                                 seq_num=seq)
        else:
            ev = b.compose_event(data={"x": -seq * 1.0, "z": seq / 3}, timestamps={"x": 0.0, "z": 0.0},
                                 seq_num=seq)
        events.append(ev)
    # insert out of order across descriptors: rows must still come out in seq_num order
    for ev in sorted(events, key=lambda e: e["descriptor"]):
        db.insert("event", ev)
    h = db[-1]
    df = h.table(chunk_size=6, time_struct=RAW)
    assert list(df.columns) == ["time", "x", "n", "z"]
    assert df.dtypes["n"] == np.dtype("f8")  # integer missing from some rows -> float with NaN
    got = df.compute()
    assert list(got.index) == list(range(1, 21))
    for ev in events:
        row = got.loc[ev["seq_num"]]
        assert row["x"] == ev["data"]["x"]
        for f in ("n", "z"):
            if f in ev["data"]:
                assert row[f] == ev["data"][f]
            else:
                assert np.isnan(row[f])


def test_external_field_holds_datum_ids_unless_filled(db, tmp_path):
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    frame = np.arange(4.0).reshape(2, 2)
    np.save(tmp_path / "a.npy", frame)
    res = bundle.compose_resource(spec="NPY", root=str(tmp_path), resource_path="a.npy",
                                  resource_kwargs={})
    db.insert("resource", res.resource_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "img": {"source": "cam", "dtype": "array", "shape": [2, 2], "external": "FILESTORE:"}})
    db.insert("descriptor", desc.descriptor_doc)
    ids = []
    for i in range(3):
        datum = res.compose_datum(datum_kwargs={})
        db.insert("datum", datum)
        ids.append(datum["datum_id"])
        db.insert("event", desc.compose_event(data={"img": datum["datum_id"]},
                                              timestamps={"img": 0.0}, filled={"img": False}))
    h = db[-1]
    assert list(h.table().compute()["img"]) == ids
    for fill in (False, True):  # partitions have the dtypes dask's meta promised
        lazy = h.table(fill=fill)
        assert lazy.compute().dtypes.to_dict() == lazy.dtypes.to_dict() == {
            "time": np.dtype("datetime64[ns]"), "img": np.dtype(object)}
    filled = h.table(fill=True).compute()["img"]
    assert all(np.array_equal(a, frame) for a in filled)


def test_run_in_progress_and_deterministic_names(db):
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary",
                                     data_keys={"x": {"source": "x", "dtype": "number", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    for i in range(5):
        db.insert("event", desc.compose_event(data={"x": float(i)}, timestamps={"x": 0.0}))
    h = db[-1]
    assert h.stop is None
    first = h.table(chunk_size=4)
    assert first._name == h.table(chunk_size=4)._name
    assert len(first.compute()) == 5
    db.insert("event", desc.compose_event(data={"x": 5.0}, timestamps={"x": 0.0}))
    grown = h.table(chunk_size=4)
    assert grown._name != first._name
    assert list(grown.compute()["x"]) == [float(i) for i in range(6)]
    db.insert("stop", bundle.compose_stop())
    assert db[-1].table(chunk_size=4)._name != grown._name


def test_graph_pickles_and_holds_no_connection(scan):
    h, _ = scan
    df = h.table(chunk_size=10)
    graph = df.__dask_graph__()
    blob = pickle.dumps(dict(graph))
    assert b"sqlite3.Connection" not in blob
    restored = pickle.loads(blob)
    assert len(restored) == len(dict(graph))


def test_empty_stream_and_errors(db):
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary",
                                     data_keys={"x": {"source": "x", "dtype": "integer", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    h = db[-1]
    got = h.table().compute()
    assert len(got) == 0 and list(got.columns) == ["time", "x"]
    assert got["x"].dtype == np.dtype("i8")
    assert list(h.table_chunks()) [0].empty
    with pytest.raises(IndexError, match="1 chunks|0 chunks"):
        h.table_chunk("primary", 3)
    with pytest.raises(UnknownFieldError, match="nope"):
        h.table(fields=["nope"])
    with pytest.raises(NoEventDescriptors, match="baseline"):
        h.table("baseline")
    with pytest.raises(ValueError, match="chunk_size"):
        h.table(chunk_size=0)


@pytest.mark.slow
def test_local_cluster_processes(scan):
    distributed = pytest.importorskip("distributed")
    h, events = scan
    want = h.table(chunk_size=9, time_struct=RAW).compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        df = h.table(chunk_size=9, time_struct=RAW)
        got = client.compute(df).result()
        det_sum = client.compute(df.det.sum()).result()
        worker_pids = set(client.run(lambda: __import__("os").getpid()).values())
    pd.testing.assert_frame_equal(got, want)
    assert det_sum == pytest.approx(sum(e["data"]["det"] for e in events))
    assert len(worker_pids) == 2 and __import__("os").getpid() not in worker_pids


def test_repeated_seq_num_last_stored_wins(db):
    """Legacy data repeats a seq_num within a descriptor: the table keeps the one stored
    last (as databroker does); docs() still replays every stored event."""
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary",
                                     data_keys={"x": {"source": "x", "dtype": "number", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    values = [(1, 1.0), (2, 2.0), (3, 3.0), (2, 20.0), (4, 4.0), (2, 200.0)]
    for i, (seq, x) in enumerate(values):
        db.insert("event", desc.compose_event(data={"x": x}, timestamps={"x": 0.0}, seq_num=seq,
                                              time=1.7e9 + i))
    h = db[-1]
    got = h.table(time_struct=RAW, chunk_size=2).compute()
    assert list(got.index) == [1, 2, 3, 4]
    assert list(got["x"]) == [1.0, 200.0, 3.0, 4.0]
    replayed = [d["data"]["x"] for n, d in h.docs() if n == "event"]
    assert sorted(replayed) == sorted(x for _, x in values)


def test_values_that_do_not_fit_the_declared_dtype(db):
    """An integer column holding 2.7 (or None) is an error naming the field, not a silent cast."""
    from dask_broker.errors import ColumnTypeError

    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "n": {"source": "n", "dtype": "integer", "shape": []},
        "x": {"source": "x", "dtype": "number", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    for n, x in ((1, 1.5), (2.0, None), (3, 2.5)):
        db.insert("event", desc.compose_event(data={"n": n, "x": x}, timestamps={"n": 0, "x": 0}))
    h = db[-1]
    got = h.table(time_struct=RAW).compute()
    assert list(got["n"]) == [1, 2, 3] and got["n"].dtype == np.dtype("i8")  # 2.0 is integral
    assert got["x"].isna().tolist() == [False, True, False]
    db.insert("event", desc.compose_event(data={"n": 2.7, "x": 0.0}, timestamps={"n": 0, "x": 0}))
    with pytest.raises(ColumnTypeError, match="'n'.*2.7"):
        h.table(time_struct=RAW).compute()


@pytest.mark.slow
def test_local_times_are_the_clients_on_workers_in_another_zone(scan, monkeypatch):
    """TimeStruct(timezone=None) means the client's zone, also on workers set to another."""
    distributed = pytest.importorskip("distributed")
    import dask_broker.timestruct as ts

    h, events = scan
    monkeypatch.setattr(ts, "local_timezone", lambda: "America/Chicago")
    want = (pd.Series(pd.to_datetime([e["time"] for e in events], unit="s"))
            .dt.tz_localize("UTC").dt.tz_convert("America/Chicago").dt.tz_localize(None))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", env={"TZ": "Asia/Tokyo"}) as cluster, \
            distributed.Client(cluster) as client:
        assert client.run(lambda: __import__("os").environ.get("TZ")).popitem()[1] == "Asia/Tokyo"
        got = client.compute(h.table(fields=[], chunk_size=20)).result()["time"]
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
