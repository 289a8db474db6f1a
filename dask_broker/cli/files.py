"""``dask-broker files list|copy|move CATALOG TARGET [NEW_ROOT]``: the files of resources
and stream_resources.

TARGET is a resource or stream_resource uid, or a run as ``db[TARGET]`` names it
(:func:`dask_broker.run_keys.run_or_asset`): its uid, a unique uid prefix, a
scan_id, or ``-N`` (``-1`` is the latest run).  ``copy`` and ``move`` keep each
file's path relative to its document's root under NEW_ROOT and point the
documents there; see :mod:`dask_broker.files`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _open(catalog: str, *, read_only: bool):
    from ..config import open_catalog

    return open_catalog(catalog, create=False, read_only=read_only)


def _run(args: argparse.Namespace) -> int:
    from ..files import copy_files, file_list, move_files
    from ..run_keys import run_or_asset

    db = _open(args.catalog, read_only=args.action == "list")
    target = run_or_asset(db, args.target)
    if args.action == "list":
        for path in file_list(db, target):
            print(path)
        return 0
    options = {} if args.action == "copy" else {"remove_empty_dirs": not args.keep_empty_dirs}
    function = copy_files if args.action == "copy" else move_files
    report = function(db, target, args.new_root, verify=not args.no_verify,
                      dry_run=args.dry_run, progress=False if args.no_progress else None,
                      **options)
    print(report)
    return 0


def register(sub) -> None:
    files = sub.add_parser(
        "files", help="list, copy or move the files of a run's resources and stream_resources",
        description="List the files a run's (or one resource's) external data lives in, or "
                    "copy/move them under a new root and point the catalog there. Copies are "
                    "verified before the catalog changes and old files are deleted only after, "
                    "and only when no resource of any run still points at them; an interrupted "
                    "copy/move is finished by running it again.")
    actions = files.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "print the files, one per line"),
                         ("copy", "copy the files under NEW_ROOT and point the catalog there"),
                         ("move", "move the files under NEW_ROOT and point the catalog there")):
        p = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("catalog", metavar="CATALOG_URI",
                       help="catalog URI (sqlite:///..., mongodb://...), named catalog, or "
                            "path of a .db file")
        p.add_argument("target", metavar="TARGET",
                       help="a run (uid, unique uid prefix, scan_id, or -1 for the latest run) "
                            "or a resource or stream_resource uid")
        if action != "list":
            p.add_argument("new_root", metavar="NEW_ROOT", help="the folder the files go under")
            p.add_argument("--dry-run", action="store_true",
                           help="only report what would be done; touch nothing")
            p.add_argument("--no-verify", action="store_true",
                           help="compare only sizes, not checksums, of fresh copies")
            p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        if action == "move":
            p.add_argument("--keep-empty-dirs", action="store_true",
                           help="keep the source folders the move leaves empty")
        p.set_defaults(func=_run, action=action)
