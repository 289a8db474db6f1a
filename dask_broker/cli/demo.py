"""``dask-broker demo``: the main job."""

from __future__ import annotations

import argparse

from ..errors import InvalidArgumentError


def _shape(text: str) -> tuple[int, int]:
    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame shape like 128x128")
    return parts


def _run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    for name in ("events", "frames", "frames_per_file", "workers"):
        if getattr(args, name) < (1 if name == "frames_per_file" else 0):
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= "
                                       f"{1 if name == 'frames_per_file' else 0}")
    run_demo(args.folder, num_events=args.events, progress=not args.no_progress,
             num_frames=args.frames, frame_shape=args.frame_shape,
             frames_per_file=args.frames_per_file, n_workers=args.workers,
             dashboard=args.dashboard)
    return 0


def register(sub) -> None:
    demo = sub.add_parser(
        "demo", help="write a synthetic scan into an embedded catalog and read it back",
        description="Write a synthetic scan -- 100,000 events of scalars, a baseline and "
                    "2,000 detector frames in AD_HDF5 files -- into an embedded catalog in "
                    "FOLDER; read the scalars as a lazy dask DataFrame, fill the frames on a "
                    "LocalCluster, build the xarray Dataset, and print a summary with timings.")
    demo.add_argument("--folder", default="demo-catalog",
                      help="folder for the catalog and frames (emptied first; "
                           "default: ./demo-catalog)")
    demo.add_argument("--events", type=int, default=100_000,
                      help="events in the primary stream (default 100000)")
    demo.add_argument("--frames", type=int, default=2_000,
                      help="detector frames (default 2000; 0 for none)")
    demo.add_argument("--frame-shape", type=_shape, default=(128, 128), metavar="YxX",
                      help="shape of a frame (default 128x128)")
    demo.add_argument("--frames-per-file", type=int, default=200,
                      help="frames per AD_HDF5 file (default 200)")
    demo.add_argument("--workers", type=int, default=2,
                      help="worker processes of the LocalCluster (default 2; 0: no cluster, "
                           "threads in this process)")
    demo.add_argument("--dashboard", action="store_true",
                      help="serve the dask dashboard (needs bokeh) and print its link")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_run)
