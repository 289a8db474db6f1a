"""Datum pages in a PostgreSQL catalog (see :mod:`dask_broker.stores.datum_pages`): the
tables, queries and the migration of version 1's datum rows.

As in the embedded store, a row of ``datum_page`` holds one page, ``(resource,
first)`` is indexed for counted ids and ``datum_key`` (hash, page id) holds the
hashes of other ids.  Writers of datum pages take a transaction-level advisory
lock on the catalog, so that two processes never both find an id free.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ...codec import dumps, dumps_strings
from .. import datum_pages
from ..datum_pages import key_hashes

__all__ = ["DDL", "insert_page", "find", "migrate_rows"]

DDL = """
CREATE TABLE datum_page (
    id bigserial PRIMARY KEY, resource text NOT NULL, n integer NOT NULL, first bigint,
    last bigint, dense boolean NOT NULL, datum_id text NOT NULL, datum_kwargs text NOT NULL);
CREATE INDEX datum_page_resource ON datum_page (resource, first);
CREATE TABLE datum_key (
    hash bigint NOT NULL, page_id bigint NOT NULL, PRIMARY KEY (hash, page_id));
"""

#: Held by the transaction that writes datum pages (with the schema's name).
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('dask_broker datum ' || current_schema()))"


class _Queries:
    """:class:`~dask_broker.stores.datum_pages.PageQueries` on a psycopg connection."""

    def __init__(self, conn):
        self.conn = conn

    def in_range(self, resource: str, lo: int, hi: int) -> Iterable[tuple[int, int, int, bool]]:
        return self.conn.execute(
            "SELECT id, first, last, dense FROM datum_page WHERE resource = %s AND first <= %s "
            "AND last >= %s", (resource, hi, lo)).fetchall()

    def with_keys(self, ids: Sequence[str]) -> Iterable[int]:
        if not self.conn.execute("SELECT EXISTS (SELECT 1 FROM datum_key)").fetchone()[0]:
            return []
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT page_id FROM datum_key WHERE hash = ANY(%s)", (key_hashes(ids),))]

    def ids_of(self, page_ids: list[int]) -> Iterable[tuple[int, str, Any]]:
        return self.conn.execute(
            "SELECT id, resource, datum_id FROM datum_page WHERE id = ANY(%s)", (page_ids,))

    def kwargs_of(self, page_id: int) -> Any:
        return self.conn.execute("SELECT datum_kwargs FROM datum_page WHERE id = %s",
                                 (page_id,)).fetchone()[0]


def insert_page(conn, page: Mapping) -> None:
    """Write a datum_page as one row, in the caller's write transaction.

    Raises
    ------
    DuplicateUidError
        A datum id is repeated within the page or already stored (nothing written).
    """
    ids = list(page["datum_id"])
    if not ids:
        return
    page = {**page, "datum_id": ids}
    conn.execute(_LOCK_SQL)
    shape = datum_pages.check_new(_Queries(conn), page, json.loads)
    (page_id,) = conn.execute(
        "INSERT INTO datum_page (resource, n, first, last, dense, datum_id, datum_kwargs) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (page["resource"], len(ids), shape.first, shape.last, shape.dense, dumps_strings(ids),
         dumps(dict(page["datum_kwargs"])))).fetchone()
    if shape.first is None:
        conn.execute("INSERT INTO datum_key (hash, page_id) SELECT DISTINCT h, %s "
                     "FROM unnest(%s::bigint[]) AS t(h)", (page_id, key_hashes(ids)))


def find(conn, ids: Sequence[str]) -> dict[str, dict]:
    """The stored datum of ``ids`` (those not stored are absent)."""
    return datum_pages.find(_Queries(conn), ids, json.loads)


def datum_of_rows(rows: Iterable[tuple[str, Any, Any]], resource: str) -> Iterator[dict]:
    """The datum of ``(n, datum_id text, datum_kwargs text)`` rows of one resource's pages."""
    for n, id_text, kwargs_text in rows:
        yield from datum_pages.datum_of_page(resource, n, json.loads(id_text),
                                             json.loads(kwargs_text))


def migrate_rows(conn) -> None:
    """Migration to version 2: datum pages; version 1's ``datum`` rows become pages
    (:func:`~dask_broker.stores.datum_pages.pages_of_rows`) and the table is dropped."""
    for statement in (s.strip() for s in DDL.split(";") if s.strip()):
        conn.execute(statement)
    with conn.cursor(name="dask_broker_migrate_datum") as cur:
        cur.itersize = 4096
        cur.execute("SELECT datum_id, resource, datum_kwargs FROM datum ORDER BY id")
        for page in datum_pages.pages_of_rows((d, r, json.loads(k)) for d, r, k in cur):
            insert_page(conn, page)
    conn.execute("DROP TABLE datum")

