"""Filled detector frames (AD_HDF5) against raw h5py reads of the same frames.

Scenarios (frames of 256x256 uint16; the descriptor gives no ``dtype_numpy``, so the
frame size comes from the first file when planning): ``2,000 frames in 10 files``
and, in full mode, ``10,000 frames in 1 file``.  Measured in the same run:
- raw h5py: one bulk read of each file's ``/entry/data/data`` (the practical limit),
  alone (baseline of reads) and followed by a sum (baseline of reductions);
- ``h.table(fill=True, fields=["img"]).compute()`` and a per-partition reduction of it;
- ``h.to_xarray()["img"].sum().compute()`` and ``h.to_xarray()["img"].values`` (with its
  peak memory against the data's size);
- the reductions on a LocalCluster of 1 and 2 worker processes (speedup of 2 workers
  over one from the medians and, as load on a shared machine only ever slows a run, from
  the fastest runs too).

Notes also give the plan's partitions (frames per partition, whether they follow the
files) and what each task of the graphs pickles (the payload the scheduler sends).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import event_model
import h5py
import numpy as np

from dask_broker import Broker
from dask_broker.testing import write_ad_hdf5

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


def task_payloads(collection) -> tuple[int, int, int]:
    """``(tasks, largest, total)`` pickled bytes of the tasks of an optimized graph."""
    import dask
    from distributed.protocol.pickle import dumps

    (optimized,) = dask.optimize(collection)
    sizes = [len(dumps(task)) for task in dict(optimized.__dask_graph__()).values()]
    return len(sizes), max(sizes), sum(sizes)


def follows_files(specs, per_file: int) -> bool:
    """Whether each partition is whole files or lies within one (files of ``per_file``
    frames, seq_num 1 first)."""
    for spec in specs:
        lo, hi = spec.seq_range
        whole = (lo - 1) % per_file == 0 and (hi - 1) % per_file == 0
        if not whole and (lo - 1) // per_file != (hi - 2) // per_file:
            return False
    return True


def cpu_per_call(fn, pids: list[int], repeat: int) -> tuple[float, list[float]]:
    """CPU seconds per call of ``fn``: in this process (client and LocalCluster's
    scheduler) and in each of the processes ``pids`` (the workers); load-independent."""
    import psutil

    def used(p):
        t = p.cpu_times()
        return t.user + t.system

    me, others = psutil.Process(), [psutil.Process(pid) for pid in pids]
    fn()
    before, before_others = used(me), [used(p) for p in others]
    for _ in range(repeat):
        fn()
    return ((used(me) - before) / repeat,
            [(used(p) - b) / repeat for p, b in zip(others, before_others, strict=True)])


def raw_bulk(files: list[str]) -> int:
    total = 0
    for path in files:
        with h5py.File(path, "r") as f:
            total += int(f["entry/data/data"][()].sum(dtype="u8"))
    return total


def raw_values(files: list[str]) -> list[np.ndarray]:
    out = []
    for path in files:
        with h5py.File(path, "r") as f:
            out.append(f["entry/data/data"][()])
    return out


def scenario(folder: Path, num: int, per_file: int, repeat: int, workers: tuple[int, ...]
             ) -> tuple[list[Result], list[str]]:
    files_label = f"{-(-num // per_file)} file{'s' if num > per_file else ''}"
    name = f"frames {num:,} in {files_label}"
    sub = folder / f"frames-{num}-{per_file}"
    sub.mkdir()
    db = Broker.from_uri(f"sqlite:///{sub / 'frames.db'}")
    files = write_run(db, sub, num, per_file)
    h = db[-1]
    expected = raw_bulk(files)
    mb = num * FRAME[0] * FRAME[1] * 2 / 2**20
    results: list[Result] = []

    def check(total):
        assert int(total) == expected, (total, expected)

    def table(**kw):
        return h.table(fill=True, fields=["img"]).compute(**kw)

    def table_reduce(**kw):
        """Fill and reduce in the tasks; only the sums come back."""
        img = h.table(fill=True, fields=["img"])["img"]
        sums = img.map_partitions(lambda s: s.map(lambda a: int(a.sum(dtype="u8"))),
                                  meta=("img", "i8"))
        return sums.sum().compute(**kw)

    def xarray_sum(**kw):
        return h.to_xarray(fields=["img"])["img"].sum(dtype="u8").compute(**kw)

    def xarray_values():
        return h.to_xarray(fields=["img"])["img"].values

    check(xarray_sum())
    check(table_reduce())
    check(int(xarray_values().sum(dtype="u8")))
    plan = h.event_source.plan(h, "primary", fill=True, fields=["img"])
    rows = sorted({s.rows for s in plan.specs})
    notes_head = [f"{name}: {plan.npartitions} partitions of {rows} frames ("
                  f"{'following' if follows_files(plan.specs, per_file) else 'straddling'} "
                  "the files)"]
    for label, coll in (("table(fill=True)", h.table(fill=True, fields=["img"])),
                        ("to_xarray sum", h.to_xarray(fields=["img"])["img"].sum(dtype="u8"))):
        n, largest, total = task_payloads(coll)
        notes_head.append(f"{name}: {label} graph: {n} tasks, pickled {total:,} B in all, "
                          f"largest task {largest:,} B")
    results.append(measure(name, "raw h5py bulk read", num, lambda: raw_values(files),
                           repeat=repeat, unit="frames"))
    results.append(measure(name, "raw h5py bulk read + sum", num, lambda: raw_bulk(files),
                           repeat=repeat, unit="frames"))
    results.append(measure(name, "table(fill=True).compute() threads", num,
                           lambda: table(scheduler="threads"), repeat=repeat, unit="frames"))
    results.append(measure(name, "table(fill=True) reduce threads", num,
                           lambda: table_reduce(scheduler="threads"), repeat=repeat,
                           unit="frames"))
    results.append(measure(name, "to_xarray sum threads", num,
                           lambda: xarray_sum(scheduler="threads"), repeat=repeat,
                           unit="frames"))
    results.append(measure(name, "to_xarray .values", num, xarray_values, repeat=repeat,
                           unit="frames"))
    import distributed

    raw_cpu = cpu_per_call(lambda: raw_bulk(files), [], repeat)[0]
    cpu: dict[str, tuple[float, list[float]]] = {}
    for n in workers:
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            check(xarray_sum())
            results.append(measure(name, f"table(fill=True) reduce {n} worker(s)", num,
                                   table_reduce, repeat=repeat, unit="frames"))
            results.append(measure(name, f"to_xarray sum {n} worker(s)", num, xarray_sum,
                                   repeat=repeat, unit="frames"))
            pids = list(client.run(os.getpid).values())
            cpu[f"table(fill=True) reduce {n}"] = cpu_per_call(table_reduce, pids, repeat)
            cpu[f"to_xarray sum {n}"] = cpu_per_call(xarray_sum, pids, repeat)
    by = {r.method: r for r in results}
    read, read_sum = by["raw h5py bulk read"], by["raw h5py bulk read + sum"]
    notes = notes_head
    cores = os.cpu_count() or 1
    for label, (here, on_workers) in cpu.items():
        notes.append(f"{name}: {label} worker(s): CPU per call {sum(on_workers) * 1e3:.0f} ms "
                     f"in the workers ({', '.join(f'{c * 1e3:.0f}' for c in on_workers)}), "
                     f"{here * 1e3:.0f} ms in the client and scheduler (raw h5py read + sum: "
                     f"{raw_cpu * 1e3:.0f} ms)")
    for kind in ("table(fill=True) reduce", "to_xarray sum"):
        if f"{kind} 1" in cpu and f"{kind} 2" in cpu:
            # on `cores` free cores, 2 workers take at least their CPU / cores (or their
            # busiest worker's CPU); 1 worker at least its CPU
            one = max(sum(cpu[f"{kind} 1"][1]), (cpu[f"{kind} 1"][0]
                                                   + sum(cpu[f"{kind} 1"][1])) / cores)
            here2, workers2 = cpu[f"{kind} 2"]
            two = max(max(workers2), (here2 + sum(workers2)) / cores)
            notes.append(f"{name}: {kind}: by the CPU they use, on {cores} free cores a call "
                         f"takes >= {one * 1e3:.0f} ms with 1 worker and >= {two * 1e3:.0f} ms "
                         f"with 2: about {one / two:.2f}x at most")

    def share(method: str, base: Result, target: float) -> None:
        r = by[method]
        got = base.median_s / r.median_s
        notes.append(f"{name}: {method}: {got:.0%} of {base.method} ({mb / r.median_s:,.0f} "
                     f"MB/s; target >= {target:.0%}: {'met' if got >= target else 'NOT met'})")

    share("table(fill=True).compute() threads", read, 0.8)
    share("table(fill=True) reduce threads", read_sum, 0.8)
    share("to_xarray sum threads", read_sum, 0.8)
    share("to_xarray .values", read, 0.7)
    values = by["to_xarray .values"]
    grown = (values.peak_rss_mb - values.extra["base_rss_mb"]) / mb
    notes.append(f"{name}: to_xarray .values peak memory {grown:.2f}x the data ({mb:,.0f} MB; "
                 f"target <= 1.2x: {'met' if grown <= 1.2 else 'NOT met'})")
    for n in workers:
        share(f"to_xarray sum {n} worker(s)", read_sum, 0.6 if n == 1 else 0)
        share(f"table(fill=True) reduce {n} worker(s)", read_sum, 0.6 if n == 1 else 0)
    if 1 in workers and 2 in workers:
        for kind in ("to_xarray sum", "table(fill=True) reduce"):
            one, two = by[f"{kind} 1 worker(s)"], by[f"{kind} 2 worker(s)"]
            speedup = one.median_s / two.median_s
            fastest = min(one.runs) / min(two.runs)
            notes.append(f"{name}: {kind}: 2 workers {speedup:.2f}x one (fastest runs "
                         f"{fastest:.2f}x; target >= 1.6x: "
                         f"{'met' if speedup >= 1.6 else 'NOT met'})")
    return results, notes


def run(quick: bool = True):
    repeat = 3
    results: list[Result] = []
    notes: list[str] = []
    baselines = {}
    cases = [(2_000, 200)] if quick else [(2_000, 200), (10_000, 10_000)]
    with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
        for num, per_file in cases:
            rows, more = scenario(Path(tmp), num, per_file, repeat, workers=(1, 2))
            results += rows
            notes += more
            baselines[rows[0].scenario] = "raw h5py bulk read"
    return results, baselines, notes
