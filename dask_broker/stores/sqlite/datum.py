"""Datum pages in the embedded catalog (see :mod:`dask_broker.stores.datum_pages`): the
SQLite tables, queries and the migration of older catalogs' datum rows.

A row of ``datum_page`` holds one page; ``(resource, first)`` is indexed for the
counted ids; ``datum_key`` (hash, page id) holds the hashes of the other ids.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ...codec import dumps, dumps_strings
from .. import datum_pages
from ..datum_pages import Loads, key_hashes
from ..base import chunked

__all__ = ["DDL", "insert_page", "find", "of_resource", "migrate_rows"]

#: Bound parameters per statement (as ``connection.SQL_VARS``; the schema, which
#: imports this module, is imported by ``connection``).
_VARS = 900


def _marks(n: int) -> str:
    return ",".join("?" * n)

DDL = """
CREATE TABLE IF NOT EXISTS datum_page (
    id INTEGER PRIMARY KEY, resource TEXT NOT NULL, n INTEGER NOT NULL,
    first INTEGER, last INTEGER, dense INTEGER NOT NULL, datum_id TEXT NOT NULL,
    datum_kwargs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS datum_page_resource ON datum_page (resource, first);
CREATE TABLE IF NOT EXISTS datum_key (
    hash INTEGER NOT NULL, page_id INTEGER NOT NULL, PRIMARY KEY (hash, page_id)) WITHOUT ROWID;
"""

class _Queries:
    """:class:`~dask_broker.stores.datum_pages.PageQueries` on a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def in_range(self, resource: str, lo: int, hi: int) -> Iterable[tuple[int, int, int, bool]]:
        return self.conn.execute(
            "SELECT id, first, last, dense FROM datum_page WHERE resource = ? AND first <= ? "
            "AND last >= ?", (resource, hi, lo)).fetchall()

    def with_keys(self, ids: Sequence[str]) -> Iterable[int]:
        if self.conn.execute("SELECT 1 FROM datum_key LIMIT 1").fetchone() is None:
            return []
        pages = set()
        for chunk in chunked(key_hashes(ids), _VARS):
            pages.update(r[0] for r in self.conn.execute(
                f"SELECT page_id FROM datum_key WHERE hash IN ({_marks(len(chunk))})", chunk))
        return pages

    def ids_of(self, page_ids: list[int]) -> Iterator[tuple[int, str, Any]]:
        for chunk in chunked(page_ids, _VARS):
            yield from self.conn.execute(
                "SELECT id, resource, datum_id FROM datum_page "
                f"WHERE id IN ({_marks(len(chunk))})", chunk)

    def kwargs_of(self, page_id: int) -> Any:
        return self.conn.execute("SELECT datum_kwargs FROM datum_page WHERE id = ?",
                                 (page_id,)).fetchone()[0]


def insert_page(conn: sqlite3.Connection, page: Mapping) -> None:
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
    shape = datum_pages.check_new(_Queries(conn), page, json.loads)
    cur = conn.execute(
        "INSERT INTO datum_page (resource, n, first, last, dense, datum_id, datum_kwargs) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (page["resource"], len(ids), shape.first, shape.last, shape.dense, dumps_strings(ids),
         dumps(dict(page["datum_kwargs"]))))
    if shape.first is None:
        conn.executemany("INSERT OR IGNORE INTO datum_key (hash, page_id) VALUES (?, ?)",
                         zip(key_hashes(ids), itertools.repeat(cur.lastrowid)))


def find(conn: sqlite3.Connection, ids: Sequence[str], loads: Loads) -> dict[str, dict]:
    """The stored datum of ``ids`` (those not stored are absent)."""
    return datum_pages.find(_Queries(conn), ids, loads)


def of_resource(conn: sqlite3.Connection, resource: str, loads: Loads) -> Iterator[dict]:
    """Every datum of a resource, in the order they were stored."""
    cur = conn.execute("SELECT n, datum_id, datum_kwargs FROM datum_page WHERE resource = ? "
                       "ORDER BY id", (resource,))
    while rows := cur.fetchmany(16):
        for n, id_text, kwargs_text in rows:
            yield from datum_pages.datum_of_page(resource, n, loads(id_text), loads(kwargs_text))


def migrate_rows(conn: sqlite3.Connection) -> None:
    """Migration to version 5: the ``datum`` table's rows (one per datum) become pages
    (:func:`~dask_broker.stores.datum_pages.pages_of_rows`), then the table is dropped
    (in the migration's transaction)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'datum'"
                        ).fetchone():
        return

    def rows() -> Iterator[tuple[str, str, dict]]:
        cur = conn.execute("SELECT datum_id, resource, datum_kwargs FROM datum ORDER BY id")
        while batch := cur.fetchmany(4096):
            for datum_id, resource, text in batch:
                yield datum_id, resource, json.loads(text)

    for page in datum_pages.pages_of_rows(rows()):
        insert_page(conn, page)
    conn.execute("DROP TABLE datum")
