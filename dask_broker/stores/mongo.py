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
sized to a few MB (well under MongoDB's 16 MB reply limit); when a descriptor
holds several events with one seq_num, the last (by time) wins.

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

import logging
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

import numpy as np

from ..errors import (
    DaskBrokerError,
    DuplicateUidError,
    RunAlreadyStoppedError,
    StoreURIError,
    UnknownReferenceError,
)
from ..query import Query, parse_query
from ..text_search import TextSearch, parse_text
from .base import EventPageColumns, Store, check_resource_changes, chunked, first_repeat
from .mongo_uri import (
    ASSET_PARAM,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    MongoURI,
    client_for,
    drop_client,
    indexed,
    mask_uri,
    parse_store_uri,
    with_timeout,
)
from .mongo_values import (
    clean_doc,
    restore,
    sub_document,
    to_array_column,
    to_bson,
    to_bson_list,
    to_column,
)

__all__ = ["MongoStore", "DEFAULT_SERVER_SELECTION_TIMEOUT_MS"]

logger = logging.getLogger(__name__)

#: Aim for server replies of about this size when reading events.
TARGET_BATCH_BYTES = 4 * 2**20
#: At most this many events in one page (and one server batch).
MAX_PAGE_EVENTS = 50_000
#: Documents per insert_many call.
INSERT_CHUNK = 10_000
#: Values per ``$in`` query.
IN_CHUNK = 10_000

_DUPLICATE_KEY = 11000
_AUTH_CODES = (13, 18)  # Unauthorized, AuthenticationFailed
_EVENT_SORT = [("descriptor", 1), ("seq_num", 1), ("time", 1)]


# ----------------------------------------------------------------- helpers
_MISSING = object()


def _reopen(cls: type, uri: str, client_class: Any) -> "MongoStore":
    """Unpickle a store made with a custom client class (e.g. mongomock's)."""
    return cls.from_uri(uri, mongo_client_class=client_class)


def _is_wildcard_text_index(spec: Mapping) -> bool:
    """Whether an index (as ``index_information`` gives it) is ``{"$**": "text"}`` with
    MongoDB's English defaults and text index version 3 (the unicode tokenizer): the
    index whose ``$text`` finds every run text_search's rule matches."""
    try:
        return (list(map(tuple, spec.get("key", ()))) == [("_fts", "text"), ("_ftsx", 1)]
                and dict(spec.get("weights") or {}) == {"$**": 1}
                and spec.get("default_language", "english") == "english"
                and spec.get("language_override", "language") == "language"
                and int(spec.get("textIndexVersion", 0)) >= 3)
    except (TypeError, ValueError):
        return False


def _raised_in_pymongo_auth(err: BaseException) -> bool:
    """Whether ``err`` was raised inside pymongo's authentication code."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.startswith("pymongo.") and module.rpartition(".")[2] == "auth"


class MongoStore(Store):
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
    ):
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
        return uri

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

    # ------------------------------------------------------------ connections
    def _db(self, target: MongoURI):
        return client_for(target, self._client_class)[target.database]

    def _mds(self):
        return self._db(self._main)

    def _ar(self):
        return self._db(self._assets or self._main)

    def close(self) -> None:
        """Close this process's clients of the store's servers (they re-open on use)."""
        drop_client(self._main, self._client_class)
        if self._assets is not None:
            drop_client(self._assets, self._client_class)

    @contextmanager
    def _errors(self, assets: bool = False) -> Iterator[None]:
        """Turn connection and authentication failures into StoreURIError naming the server."""
        from pymongo.errors import ConnectionFailure, OperationFailure, ServerSelectionTimeoutError

        target = (self._assets or self._main) if assets else self._main
        try:
            yield
        except ServerSelectionTimeoutError as err:
            raise StoreURIError(
                f"cannot reach the MongoDB server at {target.hosts} (database "
                f"{target.database!r}, URI {mask_uri(target.uri)}): no server answered within "
                f"{target.effective_timeout_ms / 1000:g} s (serverSelectionTimeoutMS); check that "
                "mongod runs there and the URI is right, or raise the timeout with "
                f"?serverSelectionTimeoutMS=... ({mask_uri(str(err)).split(',')[0][:200]})"
            ) from err
        except ConnectionFailure as err:
            raise StoreURIError(
                f"lost the connection to the MongoDB server at {target.hosts} (database "
                f"{target.database!r}): {mask_uri(str(err))[:300]}"
            ) from err
        except OperationFailure as err:
            if err.code in _AUTH_CODES:
                raise StoreURIError(
                    f"MongoDB at {target.hosts} refused access to database {target.database!r} "
                    f"({mask_uri(str(err.details.get('errmsg', err) if err.details else err))}); "
                    "check the user and password in the URI and the user's roles"
                ) from err
            raise
        except KeyError as err:
            if not _raised_in_pymongo_auth(err):
                raise
            # A wire-protocol server without access control (nx-27017, for one) answers
            # the authentication handshake with a reply pymongo cannot read.
            raise StoreURIError(
                f"the MongoDB server at {target.hosts} did not complete authentication for "
                f"database {target.database!r} (its reply lacks {err}); it may not support "
                "access control: check the user and password in the URI, or leave them out"
            ) from err

    # ---------------------------------------------------------------- indexes
    def create_indexes(self, *, extra: bool = True) -> None:
        """Create suitcase-mongo's indexes (and, with ``extra``, dask_broker's read indexes).

        dask_broker's extra indexes are ``event (descriptor, seq_num, time)``, which
        makes event reads stream in order from the index, and ``resource run_start``.
        On its first write to a database a store creates the suitcase indexes, and the
        extra ones only while the collections are empty (building them on a large
        existing database can take long: run this method when convenient).
        """
        with self._errors():
            self._create_indexes(extra=extra)

    def _create_indexes(self, *, extra: bool | str) -> None:
        from pymongo import ASCENDING as ASC, DESCENDING as DESC

        mds, ar = self._mds(), self._ar()
        specs: list[tuple[Any, Any, dict]] = [
            (ar.resource, "uid", {"unique": False}),
            (ar.resource, "resource_id", {}),
            (ar.datum, "datum_id", {"unique": True}),
            (ar.datum, "resource", {}),
            (mds.run_start, "uid", {"unique": True}),
            (mds.run_start, "scan_id", {"unique": False}),
            (mds.run_start, [("scan_id", DESC), ("_id", DESC)], {"unique": True}),
            (mds.run_start, [("time", ASC), ("_id", DESC)], {"unique": True}),
            (mds.run_start, [("time", DESC), ("_id", DESC)], {"unique": True}),
            (mds.run_start, [("time", DESC), ("scan_id", DESC)], {"unique": False}),
            (mds.run_start, [("$**", "text")], {}),
            (mds.run_start, "data_session", {"unique": False}),
            (mds.run_start, "data_groups", {"unique": False}),
            (mds.run_stop, "run_start", {"unique": True}),
            (mds.run_stop, "uid", {"unique": True}),
            (mds.run_stop, [("time", DESC)], {"unique": False}),
            (mds.run_stop, [("$**", "text")], {}),
            (mds.event_descriptor, "uid", {"unique": True}),
            (mds.event_descriptor, [("run_start", DESC), ("time", DESC)], {"unique": False}),
            (mds.event_descriptor, [("time", DESC)], {"unique": False}),
            (mds.event_descriptor, [("$**", "text")], {}),
            (mds.event, "uid", {"unique": True}),
            (mds.event, [("descriptor", DESC), ("time", ASC)], {"unique": False}),
            # databroker v0's record of resource edits
            (ar.resource_update, [("resource", DESC), ("time", DESC)], {}),
            # dask_broker's own collections (suitcase-mongo has none for these documents);
            # stream_datums() reads a descriptor's in _id (insertion) order
            (ar.stream_resource, "uid", {"unique": True}),
            (ar.stream_resource, "run_start", {}),
            (ar.stream_datum, "uid", {"unique": True}),
            (ar.stream_datum, [("descriptor", ASC), ("_id", ASC)], {}),
            (ar.stream_datum, "stream_resource", {}),
        ]
        if extra is True:
            specs += [(mds.event, [("descriptor", ASC), ("seq_num", ASC), ("time", ASC)], {}),
                      (ar.resource, "run_start", {})]
        elif extra == "if-empty":
            if mds.event.estimated_document_count() == 0:
                specs.append(
                    (mds.event, [("descriptor", ASC), ("seq_num", ASC), ("time", ASC)], {}))
            if ar.resource.estimated_document_count() == 0:
                specs.append((ar.resource, "run_start", {}))
        if not self._is_mongodb():
            # A wire-compatible server that is not MongoDB (nx-27017, for one) may fail
            # every later insert once an index includes _id; those indexes only speed up sorts.
            specs = [s for s in specs if not (isinstance(s[1], list) and any(
                k == "_id" for k, _ in s[1]))]
            specs.append((ar.stream_datum, "descriptor", {}))
        self._apply_indexes(specs)

    def _is_mongodb(self) -> bool:
        """Whether the server is MongoDB (it reports a version; asked once per store)."""
        if self._mongodb is None:
            self._mongodb = self._server_reports_version()
        return self._mongodb

    def _server_reports_version(self) -> bool:
        from pymongo.errors import OperationFailure

        try:
            return "version" in self._mds().client.server_info()
        except (OperationFailure, AttributeError, NotImplementedError):
            return False

    @staticmethod
    def _apply_indexes(specs) -> None:
        from pymongo.errors import OperationFailure

        for coll, keys, options in specs:
            try:
                coll.create_index(keys, **options)
            except OperationFailure as err:
                if err.code in _AUTH_CODES:
                    logger.warning("no indexes created on %s: the user may not create indexes "
                                   "(%s)", coll.database.name, err)
                    return
                # e.g. a text index the server does not support, or an existing index
                # of the same keys with other options (legacy databases).
                level = logging.DEBUG if "text" in str(keys) else logging.WARNING
                logger.log(level, "index %s on %s not created: %s", keys, coll.full_name, err)

    def _ensure_indexes(self) -> None:
        key = (self._client_class, self._main.uri, (self._assets or self._main).uri)
        if key in indexed:
            return
        self._create_indexes(extra="if-empty")
        indexed.add(key)

    # ------------------------------------------------------------------ writes
    def _insert_one(self, doc_type: str, coll_name: str, doc: Mapping, *,
                    assets: bool = False) -> None:
        from pymongo.errors import DuplicateKeyError

        record = to_bson(dict(doc))
        uid = record["uid"]
        with self._errors(assets):
            self._ensure_indexes()
            coll = (self._ar() if assets else self._mds())[coll_name]
            if coll.find_one({"uid": uid}, {"_id": 1}) is not None:
                raise self._duplicate(doc_type, uid)
            try:
                coll.insert_one(record)
            except DuplicateKeyError as err:
                raise self._duplicate(doc_type, uid) from err

    @staticmethod
    def _duplicate(doc_type: str, uid: str) -> DuplicateUidError:
        return DuplicateUidError(
            f"{doc_type} {uid!r} is already stored; documents are immutable, "
            "so give the new document a new uid")

    def insert_start(self, doc: Mapping) -> None:
        self._insert_one("start", "run_start", doc)

    def insert_stop(self, doc: Mapping) -> None:
        from pymongo.errors import DuplicateKeyError

        record = to_bson(dict(doc))
        uid, run = record["uid"], record["run_start"]

        def already_stopped():
            return RunAlreadyStoppedError(
                f"stop {uid!r}: run {run!r} already has a stop document; a run is stopped once")

        with self._errors():
            self._ensure_indexes()
            coll = self._mds().run_stop
            if coll.find_one({"uid": uid}, {"_id": 1}) is not None:
                raise self._duplicate("stop", uid)
            if coll.find_one({"run_start": run}, {"_id": 1}) is not None:
                raise already_stopped()
            try:
                coll.insert_one(record)
            except DuplicateKeyError as err:
                pattern = (err.details or {}).get("keyPattern") or {}
                if "run_start" in pattern or "run_start" in str(err):
                    raise already_stopped() from err
                raise self._duplicate("stop", uid) from err

    def insert_descriptor(self, doc: Mapping) -> None:
        self._insert_one("descriptor", "event_descriptor", doc)

    def insert_resource(self, doc: Mapping) -> None:
        # suitcase-mongo keeps resource uids non-unique in the index (legacy
        # duplicates); uniqueness of new ones is checked before writing.
        self._insert_one("resource", "resource", doc, assets=True)

    def insert_datum_page(self, page: Mapping) -> None:
        ids = to_bson_list(page["datum_id"])
        if not ids:
            return
        resource = page["resource"]
        kwargs = {k: to_bson_list(v) for k, v in page["datum_kwargs"].items()}
        docs = [{"datum_id": datum_id, "resource": resource,
                 "datum_kwargs": {k: col[i] for k, col in kwargs.items()}}
                for i, datum_id in enumerate(ids)]
        self._insert_many("datum", "datum page", docs, "datum_id",
                          f"resource {resource!r}", assets=True)

    # stream_resource / stream_datum: dask_broker's own collections in the asset
    # registry database (suitcase-mongo and databroker have none for them).
    supports_stream_data = True

    def insert_stream_resource(self, doc: Mapping) -> None:
        self._insert_one("stream_resource", "stream_resource", doc, assets=True)

    def insert_stream_datums(self, docs: Sequence[Mapping]) -> None:
        if not docs:
            return
        records = [to_bson(dict(d)) for d in docs]
        resources = sorted({str(r.get("stream_resource")) for r in records})
        context = (f"stream_resource {resources[0]!r}" if len(resources) == 1
                   else f"stream_resources {resources!r}")
        self._insert_many("stream_datum", "stream_datum batch", records, "uid", context,
                          assets=True)

    def insert_event_page(self, page: Mapping) -> None:
        self.insert_event_pages([page])

    def insert_event_pages(self, pages: Sequence[Mapping]) -> None:
        docs = [doc for page in pages for doc in self._event_docs(page)]
        if docs:
            descriptors = sorted({p["descriptor"] for p in pages})
            self._insert_many("event", "event page", docs, "uid",
                              f"descriptor {descriptors[0]!r}" if len(descriptors) == 1
                              else f"descriptors {descriptors!r}")

    @staticmethod
    def _event_docs(page: Mapping) -> list[dict]:
        """An event_page unpacked into mongo_normalized event documents, as suitcase-mongo
        unpacks it (``event_model.unpack_event_page``): each with its row of ``filled``
        (``{}`` when the page's is empty), and without ``filled`` when the page has none."""
        uids = to_bson_list(page["uid"])
        descriptor = page["descriptor"]
        seq = to_bson_list(page["seq_num"])
        time = to_bson_list(page["time"])
        data = {k: to_bson_list(v) for k, v in page["data"].items()}
        ts = {k: to_bson_list(v) for k, v in page["timestamps"].items()}
        docs = [{"uid": uid, "descriptor": descriptor, "seq_num": seq[i], "time": time[i],
                 "data": {k: col[i] for k, col in data.items()},
                 "timestamps": {k: col[i] for k, col in ts.items()}}
                for i, uid in enumerate(uids)]
        if page.get("filled") is not None:
            filled = {k: to_bson_list(v) for k, v in page["filled"].items()}
            for i, doc in enumerate(docs):
                doc["filled"] = {k: col[i] for k, col in filled.items()}
        return docs

    def _insert_many(self, doc_type: str, page_name: str, docs: list[dict], key: str,
                     context: str, *, assets: bool = False) -> None:
        """Insert documents all-or-nothing: check every id first, undo a partial failure."""
        from bson import ObjectId
        from pymongo.errors import BulkWriteError

        ids = [d[key] for d in docs]
        dup = first_repeat(ids)
        if dup is not None:
            raise DuplicateUidError(
                f"{doc_type} {dup!r} ({context}) appears twice in this {page_name}; "
                f"nothing of this {page_name} was written")
        with self._errors(assets):
            self._ensure_indexes()
            coll = (self._ar() if assets else self._mds())[
                {"event": "event", "datum": "datum", "stream_datum": "stream_datum"}[doc_type]]
            for chunk in chunked(ids, IN_CHUNK):
                found = coll.find_one({key: {"$in": list(chunk)}}, {key: 1, "_id": 0})
                if found is not None:
                    raise DuplicateUidError(
                        f"{doc_type} {found[key]!r} ({context}) is already stored; "
                        f"nothing of this {page_name} was written")
            for d in docs:
                d["_id"] = ObjectId()
            done = 0
            try:
                for chunk in chunked(docs, INSERT_CHUNK):
                    coll.insert_many(chunk, ordered=False)
                    done += len(chunk)
            except Exception as err:  # noqa: BLE001 -- whatever it was, undo first
                self._undo_insert(coll, docs, key, doc_type, page_name, context, done, err,
                                  isinstance(err, BulkWriteError))

    def _undo_insert(self, coll, docs, key, doc_type, page_name, context, done, err, bulk) -> None:
        """Delete what a failed insert wrote, then raise an error saying what happened."""
        from pymongo.errors import PyMongoError

        n = len(docs)
        failed: list = []
        codes: set = set()
        if bulk:
            for e in err.details.get("writeErrors", []):
                codes.add(e.get("code"))
                op = e.get("op") or {}
                failed.append(op.get(key, docs[done + e.get("index", 0)][key]))
            written = done + int(err.details.get("nInserted", 0))
        else:
            written = None  # unknown: the connection failed mid-write
        try:
            for chunk in chunked([d["_id"] for d in docs], IN_CHUNK):
                coll.delete_many({"_id": {"$in": list(chunk)}})
            undone = None
        except PyMongoError as undo_err:
            undone = undo_err
        if written is None:
            fate = f"an unknown number of its {n} {doc_type} documents were written"
        else:
            fate = f"{written} of its {n} {doc_type} documents were written"
        if undone is None:
            outcome = (f"{fate} and have been removed again, so nothing of this {page_name} "
                       "is stored")
        else:
            outcome = (f"{fate} and removing them failed ({str(undone)[:200]}); delete the "
                       f"documents of {key} in {[d[key] for d in docs[:5]]}... of this {page_name} "
                       "by hand before retrying")
        if bulk and failed and codes == {_DUPLICATE_KEY}:
            raise DuplicateUidError(
                f"{doc_type} {failed[0]!r} ({context}) is already stored (written concurrently "
                f"by another client); {len(failed)} {doc_type} documents were rejected as "
                f"duplicates; {outcome}") from err
        if bulk:
            shown = ", ".join(repr(f) for f in failed[:10]) + (", ..." if len(failed) > 10 else "")
            first = (err.details.get("writeErrors") or [{}])[0].get("errmsg", str(err))
            raise DaskBrokerError(
                f"writing the {page_name} ({context}) failed: {len(failed)} {doc_type} documents "
                f"were not written ({key} {shown}: {first}); {outcome}") from err
        from pymongo.errors import ConnectionFailure

        target = ((self._assets or self._main) if doc_type in ("datum", "stream_datum")
                  else self._main)
        cls = StoreURIError if isinstance(err, ConnectionFailure) else DaskBrokerError
        raise cls(
            f"writing the {page_name} ({context}) to the MongoDB server at {target.hosts} failed "
            f"({str(err).split(',')[0][:300]}); {outcome}") from err

    # ------------------------------------------------------------------ reads
    def get_start(self, uid: str) -> dict | None:
        with self._errors():
            return clean_doc(self._mds().run_start.find_one({"uid": uid}, {"_id": 0}))

    def start_uids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        with self._errors():
            cur = self._mds().run_start.find(
                {"uid": {"$gte": prefix, "$lt": prefix + "\U0010ffff"}}, {"uid": 1, "_id": 0},
                sort=[("uid", 1)], limit=limit)
            return [d["uid"] for d in cur]

    def iter_starts(self) -> Iterator[dict]:
        yield from self._starts({})

    def search(self, query: Mapping | None = None, *, text: str | None = None
               ) -> Iterator[dict]:
        """Start documents matching a Mongo-style query and a full-text search, newest first.

        The server answers the query's :meth:`~dask_broker.query.Query.index_filter`
        (equality, ``$in`` and ranges, with its indexes; only top-level equality and
        ``$in`` on a server that is not MongoDB) and :meth:`~dask_broker.query.Query.match`
        decides, so the runs are those any other store returns for the query.  For
        ``text``, where ``run_start`` has suitcase-mongo's wildcard text index (MongoDB,
        English, text index version 3), ``$text`` with
        :meth:`~dask_broker.text_search.TextSearch.mongo_search` narrows too, and
        :meth:`~dask_broker.text_search.TextSearch.match` decides (see
        :mod:`dask_broker.text_search`).
        """
        # both checked now, before the server is asked
        return self._search(parse_query(query), parse_text(text))

    def _search(self, query: Query, search: TextSearch | None) -> Iterator[dict]:
        with self._errors():
            basic = not self._is_mongodb()
            narrow = to_bson(query.index_filter(basic=basic))
            if search is not None and not basic and self._has_text_index():
                word = search.mongo_search()
                if word is not None:
                    narrow["$text"] = {"$search": word}
        for doc in self._starts(narrow):
            if query.match(doc) and (search is None or search.match(doc)):
                yield doc

    def _has_text_index(self) -> bool:
        """Whether ``run_start`` has suitcase-mongo's wildcard text index (asked once)."""
        from pymongo.errors import OperationFailure

        if self._text_index is None:
            try:
                specs = self._mds().run_start.index_information().values()
            except OperationFailure:  # a user who may not list indexes: read without $text
                specs = ()
            self._text_index = any(_is_wildcard_text_index(spec) for spec in specs)
        return self._text_index

    def _starts(self, query: dict) -> Iterator[dict]:
        with self._errors():
            cur = self._mds().run_start.find(query, {"_id": 0},
                                             sort=[("time", -1), ("_id", -1)], batch_size=500)
            for doc in cur:
                yield clean_doc(doc)

    def get_stop(self, run_uid: str) -> dict | None:
        with self._errors():
            return clean_doc(self._mds().run_stop.find_one({"run_start": run_uid}, {"_id": 0}))

    def get_descriptor(self, uid: str) -> dict | None:
        with self._errors():
            doc = self._mds().event_descriptor.find_one({"uid": uid})
            return None if doc is None else self._descriptor(doc)

    def _descriptor(self, doc: Mapping, run_uid: str | None = None) -> dict:
        """A stored descriptor as a document (legacy ``run_start_id`` becomes ``run_start``)."""
        from bson import ObjectId

        doc = dict(doc)
        if "run_start" not in doc and "run_start_id" in doc:
            ref = doc.pop("run_start_id")
            if run_uid is None:
                if isinstance(ref, ObjectId):
                    start = self._mds().run_start.find_one({"_id": ref}, {"uid": 1})
                    run_uid = start["uid"] if start else str(ref)
                else:
                    run_uid = ref
            doc["run_start"] = run_uid
        return clean_doc(doc)

    def descriptors(self, run_uid: str) -> list[dict]:
        with self._errors():
            coll = self._mds().event_descriptor
            docs = [self._descriptor(d)
                    for d in coll.find({"run_start": run_uid}, sort=[("_id", 1)])]
            if docs or not self._has_legacy_descriptors():
                return docs
            refs: list[Any] = [run_uid]
            start = self._mds().run_start.find_one({"uid": run_uid}, {"_id": 1})
            if start is not None:
                refs.append(start["_id"])
            return [self._descriptor(d, run_uid)
                    for d in coll.find({"run_start_id": {"$in": refs}}, sort=[("_id", 1)])]

    def _has_legacy_descriptors(self) -> bool:
        """Whether any descriptor uses ``run_start_id`` (looked up once per store)."""
        if self._legacy_descriptors is None:
            found = self._mds().event_descriptor.find_one({"run_start_id": {"$exists": True}},
                                                          {"_id": 1})
            self._legacy_descriptors = found is not None
        return self._legacy_descriptors

    def get_resource(self, uid: str) -> dict | None:
        with self._errors(assets=True):
            doc = self._find_resource(uid)
            return None if doc is None else self._resource(doc)

    def _find_resource(self, uid: str) -> Mapping | None:
        """The stored resource document ``get_resource`` reads (with its ``_id``)."""
        from bson import ObjectId
        from bson.errors import InvalidId

        coll = self._ar().resource
        doc = next(iter(coll.find({"uid": uid}, sort=[("_id", 1)], limit=1)), None)
        if doc is None and isinstance(uid, str) and len(uid) == 24:
            # Very old resources have no uid and are referenced by their _id.
            try:
                doc = coll.find_one({"_id": ObjectId(uid)})
            except InvalidId:
                doc = None
        return doc

    def update_resource(self, resource_uid: str, changes: Mapping, *, cmd: str,
                        cmd_kwargs: Mapping) -> dict:
        """Replace top-level keys of a resource (or, failing that, a stream_resource) and
        record the change in ``resource_update``.

        As databroker v0 did: the record ``{resource, old, new, time, cmd, cmd_kwargs}``
        goes to the asset registry's ``resource_update`` collection.  Without
        transactions, the record is written first and removed again if the resource
        cannot be updated.  Of historical duplicates, the first (the one read) is updated.
        """
        import time as _time

        from pymongo.errors import PyMongoError

        changes = to_bson(check_resource_changes(resource_uid, changes))
        with self._errors(assets=True):
            self._ensure_indexes()
            coll = self._ar().resource
            stored = self._find_resource(resource_uid)
            if stored is None:
                coll = self._ar().stream_resource
                stored = coll.find_one({"uid": resource_uid})
            if stored is None:
                raise UnknownReferenceError(
                    f"no resource or stream_resource with uid {resource_uid!r} in "
                    f"{mask_uri(self.asset_registry_uri)}; nothing was updated")
            old = self._resource(stored)
            new = {**old, **changes}
            record = {"resource": resource_uid, "old": to_bson(old), "new": to_bson(new),
                      "time": _time.time(), "cmd": cmd, "cmd_kwargs": to_bson(dict(cmd_kwargs))}
            history = self._ar().resource_update
            record_id = history.insert_one(record).inserted_id
            try:
                if changes:
                    coll.update_one({"_id": stored["_id"]}, {"$set": changes})
            except BaseException:
                try:
                    history.delete_one({"_id": record_id})
                except PyMongoError:  # pragma: no cover - the server went away meanwhile
                    logger.warning("resource %r: an update failed and its history record %s "
                                   "could not be removed", resource_uid, record_id)
                raise
        return restore(new)

    def resource_history(self, resource_uid: str) -> list[dict]:
        with self._errors(assets=True):
            cur = self._ar().resource_update.find({"resource": resource_uid},
                                                   sort=[("time", 1), ("_id", 1)])
            return [{"resource": d.get("resource"), "old": clean_doc(d.get("old")),
                     "new": clean_doc(d.get("new")), "time": d.get("time"), "cmd": d.get("cmd"),
                     "cmd_kwargs": restore(d.get("cmd_kwargs"))} for d in cur]

    @staticmethod
    def _resource(doc: Mapping) -> dict:
        doc = dict(doc)
        if "uid" not in doc:
            doc["uid"] = str(doc["_id"])
        return clean_doc(doc)

    def find_resources(self, *, root: str | None, resource_path: str | None) -> list[dict]:
        with self._errors(assets=True):
            roots = [root] if root else ["", None]
            out: dict[str, dict] = {}
            for doc in self._ar().resource.find(
                    {"resource_path": resource_path, "root": {"$in": roots}}, sort=[("_id", 1)]):
                res = self._resource(doc)
                out.setdefault(res["uid"], res)
            return list(out.values())

    def iter_resources(self) -> Iterator[dict]:
        """Every resource in ``_id`` order (of historical duplicates, the first)."""
        seen: set[str] = set()
        with self._errors(assets=True):
            for doc in self._ar().resource.find({}, sort=[("_id", 1)], batch_size=1000):
                res = self._resource(doc)
                if res["uid"] not in seen:
                    seen.add(res["uid"])
                    yield res

    def resources(self, run_uid: str) -> list[dict]:
        with self._errors(assets=True):
            out: dict[str, dict] = {}
            for doc in self._ar().resource.find({"run_start": run_uid}, sort=[("_id", 1)]):
                res = self._resource(doc)
                out.setdefault(res["uid"], res)  # legacy duplicates: the first wins
            return list(out.values())

    def get_stream_resource(self, uid: str) -> dict | None:
        with self._errors(assets=True):
            return clean_doc(self._ar().stream_resource.find_one({"uid": uid}, {"_id": 0}))

    def stream_resources(self, run_uid: str) -> list[dict]:
        """The run's stream_resources in insertion (``_id``) order: those with its
        ``run_start`` and those a stream_datum of its descriptors points at."""
        descs = [d["uid"] for d in self.descriptors(run_uid)]
        with self._errors(assets=True):
            ar = self._ar()
            found: dict[Any, dict] = {}
            queries: list[dict] = [{"run_start": run_uid}]
            if descs:
                refs: set = set()
                for chunk in chunked(descs, IN_CHUNK):
                    # not distinct(): nx-27017 ignores its filter when it uses $in
                    pipeline = [{"$match": {"descriptor": {"$in": list(chunk)}}},
                                {"$group": {"_id": "$stream_resource"}}]
                    refs.update(row["_id"] for row in ar.stream_datum.aggregate(
                        pipeline, allowDiskUse=True))
                queries += [{"uid": {"$in": list(chunk)}}
                            for chunk in chunked(sorted(refs, key=str), IN_CHUNK)]
            for query in queries:
                for doc in ar.stream_resource.find(query, sort=[("_id", 1)]):
                    found.setdefault(doc["_id"], doc)
            return [clean_doc(found[k]) for k in sorted(found)]

    def iter_stream_resources(self) -> Iterator[dict]:
        with self._errors(assets=True):
            for doc in self._ar().stream_resource.find({}, {"_id": 0}, sort=[("_id", 1)],
                                                       batch_size=1000):
                yield clean_doc(doc)

    def stream_datums_of_resource(self, stream_resource_uid: str) -> list[dict]:
        with self._errors(assets=True):
            return [clean_doc(d) for d in self._ar().stream_datum.find(
                {"stream_resource": stream_resource_uid}, {"_id": 0}, sort=[("_id", 1)])]

    def stream_datums(self, descriptor_uids: Sequence[str]) -> list[dict]:
        # Insertion order is _id order (ObjectIds made by one client increase).
        descs = list(dict.fromkeys(descriptor_uids))
        docs: list[Mapping] = []
        with self._errors(assets=True):
            coll = self._ar().stream_datum
            for chunk in chunked(descs, IN_CHUNK):
                docs.extend(coll.find({"descriptor": {"$in": list(chunk)}},
                                      sort=[("_id", 1)], batch_size=10_000))
        if len(descs) > IN_CHUNK:
            docs.sort(key=lambda d: d["_id"])
        return [clean_doc(d) for d in docs]

    @staticmethod
    def _datum(doc: Mapping) -> dict:
        res = doc.get("resource")
        return {"datum_id": doc["datum_id"],
                "resource": res if isinstance(res, str) else restore(res),
                "datum_kwargs": restore(doc.get("datum_kwargs", {}))}

    def datum(self, datum_ids: Sequence[str]) -> dict[str, dict]:
        ids = list(dict.fromkeys(datum_ids))
        out: dict[str, dict] = {}
        with self._errors(assets=True):
            coll = self._ar().datum
            for chunk in chunked(ids, IN_CHUNK):
                for doc in coll.find({"datum_id": {"$in": list(chunk)}}, {"_id": 0}):
                    out[doc["datum_id"]] = self._datum(doc)
        return out

    def datum_of_resource(self, resource_uid: str) -> Iterator[dict]:
        # Insertion order is _id order (ObjectIds made by one client increase).
        with self._errors(assets=True):
            for doc in self._ar().datum.find({"resource": resource_uid}, {"_id": 0},
                                             sort=[("_id", 1)], batch_size=10_000,
                                             allow_disk_use=True):
                yield self._datum(doc)

    def event_counts(self, descriptor_uids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """``{descriptor: (count, min seq_num, max seq_num)}``, by one aggregation.

        ``count`` counts stored event documents, including any that repeat a seq_num.
        """
        out: dict[str, tuple[int, int, int]] = {}
        uids = list(dict.fromkeys(descriptor_uids))
        with self._errors():
            coll = self._mds().event
            for chunk in chunked(uids, IN_CHUNK):
                pipeline = [
                    {"$match": {"descriptor": {"$in": list(chunk)}}},
                    {"$group": {"_id": "$descriptor", "n": {"$sum": 1},
                                "lo": {"$min": "$seq_num"}, "hi": {"$max": "$seq_num"}}},
                ]
                for row in coll.aggregate(pipeline, allowDiskUse=True):
                    if row.get("n") and row.get("lo") is not None:
                        out[row["_id"]] = (int(row["n"]), int(row["lo"]), int(row["hi"]))
        return out

    def iter_event_pages(
        self,
        descriptor_uids: Sequence[str],
        *,
        seq_range: tuple[int, int] | None = None,
        fields: Iterable[str] | None = None,
        timestamps: bool = True,
        uids: bool = False,
    ) -> Iterator[EventPageColumns]:
        descs = list(dict.fromkeys(descriptor_uids))
        if not descs:
            return
        query: dict[str, Any] = {"descriptor": {"$in": descs}}
        if seq_range is not None:
            lo, hi = int(seq_range[0]), int(seq_range[1])
            if lo >= hi:
                return
            query["seq_num"] = {"$gte": lo, "$lt": hi}
        fields = None if fields is None else list(dict.fromkeys(fields))
        projection: dict[str, int] = {"_id": 0, "descriptor": 1, "seq_num": 1, "time": 1}
        if uids:
            projection["uid"] = 1
        if fields is None or any("." in f or f.startswith("$") for f in fields):
            # Names a projection cannot express: read the whole sub-documents.
            projection["data"] = 1
            if timestamps:
                projection["timestamps"] = 1
        else:
            for f in fields:
                projection[f"data.{f}"] = 1
                if timestamps:
                    projection[f"timestamps.{f}"] = 1
        with self._errors():
            arrays = self._array_fields(descs)
            yield from self._read_events(query, projection, fields, timestamps, uids, arrays)

    def _array_fields(self, descriptor_uids: list[str]) -> dict[str, frozenset]:
        """Per descriptor, its fields declared ``dtype: array`` with a shape (and stored
        inline): BSON holds them as nested lists, read back as numpy arrays."""
        cache = self._array_fields_cache
        missing = [u for u in descriptor_uids if u not in cache]
        if missing:
            if len(cache) > 100_000:
                cache.clear()
            coll = self._mds().event_descriptor
            for chunk in chunked(missing, IN_CHUNK):
                for doc in coll.find({"uid": {"$in": list(chunk)}}, {"uid": 1, "data_keys": 1}):
                    keys = doc.get("data_keys") or {}
                    cache[doc["uid"]] = frozenset(
                        k for k, v in keys.items() if isinstance(v, Mapping)
                        and v.get("dtype") == "array" and v.get("shape")
                        and not v.get("external"))
        return {u: cache.get(u, frozenset()) for u in descriptor_uids}

    def _read_events(self, query, projection, fields, timestamps, uids,
                     arrays: dict[str, frozenset]) -> Iterator[EventPageColumns]:
        import bson

        coll = self._mds().event
        sample = coll.find_one(query, projection)
        if sample is None:
            return
        size = max(1, len(bson.encode(sample)))
        batch = max(1, min(MAX_PAGE_EVENTS, TARGET_BATCH_BYTES // size))
        cursor = coll.find(query, projection, sort=_EVENT_SORT, batch_size=batch,
                           allow_disk_use=True)
        rows: list[Mapping] = []
        for doc in cursor:
            if rows and (len(rows) >= batch or rows[-1]["descriptor"] != doc["descriptor"]):
                yield self._page(rows, fields, timestamps, uids, arrays)
                rows = []
            rows.append(doc)
        if rows:
            yield self._page(rows, fields, timestamps, uids, arrays)

    @staticmethod
    def _page(rows: list[Mapping], fields, timestamps: bool, uids: bool,
              arrays: dict[str, frozenset]) -> EventPageColumns:
        # Servers differ: MongoDB nests a dotted projection ({"data": {"x": 1}}),
        # nx-27017 returns it flat ({"data.x": 1}).
        flat = any("." in k for k in rows[0])
        datas = [sub_document(r, "data", flat) for r in rows]
        tss = [sub_document(r, "timestamps", flat) for r in rows] if timestamps else []
        if fields is None:
            names: list[str] = list(dict.fromkeys(k for d in datas for k in d))
        else:
            names = fields
        array_names = arrays.get(rows[0]["descriptor"], ())
        data: dict[str, Any] = {}
        ts: dict[str, Any] = {}
        for name in names:
            column = [d.get(name, _MISSING) for d in datas]
            if all(v is _MISSING for v in column):
                continue  # not a field of this descriptor
            column = [None if v is _MISSING else v for v in column]
            data[name] = (to_array_column if name in array_names else to_column)(column)
            if timestamps:
                ts[name] = to_column([t.get(name) for t in tss])
        return EventPageColumns(
            descriptor=rows[0]["descriptor"],
            seq_num=np.asarray([r["seq_num"] for r in rows], dtype="<i8"),
            time=np.asarray([r["time"] for r in rows], dtype="<f8"),
            data=data,
            timestamps=ts,
            uid=[r["uid"] for r in rows] if uids else None,
        )
