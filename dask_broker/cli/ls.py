"""``dask-broker ls CATALOG``: list runs, newest first."""

from __future__ import annotations

import argparse
import itertools
import json
import time

from ..errors import InvalidArgumentError

__all__ = ["run_rows", "format_rows", "register"]

COLUMNS = ("uid", "scan_id", "plan_name", "start time", "events", "exit_status")


def _events(db, header) -> str:
    descriptors = header.descriptors
    counts = db.store.event_counts([d["uid"] for d in descriptors])
    per_stream: dict[str, int] = {}
    for d in descriptors:
        name = d.get("name", "primary")
        per_stream[name] = per_stream.get(name, 0) + counts.get(d["uid"], (0,))[0]
    return " ".join(f"{k}={v}" for k, v in per_stream.items()) or "-"


def run_rows(db, query: dict | None = None, limit: int | None = None,
             text: str | None = None) -> tuple[list[dict], bool]:
    """One row per run (newest first), and whether more runs match than ``limit``
    (``text``: a full-text search too)."""
    # checks the query (and text) before reading a run
    starts = db.store.search(query) if text is None else db.store.search(query, text=text)
    if limit:
        starts = itertools.islice(starts, limit + 1)
    starts = list(starts)
    more = bool(limit) and len(starts) > limit
    rows = []
    for start in starts[:limit or None]:
        h = db._header(start)
        stop = h.stop
        t = start.get("time")
        rows.append({
            "uid": start["uid"][:8],
            "scan_id": str(start.get("scan_id", "-")),
            "plan_name": str(start.get("plan_name", "-")),
            "start time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-",
            "events": _events(db, h),
            "exit_status": stop.get("exit_status", "-") if stop else "(running)",
        })
    return rows, more


def format_rows(rows: list[dict]) -> str:
    """An aligned text table."""
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from ..config import open_catalog

    query = None
    if args.query:
        try:
            query = json.loads(args.query)
        except json.JSONDecodeError as err:
            raise InvalidArgumentError(f"--query is not JSON ({err}): write e.g. "
                                       "'{\"plan_name\": \"scan\"}'") from err
        except RecursionError:
            raise InvalidArgumentError("--query is nested too deeply to read") from None
        if not isinstance(query, dict):
            raise InvalidArgumentError("--query must be a JSON object, e.g. "
                                       "'{\"scan_id\": {\"$gte\": 10}}'")
    if args.limit < 0:
        raise InvalidArgumentError("--limit must be >= 0 (0 lists every run)")
    db = open_catalog(args.catalog, read_only=True)
    rows, more = run_rows(db, query, args.limit, args.text)
    if not rows:
        print("no runs" + (" match the query" if query or args.text else " in the catalog"))
        return 0
    print(format_rows(rows))
    if more:
        print(f"... more runs; showing the newest {args.limit} (--limit 0 lists all)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("ls", help="list runs, newest first",
                       description="List the runs of CATALOG, newest first: uid (first 8 "
                                   "characters), scan_id, plan_name, start time, events per "
                                   "stream, exit status.")
    p.add_argument("catalog", metavar="CATALOG",
                   help="catalog URI (sqlite:///..., mongodb://...), named catalog, or path of "
                        "a .db file")
    p.add_argument("--query", metavar="JSON",
                   help="Mongo-style query on start documents, e.g. "
                        "'{\"plan_name\": \"scan\", \"scan_id\": {\"$gte\": 10}}'")
    p.add_argument("--text", metavar="WORDS",
                   help="full-text search: runs whose start document holds every word, "
                        "e.g. 'silicon wafer' (AND-ed with --query)")
    p.add_argument("--limit", type=int, default=50, metavar="N",
                   help="list at most N runs (default 50; 0 for all)")
    p.set_defaults(func=_run)
