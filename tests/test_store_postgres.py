"""PostgresStore: the shipped conformance suite, URIs, errors, schema versions, searches
in SQL, concurrency (several writer processes), fork safety."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import pickle
import socket
import sys
import time
import uuid
from decimal import Decimal

import event_model
import pytest

psycopg = pytest.importorskip("psycopg")

from dask_broker import Broker  # noqa: E402
from dask_broker.errors import (  # noqa: E402
    CatalogVersionError,
    DocumentValidationError,
    ReadOnlyCatalogError,
    StoreURIError,
)
from dask_broker.query import parse_query  # noqa: E402
from dask_broker.stores import open_store  # noqa: E402
from dask_broker.testing import StoreConformance  # noqa: E402
from dask_broker.stores.postgres import PostgresStore, parse_postgres_uri, schema  # noqa: E402
from dask_broker.stores.postgres.search import where_clause  # noqa: E402
from dask_broker.stores.postgres.uri import DEFAULT_CONNECT_TIMEOUT_S  # noqa: E402

pytestmark = pytest.mark.postgres


class TestPostgresStoreConformance(StoreConformance):
    @pytest.fixture
    def make_store(self, postgres_uri):
        return PostgresStore.from_uri(postgres_uri)


# ---------------------------------------------------------------- helpers
def _run(**metadata):
    return event_model.compose_run(metadata=metadata or None)


def _descriptor(run, name="primary"):
    return run.compose_descriptor(name=name, data_keys={
        "x": {"source": "s", "dtype": "number", "shape": []},
        "label": {"source": "s", "dtype": "string", "shape": []}})


def _event(desc, seq_num):
    return desc.compose_event(data={"x": seq_num * 0.5, "label": f"e{seq_num}"},
                              timestamps={"x": 1.0, "label": 1.0}, seq_num=seq_num)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sessions(server, name: str) -> int:
    with server.connect() as conn:
        return conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s",
                            (name,)).fetchone()[0]


def _schema_of(uri: str) -> str:
    return uri.rpartition("application_name=")[2]


# ---------------------------------------------------------------- URIs
def test_uri_schemes_open_the_same_catalog(postgres_uri):
    db = Broker.from_uri(postgres_uri)
    run = _run(scan_id=3)
    db.insert("start", run.start_doc)
    scheme, rest = postgres_uri.split("://", 1)
    assert scheme == "postgresql"
    for other in ("postgres", "postgresql+psycopg"):
        db2 = Broker.from_uri(f"{other}://{rest}")
        assert isinstance(db2.store, PostgresStore)
        assert db2.uri == f"{other}://{rest}"
        assert db2[-1].start == run.start_doc
    assert open_store(postgres_uri).get_start(run.start_doc["uid"]) == run.start_doc
    assert "?host=/" in postgres_uri  # the session's server is reached by its Unix socket


def test_parse_uri_keeps_libpq_parameters_and_takes_out_mode():
    p = parse_postgres_uri("postgresql://alice:s3cret@db:5433/cat?sslmode=require&mode=ro"
                           "&options=-csearch_path%3Dbl1")
    assert p.read_only and p.where == "db:5433" and p.dbname == "cat"
    assert p.conninfo == ("postgresql://alice:s3cret@db:5433/cat?sslmode=require"
                          "&options=-csearch_path%3Dbl1")
    assert "s3cret" not in repr(p)
    assert dict(p.connect_kwargs) == {"connect_timeout": DEFAULT_CONNECT_TIMEOUT_S,
                                      "application_name": "dask_broker"}
    p = parse_postgres_uri("postgres://db/cat?connect_timeout=9&application_name=me")
    assert p.connect_kwargs == () and not p.read_only


@pytest.mark.parametrize("uri, words", [
    ("postgresql://alice:s3cret@db:port/cat", "not a valid PostgreSQL URI"),
    ("postgresql://alice:s3cret@db:70000/cat", "not a valid PostgreSQL URI"),
    ("postgresql://alice:s3cret@db/cat?bogus=1", "not a valid PostgreSQL URI"),
    ("postgresql://alice:s3cret@db/cat?mode=rw", "the only mode is 'ro'"),
    ("mysql://alice:s3cret@db/cat", "no store for the URI"),
])
def test_bad_uris_name_the_problem_without_the_password(uri, words):
    with pytest.raises(StoreURIError) as info:
        Broker.from_uri(uri)
    assert words in str(info.value)
    assert "s3cret" not in str(info.value) and "alice:***@db" in str(info.value)


def test_read_only_catalog(postgres_uri):
    db = Broker.from_uri(postgres_uri)
    run = _run()
    db.insert("start", run.start_doc)
    reader = Broker.from_uri(postgres_uri + "&mode=ro")
    assert reader.store.read_only and reader.uri.endswith("mode=ro")
    assert reader[-1].start == run.start_doc
    with pytest.raises(ReadOnlyCatalogError, match="read-only"):
        reader.insert("start", _run().start_doc)
    assert pickle.loads(pickle.dumps(reader.store)).read_only
    # what Dask tasks carry: the catalog, opened read-only by the worker
    ref = db.store.ref
    assert ref.uri == postgres_uri and dict(ref.options) == {"read_only": True}
    assert ref.open().read_only and ref.open().get_start(run.start_doc["uid"]) == run.start_doc
    # the server refuses writes on a read-only session too (not only dask_broker)
    with reader.store._conn() as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO meta VALUES ('x', 'y')")


def test_workers_never_create_a_catalog(new_postgres_uri):
    uri = new_postgres_uri()
    for open_ in (PostgresStore.open_existing, lambda u: PostgresStore(u, read_only=True)):
        with pytest.raises(StoreURIError, match="there is no dask_broker catalog"):
            open_(uri)
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT COUNT(*) FROM information_schema.tables "
                            "WHERE table_schema = current_schema()").fetchone()[0] == 0


def test_display_uri_masks_the_password(postgres_uri):
    # the session's server trusts local connections, so a password is accepted and ignored
    uri = postgres_uri.replace("postgres:@", "postgres:s3cret@")
    store = PostgresStore.from_uri(uri)
    assert store.uri == uri
    assert "s3cret" not in repr(store) and "postgres:***@" in repr(store)
    assert "s3cret" not in repr(store.ref)


def test_without_psycopg_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg.conninfo", None)  # import fails
    with pytest.raises(StoreURIError, match=r"pip install 'dask_broker\[postgres\]'"):
        Broker.from_uri("postgresql://alice:s3cret@db/catalog")


# ---------------------------------------------------------------- faults
def test_closed_port_is_a_clear_error_at_once():
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(StoreURIError) as info:
        Broker.from_uri(f"postgresql://alice:s3cret@127.0.0.1:{port}/cat")
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert f"cannot connect to the PostgreSQL server at 127.0.0.1:{port}" in message
    assert "s3cret" not in message and "alice:***@" in message


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_a_server_that_does_not_answer_is_an_error_within_connect_timeout(silent_server):
    t0 = time.monotonic()
    with pytest.raises(StoreURIError) as info:
        PostgresStore.from_uri(f"postgresql://alice:s3cret@{silent_server}/cat?connect_timeout=2")
    elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 10, elapsed
    message = str(info.value)
    assert f"at {silent_server}" in message and "timeout" in message
    assert "s3cret" not in message


@pytest.mark.slow
def test_default_connect_timeout(silent_server):
    t0 = time.monotonic()
    with pytest.raises(StoreURIError, match=silent_server):
        PostgresStore.from_uri(f"postgresql://{silent_server}/cat")
    assert time.monotonic() - t0 < DEFAULT_CONNECT_TIMEOUT_S * 2 + 2


def test_missing_database_says_to_create_it(postgres_server):
    uri = postgres_server.base.replace("/dask_broker_test?", "/no_such_db?")
    with pytest.raises(StoreURIError, match="create the database first"):
        Broker.from_uri(uri)


def test_missing_schema_says_to_create_it(postgres_server):
    with pytest.raises(StoreURIError, match="CREATE SCHEMA"):
        PostgresStore.from_uri(postgres_server.uri("no_such_schema"))


def test_connections_closed_by_the_server_are_replaced(postgres_uri, postgres_server):
    store = PostgresStore.from_uri(postgres_uri)
    run = _run()
    store.insert_start(run.start_doc)
    name = _schema_of(postgres_uri)
    with postgres_server.connect() as conn:  # as a server restart or an admin would
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = %s", (name,))
    deadline = time.monotonic() + 30
    while _sessions(postgres_server, name) and time.monotonic() < deadline:
        time.sleep(0.05)  # the sessions end (and close their sockets) a moment later
    assert store.get_start(run.start_doc["uid"]) == run.start_doc
    store.insert_stop(run.compose_stop())


def test_close_releases_the_connections(postgres_uri, postgres_server):
    store = PostgresStore.from_uri(postgres_uri)
    name = _schema_of(postgres_uri)
    pages = store.iter_starts()
    store.get_start("x")
    assert _sessions(postgres_server, name) >= 1
    store.close()
    assert _sessions(postgres_server, name) == 0
    assert list(pages) == [] and store.get_start("x") is None  # usable again


def test_values_postgresql_text_cannot_hold_are_refused_and_nothing_is_written(postgres_uri):
    db = Broker.from_uri(postgres_uri)
    run = _run()
    db.insert("start", run.start_doc)
    desc = _descriptor(run, name="bad\x00name")
    with pytest.raises(DocumentValidationError, match="PostgreSQL cannot hold"):
        db.store.insert_descriptor(desc.descriptor_doc)
    assert db.store.descriptors(run.start_doc["uid"]) == []


# ---------------------------------------------------------------- schema versions
def _meta_version(uri) -> str:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


def test_new_catalog_records_its_schema_version(postgres_uri):
    PostgresStore.from_uri(postgres_uri)
    assert _meta_version(postgres_uri) == str(schema.SCHEMA_VERSION)


def test_newer_catalog_is_refused_naming_both_versions(postgres_uri):
    PostgresStore.from_uri(postgres_uri).close()
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for kwargs in ({}, {"read_only": True}):
        with pytest.raises(CatalogVersionError) as info:
            PostgresStore.from_uri(postgres_uri, **kwargs)
        assert "schema version 99" in str(info.value)
        assert f"up to {schema.SCHEMA_VERSION}" in str(info.value)
    assert _meta_version(postgres_uri) == "99"


def test_migration_runs_once_and_read_only_opens_refuse_to_migrate(postgres_uri, monkeypatch):
    PostgresStore.from_uri(postgres_uri).insert_start(_run().start_doc)
    v2 = schema.SCHEMA_VERSION + 1
    monkeypatch.setitem(schema.MIGRATIONS, v2, "CREATE TABLE added_in_v2 (x integer)")
    monkeypatch.setattr(schema, "SCHEMA_VERSION", v2)
    with pytest.raises(CatalogVersionError, match="open it once for writing"):
        PostgresStore.from_uri(postgres_uri, read_only=True)
    store = PostgresStore.from_uri(postgres_uri)
    assert _meta_version(postgres_uri) == str(v2)
    assert store.count_starts() == 1
    with psycopg.connect(postgres_uri) as conn:
        assert conn.execute("SELECT COUNT(*) FROM added_in_v2").fetchone() == (0,)
    PostgresStore.from_uri(postgres_uri, read_only=True)  # now it opens


def test_a_schema_holding_other_tables_named_like_ours_is_refused(postgres_uri):
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE descriptor (x integer)")
    with pytest.raises(StoreURIError, match="is not one"):
        PostgresStore.from_uri(postgres_uri)


def _open_and_count(uri: str) -> int:
    return PostgresStore.from_uri(uri).count_starts()


def test_processes_creating_one_catalog_at_once(postgres_uri):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        assert pool.map(_open_and_count, [postgres_uri] * 4) == [0] * 4
    assert _meta_version(postgres_uri) == str(schema.SCHEMA_VERSION)


# ---------------------------------------------------------------- values and searches
def test_documents_come_back_as_written(postgres_uri):
    """Key order, floats that jsonb would turn into integers, NaN, -0.0, big ints, NUL."""
    store = PostgresStore.from_uri(postgres_uri)
    run = _run(sample={"b": 1, "a": {"z": 0, "y": 1}}, big=1e300, nan=float("nan"),
               neg=-0.0, huge=2**70, text="a\x00b", inf=float("-inf"))
    store.insert_start(run.start_doc)
    got = store.get_start(run.start_doc["uid"])
    assert json.dumps(got) == json.dumps(run.start_doc)  # the same text: key order kept
    assert type(got["big"]) is float and math.isnan(got["nan"])
    assert math.copysign(1, got["neg"]) == -1 and got["huge"] == 2**70
    # embedded documents equal key by key, in order (MongoDB's rule) on every store
    assert [d["uid"] for d in store.search({"sample": {"b": 1, "a": {"z": 0, "y": 1}}})] == \
        [run.start_doc["uid"]]
    assert list(store.search({"sample": {"a": {"y": 1, "z": 0}, "b": 1}})) == []


_TRICKY = [
    {"scan_id": 2**53 + 1, "label": "é", "samples": [{"name": "Ge"}, {"name": "Si"}]},
    {"scan_id": 2**63 - 1, "label": "z", "tags": ["a", "b"], "big": 1e300},
    {"scan_id": 1.5, "label": "B", "sample": {"name": "Si", "mass": 2}},
    {"scan_id": "7", "label": "a\x00b", "tags": [["b"]], "neg": -0.0},
    {"scan_id": [1, 7], "label": ["Z", "y"], "flag": True, "big": float("inf")},
    {"scan_id": float("nan"), "flag": 1, "sample": {"name": ["Si", "Cu"]}},
    {"scan_id": 7, "tags": "b", "big": float("-inf")},
    {"label": "a", "samples": {"name": "Si"}, "nested": {"deep": {"er": 3}},
     "é \"q\"": {"ü": "😀"}},
]
_QUERIES = [
    {"scan_id": 2**53 + 1},
    {"scan_id": {"$gt": float(2**53)}},
    {"scan_id": {"$gte": 2**63 - 1}},
    {"scan_id": {"$lt": 2.0}},
    {"scan_id": {"$in": [1, 7, "7"]}},
    {"scan_id": 7},
    {"label": {"$gt": "Z"}},
    {"label": {"$lt": "a\x01"}},
    {"label": {"$in": ["y", "B"]}},
    {"samples.name": "Si"},
    {"sample.name": {"$in": ["Si", "Ge"]}},
    {"tags": "b"},
    {"tags.0": "a"},
    {"big": {"$gt": 1e299}},
    {"big": {"$lt": -1e308}},
    {"neg": 0},
    {"flag": 1},
    {"flag": True},
    {"nested.deep.er": {"$gte": 3, "$lt": 3.5}},
    {"uid": {"$gt": "m"}},
    {"time": {"$gte": 1_700_000_003.0}},
    {"$and": [{"scan_id": {"$gt": 1}}, {"label": {"$exists": True}}]},
    {"$or": [{"scan_id": 7}, {"label": "a"}]},
    {"label": {"$regex": "^[a-z]"}, "scan_id": {"$ne": 7}},
    {"é \"q\".ü": "😀"},
    {"é \"q\".ü": {"$gt": "\ud7ff"}},
]


@pytest.fixture
def tricky_store(postgres_uri):
    store = PostgresStore.from_uri(postgres_uri)
    docs = []
    for i, metadata in enumerate(_TRICKY):
        # as legacy catalogs hold them: not all valid start documents (scan_id 1.5, "7")
        doc = {"uid": f"{i:x}-{uuid.uuid4()}", "time": 1_700_000_000.0 + i, **metadata}
        store.insert_start(doc)
        docs.append(doc)
    return store, docs[::-1]  # newest first


@pytest.mark.parametrize("query", _QUERIES, ids=[repr(q) for q in _QUERIES])
def test_searches_in_sql_find_what_python_finds(tricky_store, query):
    store, docs = tricky_store
    want = [d["uid"] for d in docs if parse_query(query).match(d)]
    assert [d["uid"] for d in store.search(query)] == want


def _candidates(store, query) -> int:
    """How many start documents the server sends for ``query`` (before Python decides)."""
    where, params = where_clause(parse_query(query))
    return sum(1 for _ in store._starts(where, params))


@pytest.mark.parametrize("query, at_most", [
    # each: the matches, and the run with a NUL character (which jsonb cannot hold)
    ({"scan_id": 2**53 + 1}, 2),
    ({"scan_id": {"$in": [1, 7]}}, 3),  # [1, 7] is no number, but the jsonb path finds it
    ({"uid": "nope"}, 0),
    ({"time": {"$gte": 1_700_000_006.0}}, 2),
    ({"samples.name": "Si"}, 3),
    ({"label": {"$in": ["y", "B"]}}, 3),
    ({"nested.deep.er": 3}, 2),
    ({"é \"q\".ü": "😀"}, 2),
])
def test_the_server_narrows_the_candidates(tricky_store, query, at_most):
    store, _ = tricky_store
    assert _candidates(store, query) <= at_most < len(_TRICKY)


def test_where_clause_binds_values():
    where, params = where_clause(parse_query(
        {"scan_id": {"$in": [1, 2.5]}, "uid": "abc", "sample.name": "Si'; DROP TABLE x; --",
         "time": {"$lt": 0.1}}))
    assert "DROP" not in where and "abc" not in where
    assert params == [
        [Decimal(1), Decimal(2.5)], '$."scan_id" ? (@ == 1 || @ == 2.5)',  # NULL: the jsonb
        "abc",
        """$."sample"."name" ? (@ == "Si'; DROP TABLE x; --")""",
        Decimal(0.1), '$."time" ? (@ < 0.1000000000000000055511151231257827021181583404541015625)',
    ]  # the float's exact value, not 0.1


# ---------------------------------------------------------------- concurrency
def _insert_singles(store, desc_doc, lo, hi):
    """In a forked child: insert events lo..hi-1 one by one through the parent's store."""
    for seq in range(lo, hi):
        store.insert_event_page(event_model.pack_event_page(
            {"uid": f"{desc_doc['uid']}-{seq}", "descriptor": desc_doc["uid"], "seq_num": seq,
             "time": float(seq), "data": {"x": seq * 0.5, "label": f"e{seq}"},
             "timestamps": {"x": 1.0, "label": 1.0}}))


def test_forked_writers_on_one_run(postgres_uri):
    """Four forked processes insert single events of one descriptor at once, through the
    store their parent opened (the children connect anew; the parent's sessions live on)."""
    store = PostgresStore.from_uri(postgres_uri)
    run = _run()
    store.insert_start(run.start_doc)
    desc = _descriptor(run)
    store.insert_descriptor(desc.descriptor_doc)
    parent_conn = store._pool._idle[-1]
    ctx = multiprocessing.get_context("fork")
    n = 320  # 4 x 320 > SEAL_EVENTS: the open pages are sealed while others write
    procs = [ctx.Process(target=_insert_singles,
                         args=(store, desc.descriptor_doc, 1 + i * n, 1 + (i + 1) * n))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    # the parent's session lives on: the children neither used nor ended it
    assert store._pool._idle[-1] is parent_conn
    assert parent_conn.execute("SELECT 1").fetchone() == (1,)
    duid = desc.descriptor_doc["uid"]
    assert store.event_counts([duid]) == {duid: (4 * n, 1, 4 * n)}
    seqs = sorted(int(s) for p in store.iter_event_pages([duid]) for s in p.seq_num)
    assert seqs == list(range(1, 4 * n + 1))
    events = [d for name, d in Broker(store)[run.start_doc["uid"]].docs() if name == "event"]
    assert sorted(e["uid"] for e in events) == sorted(f"{duid}-{s}" for s in seqs)
    assert all(e["data"]["x"] == e["seq_num"] * 0.5 for e in events)


def _write_run(uri: str, i: int) -> str:
    db = Broker.from_uri(uri)
    run = _run(scan_id=i)
    db.insert("start", run.start_doc)
    desc = _descriptor(run)
    db.insert("descriptor", desc.descriptor_doc)
    for seq in range(1, 51):
        db.insert("event", _event(desc, seq))
    db.insert("event_page", event_model.pack_event_page(*[_event(desc, s)
                                                          for s in range(51, 2100)]))
    db.insert("stop", run.compose_stop())
    return run.start_doc["uid"]


@pytest.mark.parametrize("start_method", [
    "fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_writer_processes_of_different_runs(postgres_uri, start_method):
    PostgresStore.from_uri(postgres_uri)
    ctx = multiprocessing.get_context(start_method)
    with ctx.Pool(4) as pool:
        uids = pool.starmap(_write_run, [(postgres_uri, i) for i in range(4)])
    db = Broker.from_uri(postgres_uri)
    assert sorted(h.uid for h in db) == sorted(uids)
    for uid in uids:
        table = db[uid].table().compute()
        assert list(table.index) == list(range(1, 2100))
        assert (table["x"] == table.index * 0.5).all()


def _worker_stores():
    from dask_broker.stores import _cache

    return sorted((type(s).__name__, s.read_only) for s in _cache.values())


@pytest.mark.slow
def test_readers_on_dask_workers(postgres_uri):
    """Each worker process opens the catalog read-only, with its own connections."""
    distributed = pytest.importorskip("distributed")
    uid = _write_run(postgres_uri, 1)
    db = Broker.from_uri(postgres_uri)
    ddf = db[uid].table(chunk_size=500)
    assert ddf.npartitions > 2
    want = ddf.compute(scheduler="sync")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        got = ddf.compute()
        stores = client.run(_worker_stores)
    assert got.equals(want)
    assert len(stores) == 2 and all(v == [("PostgresStore", True)] for v in stores.values())


# ---------------------------------------------------------------- command line
def test_cli_reads_a_postgres_catalog_and_creates_none(new_postgres_uri, capsys):
    from dask_broker.cli import main

    uri = new_postgres_uri()
    assert main(["ls", uri]) == 1
    assert "there is no dask_broker catalog" in capsys.readouterr().err
    with psycopg.connect(uri) as conn:  # a typo in a read-only command creates nothing
        assert conn.execute("SELECT to_regclass('meta')").fetchone() == (None,)
    uid = _write_run(uri, 5)
    assert main(["ls", uri]) == 0
    out = capsys.readouterr().out
    assert uid[:8] in out and "primary=2099" in out


def test_pool_reuses_connections_past_fd_setsize(postgres_uri, postgres_server):
    """A long-lived process holds many files: connections whose descriptor is past 1024
    (select()'s limit) are still reused, not closed after every operation."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the process may not open 1,200 files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        store = PostgresStore.from_uri(postgres_uri)
        store.get_start("x")
        assert store._pool._idle and store._pool._idle[-1].fileno() >= 1024
        assert _sessions(postgres_server, _schema_of(postgres_uri)) == 1
        store.get_start("y")
        assert _sessions(postgres_server, _schema_of(postgres_uri)) == 1  # the same one
        store.close()
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
