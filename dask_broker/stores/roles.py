"""The roles a store plays, one small protocol each, and the capability names.

:class:`~dask_broker.stores.base.Store` is the one base class every backend
subclasses; these protocols name its parts, so that code that only reads runs
(workers, exporters) or only writes documents (ingest) says so in its types, and
a new backend can be checked one role at a time.  What a store can do beyond
reading and writing runs it says in :attr:`Store.capabilities
<dask_broker.stores.base.Store.capabilities>` -- ask it, rather than calling and
catching ``NotImplementedError``:

>>> from dask_broker.stores import open_store                       # doctest: +SKIP
>>> store = open_store("sqlite:///catalog.db")                      # doctest: +SKIP
>>> RESOURCE_UPDATES in store.capabilities                          # doctest: +SKIP
True

Capabilities
------------
``"write"`` (:class:`DocumentWriter`)
    Writes are accepted (the store was not opened read-only).
``"stream_data"`` (:class:`StreamData`)
    stream_resource / stream_datum documents are stored (``supports_stream_data``).
``"resource_updates"`` (:class:`ResourceUpdates`)
    :meth:`~Store.update_resource` and :meth:`~Store.resource_history` work
    (``supports_resource_updates``; on a read-only store only the history).
``"list_resources"``
    :meth:`~Store.iter_resources` lists every resource of the catalog.
``"find_resources"``
    :meth:`~Store.find_resources` finds resources by root and path.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

__all__ = ["RunReader", "DocumentWriter", "RunSearch", "ResourceUpdates", "StreamData",
           "WRITE", "STREAM_DATA", "RESOURCE_UPDATES", "LIST_RESOURCES", "FIND_RESOURCES",
           "CAPABILITIES"]

WRITE = "write"
STREAM_DATA = "stream_data"
RESOURCE_UPDATES = "resource_updates"
LIST_RESOURCES = "list_resources"
FIND_RESOURCES = "find_resources"
#: Every capability a store may name.
CAPABILITIES = frozenset({WRITE, STREAM_DATA, RESOURCE_UPDATES, LIST_RESOURCES, FIND_RESOURCES})


@runtime_checkable
class RunReader(Protocol):
    """Reads the documents of runs and their events as columnar pages (what workers use)."""

    def get_start(self, uid: str) -> dict | None: ...
    def get_stop(self, run_uid: str) -> dict | None: ...
    def get_descriptor(self, uid: str) -> dict | None: ...
    def descriptors(self, run_uid: str) -> list[dict]: ...
    def get_resource(self, uid: str) -> dict | None: ...
    def resources(self, run_uid: str) -> list[dict]: ...
    def datum(self, datum_ids: Sequence[str]) -> dict[str, dict]: ...
    def datum_of_resource(self, resource_uid: str) -> Iterator[dict]: ...
    def event_counts(self, descriptor_uids: Sequence[str]) -> dict[str, tuple[int, int, int]]: ...
    def seq_num_runs(self, descriptor_uids: Sequence[str]) -> list[tuple[int, int, int]]: ...

    def iter_event_pages(self, descriptor_uids: Sequence[str], *,
                         seq_range: tuple[int, int] | None = None,
                         fields: Iterable[str] | None = None, timestamps: bool = True,
                         uids: bool = False) -> Iterator[Any]: ...


@runtime_checkable
class DocumentWriter(Protocol):
    """Stores documents, atomically per call (refused with ReadOnlyCatalogError when
    the store is read-only)."""

    read_only: bool

    def insert_start(self, doc: Mapping) -> None: ...
    def insert_stop(self, doc: Mapping) -> None: ...
    def insert_descriptor(self, doc: Mapping) -> None: ...
    def insert_resource(self, doc: Mapping) -> None: ...
    def insert_datum_page(self, page: Mapping) -> None: ...
    def insert_event_page(self, page: Mapping) -> None: ...
    def insert_event_pages(self, pages: Sequence[Mapping]) -> None: ...


@runtime_checkable
class RunSearch(Protocol):
    """Finds runs: every start document, by query and full-text search, newest first."""

    def iter_starts(self) -> Iterator[dict]: ...
    def search(self, query: Mapping | None = None, *, text: str | None = None
               ) -> Iterator[dict]: ...
    def count_starts(self) -> int: ...
    def start_uids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]: ...


@runtime_checkable
class ResourceUpdates(Protocol):
    """Changes resources (files moved) and keeps the record of the changes."""

    def update_resource(self, resource_uid: str, changes: Mapping, *, cmd: str,
                        cmd_kwargs: Mapping) -> dict: ...
    def resource_history(self, resource_uid: str) -> list[dict]: ...


@runtime_checkable
class StreamData(Protocol):
    """Stores stream_resource / stream_datum documents (ophyd-async detectors)."""

    def insert_stream_resource(self, doc: Mapping) -> None: ...
    def insert_stream_datums(self, docs: Sequence[Mapping]) -> None: ...
    def get_stream_resource(self, uid: str) -> dict | None: ...
    def stream_resources(self, run_uid: str) -> list[dict]: ...
    def stream_datums(self, descriptor_uids: Sequence[str]) -> list[dict]: ...
    def stream_datums_of_resource(self, stream_resource_uid: str) -> list[dict]: ...
    def iter_stream_resources(self) -> Iterator[dict]: ...
