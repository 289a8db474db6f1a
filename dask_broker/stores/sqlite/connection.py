"""Connections to the catalog file: opening it (read-only too), damage, the store's
per-thread connections, its write transactions and pooled read snapshots.

Read-only opens
---------------
A writable store opens the file with a plain connection (the database runs in
WAL mode).  A read-only store opens ``file:...?mode=ro``, which SQLite refuses
to write.  A WAL database needs its ``-wal`` and ``-shm`` files to be read, and
SQLite creates them when they are missing, so :func:`read_only_target` chooses:

- the folder is writable: ``mode=ro``; the reader sees what a writer commits;
- the folder is not writable, and the ``-wal`` and ``-shm`` files both exist (a
  writer has the catalog open, or one stopped without closing it): ``mode=ro``
  (SQLite reads a ``-shm`` file it cannot write);
- the folder is not writable and there is no ``-wal`` file, or an empty one:
  every committed change is in the main file, and no writer is at work (one
  would have made a ``-wal`` file), so the file is opened with ``immutable=1``:
  no locks, no ``-shm``.  A writer that starts later (from an account that may
  write the folder) is not seen, and must not write while such a reader reads;
- the folder is not writable and a non-empty ``-wal`` file has no ``-shm``:
  SQLite cannot read it, and :class:`~dask_broker.errors.StoreURIError` says to
  open the catalog once where its folder is writable (which folds the ``-wal``
  file into the catalog) or to copy the files to a writable folder.

Damage
------
Connections are :class:`CatalogConnection`: a SQLite error that reports a
damaged file (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``, text that is not UTF-8),
from any statement or fetch, becomes a
:class:`~dask_broker.errors.CatalogCorruptError` naming the file and what to do.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

from ...errors import CatalogCorruptError, ReadOnlyCatalogError, StoreURIError
from ..base import chunked
from .schema import SCHEMA, shadow_missing_tables

__all__ = [
    "CatalogConnection",
    "ConnectionMethods",
    "Connections",
    "connect",
    "damaged",
    "read_only_target",
    "writable",
    "chunks",
    "marks",
]

SQL_VARS = 900  # stay below SQLite's bound-parameter limit
#: page cache of a read snapshot's connection, KiB (SQLite's default: 2 MiB per connection)
READ_CACHE_KIB = 256

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def damaged(path: Path, detail: str) -> CatalogCorruptError:
    """The error for a damaged catalog file: what failed, and how to find and save what is left.

    The error's ``path`` and ``detail`` attributes hold the file and what failed.
    """
    err = CatalogCorruptError(
        f"the catalog {path} is damaged ({detail}): `dask-broker check {path}` reports which "
        f"runs can still be read, and SQLite recovers what is left with "
        f"`sqlite3 {path} \".recover\" | sqlite3 recovered.db`")
    err.path, err.detail = path, detail
    return err


def _as_damage(err: sqlite3.DatabaseError, path: Path) -> CatalogCorruptError | None:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_NOTADB:
        return damaged(path, f"{err}: not a SQLite file, or its header is damaged")
    if (code is not None and code & 0xFF in _CORRUPT_CODES) or \
            str(err).startswith("Could not decode to UTF-8"):
        return damaged(path, str(err))
    return None


def _translating(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            damage = _as_damage(err, self.connection.path)
            if damage is None:
                raise
            raise damage from err
    return call


class _CatalogCursor(sqlite3.Cursor):
    """A cursor whose errors about a damaged file become CatalogCorruptError."""

    execute = _translating(sqlite3.Cursor.execute)
    executemany = _translating(sqlite3.Cursor.executemany)
    executescript = _translating(sqlite3.Cursor.executescript)
    fetchone = _translating(sqlite3.Cursor.fetchone)
    fetchmany = _translating(sqlite3.Cursor.fetchmany)
    fetchall = _translating(sqlite3.Cursor.fetchall)
    __next__ = _translating(sqlite3.Cursor.__next__)


class CatalogConnection(sqlite3.Connection):
    """A connection to a catalog file (``path``) whose cursors report damage as such."""

    path: Path = Path()

    def cursor(self, factory=_CatalogCursor):  # type: ignore[override]
        return super().cursor(factory)

    # sqlite3.Connection's shortcuts make plain cursors: route them through ours.
    def execute(self, sql, parameters=(), /):  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, parameters, /):  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script, /):  # type: ignore[override]
        return self.cursor().executescript(script)


def writable(path: Path) -> bool:
    """Whether this process may write the catalog file and its folder (WAL needs both)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def read_only_target(path: Path) -> str:
    """The ``file:`` URI that opens ``path`` read-only (see the module's docstring)."""
    base = f"file:{quote(str(path))}?mode=ro"
    if os.access(path.parent, os.W_OK):
        return base
    wal = path.with_name(path.name + "-wal")
    shm = path.with_name(path.name + "-shm")
    if wal.exists() and shm.exists():
        return base
    if not wal.exists() or wal.stat().st_size == 0:
        return base + "&immutable=1"
    raise StoreURIError(
        f"cannot read the catalog {path}: its write-ahead log {wal.name} holds changes not yet "
        f"in the file, and SQLite needs to create {shm.name} to read it, but this process "
        f"may not write the folder {path.parent}; open the catalog once where the folder is "
        f"writable (that folds {wal.name} into the file), or copy {path.name} and {wal.name} "
        f"to a writable folder")


def connect(path: Path, *, read_only: bool, timeout: float = 60) -> CatalogConnection:
    """A connection to the catalog file (autocommit; usable from any thread)."""
    if read_only:
        target, uri = read_only_target(path), True
    else:
        target, uri = str(path), False
    conn = sqlite3.connect(target, uri=uri, timeout=timeout, isolation_level=None,
                           check_same_thread=False, factory=CatalogConnection)
    conn.path = path
    return conn


def chunks(seq: Sequence) -> Iterator[Sequence]:
    """``seq`` in pieces that fit in one statement's bound parameters."""
    return chunked(seq, SQL_VARS)


def marks(n: int) -> str:
    """``?,?,...``: ``n`` bound parameters."""
    return ",".join("?" * n)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the catalog file: a replaced file is another catalog."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Connections:
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

    def after_fork(self) -> None:
        """Forget, without closing, the connections a forked child inherited (they
        belong to the parent)."""
        self._lock = threading.Lock()
        self._conns = []
        self.generation += 1

    def close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self.generation += 1
        for conn in conns:
            conn.close()


class ConnectionMethods:
    """The connections of a :class:`~.store.SQLiteStore`: one per thread, a write
    transaction, pooled read snapshots; re-created after a fork and after :meth:`close`."""

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self._path, read_only=self.read_only)
        conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys=OFF")
        if self._shadow_tables:
            shadow_missing_tables(conn, SCHEMA)
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (re-created after a fork, and after :meth:`close`)."""
        if self._pid != os.getpid():
            self._local = threading.local()
            self._open.after_fork()
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
            # Snapshots stream pages of blobs, read once: a page cache gains them nothing
            # and would hold its 2 MiB per pooled connection (index pages stay cached).
            conn.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")
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
            self._open.after_fork()
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
