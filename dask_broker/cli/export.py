"""``dask-broker export CATALOG RUN OUT``: write a stream's table to one Parquet or CSV file.

The work is :func:`dask_broker.export_table`; the run is looked up as ``db[RUN]``
does (:mod:`dask_broker.run_keys`); this module parses, calls and prints.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from ..config import open_catalog
    from ..export import check_out, export_table, format_of

    fmt = format_of(args.out, args.format)
    check_out(args.out, overwrite=args.overwrite)  # before the catalog is opened
    db = open_catalog(args.catalog, read_only=True)
    h = db[args.run]
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    plan = h.event_source.plan(h, args.stream, fields=fields, timestamps=args.timestamps)
    rows = export_table(plan, args.out, fmt, overwrite=args.overwrite,
                        progress=not args.no_progress)
    print(f"wrote {rows} row(s) x {len(plan.columns)} column(s) of stream {args.stream!r} of run "
          f"{h.uid[:8]} (scan_id {h.start.get('scan_id', '-')}) to {args.out} ({fmt})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="write a stream of a run to one Parquet or CSV file",
                       description="Write the table of a stream of one run (indexed by seq_num, "
                                   "a 'time' column and the fields) to one Parquet or CSV file.")
    p.add_argument("catalog", metavar="CATALOG",
                   help="catalog URI (sqlite:///..., mongodb://...), named catalog, or path of "
                        "a .db file")
    p.add_argument("run", metavar="RUN",
                   help="uid or unique uid prefix, scan_id, or -1 for the latest run")
    p.add_argument("out", metavar="OUT", help="the file to write (.parquet or .csv)")
    p.add_argument("--stream", default="primary", help="the stream (default: primary)")
    p.add_argument("--format", choices=["parquet", "csv"],
                   help="file format (default: from the suffix of OUT)")
    p.add_argument("--fields", metavar="F1,F2", help="only these fields (comma-separated)")
    p.add_argument("--timestamps", action="store_true", help="add a ts_<field> column per field")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)
