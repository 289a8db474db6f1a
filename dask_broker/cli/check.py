"""``dask-broker check CATALOG``: is the catalog file damaged, and which runs can be read?

Runs SQLite's integrity check, then reads every run's documents and event pages
(see :mod:`dask_broker.stores.sqlite.check`), printing one line per run.  Exit
status 1 when anything is damaged.  The catalog is opened read-only.
"""

from __future__ import annotations

import argparse

from ..errors import CatalogCorruptError, InvalidArgumentError

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from ..config import open_catalog
    from ..stores.sqlite import SQLiteStore
    from ..stores.sqlite.check import check_catalog

    try:
        db = open_catalog(args.catalog, read_only=True)
    except CatalogCorruptError as err:
        raise CatalogCorruptError(
            f"the catalog {err.path} cannot be opened: it is damaged ({err.detail}); SQLite "
            f"recovers what is left with `sqlite3 {err.path} \".recover\" | sqlite3 "
            "recovered.db`") from err
    if not isinstance(db.store, SQLiteStore):
        raise InvalidArgumentError(f"check reads SQLite catalogs; {args.catalog!r} is a "
                                   f"{type(db.store).__name__}")

    def show(run) -> None:
        state = "ok" if run.ok else "DAMAGED"
        line = f"{state:8} {run.uid[:8]}  scan_id {run.scan_id if run.scan_id is not None else '-'}"
        line += f"  {run.events} event(s) read"
        print(line + "".join(f"\n         {p}" for p in run.problems[:args.max_problems]))

    print(f"checking {db.store.path}")
    report = check_catalog(db.store, progress=show)
    if report.integrity == ("ok",):
        print("integrity check: ok")
    else:
        print(f"integrity check: {len(report.integrity)} problem(s)")
        for line in report.integrity[:args.max_problems]:
            print(f"  {line}")
    if report.listing:
        print(f"listing runs: {report.listing}")
    damaged = sum(1 for r in report.runs if not r.ok)
    print(f"{len(report.runs) - damaged} run(s) readable, {damaged} damaged")
    if report.ok:
        return 0
    print(f"the catalog is damaged: SQLite recovers what it can read with "
          f"`sqlite3 {report.path} \".recover\" | sqlite3 recovered.db`")
    return 1


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="check a SQLite catalog file for damage, run by run",
        description="Run SQLite's integrity check on CATALOG, then read every run's documents "
                    "and event pages, and print what can be read. Exit status 1 if anything "
                    "is damaged. The catalog is opened read-only.")
    p.add_argument("catalog", metavar="CATALOG",
                   help="catalog URI (sqlite:///...), named catalog, or path of a .db file")
    p.add_argument("--max-problems", type=int, default=5, metavar="N",
                   help="print at most N problems per run and of the integrity check "
                        "(default 5)")
    p.set_defaults(func=_run)
