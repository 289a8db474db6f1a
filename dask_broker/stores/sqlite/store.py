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
:mod:`.connection` and :mod:`.schema`.

Every write is one ``BEGIN IMMEDIATE`` transaction: a call that raises
leaves nothing behind, a call that has returned is committed (with the default
``synchronous=FULL`` it survives a crash of the process and of the machine; the
URI may ask for ``?synchronous=normal``, which survives a crash of the process).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from ...errors import StoreURIError
from ..base import Store
from .connection import ConnectionMethods, Connections
from .file import writable
from .event_writes import EventWriteMethods, StoredUids
from .reads import ReadMethods
from .schema import (MIGRATIONS, SCHEMA, SCHEMA_VERSION, check_version, create_or_migrate,
                     schema_version)
from .search import SearchMethods
from .uri import parse_sqlite_uri
from .writes import WriteMethods

__all__ = ["SQLiteStore"]


class SQLiteStore(ConnectionMethods, WriteMethods, EventWriteMethods, ReadMethods, SearchMethods,
                  Store):
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
            if self._path.exists() and not writable(self._path) else None)
        self._shadow_tables = False
        self._text_table = True  # a read-only open of a catalog before version 3 lacks it
        self._datum_rows = False  # ... before version 5 has a row per datum, no datum pages
        self._local = threading.local()
        self._open = Connections()
        # a store dropped without close() closes its connections at once (sqlite3
        # connections of Python 3.11 sit in a reference cycle with their statement
        # cache, so without this they wait for the cyclic garbage collector)
        weakref.finalize(self, self._open.close_all)
        self._pid = os.getpid()
        self._uids = StoredUids()
        if self._read_only_reason is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
            try:
                if self._read_only_reason is None:
                    conn.execute("PRAGMA journal_mode=WAL")
                    create_or_migrate(conn, SCHEMA, SCHEMA_VERSION, MIGRATIONS)
                else:
                    found = schema_version(conn)
                    if found is None:
                        raise StoreURIError(f"{self._path} is an empty database, not a "
                                            "dask_broker catalog (a read-only open creates none)")
                    check_version(self._path, found, SCHEMA_VERSION)
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

def _remove_catalog(connections: "Connections", folder: str) -> None:
    connections.close_all()
    shutil.rmtree(folder, ignore_errors=True)
