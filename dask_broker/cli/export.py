"""``dask-broker export CATALOG RUN OUT``: write a stream's table to one Parquet or CSV file."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ..errors import InvalidArgumentError, RunNotFoundError

__all__ = ["get_run", "export_table", "register"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def get_run(db, key: str):
    """A run by uid (or unique prefix), ``-N`` (recency) or scan_id.

    A number is tried as a scan_id first, then as a uid prefix.
    """
    if re.fullmatch(r"-\d+", key):
        return db[int(key)]
    if re.fullmatch(r"\d+", key) and int(key) > 0:
        try:
            return db[int(key)]
        except RunNotFoundError:
            pass
    return db[key]


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield range(i, min(n, i + size))


def export_table(table, out: str | os.PathLike, fmt: str, *, progress: bool = True) -> int:
    """Write a stream's table to the single file ``out``, partition by partition.

    ``table`` is a :class:`~dask_broker.read.ReadPlan` (its partitions are read by
    the plan's partition reader, a few at a time on threads) or a lazy Dask
    DataFrame.  Memory holds a few partitions at a time; returns the number of
    rows written.  The file appears complete or not at all.
    """
    from tqdm.auto import tqdm

    from ..read.plan import ReadPlan

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    rows = 0
    writer = None
    if isinstance(table, ReadPlan):
        read_batch, nparts, meta = _plan_batches(table), table.npartitions, table.meta()
        if not table.has_rows:
            nparts = 0
    else:
        read_batch, nparts, meta = _dask_batches(table), table.npartitions, table._meta
    try:
        with tqdm(total=nparts, unit="chunk", desc=f"exporting {out.name}",
                  disable=not progress) as bar:
            first = True
            for batch in _batches(nparts, max(1, os.cpu_count() or 1)):
                parts = read_batch(batch)
                for part in parts:
                    writer = _write(part, partial, fmt, writer, first)
                    first = False
                    rows += len(part)
                    bar.update(1)
            if first:  # no partition: write the empty table
                writer = _write(meta, partial, fmt, writer, True)
        if writer is not None:
            writer.close()
            writer = None
        os.replace(partial, out)
    finally:
        if writer is not None:
            writer.close()
        if partial.exists():
            partial.unlink()
    return rows


def _plan_batches(plan):
    from concurrent.futures import ThreadPoolExecutor

    reader = plan.reader()

    def read(batch: range) -> list:
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            return list(pool.map(reader, [plan.specs[i] for i in batch]))

    return read


def _dask_batches(df):
    import dask

    return lambda batch: dask.compute(*[df.partitions[i] for i in batch])


def _write(part, path: Path, fmt: str, writer, first: bool):
    if fmt == "csv":
        part.to_csv(path, mode="w" if first else "a", header=first)
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(part, preserve_index=True)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    elif table.schema != writer.schema:
        table = table.cast(writer.schema)
    writer.write_table(table)
    return writer


def _run(args: argparse.Namespace) -> int:
    from ..config import open_catalog

    out = Path(args.out)
    fmt = args.format or FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError(f"cannot tell the format of {str(out)!r} from its suffix: "
                                   "give --format parquet or --format csv")
    if out.is_dir():
        raise InvalidArgumentError(f"{out} is a folder; give the path of the file to write")
    if out.exists() and not args.overwrite:
        raise InvalidArgumentError(f"{out} exists; pass --overwrite to replace it")
    if not out.absolute().parent.is_dir():
        raise InvalidArgumentError(f"cannot write {out}: folder {out.absolute().parent} does "
                                   "not exist")
    db = open_catalog(args.catalog, read_only=True)
    h = get_run(db, args.run)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    plan = h.event_source.plan(h, args.stream, fields=fields, timestamps=args.timestamps)
    rows = export_table(plan, out, fmt, progress=not args.no_progress)
    print(f"wrote {rows} row(s) x {len(plan.columns)} column(s) of stream {args.stream!r} of run "
          f"{h.uid[:8]} (scan_id {h.start.get('scan_id', '-')}) to {out} ({fmt})")
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
