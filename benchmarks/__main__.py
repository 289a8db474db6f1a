"""Run the benchmarks: ``python -m benchmarks [--full] [--only tables,...]``."""

from __future__ import annotations

import argparse
import importlib
import time

from .common import report, save

SCENARIOS = {
    "insert": "benchmarks.bench_insert",
    "ingest": "benchmarks.bench_ingest",
    "tables": "benchmarks.bench_tables",
    "filling": "benchmarks.bench_filling",
    "stream": "benchmarks.bench_stream",
    "scaling": "benchmarks.bench_scaling",
    "mongo": "benchmarks.bench_mongo",
    "postgres": "benchmarks.bench_postgres",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true",
                        help="the large scans of the issues (1M-event tables, 10M-event streaming)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    for name in args.only.split(","):
        module = importlib.import_module(SCENARIOS[name])
        t0 = time.perf_counter()
        results, baselines, notes = module.run(quick=not args.full)
        print(report(results, baselines, f"{name} ({mode} mode, {time.perf_counter() - t0:.0f} s)"))
        for note in notes:
            print(f"  * {note}")
        path = save(results, f"{name}-{mode}")
        print(f"  saved {path} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
