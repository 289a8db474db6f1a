"""ReadPlan: everything needed to read one stream of one run, built once on the client.

Plan on the client, read in tasks (the model is dask's ``from_map`` readers).
:func:`plan_read` validates the arguments and reads, once, what every reader
needs and nothing of the event data: the stream's descriptors, its event
counts and stop state, its stream_datum layout, and -- when filling -- the
run's resources with their handler classes (a :class:`~dask_broker.fill.FillRecipe`)
and stream_resources (a :class:`~dask_broker.fill.StreamFill`).  From these it
makes the column specs, small frozen :class:`PartitionSpec` s with known
divisions, and the size of a filled frame (from the descriptor, or from one
metadata read of the first file when it declares no ``dtype_numpy``).  When
filled frames come from several files and partitions are sized by bytes, the
partitions follow the files (:func:`~dask_broker.read.bounds.file_partition_bounds`:
whole files, or equal slices of a file larger than a partition).

``table``, ``table_chunks``, ``table_chunk``, ``to_xarray`` and ``export`` all
read through one plan and its :class:`~dask_broker.read.partition.PartitionReader`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import InvalidArgumentError, NoEventDescriptors, UnknownFieldError
from ..field_select import Constant, FieldSelection, constants
from ..stores import StoreRef
from ..stream_data import StreamLayout, stream_keys
from ..timestruct import TimeStruct
from ..tunables import frame_partition_bytes, parse_size, partition_bytes
from .bounds import event_runs, file_partition_bounds, partition_bounds, rows_without_events
from .columns import (
    ARRAY_GUESS_BYTES,
    FRAME_GUESS_BYTES,
    column_dtype,
    const_dtype,
    itemsize,
    stream_dtype,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

    from ..fill.recipe import FillRecipe
    from ..fill.stream import StreamFill
    from .partition import PartitionReader

__all__ = ["ColumnSpec", "PartitionSpec", "FrameSpec", "ReadPlan", "plan_read", "plan_run_fill",
           "run_uid_of", "stream_descriptors", "partition_bounds"]



def run_uid_of(run: Any) -> str:
    """The uid of a run given as a Header, a start document or a uid."""
    if isinstance(run, str):
        return run
    if isinstance(run, Mapping):
        return run["uid"]
    return run.uid


def stream_descriptors(store, run_uid: str, stream_name: str | None,
                       descriptors: Sequence[dict] | None = None) -> list[dict]:
    """The run's descriptors of a stream (all of them for None); NoEventDescriptors if none."""
    every = store.descriptors(run_uid) if descriptors is None else list(descriptors)
    descs = [d for d in every if stream_name is None or d.get("name", "primary") == stream_name]
    if not descs:
        names = list(dict.fromkeys(d.get("name", "primary") for d in every))
        raise NoEventDescriptors(
            f"run {run_uid!r} has no descriptor"
            + (f" for stream {stream_name!r}" if stream_name is not None else "")
            + f"; its streams are {names}")
    return descs


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


@dataclass(frozen=True)
class FrameSpec:
    """Shape and dtype of one row's value of a filled field.

    ``source`` says where they come from: ``"descriptor"`` (``shape`` and
    ``dtype_numpy`` of its data_key), ``"resource"`` (the handler's metadata of
    the first row's file, read at plan time) or ``"unknown"`` (the file could not
    be read when planning: sizes are guessed and the shape is found when read).
    """

    shape: tuple[int, ...]
    dtype: str | None
    source: str

    @property
    def known(self) -> bool:
        return self.dtype is not None

    @property
    def nbytes(self) -> int:
        if self.dtype is None:
            return FRAME_GUESS_BYTES
        return np.dtype(self.dtype).itemsize * math.prod(self.shape)


@dataclass(frozen=True, eq=False)
class ReadPlan:
    """Everything needed to read one stream of one run, computed once on the client.

    Picklable and small: the catalog's URI, documents, column and partition
    specs, the fill recipes -- never a connection or an open file.

    Examples
    --------
    >>> plan = plan_read(db.event_source, h, "primary", fields=["det"])  # doctest: +SKIP
    >>> plan.npartitions, plan.divisions                                  # doctest: +SKIP
    (1, (1, 100))
    >>> df = plan.to_dask()                                                # doctest: +SKIP
    """

    store: StoreRef
    run_uid: str
    stream_name: str
    descriptors: tuple[dict, ...]
    #: ((descriptor uid, (count, min seq_num, max seq_num)), ...)
    counts: tuple
    stop_uid: str | None
    columns: tuple[ColumnSpec, ...]
    specs: tuple[PartitionSpec, ...]
    divisions: tuple
    time_struct: TimeStruct
    chunk_size: int
    #: whether external data (datum and stream_datum) is filled
    fill: bool = False
    #: where the stream's STREAM: keys live (None if it has none)
    layout: StreamLayout | None = None
    #: how the filled external (datum) fields are read, and which they are
    recipe: "FillRecipe | None" = None
    external: tuple[str, ...] = ()
    #: how the filled STREAM: keys are read
    stream_fill: "StreamFill | None" = None
    #: (field, FrameSpec) of each filled field (external and STREAM:)
    frames: tuple[tuple[str, FrameSpec], ...] = ()
    #: run attributes for to_xarray (scan_id)
    attrs: tuple[tuple[str, Any], ...] = dc_field(default=())
    #: the stream_resource documents the filled STREAM: keys read (``stream_fill``'s)
    stream_resources: tuple[dict, ...] = ()
    #: the source's root_map when planned (old root -> new root)
    root_map: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return (f"ReadPlan(run={self.run_uid!r}, stream={self.stream_name!r}, "
                f"columns={[c.name for c in self.columns]}, npartitions={self.npartitions}, "
                f"fill={self.fill})")

    @property
    def npartitions(self) -> int:
        return len(self.specs)

    @property
    def has_rows(self) -> bool:
        return self.divisions[0] is not None

    def frame(self, field: str) -> FrameSpec | None:
        return dict(self.frames).get(field)

    def reader(self) -> "PartitionReader":
        """The partition reader (picklable; runs in the tasks)."""
        from .partition import PartitionReader

        return PartitionReader(self.columns, self.time_struct, layout=self.layout,
                               recipe=self.recipe, external=self.external,
                               stream_fill=self.stream_fill, frames=self.frames)

    def meta(self) -> "pd.DataFrame":
        return self.reader().empty()

    def to_dask(self) -> "dd.DataFrame":
        """The lazy Dask DataFrame: one task per partition spec (``dd.from_map``)."""
        import dask
        import dask.dataframe as dd

        with dask.config.set({"dataframe.convert-string": False}):
            # Array columns hold numpy arrays; dask must not turn object columns into strings.
            return dd.from_map(self.reader(), list(self.specs), meta=self.meta(),
                               divisions=self.divisions, label=f"table-{self.stream_name}",
                               enforce_metadata=False)

    def chunks(self) -> Iterator["pd.DataFrame"]:
        """The partitions as pandas DataFrames, read one at a time in this process."""
        reader = self.reader()
        for spec in self.specs:
            yield reader(spec)

    def chunk(self, number: int) -> "pd.DataFrame":
        """One partition as a pandas DataFrame (IndexError past the end)."""
        n = self.npartitions if self.has_rows else 0
        if not isinstance(number, int) or not -n <= number < n:
            raise IndexError(
                f"chunk {number!r} of stream {self.stream_name!r} of run {self.run_uid!r} does "
                f"not exist: with chunk_size={self.chunk_size} there are {n} chunks "
                f"(0 to {n - 1})")
        return self.reader()(self.specs[number])


# ---------------------------------------------------------------- planning
def plan_read(source: Any, run: Any, stream_name: str = "primary", *,
              fields: Sequence[str] | None = None, fill: bool = False,
              time_struct: TimeStruct | None = None, timestamps: bool = False,
              chunk_size: int | str | None = None, start: Mapping | None = None) -> ReadPlan:
    """Plan the read of one stream of a run: columns, partitions, fill recipes.

    Parameters
    ----------
    source
        What holds the run: an :class:`~dask_broker.EventSource` (its ``store``,
        ``registry``, ``readers`` and ``root_map`` are used).
    run
        A Header, a start document or a run uid.
    stream_name, fields, timestamps
        As :meth:`EventSource.table <dask_broker.EventSource.table>`.
    fill
        Fill external fields (datum) and STREAM: keys (stream_datum).
    time_struct
        How times are shown (default ``TimeStruct()``); resolved to the client's zone.
    chunk_size
        Rows per partition, or a byte size (``"64MiB"``); default: the dask config
        ``dask_broker.partition-bytes``.
    start
        The run's start document, if the caller has it (saves a query).

    Raises
    ------
    InvalidArgumentError, NoEventDescriptors, UnknownFieldError

    Examples
    --------
    >>> plan = plan_read(db.event_source, h, fill=True, fields=["img"])  # doctest: +SKIP
    >>> plan.frame("img")                                                 # doctest: +SKIP
    FrameSpec(shape=(1, 256, 256), dtype='<u2', source='resource')
    """
    if time_struct is None:
        time_struct = TimeStruct()
    elif not isinstance(time_struct, TimeStruct):
        raise InvalidArgumentError(
            f"time_struct must be a dask_broker.TimeStruct, not {type(time_struct).__name__}")
    time_struct = time_struct.resolved()  # the client's local zone, not each worker's
    target_bytes = None
    if isinstance(chunk_size, str):
        target_bytes, chunk_size = parse_size(chunk_size, "chunk_size"), None
    elif chunk_size is not None and (isinstance(chunk_size, bool) or
                                     not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidArgumentError(f"chunk_size must be a positive int (rows) or a byte size "
                                   f"such as '64MiB', not {chunk_size!r}")
    store = source.store
    run_uid = run_uid_of(run)
    descs = stream_descriptors(store, run_uid, stream_name)
    all_fields = list(dict.fromkeys(k for d in descs for k in d["data_keys"]))
    uids = tuple(d["uid"] for d in descs)
    counts = store.event_counts(uids)
    stop = store.get_stop(run_uid)
    merged: dict[str, dict[str, Constant]] = {}  # key -> {descriptor uid: Constant}
    if fields is None:
        fields = all_fields
    else:
        selection = FieldSelection(fields)
        fields = selection.select(all_fields)
        if start is None:
            start = store.get_start(run_uid)
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
    layout = stream_resources = None
    if streamed:
        stream_resources = store.stream_resources(run_uid)
        layout = StreamLayout.build(descs, store.stream_datums(uids), stream_resources)
    gaps = layout is not None and rows_without_events(counts, layout)
    external = tuple(f for f in fields if f not in streamed and any(
        d["data_keys"].get(f, {}).get("external") for d in descs))
    recipe = stream_fill = None
    if fill and external:
        from ..fill.recipe import FillRecipe

        recipe = FillRecipe.for_run(store, descs, store.resources(run_uid), source.registry,
                                    source.root_map)
    else:
        external = ()
    filled_stream_resources: tuple[dict, ...] = ()
    if fill and layout is not None and streamed & set(fields):
        from ..fill.stream import StreamFill

        stream_fill = StreamFill.for_stream(layout, descs, stream_resources, source.readers,
                                            source.root_map)
        used = set(layout.resources)
        filled_stream_resources = tuple(r for r in stream_resources if r["uid"] in used)
    columns = [ColumnSpec("time", None, "time", "time")]
    frames: dict[str, FrameSpec] = {}
    sizes = 16  # seq_num and time
    for f in fields:
        keys = [d["data_keys"][f] for d in descs if f in d["data_keys"]]
        if f in streamed:
            col = ColumnSpec(f, f, "stream", stream_dtype(keys[0], stream_fill is not None))
            if stream_fill is not None:
                frames[f] = _stream_frame(stream_fill, f)
                sizes += frames[f].nbytes if frames[f].shape else 8
            else:
                sizes += ARRAY_GUESS_BYTES
        else:
            col = ColumnSpec(f, f, "data",
                             column_dtype(keys, len(keys) == len(descs) and not gaps))
            if f in external:
                frames[f] = _datum_frame(f, keys, recipe, store, uids, counts)
                sizes += frames[f].nbytes
            else:
                sizes += itemsize(col, keys)
        columns.append(col)
    for key, per_desc in merged.items():
        values = tuple((uid, c.value) for uid, c in per_desc.items())
        dtype = const_dtype([v for _, v in values], len(values) == len(descs) and not gaps)
        columns.append(ColumnSpec(key, key, "const", dtype, values))
        sizes += 8 if dtype in ("f8", "i8", "bool") else ARRAY_GUESS_BYTES
    if timestamps:
        for f in fields:
            if f not in streamed:  # stream_datum carry no timestamps
                columns.append(ColumnSpec(f"ts_{f}", f, "ts", "f8"))
                sizes += 8
        for key, per_desc in merged.items():
            stamps = tuple((uid, c.timestamp) for uid, c in per_desc.items())
            columns.append(ColumnSpec(f"ts_{key}", key, "const_ts", "f8", stamps))
            sizes += 8
    by_bytes = chunk_size is None
    if chunk_size is None:
        if target_bytes is None:
            has_frames = any(f.shape or not f.known for f in frames.values())
            target_bytes = frame_partition_bytes() if has_frames else partition_bytes()
        chunk_size = target_bytes // sizes
        chunk_size = max(1024, chunk_size // 1024 * 1024) if chunk_size >= 1024 \
            else max(1, chunk_size)
    state = (tuple(sorted(counts.items())), stop["uid"] if stop else None)
    bounds_ = [(c[1], c[2]) for c in counts.values()]
    if layout is not None:
        state = (*state, layout.__dask_tokenize__())
        if layout.seq_bounds() is not None:
            bounds_.append(layout.seq_bounds())
    ref = store.ref
    if bounds_:
        parts = None
        rows = sum(c[0] for c in counts.values())
        if by_bytes and layout is None and recipe is not None and \
                1 < len(recipe.resources) <= rows // 2:
            # frames from several files of several rows each (with a file per row or so,
            # every cut is near a file's end anyway): partitions follow the files of the
            # largest field
            field = max(external, key=lambda f: frames[f].nbytes)
            parts = _file_parts(store, uids, field, recipe, chunk_size)
        if not parts:
            runs = event_runs(store, counts)
            if layout is not None:
                runs += [(a, b, b - a) for a, b in layout.intervals()]
            parts = partition_bounds(runs, chunk_size)
        specs = tuple(PartitionSpec(ref, uids, (a, b), state, n) for a, b, n in parts)
        divisions = (*(a for a, _, _ in parts), parts[-1][1] - 1)
    else:
        specs = (PartitionSpec(ref, uids, (0, 0), state),)
        divisions = (None, None)
    attrs = ()
    if start is not None and "scan_id" in start:
        attrs = (("scan_id", start["scan_id"]),)
    return ReadPlan(ref, run_uid, stream_name, tuple(descs), tuple(sorted(counts.items())),
                    stop["uid"] if stop else None, tuple(columns), specs, divisions,
                    time_struct, chunk_size, bool(fill), layout, recipe, external, stream_fill,
                    tuple(frames.items()), attrs, filled_stream_resources,
                    tuple(sorted((source.root_map or {}).items())))


def _file_parts(store, uids: tuple[str, ...], field: str, recipe: "FillRecipe",
                chunk_size: int) -> list[tuple[int, int, int]]:
    """Partitions of at most ``chunk_size`` rows that follow the files of ``field``'s datum.

    Reads the field's datum ids (one column, no frame) and names each row's
    resource: the id's prefix where it is ``<resource uid>/<n>`` of one of the
    run's resources (event-model's and ophyd's form), else its datum document.
    """
    seqs, ids = [], []
    for page in store.iter_event_pages(list(uids), fields=[field], timestamps=False):
        values = page.data.get(field)
        seqs.append(np.asarray(page.seq_num, dtype="i8"))
        ids.extend(values if values is not None else [None] * len(page))
    if not ids:
        return []
    is_id = np.fromiter((isinstance(i, str) for i in ids), dtype=bool, count=len(ids))
    files = np.full(len(ids), -1, dtype="i8")
    if is_id.any():
        named = np.array([i for i in ids if isinstance(i, str)], dtype=str)
        prefixes, inverse = np.unique(np.char.rpartition(named, "/")[:, 0],
                                      return_inverse=True)
        code = {r["uid"]: i for i, r in enumerate(recipe.resources)}
        owner = np.array([code.get(p, -1) for p in prefixes.tolist()], dtype="i8")[inverse]
        if (owner < 0).any():  # ids of another form: their datum documents say
            unknown = np.unique(named[owner < 0])
            docs = store.datum(unknown.tolist())
            resources = [docs[i]["resource"] if i in docs else None for i in unknown.tolist()]
            found = np.array([-1 if r is None else code.setdefault(r, len(code))
                              for r in resources], dtype="i8")
            owner[owner < 0] = found[np.searchsorted(unknown, named[owner < 0])]
        files[is_id] = owner
    seq = np.concatenate(seqs)
    order = np.argsort(seq, kind="stable")
    return file_partition_bounds(seq[order], files[order], chunk_size)


def _datum_frame(field: str, keys: list[Mapping], recipe: "FillRecipe", store,
                 uids: tuple[str, ...], counts: Mapping) -> FrameSpec:
    """What a filled external field's rows hold: declared, else read from the first file."""
    shape = next((dk.get("shape") for dk in keys if dk.get("shape")), None)
    dtype = next((dk.get("dtype_numpy") for dk in keys if dk.get("dtype_numpy")), None)
    if dtype and shape and all(isinstance(s, int) and s > 0 for s in shape):
        return FrameSpec(tuple(shape), np.dtype(dtype).str, "descriptor")
    probed = _probe_first_datum(field, recipe, store, uids, counts)
    if probed is not None:
        return FrameSpec(probed[0], probed[1].str, "resource")
    return FrameSpec(tuple(shape or ()), None, "unknown")


def _probe_first_datum(field: str, recipe: "FillRecipe", store, uids: tuple[str, ...],
                       counts: Mapping) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of the first row's datum: one metadata read of its file.

    Best effort: a file that cannot be read now (missing, no handler) gives None --
    the error, if it lasts, is raised where the data is read.
    """
    firsts = [(c[1], uid) for uid, c in counts.items() if c[0]]
    if not firsts:
        return None
    lo, uid = min(firsts)
    try:
        for page in store.iter_event_pages([uid], seq_range=(lo, lo + 1), fields=[field],
                                           timestamps=False):
            values = page.data.get(field)
            datum_id = values[0] if values is not None and len(values) else None
            if isinstance(datum_id, str):
                return recipe.reader(retry=False).describe(datum_id)
            return None
    except Exception:  # noqa: BLE001 -- planning never fails on a file it cannot read yet
        return None
    return None


def _stream_frame(stream_fill: "StreamFill", key: str) -> FrameSpec:
    shape = stream_fill.shape(key)
    if shape.known:
        return FrameSpec(tuple(shape.row_shape), np.dtype(shape.dtype).str, "descriptor")
    return FrameSpec(tuple(shape.row_shape), None, "unknown")


def plan_run_fill(source: Any, run: Any, *, descriptors: Sequence[dict] | None = None,
                  resources: Sequence[dict] | None = None,
                  retry_intervals: Sequence[float] | None = None
                  ) -> tuple["FillRecipe", "StreamFill | None"]:
    """How every external value of a run is filled: a FillRecipe over its resources and a
    StreamFill over its stream_resources (None if it has none).

    ``descriptors`` and ``resources``, when the caller has read them, are not read again.
    """
    from ..fill.recipe import FillRecipe
    from ..fill.stream import StreamFill

    store = source.store
    run_uid = run_uid_of(run)
    descs = list(store.descriptors(run_uid) if descriptors is None else descriptors)
    if resources is None:
        resources = store.resources(run_uid)
    recipe = FillRecipe.for_run(store, descs, resources, source.registry, source.root_map,
                                retry_intervals)
    stream_fill = None
    if store.supports_stream_data and descs:
        stream_resources = store.stream_resources(run_uid)
        if stream_resources:
            layout = StreamLayout.build(descs, store.stream_datums([d["uid"] for d in descs]),
                                        stream_resources)
            if layout is not None:
                stream_fill = StreamFill.for_stream(layout, descs, stream_resources,
                                                    source.readers, source.root_map,
                                                    retry_intervals=retry_intervals)
    return recipe, stream_fill
