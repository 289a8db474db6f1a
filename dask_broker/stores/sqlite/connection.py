"""The store's connections to its catalog file: one per thread, write transactions and
pooled read snapshots, re-created after a fork and after ``close()`` (opening the file
itself, read-only opens and damage: :mod:`.file`)."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from ...errors import CatalogCorruptError, ReadOnlyCatalogError, StoreURIError
from ..base import chunked
from .file import connect, file_identity
from .schema import SCHEMA, shadow_missing_tables

__all__ = ["ConnectionMethods", "Connections", "chunks", "marks", "SQL_VARS", "READ_CACHE_KIB"]

SQL_VARS = 900  # stay below SQLite's bound-parameter limit
#: page cache of a read snapshot's connection, KiB (SQLite's default: 2 MiB per connection)
READ_CACHE_KIB = 256


def chunks(seq: Sequence) -> Iterator[Sequence]:
    """``seq`` in pieces that fit in one statement's bound parameters."""
    return chunked(seq, SQL_VARS)


def marks(n: int) -> str:
    """``?,?,...``: ``n`` bound parameters."""
    return ",".join("?" * n)


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
        identity = file_identity(self._path)
        if pool is None or local.read_generation != self._open.generation or \
                local.read_identity != identity:
            for conn in pool or ():
                self._open.discard(conn)
            pool = local.read_pool = []
            local.read_generation = self._open.generation
            local.read_identity = identity
        return pool
