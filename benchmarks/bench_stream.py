"""Filled STREAM: frames (ophyd-async's stream_resource / stream_datum) against h5py.

Scenario ``stream frames``: N frames of 256x256 uint16 in one HDF5 file, described
as ophyd-async's HDF writer does (one stream_resource, descriptor shape
``[1, 256, 256]``, a stream_datum per flush of 100 rows, no events: a fly scan).
Measured in the same run, on the same file:
- raw h5py: one bulk read of the dataset, then a sum (the practical limit);
- ``h.table(fill=True, fields=["det"])`` reduced per partition on the threads;
- ``h.to_xarray()["det"].sum()`` on the threads and on a LocalCluster (1, 2 workers);
- ``h.to_xarray()["det"].values`` (the frames brought into one array).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import event_model
import h5py
import numpy as np

from dask_broker import Broker

from .common import Result, measure

FRAME = (256, 256)
FLUSH = 100


def write_run(db: Broker, folder: Path, num_frames: int) -> Path:
    path = folder / "det.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("/entry/data/data", shape=(num_frames, *FRAME), dtype="u2",
                              chunks=(1, *FRAME))
        for i in range(0, num_frames, 500):
            n = min(500, num_frames - i)
            ds[i:i + n] = rng.integers(0, 4096, size=(n, *FRAME), dtype="u2")
    run = event_model.compose_run(metadata={"plan_name": "fly", "scan_id": 1})
    db.insert("start", run.start_doc)
    desc = run.compose_descriptor(name="primary", data_keys={
        "det": {"source": str(path), "dtype": "array", "shape": [1, *FRAME],
                "dtype_numpy": "<u2", "external": "STREAM:"}})
    db.insert("descriptor", desc.descriptor_doc)
    sr = run.compose_stream_resource(
        mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key="det",
        parameters={"dataset": "/entry/data/data", "chunk_shape": [1, *FRAME]})
    db.insert("stream_resource", sr.stream_resource_doc)
    for start in range(0, num_frames, FLUSH):
        stop = min(start + FLUSH, num_frames)
        db.insert("stream_datum", sr.compose_stream_datum(
            indices={"start": start, "stop": stop},
            seq_nums={"start": start + 1, "stop": stop + 1}, descriptor=desc.descriptor_doc))
    stop = run.compose_stop()
    stop["num_events"] = {"primary": num_frames}  # as the RunEngine counts fly rows
    db.insert("stop", stop)
    return path


def raw_bulk(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["entry/data/data"][()].sum(dtype="u8"))


def raw_values(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["entry/data/data"][()]


def run(quick: bool = True):
    num = 1_000 if quick else 10_000
    repeat = 2 if quick else 3
    results: list[Result] = []
    notes: list[str] = []
    scenario = f"stream frames {num:,}"
    with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
        folder = Path(tmp)
        db = Broker.from_uri(f"sqlite:///{folder / 'frames.db'}")
        path = write_run(db, folder, num)
        h = db[-1]
        expected = raw_bulk(path)
        mb = num * FRAME[0] * FRAME[1] * 2 / 2**20

        def table_reduce(**kw):
            det = h.table(fill=True, fields=["det"])["det"]
            sums = det.map_partitions(lambda s: s.map(lambda a: int(a.sum(dtype="u8"))),
                                      meta=("det", "i8"))
            return sums.sum().compute(**kw)

        def xarray_sum(**kw):
            return h.to_xarray(fields=["det"])["det"].sum(dtype="u8").compute(**kw)

        def xarray_values():
            return h.to_xarray(fields=["det"])["det"].values

        assert int(table_reduce()) == expected
        assert int(xarray_sum()) == expected
        np.testing.assert_array_equal(xarray_values()[:, 0], raw_values(path))
        results.append(measure(scenario, "raw h5py bulk read + sum", num,
                               lambda: raw_bulk(path), repeat=repeat, unit="frames"))
        results.append(measure(scenario, "table(fill=True) reduce threads", num,
                               lambda: table_reduce(scheduler="threads"), repeat=repeat,
                               unit="frames"))
        results.append(measure(scenario, "to_xarray sum threads", num,
                               lambda: xarray_sum(scheduler="threads"), repeat=repeat,
                               unit="frames"))
        results.append(measure(scenario, "raw h5py bulk read (values)", num,
                               lambda: raw_values(path), repeat=repeat, unit="frames"))
        results.append(measure(scenario, "to_xarray .values", num, xarray_values,
                               repeat=repeat, unit="frames"))
        import distributed

        for workers in (1, 2):
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                          processes=True, dashboard_address=":0") as cluster, \
                    distributed.Client(cluster):
                assert int(xarray_sum()) == expected
                results.append(measure(scenario, f"to_xarray sum {workers} worker(s)", num,
                                       xarray_sum, repeat=repeat, unit="frames"))
    sum_base, values_base = results[0], results[3]
    targets = {"to_xarray .values": 0.7, "to_xarray sum 1 worker(s)": 0.6,
               "to_xarray sum 2 worker(s)": 0.0}
    for r in results[1:]:
        if r is values_base:
            continue
        base = values_base if "values" in r.method else sum_base
        target = targets.get(r.method, 0.8)
        got = base.median_s / r.median_s
        notes.append(f"{r.method}: {got:.0%} of {base.method} throughput "
                     f"({mb / r.median_s:,.0f} MB/s; target >= {target:.0%}: "
                     f"{'met' if got >= target else 'NOT met'})")
    values = next(r for r in results if r.method == "to_xarray .values")
    grown = (values.peak_rss_mb - values.extra["base_rss_mb"]) / mb
    notes.append(f"to_xarray .values peak memory {grown:.2f}x the data ({mb:,.0f} MB; target "
                 f"<= 1.2x: {'met' if grown <= 1.2 else 'NOT met'})")
    by = {r.method: r for r in results}
    speedup = by["to_xarray sum 1 worker(s)"].median_s / by["to_xarray sum 2 worker(s)"].median_s
    notes.append(f"to_xarray sum: 2 workers {speedup:.2f}x one (target >= 1.6x: "
                 f"{'met' if speedup >= 1.6 else 'NOT met'})")
    return results, {scenario: "raw h5py bulk read + sum"}, notes
