"""Writes: one Mongo document per bluesky document, all-or-nothing per call."""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from ...errors import (
    DaskBrokerError,
    DuplicateUidError,
    RunAlreadyStoppedError,
    StoreURIError,
    UnknownReferenceError,
)
from ..base import check_resource_changes, chunked, first_repeat
from .uri import mask_uri
from .values import (
    clean_doc,
    restore,
    to_bson,
    to_bson_list,
)
from .connection import IN_CHUNK

__all__ = ["Writes"]

logger = logging.getLogger(__name__)

#: Documents per insert_many call.
INSERT_CHUNK = 10_000
_DUPLICATE_KEY = 11000


class Writes:
    """The writes of a :class:`~dask_broker.stores.mongo.MongoStore` (a mixin)."""

    def _insert_one(self, doc_type: str, coll_name: str, doc: Mapping, *,
                    assets: bool = False) -> None:
        from pymongo.errors import DuplicateKeyError

        record = to_bson(dict(doc))
        uid = record["uid"]
        with self._errors(assets):
            self._check_writable()
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
            self._check_writable()
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

        self._check_writable()
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

    # -------------------------------------------------------- resource updates
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
            self._check_writable()
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
