"""Scalar tables from the embedded store, against Parquet and a dict-per-event baseline.

Scenarios
- ``table N``: scans of 10k, 100k (and, full mode, 1M) events (10 float + 1 int
  fields): ``h.table().compute()`` vs ``pandas.read_parquet`` of the same data
  (pyarrow), and a databroker-style path that builds the DataFrame from one dict
  per event (on the smallest scan).
- ``partition``: the fixed cost of reading one partition -- an empty one (a seq_num
  range without events) and one of a single event -- through the plan's reader.
- ``table_chunks``: streaming a long run chunk by chunk in a child process, with
  its peak RSS against the interpreter's baseline and the size of one chunk.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from dask_broker import Broker, TimeStruct
from dask_broker.synthetic import scalar_scan_documents

from .common import Result, measure

RAW = TimeStruct(convert_times=False)


def write_scan(db: Broker, num_events: int) -> str:
    for name, doc in scalar_scan_documents(num_events, baseline=False, page_size=50_000):
        db.insert(name, doc)
    return db[-1].uid


def dict_per_event(h) -> pd.DataFrame:
    """What databroker v0/v1 did: one Python dict per event, then a DataFrame."""
    rows, index, times = [], [], []
    for name, doc in h.docs(stream_name="primary"):
        if name == "event":
            rows.append(doc["data"])
            index.append(doc["seq_num"])
            times.append(doc["time"])
    df = pd.DataFrame(rows, index=pd.Index(index, name="seq_num"))
    df.insert(0, "time", times)
    return df


def bench_table(folder: Path, num_events: int, repeat: int, *,
                variants: bool = True) -> list[Result]:
    db = Broker.from_uri(f"sqlite:///{folder / f'tables-{num_events}.db'}")
    t0 = time.perf_counter()
    write_scan(db, num_events)
    write_s = time.perf_counter() - t0
    h = db[-1]
    results = [Result(f"insert {num_events:,}", "db.insert pages", num_events, write_s,
                      [write_s])]
    frame = h.table(time_struct=RAW).compute()
    parquet = folder / f"scan-{num_events}.parquet"
    frame.to_parquet(parquet, engine="pyarrow")
    scenario = f"table {num_events:,}"
    results.append(measure(scenario, "pandas.read_parquet", num_events,
                           lambda: pd.read_parquet(parquet, engine="pyarrow"), repeat=repeat))
    results.append(measure(scenario, "h.table().compute() threads", num_events,
                           lambda: h.table(time_struct=RAW).compute(scheduler="threads"),
                           repeat=repeat))
    if variants:
        results.append(measure(scenario, "h.table().compute() sync", num_events,
                               lambda: h.table(time_struct=RAW).compute(scheduler="sync"),
                               repeat=repeat))
        results.append(measure(scenario, "h.table(datetimes).compute()", num_events,
                               lambda: h.table().compute(), repeat=repeat))
        results.append(measure(scenario, "table_chunks concat (no dask)", num_events,
                               lambda: pd.concat(list(h.table_chunks(time_struct=RAW))),
                               repeat=repeat))
    return results


def bench_dict_per_event(folder: Path, num_events: int, repeat: int) -> list[Result]:
    """The databroker-style path (one dict per event), against h.table() on the same run."""
    db = Broker.from_uri(f"sqlite:///{folder / 'small.db'}")
    write_scan(db, num_events)
    h = db[-1]
    scenario = f"dict per event {num_events:,}"
    return [measure(scenario, "h.table().compute() threads", num_events,
                    lambda: h.table(time_struct=RAW).compute(), repeat=repeat),
            measure(scenario, "dict per event (databroker-style)", num_events,
                    lambda: dict_per_event(h), repeat=1, warmup=0)]


def bench_partition_cost(folder: Path, repeat: int) -> list[Result]:
    """Fixed cost of one partition read: empty (no event in its range) and one event."""
    from dask_broker.read import PartitionSpec

    db = Broker.from_uri(f"sqlite:///{folder / 'partition.db'}")
    write_scan(db, 10_000)
    h = db[-1]
    plan = h.event_source.plan(h, time_struct=RAW)
    reader = plan.reader()
    spec = plan.specs[0]
    empty = PartitionSpec(spec.store, spec.descriptors, (10**9, 10**9 + 1000), spec.state, 0)
    one = PartitionSpec(spec.store, spec.descriptors, (5000, 5001), spec.state, 1)
    reader(empty), reader(one)
    calls = 200

    def many(s):
        return lambda: [reader(s) for _ in range(calls)]

    return [measure("partition (x200)", "empty partition read", calls, many(empty),
                    repeat=repeat, unit="partitions"),
            measure("partition (x200)", "one-event partition read", calls, many(one),
                    repeat=repeat, unit="partitions")]


_CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd
from dask_broker import Broker, TimeStruct
from benchmarks.common import current_rss_mb, peak_rss_mb, reset_peak_rss
uri, chunk_size = sys.argv[1], (int(sys.argv[2]) or None)
db = Broker.from_uri(uri)
h = db[-1]
chunks = h.table_chunks(time_struct=TimeStruct(convert_times=False), chunk_size=chunk_size)
cold = current_rss_mb()
# The interpreter with pandas set up: its first DataFrame imports and caches what
# every later one uses (a few MB, once), which is not memory of the stream.
pd.DataFrame({"x": np.zeros(1)}, index=pd.Index(np.zeros(1, dtype="i8"), name="seq_num"))
base = current_rss_mb()
# ... and with dask_broker's read path set up too (modules, the catalog connection):
# the one-event run written before the long one, read first.
for _ in db[-2].table_chunks(time_struct=TimeStruct(convert_times=False)):
    pass
warm = current_rss_mb()
reset_peak_rss()
n = 0; chunk_mb = 0.0; total = 0.0
t0 = time.perf_counter()
for df in chunks:
    n += len(df)
    chunk_mb = max(chunk_mb, df.memory_usage(deep=True).sum() / 2**20)
    total += float(df["det0"].sum())
elapsed = time.perf_counter() - t0
print(json.dumps({"events": n, "seconds": elapsed, "baseline_mb": base, "warm_baseline_mb": warm,
                  "cold_baseline_mb": cold, "peak_mb": peak_rss_mb(), "chunk_mb": chunk_mb}))
"""


def bench_stream(folder: Path, num_events: int, chunk_size: int | None) -> list[Result]:
    """Stream a long run with table_chunks in a child process; record its peak RSS."""
    db = Broker.from_uri(f"sqlite:///{folder / 'stream.db'}")
    write_scan(db, 1)  # read first, to set the read path up
    write_scan(db, num_events)
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _CHILD, db.uri, str(chunk_size or 0)],
                         capture_output=True, text=True, check=True, cwd=root)
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["events"] == num_events, stats
    limit = stats["baseline_mb"] + 2 * stats["chunk_mb"]
    label = f"chunk_size={chunk_size:,}" if chunk_size else "default chunk_size"
    r = Result(f"table_chunks {num_events:,}", label, num_events,
               stats["seconds"], [stats["seconds"]], peak_rss_mb=stats["peak_mb"],
               extra={**stats, "target_mb": limit, "within_target": stats["peak_mb"] <= limit})
    return [r]


def run(quick: bool = True) -> tuple[list[Result], dict[str, str], list[str]]:
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    stream = 1_000_000 if quick else 10_000_000
    repeat = 3 if quick else 5
    targets = {10_000: 1.5, 100_000: 1.2, 1_000_000: 1.0}
    notes = []
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
        folder = Path(tmp)
        for n in sizes:
            results += bench_table(folder, n, repeat, variants=n == sizes[-1])
        results += bench_dict_per_event(folder, 20_000, repeat)
        results += bench_partition_cost(folder, repeat)
        results += bench_stream(folder, stream, chunk_size=None)
    by = {(r.scenario, r.method): r for r in results}
    for n in sizes:
        base = by[(f"table {n:,}", "pandas.read_parquet")]
        ours = by[(f"table {n:,}", "h.table().compute() threads")]
        ratio = ours.median_s / base.median_s
        notes.append(f"table {n:,}: h.table().compute() {ratio:.2f}x the time of read_parquet "
                     f"(target <= {targets[n]}x: {'met' if ratio <= targets[n] else 'NOT met'})")
    for method in ("empty partition read", "one-event partition read"):
        r = by[("partition (x200)", method)]
        ms = r.median_s / r.size * 1e3
        notes.append(f"{method}: {ms:.2f} ms per partition (target <= 1 ms: "
                     f"{'met' if ms <= 1 else 'NOT met'})")
    s = results[-1].extra
    notes.append(f"table_chunks peak RSS {s['peak_mb']:.0f} MB vs target "
                 f"{s['target_mb']:.0f} MB (interpreter {s['baseline_mb']:.0f} MB + 2 chunks of "
                 f"{s['chunk_mb']:.1f} MB): {'met' if s['within_target'] else 'NOT met'}; "
                 f"{(s['peak_mb'] - s['baseline_mb']) / s['chunk_mb']:.3f} chunks over the "
                 f"interpreter ({(s['peak_mb'] - s['cold_baseline_mb']) / s['chunk_mb']:.3f} "
                 "counting pandas' one-time set-up, "
                 f"{(s['peak_mb'] - s['warm_baseline_mb']) / s['chunk_mb']:.3f} over the "
                 "interpreter with dask_broker's read path set up)")
    baselines = {f"table {n:,}": "pandas.read_parquet" for n in sizes}
    baselines["dict per event 20,000"] = "h.table().compute() threads"
    baselines["partition (x200)"] = "empty partition read"
    return results, baselines, notes
