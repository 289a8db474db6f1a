"""The ``dask-broker`` command line.

Each subcommand lives in its own module of this package and registers itself
with :func:`build_parser` through a ``register(subparsers)`` function.

No error prints a traceback: :func:`main` prints one line, ``dask-broker:
error: ...``, and returns 1 (``dask-broker --debug COMMAND ...`` prints the
traceback too).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from ..errors import DaskBrokerError
from ..redact import mask_uri

__all__ = ["main", "build_parser"]

#: Modules that contribute subcommands (each has ``register(subparsers)``).
COMMAND_MODULES = ["dask_broker.cli.demo", "dask_broker.cli.ingest", "dask_broker.cli.ls",
                   "dask_broker.cli.export", "dask_broker.cli.bench", "dask_broker.cli.files",
                   "dask_broker.cli.check", "dask_broker.cli.copy"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-broker",
        description="Fast, parallel, lazy access to Bluesky experiment data.")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the traceback too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dask-broker`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dask-broker: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- whatever it is, one line (a bug too)
        if args.debug:
            traceback.print_exception(err)
        if isinstance(err, (DaskBrokerError, OSError)):
            message = str(err)
        else:
            message = (f"{type(err).__name__}: {err} (unexpected; `dask-broker --debug ...` "
                       "prints the traceback)")
        # Our messages mask passwords already; this also masks any a library's message holds.
        print(f"dask-broker: error: {' '.join(mask_uri(message).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
