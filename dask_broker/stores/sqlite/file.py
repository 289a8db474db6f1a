"""The catalog file: opening it (read-only too), and damage reported as such.

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
from pathlib import Path
from urllib.parse import quote

from ...errors import CatalogCorruptError, StoreURIError

__all__ = ["CatalogConnection", "connect", "damaged", "file_identity", "read_only_target",
           "writable"]

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


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the catalog file: a replaced file is another catalog."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
