"""The embedded default store: one SQLite file per catalog, no server (see :mod:`.store`).

Modules, one job each: :mod:`.uri` (URIs), :mod:`.connection` (opening the file,
damage, per-thread connections, write transactions, read snapshots),
:mod:`.schema` (tables, versions, migrations), :mod:`.writes` (documents in),
:mod:`.event_writes` (event pages in, sealing), :mod:`.reads` (documents and event
pages out), :mod:`.search` (runs by query and text), :mod:`.check` (``dask-broker
check``), :mod:`.store` (the :class:`SQLiteStore` that joins them).  Page encoding
is shared with the PostgreSQL store: :mod:`dask_broker.stores.pages`.
"""

from __future__ import annotations

from ..pages import MAX_PAGE_EVENTS, SEAL_EVENTS
from .schema import SCHEMA_VERSION
from .store import SQLiteStore
from .uri import parse_sqlite_uri

__all__ = ["SQLiteStore", "parse_sqlite_uri", "SCHEMA_VERSION", "SEAL_EVENTS", "MAX_PAGE_EVENTS"]
