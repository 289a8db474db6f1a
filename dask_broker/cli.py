"""The ``dask-broker`` command line."""

from __future__ import annotations

import argparse
import sys

from .errors import DaskBrokerError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.folder, num_events=args.events, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-broker",
        description="Fast, parallel, lazy access to Bluesky experiment data.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write a synthetic scan into an embedded catalog and read it back")
    demo.add_argument("--folder", default="demo-catalog",
                      help="folder for the catalog (emptied first; default: ./demo-catalog)")
    demo.add_argument("--events", type=int, default=100_000, help="events in the primary stream")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dask-broker`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DaskBrokerError as err:
        print(f"dask-broker: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
