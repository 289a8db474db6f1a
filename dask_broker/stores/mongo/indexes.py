"""The collections' indexes: suitcase-mongo's, and dask_broker's own."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .uri import indexed

from .connection import AUTH_CODES as _AUTH_CODES

__all__ = ["Indexes"]

logger = logging.getLogger(__name__)


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



class Indexes:
    """Index creation of a :class:`~dask_broker.stores.mongo.MongoStore` (a mixin)."""

    def create_indexes(self, *, extra: bool = True) -> None:
        """Create suitcase-mongo's indexes (and, with ``extra``, dask_broker's read indexes).

        dask_broker's extra indexes are ``event (descriptor, seq_num, time)``, which
        makes event reads stream in order from the index, and ``resource run_start``.
        On its first write to a database a store creates the suitcase indexes, and the
        extra ones only while the collections are empty (building them on a large
        existing database can take long: run this method when convenient).
        """
        self._check_writable()
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
