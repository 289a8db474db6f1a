"""The ``dask-broker`` command line.

Each subcommand lives in its own module of this package and registers itself
with :func:`build_parser` through a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import DaskBrokerError
from ..redact import mask_uri

__all__ = ["main", "build_parser"]

#: Modules that contribute subcommands (each has ``register(subparsers)``).
COMMAND_MODULES = ["dask_broker.cli.demo", "dask_broker.cli.ingest", "dask_broker.cli.ls",
                   "dask_broker.cli.export", "dask_broker.cli.bench", "dask_broker.cli.files"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-broker",
        description="Fast, parallel, lazy access to Bluesky experiment data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dask-broker`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DaskBrokerError, OSError) as err:
        # Our messages mask passwords already; this also masks any a library's message holds.
        print(f"dask-broker: error: {mask_uri(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dask-broker: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
