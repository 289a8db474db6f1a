"""Write a lazy table (a stream of a run) to one Parquet or CSV file, partition by partition.

:func:`export_table` is what ``dask-broker export`` runs.  (Copying whole runs
into another catalog is :meth:`Broker.export <dask_broker.Broker.export>`.)
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = ["FORMATS", "export_table", "format_of", "check_out"]

#: File suffix -> format.
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def format_of(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The format to write ``out`` in: ``fmt``, else from the file's suffix.

    Examples
    --------
    >>> format_of("scan.parquet"), format_of("scan.txt", "csv")
    ('parquet', 'csv')
    """
    if fmt is None:
        fmt = FORMATS.get(Path(out).suffix.lower())
        if fmt is None:
            raise InvalidArgumentError(
                f"cannot tell the format of {str(out)!r} from its suffix: give --format "
                "parquet or --format csv (fmt='parquet' or 'csv')")
    if fmt not in ("parquet", "csv"):
        raise InvalidArgumentError(f"unknown format {fmt!r}: write 'parquet' or 'csv'")
    return fmt


def check_out(out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse to write ``out`` where :func:`export_table` would fail or overwrite a file.

    Examples
    --------
    >>> check_out("/no/such/folder/scan.csv")   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_broker.errors.InvalidArgumentError: cannot write /no/such/folder/scan.csv: folder ... does not exist
    """
    out = Path(out)
    if out.is_dir():
        raise InvalidArgumentError(f"{out} is a folder; give the path of the file to write")
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"{out} exists; pass --overwrite (overwrite=True) to "
                                   "replace it")
    if not out.absolute().parent.is_dir():
        raise InvalidArgumentError(f"cannot write {out}: folder {out.absolute().parent} does "
                                   "not exist")


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield range(i, min(n, i + size))


def export_table(df, out: str | os.PathLike, fmt: str | None = None, *,
                 overwrite: bool = False, progress: bool = True) -> int:
    """Write the lazy table ``df`` to the single file ``out``, partition by partition.

    Memory holds a few partitions at a time (computed in parallel).  The file
    appears complete or not at all (it is written as ``OUT.partial``, then renamed).

    Parameters
    ----------
    df
        A dask DataFrame, e.g. ``h.table("primary")``, or a
        :class:`~dask_broker.read.ReadPlan` (``es.plan(h, "primary")``: its
        partitions are read by the plan's partition reader, without a graph).
    out
        The file to write.
    fmt
        ``"parquet"`` or ``"csv"``; default: from the suffix of ``out``
        (``.parquet``, ``.pq``, ``.csv``).
    overwrite
        Replace ``out`` if it exists (else InvalidArgumentError).
    progress
        Show a progress bar (partitions written).

    Returns
    -------
    int
        The number of rows written.

    Examples
    --------
    >>> from dask_broker import export_table
    >>> export_table(db[-1].table("primary"), "scan.parquet")   # doctest: +SKIP
    1000
    """
    from tqdm.auto import tqdm

    from .read.plan import ReadPlan

    out = Path(out)
    fmt = format_of(out, fmt)
    check_out(out, overwrite=overwrite)
    partial = out.with_name(out.name + ".partial")
    rows = 0
    writer = None
    if isinstance(df, ReadPlan):  # read by the plan's partition reader, no graph
        read_batch, nparts, meta = _plan_batches(df), df.npartitions, df.meta()
        if not df.has_rows:
            nparts = 0
    else:
        read_batch, nparts, meta = _dask_batches(df), df.npartitions, df._meta
    try:
        with tqdm(total=nparts, unit="chunk", desc=f"exporting {out.name}",
                  disable=not progress) as bar:
            first = True
            for batch in _batches(nparts, max(1, os.cpu_count() or 1)):
                for part in read_batch(batch):
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
    """Partitions of a ReadPlan, a few at a time on threads."""
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
