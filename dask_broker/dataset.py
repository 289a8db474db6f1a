"""Lazy xarray Datasets of a stream, for notebooks.

Each field becomes a dask array backed by an :class:`EventColumnArray`: a small,
picklable array-like (catalog URI, descriptor uids, the events' seq_nums) whose
``__getitem__`` reads only the events asked for.  Because dask fuses slicing
into ``from_array`` getters, ``ds["img"][10:12].values`` reads -- and, for
external fields, fills -- just those two frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import dask.array as da
import numpy as np
import xarray as xr

from .stores import open_store
from .table import plan_table
from .timestruct import TimeStruct

if TYPE_CHECKING:
    from .event_source import EventSource

__all__ = ["EventColumnArray", "build_dataset"]


@dataclass(frozen=True, eq=False)
class SeqIndex:
    """Position -> seq_num: an arithmetic range when seq_nums are contiguous, else an array."""

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

    def token(self) -> tuple:
        if self.values is None:
            return (self.start, self.length)
        from dask.base import tokenize

        return (self.start, self.length, tokenize(self.values))


@dataclass(frozen=True, eq=False)
class EventColumnArray:
    """An array-like over one field of a stream: shape ``(events, *frame_shape)``.

    ``filler`` (optional) turns a list of datum ids into a list of arrays; it
    must be picklable (it runs on the worker that computes a chunk).
    """

    uri: str
    descriptors: tuple[str, ...]
    field: str
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
        return ("dask_broker.EventColumnArray", self.uri, self.descriptors, self.field,
                self.seq.token(), self.frame_shape, str(self.dtype),
                type(self.filler).__name__ if self.filler else None)

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
        positions = np.atleast_1d(positions)
        values = self.read(self.seq.take(positions))
        if rest:
            values = values[(slice(None), *rest)]
        return values[0] if scalar else values

    def read(self, seqs: np.ndarray) -> np.ndarray:
        """The field's values at these seq_nums, stacked into an array."""
        out = np.empty((len(seqs), *self.frame_shape), dtype=self.dtype)
        if len(seqs) == 0:
            return out
        found: dict[int, Any] = {}
        wanted = set(seqs.tolist())
        store = open_store(self.uri)
        for page in store.iter_event_pages(self.descriptors, fields=[self.field],
                                           seq_range=(int(seqs.min()), int(seqs.max()) + 1),
                                           timestamps=False):
            column = page.data.get(self.field)
            if column is None:
                continue
            for i, s in enumerate(page.seq_num.tolist()):
                if s in wanted:
                    found[s] = column[i]
        order = [found.get(s) for s in seqs.tolist()]
        if self.filler is not None:
            present = [i for i, v in enumerate(order) if v is not None]
            for i, frame in zip(present, self.filler([order[i] for i in present]), strict=True):
                order[i] = frame
        scalar = not self.frame_shape
        for i, v in enumerate(order):
            out[i] = self.missing if v is None else (v if scalar else np.asarray(v))
        return out


_SCALAR_DTYPES = {"number": np.dtype("f8"), "integer": np.dtype("i8"),
                  "boolean": np.dtype("bool"), "string": np.dtype("O")}


def build_dataset(event_source: "EventSource", header, stream_name: str = "primary",
                  fields: Sequence[str] | None = None, *, filler_factory=None,
                  chunk_size: int | None = None) -> xr.Dataset:
    """A lazy :class:`xarray.Dataset` of one stream (see :meth:`EventSource.to_xarray`)."""
    # Size chunks as for a filled table: external fields become frames here.
    plan = plan_table(event_source, header, stream_name, fields,
                      TimeStruct(convert_times=False), False, chunk_size,
                      size_for_frames=filler_factory is not None)
    descs = event_source._stream_descriptors(header, stream_name)
    index = event_source.table(header, stream_name, fields=[],
                               time_struct=TimeStruct(convert_times=False)).compute()
    seq = SeqIndex.from_array(index.index.to_numpy())
    n = len(seq)
    uri = event_source.store.uri
    uids = tuple(d["uid"] for d in descs)
    variables = {}
    for col in plan.columns[1:]:
        keys = [d["data_keys"][col.field] for d in descs if col.field in d["data_keys"]]
        dk = keys[0]
        external = bool(dk.get("external"))
        filler = filler_factory(header, col.field) if (external and filler_factory) else None
        everywhere = len(keys) == len(descs)
        array = _column_array(uri, uids, col.field, seq, dk, external, filler, everywhere)
        rows = max(1, min(n, plan.chunk_size)) if n else 1
        # fancy=True: dask fuses later slices into this getter only for the plain getter
        # (EventColumnArray handles integer arrays on the event axis).
        data = da.from_array(array, chunks=(rows, *array.frame_shape), asarray=False,
                             fancy=True, lock=False,
                             name=f"{col.field}-{_token(array)}")
        dims = tuple(dk.get("dims") or ()) if array.frame_shape else ()
        if len(dims) != len(array.frame_shape):
            dims = tuple(f"{col.field}_dim_{i}" for i in range(len(array.frame_shape)))
        attrs = {k: dk[k] for k in ("units", "source", "precision", "shape", "dtype",
                                    "external", "object_name") if k in dk}
        variables[col.field] = xr.Variable(("time", *dims), data, attrs=attrs)
    coords = {"time": ("time", index["time"].to_numpy(), {"units": "seconds since 1970-01-01 UTC"}),
              "seq_num": ("time", index.index.to_numpy())}
    start = event_source.store.get_start(plan.run_uid) or {}
    attrs = {"uid": plan.run_uid, "stream_name": stream_name}
    if "scan_id" in start:
        attrs["scan_id"] = start["scan_id"]
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _token(array: EventColumnArray) -> str:
    from dask.base import tokenize

    return tokenize(array)


def _column_array(uri, uids, field, seq, dk, external, filler, everywhere) -> EventColumnArray:
    kind = dk.get("dtype", "array")
    shape = tuple(int(s) for s in dk.get("shape") or () if s)
    if not external and kind in _SCALAR_DTYPES and not shape:
        dtype = _SCALAR_DTYPES[kind]
        if not everywhere and dtype.kind in "ib":
            dtype = np.dtype("f8") if dtype.kind == "i" else np.dtype("O")
        missing = np.nan if dtype.kind == "f" else None
        return EventColumnArray(uri, uids, field, seq, (), dtype, missing)
    if external and filler is None:
        # Unfilled: the datum ids themselves.
        return EventColumnArray(uri, uids, field, seq, (), np.dtype("O"))
    # Arrays (or filled frames): learn the frame's dtype and shape from the first event.
    probe = EventColumnArray(uri, uids, field, seq, (), np.dtype("O"), filler=filler)
    first = np.asarray(probe[0]) if len(seq) else np.empty(shape)
    dtype = np.dtype(dk["dtype_numpy"]) if "dtype_numpy" in dk else first.dtype
    return EventColumnArray(uri, uids, field, seq, tuple(first.shape), dtype,
                            np.nan if dtype.kind == "f" else 0, filler)
