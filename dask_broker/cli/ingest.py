"""``dask-broker ingest CATALOG FILES...``: insert documents saved by suitcase (msgpack, jsonl).

The work is :func:`dask_broker.ingest`; this module parses, calls and prints.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from ..config import open_catalog
    from ..ingest import find_files, ingest

    files = find_files(args.files)  # fail on a bad file before creating a catalog
    db = open_catalog(args.catalog, create=True)
    print(ingest(db, files, progress=not args.no_progress, skip_existing=args.skip_existing))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "ingest", help="insert documents saved by suitcase-msgpack (.msgpack) or suitcase-jsonl "
                       "(.jsonl)",
        description="Insert the documents of suitcase-msgpack (.msgpack) or suitcase-jsonl "
                    "(.jsonl) files -- as databroker v1 temporary and file-based catalogs save "
                    "them -- into CATALOG (created if it does not exist).")
    p.add_argument("catalog", metavar="CATALOG",
                   help="catalog URI (sqlite:///..., mongodb://...), named catalog, or path of "
                        "a .db file")
    p.add_argument("files", nargs="+", metavar="FILES",
                   help=".msgpack / .jsonl files, or folders holding them")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip runs already in the catalog instead of failing")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)
