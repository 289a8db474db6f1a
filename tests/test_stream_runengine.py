"""ophyd-async detectors end to end: documents recorded from a real RunEngine (and
hand-made TIFF / HDF5 / legacy cases, see streamdata.py) inserted into both stores and
read back -- rows, internal values, filled frames, xarray, replay -- equal to the files
read directly; a live ``RE.subscribe(db.insert)`` scan; filling on a LocalCluster."""

from __future__ import annotations

import bluesky.plans as bp
import numpy as np
import pytest

from dask_broker import Broker
from dask_broker.handlers import close_shared_handlers, shared_handler_cache
from streamdata import open_files_under


def _insert(db, recording):
    for name, doc in recording.docs:
        db.insert(name, doc)
    return db[recording.uid]


def _expected_cell(recording, stream, key):
    """The expected column of a key as dask_broker gives it: a descriptor shape of [1] is
    one scalar per row (as tiled gives it)."""
    values = recording.expected[stream][key]
    if list(recording.descriptors[stream]["data_keys"][key]["shape"]) == [1]:
        return values.reshape(len(values))
    return values


def test_every_case_reads_back_equal_to_the_files(any_db, streamdata_recording):
    rec = streamdata_recording
    h = _insert(any_db, rec)
    assert h.stop["exit_status"] == "success"
    for stream, rows in rec.rows.items():
        df = h.table(stream, fill=True).compute()
        assert df.index.tolist() == list(range(1, rows + 1)), stream
        # Internal values come from the events; rows without one have no time and NaN.
        for seq in range(1, rows + 1):
            event = rec.internal[stream].get(seq)
            if event is None:
                assert np.isnan(df["time"].loc[seq].value) or df["time"].isna().loc[seq]
                continue
            for key, value in event.items():
                assert df[key].loc[seq] == value, (stream, key, seq)
        ds = h.to_xarray(stream)
        for key in rec.stream_keys(stream):
            want = _expected_cell(rec, stream, key)
            got_xr = ds[key].values
            assert got_xr.shape == want.shape and got_xr.dtype == want.dtype, key
            np.testing.assert_array_equal(got_xr, want)
            column = df[key]
            if want.ndim == 1:
                np.testing.assert_array_equal(column.to_numpy(), want.astype("f8"))
            else:
                np.testing.assert_array_equal(np.stack(column.to_list()), want)
            # unfilled: references to (stream_resource, index)
            refs = h.table(stream, fields=[key]).compute()[key]
            assert all(isinstance(r, str) and "/" in r for r in refs)
    # Readers stay open between reads in the process's bounded cache (as xarray's
    # FILE_CACHE), at most dask_broker.max-open-files of them, until it is closed.
    held = open_files_under(rec.folder)
    assert len(held) <= shared_handler_cache().maxsize
    close_shared_handlers()
    assert open_files_under(rec.folder) == []  # every reader closed


def test_every_case_replays_and_round_trips(any_db, streamdata_recording):
    rec = streamdata_recording
    h = _insert(any_db, rec)
    replay = list(h.docs())
    names = [n for n, _ in replay]
    assert names.count("stream_resource") == len(rec.of("stream_resource"))
    assert names.count("stream_datum") == len(rec.of("stream_datum"))
    assert names.count("event") == len(rec.of("event"))
    seen_sr, covered = set(), set()
    for name, doc in replay:
        if name == "stream_resource":
            seen_sr.add(doc["uid"])
        elif name == "stream_datum":
            assert doc["stream_resource"] in seen_sr
            covered.update(range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"]))
        elif name == "event" and rec.stream_keys(
                next(d["name"] for d in rec.of("descriptor") if d["uid"] == doc["descriptor"])):
            assert doc["seq_num"] in covered  # each stream_datum before its row's event
    other = Broker.temp()
    for name, doc in replay:
        other.insert(name, doc)
    for stream in rec.rows:
        a = h.to_xarray(stream)
        b = other[rec.uid].to_xarray(stream)
        for key in rec.stream_keys(stream):
            np.testing.assert_array_equal(a[key].values, b[key].values)


def test_live_runengine_subscribed_to_insert(any_db, sim_beamline):
    """A RunEngine with an ophyd-async detector, subscribed to db.insert: the scans
    complete and read back (today's databroker aborts them)."""
    bl = sim_beamline
    bl.RE.subscribe(any_db.insert)
    uids = bl.RE(bp.scan([bl.det], bl.motor, 0, 1, 4))
    h = any_db[uids[0]]
    assert h.stop["exit_status"] == "success"
    df = h.table(fill=True).compute()
    assert len(df) == 4
    frames = np.stack([np.asarray(v) for v in df["det"]])
    assert frames.shape == (4, 1, 240, 320)
    assert len({f.tobytes() for f in frames}) == 4  # every row a different frame
    np.testing.assert_array_equal(df["motor"].to_numpy(), np.linspace(0, 1, 4))
    np.testing.assert_array_equal(h.to_xarray()["det-sum"].values,
                                  frames.reshape(4, -1).astype("i8").sum(axis=1))


@pytest.mark.slow
def test_fly_scans_fill_on_a_localcluster(streamdata_recordings, tmp_path):
    from distributed import Client, LocalCluster

    db = Broker.from_uri(f"sqlite:///{tmp_path / 'catalog.db'}")
    recs = [streamdata_recordings[name]
            for name in ("fly_blob", "fly_two_dets", "fly_blob_multi", "scan_blob_motor")]
    for rec in recs:
        _insert(db, rec)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for rec in recs:
            h = db[rec.uid]
            for key in rec.stream_keys("primary"):
                want = _expected_cell(rec, "primary", key)
                got = h.to_xarray(chunk_size=2)[key].data.compute(scheduler=client)
                np.testing.assert_array_equal(got, want)
                col = h.table(fill=True, fields=[key], chunk_size=3)[key].compute(
                    scheduler=client)
                got_t = col.to_numpy() if want.ndim == 1 else np.stack(col.to_list())
                np.testing.assert_array_equal(got_t, want.astype("f8") if want.ndim == 1
                                              else want)
