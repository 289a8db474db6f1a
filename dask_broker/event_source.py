"""The DBEP's EventSource: metadata and documents of runs, header first.

One EventSource holds every document of a run -- descriptors, events, resources
and datum -- over one :class:`~dask_broker.stores.Store`.  ``insert`` (the
DBEP's InsertEV) lives here too.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import dask
import dask.dataframe as dd
import pandas as pd

from .codec import column_to_list
from .errors import NoEventDescriptors, UnknownFieldError
from .field_select import FieldSelection, constants
from .fill.recipe import FillRecipe, RunFillContext
from .handlers.registry import HandlerRegistry
from .readers import ReaderRegistry
from .resource_updates import (
    RESOURCE_KEYS,
    STREAM_RESOURCE_KEYS,
    check_resource_update,
    find_resource_document,
)
from .insert import Inserter
from .stores.base import EventPageColumns, Store
from .stream_data import stream_keys
from .dataset import build_dataset
from .table import plan_table
from .timestruct import TimeStruct

if TYPE_CHECKING:
    from .header import Header

__all__ = ["EventSource"]


def _run_uid(header: "Header | Mapping | str") -> str:
    if isinstance(header, str):
        return header
    if isinstance(header, Mapping):
        return header["uid"]
    return header.uid


class EventSource:
    """Documents and metadata of runs, over one store.

    Parameters
    ----------
    store
        Where the documents live.

    Examples
    --------
    >>> es = db.event_source                         # doctest: +SKIP
    >>> es.stream_names(db[-1])                      # doctest: +SKIP
    ['baseline', 'primary']
    """

    #: Raised when a run has no descriptor for a requested stream.
    NoEventDescriptors = NoEventDescriptors

    def __init__(self, store: Store, *, registry: HandlerRegistry | None = None,
                 root_map: Mapping[str, str] | None = None,
                 readers: "ReaderRegistry | None" = None):
        self.store = store
        self.registry = HandlerRegistry() if registry is None else registry
        self.readers = ReaderRegistry() if readers is None else readers
        self.root_map: dict[str, str] = dict(root_map or {})
        self._inserter = Inserter(store)

    def __repr__(self) -> str:
        return f"EventSource({self.store!r})"

    def __reduce__(self):
        return (_rebuild_event_source, (self.store, self.registry, self.root_map, self.readers))

    # ------------------------------------------------------------ assets
    def set_root_map(self, root_map: Mapping[str, str]) -> None:
        """Replace the root_map: ``{resource root as stored: where it is mounted now}``.

        Applied where files are opened (on the workers), as
        ``os.path.join(root_map.get(root, root), resource_path)``.

        Examples
        --------
        >>> es.set_root_map({"/GPFS/xf23id": "/mnt/archive/xf23id"})  # doctest: +SKIP
        """
        self.root_map = dict(root_map or {})

    def fill_recipe(self, header: "Header",
                    retry_intervals: Sequence[float] | None = None) -> FillRecipe:
        """The picklable recipe Dask tasks use to fill this run's external fields."""
        return FillRecipe.for_run(self.store, self.descriptors(header), self.resources(header),
                                  self.registry, self.root_map, retry_intervals)

    def fill_context(self, header: "Header", max_open: int | None = 64, *,
                     retry_intervals: Sequence[float] | None = None) -> RunFillContext:
        """A context that fills this run's events and tables, closing its files on exit.

        Inside it a handler is created at most once per resource, at most
        ``max_open`` are alive at once (least recently used closed first), and
        all are closed when the ``with`` block ends, also on error.  A missing
        file is tried again after each of ``retry_intervals`` seconds (default:
        the dask config ``dask_broker.fill-retry-intervals``, else
        ``[0.1, 0.2, 0.4, 0.8]``; ``[]``: no retry), also in the tasks of the
        Dask DataFrames it fills.

        Examples
        --------
        >>> with es.fill_context(h) as fc:                      # doctest: +SKIP
        ...     filled = fc.fill(event_doc)
        ...     frame = fc.fill_table(h.table())                 # lazy: dask in, dask out
        """
        return RunFillContext(self.fill_recipe(header, retry_intervals=retry_intervals),
                              self.store, max_open=max_open,
                              stream_fill=self._run_stream_fill(header, retry_intervals))

    def _run_stream_fill(self, header: "Header",
                         retry_intervals: Sequence[float] | None = None):
        """A StreamFill over every stream_resource of the run (None if it has none)."""
        from .stream_data import StreamLayout
        from .fill.stream import StreamFill

        if not self.store.supports_stream_data:
            return None
        descs = self.descriptors(header)
        resources = self.store.stream_resources(_run_uid(header))
        if not resources or not descs:
            return None
        layout = StreamLayout.build(descs, self.store.stream_datums([d["uid"] for d in descs]),
                                    resources)
        if layout is None:
            return None
        return StreamFill.for_stream(layout, descs, resources, self.readers, self.root_map,
                                     retry_intervals=retry_intervals)

    # ------------------------------------------------------------ insert
    def insert(self, name: str, doc: Mapping) -> None:
        """Validate and store one document (the DBEP's InsertEV).

        Parameters
        ----------
        name
            ``start``, ``descriptor``, ``event``, ``event_page``, ``resource``,
            ``datum``, ``datum_page``, ``stop``, ``bulk_events`` / ``bulkevent``,
            ``bulk_datum`` / ``bulkdatum``.
        doc
            The document.

        Examples
        --------
        >>> es.insert("start", {"uid": "abc", "time": 0.0})  # doctest: +SKIP
        """
        self._inserter(name, doc)

    # ------------------------------------------------------------ metadata
    def descriptors(self, header: "Header", stream_name: str | None = None) -> list[dict]:
        """The run's descriptors (of one stream, if given), in insertion order.

        Examples
        --------
        >>> [d["name"] for d in es.descriptors(h)]  # doctest: +SKIP
        ['primary', 'baseline']
        """
        descs = self.store.descriptors(_run_uid(header))
        if stream_name is not None:
            descs = [d for d in descs if d.get("name", "primary") == stream_name]
        return descs

    def _stream_descriptors(self, header: "Header", stream_name: str | None) -> list[dict]:
        descs = self.descriptors(header, stream_name)
        if not descs:
            raise NoEventDescriptors(
                f"run {_run_uid(header)!r} has no descriptor"
                + (f" for stream {stream_name!r}" if stream_name is not None else "")
                + f"; its streams are {self.stream_names(header)}"
            )
        return descs

    def stream_names(self, header: "Header") -> list[str]:
        """Names of the run's streams, in order of first appearance.

        Examples
        --------
        >>> es.stream_names(h)  # doctest: +SKIP
        ['primary', 'baseline']
        """
        return list(dict.fromkeys(d.get("name", "primary") for d in self.descriptors(header)))

    def fields(self, header: "Header", stream_name: str | None = None) -> list[str]:
        """Data keys of a stream (or of every stream), in descriptor order.

        Examples
        --------
        >>> es.fields(h, "primary")  # doctest: +SKIP
        ['motor', 'det']
        """
        descs = self._stream_descriptors(header, stream_name)
        return list(dict.fromkeys(k for d in descs for k in d["data_keys"]))

    def resources(self, header: "Header") -> list[dict]:
        """The run's resource documents, in insertion order.

        Examples
        --------
        >>> [r["spec"] for r in es.resources(h)]  # doctest: +SKIP
        ['AD_HDF5']
        """
        return self.store.resources(_run_uid(header))

    #: The resource keys :meth:`update_resource` may change.
    UPDATABLE_RESOURCE_KEYS = RESOURCE_KEYS
    #: The stream_resource keys :meth:`update_resource` may change.
    UPDATABLE_STREAM_RESOURCE_KEYS = STREAM_RESOURCE_KEYS

    def update_resource(self, resource_uid: str, *, cmd: str = "update_resource",
                        cmd_kwargs: Mapping | None = None, **changes: Any) -> dict:
        """Change where a resource's (or stream_resource's) files are, keeping a history.

        The document is replaced and a history record appended in one
        transaction.  Tables and fill contexts built afterwards read from the
        new location (a recipe's Dask token and a handler's cache key include
        the resource's root and path, a stream reader's its uri).

        Parameters
        ----------
        resource_uid
            The resource or stream_resource to update.
        cmd, cmd_kwargs
            What to record as the cause of the change (default:
            ``"update_resource"`` with the changes as kwargs).
        **changes
            New values: for a resource ``root``, ``resource_path``,
            ``resource_kwargs``, ``spec``; for a stream_resource ``uri`` (a local
            ``file://`` uri), ``mimetype``, ``parameters`` (a stream_resource in the
            pre-1.21 form takes the resource keys).

        Returns
        -------
        dict
            The new document.

        Raises
        ------
        InvalidArgumentError
            No change given, a key that may not change (``uid``, ``run_start``, a
            stream_resource's ``data_key``...), or a value of the wrong type.
        UnknownReferenceError
            No resource or stream_resource with this uid is stored.

        Examples
        --------
        >>> es.update_resource(res_uid, root="/mnt/archive/xf23id")  # doctest: +SKIP
        {'uid': ..., 'root': '/mnt/archive/xf23id', ...}
        >>> es.update_resource(sr_uid, uri="file://localhost/mnt/archive/det.h5")  # doctest: +SKIP
        >>> es.resource_history(res_uid)[-1]["cmd"]                  # doctest: +SKIP
        'update_resource'
        """
        kind, doc = find_resource_document(self.store, resource_uid)
        check_resource_update(kind, doc, changes)
        return self.store.update_resource(
            resource_uid, changes, cmd=cmd,
            cmd_kwargs=dict(changes) if cmd_kwargs is None else dict(cmd_kwargs))

    def resource_history(self, resource_uid: str) -> list[dict]:
        """The updates of a resource or stream_resource, oldest first:
        ``{resource, old, new, time, cmd, cmd_kwargs}``.

        Raises
        ------
        UnknownReferenceError
            No resource or stream_resource with this uid is stored.

        Examples
        --------
        >>> [(r["old"]["root"], r["new"]["root"]) for r in es.resource_history(uid)]  # doctest: +SKIP
        [('/GPFS/xf23id', '/mnt/archive/xf23id')]
        """
        find_resource_document(self.store, resource_uid)
        return self.store.resource_history(resource_uid)

    # ------------------------------------------------------------ tables
    def table(
        self,
        header: "Header",
        stream_name: str = "primary",
        fields: Sequence[str] | None = None,
        time_struct: TimeStruct | None = None,
        timestamps: bool = False,
        fill: bool = False,
        chunk_size: int | None = None,
    ) -> dd.DataFrame:
        """A stream as a lazy Dask DataFrame, one partition per chunk of events.

        Parameters
        ----------
        header
            The run.
        stream_name
            The stream (``"primary"`` by default).
        fields
            Only these fields (the store reads no others).  Selecting columns
            on the result (``df[["det"]]``) has the same effect.  Names, or
            regular expressions matching whole keys; configuration values of
            the stream's devices, then start and stop values, that ``fields``
            select become columns too (each row holds its descriptor's value;
            with ``timestamps``, ``ts_<key>`` holds the configuration
            timestamp, or the start / stop time), as databroker's ``get_table``
            does; see :mod:`dask_broker.field_select`.
        time_struct
            How times are shown; default ``TimeStruct()`` (local datetimes).
        timestamps
            Add a ``ts_<field>`` column per field.
        fill
            Replace datum ids in external fields with the data.  Filling runs in
            the tasks, on the workers: each opens the files it needs and closes
            them before returning.  Columns not selected are not filled.
        chunk_size
            Events per partition; by default partitions of a few tens of MB.

        Returns
        -------
        dask.dataframe.DataFrame
            Indexed by ``seq_num`` with known divisions; columns ``time``, the
            fields, then ``ts_<field>`` columns.

        Examples
        --------
        >>> df = es.table(h, "primary", fields=["det"])   # doctest: +SKIP
        >>> df.det.mean().compute()                        # doctest: +SKIP
        """
        recipe = self.fill_recipe(header) if fill else None
        plan = plan_table(self, header, stream_name, fields, time_struct, timestamps, chunk_size,
                          fill=recipe, stream_fill=self._stream_fill_factory() if fill else None)
        with dask.config.set({"dataframe.convert-string": False}):
            # Array columns hold numpy arrays; dask must not turn object columns into strings.
            return dd.from_map(plan.reader(), list(plan.specs), meta=plan.meta(),
                               divisions=plan.divisions, label=f"table-{stream_name}",
                               enforce_metadata=False)

    def table_chunks(
        self,
        header: "Header",
        stream_name: str = "primary",
        fields: Sequence[str] | None = None,
        time_struct: TimeStruct | None = None,
        chunk_size: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[pd.DataFrame]:
        """Yield the stream as pandas DataFrames, one chunk of events at a time.

        Memory stays bounded by one chunk whatever the length of the run.

        Examples
        --------
        >>> for chunk in es.table_chunks(h, "primary", chunk_size=10_000):  # doctest: +SKIP
        ...     total += chunk.det.sum()
        """
        plan = plan_table(self, header, stream_name, fields, time_struct, timestamps, chunk_size)
        reader = plan.reader()
        for spec in plan.specs:
            yield reader(spec)

    def table_chunk(
        self,
        header: "Header",
        stream_name: str,
        chunk_number: int,
        chunk_size: int | None = None,
        fields: Sequence[str] | None = None,
        time_struct: TimeStruct | None = None,
        timestamps: bool = False,
    ) -> pd.DataFrame:
        """One chunk of the stream as a pandas DataFrame.

        Raises
        ------
        IndexError
            If ``chunk_number`` is past the end (the message says how many chunks there are).

        Examples
        --------
        >>> es.table_chunk(h, "primary", 0, chunk_size=1000)  # doctest: +SKIP
        """
        plan = plan_table(self, header, stream_name, fields, time_struct, timestamps, chunk_size)
        n = plan.npartitions if plan.divisions[0] is not None else 0
        if not isinstance(chunk_number, int) or not -n <= chunk_number < n:
            raise IndexError(
                f"chunk {chunk_number!r} of stream {stream_name!r} of run {plan.run_uid!r} does "
                f"not exist: with chunk_size={plan.chunk_size} there are {n} chunks "
                f"(0 to {n - 1})")
        return plan.reader()(plan.specs[chunk_number])

    def to_xarray(self, header: "Header", stream_name: str = "primary",
                  fields: Sequence[str] | None = None, chunk_size: int | None = None):
        """A lazy :class:`xarray.Dataset` of a stream.

        Dimension ``time`` (event times, float seconds since the epoch) with
        ``seq_num`` as a coordinate; every field is a dask array chunked along
        events (array fields get dims from the data_keys' ``dims``, else
        ``<field>_dim_0``, ...).  Slicing reads only the events sliced.
        Variable attrs carry the data_keys' units and source.

        Examples
        --------
        >>> ds = es.to_xarray(h)                  # doctest: +SKIP
        >>> ds["det"].mean().compute()            # doctest: +SKIP
        """
        return build_dataset(self, header, stream_name, fields, chunk_size=chunk_size,
                             filler_factory=self._filler_factory(),
                             stream_fill=self._stream_fill_factory())

    def _stream_fill_factory(self):
        """``(layout, descriptors) -> StreamFill``: how tasks read a stream's STREAM: keys."""
        from .fill.stream import StreamFill

        def factory(layout, descriptors):
            resources = self.store.stream_resources(descriptors[0]["run_start"])
            return StreamFill.for_stream(layout, descriptors, resources, self.readers,
                                         self.root_map)

        return factory

    def _filler_factory(self):
        return lambda header, field: self.fill_recipe(header)

    # ------------------------------------------------------------ documents
    def docs(
        self,
        header: "Header",
        stream_name: str | None = None,
        fields: Sequence[str] | None = None,
        fill: bool = False,
    ) -> Iterator[tuple[str, dict]]:
        """Yield the run's documents as ``(name, doc)`` in a valid order.

        Start first; each descriptor before its events; each resource before its
        datum; each datum before the first event that references it; stop last.
        Events of different descriptors are merged in time order.

        Parameters
        ----------
        header
            The run.
        stream_name
            Only this stream's descriptors and events (and the resources and
            datum those events reference).
        fields
            Only these data keys in descriptors and events: names, or regular
            expressions matching whole keys.  Configuration values of the
            stream's devices, then start and stop values, that ``fields``
            select are merged into each event's ``data`` and ``timestamps`` (as
            databroker does; see :mod:`dask_broker.field_select`).  An entry
            that selects nothing raises :class:`~dask_broker.errors.UnknownFieldError`.
        fill
            Replace datum ids with the data they point to (files are opened in a
            fill context that is closed when the generator finishes or is closed).

        Examples
        --------
        >>> for name, doc in es.docs(h):  # doctest: +SKIP
        ...     print(name)
        """
        run_uid = _run_uid(header)
        start = self.store.get_start(run_uid)
        if start is None:
            from .errors import RunNotFoundError

            raise RunNotFoundError(f"no run with uid {run_uid!r} in {self.store.display_uri}")
        descs = self.descriptors(run_uid, stream_name)
        if stream_name is not None and not descs:
            self._stream_descriptors(run_uid, stream_name)  # raises NoEventDescriptors
        wanted = kept = None
        merged: dict[str, dict] = {}  # descriptor uid -> {key: Constant}
        if fields is not None:
            selection = FieldSelection(fields)
            stop = self.store.get_stop(run_uid)
            kept = {d["uid"]: selection.select(d["data_keys"]) for d in descs}
            merged = {d["uid"]: constants(selection, d, start, stop) for d in descs}
            wanted = list(dict.fromkeys(k for keys in kept.values() for k in keys))
            known = {k for d in descs for k in d["data_keys"]}
            unknown = selection.unmatched([*known, *(k for m in merged.values() for k in m)])
            if unknown:
                raise UnknownFieldError(
                    f"field(s) {unknown} are not in run {run_uid!r}"
                    + (f" stream {stream_name!r}" if stream_name else "")
                    + f": neither data keys ({sorted(known)}) nor configuration, start or "
                    "stop keys"
                )
        yield "start", start
        emitter = _AssetEmitter(self.store, self.store.resources(run_uid))
        if stream_name is None:
            # Everything the run holds, referenced or not, up front.
            yield from emitter.all()
        if kept is not None:
            # Streams that hold none of the requested fields (nor merged values) are left out.
            descs = [d for d in descs if kept[d["uid"]] or merged[d["uid"]]]
        streams = [_EventStream(self.store, d, None if kept is None else kept[d["uid"]],
                                emitter, merged.get(d["uid"])) for d in descs]
        streamed = _StreamDatumEmitter.for_run(self.store, run_uid, descs, wanted,
                                               every_resource=stream_name is None)
        for stream in streams:
            if not stream.has_events():
                yield "descriptor", stream.descriptor
                yield from streamed.up_to(stream.descriptor["uid"], None)
        merged = heapq.merge(*(s.keyed() for s in streams if s.has_events()))
        with (self.fill_context(run_uid) if fill else contextlib.nullcontext()) as fc:
            for stream in streams:
                stream.fill_context = fc
            for *_, stream, event in merged:
                if not stream.emitted_descriptor:
                    stream.emitted_descriptor = True
                    yield "descriptor", stream.descriptor
                yield from streamed.up_to(stream.descriptor["uid"], event["seq_num"])
                yield from emitter.for_event(event, stream.external)
                if fc is not None and stream.external:
                    event = stream.filled(event)
                yield "event", event
        for stream in streams:  # stream_datum past the last event (fly scans flush late)
            if stream.has_events():
                yield from streamed.up_to(stream.descriptor["uid"], None)
        yield from streamed.unreferenced()
        stop = self.store.get_stop(run_uid)
        if stop is not None:
            yield "stop", stop


class _EventStream:
    """Events of one descriptor, rebuilt from pages, keyed for a time-ordered merge."""

    _counter = itertools.count()

    def __init__(self, store: Store, descriptor: dict, fields: list[str] | None,
                 emitter: "_AssetEmitter", merged: Mapping[str, Any] | None = None):
        self.store = store
        self.emitter = emitter
        # Configuration / start / stop values merged into every event (fields=).
        merged = merged or {}
        self.merged_data = {k: c.value for k, c in merged.items()}
        self.merged_timestamps = {k: c.timestamp for k, c in merged.items()}
        keys = descriptor["data_keys"]
        kept = [f for f in keys if fields is None or f in fields]
        self.descriptor = descriptor if fields is None else {
            **descriptor, "data_keys": {k: v for k, v in keys.items() if k in kept}}
        streamed = set(stream_keys(descriptor))  # never in events: stream_datum cover them
        self.fields = [f for f in kept if f not in streamed]
        self.external = [f for f in self.fields if keys[f].get("external")]
        self.emitted_descriptor = False
        self.fill_context = None  # set by docs(fill=True)
        self.frames: dict[str, Any] = {}
        self._order = next(self._counter)
        self._count = store.event_counts([descriptor["uid"]]).get(descriptor["uid"], (0,))[0]

    def has_events(self) -> bool:
        return self._count > 0

    #: Events whose frames are read together when filling (one bulk read per resource).
    FILL_BATCH = 64

    def keyed(self) -> Iterator[tuple[float, int, int, "_EventStream", dict]]:
        pages = self.store.iter_event_pages([self.descriptor["uid"]], fields=self.fields,
                                            timestamps=True, uids=True)
        events = itertools.chain.from_iterable(
            _page_to_events(self.emitter.prefetch(page, self.external), self.fields, self.external)
            for page in pages)
        i = 0
        while batch := list(itertools.islice(events, self.FILL_BATCH)):
            if self.fill_context is not None and self.external:
                ids = list(dict.fromkeys(e["data"][f] for e in batch for f in self.external
                                         if isinstance(e["data"][f], str)))
                # One batch of frames in memory at a time (the merge has emitted the
                # previous batch before it asks for the next event).
                self.frames = dict(zip(ids, self.fill_context.fill_datum(ids), strict=True))
            for event in batch:
                if self.merged_data:
                    event["data"].update(self.merged_data)
                    event["timestamps"].update(self.merged_timestamps)
                yield event["time"], self._order, i, self, event
                i += 1

    def filled(self, event: dict) -> dict:
        """The event with its external fields' datum ids replaced by the frames read."""
        data, filled = dict(event["data"]), dict(event["filled"])
        for f in self.external:
            if isinstance(data.get(f), str):
                data[f] = self.frames[data[f]]
                filled[f] = True
        return {**event, "data": data, "filled": filled}


def _page_to_events(page: EventPageColumns, fields: list[str], external: list[str]) -> Iterator[dict]:
    data = {f: column_to_list(page.data[f]) for f in fields}
    ts = {f: column_to_list(page.timestamps[f]) for f in fields}
    times = page.time.tolist()
    seqs = page.seq_num.tolist()
    filled = {f: False for f in external}
    for i, uid in enumerate(page.uid):
        yield {
            "uid": uid, "descriptor": page.descriptor, "seq_num": seqs[i], "time": times[i],
            "data": {f: data[f][i] for f in fields},
            "timestamps": {f: ts[f][i] for f in fields},
            "filled": dict(filled),
        }


class _StreamDatumEmitter:
    """Emits stream_datum in seq_num order per descriptor, each stream_resource once before
    its first stream_datum, and each stream_datum before the event of its first seq_num."""

    def __init__(self, resources: Mapping[str, dict], datums: Iterable[dict],
                 wanted: list[str] | None, every_resource: bool):
        self.resources = dict(resources)
        self.sent: set[str] = set()
        self.every_resource = every_resource
        keep = self.keep = None if wanted is None else set(wanted)
        self.pending: dict[str, list[dict]] = {}
        for sd in datums:
            key = self.resources.get(sd["stream_resource"], {}).get("data_key")
            if keep is None or key in keep:
                self.pending.setdefault(sd["descriptor"], []).append(sd)
        for queue in self.pending.values():
            queue.sort(key=lambda sd: sd["seq_nums"]["start"])
            queue.reverse()  # pop() from the end

    @classmethod
    def for_run(cls, store: Store, run_uid: str, descriptors: list[dict],
                wanted: list[str] | None, every_resource: bool) -> "_StreamDatumEmitter":
        if not store.supports_stream_data:
            return cls({}, (), wanted, False)
        resources = {r["uid"]: r for r in store.stream_resources(run_uid)}
        datums = store.stream_datums([d["uid"] for d in descriptors]) if descriptors else []
        return cls(resources, datums, wanted, every_resource)

    def up_to(self, descriptor_uid: str, seq_num: int | None) -> Iterator[tuple[str, dict]]:
        """Pending stream_datum of a descriptor starting at or before ``seq_num`` (None: all)."""
        queue = self.pending.get(descriptor_uid)
        while queue and (seq_num is None or queue[-1]["seq_nums"]["start"] <= seq_num):
            sd = queue.pop()
            uid = sd["stream_resource"]
            if uid not in self.sent and uid in self.resources:
                self.sent.add(uid)
                yield "stream_resource", self.resources[uid]
            yield "stream_datum", sd

    def unreferenced(self) -> Iterator[tuple[str, dict]]:
        """stream_resources of the run that no stream_datum pointed at (whole-run replays)."""
        if self.every_resource:
            for uid, doc in self.resources.items():
                if uid not in self.sent and (self.keep is None or doc.get("data_key") in self.keep):
                    self.sent.add(uid)
                    yield "stream_resource", doc


class _AssetEmitter:
    """Emits resources and datum, each once, before the first document needing them."""

    def __init__(self, store: Store, resources: Iterable[dict]):
        self.store = store
        self.resources = {r["uid"]: r for r in resources}
        self.sent_resources: set[str] = set()
        self.sent_datum: set[str] = set()
        self.pending: dict[str, dict] = {}  # datum looked up for a page, not yet emitted

    def prefetch(self, page: EventPageColumns, external: list[str]) -> EventPageColumns:
        """Look up, in one query, the datum a page's events reference (and return the page)."""
        if external:
            ids = {v for f in external for v in page.data.get(f, ())
                   if isinstance(v, str) and v not in self.sent_datum and v not in self.pending}
            if ids:
                self.pending.update(self.store.datum(sorted(ids)))
        return page

    def all(self) -> Iterator[tuple[str, dict]]:
        for uid, resource in self.resources.items():
            self.sent_resources.add(uid)
            yield "resource", resource
            for datum in self.store.datum_of_resource(uid):
                self.sent_datum.add(datum["datum_id"])
                yield "datum", datum

    def for_event(self, event: dict, external: list[str]) -> Iterator[tuple[str, dict]]:
        if not external:
            return
        needed = [event["data"][f] for f in external]
        needed = [d for d in needed if isinstance(d, str) and d not in self.sent_datum]
        if not needed:
            return
        found = {d: self.pending.pop(d) for d in needed if d in self.pending}
        missing = [d for d in needed if d not in found]
        if missing:
            found.update(self.store.datum(missing))
        for datum_id, datum in found.items():
            res_uid = datum["resource"]
            if res_uid not in self.sent_resources:
                resource = self.resources.get(res_uid) or self.store.get_resource(res_uid)
                if resource is not None:
                    self.sent_resources.add(res_uid)
                    yield "resource", resource
            self.sent_datum.add(datum_id)
            yield "datum", datum


def _rebuild_event_source(store: Store, registry: HandlerRegistry, root_map: dict,
                          readers: ReaderRegistry | None = None) -> EventSource:
    return EventSource(store, registry=registry, root_map=root_map, readers=readers)
