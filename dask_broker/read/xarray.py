"""Lazy xarray Datasets of a stream, built from a :class:`~dask_broker.read.plan.ReadPlan`.

Each field becomes a dask array over a :class:`ColumnArray`: a small, picklable
array-like (the plan's partition reader, the column, the rows' seq_nums) whose
``__getitem__`` asks the partition reader for a numpy block of just the rows
asked for (:meth:`~dask_broker.read.partition.PartitionReader.read_block`;
filled frames are read straight into the block).  Chunks follow the plan's
partitions, and because dask fuses slicing into ``from_array`` getters,
``ds["img"][10:12].values`` reads -- and fills -- just those two frames.

The rows' times (the ``time`` coordinate) and merged configuration values are
read on the client, through the same reader, one partition at a time.  The
dask arrays of filled frames have a :class:`DirectValues` ``__array__``:
``.values`` in this process reads them straight into one array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import dask.array as da
import numpy as np
import xarray as xr

from ..timestruct import TimeStruct
from .partition import PartitionReader
from .plan import ColumnSpec, PartitionSpec, ReadPlan

__all__ = ["ColumnArray", "DirectValues", "SeqIndex", "build_dataset"]

_RAW_TIMES = TimeStruct(convert_times=False)


@dataclass(frozen=True, eq=False)
class SeqIndex:
    """Position -> seq_num of a stream's rows (in table order).

    An arithmetic range when seq_nums are contiguous and unique (the usual case:
    nothing to ship), else the array of seq_nums.
    """

    start: int
    length: int
    values: np.ndarray | None = None

    @classmethod
    def from_array(cls, seq: np.ndarray) -> "SeqIndex":
        seq = np.asarray(seq, dtype="i8")
        if len(seq) == 0:
            return cls(0, 0)
        if seq[-1] - seq[0] + 1 == len(seq) and np.all(np.diff(seq) == 1):
            return cls(int(seq[0]), len(seq))
        return cls(int(seq[0]), len(seq), seq)

    def __len__(self) -> int:
        return self.length

    def take(self, positions: np.ndarray) -> np.ndarray:
        if self.values is not None:
            return self.values[positions]
        return self.start + np.asarray(positions, dtype="i8")

    def first_position(self, seq_num: int) -> int:
        """Position of the first row whose seq_num is ``seq_num`` (or the next one)."""
        if self.values is not None:
            return int(np.searchsorted(self.values, seq_num, side="left"))
        return min(max(seq_num - self.start, 0), self.length)

    def token(self) -> tuple:
        if self.values is None:
            return (self.start, self.length)
        from dask.base import tokenize

        return (self.start, self.length, tokenize(self.values))


@dataclass(frozen=True, eq=False)
class ColumnArray:
    """An array-like over one column of a planned stream: shape ``(rows, *frame_shape)``.

    Rows are in the order of the stream's table.  Reading rows reads the
    partition of their seq_num range through the plan's partition reader, and
    returns the block it gives.
    """

    reader: PartitionReader
    spec: PartitionSpec  # the whole stream (its seq_range is replaced per read)
    column: ColumnSpec
    seq: SeqIndex
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    missing: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.seq), *self.frame_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.seq)

    def __dask_tokenize__(self):
        from dask.base import tokenize

        # The reader's token changes with resource roots and the root_map.
        return ("dask_broker.ColumnArray", tokenize(self.reader), self.spec.__dask_tokenize__(),
                self.column, self.seq.token(), self.frame_shape, str(self.dtype))

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[0] is Ellipsis:
            key = (slice(None),) * (self.ndim - len(key) + 1) + key[1:]
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, slice):
            start, stop, step = first.indices(len(self.seq))
            positions = np.arange(start, stop, step)
        else:
            positions = np.arange(len(self.seq))[first]
        scalar = np.ndim(positions) == 0
        values = self.read(np.atleast_1d(positions))
        if rest:
            values = values[(slice(None), *rest)]
        return values[0] if scalar else values

    def read(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The column's values at these row positions, as one block (``out``, if given)."""
        if len(positions) == 0:
            return np.empty((0, *self.frame_shape), dtype=self.dtype)
        first, last = int(positions.min()), int(positions.max())
        lo, hi = int(self.seq.take(first)), int(self.seq.take(last)) + 1
        base = self.seq.first_position(lo)
        local = positions - base
        if len(local) == hi - lo and local[0] == 0 and np.all(np.diff(local) == 1) and \
                self.seq.values is None:
            local = None  # the whole range, in order: no picking
        spec = PartitionSpec(self.spec.store, self.spec.descriptors, (lo, hi), self.spec.state,
                             len(positions) if local is None else None)
        return self.reader.read_block(spec, self.column.name, local, self.frame_shape,
                                      self.dtype, self.missing, out)


    def read_all(self, row_chunks: tuple[int, ...]) -> np.ndarray:
        """Every row, read chunk by chunk straight into one array (no concatenation)."""
        out = np.empty(self.shape, dtype=self.dtype)
        start = 0
        for size in row_chunks:
            if size:
                positions = np.arange(start, start + size)
                self.read(positions, out=out[start:start + size])
            start += size
        return out


class DirectValues:
    """``np.asarray`` of a dask array of filled frames, read straight into one array.

    Set as the ``__array__`` of the dask array ``to_xarray`` makes (numpy looks
    ``__array__`` up on the instance; the array stays a plain ``dask.array.Array``,
    so xarray mixes it with any other).  With a scheduler of this process
    (threads, sync), ``np.asarray`` -- what xarray's ``.values`` calls -- reads every
    partition straight into the result: one copy of the data, where computing the
    chunks and concatenating them holds two.  With a distributed Client it computes
    on the cluster, as any dask array.  Arrays derived from it (slices, sums, a
    pickled copy) are ordinary dask arrays.
    """

    def __init__(self, source: "ColumnArray", array: da.Array):
        self.source = source
        self.array = array

    def __call__(self, dtype=None, copy=None, **kwargs):
        if not kwargs and copy is not False and _in_process_scheduler():
            out = self.source.read_all(self.array.chunks[0])
            return out if dtype is None else out.astype(dtype, copy=False)
        return da.Array.__array__(self.array, dtype=dtype, copy=copy, **kwargs)


def _in_process_scheduler() -> bool:
    import dask.base
    import dask.local
    import dask.threaded

    try:
        scheduler = dask.base.get_scheduler()
    except Exception:  # noqa: BLE001 -- fall back to dask's own computation
        return False
    return scheduler in (dask.threaded.get, dask.local.get_sync, None)


def _frames_array(data: da.Array, source: ColumnArray) -> da.Array:
    data.__dict__["__array__"] = DirectValues(source, data)
    return data


def build_dataset(plan: ReadPlan) -> xr.Dataset:
    """A lazy :class:`xarray.Dataset` of a planned stream (see :meth:`EventSource.to_xarray`)."""
    reader = plan.reader()
    merged = [c for c in plan.columns if c.kind == "const"]
    times = PartitionReader((plan.columns[0], *merged), _RAW_TIMES, layout=plan.layout)
    seqs, time_values, const_values = [], [], {c.name: [] for c in merged}
    for spec in plan.specs:
        if spec.seq_range[0] >= spec.seq_range[1]:
            continue
        seq, values = times.read_columns(spec, times.columns)
        seqs.append(seq)
        time_values.append(values["time"])
        for c in merged:
            const_values[c.name].append(values[c.name])
    seq_all = np.concatenate(seqs) if seqs else np.empty(0, dtype="i8")
    seq = SeqIndex.from_array(seq_all)
    n = len(seq)
    # chunks follow the plan's partitions
    starts = [seq.first_position(s.seq_range[0]) for s in plan.specs
              if s.seq_range[0] < s.seq_range[1]]
    bounds = sorted(set([*starts, n]))
    row_chunks = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]) if b > a) or (0,)
    whole = PartitionSpec(plan.store, tuple(d["uid"] for d in plan.descriptors), (0, 0),
                          plan.specs[0].state)
    descs = plan.descriptors
    variables = {}
    for col in plan.columns[1:]:
        if col.kind == "const":
            continue
        dk = next(d["data_keys"][col.field] for d in descs if col.field in d["data_keys"])
        if col.kind == "stream" and plan.stream_fill is None:
            # unfilled STREAM: cells (references): small, built here
            data = da.from_array(plan.layout.references(col.field, seq.take(np.arange(n))),
                                 chunks=(row_chunks,), name=False)
        else:
            array = _column_array(plan, reader, whole, col, seq, dk)
            # fancy=True: dask fuses later slices into this getter (ColumnArray handles
            # integer arrays on the row axis).  inline_array=False: the array (its fill
            # recipe lists every resource of the stream, ~330 B each) is one key of the
            # graph, not a copy in every task (inlining: equal with 1 worker of a
            # LocalCluster, 3-8% faster with 2, on 10 partitions).
            from dask.base import tokenize

            data = da.from_array(array, chunks=(row_chunks, *array.frame_shape), asarray=False,
                                 fancy=True, lock=False, inline_array=False,
                                 name=f"{col.field}-{tokenize(array)}")
            if plan.frame(col.field) is not None and array.frame_shape:
                data = _frames_array(data, array)
        frame_shape = data.shape[1:]
        dims = tuple(dk.get("dims") or ()) if frame_shape else ()
        if len(dims) != len(frame_shape):
            dims = tuple(f"{col.field}_dim_{i}" for i in range(len(frame_shape)))
        attrs = {k: dk[k] for k in ("units", "source", "precision", "shape", "dtype",
                                    "external", "object_name") if k in dk}
        variables[col.field] = xr.Variable(("time", *dims), data, attrs=attrs)
    for col in merged:  # in memory: read with the time column
        values = const_values[col.name]
        variables[col.name] = xr.Variable(("time",), np.concatenate(values) if values
                                          else np.empty(0))
    time_all = np.concatenate(time_values) if time_values else np.empty(0)
    coords = {"time": ("time", time_all, {"units": "seconds since 1970-01-01 UTC"}),
              "seq_num": ("time", seq_all)}
    attrs = {"uid": plan.run_uid, "stream_name": plan.stream_name, **dict(plan.attrs)}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _column_array(plan: ReadPlan, reader: PartitionReader, whole: PartitionSpec,
                  col: ColumnSpec, seq: SeqIndex, dk: Mapping) -> ColumnArray:
    frame = plan.frame(col.field)
    if frame is not None and frame.known:  # filled: from the descriptor or the first file
        dtype = np.dtype(frame.dtype)
        return ColumnArray(reader, whole, col, seq, frame.shape, dtype, _missing(dtype))
    if col.dtype in ("f8", "i8", "bool"):
        return ColumnArray(reader, whole, col, seq, (), np.dtype(col.dtype),
                           np.nan if col.dtype == "f8" else None)
    if col.dtype == "string" or (dk.get("external") and frame is None):
        # Strings, or unfilled external cells (datum ids / references).
        return ColumnArray(reader, whole, col, seq, (), np.dtype("O"))
    # Arrays in events (and frames whose file could not be read when planning): shape and
    # dtype from the data_key when it declares both, else from the first row.
    shape = dk.get("shape") or []
    if "dtype_numpy" in dk and shape and all(isinstance(s, int) and s > 0 for s in shape):
        dtype = np.dtype(dk["dtype_numpy"])
        return ColumnArray(reader, whole, col, seq, tuple(shape), dtype, _missing(dtype))
    probe = ColumnArray(reader, whole, col, seq, (), np.dtype("O"))
    first = np.asarray(probe[0]) if len(seq) else np.empty(tuple(shape))
    return ColumnArray(reader, whole, col, seq, tuple(first.shape), first.dtype,
                       _missing(first.dtype))


def _missing(dtype: np.dtype) -> Any:
    return np.nan if dtype.kind in "fc" else 0
