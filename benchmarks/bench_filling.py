"""Filled detector frames (AD_HDF5) against raw h5py reads of the same frames.

Scenario ``filled frames``: N frames of 256x256 uint16 in several AD_HDF5 files.
Measured in the same run:
- raw h5py: one bulk read of each file's ``/entry/data/data`` (the practical limit);
- raw h5py, one slice per frame (what a naive per-datum reader does);
- ``h.table(fill=True)[["img"]]`` computed, threaded scheduler and LocalCluster (1, 2 workers);
- ``h.to_xarray()["img"].sum().compute()`` (a reduction over all frames), same schedulers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import event_model
import h5py
import numpy as np

from dask_broker import Broker
from dask_broker.handlers.testing import write_ad_hdf5

from .common import Result, measure

FRAME = (256, 256)


def write_run(db: Broker, folder: Path, num_frames: int, frames_per_file: int,
              dtype_numpy: bool = False) -> list[str]:
    """Frames in AD_HDF5 files; the descriptor gives no ``dtype_numpy`` (as many area
    detectors' descriptors), unless asked."""
    rng = np.random.default_rng(0)
    bundle = event_model.compose_run(metadata={"plan_name": "count", "scan_id": 1})
    db.insert("start", bundle.start_doc)
    img = {"source": "SIM:cam", "dtype": "array", "shape": [1, *FRAME],
           "external": "FILESTORE:"}
    if dtype_numpy:
        img["dtype_numpy"] = "<u2"
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "img": img,
        "exposure": {"source": "SIM:exp", "dtype": "number", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    files, seq = [], 0
    for start in range(0, num_frames, frames_per_file):
        n = min(frames_per_file, num_frames - start)
        path = folder / f"det_{start // frames_per_file:04d}.h5"
        write_ad_hdf5(path, rng.integers(0, 4096, size=(n, *FRAME), dtype="u2"))
        files.append(str(path))
        res = bundle.compose_resource(spec="AD_HDF5", root=str(folder), resource_path=path.name,
                                      resource_kwargs={"frame_per_point": 1})
        db.insert("resource", res.resource_doc)
        page = res.compose_datum_page(datum_kwargs={"point_number": list(range(n))})
        db.insert("datum_page", page)
        ids = page["datum_id"]
        seqs = list(range(seq + 1, seq + n + 1))
        seq += n
        t = time.time()
        db.insert("event_page", desc.compose_event_page(
            data={"img": ids, "exposure": [0.1] * n},
            timestamps={"img": [t] * n, "exposure": [t] * n}, seq_num=seqs, time=[t] * n,
            filled={"img": [False] * n}))
    db.insert("stop", bundle.compose_stop())
    return files


def raw_bulk(files: list[str]) -> int:
    total = 0
    for path in files:
        with h5py.File(path, "r") as f:
            total += int(f["entry/data/data"][()].sum(dtype="u8"))
    return total


def raw_per_frame(files: list[str]) -> int:
    total = 0
    for path in files:
        with h5py.File(path, "r") as f:
            ds = f["entry/data/data"]
            for i in range(ds.shape[0]):
                total += int(ds[i].sum(dtype="u8"))
    return total


def run(quick: bool = True):
    num = 1_000 if quick else 10_000
    per_file = 100 if quick else 500
    repeat = 2 if quick else 3
    results: list[Result] = []
    notes: list[str] = []
    scenario = f"filled frames {num:,}"
    with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
        folder = Path(tmp)
        db = Broker.from_uri(f"sqlite:///{folder / 'frames.db'}")
        files = write_run(db, folder, num, per_file)
        h = db[-1]
        expected = raw_bulk(files)
        mb = num * FRAME[0] * FRAME[1] * 2 / 2**20

        def check(total):
            assert int(total) == expected, (total, expected)

        results.append(measure(scenario, "raw h5py bulk per file", num,
                               lambda: raw_bulk(files), repeat=repeat, unit="frames"))
        results.append(measure(scenario, "raw h5py slice per frame", num,
                               lambda: raw_per_frame(files), repeat=repeat, unit="frames"))

        def table_sum(**compute_kw):
            df = h.table(fill=True, fields=["img"])
            frame = df.compute(**compute_kw)
            return sum(int(a.sum(dtype="u8")) for a in frame["img"])

        def table_reduce(**compute_kw):
            """Fill and reduce on the workers; only the sums come back."""
            img = h.table(fill=True, fields=["img"])["img"]
            sums = img.map_partitions(lambda s: s.map(lambda a: int(a.sum(dtype="u8"))),
                                      meta=("img", "i8"))
            return sums.sum().compute(**compute_kw)

        def xarray_sum(**compute_kw):
            return h.to_xarray(fields=["img"])["img"].sum(dtype="u8").compute(**compute_kw)

        check(table_sum())
        check(xarray_sum())
        check(table_reduce())
        results.append(measure(scenario, "table(fill=True) reduce threads", num,
                               lambda: table_reduce(scheduler="threads"), repeat=repeat,
                               unit="frames"))
        results.append(measure(scenario, "table(fill=True) threads", num,
                               lambda: table_sum(scheduler="threads"), repeat=repeat, unit="frames"))
        results.append(measure(scenario, "to_xarray sum threads", num,
                               lambda: xarray_sum(scheduler="threads"), repeat=repeat, unit="frames"))
        import dask
        import distributed

        # dask's workers return freed memory to the OS at once (MALLOC_TRIM_THRESHOLD_=64 KiB),
        # so every partition's frames are fresh, page-faulted memory; "(malloc)" rows raise
        # that threshold to 1 GiB, a setting users of frame-heavy workloads can choose.
        trim = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
        for workers, label, config in ((1, "", {}), (2, "", {}),
                                       (1, " (malloc)", {trim: 2**30}),
                                       (2, " (malloc)", {trim: 2**30})):
            with dask.config.set(config), \
                    distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                             processes=True, dashboard_address=":0") as cluster, \
                    distributed.Client(cluster):
                check(xarray_sum())
                results.append(measure(scenario,
                                       f"table(fill=True) reduce {workers} worker(s){label}",
                                       num, table_reduce, repeat=repeat, unit="frames"))
                if not label:
                    results.append(measure(scenario, f"table(fill=True) {workers} worker(s)", num,
                                           table_sum, repeat=repeat, unit="frames"))
                results.append(measure(scenario, f"to_xarray sum {workers} worker(s){label}", num,
                                       xarray_sum, repeat=repeat, unit="frames"))
    notes.append("'table(fill=True) N worker(s)' brings every frame back to the client "
                 "(pickled over TCP): its time is the transfer; 'reduce' fills and reduces on "
                 "the workers")
    base = results[0]
    for r in results[2:]:
        notes.append(f"{r.method}: {base.median_s / r.median_s:.0%} of raw h5py bulk throughput "
                     f"({mb / r.median_s:,.0f} MB/s; target >= 50%)")
    return results, {scenario: "raw h5py bulk per file"}, notes
