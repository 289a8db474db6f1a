"""The tables of a PostgreSQL catalog, their schema version and migrations.

A catalog is the set of tables below in one PostgreSQL schema: the first of the
connection's ``search_path`` (``public`` unless the URI says otherwise, e.g.
``?options=-csearch_path%3Dbeamline1``), so one database can hold several catalogs.

``meta.schema_version`` holds the layout's version.  :data:`MIGRATIONS` maps each
version to the DDL that makes it from the version before (version 1 from nothing);
:func:`create_or_migrate` runs what a catalog lacks and records the version, in one
transaction under an advisory lock, so that several processes opening a new or old
catalog at once create or migrate it once.  A catalog of a newer version is refused
(:class:`~dask_broker.errors.CatalogVersionError`, naming both versions); a read-only
store never creates or migrates (:func:`check_existing`).

Documents are kept as the exact JSON text dask_broker wrote (``doc text``): jsonb
would reorder keys, turn ``1e300`` into an integer and refuse NaN.  Start documents
also have a ``search`` jsonb copy for queries (see :mod:`.search`), with a GIN index.
Event pages are the embedded store's layout: one ``event_page`` row per page, one
``page_column`` row per field with the packed buffers of :mod:`dask_broker.codec`
(``bytea`` stored uncompressed: numbers do not compress).  So are datum pages
(version 2, :mod:`.datum`).
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import CatalogVersionError, StoreURIError
from . import datum

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "TABLES", "schema_version", "check_version",
           "create_or_migrate", "check_existing"]

_V1 = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE run_start (
    id bigserial PRIMARY KEY, uid text COLLATE "C" NOT NULL UNIQUE, time numeric,
    scan_id numeric, exact boolean NOT NULL, search jsonb NOT NULL, doc text NOT NULL);
CREATE INDEX run_start_time ON run_start (time DESC NULLS LAST, id DESC);
CREATE INDEX run_start_scan_id ON run_start (scan_id);
CREATE INDEX run_start_search ON run_start USING gin (search jsonb_path_ops);
CREATE TABLE run_stop (
    id bigserial PRIMARY KEY, uid text NOT NULL UNIQUE, run_start text NOT NULL,
    doc text NOT NULL, CONSTRAINT run_stop_one_per_run UNIQUE (run_start));
CREATE TABLE descriptor (
    id bigserial PRIMARY KEY, uid text NOT NULL UNIQUE, run_start text NOT NULL, name text,
    doc text NOT NULL);
CREATE INDEX descriptor_run ON descriptor (run_start, id);
CREATE TABLE resource (
    id bigserial PRIMARY KEY, uid text NOT NULL UNIQUE, run_start text, root text,
    resource_path text, doc text NOT NULL);
CREATE INDEX resource_run ON resource (run_start, id);
CREATE INDEX resource_path ON resource (resource_path);
CREATE TABLE datum (
    id bigserial PRIMARY KEY, datum_id text NOT NULL UNIQUE, resource text NOT NULL,
    datum_kwargs text NOT NULL);
CREATE INDEX datum_resource ON datum (resource, id);
CREATE TABLE event_page (
    id bigserial PRIMARY KEY, descriptor text NOT NULL, n integer NOT NULL,
    seq_min bigint NOT NULL, seq_max bigint NOT NULL, sealed boolean NOT NULL,
    seq_num bytea NOT NULL, time bytea NOT NULL, uid text NOT NULL);
CREATE INDEX event_page_range ON event_page (descriptor, seq_min, id);
CREATE INDEX event_page_open ON event_page (descriptor) WHERE NOT sealed;
CREATE TABLE page_column (
    page_id bigint NOT NULL, field text NOT NULL, codec text NOT NULL, data bytea NOT NULL,
    ts_codec text NOT NULL, ts bytea NOT NULL, PRIMARY KEY (page_id, field));
ALTER TABLE event_page ALTER COLUMN seq_num SET STORAGE EXTERNAL,
    ALTER COLUMN time SET STORAGE EXTERNAL;
ALTER TABLE page_column ALTER COLUMN data SET STORAGE EXTERNAL,
    ALTER COLUMN ts SET STORAGE EXTERNAL;
CREATE TABLE event_uid (uid text PRIMARY KEY);
CREATE TABLE resource_update (
    id bigserial PRIMARY KEY, resource text NOT NULL, time double precision NOT NULL,
    cmd text NOT NULL, cmd_kwargs text NOT NULL, old text NOT NULL, new text NOT NULL);
CREATE INDEX resource_update_resource ON resource_update (resource, id);
CREATE TABLE stream_resource (
    id bigserial PRIMARY KEY, uid text NOT NULL UNIQUE, run_start text, data_key text,
    doc text NOT NULL);
CREATE INDEX stream_resource_run ON stream_resource (run_start, id);
CREATE TABLE stream_datum (
    id bigserial PRIMARY KEY, uid text NOT NULL UNIQUE, stream_resource text NOT NULL,
    descriptor text NOT NULL, seq_start bigint NOT NULL, seq_stop bigint NOT NULL,
    doc text NOT NULL);
CREATE INDEX stream_datum_descriptor ON stream_datum (descriptor, id);
CREATE INDEX stream_datum_resource ON stream_datum (stream_resource, id);
"""

#: version -> what makes it from the version before: DDL, or a function of the connection
#: (version 2: datum pages, see :mod:`.datum`; version 1's datum rows become pages).
MIGRATIONS: dict[int, str | Callable[[Any], None]] = {1: _V1, 2: datum.migrate_rows}
#: The layout this dask_broker writes.
SCHEMA_VERSION = max(MIGRATIONS)
#: The tables of a catalog (a schema holding some of them but no ``meta`` is not one).
TABLES = ("meta", "run_start", "run_stop", "descriptor", "resource", "datum", "datum_page",
          "datum_key", "event_page", "page_column", "event_uid", "resource_update",
          "stream_resource", "stream_datum")

#: Advisory lock key (with the schema's name) held while creating or migrating.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('dask_broker schema ' || current_schema()))"


def _statements(ddl: str):
    return (s.strip() for s in ddl.split(";") if s.strip())


def _current_schema(conn) -> str | None:
    (name,) = conn.execute("SELECT current_schema()").fetchone()
    return name


def schema_version(conn, where: str) -> int | None:
    """The catalog's schema version; None where the schema holds no catalog yet.

    Raises StoreURIError where the schema holds tables of another application
    under our names (a catalog created there would mix with them).
    """
    schema = _current_schema(conn)
    if schema is None:
        return None
    found = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND table_name = ANY(%s)", (schema, list(TABLES)))}
    if "meta" not in found:
        if found:
            raise StoreURIError(
                f"the schema {schema!r} of {where} holds tables named like a dask_broker "
                f"catalog's ({', '.join(sorted(found))}) but is not one (it has no 'meta' "
                "table); put the catalog in another schema (?options=-csearch_path%3Dname)")
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise CatalogVersionError(
            f"the catalog at {where} (schema {schema!r}) has no readable schema version "
            f"({None if row is None else row[0]!r} in its meta table)") from None


def check_version(found: int, where: str) -> None:
    """Refuse a catalog written by a newer dask_broker, naming both versions."""
    if found > SCHEMA_VERSION:
        from ... import __version__

        raise CatalogVersionError(
            f"the catalog at {where} has schema version {found}, written by a newer "
            f"dask_broker; this dask_broker ({__version__}) reads schema versions up to "
            f"{SCHEMA_VERSION}: upgrade dask_broker to open it")


def create_or_migrate(conn, where: str) -> int | None:
    """Create the catalog's tables, or migrate an older catalog; returns the version found.

    A catalog already at :data:`SCHEMA_VERSION` costs one query.  Otherwise one
    transaction, under an advisory lock on the schema, reads the version again,
    runs the missing migrations and records the version.
    """
    found = schema_version(conn, where)
    if found is not None:
        check_version(found, where)
        if found == SCHEMA_VERSION:
            return found
    import psycopg

    try:
        with conn.transaction():
            conn.execute(_LOCK_SQL)
            found = schema_version(conn, where)
            if found is not None:
                check_version(found, where)
            for version in sorted(MIGRATIONS):
                if found is None or version > found:
                    step = MIGRATIONS[version]
                    if callable(step):
                        step(conn)
                    else:
                        for statement in _statements(step):
                            conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
    except psycopg.errors.InvalidSchemaName as err:
        raise StoreURIError(
            f"no schema to create the catalog in at {where}: {err}; create the schema named "
            "in the URI's search_path first (CREATE SCHEMA name)") from None
    except psycopg.errors.InsufficientPrivilege as err:
        raise StoreURIError(
            f"cannot create the catalog's tables at {where}: {err}; ask for CREATE on the "
            "schema, or have its owner open the catalog once") from None
    return found


def check_existing(conn, where: str) -> int:
    """The version of an existing catalog (read-only opens, workers): never creates one."""
    found = schema_version(conn, where)
    if found is None:
        raise StoreURIError(
            f"there is no dask_broker catalog at {where} (schema "
            f"{_current_schema(conn)!r}); a process that opens a catalog by its URI -- a Dask "
            "worker, an unpickled store, a read-only open -- does not create one")
    check_version(found, where)
    if found < SCHEMA_VERSION:
        raise CatalogVersionError(
            f"the catalog at {where} has schema version {found}, older than this "
            f"dask_broker's {SCHEMA_VERSION}: open it once for writing to migrate it")
    return found
