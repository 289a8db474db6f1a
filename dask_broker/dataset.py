"""Lazy xarray Datasets of a stream, for notebooks.

Each field becomes a dask array backed by an :class:`EventColumnArray`: a small,
picklable array-like (catalog URI, descriptor uids, the events' seq_nums) whose
``__getitem__`` reads only the events asked for.  Because dask fuses slicing
into ``from_array`` getters, ``ds["img"][10:12].values`` reads -- and, for
external fields, fills -- just those two frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .stores import StoreRef
from .table import ColumnSpec, PartitionSpec, TableReader, plan_table
from .timestruct import TimeStruct

if TYPE_CHECKING:
    from .event_source import EventSource

__all__ = ["EventColumnArray", "build_dataset"]


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
        return seq_num - self.start

    def token(self) -> tuple:
        if self.values is None:
            return (self.start, self.length)
        from dask.base import tokenize

        return (self.start, self.length, tokenize(self.values))


_RAW_TIMES = TimeStruct(convert_times=False)


@dataclass(frozen=True, eq=False)
class EventColumnArray:
    """An array-like over one field of a stream: shape ``(events, *frame_shape)``.

    Rows are in the order of the stream's table.  Reading rows reads the table
    partition of their seq_num range (one column, through
    :class:`~dask_broker.table.TableReader`, so multi-descriptor streams and
    repeated seq_nums come out as in ``h.table()``).  ``filler`` (optional)
    turns a list of datum ids into a list of arrays; it is picklable and runs
    on the worker that computes a chunk.
    """

    store: StoreRef
    descriptors: tuple[str, ...]
    column: ColumnSpec
    seq: SeqIndex
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    missing: Any = None
    filler: Callable[[list[str]], list] | None = dc_field(default=None)

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

        # The filler's token changes with resource roots and the root_map.
        return ("dask_broker.EventColumnArray", self.store.__dask_tokenize__(),
                self.descriptors, self.column, self.seq.token(), self.frame_shape,
                str(self.dtype), tokenize(self.filler) if self.filler is not None else None)

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[0] is Ellipsis:
            key = (slice(None),) * (self.ndim - len(key) + 1) + key[1:]
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        positions = np.arange(len(self.seq))[first]
        scalar = np.ndim(positions) == 0
        values = self.read(np.atleast_1d(positions))
        if rest:
            values = values[(slice(None), *rest)]
        return values[0] if scalar else values

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The field's values at these row positions, stacked into one array."""
        out = np.empty((len(positions), *self.frame_shape), dtype=self.dtype)
        if len(positions) == 0:
            return out
        seqs = self.seq.take(positions)
        lo, hi = int(seqs.min()), int(seqs.max()) + 1
        reader = TableReader((self.column,), _RAW_TIMES)
        frame = reader(PartitionSpec(self.store, self.descriptors, (lo, hi)))
        column = frame[self.column.name].to_numpy(dtype=object)
        picked = list(column[positions - self.seq.first_position(lo)])
        present = [i for i, v in enumerate(picked) if v is not None and v is not pd.NA
                   and not (isinstance(v, float) and np.isnan(v) and self.filler is not None)]
        if self.filler is not None:
            for i, frame_ in zip(present, self.filler([picked[i] for i in present]), strict=True):
                picked[i] = frame_
        scalar = not self.frame_shape
        missing = set(range(len(picked))) - set(present)
        for i, v in enumerate(picked):
            out[i] = self.missing if i in missing else (v if scalar else np.asarray(v))
        return out


@dataclass(frozen=True, eq=False)
class StreamColumnArray:
    """An array-like over one STREAM: key of a stream: shape ``(rows, *row_shape)``.

    Reading rows is one bulk read per run of consecutive indices of a
    stream_resource (:meth:`~dask_broker.stream_fill.StreamFill.read`); rows no
    stream_datum covers hold ``missing``.
    """

    key: str
    seq: SeqIndex
    fill: Any  # StreamFill
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

        return ("dask_broker.StreamColumnArray", self.key, self.seq.token(),
                tokenize(self.fill), self.frame_shape, str(self.dtype))

    __array__ = EventColumnArray.__array__
    __getitem__ = EventColumnArray.__getitem__

    def read(self, positions: np.ndarray) -> np.ndarray:
        seqs = self.seq.take(positions)
        resource, _ = self.fill.layout.blocks(self.key).locate(seqs)
        if len(seqs) and np.all(resource >= 0):
            return np.asarray(self.fill.read(self.key, seqs, stacked=True), dtype=self.dtype)
        out = np.empty((len(seqs), *self.frame_shape), dtype=self.dtype)
        for i, v in enumerate(self.fill.read(self.key, seqs)):
            out[i] = self.missing if v is None or (np.ndim(v) == 0 and v != v) else v
        return out


def _stream_array(key: str, seq: SeqIndex, fill, plan) -> StreamColumnArray:
    shape = fill.shape(key)
    if shape.known:
        frame_shape, dtype = shape.row_shape, np.dtype(shape.dtype)
    else:
        # No dtype_numpy in the descriptor: read the first row (one small read).
        probe = np.asarray(fill.read(key, seq.take(np.arange(min(1, len(seq)))), stacked=True))
        frame_shape, dtype = tuple(probe.shape[1:]) or shape.row_shape, probe.dtype
    missing = np.nan if dtype.kind in "fc" else 0
    return StreamColumnArray(key, seq, fill, frame_shape, dtype, missing)


def build_dataset(event_source: "EventSource", header, stream_name: str = "primary",
                  fields: Sequence[str] | None = None, *, filler_factory=None,
                  chunk_size: int | None = None, stream_fill=None) -> xr.Dataset:
    """A lazy :class:`xarray.Dataset` of one stream (see :meth:`EventSource.to_xarray`)."""
    # Size chunks as for a filled table: external fields become frames here.
    plan = plan_table(event_source, header, stream_name, fields,
                      TimeStruct(convert_times=False), False, chunk_size,
                      size_for_frames=filler_factory is not None, stream_fill=stream_fill)
    descs = plan.descriptors
    # The rows' seq_num and time, read here (they become the index coordinate), from the
    # same plan: one partition at a time, the time column only (rows that only
    # stream_datum cover have no time: NaN).
    # Merged configuration / start / stop values (``const`` columns) come with it.
    merged = [c for c in plan.columns if c.kind == "const"]
    times = TableReader((plan.columns[0], *merged), plan.time_struct, None, plan.layout)
    index = pd.concat([times(spec) for spec in plan.specs])
    seq = SeqIndex.from_array(index.index.to_numpy())
    n = len(seq)
    ref = event_source.store.ref
    uids = tuple(d["uid"] for d in descs)
    variables = {}
    for col in plan.columns[1:]:
        if col.kind == "const":
            continue
        keys = [d["data_keys"][col.field] for d in descs if col.field in d["data_keys"]]
        dk = keys[0]
        external = bool(dk.get("external"))
        if col.kind == "stream" and plan.stream_fill is not None:
            array = _stream_array(col.field, seq, plan.stream_fill, plan)
        elif col.kind == "stream":
            array = _reference_array(col.field, seq, plan.layout)
        else:
            filler = filler_factory(header, col.field) if (external and filler_factory) else None
            array = _column_array(ref, uids, col, seq, dk, external, filler)
        rows = max(1, min(n, plan.chunk_size)) if n else 1
        # fancy=True: dask fuses later slices into this getter only for the plain getter
        # (EventColumnArray handles integer arrays on the event axis).
        if isinstance(array, np.ndarray):  # references, already in memory
            data = da.from_array(array, chunks=(rows,), name=False)
        else:
            data = da.from_array(array, chunks=(rows, *array.frame_shape), asarray=False,
                                 fancy=True, lock=False,
                                 name=f"{col.field}-{_token(array)}")
        frame_shape = data.shape[1:]
        dims = tuple(dk.get("dims") or ()) if frame_shape else ()
        if len(dims) != len(frame_shape):
            dims = tuple(f"{col.field}_dim_{i}" for i in range(len(frame_shape)))
        attrs = {k: dk[k] for k in ("units", "source", "precision", "shape", "dtype",
                                    "external", "object_name") if k in dk}
        variables[col.field] = xr.Variable(("time", *dims), data, attrs=attrs)
    for col in merged:  # in memory: read with the time column
        variables[col.name] = xr.Variable(("time",), index[col.name].to_numpy())
    coords = {"time": ("time", index["time"].to_numpy(), {"units": "seconds since 1970-01-01 UTC"}),
              "seq_num": ("time", index.index.to_numpy())}
    start = event_source.store.get_start(plan.run_uid) or {}
    attrs = {"uid": plan.run_uid, "stream_name": stream_name}
    if "scan_id" in start:
        attrs["scan_id"] = start["scan_id"]
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _reference_array(key: str, seq: SeqIndex, layout) -> np.ndarray:
    """Unfilled STREAM: cells (``"<stream_resource uid>/<index>"``): small, built here."""
    return layout.references(key, seq.take(np.arange(len(seq))))


def _token(array: EventColumnArray) -> str:
    from dask.base import tokenize

    return tokenize(array)


def _column_array(ref: StoreRef, uids: tuple[str, ...], col: ColumnSpec, seq: SeqIndex,
                  dk: Mapping, external: bool, filler) -> EventColumnArray:
    if col.dtype in ("f8", "i8", "bool"):
        return EventColumnArray(ref, uids, col, seq, (), np.dtype(col.dtype),
                                np.nan if col.dtype == "f8" else None)
    if col.dtype == "string" or (external and filler is None):
        # Strings, or unfilled external fields: their datum ids.
        return EventColumnArray(ref, uids, col, seq, (), np.dtype("O"))
    # Arrays and filled frames: shape and dtype from the data_key when it declares both
    # (nothing is read on the client), else from the first event.
    shape = dk.get("shape") or []
    if "dtype_numpy" in dk and shape and all(isinstance(s, int) and s > 0 for s in shape):
        frame_shape, dtype = tuple(shape), np.dtype(dk["dtype_numpy"])
    else:
        probe = EventColumnArray(ref, uids, col, seq, (), np.dtype("O"), filler=filler)
        first = np.asarray(probe[0]) if len(seq) else np.empty(tuple(shape))
        frame_shape, dtype = tuple(first.shape), first.dtype
    return EventColumnArray(ref, uids, col, seq, frame_shape, dtype,
                            np.nan if dtype.kind == "f" else 0, filler)
