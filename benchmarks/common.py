"""Timing, memory and reporting helpers shared by the benchmark scenarios."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    scenario: str
    method: str
    size: int  # events (or frames)
    median_s: float
    runs: list[float]
    unit: str = "events"
    peak_rss_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.size / self.median_s if self.median_s else float("inf")


def timeit(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def measure(scenario: str, method: str, size: int, fn: Callable[[], object], *,
            repeat: int = 3, warmup: int = 1, unit: str = "events", **extra) -> Result:
    """Median wall time of ``fn``, and this process's peak RSS while it ran.

    The peak is the kernel's high-water mark, reset before the first call: it
    includes what the process already held (the interpreter, earlier data), which
    ``extra["base_rss_mb"]`` records (the RSS when the mark was reset).
    """
    import gc

    gc.collect()
    reset_peak_rss()
    base_rss = current_rss_mb()
    load_before = os.getloadavg()[0]
    runs = timeit(fn, repeat=repeat, warmup=warmup)
    # The 1-minute load average before and after: a busy machine skews every ratio.
    extra = {**extra, "load": (round(load_before, 2), round(os.getloadavg()[0], 2)),
             "base_rss_mb": round(base_rss, 1)}
    return Result(scenario, method, size, statistics.median(runs), runs, unit,
                  peak_rss_mb=peak_rss_mb(), extra=extra)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (Linux VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def report(results: list[Result], baselines: dict[str, str], title: str) -> str:
    """A text table with ratios of each method to each scenario's baseline method."""
    lines = [f"\n## {title}", ""]
    header = (f"{'scenario':<28}{'method':<46}{'size':>11}{'median s':>10}{'per s':>13}"
              f"{'peak MB':>9}{'load':>11}  ratio")
    lines += [header, "-" * len(header)]
    by_scenario: dict[str, list[Result]] = {}
    for r in results:
        by_scenario.setdefault(r.scenario, []).append(r)
    for scenario, rows in by_scenario.items():
        base = next((r for r in rows if r.method == baselines.get(scenario)), None)
        for r in rows:
            ratio = ""
            if base is not None:  # per item, so runs of different sizes compare fairly
                ratio = (f"{base.throughput / r.throughput:5.2f}x time per "
                         f"{r.unit.rstrip('s')} of {base.method}")
            peak = f"{r.peak_rss_mb:9.0f}" if r.peak_rss_mb is not None else f"{'':9}"
            load = r.extra.get("load")
            load = f"{load[0]:5.1f}>{load[1]:<4.1f}" if load else ""
            lines.append(f"{scenario:<28}{r.method:<46}{r.size:>11,}{r.median_s:>10.3f}"
                         f"{r.throughput:>13,.0f}{peak}{load:>11}  {ratio}")
    cpus = os.cpu_count() or 1
    if any(r.extra.get("load", (0, 0))[0] > 0.5 * cpus for r in results):
        lines.append(f"  WARNING: the 1-minute load average exceeded {0.5 * cpus:.1f} "
                     f"({cpus} CPUs) during some measurements; their ratios are unreliable")
    return "\n".join(lines)


def save(results: list[Result], name: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": [{**asdict(r), "throughput": r.throughput} for r in results],
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    csv = RESULTS / f"{name}.csv"
    keys = ["scenario", "method", "size", "unit", "median_s", "throughput", "peak_rss_mb"]
    rows = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in payload["results"]]
    csv.write_text("\n".join(rows) + "\n")
    return path
