"""``dask-broker copy SRC DST``: copy runs between catalogs (see :mod:`dask_broker.copy`)."""

from __future__ import annotations

import argparse
import json

from ..errors import InvalidArgumentError

__all__ = ["register"]


def _query(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        query = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise InvalidArgumentError(f"--query is not JSON ({err}): write e.g. "
                                   "'{\"plan_name\": \"scan\"}'") from None
    if not isinstance(query, dict):
        raise InvalidArgumentError("--query must be a JSON object, e.g. "
                                   "'{\"scan_id\": {\"$gte\": 10}}'")
    return query


def _run(args: argparse.Namespace) -> int:
    from ..copy import copy_runs

    report = copy_runs(args.src, args.dst, _query(args.query), since=args.since,
                       until=args.until, progress=False if args.no_progress else None)
    print(report)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "copy", help="copy runs from one catalog to another (any kinds)",
        description="Copy the runs of SRC (those matching --query/--since/--until; all by "
                    "default) into DST: every document as it is, verified (counts and a "
                    "checksum per run). Runs already in DST are skipped, so an interrupted "
                    "copy is finished by running it again. External files are not touched.")
    p.add_argument("src", metavar="SRC",
                   help="catalog to copy from (sqlite:///..., mongodb://..., postgresql://..., "
                        "a named catalog or a .db file); opened read-only")
    p.add_argument("dst", metavar="DST", help="catalog to copy into (created if needed)")
    p.add_argument("--query", metavar="JSON",
                   help="Mongo-style query on start documents, e.g. '{\"proposal\": \"123\"}'")
    p.add_argument("--since", metavar="DATE", help="runs started at or after DATE")
    p.add_argument("--until", metavar="DATE", help="runs started before DATE")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
