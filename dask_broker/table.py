"""Lazy tables: a stream of a run as a Dask DataFrame partitioned by chunks of events.

Plan on the client, read in tasks (the model is dask's ``from_map`` readers):

1. :func:`plan_table` validates the arguments, reads the stream's descriptors
   and event counts, and builds ``meta`` (zero rows, dtypes from the
   descriptors' ``data_keys``) and a list of small frozen
   :class:`PartitionSpec` -- the catalog URI, descriptor uids, a seq_num range
   -- with known divisions.
2. ``dd.from_map(TableReader(...), specs, ...)`` makes the collection.  The
   reader accepts ``columns=``, so ``df[["det"]]`` reaches the store: fields
   that are not selected are never read.
3. On a worker, :class:`TableReader` opens the store from the URI (once per
   process, :func:`~dask_broker.stores.open_store`), reads the pages that
   overlap the range, and copies them into preallocated columns.

Nothing in the graph is a connection or a cursor: ``pickle.dumps`` of the graph
works, and the same table has the same task names (a run that grew gets new ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ColumnTypeError, InvalidArgumentError, UnknownFieldError
from .field_select import Constant, FieldSelection, constants
from .stores import StoreRef
from .stores.base import EventPageColumns
from .stream_data import StreamLayout, stream_keys
from .timestruct import TimeStruct
from .tunables import partition_bytes

__all__ = ["PartitionSpec", "ColumnSpec", "TablePlan", "TableReader", "plan_table",
           "DEFAULT_PARTITION_BYTES"]

#: Default target in-memory size of one partition (the dask config
#: ``dask_broker.partition-bytes`` decides; see :mod:`dask_broker.tunables`).
DEFAULT_PARTITION_BYTES = 32 * 2**20
_ARRAY_GUESS_BYTES = 64  # per-event size assumed for array / object fields of unknown size
_FRAME_GUESS_BYTES = 2**20  # per-event size assumed for a filled external field of unknown shape


@dataclass(frozen=True)
class ColumnSpec:
    """One output column: ``time``, a field's data, or a field's timestamps (``ts_<field>``).

    A ``const`` column holds, on each row, the value its descriptor gives in
    ``values`` (``(descriptor uid, value)`` pairs): a configuration, start or
    stop value merged in by ``fields=`` (see :mod:`dask_broker.field_select`);
    ``const_ts`` holds those values' timestamps.  The reader fills them from the
    row's descriptor; nothing is read from storage for them.
    """

    name: str
    field: str | None  # None for "time"
    #: "time", "data", "ts", "stream" (a key read through stream_datum), "const", "const_ts"
    kind: str
    dtype: str  # "f8", "i8", "bool", "string" or "object"
    values: tuple = ()  # const / const_ts: ((descriptor uid, value), ...)

    @property
    def missing(self) -> Any:
        return {"f8": np.nan, "string": None, "object": None}.get(self.dtype)


@dataclass(frozen=True)
class PartitionSpec:
    """What one partition reads: a seq_num range ``[lo, hi)`` of some descriptors.

    ``state`` summarizes what was stored when the table was planned (event
    counts, stop uid), so a run that grew tokenizes differently.
    """

    store: StoreRef
    descriptors: tuple[str, ...]
    seq_range: tuple[int, int]
    state: tuple = ()
    #: rows expected in the range (sizes the columns; None: the range's width, capped)
    rows: int | None = None

    def __dask_tokenize__(self):
        return ("dask_broker.PartitionSpec", self.store.__dask_tokenize__(), self.descriptors,
                self.seq_range, self.state, self.rows)


def _column_dtype(data_keys: list[Mapping], present_everywhere: bool) -> str:
    """The pandas dtype of a field from its data_keys in the stream's descriptors."""
    kinds = set()
    for dk in data_keys:
        if dk.get("external") or dk.get("shape"):
            kinds.add("object")
        else:
            kinds.add(dk.get("dtype", "object"))
    if len(kinds) != 1:
        return "f8" if kinds <= {"number", "integer"} else "object"
    kind = kinds.pop()
    if kind == "number":
        return "f8"
    if kind == "integer":
        return "i8" if present_everywhere else "f8"
    if kind == "boolean":
        return "bool" if present_everywhere else "object"
    if kind == "string":
        return "string"
    return "object"


def _itemsize(column: ColumnSpec, data_keys: list[Mapping], filled: bool) -> int:
    """Bytes one event's value takes in memory (a guess where data_keys are vague)."""
    if column.dtype in ("f8", "i8"):
        return 8
    if column.dtype == "bool":
        return 1
    external = any(dk.get("external") for dk in data_keys)
    if external and not filled:
        return _ARRAY_GUESS_BYTES  # a datum id
    shape = next((dk.get("shape") for dk in data_keys if dk.get("shape")), None)
    dtype = next((dk.get("dtype_numpy") for dk in data_keys if dk.get("dtype_numpy")), None)
    item = np.dtype(dtype).itemsize if dtype else 8
    if shape and all(isinstance(s, int) and s > 0 for s in shape):
        return item * math.prod(shape)
    return _FRAME_GUESS_BYTES if external else _ARRAY_GUESS_BYTES


@dataclass(frozen=True)
class TablePlan:
    """Everything needed to build a table of one stream, computed on the client."""

    columns: tuple[ColumnSpec, ...]
    specs: tuple[PartitionSpec, ...]
    divisions: tuple
    time_struct: TimeStruct
    chunk_size: int
    stream_name: str
    run_uid: str
    #: (FillRecipe, external field names) when external fields are filled
    fill: tuple | None = None
    #: the stream's descriptor documents
    descriptors: tuple[dict, ...] = ()
    #: where the stream's STREAM: keys live (None if it has none)
    layout: StreamLayout | None = None
    #: a StreamFill when STREAM: keys are filled
    stream_fill: Any = None

    @property
    def npartitions(self) -> int:
        return len(self.specs)

    def reader(self) -> "TableReader":
        return TableReader(self.columns, self.time_struct, self.fill, self.layout,
                           self.stream_fill)

    def meta(self) -> pd.DataFrame:
        return self.reader().empty()


def plan_table(event_source, header, stream_name: str = "primary",
               fields: Sequence[str] | None = None, time_struct: TimeStruct | None = None,
               timestamps: bool = False, chunk_size: int | None = None,
               fill: Any = None, size_for_frames: bool | None = None,
               stream_fill: Any = None) -> TablePlan:
    """Plan a table of one stream: columns, partition specs and divisions.

    Reads only descriptors, event counts and stream_datum, never event data.
    ``fill`` is a :class:`~dask_broker.fill_recipe.FillRecipe` when external
    fields are filled; ``stream_fill`` a callable ``(layout, descriptors) ->
    StreamFill`` when STREAM: keys are.  ``size_for_frames`` (default: whether
    ``fill`` is given) sizes the default chunk for filled frames rather than
    datum ids.
    """
    if size_for_frames is None:
        size_for_frames = fill is not None
    if time_struct is None:
        time_struct = TimeStruct()
    elif not isinstance(time_struct, TimeStruct):
        raise InvalidArgumentError(
            f"time_struct must be a dask_broker.TimeStruct, not {type(time_struct).__name__}")
    time_struct = time_struct.resolved()  # the client's local zone, not each worker's
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidArgumentError(f"chunk_size must be a positive int, not {chunk_size!r}")
    descs = event_source._stream_descriptors(header, stream_name)
    all_fields = list(dict.fromkeys(k for d in descs for k in d["data_keys"]))
    uids = tuple(d["uid"] for d in descs)
    counts = event_source.store.event_counts(uids)
    run_uid = descs[0]["run_start"]
    stop = event_source.store.get_stop(run_uid)
    merged: dict[str, dict[str, Constant]] = {}  # key -> {descriptor uid: Constant}
    if fields is None:
        fields = all_fields
    else:
        selection = FieldSelection(fields)
        fields = selection.select(all_fields)
        start = event_source.store.get_start(run_uid)
        for d in descs:
            for key, const in constants(selection, d, start, stop).items():
                if key not in all_fields:  # a data key of another descriptor stays data
                    merged.setdefault(key, {})[d["uid"]] = const
        merged = {key: merged[key] for key in selection.select(merged)}  # entries' order
        unknown = selection.unmatched([*all_fields, *merged])
        if unknown:
            raise UnknownFieldError(
                f"field(s) {unknown} are not in stream {stream_name!r} of run "
                f"{run_uid!r}: neither data keys ({all_fields}) nor configuration, start "
                "or stop keys")
    streamed = set(k for d in descs for k in stream_keys(d))
    layout = None
    if streamed:
        store = event_source.store
        layout = StreamLayout.build(descs, store.stream_datums(uids),
                                    store.stream_resources(run_uid))
    gaps = layout is not None and _rows_without_events(counts, layout)
    filler = None
    if layout is not None and stream_fill is not None and streamed & set(fields):
        filler = stream_fill(layout, descs)
    columns = [ColumnSpec("time", None, "time", "time")]
    sizes = 16  # seq_num and time
    for f in fields:
        keys = [d["data_keys"][f] for d in descs if f in d["data_keys"]]
        if f in streamed:
            col = ColumnSpec(f, f, "stream", _stream_dtype(keys[0], filler is not None))
        else:
            col = ColumnSpec(f, f, "data",
                             _column_dtype(keys, len(keys) == len(descs) and not gaps))
        columns.append(col)
        sizes += _itemsize(col, keys, size_for_frames or filler is not None)
    for key, per_desc in merged.items():
        values = tuple((uid, c.value) for uid, c in per_desc.items())
        dtype = _const_dtype([v for _, v in values], len(values) == len(descs) and not gaps)
        columns.append(ColumnSpec(key, key, "const", dtype, values))
        sizes += 8 if dtype in ("f8", "i8", "bool") else _ARRAY_GUESS_BYTES
    if timestamps:
        for f in fields:
            if f not in streamed:  # stream_datum carry no timestamps
                columns.append(ColumnSpec(f"ts_{f}", f, "ts", "f8"))
                sizes += 8
        for key, per_desc in merged.items():
            stamps = tuple((uid, c.timestamp) for uid, c in per_desc.items())
            columns.append(ColumnSpec(f"ts_{key}", key, "const_ts", "f8", stamps))
            sizes += 8
    if chunk_size is None:
        chunk_size = partition_bytes() // sizes
        chunk_size = max(1024, chunk_size // 1024 * 1024) if chunk_size >= 1024 else max(1, chunk_size)
    state = (tuple(sorted(counts.items())), stop["uid"] if stop else None)
    bounds_ = [(c[1], c[2]) for c in counts.values()]
    if layout is not None:
        state = (*state, layout.__dask_tokenize__())
        if layout.seq_bounds() is not None:
            bounds_.append(layout.seq_bounds())
    ref = event_source.store.ref
    if bounds_:
        runs = _event_runs(event_source.store, counts)
        if layout is not None:
            runs += [(a, b, b - a) for a, b in layout.intervals()]
        parts = partition_bounds(runs, chunk_size)
        specs = tuple(PartitionSpec(ref, uids, (a, b), state, n) for a, b, n in parts)
        divisions = (*(a for a, _, _ in parts), parts[-1][1] - 1)
    else:
        specs = (PartitionSpec(ref, uids, (0, 0), state),)
        divisions = (None, None)
    external = tuple(f for f in fields if f not in streamed and any(
        d["data_keys"].get(f, {}).get("external") for d in descs))
    filling = (fill, external) if fill is not None and external else None
    return TablePlan(tuple(columns), specs, divisions, time_struct, chunk_size,
                     stream_name, run_uid, filling, tuple(descs), layout, filler)


def _event_runs(store, counts: Mapping[str, tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``(start, stop, count)`` runs of the events' seq_nums, per descriptor.

    A descriptor whose events are consecutive (the usual case) is one run and
    costs no query; others ask the store (page metadata on SQLite).
    """
    runs, sparse = [], []
    for uid, (n, lo, hi) in counts.items():
        if n == hi - lo + 1:
            runs.append((lo, hi + 1, n))
        else:
            sparse.append(uid)
    if sparse:
        runs += store.seq_num_runs(sparse)
    return runs


def partition_bounds(runs: Sequence[tuple[int, int, int]], chunk_size: int
                     ) -> list[tuple[int, int, int]]:
    """Cut rows into partitions of about ``chunk_size`` rows: ``(lo, hi, rows)`` seq ranges.

    ``runs`` are ``(start, stop, count)``: ``count`` rows with ``start <= seq_num <
    stop`` (consecutive when ``count == stop - start``; otherwise assumed spread
    evenly); they may overlap (a row both in an event and in a stream_datum, or
    in several descriptors).  Partitions follow the rows, not the span of their
    seq_nums: two rows at seq_num 1 and 10**10 are one partition.

    >>> partition_bounds([(1, 2, 1), (10**10, 10**10 + 1, 1)], 1000)
    [(1, 10000000001, 2)]
    >>> partition_bounds([(1, 11, 10)], 4)
    [(1, 5, 4), (5, 9, 4), (9, 11, 2)]
    """
    merged: list[list[int]] = []
    for a, b, n in sorted(runs):
        if merged and a < merged[-1][1]:
            m = merged[-1]
            dense = m[2] == m[1] - m[0] and n == b - a
            m[1] = max(m[1], b)
            m[2] = m[1] - m[0] if dense else min(m[1] - m[0], m[2] + n)
        else:
            merged.append([a, b, n])
    parts: list[tuple[int, int, int]] = []
    lo, rows = None, 0
    for a, b, n in merged:
        if lo is None:
            lo = a
        while n > 0:
            take = min(n, chunk_size - rows)
            if take == n:
                rows += n
                break
            # Cut inside this run, where ``take`` of its rows have been passed.
            cut = a + max(1, -(-take * (b - a) // n))
            parts.append((lo, cut, rows + take))
            lo, rows = cut, 0
            n -= take
            a = cut
        if rows >= chunk_size:
            parts.append((lo, b, rows))
            lo, rows = None, 0
    if lo is not None and rows:
        parts.append((lo, merged[-1][1], rows))
    return parts


def _rows_without_events(counts: Mapping[str, tuple[int, int, int]],
                         layout: StreamLayout) -> bool:
    """Whether some rows of the stream may have no event (so no time, no internal values).

    Exact when the events' seq_nums are contiguous (the usual case); otherwise
    assumed (columns are then made nullable, which is always safe).
    """
    intervals = layout.intervals()
    if not intervals:
        return False
    if len(counts) != 1:
        return True
    n, lo, hi = next(iter(counts.values()))
    if n != hi - lo + 1:
        return True
    return any(a < lo or b - 1 > hi for a, b in intervals)


def _const_dtype(values: list, present_everywhere: bool) -> str:
    """The column dtype of merged values (one per descriptor that has one)."""
    if values and all(isinstance(v, bool) for v in values):
        return "bool" if present_everywhere else "object"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "i8" if present_everywhere else "f8"
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "f8"
    if values and all(isinstance(v, str) for v in values):
        return "string"
    return "object"


def _stream_dtype(data_key: Mapping, filled: bool) -> str:
    """A STREAM: key's column: references (object) unfilled; scalars per row as f8 filled."""
    shape = list(data_key.get("shape") or [])
    dtype = data_key.get("dtype_numpy")
    if filled and shape in ([], [1]) and dtype and np.dtype(dtype).kind in "fiub":
        return "f8"
    return "object"


class TableReader:
    """Reads one partition into a pandas DataFrame (runs on the worker).

    Accepts ``columns=`` so that dask's column projection reaches the store.
    """

    def __init__(self, columns: Sequence[ColumnSpec], time_struct: TimeStruct,
                 fill: tuple | None = None, layout: StreamLayout | None = None,
                 stream_fill: Any = None):
        self.columns = tuple(columns)
        self.time_struct = time_struct
        self.fill = fill  # (FillRecipe, external field names) or None
        self.layout = layout  # rows and references of STREAM: keys
        self.stream_fill = stream_fill  # StreamFill, when STREAM: keys are filled
        self._by_name = {c.name: c for c in self.columns}
        self._constants = {c.name: dict(c.values) for c in self.columns if c.kind in _CONST_KINDS}

    def __dask_tokenize__(self):
        from dask.base import tokenize

        return ("dask_broker.TableReader", self.columns, self.time_struct, self.fill,
                tokenize(self.layout), tokenize(self.stream_fill))

    def __repr__(self) -> str:
        return f"TableReader({[c.name for c in self.columns]})"

    def _select(self, columns: Sequence[str] | None) -> list[ColumnSpec]:
        if columns is None:
            return list(self.columns)
        if isinstance(columns, str):
            columns = [columns]
        return [self._by_name[c] for c in columns]

    def _pandas_dtype(self, col: ColumnSpec):
        if col.kind in _TIME_KINDS:
            return self.time_struct.dtype
        return {"f8": "f8", "i8": "i8", "bool": "bool", "string": pd.StringDtype(),
                "object": "object"}[col.dtype]

    def empty(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        cols = self._select(columns)
        index = pd.Index(np.empty(0, dtype="i8"), name="seq_num")
        return pd.DataFrame({c.name: pd.Series(np.empty(0), dtype=self._pandas_dtype(c), index=index)
                             for c in cols}, index=index)

    def __call__(self, spec: PartitionSpec, columns: Sequence[str] | None = None) -> pd.DataFrame:
        cols = self._select(columns)
        if spec.seq_range[0] >= spec.seq_range[1]:
            return self.empty(columns)
        store = spec.store.open()
        event_cols = [c for c in cols if c.kind != "stream"]
        fields = list(dict.fromkeys(c.field for c in event_cols if c.kind in ("data", "ts")))
        need_ts = any(c.kind == "ts" for c in cols)
        pages = store.iter_event_pages(spec.descriptors, seq_range=spec.seq_range,
                                       fields=fields, timestamps=need_ts)
        lo, hi = spec.seq_range
        capacity = spec.rows if spec.rows is not None else min(hi - lo, 1 << 16)
        frame = self.assemble(pages, event_cols, capacity=capacity)
        if self.layout is not None:
            frame = self._with_stream_rows(frame, cols, lo, hi)
        if self.fill is not None:
            recipe, external = self.fill
            # Only the selected external columns are filled; the handlers (open
            # files) are closed before this task returns.
            frame = recipe.fill_frame(frame, [f for f in external if f in frame.columns])
        return frame

    def _with_stream_rows(self, frame: pd.DataFrame, cols: list[ColumnSpec], lo: int,
                          hi: int) -> pd.DataFrame:
        """Add the rows only stream_datum cover, then the STREAM: columns.

        Rows without an event get NaT / NaN / None in the event columns: no time
        is invented for them.
        """
        covered = self.layout.covered(lo, hi)
        extra = np.setdiff1d(covered, frame.index.to_numpy())
        if len(extra):
            event_names = [c.name for c in cols if c.kind != "stream"]
            index = pd.Index(extra, name="seq_num")
            missing = self.empty(event_names).reindex(index)
            frame = pd.concat([frame, missing]) if len(frame) else missing
            frame = frame.sort_index(kind="mergesort")
        seq = frame.index.to_numpy()
        for c in cols:
            if c.kind != "stream":
                continue
            if self.stream_fill is not None:
                values = self.stream_fill.read(c.field, seq)
            else:
                values = self.layout.references(c.field, seq)
            frame[c.name] = pd.Series(values, index=frame.index, dtype=self._pandas_dtype(c))
        return frame[[c.name for c in cols]]

    def assemble(self, pages: Iterable[EventPageColumns], cols: list[ColumnSpec],
                 capacity: int | None = None) -> pd.DataFrame:
        """Copy pages, as they stream in, into preallocated columns; sort by seq_num.

        ``capacity`` is the expected number of events (the seq_num range width);
        the columns grow if there are more (duplicate seq_num across descriptors).
        Each page is released once copied, so memory is one chunk plus one page.
        """
        if capacity is None:
            pages = list(pages)
            capacity = sum(len(p) for p in pages)
        dtypes = {c.name: "f8" if c.kind in _TIME_KINDS else
                  "object" if c.dtype == "string" else c.dtype for c in cols}
        seq = np.empty(capacity, dtype="i8")
        source_of = np.empty(capacity, dtype="i4")  # which descriptor each row comes from
        descriptors: dict[str, int] = {}
        out = {name: np.empty(capacity, dtype=dt) for name, dt in dtypes.items()}
        pos = 0
        for page in pages:
            k = len(page)
            if pos + k > len(seq):
                size = max(2 * len(seq), pos + k)
                seq = _grown(seq, size, pos)
                source_of = _grown(source_of, size, pos)
                out = {name: _grown(v, size, pos) for name, v in out.items()}
            sl = slice(pos, pos + k)
            seq[sl] = page.seq_num
            source_of[sl] = descriptors.setdefault(page.descriptor, len(descriptors))
            for c in cols:
                if c.kind == "time":
                    out[c.name][sl] = page.time
                    continue
                if c.kind in _CONST_KINDS:
                    _fill_constant(out[c.name], sl, self._constants[c.name], page.descriptor, c)
                    continue
                source = (page.data if c.kind == "data" else page.timestamps).get(c.field)
                try:
                    _copy_into(out[c.name], sl, source, c)
                except ColumnTypeError as err:
                    raise ColumnTypeError(
                        f"field {c.field!r} of descriptor {page.descriptor!r} (seq_num "
                        f"{page.seq_num[0]}..{page.seq_num[-1]}): {err}; read this field with "
                        "docs() to see the stored values") from None
            pos += k
        n = pos
        seq = seq[:n]
        out = {name: v[:n] for name, v in out.items()}
        order = _row_order(seq, source_of[:n])
        if order is not None:
            seq = seq[order]
            out = {k: v[order] for k, v in out.items()}
        index = pd.Index(seq, name="seq_num")
        data = {}
        for c in cols:
            values = out[c.name]
            if c.kind in _TIME_KINDS:
                values = self.time_struct.apply(values)
            elif c.dtype == "string":
                values = pd.array(values, dtype=pd.StringDtype())
            data[c.name] = pd.Series(values, index=index, name=c.name, copy=False)
        return pd.DataFrame(data, index=index, copy=False)


_CONST_KINDS = ("const", "const_ts")
_TIME_KINDS = ("time", "ts", "const_ts")


def _fill_constant(target: np.ndarray, sl: slice, values: Mapping[str, Any], descriptor: str,
                   col: ColumnSpec) -> None:
    """Set a page's rows of a ``const`` column to its descriptor's value (missing if none)."""
    value = values.get(descriptor)
    if value is None:
        target[sl] = col.missing if col.dtype != "bool" else False
    elif target.dtype == object:
        target[sl].fill(value)  # a list or dict stays one cell's value
    else:
        target[sl] = value


def _row_order(seq: np.ndarray, source: np.ndarray) -> np.ndarray | None:
    """Rows in seq_num order (stable), keeping the last of repeated (descriptor, seq_num).

    Repeats of a seq_num within one descriptor exist in legacy data; as databroker
    does, the one stored last wins.  Rows of different descriptors with one
    seq_num are all kept.  None when the rows are already in order and unique.
    """
    if len(seq) < 2:
        return None
    steps = np.diff(seq)
    if np.all(steps > 0):
        return None
    order = np.argsort(seq, kind="stable")
    sorted_seq = seq[order]
    if not np.any(sorted_seq[1:] == sorted_seq[:-1]):
        return order
    keys = sorted_seq * (int(source.max()) + 1) + source[order]
    # the last occurrence of each key, in seq order
    _, last_from_end = np.unique(keys[::-1], return_index=True)
    keep = np.sort(len(keys) - 1 - last_from_end)
    return order[keep]


def _numeric(values: list, dtype: np.dtype) -> np.ndarray:
    """A list column as an array, None as NaN where the column is float."""
    if dtype.kind == "f":
        values = [np.nan if v is None else v for v in values]
    try:
        return np.asarray(values)
    except (ValueError, TypeError):
        return np.asarray(values, dtype=object)


def _example(values: Any) -> Any:
    for v in values:
        if v is None or not isinstance(v, (int, float, bool, np.generic)) or (
                isinstance(v, float) and not float(v).is_integer()):
            return v
    return values[0]


def _grown(arr: np.ndarray, size: int, used: int) -> np.ndarray:
    new = np.empty(size, dtype=arr.dtype)
    new[:used] = arr[:used]
    return new


_ACCEPTED_KINDS = {"i": "iu", "b": "b", "f": "fiub"}


def _copy_into(target: np.ndarray, sl: slice, source: Any, col: ColumnSpec) -> None:
    """Copy one page's column into a slice of the output column.

    Values that do not fit the column's dtype (a float or None in a column
    declared integer, a string in a number column) raise ColumnTypeError rather
    than being cast silently.
    """
    if source is None:  # field absent from this page's descriptor
        target[sl] = col.missing if col.dtype != "bool" else False
        return
    if target.dtype != object:
        values = source if isinstance(source, np.ndarray) else _numeric(source, target.dtype)
        if values.ndim != 1 or values.dtype.kind not in _ACCEPTED_KINDS[target.dtype.kind]:
            if target.dtype.kind == "i" and values.ndim == 1 and values.dtype.kind == "f" and \
                    np.all(np.isfinite(values)) and np.all(values == np.round(values)):
                target[sl] = values  # integral floats (e.g. 3.0) in an integer column
                return
            raise ColumnTypeError(
                f"values of kind {values.dtype} (for example {_example(source)!r}) do not fit "
                f"the column's dtype {target.dtype}, which the descriptor's data_keys declare")
        target[sl] = values
        return
    start = sl.start
    if isinstance(source, np.ndarray) and source.ndim == 1:
        target[sl] = source.astype(object) if col.dtype != "string" else source.astype(str)
        return
    for i, v in enumerate(source):
        target[start + i] = np.asarray(v) if col.dtype == "object" and isinstance(v, list) else v
