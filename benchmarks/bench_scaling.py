"""Scaling: table throughput against scan size, and against the number of Dask workers.

The same 10 float + 1 int field scan at several sizes (``h.table().compute()``
vs ``pandas.read_parquet`` of the same data), then the largest one computed on a
LocalCluster of 1, 2, ... worker processes (each opens the catalog itself).
Writes ``results/scaling-<mode>.png``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from dask_broker import Broker, TimeStruct

from .bench_tables import write_scan
from .common import RESULTS, Result, measure

RAW = TimeStruct(convert_times=False)


def run(quick: bool = True):
    sizes = [10_000, 100_000, 300_000] if quick else [10_000, 100_000, 1_000_000, 3_000_000]
    workers = [1, 2] if quick else sorted({1, 2, os.cpu_count() or 2})
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
        folder = Path(tmp)
        for n in sizes:
            db = Broker.from_uri(f"sqlite:///{folder / f'scan-{n}.db'}")
            write_scan(db, n)
            h = db[-1]
            parquet = folder / f"scan-{n}.parquet"
            h.table(time_struct=RAW).compute().to_parquet(parquet)
            results.append(measure("vs size", "h.table().compute()", n,
                                   lambda: h.table(time_struct=RAW).compute()))
            results.append(measure("vs size", "pandas.read_parquet", n,
                                   lambda: pd.read_parquet(parquet)))
        import distributed

        n = sizes[-1]
        h = Broker.from_uri(f"sqlite:///{folder / f'scan-{n}.db'}")[-1]
        chunk = max(1, n // 8)
        for k in workers:
            with distributed.LocalCluster(n_workers=k, threads_per_worker=1, processes=True,
                                          dashboard_address=":0") as cluster, \
                    distributed.Client(cluster):
                results.append(measure("vs workers", f"{k} worker(s)", n,
                                       lambda: h.table(time_struct=RAW, chunk_size=chunk).compute()))
                results.append(measure("vs workers (reduce)", f"{k} worker(s)", n,
                                       lambda: h.table(time_struct=RAW, chunk_size=chunk)
                                       .sum().compute()))
    notes = [_plot(results, "quick" if quick else "full")]
    return results, {}, notes


def _plot(results: list[Result], mode: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot written"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in ("h.table().compute()", "pandas.read_parquet"):
        rows = [r for r in results if r.scenario == "vs size" and r.method == method]
        left.plot([r.size for r in rows], [r.throughput for r in rows], "o-", label=method)
    left.set(xscale="log", yscale="log", xlabel="events in the scan", ylabel="events / s",
             title="Table throughput vs scan size")
    left.legend()
    for scenario in ("vs workers", "vs workers (reduce)"):
        rows = [r for r in results if r.scenario == scenario]
        right.plot([int(r.method.split()[0]) for r in rows], [r.throughput for r in rows], "o-",
                   label="compute to client" if scenario == "vs workers" else "sum on workers")
    right.set_xticks(sorted({int(r.method.split()[0]) for r in results
                             if r.scenario == "vs workers"}))
    right.set(xlabel="worker processes", ylabel="events / s",
              title=f"LocalCluster, {os.cpu_count()} cores")
    right.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scaling-{mode}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot written to {path}"
