"""``dask-broker demo``: the main job."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.folder, num_events=args.events, progress=not args.no_progress)
    return 0


def register(sub) -> None:
    demo = sub.add_parser("demo", help="write a synthetic scan into an embedded catalog and read it back",
                          description="Write a synthetic scan into an embedded catalog in FOLDER, "
                                      "read it back and print a summary with timings.")
    demo.add_argument("--folder", default="demo-catalog",
                      help="folder for the catalog (emptied first; default: ./demo-catalog)")
    demo.add_argument("--events", type=int, default=100_000, help="events in the primary stream")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_run)
