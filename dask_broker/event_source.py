"""The DBEP's EventSource: metadata and documents of runs, header first.

One EventSource holds every document of a run -- descriptors, events, resources
and datum -- over one :class:`~dask_broker.stores.Store`.  ``insert`` (the
DBEP's InsertEV) lives here too.  A thin facade: reading is
:mod:`dask_broker.read`'s (one :class:`~dask_broker.read.ReadPlan` per table,
chunk, xarray Dataset or export; the ``docs()`` replay engine), filling
:mod:`dask_broker.fill`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .errors import NoEventDescriptors
from .fill.recipe import FillRecipe, RunFillContext
from .handlers.registry import HandlerRegistry
from .insert import Inserter
from .read.plan import ReadPlan, plan_read, plan_run_fill, run_uid_of, stream_descriptors
from .readers import ReaderRegistry
from .resource_updates import (
    RESOURCE_KEYS,
    STREAM_RESOURCE_KEYS,
    check_resource_update,
    find_resource_document,
)
from .stores.base import Store
from .timestruct import TimeStruct

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

    from .header import Header

__all__ = ["EventSource"]


_run_uid = run_uid_of


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
        recipe, stream_fill = plan_run_fill(self, header, retry_intervals=retry_intervals)
        return RunFillContext(recipe, self.store, max_open=max_open, stream_fill=stream_fill)

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

    def stream_descriptors(self, header: "Header", stream_name: str | None) -> list[dict]:
        """The descriptors of a stream (of every stream for None).

        Raises
        ------
        NoEventDescriptors
            The run has no descriptor of that stream (the message lists its streams).
        """
        return stream_descriptors(self.store, _run_uid(header), stream_name)

    _stream_descriptors = stream_descriptors  # former name

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
        descs = self.stream_descriptors(header, stream_name)
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
            Replace datum ids in external fields (and stream_datum references)
            with the data.  Filling runs in the tasks, on the workers, which keep
            the files they open in their bounded handler cache (the dask config
            ``dask_broker.max-open-files``).  Columns not selected are not filled.
        chunk_size
            Events per partition, or a byte size (``"64MiB"``); by default the dask
            config ``dask_broker.partition-bytes`` (128 MiB).

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
        return self.plan(header, stream_name, fields=fields, fill=fill, time_struct=time_struct,
                         timestamps=timestamps, chunk_size=chunk_size).to_dask()

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
        plan = self.plan(header, stream_name, fields=fields, time_struct=time_struct,
                         timestamps=timestamps, chunk_size=chunk_size)
        yield from plan.chunks()

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
        plan = self.plan(header, stream_name, fields=fields, time_struct=time_struct,
                         timestamps=timestamps, chunk_size=chunk_size)
        return plan.chunk(chunk_number)

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
        from .read.xarray import build_dataset

        return build_dataset(self.plan(header, stream_name, fields=fields, fill=True,
                                       time_struct=TimeStruct(convert_times=False),
                                       chunk_size=chunk_size))

    def plan(self, header: "Header", stream_name: str = "primary", *,
             fields: Sequence[str] | None = None, fill: bool = False,
             time_struct: TimeStruct | None = None, timestamps: bool = False,
             chunk_size: int | str | None = None) -> ReadPlan:
        """The read plan of a stream: what :meth:`table`, :meth:`table_chunks`,
        :meth:`table_chunk`, :meth:`to_xarray` and ``export`` read through.

        Built once, on the client: descriptors, event counts, stop state, column
        and partition specs, the stream_datum layout, and when filling the
        resources with their handler classes (see :func:`~dask_broker.read.plan_read`).

        Examples
        --------
        >>> plan = es.plan(h, "primary", fill=True)   # doctest: +SKIP
        >>> plan.to_dask()                            # doctest: +SKIP
        """
        start = getattr(header, "start", None)
        if not isinstance(start, Mapping):
            start = header if isinstance(header, Mapping) else None
        return plan_read(self, header, stream_name, fields=fields, fill=fill,
                         time_struct=time_struct, timestamps=timestamps,
                         chunk_size=chunk_size, start=start)

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
        from .read.docs import replay

        return replay(self, header, stream_name, fields, fill)


def _rebuild_event_source(store: Store, registry: HandlerRegistry, root_map: dict,
                          readers: ReaderRegistry | None = None) -> EventSource:
    return EventSource(store, registry=registry, root_map=root_map, readers=readers)
