"""Finding runs in a SQLite catalog: start documents by uid prefix, query and text.

The query's ``scan_id``, ``uid`` and ``time`` conditions narrow the rows with the
indexed columns, a text search with the full-text table; :meth:`Query.match
<dask_broker.query.Query.match>` and :meth:`TextSearch.match
<dask_broker.text_search.TextSearch.match>` decide.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ...query import parse_query
from ...text_search import parse_text
from .schema import TEXT_TABLE

__all__ = ["SearchMethods"]

_SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_INT64 = (-2**63, 2**63 - 1)


def _sql_number(value: Any) -> bool:
    """A number SQLite stores as is: a float, or an int (not a bool) within int64."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    return isinstance(value, float)


class SearchMethods:
    """Runs by uid, uid prefix, query and text, newest first."""

    def get_start(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM run_start WHERE uid = ?", (uid,))

    def start_uids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        rows = self._conn().execute(
            "SELECT uid FROM run_start WHERE uid >= ? AND uid < ? ORDER BY uid LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit)).fetchall()
        return [r[0] for r in rows]

    def iter_starts(self) -> Iterator[dict]:
        return self._starts("", ())

    def _starts(self, where: str, params: tuple) -> Iterator[dict]:
        with self._snapshot() as conn:
            cur = conn.execute(
                f"SELECT doc FROM run_start {where} ORDER BY time DESC, id DESC", params)
            while rows := cur.fetchmany(256):
                for (doc,) in rows:
                    yield self._loads(doc)

    def search(self, query: Mapping | None = None, *, text: str | None = None
               ) -> Iterator[dict]:
        """Like :meth:`Store.search`, with indexed SQL for the query's ``scan_id``, ``uid``
        and ``time`` conditions and the full-text table for ``text``;
        :meth:`Query.match <dask_broker.query.Query.match>` and
        :meth:`TextSearch.match <dask_broker.text_search.TextSearch.match>` decide."""
        query = parse_query(query)  # checked here, before the first row is read
        search = parse_text(text)
        clauses, params = [], []
        for key, op, value in query.conditions():
            sql = _SQL_OPS.get(op)
            if key in ("scan_id", "uid", "time") and sql and (
                    isinstance(value, str) if key == "uid" else _sql_number(value)):
                # rows whose scan_id is not a plain number (NULL) go to the Python match
                clauses.append(f"({key} {sql} ? OR {key} IS NULL)" if key == "scan_id"
                               else f"{key} {sql} ?")
                params.append(value)
        fts = search.fts_query() if search is not None and self._text_table else None
        if fts is not None:
            clauses.append(f"id IN (SELECT rowid FROM {TEXT_TABLE} WHERE {TEXT_TABLE} MATCH ?)")
            params.append(fts)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return (doc for doc in self._starts(where, tuple(params))
                if query.match(doc) and (search is None or search.match(doc)))

    def count_starts(self) -> int:
        (n,) = self._conn().execute("SELECT COUNT(*) FROM run_start").fetchone()
        return n
