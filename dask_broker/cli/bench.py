"""``dask-broker bench [ARGS...]``: run ``python -m benchmarks ARGS...`` from a source checkout.

The benchmarks are not installed with the package: they live in the
``benchmarks/`` folder of the repository, so this command works from the
repository's root folder (where ``python -m benchmarks`` works too).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.machinery import PathFinder

from ..errors import DaskBrokerError

__all__ = ["BenchmarksNotFoundError", "register"]


class BenchmarksNotFoundError(DaskBrokerError, ModuleNotFoundError):
    """No ``benchmarks`` package in the current folder."""


def _run(args: argparse.Namespace) -> int:
    cwd = os.getcwd()
    spec = PathFinder.find_spec("benchmarks", [cwd])
    if spec is None or not spec.submodule_search_locations or \
            PathFinder.find_spec("__main__", list(spec.submodule_search_locations)) is None:
        raise BenchmarksNotFoundError(
            f"no benchmarks package in {cwd}: run `dask-broker bench` from the root of a "
            "dask_broker source checkout (the folder holding benchmarks/), or there run "
            "`python3 tasks.py bench`")
    forwarded = list(args.args)
    if forwarded[:1] == ["--"]:
        forwarded = forwarded[1:]
    return subprocess.run([sys.executable, "-m", "benchmarks", *forwarded], cwd=cwd).returncode


class _ForwardingParser(argparse.ArgumentParser):
    """Takes every argument as is (options included) for ``python -m benchmarks``."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if args[:1] in (["-h"], ["--help"]):
            self.print_help()
            self.exit()
        namespace = argparse.Namespace() if namespace is None else namespace
        namespace.args = args
        namespace.func = _run
        return namespace, []


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="run the benchmarks (python -m benchmarks) of a source checkout",
        description="Run `python -m benchmarks ARGS...` from the current folder, which must be "
                    "the root of a dask_broker source checkout. Arguments are forwarded, e.g. "
                    "`dask-broker bench --only tables`; `dask-broker bench -- --help` shows the "
                    "benchmarks' own options.")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for python -m benchmarks (e.g. --full, --only tables)")
    p.set_defaults(func=_run)
    p.__class__ = _ForwardingParser  # argparse.REMAINDER stops at a leading option
