"""The PostgreSQL store: one catalog shared by every process of a cluster.

``Broker.from_uri("postgresql://user@host:5432/dbname")`` (also ``postgres://``,
``postgresql+psycopg://``, ``?host=/path/to/socket-dir``); needs the psycopg
driver (``pip install 'dask_broker[postgres]'``).

Modules: :mod:`.uri` (URIs), :mod:`.connection` (a pool per process, safe across
fork), :mod:`.schema` (tables, versions, migrations), :mod:`.writes` and
:mod:`.reads` (event pages), :mod:`.search` (queries in SQL), :mod:`.store`
(the :class:`PostgresStore`).
"""

from __future__ import annotations

from .store import PostgresStore
from .uri import parse_postgres_uri

__all__ = ["PostgresStore", "parse_postgres_uri"]
