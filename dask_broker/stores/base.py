"""The store interface every dask_broker backend implements.

A store holds every document of every run (start, descriptor, event, resource,
datum, stop) and answers the few queries the Broker and EventSource need.  It
does no validation of documents (that is :mod:`dask_broker.insert`), except for
uniqueness, which only the database can enforce atomically.

Writes are atomic per call: a rejected call leaves nothing behind.  Stores are
picklable by URI: an unpickled store re-opens its database in the new process.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..query import parse_query
from ..redact import mask_uri
from ..text_search import parse_text

if TYPE_CHECKING:
    from . import StoreRef

__all__ = ["Store", "EventPageColumns", "chunked", "first_repeat", "check_resource_changes",
           "consecutive_runs"]


def chunked(seq: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``seq`` of at most ``size`` items (for ``IN (...)`` queries)."""
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def consecutive_runs(seq: np.ndarray) -> list[tuple[int, int, int]]:
    """``(start, stop, count)`` of each run of consecutive values of a sorted-or-not array.

    >>> consecutive_runs(np.array([1, 2, 3, 10, 11, 50]))
    [(1, 4, 3), (10, 12, 2), (50, 51, 1)]
    """
    if len(seq) == 0:
        return []
    seq = np.sort(seq)
    breaks = np.flatnonzero(np.diff(seq) != 1) + 1
    edges = [0, *breaks.tolist(), len(seq)]
    return [(int(seq[a]), int(seq[b - 1]) + 1, b - a) for a, b in zip(edges[:-1], edges[1:])]


def first_repeat(values: Iterable) -> Any:
    """The first value that occurs twice in ``values`` (None if none does)."""
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


#: Keys that identify a resource: :meth:`Store.update_resource` never changes them.
RESOURCE_IDENTITY_KEYS = ("uid", "run_start")


def check_resource_changes(resource_uid: str, changes: Mapping) -> dict:
    """``changes`` as a dict, refusing the keys that identify a resource."""
    from ..errors import InvalidArgumentError

    fixed = [k for k in RESOURCE_IDENTITY_KEYS if k in changes]
    if fixed:
        raise InvalidArgumentError(
            f"resource {resource_uid!r}: {fixed} identify the resource and cannot be updated")
    return dict(changes)


@dataclass
class EventPageColumns:
    """One page of events of one descriptor, as columns.

    ``data`` and ``timestamps`` map field names to numpy arrays (numeric fields)
    or lists (anything else).  ``uid`` and ``filled`` are only present when asked.
    """

    descriptor: str
    seq_num: np.ndarray
    time: np.ndarray
    data: dict[str, Any]
    timestamps: dict[str, Any] = field(default_factory=dict)
    uid: list[str] | None = None
    filled: dict[str, list] | None = None

    def __len__(self) -> int:
        return len(self.seq_num)


class Store(abc.ABC):
    """Base class of a document store.

    Subclasses implement the abstract methods; :meth:`search` has a portable
    default (a query matched in Python) that a backend with a query language
    overrides.  The methods fall into roles, one protocol each in
    :mod:`dask_broker.stores.roles` (:class:`~.roles.RunReader`,
    :class:`~.roles.DocumentWriter`, :class:`~.roles.RunSearch`,
    :class:`~.roles.ResourceUpdates`, :class:`~.roles.StreamData`); the optional
    ones a store announces in :attr:`capabilities`, and a read-only store
    (:attr:`read_only`) refuses every write with
    :class:`~dask_broker.errors.ReadOnlyCatalogError`.
    """

    #: URI scheme(s) this backend opens.
    schemes: tuple[str, ...] = ()

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """A URI from which any process can open the same store (passwords included)."""

    @property
    def display_uri(self) -> str:
        """:attr:`uri` with its passwords masked: the one to show (reprs, messages, logs)."""
        return mask_uri(self.uri)

    @classmethod
    @abc.abstractmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "Store":
        """Open (creating if needed) the store named by ``uri``."""

    @classmethod
    def open_existing(cls, uri: str, **kwargs: Any) -> "Store":
        """Open the store at ``uri`` where it must already exist (workers, unpickling).

        Backends that create storage on open override this to refuse to create
        it, so that a worker that cannot see the catalog fails instead of
        reading an empty one.
        """
        return cls.from_uri(uri, **kwargs)

    def __reduce__(self):
        return (type(self).open_existing, (self.uri,))

    @property
    def ref(self) -> "StoreRef":
        """A picklable recipe (URI and options) from which a worker reaches this store."""
        from . import StoreRef

        return StoreRef(self.uri, self._ref_options())

    def _ref_options(self) -> tuple[tuple[str, Any], ...]:
        """Options beyond the URI that a re-opened store needs (none by default)."""
        return ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.uri == self.uri  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.uri))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_uri!r})"

    def close(self) -> None:
        """Release connections.  The store may be used again (it re-opens)."""

    # ------------------------------------------------------------ capabilities
    @property
    def read_only(self) -> bool:
        """Whether writes are refused (with :class:`~dask_broker.errors.ReadOnlyCatalogError`).

        False by default; SQLite, PostgreSQL and MongoDB stores opened with
        ``read_only=True`` (or ``?mode=ro`` in the URI) say True.
        """
        return False

    @property
    def supports_resource_updates(self) -> bool:
        """Whether :meth:`update_resource` and :meth:`resource_history` are implemented."""
        return type(self).update_resource is not Store.update_resource

    @property
    def capabilities(self) -> frozenset[str]:
        """What this store can do beyond reading runs: names from
        :mod:`dask_broker.stores.roles` (``"write"``, ``"stream_data"``,
        ``"resource_updates"``, ``"list_resources"``, ``"find_resources"``).

        Callers ask here instead of catching ``NotImplementedError``.  The default
        derives them from :attr:`read_only`, :attr:`supports_stream_data`,
        :attr:`supports_resource_updates` and which optional methods the backend
        overrides; a backend may override this property.

        Examples
        --------
        >>> "resource_updates" in store.capabilities   # doctest: +SKIP
        True
        """
        from . import roles

        cls = type(self)
        caps = set()
        if not self.read_only:
            caps.add(roles.WRITE)
        if self.supports_stream_data:
            caps.add(roles.STREAM_DATA)
        if self.supports_resource_updates:
            caps.add(roles.RESOURCE_UPDATES)
        if cls.iter_resources is not Store.iter_resources:
            caps.add(roles.LIST_RESOURCES)
        if cls.find_resources is not Store.find_resources:
            caps.add(roles.FIND_RESOURCES)
        return frozenset(caps)

    # ------------------------------------------------------------------ writes
    @abc.abstractmethod
    def insert_start(self, doc: Mapping) -> None:
        """Store a start document.  Raises DuplicateUidError."""

    @abc.abstractmethod
    def insert_stop(self, doc: Mapping) -> None:
        """Store a stop document.  Raises DuplicateUidError, RunAlreadyStoppedError."""

    @abc.abstractmethod
    def insert_descriptor(self, doc: Mapping) -> None:
        """Store a descriptor.  Raises DuplicateUidError."""

    @abc.abstractmethod
    def insert_resource(self, doc: Mapping) -> None:
        """Store a resource.  Raises DuplicateUidError."""

    @abc.abstractmethod
    def insert_datum_page(self, page: Mapping) -> None:
        """Store a datum_page atomically.  Raises DuplicateUidError naming the datum_id."""

    @abc.abstractmethod
    def insert_event_page(self, page: Mapping) -> None:
        """Store an event_page atomically.  Raises DuplicateUidError naming the event uid."""

    def insert_event_pages(self, pages: Sequence[Mapping]) -> None:
        """Store several event_pages (of any descriptors) atomically: all or none.

        The default writes them one by one; backends override it with one
        transaction (SQLite) or one checked bulk write (MongoDB).
        """
        for page in pages:
            self.insert_event_page(page)

    # ------------------------------------------------------------------ reads
    @abc.abstractmethod
    def get_start(self, uid: str) -> dict | None:
        """The start document with this uid, or None."""

    @abc.abstractmethod
    def start_uids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` run uids starting with ``prefix``."""

    @abc.abstractmethod
    def iter_starts(self) -> Iterator[dict]:
        """Every start document, newest first (start time, then insertion order)."""

    def search(self, query: Mapping | None = None, *, text: str | None = None
               ) -> Iterator[dict]:
        """Start documents matching a Mongo-style ``query`` and the full-text search
        ``text`` (both), newest first.

        The query and the text are checked (:func:`~dask_broker.query.parse_query`,
        :func:`~dask_broker.text_search.parse_text`) before the first document is
        read.  A backend that overrides this method narrows the candidates with an
        index -- the query's :meth:`~dask_broker.query.Query.conditions`; for ``text``,
        a full-text index holding each start document's
        :func:`~dask_broker.text_search.document_words` (or
        :func:`~dask_broker.text_search.index_text`) that every document holding the
        search's words passes -- and decides with
        :meth:`~dask_broker.query.Query.match` and
        :meth:`~dask_broker.text_search.TextSearch.match`, so that every store returns
        the same runs.  The Broker passes ``text`` only when there is a text search.
        """
        query = parse_query(query)
        search = parse_text(text)
        return (doc for doc in self.iter_starts()
                if query.match(doc) and (search is None or search.match(doc)))

    def count_starts(self) -> int:
        """How many runs the store holds."""
        return sum(1 for _ in self.iter_starts())

    @abc.abstractmethod
    def get_stop(self, run_uid: str) -> dict | None:
        """The stop document of a run, or None while it is in progress."""

    @abc.abstractmethod
    def get_descriptor(self, uid: str) -> dict | None:
        """The descriptor with this uid, or None."""

    @abc.abstractmethod
    def descriptors(self, run_uid: str) -> list[dict]:
        """A run's descriptors in insertion order."""

    @abc.abstractmethod
    def get_resource(self, uid: str) -> dict | None:
        """The resource with this uid, or None."""

    def find_resources(self, *, root: str | None, resource_path: str | None) -> list[dict]:
        """Every resource (of any run) with this ``root`` and ``resource_path`` (as text).

        A text match misses the same file written another way; to find every
        resource that may point at a file, :mod:`dask_broker.file_users` scans
        :meth:`iter_resources` instead.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot search resources by path")

    @abc.abstractmethod
    def resources(self, run_uid: str) -> list[dict]:
        """A run's resources in insertion order."""

    def iter_resources(self) -> Iterator[dict]:
        """Every resource of the catalog (of any run), in insertion order.

        Used before deleting files, to find every resource that may still point
        at them (resources are few compared with events and datum).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list all its resources")

    # ------------------------------------------------------- resource updates
    # Not abstract: a backend without them still stores and reads runs.
    def update_resource(self, resource_uid: str, changes: Mapping, *, cmd: str,
                        cmd_kwargs: Mapping) -> dict:
        """Replace top-level keys of a stored resource and record the change, atomically.

        In one transaction the resource document becomes ``{**old, **changes}``
        and a history record ``{"resource", "old", "new", "time", "cmd",
        "cmd_kwargs"}`` is appended (as databroker v0's ``resource_update``
        collection).  Which keys may change is checked by the caller
        (:meth:`~dask_broker.EventSource.update_resource`); the store only
        refuses ``uid`` and ``run_start``, which identify the resource.

        Parameters
        ----------
        resource_uid
            The resource to update.
        changes
            New values of top-level keys (``root``, ``resource_path``, ...).
        cmd
            What made the change (e.g. ``"move_files"``).
        cmd_kwargs
            Its arguments (JSON-serializable).

        Returns
        -------
        dict
            The new resource document.

        Raises
        ------
        UnknownReferenceError
            No resource with this uid is stored (nothing is written).
        InvalidArgumentError
            ``changes`` touches ``uid`` or ``run_start``.
        NotImplementedError
            The backend does not support resource updates (the default).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement update_resource: this catalog backend "
            "cannot update resource documents (yet)")

    def resource_history(self, resource_uid: str) -> list[dict]:
        """The update records of a resource, oldest first (``[]`` if never updated or unknown).

        Each record is ``{"resource", "old", "new", "time", "cmd", "cmd_kwargs"}``.

        Raises
        ------
        NotImplementedError
            The backend does not record resource updates (the default).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement resource_history: this catalog backend "
            "does not record resource updates (yet)")

    # ------------------------------------------------- stream_resource / stream_datum
    # Not abstract, so that a third-party backend written before them still opens;
    # both built-in stores implement them (``supports_stream_data``).

    #: Whether this backend stores stream_resource / stream_datum documents.
    supports_stream_data: bool = False

    def _no_stream_data(self, what: str):
        return NotImplementedError(
            f"{type(self).__name__} does not implement {what}: this catalog backend cannot "
            "store stream_resource / stream_datum documents (ophyd-async detectors)")

    def insert_stream_resource(self, doc: Mapping) -> None:
        """Store a stream_resource document.  Raises DuplicateUidError."""
        raise self._no_stream_data("insert_stream_resource")

    def insert_stream_datums(self, docs: Sequence[Mapping]) -> None:
        """Store stream_datum documents atomically: all or none.

        Raises DuplicateUidError naming the first uid already stored (or repeated).
        """
        raise self._no_stream_data("insert_stream_datums")

    def get_stream_resource(self, uid: str) -> dict | None:
        """The stream_resource with this uid, or None."""
        raise self._no_stream_data("get_stream_resource")

    def stream_resources(self, run_uid: str) -> list[dict]:
        """A run's stream_resources in insertion order.

        Those whose ``run_start`` is the run, and those (without ``run_start``,
        as ophyd-async emits them) that a stream_datum of the run's descriptors
        points at.
        """
        raise self._no_stream_data("stream_resources")

    def stream_datums(self, descriptor_uids: Sequence[str]) -> list[dict]:
        """Every stream_datum of these descriptors, in insertion order."""
        raise self._no_stream_data("stream_datums")

    def stream_datums_of_resource(self, stream_resource_uid: str) -> list[dict]:
        """Every stream_datum pointing at this stream_resource, in insertion order."""
        raise self._no_stream_data("stream_datums_of_resource")

    def iter_stream_resources(self) -> Iterator[dict]:
        """Every stream_resource of the catalog (of any run), in insertion order."""
        raise self._no_stream_data("iter_stream_resources")

    @abc.abstractmethod
    def datum(self, datum_ids: Sequence[str]) -> dict[str, dict]:
        """The datum documents with these ids (missing ids are absent)."""

    @abc.abstractmethod
    def datum_of_resource(self, resource_uid: str) -> Iterator[dict]:
        """Every datum of a resource, in insertion order."""

    @abc.abstractmethod
    def event_counts(self, descriptor_uids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """``{descriptor_uid: (count, min_seq_num, max_seq_num)}`` of stored events.

        Descriptors without events are absent.
        """

    def seq_num_runs(self, descriptor_uids: Sequence[str]) -> list[tuple[int, int, int]]:
        """Where the events' seq_nums lie: ``(start, stop, count)`` runs, sorted by start.

        Each run holds ``count`` events with ``start <= seq_num < stop`` (``count ==
        stop - start`` when they are consecutive).  Used to size partitions by the
        events stored rather than by the span of their seq_nums.  The default reads
        the seq_num column of every page; backends with page metadata override it.
        """
        runs: list[tuple[int, int, int]] = []
        for page in self.iter_event_pages(descriptor_uids, fields=[], timestamps=False):
            runs.extend(consecutive_runs(np.asarray(page.seq_num, dtype="i8")))
        return sorted(runs)

    @abc.abstractmethod
    def iter_event_pages(
        self,
        descriptor_uids: Sequence[str],
        *,
        seq_range: tuple[int, int] | None = None,
        fields: Iterable[str] | None = None,
        timestamps: bool = True,
        uids: bool = False,
    ) -> Iterator[EventPageColumns]:
        """Pages of events, each of one descriptor, in insertion order.

        The order is a contract every store keeps (the conformance suite checks it):

        - a descriptor's events come in the order they were stored, or sorted by
          ``seq_num`` (MongoDB, whose index streams them so); the reader
          (:mod:`dask_broker.table`) sorts by ``seq_num`` itself and relies on
          nothing more, except:
        - events of one descriptor that share a ``seq_num`` (legacy data) come in
          the order they were stored, so that the reader, which keeps the last of
          them, keeps the **last stored** one -- not the last by ``time``.

        Parameters
        ----------
        descriptor_uids
            Descriptors to read.
        seq_range
            ``(lo, hi)``: only events with ``lo <= seq_num < hi``.
        fields
            Only these fields are read from storage (None: all).
        timestamps
            Read the per-field timestamps too.
        uids
            Read event uids and ``filled`` (needed to rebuild documents).
        """
