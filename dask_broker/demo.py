"""The main job: write a synthetic scan into an embedded catalog and read it back."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .broker import Broker
from .synthetic import scalar_scan_documents

__all__ = ["run_demo"]


def run_demo(folder: str | Path = "demo-catalog", num_events: int = 100_000,
             progress: bool = True, out=print) -> Broker:
    """Write a scan of ``num_events`` events into ``folder/catalog.db``, read it, summarize.

    Parameters
    ----------
    folder
        Where the catalog is written (emptied first).
    num_events
        Events in the primary stream.
    progress
        Show progress bars.
    out
        Where the summary lines go.

    Examples
    --------
    >>> db = run_demo("/tmp/demo", num_events=1000, progress=False, out=lambda *a: None)
    >>> len(db)
    1
    """
    folder = Path(folder).absolute()
    if folder.exists():
        shutil.rmtree(folder)
    uri = f"sqlite:///{folder / 'catalog.db'}"
    db = Broker.from_uri(uri)
    out(f"catalog: {uri}")

    t0 = time.perf_counter()
    bar = tqdm(total=num_events, unit="ev", desc="writing", disable=not progress)
    primary = None
    for name, doc in scalar_scan_documents(num_events):
        db.insert(name, doc)
        if name == "descriptor" and doc["name"] == "primary":
            primary = doc["uid"]
        elif name == "event_page" and doc["descriptor"] == primary:
            bar.update(len(doc["seq_num"]))
    bar.close()
    t_write = time.perf_counter() - t0

    h = db[-1]
    out(f"run {h.uid}  scan_id={h.start['scan_id']}  plan={h.start['plan_name']}  "
        f"exit_status={h.stop['exit_status']}")
    out(f"streams: {h.stream_names}")
    for stream in h.stream_names:
        out(f"  {stream}: fields {h.fields(stream)}")

    t0 = time.perf_counter()
    df = h.table("primary", chunk_size=max(1, num_events // 4))
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame = df.compute()
    t_read = time.perf_counter() - t0
    baseline = h.table("baseline").compute()
    counts = {s: len(h.table(s, fields=[]).compute()) for s in h.stream_names}
    out(f"event counts: {counts}")
    out(f"primary: a lazy dask DataFrame of {df.npartitions} partition(s), divisions "
        f"{df.divisions}")
    with pd.option_context("display.width", 120, "display.max_columns", 8):
        out("first rows of primary:")
        out(frame.head().to_string())
        out("baseline:")
        out(baseline.to_string())
    out(f"timings: write {t_write:.2f} s ({num_events / t_write:,.0f} events/s), "
        f"plan {t_plan * 1e3:.1f} ms, read {t_read:.2f} s ({num_events / t_read:,.0f} events/s)")
    return db
