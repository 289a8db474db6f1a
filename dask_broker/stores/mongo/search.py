"""Runs: start documents, searched by the server's indexes and decided in Python."""

from __future__ import annotations

from typing import Iterator, Mapping

from ...query import Query, parse_query
from ...text_search import TextSearch, parse_text
from .values import (
    clean_doc,
    to_bson,
)
from .indexes import _is_wildcard_text_index

__all__ = ["Search"]


class Search:
    """The run searches of a :class:`~dask_broker.stores.mongo.MongoStore` (a mixin)."""

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
