"""Reads: documents of runs, and events as columnar pages."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..base import EventPageColumns, chunked
from .values import (
    clean_doc,
    restore,
    sub_document,
    to_array_column,
    to_column,
)
from .connection import IN_CHUNK

__all__ = ["Reads", "TARGET_BATCH_BYTES", "MAX_PAGE_EVENTS"]

#: Aim for server replies of about this size when reading events.
TARGET_BATCH_BYTES = 4 * 2**20
#: At most this many events in one page (and one server batch).
MAX_PAGE_EVENTS = 50_000
_EVENT_SORT = [("descriptor", 1), ("seq_num", 1), ("time", 1)]
#: Types of datum_kwargs values read as they are stored (``restore`` changes no such value).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_MISSING = object()


def _in_stored_order(docs: Iterable[Mapping]) -> Iterator[Mapping]:
    """Events as the server sorts them (descriptor, seq_num, time), with the repeats of
    a (descriptor, seq_num) put in the order they were stored (``_id``: ObjectIds
    increase as they are made), so that the last stored comes last, as in every store.
    Only a run of repeats is held back (the index keeps the server's sort)."""
    group: list[Mapping] = []
    for doc in docs:
        if group and (doc["seq_num"] != group[-1]["seq_num"]
                      or doc["descriptor"] != group[-1]["descriptor"]):
            yield from (group if len(group) == 1 else sorted(group, key=lambda r: r["_id"]))
            group = []
        group.append(doc)
    yield from (group if len(group) == 1 else sorted(group, key=lambda r: r["_id"]))


class Reads:
    """The reads of a :class:`~dask_broker.stores.mongo.MongoStore` (a mixin)."""

    def get_start(self, uid: str) -> dict | None:
        with self._errors():
            return clean_doc(self._mds().run_start.find_one({"uid": uid}, {"_id": 0}))
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
        kwargs = doc.get("datum_kwargs", {})
        if not (isinstance(kwargs, dict) and all(type(v) in _PLAIN for v in kwargs.values())):
            kwargs = restore(kwargs)  # nested values, legacy ObjectIds, big ints
        return {"datum_id": doc["datum_id"],
                "resource": res if isinstance(res, str) else restore(res),
                "datum_kwargs": kwargs}

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
        # _id: the order events were stored in, which decides between repeats of a seq_num
        projection: dict[str, int] = {"_id": 1, "descriptor": 1, "seq_num": 1, "time": 1}
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
        for doc in _in_stored_order(cursor):
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
