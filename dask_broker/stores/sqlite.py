"""The embedded default store: one SQLite file per catalog, no server.

Events are stored columnar, in pages: a row of ``event_page`` holds, for one
descriptor, a run of events' seq_num, time and uid arrays; a row of
``page_column`` holds one field of that page (data and timestamps) as an
encoded buffer (see :mod:`dask_broker.codec`).  Reading a chunk of events is
one indexed range query over pages plus one query for the wanted fields'
columns, whatever the number of events.

Single events (what a RunEngine emits) are each committed as a one-event
"open" page; when a descriptor has accumulated ``SEAL_EVENTS`` events in open
pages they are merged, in the same transaction as the insert that fills them,
into one sealed page.  Incoming pages larger than ``MAX_PAGE_EVENTS`` are split.

The database runs in WAL mode, so worker processes can read while one process
writes.  Readers -- Dask workers, ``ls``, ``export`` -- open it read-only
(``read_only=True``, ``?mode=ro``); so does a store whose file or folder this
process may not write.  How a read-only open works in a read-only folder, the
schema version and its migration, and how a damaged file is reported: see
:mod:`dask_broker.stores.sqlite_file`.

Every write is one ``BEGIN IMMEDIATE`` transaction: a call that raises
leaves nothing behind, a call that has returned is committed (with the default
``synchronous=FULL`` it survives a crash of the process and of the machine; the
URI may ask for ``?synchronous=normal``, which survives a crash of the process).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qs

import numpy as np

from ..codec import (column_to_list, decode_column, dumps, dumps_strings,
                     encode_column)
from ..errors import (
    CatalogCorruptError,
    DuplicateUidError,
    ReadOnlyCatalogError,
    RunAlreadyStoppedError,
    StoreURIError,
    UnknownReferenceError,
)
from ..query import parse_query
from ..redact import mask_uri
from ..text_search import index_text, parse_text
from . import sqlite_datum, sqlite_file
from .uid_hashes import HashSet, uid_hashes
from .base import (
    EventPageColumns,
    Store,
    check_resource_changes,
    chunked,
    consecutive_runs,
    first_repeat,
)

__all__ = ["SQLiteStore", "parse_sqlite_uri"]

#: The layout of the catalog file (``meta.schema_version``).  1: every layout before
#: version 2 (some lack resource_update, stream_resource, stream_datum); 2: those
#: tables; 3: the full-text table run_start_text; 4: event uids unique through
#: ``event_uid_hash`` (see :mod:`.uid_hashes`), not the ``event_uid`` B-tree.  An
#: older catalog is migrated in place (see sqlite_file); version 3's migration
#: indexes the stored start documents, version 4's hashes the stored event uids;
#: 5: datum stored as pages (``datum_page``, see :mod:`.sqlite_datum`), whose
#: migration turns the ``datum`` table's rows into pages.
SCHEMA_VERSION = 5
SEAL_EVENTS = 1024
MAX_PAGE_EVENTS = 8192
_SQL_VARS = 900  # stay below SQLite's bound-parameter limit

_SCHEMA = """
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
""" + sqlite_datum.DDL

#: The full-text table: rowid = run_start.id, ``words`` = text_search.index_text(doc)
#: (contentless: it answers MATCH with rowids).  Its ``ascii`` tokenizer keeps ``_``
#: and ``'`` in words, as text_search's rule does, so each word is one FTS token.
_TEXT_TABLE = "run_start_text"


def _index_stored_starts(conn: sqlite3.Connection) -> None:
    """Migration to version 3: put the words of every stored start document in the
    full-text table (in the migration's transaction)."""
    cur = conn.execute("SELECT id, doc FROM run_start ORDER BY id")
    while rows := cur.fetchmany(1000):
        conn.executemany(f"INSERT INTO {_TEXT_TABLE} (rowid, words) VALUES (?, ?)",
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


_MIGRATIONS = {3: _index_stored_starts, 4: _hash_stored_event_uids,
               5: sqlite_datum.migrate_rows}


def parse_sqlite_uri(uri: str) -> tuple[Path, dict[str, str]]:
    """Split a SQLAlchemy-style SQLite URI into an absolute path and options.

    ``sqlite:///relative/catalog.db`` is relative to the current directory,
    ``sqlite:////absolute/catalog.db`` is absolute.

    Examples
    --------
    >>> parse_sqlite_uri("sqlite:////data/cat.db?synchronous=normal")
    (PosixPath('/data/cat.db'), {'synchronous': 'normal'})
    >>> parse_sqlite_uri("sqlite:////data/cat.db?mode=ro")
    (PosixPath('/data/cat.db'), {'mode': 'ro', 'synchronous': 'full'})
    """
    prefix = "sqlite:///"
    if not isinstance(uri, str) or not uri.startswith(prefix):
        raise StoreURIError(
            f"{mask_uri(uri)!r} is not a SQLite catalog URI; write "
            "'sqlite:///relative/catalog.db' or 'sqlite:////absolute/catalog.db'"
        )
    rest, _, query = uri[len(prefix):].partition("?")
    if not rest or rest == ":memory:":
        raise StoreURIError(
            f"{mask_uri(uri)!r} names no file; the embedded store is a file on disk so that "
            "worker processes can open it (use Broker.temp() for a throwaway catalog)"
        )
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"synchronous", "mode"}
    if unknown:
        raise StoreURIError(f"unknown option(s) {sorted(unknown)} in {mask_uri(uri)!r}; known: "
                            "synchronous, mode")
    if options.get("mode", "ro") != "ro":
        raise StoreURIError(f"mode={options['mode']!r} in {mask_uri(uri)!r}; the only mode is "
                            "'ro' (read-only); leave it out to open the catalog for writing")
    sync = options.get("synchronous", "full").lower()
    if sync not in ("full", "normal", "extra"):
        raise StoreURIError(
            f"synchronous={sync!r} in {mask_uri(uri)!r}; use full, normal or extra")
    options["synchronous"] = sync
    return Path(os.path.abspath(rest)), options


def _indexed_scan_id(scan_id: Any) -> int | float | None:
    """The scan_id for the indexed column: a plain number SQLite holds, else NULL (a search
    matches those rows in Python)."""
    if isinstance(scan_id, bool) or not isinstance(scan_id, (int, float)):
        return None
    if isinstance(scan_id, int) and not -(2**63) <= scan_id < 2**63:
        return None
    return scan_id


def _chunks(seq: Sequence) -> Iterator[Sequence]:
    return chunked(seq, _SQL_VARS)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SQLiteStore(Store):
    """The embedded store: a SQLite database file in WAL mode.

    Parameters
    ----------
    path
        The database file; created (with its folder) if missing.
    synchronous
        SQLite's ``synchronous`` setting: ``"full"`` (default), ``"normal"``, ``"extra"``.
    create
        Create the catalog if the file is missing (else StoreURIError).
    read_only
        Open read-only (``?mode=ro`` in the URI): never create, migrate or write
        the file; a write raises :class:`~dask_broker.errors.ReadOnlyCatalogError`.
        A store is read-only too when this process may not write the file or its folder.

    Examples
    --------
    >>> store = SQLiteStore.from_uri("sqlite:////tmp/example-catalog.db")  # doctest: +SKIP
    >>> reader = SQLiteStore.from_uri("sqlite:////tmp/example-catalog.db?mode=ro")  # doctest: +SKIP
    """

    schemes = ("sqlite",)

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "full",
                 create: bool = True, read_only: bool = False):
        self._path = Path(path).absolute()
        if (read_only or not create) and not self._path.exists():
            raise StoreURIError(
                f"there is no catalog at {self._path} (process {os.getpid()}); a process that "
                "opens a catalog by its URI -- a Dask worker, an unpickled store -- must see "
                "the same file system as the one that made it")
        self._synchronous = synchronous
        self._read_only_asked = bool(read_only)
        #: Why writes are refused (None: the store writes).
        self._read_only_reason: str | None = (
            "it was opened read-only (read_only=True or ?mode=ro in its URI)" if read_only else
            "this process may not write the file or its folder"
            if self._path.exists() and not sqlite_file.writable(self._path) else None)
        self._shadow_tables = False
        self._text_table = True  # a read-only open of a catalog before version 3 lacks it
        self._datum_rows = False  # ... before version 5 has a row per datum, no datum pages
        self._local = threading.local()
        self._open = _Connections()
        self._pid = os.getpid()
        self._uids = _StoredUids()
        if self._read_only_reason is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
            try:
                if self._read_only_reason is None:
                    conn.execute("PRAGMA journal_mode=WAL")
                    sqlite_file.create_or_migrate(conn, _SCHEMA, SCHEMA_VERSION, _MIGRATIONS)
                else:
                    found = sqlite_file.schema_version(conn)
                    if found is None:
                        raise StoreURIError(f"{self._path} is an empty database, not a "
                                            "dask_broker catalog (a read-only open creates none)")
                    sqlite_file.check_version(self._path, found, SCHEMA_VERSION)
                    self._shadow_tables = found < SCHEMA_VERSION
                    self._text_table = found >= 3
                    self._datum_rows = found < 5
            finally:
                conn.close()
        except StoreURIError:
            raise
        except sqlite3.DatabaseError as err:
            raise StoreURIError(f"{self._path} is not a dask_broker SQLite catalog: {err}") from err

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "SQLiteStore":
        path, options = parse_sqlite_uri(uri)
        read_only = options.pop("mode", None) == "ro"
        options.update(kwargs)
        options["read_only"] = read_only or bool(options.get("read_only"))
        return cls(path, **options)

    @classmethod
    def open_existing(cls, uri: str, **kwargs: Any) -> "SQLiteStore":
        """Open the catalog at ``uri``, which must exist (never create an empty one)."""
        return cls.from_uri(uri, create=False, **kwargs)

    @classmethod
    def temp(cls) -> "SQLiteStore":
        """A store in a new temporary folder, closed and removed when garbage collected."""
        folder = tempfile.mkdtemp(prefix="dask-broker-")
        store = cls(os.path.join(folder, "catalog.db"))
        weakref.finalize(store, _remove_catalog, store._open, folder)
        return store

    @property
    def uri(self) -> str:
        query = [f"synchronous={self._synchronous}"] if self._synchronous != "full" else []
        if self._read_only_asked:
            query.append("mode=ro")
        return f"sqlite:///{self._path}" + ("?" + "&".join(query) if query else "")

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Whether writes are refused (asked for, or the file or folder is not writable)."""
        return self._read_only_reason is not None

    def _ref_options(self) -> tuple[tuple[str, Any], ...]:
        # What tasks carry: workers only read, so they open the catalog read-only.
        return (("read_only", True),)

    # ------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite_file.connect(self._path, read_only=self.read_only)
        conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys=OFF")
        if self._shadow_tables:
            sqlite_file.shadow_missing_tables(conn, _SCHEMA)
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (re-created after a fork, and after :meth:`close`)."""
        if self._pid != os.getpid():
            self._local = threading.local()
            self._open = _Connections()  # the parent's belong to the parent
            self._pid = os.getpid()
            self._uids.lock = threading.Lock()  # another thread may have held it at the fork
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", None) != self._open.generation:
            conn = self._local.conn = self._connect()
            self._local.generation = self._open.generation
            self._open.add(conn)
        return conn

    def close(self) -> None:
        """Close every connection this store opened, in every thread (it re-opens on use)."""
        if self._pid == os.getpid():
            self._open.close_all()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises.

        A database error other than a constraint (disk full, read-only file,
        a lock held too long) becomes a StoreURIError naming the catalog; a
        read-only store raises ReadOnlyCatalogError before touching the file.
        """
        if self._read_only_reason is not None:
            raise ReadOnlyCatalogError(
                f"the catalog {self._path} is read-only: {self._read_only_reason}; nothing was "
                "written (to write, open it without ?mode=ro / read_only=True, from an account "
                "that may write the file and its folder)")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already
                    try:
                        conn.execute("ROLLBACK")
                    except (sqlite3.Error, CatalogCorruptError):
                        pass
                raise
        except sqlite3.IntegrityError:
            raise  # the callers name the duplicate document
        except sqlite3.Error as err:
            raise StoreURIError(
                f"writing to the catalog {self._path} failed: {err} (nothing of this "
                "document was written; check the disk space and the file's permissions)"
            ) from err

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own holding one read transaction (a consistent view).

        Read connections are pooled per thread and reused by the next read (a task
        of a Dask worker reads without connecting); a pool is dropped after a fork,
        after :meth:`close`, and when the catalog file was replaced on disk.
        """
        pool = self._read_pool()
        conn = pool.pop() if pool else None
        if conn is None:
            conn = self._connect()
            self._open.add(conn)
        reusable = False
        try:
            conn.execute("BEGIN")
            yield conn
            reusable = True
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # a read: nothing to keep
            except sqlite3.Error:
                reusable = False
            if reusable and self._read_pool() is pool and len(pool) < 4:
                pool.append(conn)
            else:
                self._open.discard(conn)

    def _read_pool(self) -> list:
        """This thread's idle read connections (emptied when they may no longer be used)."""
        if self._pid != os.getpid():
            self._local = threading.local()
            self._open = _Connections()  # the parent's belong to the parent
            self._pid = os.getpid()
        local = self._local
        pool = getattr(local, "read_pool", None)
        identity = _file_identity(self._path)
        if pool is None or local.read_generation != self._open.generation or \
                local.read_identity != identity:
            for conn in pool or ():
                self._open.discard(conn)
            pool = local.read_pool = []
            local.read_generation = self._open.generation
            local.read_identity = identity
        return pool

    # ------------------------------------------------------------------ writes
    def _insert_unique(self, sql: str, params: tuple, doc_type: str, uid: str) -> None:
        try:
            with self._write() as conn:
                conn.execute(sql, params)
        except sqlite3.IntegrityError as err:
            raise DuplicateUidError(
                f"{doc_type} {uid!r} is already stored; documents are immutable, "
                "so give the new document a new uid"
            ) from err

    def insert_start(self, doc: Mapping) -> None:
        """Store a start document, and its words in the full-text table (one transaction)."""
        row = (doc["uid"], doc["time"], _indexed_scan_id(doc.get("scan_id")), dumps(doc))
        text = index_text(doc)
        try:
            with self._write() as conn:
                cur = conn.execute(
                    "INSERT INTO run_start (uid, time, scan_id, doc) VALUES (?, ?, ?, ?)", row)
                conn.execute(f"INSERT INTO {_TEXT_TABLE} (rowid, words) VALUES (?, ?)",
                             (cur.lastrowid, text))
        except sqlite3.IntegrityError as err:
            raise DuplicateUidError(
                f"start {doc['uid']!r} is already stored; documents are immutable, "
                "so give the new document a new uid"
            ) from err

    def insert_stop(self, doc: Mapping) -> None:
        try:
            with self._write() as conn:
                conn.execute("INSERT INTO run_stop (uid, run_start, doc) VALUES (?, ?, ?)",
                             (doc["uid"], doc["run_start"], dumps(doc)))
        except sqlite3.IntegrityError as err:
            if "run_stop.run_start" in str(err):
                raise RunAlreadyStoppedError(
                    f"stop {doc['uid']!r}: run {doc['run_start']!r} already has a stop "
                    "document; a run is stopped once"
                ) from err
            raise DuplicateUidError(f"stop {doc['uid']!r} is already stored") from err

    def insert_descriptor(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO descriptor (uid, run_start, name, doc) VALUES (?, ?, ?, ?)",
            (doc["uid"], doc["run_start"], doc.get("name", "primary"), dumps(doc)),
            "descriptor", doc["uid"],
        )

    def insert_resource(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO resource (uid, run_start, doc) VALUES (?, ?, ?)",
            (doc["uid"], doc.get("run_start"), dumps(doc)),
            "resource", doc["uid"],
        )

    def insert_datum_page(self, page: Mapping) -> None:
        """Store a datum_page as one page (see :mod:`.sqlite_datum`)."""
        with self._write() as conn:
            sqlite_datum.insert_page(conn, page)

    supports_stream_data = True

    def insert_stream_resource(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO stream_resource (uid, run_start, data_key, doc) VALUES (?, ?, ?, ?)",
            (doc["uid"], doc.get("run_start"), doc.get("data_key"), dumps(doc)),
            "stream_resource", doc["uid"],
        )

    def insert_stream_datums(self, docs: Sequence[Mapping]) -> None:
        if not docs:
            return
        rows = [(d["uid"], d["stream_resource"], d["descriptor"], d["seq_nums"]["start"],
                 d["seq_nums"]["stop"], dumps(d)) for d in docs]
        try:
            with self._write() as conn:
                conn.executemany(
                    "INSERT INTO stream_datum (uid, stream_resource, descriptor, seq_start, "
                    "seq_stop, doc) VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError as err:
            dup = self._first_duplicate("stream_datum", "uid", [d["uid"] for d in docs])
            raise DuplicateUidError(
                f"stream_datum {dup!r} is already stored; nothing of these {len(docs)} "
                "stream_datum was written") from err

    def get_stream_resource(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM stream_resource WHERE uid = ?", (uid,))

    def stream_resources(self, run_uid: str) -> list[dict]:
        return self._docs(
            "SELECT doc FROM stream_resource WHERE run_start = ? OR uid IN ("
            " SELECT sd.stream_resource FROM stream_datum sd JOIN descriptor d"
            " ON sd.descriptor = d.uid WHERE d.run_start = ?) ORDER BY id", (run_uid, run_uid))

    def stream_datums(self, descriptor_uids: Sequence[str]) -> list[dict]:
        out: list[tuple[int, str]] = []
        conn = self._conn()
        for chunk in _chunks(list(descriptor_uids)):
            out.extend(conn.execute(
                f"SELECT id, doc FROM stream_datum WHERE descriptor IN ({_marks(len(chunk))})",
                chunk).fetchall())
        out.sort()
        return [self._loads(doc) for _, doc in out]

    def stream_datums_of_resource(self, stream_resource_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM stream_datum WHERE stream_resource = ? ORDER BY id",
                          (stream_resource_uid,))

    def iter_stream_resources(self) -> Iterator[dict]:
        return self._iter_docs("SELECT doc FROM stream_resource ORDER BY id")

    def iter_resources(self) -> Iterator[dict]:
        return self._iter_docs("SELECT doc FROM resource ORDER BY id")

    def _iter_docs(self, sql: str) -> Iterator[dict]:
        with self._snapshot() as conn:
            cur = conn.execute(sql)
            while rows := cur.fetchmany(256):
                for (doc,) in rows:
                    yield json.loads(doc)

    def update_resource(self, resource_uid: str, changes: Mapping, *, cmd: str,
                        cmd_kwargs: Mapping) -> dict:
        changes = check_resource_changes(resource_uid, changes)
        with self._write() as conn:
            table = "resource"
            row = conn.execute("SELECT doc FROM resource WHERE uid = ?", (resource_uid,)).fetchone()
            if row is None:
                table = "stream_resource"
                row = conn.execute("SELECT doc FROM stream_resource WHERE uid = ?",
                                   (resource_uid,)).fetchone()
            if row is None:
                raise UnknownReferenceError(
                    f"no resource or stream_resource with uid {resource_uid!r} in "
                    f"{self.display_uri}; "
                    "nothing was updated")
            old = self._loads(row[0])
            new = {**old, **changes}
            conn.execute(f"UPDATE {table} SET doc = ? WHERE uid = ?", (dumps(new), resource_uid))
            conn.execute(
                "INSERT INTO resource_update (resource, time, cmd, cmd_kwargs, old, new) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (resource_uid, time.time(), cmd, dumps(dict(cmd_kwargs)), row[0], dumps(new)))
        return json.loads(dumps(new))

    def resource_history(self, resource_uid: str) -> list[dict]:
        rows = self._conn().execute(
            "SELECT time, cmd, cmd_kwargs, old, new FROM resource_update WHERE resource = ? "
            "ORDER BY id", (resource_uid,)).fetchall()
        return [{"resource": resource_uid, "old": self._loads(old), "new": self._loads(new),
                 "time": t, "cmd": cmd, "cmd_kwargs": self._loads(kwargs)}
                for t, cmd, kwargs, old, new in rows]

    def _first_duplicate(self, table: str, column: str, ids: Sequence[str]) -> str:
        repeated = first_repeat(ids)
        if repeated is not None:
            return repeated
        conn = self._conn()
        for chunk in _chunks(ids):
            row = conn.execute(
                f"SELECT {column} FROM {table} WHERE {column} IN ({_marks(len(chunk))}) LIMIT 1",
                chunk).fetchone()
            if row:
                return row[0]
        return ids[0]

    def insert_event_page(self, page: Mapping) -> None:
        self.insert_event_pages([page])

    def insert_event_pages(self, pages: Sequence[Mapping]) -> None:
        pages = [p for p in pages if len(p["seq_num"])]
        if not pages:
            return
        encoded = [
            [self._encode_page(page, start, min(start + MAX_PAGE_EVENTS, len(page["seq_num"])))
             for start in range(0, len(page["seq_num"]), MAX_PAGE_EVENTS)]
            for page in pages
        ]
        uids = [u for page in pages for u in page["uid"]]
        hashes = uid_hashes(uids)
        self._conn()  # (after a fork: this process's connections and lock)
        with self._uids.lock:
            with self._write() as conn:
                known_open = self._open_events(conn)
                open_events = dict(known_open)  # updated as pages are written and sealed
                self._uids.sync(conn)
                dup = self._uids.first_stored(conn, uids, hashes)
                if dup is not None:
                    descriptor = next(p["descriptor"] for p in pages if dup in p["uid"])
                    raise DuplicateUidError(
                        f"event {dup!r} (descriptor {descriptor!r}) is already stored; "
                        f"nothing of these {len(uids)} events was written")
                at = last = 0  # last: the last event_uid_hash row written
                for page, parts in zip(pages, encoded, strict=True):
                    n = len(page["seq_num"])
                    descriptor = page["descriptor"]
                    if n >= SEAL_EVENTS:
                        # Seal the open pages first: merged later, they would span this page.
                        last = self._maybe_seal(conn, descriptor, open_events, force=True) or last
                    for start, (row, columns) in zip(range(at, at + n, MAX_PAGE_EVENTS), parts):
                        last = self._write_page(conn, row, columns, hashes[start:start + row[1]])
                    at += n
                    if n < SEAL_EVENTS:
                        if descriptor in open_events:
                            open_events[descriptor] += n
                        last = self._maybe_seal(conn, descriptor, open_events) or last
            known_open.clear()  # committed: what this transaction left open
            known_open.update(open_events)
            self._uids.added(hashes, last)

    def _open_events(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Descriptor -> events in its open pages, as this connection last left them.

        Forgotten when another connection has committed since (``PRAGMA
        data_version``): what is missing is summed from the file again.
        """
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        local = self._local
        if getattr(local, "data_version", None) != version:
            local.data_version, local.open_events = version, {}
        return local.open_events

    @staticmethod
    def _encode_page(page: Mapping, lo: int, hi: int) -> tuple[tuple, list[tuple]]:
        seq = np.asarray(page["seq_num"][lo:hi], dtype="<i8")
        time = np.asarray(page["time"][lo:hi], dtype="<f8")
        n = hi - lo
        row = (page["descriptor"], n, int(seq.min()), int(seq.max()),
               int(n >= SEAL_EVENTS), seq.tobytes(), time.tobytes(),
               dumps_strings(page["uid"][lo:hi]))
        columns = []
        for field, values in page["data"].items():
            codec, blob = encode_column(values[lo:hi])
            ts_codec, ts_blob = encode_column(page["timestamps"][field][lo:hi])
            columns.append((field, codec, blob, ts_codec, ts_blob))
        return row, columns

    @staticmethod
    def _write_page(conn: sqlite3.Connection, row: tuple, columns: list[tuple],
                    hashes: np.ndarray, page_id: int | None = None) -> int:
        """Write one page; returns the id of its event_uid_hash row."""
        cur = conn.execute(
            "INSERT INTO event_page (id, descriptor, n, seq_min, seq_max, sealed, seq_num, time, uid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (page_id, *row))
        pid = cur.lastrowid
        conn.executemany(
            "INSERT INTO page_column (page_id, field, codec, data, ts_codec, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)", ((pid, *col) for col in columns))
        return conn.execute("INSERT INTO event_uid_hash (page_id, hashes) VALUES (?, ?)",
                            (pid, hashes.tobytes())).lastrowid

    def _maybe_seal(self, conn: sqlite3.Connection, descriptor: str,
                    open_events: dict[str, int], force: bool = False) -> int | None:
        """Merge a descriptor's open pages into one once they hold SEAL_EVENTS events.

        ``open_events`` caches the events in each descriptor's open pages (kept
        up to date here).  Returns the id of the last event_uid_hash row written
        (None: none written).
        """
        total = open_events.get(descriptor)
        if total is None:
            (total,) = conn.execute(
                "SELECT COALESCE(SUM(n), 0) FROM event_page WHERE descriptor = ? AND sealed = 0",
                (descriptor,)).fetchone()
            open_events[descriptor] = total
        if total == 0 or (total < SEAL_EVENTS and not force):
            return None
        open_events[descriptor] = 0
        (mixed,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT field FROM page_column JOIN event_page "
            "ON page_column.page_id = event_page.id WHERE descriptor = ? AND sealed = 0 "
            "GROUP BY field HAVING COUNT(DISTINCT codec) > 1 OR COUNT(DISTINCT ts_codec) > 1)",
            (descriptor,)).fetchone()
        if mixed:
            # Merging would re-encode values of different kinds together (ints into
            # floats, arrays into lists): seal the pages as they are, types intact.
            conn.execute("UPDATE event_page SET sealed = 1 WHERE descriptor = ? AND sealed = 0",
                         (descriptor,))
            return None
        pages = list(self._read_pages(conn, descriptor_uids=[descriptor], fields=None,
                                      timestamps=True, uids=True, open_only=True,
                                      order="seq_min, id"))
        ids = [p.page_id for p in pages]
        merged = {
            "descriptor": descriptor,
            "seq_num": np.concatenate([p.seq_num for p in pages]),
            "time": np.concatenate([p.time for p in pages]),
            "uid": list(itertools.chain.from_iterable(p.uid for p in pages)),
            "data": {f: _joined([p.data[f] for p in pages]) for f in pages[0].data},
            "timestamps": {f: _joined([p.timestamps[f] for p in pages])
                           for f in pages[0].timestamps},
        }
        for chunk in _chunks(ids):
            marks = _marks(len(chunk))
            conn.execute(f"DELETE FROM page_column WHERE page_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM event_page WHERE id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM event_uid_hash WHERE page_id IN ({marks})", chunk)
        n = len(merged["uid"])
        hashes = uid_hashes(merged["uid"])
        last = None
        for start in range(0, n, MAX_PAGE_EVENTS):
            row, columns = self._encode_page(merged, start, min(start + MAX_PAGE_EVENTS, n))
            row = (*row[:4], 1, *row[5:])  # sealed
            last = self._write_page(conn, row, columns, hashes[start:start + row[1]],
                                    page_id=ids[0] if start == 0 else None)
        return last

    # ------------------------------------------------------------------ reads
    def _loads(self, text: str | bytes) -> Any:
        """A stored JSON value; text that is not JSON means a damaged file."""
        try:
            return json.loads(text)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise sqlite_file.damaged(self._path, f"stored text is not JSON: {err}") from err

    def _one_doc(self, sql: str, params: tuple) -> dict | None:
        row = self._conn().execute(sql, params).fetchone()
        return self._loads(row[0]) if row else None

    def _docs(self, sql: str, params: tuple) -> list[dict]:
        return [self._loads(r[0]) for r in self._conn().execute(sql, params).fetchall()]

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
            clauses.append(f"id IN (SELECT rowid FROM {_TEXT_TABLE} WHERE {_TEXT_TABLE} MATCH ?)")
            params.append(fts)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return (doc for doc in self._starts(where, tuple(params))
                if query.match(doc) and (search is None or search.match(doc)))

    def count_starts(self) -> int:
        (n,) = self._conn().execute("SELECT COUNT(*) FROM run_start").fetchone()
        return n

    def get_stop(self, run_uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM run_stop WHERE run_start = ?", (run_uid,))

    def get_descriptor(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM descriptor WHERE uid = ?", (uid,))

    def descriptors(self, run_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM descriptor WHERE run_start = ? ORDER BY id", (run_uid,))

    def get_resource(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM resource WHERE uid = ?", (uid,))

    def find_resources(self, *, root: str | None, resource_path: str | None) -> list[dict]:
        return self._docs(
            "SELECT doc FROM resource WHERE json_extract(doc, '$.resource_path') IS ? "
            "AND COALESCE(json_extract(doc, '$.root'), '') = COALESCE(?, '') ORDER BY id",
            (resource_path, root))

    def resources(self, run_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM resource WHERE run_start = ? ORDER BY id", (run_uid,))

    def datum(self, datum_ids: Sequence[str]) -> dict[str, dict]:
        with self._snapshot() as conn:
            found = sqlite_datum.find(conn, datum_ids, self._loads)
            if self._datum_rows:
                found.update(self._datum_of_rows(conn, [i for i in datum_ids if i not in found]))
        return found

    def _datum_of_rows(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, dict]:
        """Datum of a read-only catalog before version 5 (one ``datum`` row each)."""
        out: dict[str, dict] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            rows = conn.execute(
                "SELECT datum_id, resource, datum_kwargs FROM datum "
                f"WHERE datum_id IN ({_marks(len(chunk))})", chunk).fetchall()
            kwargs = self._loads_many([r[2] for r in rows])
            for (datum_id, resource, _), kw in zip(rows, kwargs, strict=True):
                out[datum_id] = {"datum_id": datum_id, "resource": resource,
                                 "datum_kwargs": kw}
        return out

    def _loads_many(self, texts: list) -> list:
        """Stored JSON values, decoded in one parse (not one per value)."""
        if len(texts) > 1 and all(isinstance(t, str) for t in texts):
            try:
                values = json.loads("[" + ",".join(texts) + "]")
            except ValueError:
                values = None
            if values is not None and len(values) == len(texts):
                return values
        return [self._loads(t) for t in texts]

    def datum_of_resource(self, resource_uid: str) -> Iterator[dict]:
        with self._snapshot() as conn:
            yield from sqlite_datum.of_resource(conn, resource_uid, self._loads)
            if self._datum_rows:
                cur = conn.execute("SELECT datum_id, datum_kwargs FROM datum WHERE resource = ? "
                                   "ORDER BY id", (resource_uid,))
                while rows := cur.fetchmany(1024):
                    for datum_id, kwargs in rows:
                        yield {"datum_id": datum_id, "resource": resource_uid,
                               "datum_kwargs": self._loads(kwargs)}

    def event_counts(self, descriptor_uids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        out = {}
        conn = self._conn()
        for chunk in _chunks(list(descriptor_uids)):
            rows = conn.execute(
                "SELECT descriptor, SUM(n), MIN(seq_min), MAX(seq_max) FROM event_page "
                f"WHERE descriptor IN ({_marks(len(chunk))}) GROUP BY descriptor", chunk)
            for desc, n, lo, hi in rows:
                out[desc] = (int(n), int(lo), int(hi))
        return out

    def seq_num_runs(self, descriptor_uids: Sequence[str]) -> list[tuple[int, int, int]]:
        """From page metadata; only pages whose seq_nums are not consecutive are decoded."""
        runs: list[tuple[int, int, int]] = []
        conn = self._conn()
        for chunk in _chunks(list(descriptor_uids)):
            rows = conn.execute(
                "SELECT n, seq_min, seq_max, CASE WHEN seq_max - seq_min + 1 = n THEN NULL "
                f"ELSE seq_num END FROM event_page WHERE descriptor IN ({_marks(len(chunk))})",
                chunk)
            for n, lo, hi, blob in rows:
                if blob is None:
                    runs.append((int(lo), int(hi) + 1, int(n)))
                else:
                    runs.extend(consecutive_runs(np.frombuffer(blob, dtype="<i8")))
        return sorted(runs)

    def iter_event_pages(
        self,
        descriptor_uids: Sequence[str],
        *,
        seq_range: tuple[int, int] | None = None,
        fields: Iterable[str] | None = None,
        timestamps: bool = True,
        uids: bool = False,
    ) -> Iterator[EventPageColumns]:
        with self._snapshot() as conn:
            yield from self._read_pages(conn, descriptor_uids=list(descriptor_uids),
                                        seq_range=seq_range,
                                        fields=None if fields is None else list(fields),
                                        timestamps=timestamps, uids=uids)

    def _read_pages(self, conn, *, descriptor_uids, fields, timestamps, uids,
                    seq_range=None, open_only=False, order: str = "id",
                    batch_events: int = 2 * SEAL_EVENTS * 8) -> Iterator[EventPageColumns]:
        """Pages in the order they were stored (``order="id"``; events of one descriptor
        sharing a seq_num come as stored, so the last stored wins -- the read contract of
        :meth:`Store.iter_event_pages`), fetched a bounded batch of events at a time."""
        where = [f"descriptor IN ({_marks(len(descriptor_uids))})"]
        params: list[Any] = list(descriptor_uids)
        if seq_range is not None:
            lo, hi = seq_range
            where.append("seq_min < ? AND seq_max >= ?")
            params += [hi, lo]
        if open_only:
            where.append("sealed = 0")
        pages = conn.execute(
            f"SELECT id, n FROM event_page WHERE {' AND '.join(where)} ORDER BY {order}",
            params).fetchall()
        meta_sql = "id, descriptor, seq_num, time" + (", uid" if uids else "")
        col_sql = "page_id, field, codec, data" + (", ts_codec, ts" if timestamps else "")
        for ids in _batches(pages, batch_events):
            marks = _marks(len(ids))
            metas = {r[0]: r for r in conn.execute(
                f"SELECT {meta_sql} FROM event_page WHERE id IN ({marks})", ids)}
            by_page: dict[int, list] = {}
            if fields is None or fields:
                q = f"SELECT {col_sql} FROM page_column WHERE page_id IN ({marks})"
                qparams: list[Any] = list(ids)
                if fields is not None:
                    q += f" AND field IN ({_marks(len(fields))})"
                    qparams += fields
                for r in conn.execute(q, qparams):
                    by_page.setdefault(r[0], []).append(r)
            for pid in ids:
                try:
                    page = self._decode_page(metas[pid], by_page.pop(pid, ()), uids=uids,
                                             timestamps=timestamps)
                except CatalogCorruptError:
                    raise
                except (KeyError, ValueError, TypeError) as err:  # blobs that fit no codec
                    raise sqlite_file.damaged(
                        self._path, f"event page {pid} cannot be decoded: "
                        f"{type(err).__name__}: {err}") from err
                page.page_id = pid
                if seq_range is not None:
                    page = _clip(page, *seq_range)
                    if not len(page):
                        continue
                yield page

    def _decode_page(self, prow: tuple, columns: Iterable[tuple], *, uids: bool,
                     timestamps: bool) -> "_PageColumns":
        page = _PageColumns(
            descriptor=prow[1],
            seq_num=np.frombuffer(prow[2], dtype="<i8"),
            time=np.frombuffer(prow[3], dtype="<f8"),
            data={}, timestamps={},
            uid=self._loads(prow[4]) if uids else None,
        )
        for r in columns:
            page.data[r[1]] = decode_column(r[2], r[3])
            if timestamps:
                page.timestamps[r[1]] = decode_column(r[4], r[5])
        return page


def _joined(columns: list) -> np.ndarray | list:
    """Decoded columns of consecutive pages as one: numpy arrays (one codec, as the
    caller checked) concatenated, anything else chained as a list."""
    if all(isinstance(c, np.ndarray) for c in columns):
        return np.concatenate(columns)
    return list(itertools.chain.from_iterable(column_to_list(c) for c in columns))


def _batches(pages: list[tuple[int, int]], max_events: int) -> Iterator[list[int]]:
    """Group (page_id, n) rows into id lists of at most max_events events (at least one page)."""
    batch: list[int] = []
    events = 0
    for pid, n in pages:
        if batch and (events + n > max_events or len(batch) >= _SQL_VARS):
            yield batch
            batch, events = [], 0
        batch.append(pid)
        events += n
    if batch:
        yield batch


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the catalog file: a replaced file is another catalog."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _remove_catalog(connections: "_Connections", folder: str) -> None:
    connections.close_all()
    shutil.rmtree(folder, ignore_errors=True)


_SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_INT64 = (-2**63, 2**63 - 1)


def _sql_number(value: Any) -> bool:
    """A number SQLite stores as is: a float, or an int (not a bool) within int64."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    return isinstance(value, float)


class _StoredUids:
    """The hashes of the catalog's event uids that this process knows (see :mod:`.uid_hashes`).

    ``sync`` reads, inside a write transaction, the ``event_uid_hash`` rows
    appended since the last look (all of them, the first time); ``added``
    records what this process committed.  The rows' ids never repeat
    (AUTOINCREMENT), so rows another process appended are never missed.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known = HashSet()
        self.last_id = 0

    def sync(self, conn: sqlite3.Connection) -> None:
        cur = conn.execute("SELECT id, hashes FROM event_uid_hash WHERE id > ? ORDER BY id",
                           (self.last_id,))
        batch, last = [], self.last_id
        while rows := cur.fetchmany(4096):
            batch += [row[1] for row in rows]
            last = rows[-1][0]
        if batch:
            self.known.add(np.frombuffer(b"".join(batch), dtype=np.uint64))
            self.last_id = last

    def added(self, hashes: np.ndarray, last_id: int | None) -> None:
        self.known.add(hashes)
        self.last_id = max(self.last_id, last_id or 0)

    def first_stored(self, conn: sqlite3.Connection, uids: list[str],
                     hashes: np.ndarray) -> str | None:
        """The first of ``uids`` repeated among them or already stored, or None."""
        ordered = np.sort(hashes)
        if (ordered[1:] == ordered[:-1]).any():  # a repeat, or two uids with one hash
            repeated = first_repeat(uids)
            if repeated is not None:
                return repeated
        hits = np.flatnonzero(self.known.contains(hashes))
        if not hits.size:
            return None
        # Candidates: compare the uids themselves, in the pages whose hashes hold them.
        wanted = {uids[i]: i for i in hits}
        candidates = np.unique(hashes[hits])
        pages = []
        for page_id, blob in conn.execute("SELECT page_id, hashes FROM event_uid_hash"):
            if np.isin(np.frombuffer(blob, dtype=np.uint64), candidates).any():
                pages.append(page_id)
        stored = set()
        for chunk in _chunks(pages):
            for (text,) in conn.execute(
                    f"SELECT uid FROM event_page WHERE id IN ({_marks(len(chunk))})", chunk):
                stored.update(u for u in json.loads(text) if u in wanted)
        return min(stored, key=wanted.__getitem__) if stored else None


class _Connections:
    """The per-thread connections of one store, so that close() reaches them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self.generation = 0

    def add(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._conns.append(conn)

    def discard(self, conn: sqlite3.Connection) -> None:
        """Close one connection and forget it."""
        with self._lock:
            try:
                self._conns.remove(conn)
            except ValueError:
                pass
        conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self.generation += 1
        for conn in conns:
            conn.close()


class _PageColumns(EventPageColumns):
    page_id: int = -1


def _clip(page: EventPageColumns, lo: int, hi: int) -> EventPageColumns:
    """Keep only events with lo <= seq_num < hi (a no-op when all are inside)."""
    seq = page.seq_num
    if len(seq) and seq.min() >= lo and seq.max() < hi:
        return page
    mask = (seq >= lo) & (seq < hi)
    idx = np.flatnonzero(mask)

    def take(col):
        if isinstance(col, np.ndarray):
            return col[mask]
        return [col[i] for i in idx]

    return EventPageColumns(
        descriptor=page.descriptor, seq_num=seq[mask], time=page.time[mask],
        data={k: take(v) for k, v in page.data.items()},
        timestamps={k: take(v) for k, v in page.timestamps.items()},
        uid=None if page.uid is None else take(page.uid),
    )
