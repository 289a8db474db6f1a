"""The layout of the catalog file: its tables, schema versions and migrations.

Schema versions
---------------
``meta.schema_version`` holds the layout's version.  Each version so far adds
tables and indexes to the one before (version 1 catalogs may lack
``resource_update``, ``stream_resource`` and ``stream_datum``, which version 2
has; version 3 adds the full-text table ``run_start_text``; version 4 keeps event
uids unique through ``event_uid_hash`` instead of ``event_uid``; version 5 keeps
datum as pages, ``datum_page``, instead of a ``datum`` row each), so the current
DDL, all ``IF NOT EXISTS``, migrates an older catalog in place:
:func:`create_or_migrate` runs it, then the data migrations of the versions the
catalog lacks (version 3: index the start documents already stored; version 4:
hash the event uids already stored; version 5: the datum rows become pages), and
records the version, in one ``BEGIN IMMEDIATE`` transaction.  A read-only store
cannot migrate: it reads an older catalog as it is, with the tables it lacks
made empty ``TEMP`` tables of each connection (:func:`shadow_missing_tables`;
the store searches text without the full-text table, and reads the datum rows
of a catalog before version 5).  A catalog of a newer
version is refused (:class:`~dask_broker.errors.CatalogVersionError`).

"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from ...errors import CatalogVersionError, StoreURIError
from ...text_search import index_text
from ..uid_hashes import uid_hashes
from . import datum

if TYPE_CHECKING:
    from .file import CatalogConnection

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA",
    "MIGRATIONS",
    "TEXT_TABLE",
    "schema_version",
    "create_or_migrate",
    "check_version",
    "shadow_missing_tables",
]

#: The layout of the catalog file (``meta.schema_version``).  1: every layout before
#: version 2 (some lack resource_update, stream_resource, stream_datum); 2: those
#: tables; 3: the full-text table run_start_text; 4: event uids unique through
#: ``event_uid_hash`` (see :mod:`.uid_hashes`), not the ``event_uid`` B-tree.  An
#: older catalog is migrated in place (see :func:`create_or_migrate`); version 3's migration
#: indexes the stored start documents, version 4's hashes the stored event uids;
#: 5: datum stored as pages (``datum_page``, see :mod:`.datum`), whose migration turns
#: the ``datum`` table's rows into pages.
SCHEMA_VERSION = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS run_start (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, time REAL, scan_id INTEGER,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS run_start_time ON run_start (time DESC, id DESC);
CREATE INDEX IF NOT EXISTS run_start_scan_id ON run_start (scan_id);
CREATE TABLE IF NOT EXISTS run_stop (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS descriptor (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT NOT NULL, name TEXT,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS descriptor_run ON descriptor (run_start, id);
CREATE TABLE IF NOT EXISTS resource (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS resource_run ON resource (run_start, id);
CREATE TABLE IF NOT EXISTS event_page (
    id INTEGER PRIMARY KEY, descriptor TEXT NOT NULL, n INTEGER NOT NULL,
    seq_min INTEGER NOT NULL, seq_max INTEGER NOT NULL, sealed INTEGER NOT NULL,
    seq_num BLOB NOT NULL, time BLOB NOT NULL, uid TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS event_page_range ON event_page (descriptor, seq_min);
CREATE INDEX IF NOT EXISTS event_page_open ON event_page (descriptor, sealed, n);
CREATE TABLE IF NOT EXISTS page_column (
    page_id INTEGER NOT NULL, field TEXT NOT NULL, codec TEXT NOT NULL, data BLOB NOT NULL,
    ts_codec TEXT NOT NULL, ts BLOB NOT NULL, PRIMARY KEY (page_id, field));
CREATE TABLE IF NOT EXISTS event_uid_hash (
    id INTEGER PRIMARY KEY AUTOINCREMENT, page_id INTEGER NOT NULL, hashes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS resource_update (
    id INTEGER PRIMARY KEY, resource TEXT NOT NULL, time REAL NOT NULL, cmd TEXT NOT NULL,
    cmd_kwargs TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS resource_update_resource ON resource_update (resource, id);
CREATE TABLE IF NOT EXISTS stream_resource (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT, data_key TEXT,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_resource_run ON stream_resource (run_start, id);
CREATE TABLE IF NOT EXISTS stream_datum (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, stream_resource TEXT NOT NULL,
    descriptor TEXT NOT NULL, seq_start INTEGER NOT NULL, seq_stop INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_datum_descriptor ON stream_datum (descriptor, id);
CREATE INDEX IF NOT EXISTS stream_datum_resource ON stream_datum (stream_resource, id);
CREATE VIRTUAL TABLE IF NOT EXISTS run_start_text USING fts5(
    words, content='', tokenize="ascii tokenchars '''_'");
""" + datum.DDL

#: The full-text table: rowid = run_start.id, ``words`` = text_search.index_text(doc)
#: (contentless: it answers MATCH with rowids).  Its ``ascii`` tokenizer keeps ``_``
#: and ``'`` in words, as text_search's rule does, so each word is one FTS token.
TEXT_TABLE = "run_start_text"


def _index_stored_starts(conn: sqlite3.Connection) -> None:
    """Migration to version 3: put the words of every stored start document in the
    full-text table (in the migration's transaction)."""
    cur = conn.execute("SELECT id, doc FROM run_start ORDER BY id")
    while rows := cur.fetchmany(1000):
        conn.executemany(f"INSERT INTO {TEXT_TABLE} (rowid, words) VALUES (?, ?)",
                         [(rid, index_text(json.loads(doc))) for rid, doc in rows])


def _hash_stored_event_uids(conn: sqlite3.Connection) -> None:
    """Migration to version 4: event uids unique through ``event_uid_hash`` (one row of
    hashes per stored page) instead of the ``event_uid`` table (in the migration's
    transaction)."""
    cur = conn.execute("SELECT id, uid FROM event_page ORDER BY id")
    while rows := cur.fetchmany(256):
        conn.executemany(
            "INSERT INTO event_uid_hash (page_id, hashes) VALUES (?, ?)",
            [(pid, uid_hashes(json.loads(text)).tobytes()) for pid, text in rows])
    conn.execute("DROP TABLE IF EXISTS event_uid")
    # the open pages' sizes in their index: summed when a connection starts writing
    conn.execute("DROP INDEX IF EXISTS event_page_open")
    conn.execute("CREATE INDEX event_page_open ON event_page (descriptor, sealed, n)")


MIGRATIONS = {3: _index_stored_starts, 4: _hash_stored_event_uids, 5: datum.migrate_rows}


def _statements(ddl: str) -> Iterator[str]:
    return (s.strip() for s in ddl.split(";") if s.strip())


def _tables(conn: sqlite3.Connection, schema: str = "main") -> set[str]:
    return {r[0] for r in conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}


def schema_version(conn: CatalogConnection) -> int | None:
    """The catalog's schema version; None for an empty database (a catalog to create).

    A ``meta`` table without a version is version 1 (the first layout).
    """
    tables = _tables(conn)
    if "meta" not in tables:
        if tables:
            raise StoreURIError(
                f"{conn.path} is a SQLite database but not a dask_broker catalog (it has no "
                f"'meta' table; its tables: {', '.join(sorted(tables)[:8])})")
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 1
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise CatalogVersionError(
            f"the catalog {conn.path} has an unreadable schema version {row[0]!r}") from None


def check_version(path: Path, found: int, current: int) -> None:
    """Refuse a catalog written by a newer dask_broker, naming both versions."""
    if found > current:
        from ... import __version__

        raise CatalogVersionError(
            f"the catalog {path} has schema version {found}, written by a newer dask_broker; "
            f"this dask_broker ({__version__}) reads schema versions up to {current}: "
            "upgrade dask_broker to open it")


def create_or_migrate(conn: CatalogConnection, ddl: str, current: int,
                      migrations: Mapping[int, Callable[[CatalogConnection], None]] | None = None,
                      ) -> int | None:
    """Create the schema in an empty database, or migrate an older catalog in place.

    One ``BEGIN IMMEDIATE`` transaction runs the DDL, then, for an older catalog,
    ``migrations[v](conn)`` for each version ``v`` it lacks (in order: what a
    version changes in the data already stored), and records ``current`` (all or
    nothing; the version is read again under the write lock, so two processes
    opening an old catalog migrate it once).  Returns the version found (None for
    a new catalog).
    """
    found = schema_version(conn)
    if found is not None:
        check_version(conn.path, found, current)
        if found == current:
            return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found is None or found < current:
            for statement in _statements(ddl):
                conn.execute(statement)
            if found is not None and migrations:
                for version in sorted(v for v in migrations if found < v <= current):
                    migrations[version](conn)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                         (str(current),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")


def shadow_missing_tables(conn: sqlite3.Connection, ddl: str) -> None:
    """Make the tables of ``ddl`` that the catalog lacks empty TEMP tables of ``conn``.

    How a read-only store reads a catalog of an older (additive) version.
    """
    present = _tables(conn) | _tables(conn, "temp")
    for statement in _statements(ddl):
        match = _CREATE_TABLE.match(statement)
        if match and match[1] not in present:
            conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
