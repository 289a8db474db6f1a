"""The main job: write a synthetic scan into an embedded catalog and read it back.

The scan has three streams:

- ``primary``: ``num_events`` events of scalar fields (a motor and detectors);
- ``baseline``: two readings, before and after;
- ``detector``: ``num_frames`` camera frames (``img``, uint16) stored outside the
  catalog, in AD_HDF5 files next to it; the events hold datum ids.

It then reads the scalar stream as a lazy Dask DataFrame, fills the frames on a
``LocalCluster`` of worker processes (each worker opens the HDF5 files itself),
builds the lazy xarray Dataset of the frames, and prints a summary with timings.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import event_model
import numpy as np
import pandas as pd
from .broker import Broker
from .handlers.testing import write_ad_hdf5
from .synthetic import scalar_scan_documents

__all__ = ["run_demo", "demo_documents", "frame_stats"]

DETECTOR_STREAM = "detector"


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` (widgets in Jupyter when ipywidgets is installed, text otherwise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "IProgress not found": text bars then, which is fine
        from tqdm.auto import tqdm as auto_tqdm
    return auto_tqdm(*args, **kwargs)


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


# ------------------------------------------------------------------ writing
def _frames(rng: np.random.Generator, first: int, n: int, total: int,
            shape: Sequence[int]) -> np.ndarray:
    """``n`` frames of a Gaussian spot that moves across the sensor, on a noisy background."""
    ny, nx = shape
    y = np.arange(ny, dtype="f4")[None, :, None]
    x = np.arange(nx, dtype="f4")[None, None, :]
    k = np.arange(first, first + n, dtype="f4")[:, None, None]
    frac = k / max(1, total - 1)
    cy, cx = ny * (0.25 + 0.5 * frac), nx * (0.2 + 0.6 * frac)
    sigma = max(1.0, min(ny, nx) / 12)
    spot = 3000.0 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))
    noise = rng.integers(0, 64, size=(n, ny, nx), dtype="u2")
    return (spot + 100.0).astype("u2") + noise


def demo_documents(
    folder: str | os.PathLike,
    num_events: int = 100_000,
    *,
    num_frames: int = 2_000,
    frame_shape: Sequence[int] = (128, 128),
    frames_per_file: int = 200,
    seed: int = 0,
    on_frames: Callable[[int], None] = lambda n: None,
) -> Iterator[tuple[str, dict]]:
    """The documents of the demo scan; writes the frames' HDF5 files to ``folder/frames``.

    ``on_frames(n)`` is called after each file of ``n`` frames is written.

    Examples
    --------
    >>> import tempfile
    >>> docs = list(demo_documents(tempfile.mkdtemp(), 10, num_frames=4, frame_shape=(8, 8),
    ...                            frames_per_file=2))
    >>> [name for name, _ in docs].count("resource")
    2
    """
    folder = Path(folder).absolute()
    rng = np.random.default_rng(seed)
    start = None
    metadata = {"purpose": "dask_broker demo", "detectors": ["cam"] if num_frames else [],
                "motors": ["motor"]}
    for name, doc in scalar_scan_documents(num_events, seed=seed, metadata=metadata):
        if name == "start":
            start = doc
        if name == "stop" and num_frames:
            yield from _detector_documents(start, folder, num_frames, tuple(frame_shape),
                                           frames_per_file, rng, on_frames, num_events)
            doc = dict(doc, num_events={**doc.get("num_events", {}), DETECTOR_STREAM: num_frames})
        yield name, doc


def _detector_documents(start, folder: Path, num_frames, frame_shape, frames_per_file, rng,
                        on_frames, num_events) -> Iterator[tuple[str, dict]]:
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    desc = event_model.compose_descriptor(
        start=start, streams={}, event_counters={}, name=DETECTOR_STREAM,
        data_keys={
            "img": {"source": "SIM:cam1:image", "dtype": "array", "shape": list(frame_shape),
                    "dtype_numpy": np.dtype("u2").str, "external": "FILESTORE:",
                    "dims": ["y", "x"], "units": "counts"},
            "exposure": {"source": "SIM:cam1:exposure", "dtype": "number", "shape": [],
                         "units": "s"},
        })
    yield "descriptor", desc.descriptor_doc
    # Frames are taken while the motor moves: spread their times over the scan.
    scan_time = max(num_events, 1) * 0.01
    per_file = max(1, frames_per_file)
    for first in range(0, num_frames, per_file):
        n = min(per_file, num_frames - first)
        name = f"cam1_{first // per_file:04d}.h5"
        write_ad_hdf5(frames_dir / name, _frames(rng, first, n, num_frames, frame_shape))
        res = event_model.compose_resource(
            start=start, spec="AD_HDF5", root=str(folder), resource_path=f"frames/{name}",
            resource_kwargs={"frame_per_point": 1})
        yield "resource", res.resource_doc
        page = res.compose_datum_page(datum_kwargs={"point_number": list(range(n))})
        yield "datum_page", page
        seq = list(range(first + 1, first + n + 1))
        times = [start["time"] + scan_time * s / (num_frames + 1) for s in seq]
        yield "event_page", desc.compose_event_page(
            data={"img": list(page["datum_id"]), "exposure": [0.01] * n},
            timestamps={"img": times, "exposure": times}, seq_num=seq, time=times,
            filled={"img": [False] * n})
        on_frames(n)


# ------------------------------------------------------------------ computing
def frame_stats(part: pd.DataFrame) -> pd.DataFrame:
    """Per-frame statistics of a partition of the filled ``detector`` table (runs on workers)."""
    frames = list(part["img"])
    return pd.DataFrame({
        "sum": np.array([int(a.sum(dtype="u8")) for a in frames], dtype="u8"),
        "max": np.array([int(a.max()) if a.size else 0 for a in frames], dtype="u2"),
    }, index=part.index)


class _TqdmCallback:
    """Task progress of the local (threaded) scheduler as a tqdm bar."""

    def __init__(self, desc: str, disable: bool):
        from dask.callbacks import Callback

        bars: list = []

        class _CB(Callback):
            def _start_state(self, dsk, state):
                total = sum(len(state[k]) for k in ("ready", "waiting", "running"))
                bars.append(tqdm(total=total, desc=desc, unit="task", disable=disable))

            def _posttask(self, key, result, dsk, state, worker_id):
                bars[-1].update(1)

        self.bars, self.callback = bars, _CB()

    def __enter__(self):
        self.callback.__enter__()
        return self

    def __exit__(self, *exc):
        self.callback.__exit__(*exc)
        for bar in self.bars:
            bar.close()


def _persist(collection, client, desc: str, progress: bool):
    """Persist ``collection`` with a progress bar over its chunks (distributed) or tasks."""
    if client is None:
        with _TqdmCallback(desc, disable=not progress):
            return collection.persist(scheduler="threads")
    from distributed import as_completed, futures_of

    persisted = client.persist(collection)
    futures = futures_of(persisted)
    with tqdm(total=len(futures), desc=desc, unit="chunk", disable=not progress) as bar:
        for _ in as_completed(futures):
            bar.update(1)
    return persisted


@contextlib.contextmanager
def _cluster(n_workers: int, dashboard: bool, out):
    if n_workers <= 0:
        yield None
        return
    import distributed

    address = None
    if dashboard:
        if not _has_bokeh():
            out("  (the dashboard needs bokeh: pip install 'bokeh>=3.1'; running without it)")
        else:
            address = ":8787"
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                  dashboard_address=address, silence_logs=logging.ERROR) as cl, \
            distributed.Client(cl) as client:
        yield client


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
        else (path.stat().st_size if path.exists() else 0)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


# ------------------------------------------------------------------ the job
def run_demo(folder: str | Path = "demo-catalog", num_events: int = 100_000,
             progress: bool = True, out=print, *, num_frames: int = 2_000,
             frame_shape: Sequence[int] = (128, 128), frames_per_file: int = 200,
             n_workers: int = 2, dashboard: bool = False, seed: int = 0) -> Broker:
    """Write the demo scan into ``folder/catalog.db`` (+ ``folder/frames``), read it, summarize.

    Parameters
    ----------
    folder
        Where the catalog and the frames' HDF5 files are written (emptied first).
    num_events
        Events in the primary stream (scalar fields).
    progress
        Show progress bars (on stderr).
    out
        Where the summary lines go.
    num_frames
        Frames in the ``detector`` stream (0: no detector stream).
    frame_shape
        Shape of one frame (uint16).
    frames_per_file
        Frames per AD_HDF5 file; also the chunk of events of the filled table
        and Dataset.
    n_workers
        Worker processes of the ``LocalCluster`` that fills the frames (one
        thread each); 0 fills with the threaded scheduler in this process.
    dashboard
        Serve the Dask dashboard (needs bokeh) and print its link.
    seed
        Seed of the synthetic data.

    Examples
    --------
    >>> db = run_demo("/tmp/demo", num_events=1000, progress=False, out=lambda *a: None,
    ...               num_frames=20, frame_shape=(16, 16), n_workers=0)
    >>> len(db)
    1
    """
    t_all = time.perf_counter()
    folder = Path(folder).absolute()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'catalog.db'}"
    db = Broker.from_uri(uri)
    timings: list[tuple[str, float, str]] = []
    frame_bytes = int(np.prod(frame_shape)) * 2

    def step(text: str) -> None:
        out("")
        out(f"== {text}")

    out("dask_broker demo")
    out(f"  catalog  {uri}")
    if num_frames:
        out(f"  frames   {folder / 'frames'} (AD_HDF5, {frames_per_file} frames per file)")

    # 1. write ------------------------------------------------------------
    step(f"1. writing a scan: {num_events:,} events of scalars"
         + (f" + {num_frames:,} frames of {tuple(frame_shape)} uint16" if num_frames else ""))
    ev_bar = tqdm(total=num_events, unit="ev", desc="writing events", disable=not progress)
    fr_bar = None

    def on_frames(n: int) -> None:
        nonlocal fr_bar
        if fr_bar is None:  # the frames come after the events: one bar after the other
            ev_bar.close()
            fr_bar = tqdm(total=num_frames, unit="frame", desc="writing frames",
                          disable=not progress)
        fr_bar.update(n)

    t0 = time.perf_counter()
    primary = None
    docs = demo_documents(folder, num_events, num_frames=num_frames, frame_shape=frame_shape,
                          frames_per_file=frames_per_file, seed=seed, on_frames=on_frames)
    t_events = None
    for name, doc in docs:
        db.insert(name, doc)
        if name == "descriptor" and doc["name"] == "primary":
            primary = doc["uid"]
        elif name == "event_page" and doc["descriptor"] == primary:
            ev_bar.update(len(doc["seq_num"]))
            if ev_bar.n >= num_events and t_events is None:
                t_events = time.perf_counter() - t0
    ev_bar.close()
    if fr_bar is not None:
        fr_bar.close()
    t_write = time.perf_counter() - t0
    t_events = t_write if t_events is None else t_events
    t_frames = max(t_write - t_events, 1e-9)
    timings.append(("write events", t_events, f"{num_events / t_events:,.0f} events/s"))
    if num_frames:
        timings.append(("write frames", t_frames, f"{num_frames / t_frames:,.0f} frames/s "
                        f"({_mb(num_frames * frame_bytes)} of HDF5 + their documents)"))

    h = db[-1]
    out(f"  run {h.uid}  scan_id={h.start['scan_id']}  plan={h.start['plan_name']}  "
        f"exit_status={h.stop['exit_status']}")
    counts = db.store.event_counts([d["uid"] for d in h.descriptors])
    for d in h.descriptors:
        out(f"  stream {d['name']:<9} {counts.get(d['uid'], (0,))[0]:>9,} events  fields "
            f"{', '.join(d['data_keys'])}")

    # 2. scalars ------------------------------------------------------------
    step("2. the scalar stream 'primary' as a lazy dask DataFrame")
    t0 = time.perf_counter()
    df = h.table("primary", chunk_size=max(1, num_events // 4))
    t_plan = time.perf_counter() - t0
    out(f"  h.table('primary'): {df.npartitions} partition(s) of up to {max(1, num_events // 4):,} "
        f"events, divisions {df.divisions}")
    t0 = time.perf_counter()
    frame = df.compute()
    t_read = time.perf_counter() - t0
    timings.append(("plan table", t_plan, "no data read"))
    timings.append(("read primary", t_read, f"{num_events / t_read:,.0f} events/s"))
    out("  first rows:")
    for line in frame.head(3).to_string(max_cols=7).splitlines():
        out("    " + line)
    det0 = frame["det0"] if "det0" in frame else None
    if det0 is not None and len(det0):
        out(f"  det0: mean {det0.mean():.3f}, std {det0.std():.3f} over {len(det0):,} events")
    baseline = h.table("baseline").compute()
    out("  baseline:")
    for line in baseline.to_string().splitlines():
        out("    " + line)

    if not num_frames:
        timings.append(("total", time.perf_counter() - t_all, ""))
        _summary(out, db, h, timings, None)
        return db

    # 3. frames on a cluster -------------------------------------------------
    plural = "es" if n_workers != 1 else ""
    where = (f"a LocalCluster of {n_workers} worker process{plural}" if n_workers > 0
             else "the threaded scheduler (no cluster)")
    step(f"3. filling {num_frames:,} frames from AD_HDF5 files on {where}")
    t0 = time.perf_counter()
    with _cluster(n_workers, dashboard, out) as client:
        t_cluster = time.perf_counter() - t0
        if client is not None:
            timings.append(("start cluster", t_cluster, f"{n_workers} worker process{plural}"))
            out(f"  cluster up in {t_cluster:.1f} s"
                + (f"; dashboard: {client.dashboard_link}" if dashboard and _has_bokeh()
                   else ""))
        filled = h.table(DETECTOR_STREAM, fields=["img"], fill=True, chunk_size=frames_per_file)
        out(f"  h.table('{DETECTOR_STREAM}', fill=True): lazy, {filled.npartitions} partition(s); "
            "each task opens its files, fills, closes them")
        stats_lazy = filled.map_partitions(frame_stats, meta={"sum": "u8", "max": "u2"})
        t0 = time.perf_counter()
        stats = _persist(stats_lazy, client, "filling table", progress).compute()
        t_fill = time.perf_counter() - t0
        timings.append(("fill table", t_fill, f"{num_frames / t_fill:,.0f} frames/s, "
                        f"{num_frames * frame_bytes / 2**20 / t_fill:,.0f} MiB/s"))
        brightest = stats["max"].idxmax()
        out(f"  per-frame statistics computed on the workers ({len(stats):,} rows): sum "
            f"{stats['sum'].min():,}..{stats['sum'].max():,}; brightest pixel "
            f"{stats['max'].max()} in frame seq_num={brightest}")

        # 4. xarray ----------------------------------------------------------
        step(f"4. the '{DETECTOR_STREAM}' stream as a lazy xarray Dataset")
        t0 = time.perf_counter()
        ds = h.to_xarray(DETECTOR_STREAM, chunk_size=frames_per_file)
        t_ds = time.perf_counter() - t0
        img = ds["img"]
        out(f"  h.to_xarray('{DETECTOR_STREAM}') in {t_ds * 1e3:.0f} ms:")
        for line in repr(ds).splitlines():
            out("    " + line)
        t0 = time.perf_counter()
        img_p = _persist(img, client, "filling frames", progress)
        mean_frame = img_p.mean("time").compute()
        totals = img_p.sum(("y", "x"), dtype="u8").compute()
        t_x = time.perf_counter() - t0
        timings.append(("xarray fill+reduce", t_x, f"{num_frames / t_x:,.0f} frames/s"))
        peak = np.unravel_index(int(np.argmax(mean_frame.values)), mean_frame.shape)
        out(f"  mean frame: shape {mean_frame.shape}, max {float(mean_frame.max()):.1f} at "
            f"(y, x) = {tuple(int(i) for i in peak)}; total counts per frame "
            f"{int(totals.min()):,}..{int(totals.max()):,}")
        assert int(totals.sum()) == int(stats["sum"].sum()), "table and Dataset disagree"
        filled_info = (tuple(img.shape), tuple(img.shape[1:]), str(img.dtype))
        del img_p
    timings.append(("total", time.perf_counter() - t_all, ""))
    _summary(out, db, h, timings, filled_info, folder)
    return db


def _summary(out, db, h, timings, filled_info, folder: Path | None = None) -> None:
    out("")
    out("== summary")
    counts = db.store.event_counts([d["uid"] for d in h.descriptors])
    streams = ", ".join(f"{d['name']} ({counts.get(d['uid'], (0,))[0]:,} events)"
                        for d in h.descriptors)
    out(f"  streams: {streams}")
    if filled_info is not None:
        shape, frame_shape, dtype = filled_info
        out(f"  filled frame shape {frame_shape}, {dtype}: {shape[0]:,} frames, Dataset "
            f"variable img of dims ('time', 'y', 'x') and shape {shape}")
    catalog = Path(db.store.path) if hasattr(db.store, "path") else None
    if catalog is not None:
        sizes = f"catalog {_mb(sum(_size(p) for p in catalog.parent.glob(catalog.name + '*')))}"
        if folder is not None and (folder / "frames").exists():
            sizes += f", frames {_mb(_size(folder / 'frames'))}"
        out(f"  on disk: {sizes}")
    out("  timings:")
    for name, seconds, note in timings:
        value = f"{seconds * 1e3:8.1f} ms" if seconds < 0.1 else f"{seconds:8.2f} s "
        out(f"    {name:<20}{value}  {note}".rstrip())
