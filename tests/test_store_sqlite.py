"""The embedded SQLite store: the conformance suite plus SQLite-specific behaviour."""

from __future__ import annotations

import json
import operator
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import event_model
import pytest

from dask_broker import Broker, DaskBrokerError, StoreURIError, open_store
from dask_broker.testing import StoreConformance
from dask_broker.stores.sqlite import SQLiteStore, parse_sqlite_uri


class TestSQLiteStoreConformance(StoreConformance):
    @pytest.fixture
    def make_store(self, tmp_path):
        return SQLiteStore(tmp_path / "catalog.db")


class TestSQLiteStoreFromURIConformance(StoreConformance):
    """The same contract through from_uri, with synchronous=normal."""

    MANY_EVENTS = 1030

    @pytest.fixture
    def make_store(self, tmp_path):
        return SQLiteStore.from_uri(f"sqlite:///{tmp_path}/sub/catalog.db?synchronous=normal")


# ---------------------------------------------------------------- URIs
def test_relative_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, options = parse_sqlite_uri("sqlite:///rel/dir/catalog.db")
    assert path == tmp_path / "rel" / "dir" / "catalog.db"
    assert options == {"synchronous": "full"}
    store = SQLiteStore.from_uri("sqlite:///rel/catalog.db")
    assert store.path == tmp_path / "rel" / "catalog.db"
    assert store.path.exists()
    # the URI of the store is absolute, so another working directory opens the same file
    assert store.uri == f"sqlite:///{tmp_path}/rel/catalog.db"
    assert parse_sqlite_uri(store.uri)[0] == store.path


def test_absolute_uri(tmp_path):
    target = tmp_path / "abs" / "catalog.db"
    uri = f"sqlite:///{target}"
    assert uri.startswith("sqlite:////")
    path, options = parse_sqlite_uri(uri)
    assert path == target
    store = SQLiteStore.from_uri(uri)
    assert store.path == target and target.exists()
    assert store.uri == uri
    assert SQLiteStore.from_uri(store.uri) == store


@pytest.mark.parametrize("sync", ["normal", "NORMAL", "extra", "full"])
def test_synchronous_option(tmp_path, sync):
    uri = f"sqlite:///{tmp_path}/c.db?synchronous={sync}"
    path, options = parse_sqlite_uri(uri)
    assert path == tmp_path / "c.db"
    assert options == {"synchronous": sync.lower()}
    store = SQLiteStore.from_uri(uri)
    # the option survives a round trip through the store's URI (what pickling uses)
    assert parse_sqlite_uri(store.uri)[1] == {"synchronous": sync.lower()}
    levels = {"normal": 1, "full": 2, "extra": 3}
    conn = store._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == levels[sync.lower()]


def test_read_snapshots_keep_a_small_page_cache(tmp_path):
    from dask_broker.stores.sqlite.connection import READ_CACHE_KIB

    store = SQLiteStore.from_uri(f"sqlite:///{tmp_path}/c.db")
    default = store._conn().execute("PRAGMA cache_size").fetchone()[0]
    for _ in range(2):  # a new connection, then the pooled one again
        with store._snapshot() as conn:
            assert conn.execute("PRAGMA cache_size").fetchone()[0] == -READ_CACHE_KIB
    assert -READ_CACHE_KIB > default  # smaller than SQLite's default (negative: KiB)
    assert store._conn().execute("PRAGMA cache_size").fetchone()[0] == default


@pytest.mark.parametrize("uri", [
    "sqlite://catalog.db",
    "sqlite:/catalog.db",
    "sqlite:///",
    "sqlite:///:memory:",
    "sqlite:///?synchronous=full",
    "mysql:///catalog.db",
    "catalog.db",
    "",
    "sqlite:///c.db?synchronous=sometimes",
    "sqlite:///c.db?cache=shared",
])
def test_bad_uri(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreURIError) as info:
        parse_sqlite_uri(uri)
    assert repr(uri) in str(info.value)
    assert isinstance(info.value, DaskBrokerError) and isinstance(info.value, ValueError)
    with pytest.raises(StoreURIError) as info:
        SQLiteStore.from_uri(uri)
    assert repr(uri) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_non_string_uri():
    with pytest.raises(StoreURIError, match="42"):
        parse_sqlite_uri(42)


@pytest.mark.parametrize("uri", ["nosuchscheme:///x.db", "not a uri", "sqlite3:///x.db"])
def test_broker_from_bad_uri_names_it(uri):
    with pytest.raises(StoreURIError) as info:
        Broker.from_uri(uri)
    assert repr(uri) in str(info.value)


def test_broker_from_uri_opens_sqlite(tmp_path):
    db = Broker.from_uri(f"sqlite:///{tmp_path}/cat.db")
    assert isinstance(db.store, SQLiteStore)
    assert db.uri == f"sqlite:///{tmp_path}/cat.db"
    assert open_store(db.uri) == db.store


def test_not_a_catalog(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreURIError, match="junk.db"):
        SQLiteStore.from_uri(f"sqlite:///{junk}")


# ---------------------------------------------------------------- WAL, concurrency
def test_wal_mode(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


_READER = textwrap.dedent("""
    import json, sys
    from dask_broker.stores.sqlite import SQLiteStore
    store = SQLiteStore.from_uri(sys.argv[1])
    starts = [s["uid"] for s in store.iter_starts()]
    descs = store.descriptors(sys.argv[2])
    counts = store.event_counts([d["uid"] for d in descs])
    print(json.dumps({"starts": starts, "counts": {k: list(v) for k, v in counts.items()}}))
""")


def test_other_process_reads_during_write_transaction(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    run = event_model.compose_run()
    store.insert_start(run.start_doc)
    desc = run.compose_descriptor(
        name="primary", data_keys={"x": {"source": "s", "dtype": "number", "shape": []}})
    store.insert_descriptor(desc.descriptor_doc)
    for i in range(3):
        store.insert_event_page(event_model.pack_event_page(
            desc.compose_event(data={"x": float(i)}, timestamps={"x": 0.0})))
    pending = event_model.compose_run()

    # Hold an open write transaction (with an uncommitted start) in this process.
    with store._write() as conn:
        conn.execute("INSERT INTO run_start (uid, time, scan_id, doc) VALUES (?, ?, ?, ?)",
                     (pending.start_doc["uid"], pending.start_doc["time"], None,
                      json.dumps(pending.start_doc)))
        proc = subprocess.run(
            [sys.executable, "-c", _READER, store.uri, run.start_doc["uid"]],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)
    # the reader saw the committed state, not the pending write, without waiting for it
    assert seen == {"starts": [run.start_doc["uid"]],
                    "counts": {desc.descriptor_doc["uid"]: [3, 1, 3]}}
    assert {s["uid"] for s in store.iter_starts()} == {run.start_doc["uid"],
                                                       pending.start_doc["uid"]}


def test_failed_write_rolls_back_and_store_stays_usable(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    run = event_model.compose_run()
    with pytest.raises(RuntimeError):
        with store._write() as conn:
            conn.execute("INSERT INTO run_start (uid, time, scan_id, doc) VALUES (?, ?, ?, ?)",
                         (run.start_doc["uid"], 0.0, None, json.dumps(run.start_doc)))
            raise RuntimeError("boom")
    assert store.get_start(run.start_doc["uid"]) is None
    store.insert_start(run.start_doc)
    assert store.get_start(run.start_doc["uid"]) == run.start_doc


def test_unpickled_store_in_spawned_process(tmp_path):
    """An unpickled store in a spawned process reads what this process wrote."""
    import multiprocessing

    store = SQLiteStore(tmp_path / "c.db")
    run = event_model.compose_run(metadata={"scan_id": 5})
    store.insert_start(run.start_doc)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.apply(operator.methodcaller("get_start", run.start_doc["uid"]), (store,))
    assert got == run.start_doc


def test_workers_never_create_an_empty_catalog(tmp_path):
    """A process that opens a catalog by URI (a worker, an unpickled store) needs the file."""
    import pickle
    import shutil

    import event_model

    from dask_broker import Broker
    from dask_broker.errors import StoreURIError
    from dask_broker.stores import _cache

    folder = tmp_path / "cat"
    db = Broker.from_uri(f"sqlite:///{folder / 'catalog.db'}")
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary",
                                     data_keys={"x": {"source": "x", "dtype": "number", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    db.insert("event", desc.compose_event(data={"x": 1.0}, timestamps={"x": 0.0}))
    df = db[-1].table()
    blob = pickle.dumps(db.store)
    db.store.close()
    shutil.move(folder, tmp_path / "elsewhere")
    _cache.clear()
    with pytest.raises(StoreURIError, match="no catalog at"):
        df.compute(scheduler="sync")
    with pytest.raises(StoreURIError, match=str(folder)):
        pickle.loads(blob)
    assert not folder.exists()


def test_sealing_keeps_value_types(tmp_path):
    """1,024 single events seal into a page; values of different kinds keep their types."""
    import event_model

    from dask_broker import Broker
    from dask_broker.stores.sqlite import SEAL_EVENTS

    db = Broker.from_uri(f"sqlite:///{tmp_path / 'c.db'}")
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"source": "x", "dtype": "number", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    values = [i if i % 2 else i + 0.5 for i in range(SEAL_EVENTS + 3)]  # ints and floats
    for v in values:
        db.insert("event", desc.compose_event(data={"x": v}, timestamps={"x": 0.0}))
    got = [d["data"]["x"] for n, d in db[-1].docs() if n == "event"]
    assert got == values
    assert [type(v) for v in got] == [type(v) for v in values]
    (open_pages,) = db.store._conn().execute(
        "SELECT COUNT(*) FROM event_page WHERE sealed = 0").fetchone()
    assert open_pages < SEAL_EVENTS


def test_failed_write_names_the_catalog_and_keeps_it_usable(tmp_path):
    import event_model

    from dask_broker import Broker
    from dask_broker.errors import StoreURIError

    db = Broker.from_uri(f"sqlite:///{tmp_path / 'c.db'}")
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    conn = db.store._conn()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is full
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"source": "x", "dtype": "number", "shape": []}})
    with pytest.raises(StoreURIError, match="c.db"):
        db.insert("descriptor", dict(desc.descriptor_doc, configuration={"big": {"data": {"b": "x" * 100_000}}}))
    conn.execute("PRAGMA max_page_count = 1073741823")
    db.insert("descriptor", desc.descriptor_doc)
    assert [d["uid"] for d in db[-1].descriptors] == [desc.descriptor_doc["uid"]]


def test_close_reaches_every_threads_connection(tmp_path):
    import threading

    from dask_broker.stores.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "c.db")

    def open_files():
        return sum(1 for fd in os.listdir("/proc/self/fd")
                   if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp_path)))

    threads = [threading.Thread(target=lambda: store.get_start("nope")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert open_files() >= 4
    store.close()
    assert open_files() == 0
    assert store.get_start("nope") is None  # usable again: it re-opens
    store.close()
