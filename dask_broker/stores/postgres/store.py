"""The PostgreSQL store: one shared catalog for a cluster.

Every process -- writers on several machines, Dask workers, notebooks -- opens
the same catalog by its URI; the tables are those of :mod:`.schema`, the
connections those of :mod:`.connection`, event pages as in :mod:`.writes` and
:mod:`.reads`, searches as in :mod:`.search`.

Every write is one transaction: a call that raises leaves nothing behind, a
call that has returned is committed (and survives the writer being killed).
Reads that return iterators (runs, pages, datum) read one consistent snapshot
(``REPEATABLE READ``) on a connection of their own.
"""

from __future__ import annotations

import itertools
import json
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ...codec import dumps
from ...errors import (
    DocumentValidationError,
    DuplicateUidError,
    ReadOnlyCatalogError,
    RunAlreadyStoppedError,
    StoreURIError,
    UnknownReferenceError,
)
from ...query import parse_query
from ...text_search import parse_text
from ...redact import mask_uri
from ..base import (
    EventPageColumns,
    Store,
    check_resource_changes,
    chunked,
    first_repeat,
)
from ..pages import SEQ_RUN_COLUMNS, seq_runs
from . import datum, schema
from .connection import ConnectionPool
from .reads import read_pages
from .search import exact_number, search_copy, where_clause
from .uri import SCHEMES, parse_postgres_uri, with_read_only
from .writes import write_event_pages

__all__ = ["PostgresStore"]

#: Values per ``= ANY(%s)`` array parameter.
_IN_CHUNK = 10_000
_cursor_names = itertools.count()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class PostgresStore(Store):
    """A catalog in a PostgreSQL database, shared by every process that opens its URI.

    Parameters
    ----------
    uri
        ``postgresql://user@host:5432/dbname`` (also ``postgres://`` and
        ``postgresql+psycopg://``; ``?host=/path/to/socket-dir`` for a Unix socket;
        ``?mode=ro`` to open read-only).  The database must exist; the catalog's
        tables are created in it (in the first schema of the search path) on first open.
    read_only
        Never create, migrate or write; a write raises
        :class:`~dask_broker.errors.ReadOnlyCatalogError`.  Dask workers open
        catalogs this way.
    create
        Create the tables where there is no catalog yet (else StoreURIError).

    Examples
    --------
    >>> store = PostgresStore.from_uri("postgresql://alice@db:5432/catalog")  # doctest: +SKIP
    """

    schemes = SCHEMES
    supports_stream_data = True

    def __init__(self, uri: str, *, read_only: bool = False, create: bool = True):
        self._target = parse_postgres_uri(uri)
        self._read_only = bool(read_only) or self._target.read_only
        self._uri = with_read_only(uri) if self._read_only else uri
        self._pool = ConnectionPool(self._target, read_only=self._read_only)
        weakref.finalize(self, self._pool.close)
        with self._conn() as conn:
            if self._read_only:
                schema.check_existing(conn, self.display_uri)
            elif not create and schema.schema_version(conn, self.display_uri) is None:
                schema.check_existing(conn, self.display_uri)  # raises: there is no catalog
            else:
                schema.create_or_migrate(conn, self.display_uri)

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "PostgresStore":
        return cls(uri, **kwargs)

    @classmethod
    def open_existing(cls, uri: str, **kwargs: Any) -> "PostgresStore":
        """Open the catalog at ``uri``, which must exist (never create an empty one)."""
        return cls(uri, create=False, **kwargs)

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def read_only(self) -> bool:
        """Whether writes are refused."""
        return self._read_only

    def _ref_options(self) -> tuple[tuple[str, Any], ...]:
        # What tasks carry: workers only read, so they open the catalog read-only.
        return (("read_only", True),)

    def close(self) -> None:
        """Close this process's idle connections (the store re-connects on use)."""
        self._pool.close()

    # ------------------------------------------------------------ connections
    @contextmanager
    def _conn(self) -> Iterator:
        """A connection for one operation; a lost server is a StoreURIError naming it."""
        import psycopg

        with self._pool.connection() as conn:
            try:
                yield conn
            except psycopg.OperationalError as err:
                raise StoreURIError(
                    f"the PostgreSQL server at {self._target.where} failed (catalog "
                    f"{self.display_uri}): {' '.join(mask_uri(str(err)).split())}") from err

    @contextmanager
    def _write(self) -> Iterator:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        import psycopg

        if self._read_only:
            raise ReadOnlyCatalogError(
                f"the catalog {self.display_uri} is read-only: it was opened read-only "
                "(read_only=True or ?mode=ro in its URI); nothing was written (open it "
                "without them to write)")
        with self._conn() as conn:
            try:
                with conn.transaction():
                    yield conn
            except psycopg.errors.UniqueViolation:
                raise  # the callers name the duplicate document
            except psycopg.errors.IntegrityError as err:
                raise DocumentValidationError(
                    f"the catalog {self.display_uri} refused a document ({err.diag.message_primary}"
                    "); nothing of it was written") from err
            except (psycopg.errors.ReadOnlySqlTransaction,
                    psycopg.errors.InsufficientPrivilege) as err:
                raise ReadOnlyCatalogError(
                    f"the PostgreSQL server refused a write to the catalog {self.display_uri}: "
                    f"{err}; nothing was written (ask for INSERT and UPDATE on its tables)"
                ) from err
            except (psycopg.DataError, UnicodeEncodeError) as err:
                raise DocumentValidationError(
                    f"PostgreSQL cannot hold a value of this document ({err}); nothing was "
                    f"written to {self.display_uri}") from err
            except psycopg.OperationalError:
                raise
            except psycopg.Error as err:
                raise StoreURIError(
                    f"writing to the catalog {self.display_uri} failed: {err}; nothing of "
                    "this document was written") from err

    def _rows(self, sql: str, params: Sequence = (), *, binary: bool = False) -> list[tuple]:
        with self._conn() as conn:
            return conn.cursor(binary=binary).execute(sql, params).fetchall()

    @contextmanager
    def _snapshot(self) -> Iterator:
        """A connection holding one read-only REPEATABLE READ transaction."""
        with self._conn() as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn

    def _stream(self, sql: str, params: Sequence = (), size: int = 256) -> Iterator[tuple]:
        """Rows of one query read in batches through a server-side cursor (a snapshot)."""
        with self._snapshot() as conn:
            with conn.cursor(name=f"dask_broker_{next(_cursor_names)}") as cur:
                cur.itersize = size
                cur.execute(sql, params)
                yield from cur

    # ------------------------------------------------------------------ writes
    def _insert_unique(self, sql: str, params: Sequence, doc_type: str, uid: str) -> None:
        import psycopg

        try:
            with self._write() as conn:
                conn.execute(sql, params)
        except psycopg.errors.UniqueViolation as err:
            raise DuplicateUidError(
                f"{doc_type} {uid!r} is already stored; documents are immutable, "
                "so give the new document a new uid") from err

    def insert_start(self, doc: Mapping) -> None:
        text = dumps(doc)
        plain = json.loads(text)
        search, exact = search_copy(plain)
        self._insert_unique(
            "INSERT INTO run_start (uid, time, scan_id, exact, search, doc) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
            (str(doc["uid"]), exact_number(plain.get("time")), exact_number(plain.get("scan_id")),
             exact, search, text),
            "start", doc["uid"])

    def insert_stop(self, doc: Mapping) -> None:
        import psycopg

        try:
            with self._write() as conn:
                conn.execute("INSERT INTO run_stop (uid, run_start, doc) VALUES (%s, %s, %s)",
                             (doc["uid"], doc["run_start"], dumps(doc)))
        except psycopg.errors.UniqueViolation as err:
            if err.diag.constraint_name == "run_stop_one_per_run":
                raise RunAlreadyStoppedError(
                    f"stop {doc['uid']!r}: run {doc['run_start']!r} already has a stop "
                    "document; a run is stopped once") from err
            raise DuplicateUidError(f"stop {doc['uid']!r} is already stored") from err

    def insert_descriptor(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO descriptor (uid, run_start, name, doc) VALUES (%s, %s, %s, %s)",
            (doc["uid"], doc["run_start"], doc.get("name", "primary"), dumps(doc)),
            "descriptor", doc["uid"])

    def insert_resource(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO resource (uid, run_start, root, resource_path, doc) "
            "VALUES (%s, %s, %s, %s, %s)",
            (doc["uid"], doc.get("run_start"), _text(doc.get("root")),
             _text(doc.get("resource_path")), dumps(doc)),
            "resource", doc["uid"])

    def insert_datum_page(self, page: Mapping) -> None:
        """Store a datum_page as one page (see :mod:`.datum`)."""
        with self._write() as conn:
            datum.insert_page(conn, page)

    def insert_stream_resource(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO stream_resource (uid, run_start, data_key, doc) "
            "VALUES (%s, %s, %s, %s)",
            (doc["uid"], doc.get("run_start"), _text(doc.get("data_key")), dumps(doc)),
            "stream_resource", doc["uid"])

    def insert_stream_datums(self, docs: Sequence[Mapping]) -> None:
        import psycopg

        if not docs:
            return
        cols = list(zip(*[(d["uid"], d["stream_resource"], d["descriptor"],
                           d["seq_nums"]["start"], d["seq_nums"]["stop"], dumps(d))
                          for d in docs]))
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO stream_datum (uid, stream_resource, descriptor, seq_start, "
                    "seq_stop, doc) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], "
                    "%s::bigint[], %s::bigint[], %s::text[])", [list(c) for c in cols])
        except psycopg.errors.UniqueViolation as err:
            dup = self._first_duplicate("stream_datum", "uid", [d["uid"] for d in docs])
            raise DuplicateUidError(
                f"stream_datum {dup!r} is already stored; nothing of these {len(docs)} "
                "stream_datum was written") from err

    def insert_event_page(self, page: Mapping) -> None:
        self.insert_event_pages([page])

    def insert_event_pages(self, pages: Sequence[Mapping]) -> None:
        import psycopg

        pages = [p for p in pages if len(p["seq_num"])]
        if not pages:
            return
        try:
            with self._write() as conn:
                write_event_pages(conn, pages)
        except psycopg.errors.UniqueViolation as err:
            uids = [u for page in pages for u in page["uid"]]
            dup = self._first_duplicate("event_uid", "uid", uids)
            descriptor = next(p["descriptor"] for p in pages if dup in p["uid"])
            raise DuplicateUidError(
                f"event {dup!r} (descriptor {descriptor!r}) is already stored; "
                f"nothing of these {len(uids)} events was written") from err

    def _first_duplicate(self, table: str, column: str, ids: Sequence[str]) -> str:
        repeated = first_repeat(ids)
        if repeated is not None:
            return repeated
        for chunk in chunked(list(ids), _IN_CHUNK):
            rows = self._rows(f"SELECT {column} FROM {table} WHERE {column} = ANY(%s) LIMIT 1",
                              (list(chunk),))
            if rows:
                return rows[0][0]
        return ids[0]

    def update_resource(self, resource_uid: str, changes: Mapping, *, cmd: str,
                        cmd_kwargs: Mapping) -> dict:
        changes = check_resource_changes(resource_uid, changes)
        with self._write() as conn:
            table = "resource"
            row = conn.execute("SELECT doc FROM resource WHERE uid = %s FOR UPDATE",
                               (resource_uid,)).fetchone()
            if row is None:
                table = "stream_resource"
                row = conn.execute("SELECT doc FROM stream_resource WHERE uid = %s FOR UPDATE",
                                   (resource_uid,)).fetchone()
            if row is None:
                raise UnknownReferenceError(
                    f"no resource or stream_resource with uid {resource_uid!r} in "
                    f"{self.display_uri}; nothing was updated")
            new = {**json.loads(row[0]), **changes}
            text = dumps(new)
            if table == "resource":
                conn.execute("UPDATE resource SET doc = %s, root = %s, resource_path = %s "
                             "WHERE uid = %s", (text, _text(new.get("root")),
                                                _text(new.get("resource_path")), resource_uid))
            else:
                conn.execute("UPDATE stream_resource SET doc = %s, data_key = %s WHERE uid = %s",
                             (text, _text(new.get("data_key")), resource_uid))
            conn.execute(
                "INSERT INTO resource_update (resource, time, cmd, cmd_kwargs, old, new) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (resource_uid, time.time(), cmd, dumps(dict(cmd_kwargs)), row[0], text))
        return json.loads(text)

    # ------------------------------------------------------------------ reads
    def _one_doc(self, sql: str, params: Sequence) -> dict | None:
        rows = self._rows(sql, params)
        return json.loads(rows[0][0]) if rows else None

    def _docs(self, sql: str, params: Sequence) -> list[dict]:
        return [json.loads(r[0]) for r in self._rows(sql, params)]

    def get_start(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM run_start WHERE uid = %s", (uid,))

    def start_uids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        rows = self._rows("SELECT uid FROM run_start WHERE uid >= %s AND uid < %s "
                          "ORDER BY uid LIMIT %s", (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in rows]

    def iter_starts(self) -> Iterator[dict]:
        return self._starts("", [])

    def _starts(self, where: str, params: list) -> Iterator[dict]:
        for (doc,) in self._stream(
                f"SELECT doc FROM run_start {where} ORDER BY time DESC NULLS LAST, id DESC",
                params):
            yield json.loads(doc)

    def search(self, query: Mapping | None = None, *, text: str | None = None
               ) -> Iterator[dict]:
        """Like :meth:`Store.search`: the query's simple conditions in SQL (see
        :mod:`~dask_broker.stores.postgres.search`), :meth:`Query.match
        <dask_broker.query.Query.match>` decides; ``text`` (full-text search) is
        decided in Python by :meth:`TextSearch.match
        <dask_broker.text_search.TextSearch.match>` (no full-text index yet)."""
        query = parse_query(query)  # checked here, before the first row is read
        search = parse_text(text)
        where, params = where_clause(query)
        return (doc for doc in self._starts(where, params)
                if query.match(doc) and (search is None or search.match(doc)))

    def count_starts(self) -> int:
        return self._rows("SELECT COUNT(*) FROM run_start")[0][0]

    def get_stop(self, run_uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM run_stop WHERE run_start = %s", (run_uid,))

    def get_descriptor(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM descriptor WHERE uid = %s", (uid,))

    def descriptors(self, run_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM descriptor WHERE run_start = %s ORDER BY id",
                          (run_uid,))

    def get_resource(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM resource WHERE uid = %s", (uid,))

    def find_resources(self, *, root: str | None, resource_path: str | None) -> list[dict]:
        return self._docs(
            "SELECT doc FROM resource WHERE resource_path IS NOT DISTINCT FROM %s "
            "AND COALESCE(root, '') = COALESCE(%s, '') ORDER BY id", (resource_path, root))

    def resources(self, run_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM resource WHERE run_start = %s ORDER BY id", (run_uid,))

    def iter_resources(self) -> Iterator[dict]:
        return (json.loads(doc) for (doc,) in self._stream("SELECT doc FROM resource ORDER BY id"))

    def resource_history(self, resource_uid: str) -> list[dict]:
        rows = self._rows(
            "SELECT time, cmd, cmd_kwargs, old, new FROM resource_update WHERE resource = %s "
            "ORDER BY id", (resource_uid,))
        return [{"resource": resource_uid, "old": json.loads(old), "new": json.loads(new),
                 "time": t, "cmd": cmd, "cmd_kwargs": json.loads(kwargs)}
                for t, cmd, kwargs, old, new in rows]

    def get_stream_resource(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM stream_resource WHERE uid = %s", (uid,))

    def stream_resources(self, run_uid: str) -> list[dict]:
        return self._docs(
            "SELECT doc FROM stream_resource WHERE run_start = %s OR uid IN ("
            " SELECT sd.stream_resource FROM stream_datum sd JOIN descriptor d"
            " ON sd.descriptor = d.uid WHERE d.run_start = %s) ORDER BY id", (run_uid, run_uid))

    def stream_datums(self, descriptor_uids: Sequence[str]) -> list[dict]:
        return self._docs("SELECT doc FROM stream_datum WHERE descriptor = ANY(%s) ORDER BY id",
                          (list(descriptor_uids),))

    def stream_datums_of_resource(self, stream_resource_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM stream_datum WHERE stream_resource = %s ORDER BY id",
                          (stream_resource_uid,))

    def iter_stream_resources(self) -> Iterator[dict]:
        return (json.loads(doc)
                for (doc,) in self._stream("SELECT doc FROM stream_resource ORDER BY id"))

    def datum(self, datum_ids: Sequence[str]) -> dict[str, dict]:
        with self._snapshot() as conn:
            return datum.find(conn, datum_ids)

    def datum_of_resource(self, resource_uid: str) -> Iterator[dict]:
        return datum.datum_of_rows(self._stream(
            "SELECT n, datum_id, datum_kwargs FROM datum_page WHERE resource = %s ORDER BY id",
            (resource_uid,), size=16), resource_uid)

    def event_counts(self, descriptor_uids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        rows = self._rows(
            "SELECT descriptor, SUM(n), MIN(seq_min), MAX(seq_max) FROM event_page "
            "WHERE descriptor = ANY(%s) GROUP BY descriptor", (list(descriptor_uids),))
        return {desc: (int(n), int(lo), int(hi)) for desc, n, lo, hi in rows}

    def seq_num_runs(self, descriptor_uids: Sequence[str]) -> list[tuple[int, int, int]]:
        """From page metadata; only pages whose seq_nums are not consecutive are decoded."""
        return sorted(seq_runs(self._rows(
            f"SELECT {SEQ_RUN_COLUMNS} FROM event_page WHERE descriptor = ANY(%s)",
            (list(descriptor_uids),), binary=True)))

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
            yield from read_pages(conn, list(descriptor_uids), seq_range=seq_range,
                                  fields=None if fields is None else list(fields),
                                  timestamps=timestamps, uids=uids, where=self.display_uri)
