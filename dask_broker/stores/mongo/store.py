"""A store over MongoDB, in databroker's "mongo_normalized" layout.

This is the layout suitcase-mongo writes and databroker reads, so a facility's
existing databases open as they are::

    run_start, run_stop, event_descriptor, event   (the metadatastore database)
    resource, datum                                (the asset registry database)
    stream_resource, stream_datum                  (the asset registry database; ours)

one Mongo document per bluesky document (event_pages and datum_pages are
unpacked on write, as suitcase-mongo unpacks them: each event document holds
its row of the page's ``filled``, ``{}`` when the page's is, and none when the
page has none -- an event inserted without ``filled``).  The asset registry may be a
separate database, even on another server::

    MongoStore.from_uri("mongodb://host:27017/mds",
                        asset_registry_uri="mongodb://other:27017/assets")

and the store's :attr:`~MongoStore.uri` then carries it as the query parameter
``asset_registry_uri`` (percent-encoded), so the store pickles by URI.

Reading follows databroker: events of descriptors are one indexed query
``{descriptor: {$in: ...}, seq_num: {$gte: lo, $lt: hi}}`` that projects only the
wanted fields, sorted by ``(descriptor, seq_num, time)`` and fetched in batches
sized to a few MB (well under MongoDB's 16 MB reply limit).  Pages come sorted by
seq_num; when a descriptor holds several events with one seq_num, they come in the
order they were stored (``_id`` order), so the last stored wins, as in every store.

suitcase-mongo and databroker have no collections for stream_resource and
stream_datum (suitcase-mongo drops these documents), so dask_broker keeps them in
two collections of its own beside ``resource`` and ``datum``, one Mongo document
per bluesky document, stored as given; databroker 2.x does not read them.

Legacy data is read as it is: resources without ``uid`` (referenced by their
``_id``), duplicated resource uids (the first is used), descriptors with
``run_start_id`` instead of ``run_start``, events with or without ``filled``
(read back, as databroker reads them, with ``filled`` ``{key: False}`` for the
descriptor's external keys).

Values: BSON has no array type apart from lists, so numpy arrays are stored as
lists (as suitcase-mongo stores them) and read back as lists, except for fields
whose data_key declares ``dtype: "array"`` with a shape, read back as numpy arrays.
Integers beyond 64 bits (which BSON cannot hold) are stored as Decimal128 and read
back as int.  ``event_counts`` counts stored event documents, repeats of a
seq_num included.

Writes are atomic per call as far as MongoDB allows without transactions: every
uid is checked before anything is written (a duplicate raises
:class:`~dask_broker.errors.DuplicateUidError` naming it), and if a bulk insert
still fails part-way, what that call wrote is deleted before the error is raised.

Indexes: a store's first write in a process creates suitcase-mongo's indexes
(a no-op where they exist) and those of dask_broker's own collections
(``stream_resource``: unique ``uid``, ``run_start``; ``stream_datum``: unique
``uid``, ``(descriptor, _id)``, ``stream_resource``), plus dask_broker's ``event
(descriptor, seq_num, time)`` and ``resource (run_start)`` while those collections
are still empty; on an existing database run :meth:`MongoStore.create_indexes` when
convenient (without them, event reads sort on the server and a run's resources are
a scan).

Each process makes its own ``MongoClient`` lazily from the URI (clients are
never pickled, and are re-made after a fork).  An unreachable server raises
:class:`~dask_broker.errors.StoreURIError` naming the host after
``serverSelectionTimeoutMS`` (default 5 s; set it in the URI or with
``server_selection_timeout_ms=``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...errors import StoreURIError
from ..base import Store
from .uri import (
    ASSET_PARAM,
    MODE_PARAM,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    mask_uri,
    parse_store_uri,
    split_mode,
    with_timeout,
)
from .connection import Connection
from .indexes import Indexes
from .reads import Reads
from .search import Search
from .writes import Writes

__all__ = ["MongoStore", "DEFAULT_SERVER_SELECTION_TIMEOUT_MS"]


def _reopen(cls: type, uri: str, client_class: Any) -> "MongoStore":
    """Unpickle a store made with a custom client class (e.g. mongomock's)."""
    return cls.from_uri(uri, mongo_client_class=client_class)



class MongoStore(Connection, Indexes, Writes, Reads, Search, Store):
    """Documents in MongoDB, in the mongo_normalized layout of suitcase-mongo / databroker.

    Parameters
    ----------
    uri
        ``mongodb://[user:password@]host[:port][,host...]/dbname[?options]`` (or
        ``mongodb+srv://``); may carry ``asset_registry_uri=<percent-encoded URI>``.
    asset_registry_uri
        The database holding resource and datum, if not ``uri``'s.
    server_selection_timeout_ms
        How long to wait for an unreachable server before raising
        :class:`~dask_broker.errors.StoreURIError` (default: the URI's
        ``serverSelectionTimeoutMS``, else 5000).  Kept in :attr:`uri`.
    mongo_client_class
        The client class (default ``pymongo.MongoClient``); tests pass a
        ``mongomock.MongoClient``.  Pickled by reference along with the URI.
    read_only
        Refuse every write (and index creation) with
        :class:`~dask_broker.errors.ReadOnlyCatalogError`; also ``?mode=ro`` in the
        URI, which :attr:`uri` then carries.  The server's own access control is
        unchanged: use a read-only MongoDB user to enforce it there too.

    Examples
    --------
    >>> store = MongoStore.from_uri("mongodb://localhost:27017/metadatastore")  # doctest: +SKIP
    >>> db = Broker.from_uri("mongodb://localhost:27017/metadatastore")        # doctest: +SKIP
    """

    schemes = ("mongodb", "mongodb+srv")

    def __init__(
        self,
        uri: str,
        asset_registry_uri: str | None = None,
        *,
        server_selection_timeout_ms: int | None = None,
        mongo_client_class: Any = None,
        read_only: bool = False,
    ):
        uri, ro_in_uri = split_mode(uri)
        main, embedded = parse_store_uri(uri)
        if asset_registry_uri is not None and embedded is not None:
            given = parse_store_uri(asset_registry_uri, "asset registry")[0]
            if given != parse_store_uri(embedded, "asset registry")[0]:
                raise StoreURIError(
                    f"{mask_uri(uri)} names the asset registry {mask_uri(embedded)!r} but "
                    f"asset_registry_uri={mask_uri(asset_registry_uri)!r} was also given; give one")
        asset_registry_uri = asset_registry_uri if asset_registry_uri is not None else embedded
        assets = None
        if asset_registry_uri is not None:
            assets, nested = parse_store_uri(asset_registry_uri, "asset registry")
            if nested is not None:
                raise StoreURIError(
                    f"the asset registry URI {mask_uri(asset_registry_uri)!r} names an asset "
                    "registry itself")
        if server_selection_timeout_ms is not None:
            if not isinstance(server_selection_timeout_ms, int) or server_selection_timeout_ms <= 0:
                raise StoreURIError(
                    "server_selection_timeout_ms must be a positive int (milliseconds), not "
                    f"{server_selection_timeout_ms!r}")
            main = parse_store_uri(with_timeout(main.uri, server_selection_timeout_ms))[0]
            if assets is not None:
                assets = parse_store_uri(with_timeout(assets.uri, server_selection_timeout_ms))[0]
        if assets == main:
            assets = None
        self._main = main
        self._assets = assets
        self._client_class = mongo_client_class
        self._read_only = bool(read_only) or ro_in_uri
        self._legacy_descriptors: bool | None = None
        self._mongodb: bool | None = None
        self._text_index: bool | None = None
        self._array_fields_cache: dict[str, frozenset] = {}

    @classmethod
    def from_uri(cls, uri: str, asset_registry_uri: str | None = None,
                 **kwargs: Any) -> "MongoStore":
        """Open the store named by ``uri`` (see the class for the parameters).

        Nothing is sent to the server until the first read or write.
        """
        return cls(uri, asset_registry_uri, **kwargs)

    @property
    def uri(self) -> str:
        uri = self._main.uri
        if self._assets is not None:
            sep = "&" if "?" in uri else "?"
            uri += f"{sep}{ASSET_PARAM}={quote(self._assets.uri, safe='')}"
        if self._read_only:
            uri += ("&" if "?" in uri else "?") + f"{MODE_PARAM}=ro"
        return uri

    @property
    def read_only(self) -> bool:
        """Whether writes are refused (``read_only=True`` or ``?mode=ro``)."""
        return self._read_only

    @property
    def database_name(self) -> str:
        """The metadatastore database's name."""
        return self._main.database

    @property
    def asset_registry_uri(self) -> str:
        """The URI of the database holding resources and datum."""
        return (self._assets or self._main).uri

    def __reduce__(self):
        if self._client_class is None:
            return (type(self).from_uri, (self.uri,))
        return (_reopen, (type(self), self.uri, self._client_class))

    def _ref_options(self) -> tuple[tuple[str, Any], ...]:
        if self._client_class is None:
            return ()
        return (("mongo_client_class", self._client_class),)
