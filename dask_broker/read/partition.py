"""The one partition reader: store pages -> numpy columns -> a pandas partition or a block.

:class:`PartitionReader` runs in the tasks (on the workers).  For a
:class:`~dask_broker.read.plan.PartitionSpec` it opens the store from its URI
(once per process, :func:`~dask_broker.stores.open_store`), reads the pages
that overlap the seq_num range -- only the fields asked for -- and copies them,
as they stream in, into preallocated columns; then it adds the rows only
stream_datum cover, reads STREAM: keys, and fills external fields through the
one fill path (:class:`~dask_broker.fill.datum.DatumReader`).

Two outputs from the same columns: :meth:`PartitionReader.__call__` gives a
pandas DataFrame (``dd.from_map`` tasks, ``table_chunks``, ``export``; it
accepts ``columns=``, so dask's projection reaches the store), and
:meth:`PartitionReader.read_block` gives one column as a numpy block --
``(rows, *frame)`` for frames, written straight into the block -- for
``to_xarray``'s dask arrays.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ColumnTypeError
from ..stores.base import EventPageColumns
from ..stream_data import StreamLayout
from ..timestruct import TimeStruct
from .blocks import block_pool
from .plan import ColumnSpec, FrameSpec, PartitionSpec

if TYPE_CHECKING:
    from ..fill.recipe import FillRecipe
    from ..fill.stream import StreamFill

__all__ = ["PartitionReader"]

_CONST_KINDS = ("const", "const_ts")
_TIME_KINDS = ("time", "ts", "const_ts")
_PANDAS = {"f8": np.dtype("f8"), "i8": np.dtype("i8"), "bool": np.dtype("bool"),
           "object": np.dtype("O")}


class PartitionReader:
    """Reads partitions of one planned stream (picklable; runs in the tasks).

    Parameters
    ----------
    columns
        The plan's column specs.
    time_struct
        How time columns are shown.
    layout
        Rows and references of the stream's STREAM: keys (None: it has none).
    recipe, external
        How the filled external fields (``external``) are read.
    stream_fill
        How the filled STREAM: keys are read.
    frames
        ``(field, FrameSpec)`` of the filled fields.
    """

    def __init__(self, columns: Sequence[ColumnSpec], time_struct: TimeStruct, *,
                 layout: StreamLayout | None = None, recipe: "FillRecipe | None" = None,
                 external: Sequence[str] = (), stream_fill: "StreamFill | None" = None,
                 frames: Sequence[tuple[str, FrameSpec]] = ()):
        self.columns = tuple(columns)
        self.time_struct = time_struct
        self.layout = layout
        self.recipe = recipe
        self.external = tuple(external) if recipe is not None else ()
        self.stream_fill = stream_fill
        self.frames = tuple(frames)
        self._by_name = {c.name: c for c in self.columns}
        self._constants = {c.name: dict(c.values) for c in self.columns if c.kind in _CONST_KINDS}

    def __dask_tokenize__(self):
        from dask.base import tokenize

        return ("dask_broker.PartitionReader", self.columns, self.time_struct,
                tokenize(self.recipe), self.external, tokenize(self.layout),
                tokenize(self.stream_fill), self.frames)

    def __repr__(self) -> str:
        return f"PartitionReader({[c.name for c in self.columns]})"

    # ------------------------------------------------------------ pandas
    def _select(self, columns: Sequence[str] | str | None) -> list[ColumnSpec]:
        if columns is None:
            return list(self.columns)
        if isinstance(columns, str):
            columns = [columns]
        return [self._by_name[c] for c in columns]

    def _pandas_dtype(self, col: ColumnSpec):
        if col.kind in _TIME_KINDS:
            return self.time_struct.dtype
        return pd.StringDtype() if col.dtype == "string" else _PANDAS[col.dtype]

    def empty(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The partition with no rows (dask's ``meta``): a shallow copy of a frame
        built once per process for these column names and dtypes."""
        return _empty_frame(tuple((c.name, self._pandas_dtype(c))
                                  for c in self._select(columns))).copy(deep=False)

    def __call__(self, spec: PartitionSpec, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One partition as a pandas DataFrame indexed by ``seq_num``."""
        cols = self._select(columns)
        if spec.seq_range[0] >= spec.seq_range[1]:
            return self.empty(columns)
        seq, values = self.read_columns(spec, cols)
        return self._frame(seq, values, cols)

    def _frame(self, seq: np.ndarray, values: Mapping[str, np.ndarray],
               cols: list[ColumnSpec]) -> pd.DataFrame:
        index = pd.Index(seq, name="seq_num", copy=False)
        data = {}
        for c in cols:
            column = values[c.name]
            if c.kind in _TIME_KINDS:
                column = self.time_struct.apply(column)
            elif c.dtype == "string":
                column = pd.array(column, dtype=pd.StringDtype())
            elif column.dtype == object:
                # as the meta says: pandas 3 would make an object array of str (unfilled
                # datum ids) a "str" column
                column = pd.Series(column, index=index, dtype=object, copy=False)
            data[c.name] = column  # arrays, not Series: half the cost of a small partition
        return pd.DataFrame(data, index=index, copy=False)

    # ------------------------------------------------------------ columns
    def read_columns(self, spec: PartitionSpec, cols: Sequence[ColumnSpec], *,
                     fill: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(seq_num, {column name: values})`` of a partition, in table order, filled
        (``fill=False``: external fields keep their datum ids).

        Times are epoch seconds here (converted when a DataFrame is made); string
        columns are object arrays.
        """
        cols = list(cols)
        lo, hi = spec.seq_range
        event_cols = [c for c in cols if c.kind != "stream"]
        seq, values = self._event_columns(spec, event_cols)
        if self.layout is not None:
            seq, values = self._with_stream_rows(seq, values, event_cols, lo, hi)
            for c in cols:
                if c.kind == "stream":
                    if self.stream_fill is not None:
                        values[c.name] = self.stream_fill.read(c.field, seq)
                    else:
                        values[c.name] = self.layout.references(c.field, seq)
        filled = [c for c in cols if c.kind == "data" and c.field in self.external]
        if fill and filled and len(seq):
            reader = self.recipe.reader()
            frames = dict(self.frames)
            for c in filled:
                values[c.name] = self._filled_cells(values[c.name], frames.get(c.field), reader)
        return seq, values

    def _filled_cells(self, column: np.ndarray, frame: FrameSpec | None, reader) -> np.ndarray:
        """An object column of datum ids with each id replaced by its data.

        With the shape of the handler's values known (read from the first file when
        planning), the partition's frames are read straight into one block (one
        allocation) and each cell is a view of its row; otherwise each cell is what
        the handler's ``read_many`` gives.
        """
        if frame is None or frame.source != "resource" or not frame.shape:
            return self.recipe.fill_column(column, reader=reader)
        present = np.fromiter((isinstance(v, str) for v in column), dtype=bool,
                              count=len(column))
        rows = np.flatnonzero(present)
        if not len(rows):
            return column
        block = reader.read_into(column[rows].tolist(),
                                 block_pool().empty((len(rows), *frame.shape), frame.dtype))
        out = column.copy()
        for row, value in zip(rows.tolist(), block, strict=True):
            out[row] = value  # element-wise: a view of the block's row
        return out

    def _event_columns(self, spec: PartitionSpec, cols: list[ColumnSpec]
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        store = spec.store.open()
        fields = list(dict.fromkeys(c.field for c in cols if c.kind in ("data", "ts")))
        need_ts = any(c.kind == "ts" for c in cols)
        pages = store.iter_event_pages(spec.descriptors, seq_range=spec.seq_range,
                                       fields=fields, timestamps=need_ts)
        lo, hi = spec.seq_range
        capacity = spec.rows if spec.rows is not None else min(hi - lo, 1 << 16)
        return self.assemble(pages, cols, capacity=capacity)

    def assemble(self, pages: Iterable[EventPageColumns], cols: list[ColumnSpec],
                 capacity: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Copy pages, as they stream in, into preallocated columns; sort by seq_num.

        ``capacity`` is the expected number of events (the columns grow if there
        are more: repeated seq_nums across descriptors).  Columns of one dtype are
        rows of one 2-d block (one allocation, which the kernel backs with huge
        pages when it is large; each column a contiguous view).  Each page is
        released once copied, so memory is one chunk plus one page.
        """
        if capacity is None:
            pages = list(pages)
            capacity = sum(len(p) for p in pages)
        dtypes = {c.name: "f8" if c.kind in _TIME_KINDS else
                  "object" if c.dtype == "string" else c.dtype for c in cols}
        blocks = _Blocks(dtypes, capacity)
        out = blocks.columns
        source_of = None  # which descriptor each row comes from (when there are several)
        descriptors: dict[str, int] = {}
        pos = 0
        ordered = True  # rows so far strictly increasing in seq_num
        last = None
        for page in pages:
            k = len(page)
            if k == 0:
                continue
            if pos + k > blocks.capacity:
                blocks.grow(max(2 * blocks.capacity, pos + k), pos)
                out = blocks.columns
                if source_of is not None:
                    source_of = _grown(source_of, blocks.capacity, pos)
            sl = slice(pos, pos + k)
            page_seq = page.seq_num
            blocks.seq[sl] = page_seq
            index = descriptors.setdefault(page.descriptor, len(descriptors))
            if index and source_of is None:
                source_of = np.zeros(blocks.capacity, dtype="i4")
            if source_of is not None:
                source_of[sl] = index
            if ordered:
                ordered = (last is None or int(page_seq[0]) > last) and (
                    k == 1 or bool((page_seq[1:] > page_seq[:-1]).all()))
                last = int(page_seq[-1])
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
            page = page_seq = source = None  # copied: let it go before the next is read
        n = pos
        seq = blocks.seq[:n]
        out = {name: v[:n] for name, v in out.items()}
        if not ordered:
            source = source_of[:n] if source_of is not None else np.zeros(n, dtype="i4")
            order = _row_order(seq, source)
            if order is not None:
                seq = seq[order]
                out = {k: v[order] for k, v in out.items()}
        return seq, out

    def _with_stream_rows(self, seq: np.ndarray, values: dict[str, np.ndarray],
                          cols: list[ColumnSpec], lo: int, hi: int
                          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Add the rows only stream_datum cover (no time is invented for them: NaN / None)."""
        extra = np.setdiff1d(self.layout.covered(lo, hi), seq)
        if not len(extra):
            return seq, values
        order = np.argsort(np.concatenate([seq, extra]), kind="mergesort")
        out = {}
        for c in cols:
            v = values[c.name]
            missing = np.full(len(extra), np.nan if v.dtype.kind == "f" else None,
                              dtype=v.dtype if v.dtype.kind in "fO" else object)
            out[c.name] = np.concatenate([v, missing])[order]
        return np.concatenate([seq, extra])[order], out

    # ------------------------------------------------------------ numpy blocks
    def read_block(self, spec: PartitionSpec, name: str, positions: np.ndarray | None,
                   frame_shape: tuple[int, ...], dtype: np.dtype, missing: Any,
                   out: np.ndarray | None = None) -> np.ndarray:
        """One column of a partition as a numpy block ``(rows, *frame_shape)``.

        ``positions``: the rows wanted, counted from the partition's first row
        (None: all).  Filled frames are read straight into the block (``out``, if
        given: e.g. a slice of the whole column), and only for the rows wanted.
        """
        col = self._by_name[name]
        if col.kind == "stream" and self.stream_fill is not None:
            seq = self._rows(spec)
            if positions is not None:
                seq = seq[positions]
            return self._stream_block(col.field, seq, frame_shape, dtype, missing, out)
        fill = col.field in self.external
        # datum ids first; frames below, for the rows wanted only
        seq, values = self.read_columns(spec, [col], fill=False)
        column = values[col.name]
        if positions is not None:
            column = column[positions]
        if out is None:
            out = block_pool().empty((len(column), *frame_shape), dtype)
        elif len(out) != len(column):
            raise ValueError(f"out holds {len(out)} rows; the partition has {len(column)}")
        if fill:
            present = np.fromiter((isinstance(v, str) for v in column), dtype=bool,
                                  count=len(column))
            if not present.all():
                out[~present] = missing
            if present.any():
                ids = column[present].tolist()
                reader = self.recipe.reader()
                if present.all():
                    reader.read_into(ids, out)
                else:
                    out[present] = reader.read_into(
                        ids, np.empty((len(ids), *frame_shape), dtype=dtype))
            return out
        if not frame_shape:
            if column.dtype == object and dtype != object:
                column = np.array([missing if v is None or v is pd.NA else v for v in column],
                                  dtype=dtype)
            out[...] = column
            return out
        for i, v in enumerate(column):
            out[i] = missing if v is None or (np.ndim(v) == 0 and v != v) else np.asarray(v)
        return out

    def _rows(self, spec: PartitionSpec) -> np.ndarray:
        """The seq_nums of a partition's rows (events and stream_datum), in table order."""
        seq, _ = self.read_columns(spec, [])
        return seq

    def _stream_block(self, key: str, seq: np.ndarray, frame_shape: tuple[int, ...],
                      dtype: np.dtype, missing: Any, out: np.ndarray | None = None
                      ) -> np.ndarray:
        resource, _ = self.stream_fill.layout.blocks(key).locate(seq)
        if out is None:
            out = block_pool().empty((len(seq), *frame_shape), dtype)
        if len(seq) and np.all(resource >= 0):
            if out.dtype == object and not frame_shape:  # shape not known yet: as read
                return np.asarray(self.stream_fill.read(key, seq, stacked=True))
            return self.stream_fill.read_into(key, seq, out)
        for i, v in enumerate(self.stream_fill.read(key, seq)):
            out[i] = missing if v is None or (np.ndim(v) == 0 and v != v) else v
        return out


class _Blocks:
    """Preallocated output columns: those of one dtype are rows of one 2-d block."""

    def __init__(self, dtypes: Mapping[str, str], capacity: int):
        self.dtypes = dict(dtypes)
        self.capacity = capacity
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        by_dtype: dict[str, list[str]] = {}
        for name, dtype in self.dtypes.items():
            by_dtype.setdefault(dtype, []).append(name)
        # seq_num shares the block of the i8 columns.  Blocks come from the process's
        # pool: memory of a dropped partition is written again without page faults.
        ints = by_dtype.setdefault("i8", [])
        block = block_pool().empty((len(ints) + 1, capacity), "i8")
        self.seq = block[0]
        self.columns = {name: block[i + 1] for i, name in enumerate(ints)}
        for dtype, names in by_dtype.items():
            if dtype == "i8":
                continue
            block = block_pool().empty((len(names), capacity), dtype)
            self.columns.update((name, block[i]) for i, name in enumerate(names))

    def grow(self, capacity: int, used: int) -> None:
        seq, columns = self.seq, self.columns
        self.capacity = capacity
        self._allocate(capacity)
        self.seq[:used] = seq[:used]
        for name, values in columns.items():
            self.columns[name][:used] = values[:used]


@functools.lru_cache(maxsize=256)
def _empty_frame(dtypes: tuple[tuple[str, Any], ...]) -> pd.DataFrame:
    """A frame with no rows and these ``(column, dtype)``, its columns of one dtype
    in one block (dask copies its ``meta`` per collection, 1.5x faster so)."""
    index = pd.Index(np.empty(0, dtype="i8"), name="seq_num")
    data = {name: (np.empty(0, dtype=dtype) if isinstance(dtype, np.dtype)
                   else pd.array([], dtype=dtype)) for name, dtype in dtypes}
    return pd.DataFrame(data, index=index, copy=False).copy()  # copy(): one block per dtype


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
