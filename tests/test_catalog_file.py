"""The catalog file of the embedded store: schema versions, read-only opens, damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import event_model
import pytest

from catalog_files import (
    EVENTS,
    damage_events_of_run,
    damage_table,
    marker,
    overwrite_page,
    stored_version,
    tables,
    write_runs,
    write_v1_catalog,
)
from dask_broker import (
    Broker,
    CatalogCorruptError,
    CatalogVersionError,
    DuplicateUidError,
    ReadOnlyCatalogError,
    StoreURIError,
    open_store,
)
from dask_broker.stores import StoreRef
from dask_broker.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from dask_broker.stores.sqlite.check import check_catalog

REPO = Path(__file__).resolve().parent.parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def assert_v1_run_reads(db: Broker, v1: dict) -> None:
    h = db[v1["start"]["uid"]]
    assert h.start == v1["start"] and h.stop == v1["stop"]
    assert h.descriptors == [v1["descriptor"]]
    table = h.table().compute()
    assert list(table.index) == [1, 2, 3]
    assert list(table["x"]) == [0.5, 1.0, 1.5]
    events = [doc for name, doc in h.docs() if name == "event"]
    assert [(e["uid"], e["data"], e["timestamps"]) for e in events] == \
        [(e["uid"], e["data"], e["timestamps"]) for e in v1["events"]]


# ---------------------------------------------------------------- schema versions
def test_schema_version_is_5_with_stream_text_uid_hash_and_datum_page_tables(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    assert SCHEMA_VERSION == 5
    assert stored_version(store.path) == "5"
    assert {"stream_resource", "stream_datum", "run_start_text",
            "event_uid_hash", "datum_page", "datum_key"} <= tables(store.path)
    assert not {"event_uid", "datum"} & tables(store.path)


def test_version_1_catalog_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.db"
    v1 = write_v1_catalog(path)
    assert "stream_resource" not in tables(path) and stored_version(path) == "1"

    db = Broker.from_uri(f"sqlite:///{path}")  # a writable open migrates
    assert stored_version(path) == str(SCHEMA_VERSION)
    assert {"stream_resource", "stream_datum", "run_start_text", "event_uid_hash",
            "datum_page"} <= tables(path)
    assert not {"event_uid", "datum"} & tables(path)
    assert_v1_run_reads(db, v1)
    assert [h.uid for h in db("count")] == [v1["start"]["uid"]]  # its run is text-indexed
    assert db.store.stream_resources(v1["start"]["uid"]) == []
    # and it takes the documents of version 2
    run = event_model.compose_run()
    db.insert("start", run.start_doc)
    db.insert("stream_resource", {"uid": "sr1", "run_start": run.start_doc["uid"],
                                  "data_key": "det", "mimetype": "application/x-hdf5",
                                  "uri": "file://localhost/tmp/x.h5", "parameters": {}})
    assert [sr["uid"] for sr in db.store.stream_resources(run.start_doc["uid"])] == ["sr1"]
    # the events of version 1 keep their uids: a repeat of one is refused
    old = v1["events"][1]
    with pytest.raises(DuplicateUidError, match=old["uid"]):
        db.insert("event", {**old, "seq_num": 9})
    # a second open finds the current version and leaves the schema alone
    before = schema(path)
    Broker.from_uri(f"sqlite:///{path}").store.close()
    assert schema(path) == before and stored_version(path) == str(SCHEMA_VERSION)


def test_failed_migration_changes_nothing(tmp_path):
    """The migration is one transaction: when a statement of it fails, none of it stays."""
    path = tmp_path / "v1.db"
    # a table whose name the version-2 DDL wants for an index: the migration fails midway
    write_v1_catalog(path, extra_sql="CREATE TABLE stream_datum_resource (x);")
    with pytest.raises(StoreURIError, match="stream_datum_resource"):
        SQLiteStore(path)
    assert stored_version(path) == "1"
    assert "stream_resource" not in tables(path) and "stream_datum" not in tables(path)


def test_version_1_catalog_read_only_is_read_as_it_is(tmp_path):
    path = tmp_path / "v1.db"
    v1 = write_v1_catalog(path)
    before = digest(path)
    db = Broker.from_uri(f"sqlite:///{path}?mode=ro")
    assert_v1_run_reads(db, v1)
    assert db.store.stream_resources(v1["start"]["uid"]) == []
    assert db.store.stream_datums([v1["descriptor"]["uid"]]) == []
    db.store.close()
    assert digest(path) == before and stored_version(path) == "1"
    assert "stream_resource" not in tables(path)


@pytest.mark.parametrize("read_only", [False, True])
def test_newer_catalog_is_refused_naming_both_versions(tmp_path, read_only):
    path = tmp_path / "future.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(CatalogVersionError) as info:
        SQLiteStore(path, read_only=read_only)
    message = str(info.value)
    assert "schema version 7" in message and f"up to {SCHEMA_VERSION}" in message
    assert str(path) in message and "newer dask_broker" in message
    assert isinstance(info.value, StoreURIError)
    assert digest(path) == before


def test_database_of_another_program_is_not_a_catalog(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text)")
    conn.commit()
    conn.close()
    for read_only in (False, True):
        with pytest.raises(StoreURIError, match="not a dask_broker catalog"):
            SQLiteStore(path, read_only=read_only)
    assert tables(path) == {"notes"}


# ---------------------------------------------------------------- read-only mode
def test_read_only_store_reads_and_refuses_writes(tmp_path):
    path = tmp_path / "c.db"
    uids = write_runs(path, 2)
    before = digest(path)
    store = SQLiteStore.from_uri(f"sqlite:///{path}?mode=ro")
    assert store.read_only and store.uri == f"sqlite:///{path}?mode=ro"
    assert [s["uid"] for s in store.iter_starts()] == uids[::-1]
    run = event_model.compose_run()
    with pytest.raises(ReadOnlyCatalogError) as info:
        store.insert_start(run.start_doc)
    assert str(path) in str(info.value) and "read-only" in str(info.value)
    assert isinstance(info.value, PermissionError)
    with pytest.raises(ReadOnlyCatalogError):
        store.insert_stop({**run.compose_stop(), "run_start": uids[0]})
    with pytest.raises(ReadOnlyCatalogError):
        store.update_resource("r", {"root": "/x"}, cmd="test", cmd_kwargs={})
    # unpickled (as a worker gets it), it is still read-only
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read_only and copy == store
    with pytest.raises(ReadOnlyCatalogError):
        copy.insert_start(run.start_doc)
    store.close()
    copy.close()
    assert digest(path) == before
    # the same through Broker.from_uri(..., read_only=True)
    db = Broker.from_uri(f"sqlite:///{path}", read_only=True)
    with pytest.raises(ReadOnlyCatalogError):
        db.insert("start", run.start_doc)
    assert len(db) == 2


def test_read_only_open_never_creates(tmp_path):
    with pytest.raises(StoreURIError, match="no catalog at"):
        SQLiteStore.from_uri(f"sqlite:///{tmp_path}/absent.db?mode=ro")
    assert not (tmp_path / "absent.db").exists()
    (tmp_path / "empty.db").touch()
    with pytest.raises(StoreURIError, match="empty database"):
        SQLiteStore(tmp_path / "empty.db", read_only=True)
    assert (tmp_path / "empty.db").stat().st_size == 0
    with pytest.raises(StoreURIError, match="mode='rw'"):
        SQLiteStore.from_uri(f"sqlite:///{tmp_path}/c.db?mode=rw")


def test_workers_open_the_catalog_read_only(tmp_path):
    """What a task carries opens a read-only store; a table computes through it."""
    path = tmp_path / "c.db"
    write_runs(path, 2)
    db = Broker.from_uri(f"sqlite:///{path}")
    assert not db.store.read_only
    assert db.store.ref == StoreRef(db.store.uri, (("read_only", True),))
    worker_store = pickle.loads(pickle.dumps(db.store.ref)).open()
    assert worker_store.read_only and worker_store is open_store(db.uri, read_only=True)
    table = db[-1].table().compute(scheduler="sync")
    assert len(table) == EVENTS and (table["x"] == marker(1)).all()


_READER = textwrap.dedent("""
    import json, sys
    import event_model
    from dask_broker import Broker, ReadOnlyCatalogError, StoreURIError
    from dask_broker.cli import main

    results = {}
    for name, folder in json.loads(sys.argv[1]).items():
        path = f"{folder}/catalog.db"
        try:
            db = Broker.from_uri(f"sqlite:///{path}")  # the plain URI
            got = {"read_only": db.store.read_only,
                   "scan_ids": [h.start["scan_id"] for h in db],
                   "x": float(db[2].table().compute(scheduler="threads")["x"].iloc[0])}
            try:
                db.insert("start", event_model.compose_run().start_doc)
                got["write"] = "written"
            except ReadOnlyCatalogError as err:
                got["write"] = str(err)
            got["ls"] = main(["ls", path])
            got["files_list"] = main(["files", "list", path, "-1"])
        except StoreURIError as err:
            got = {"error": str(err)}
        results[name] = got
    print("RESULTS", json.dumps(results))
""")


def test_catalog_in_read_only_folder_or_file_is_readable(tmp_path):
    """Catalogs whose file or folder this process may not write are read (not refused).

    Permissions are real: chmod, and a reader that is not root.  Run as root
    (which ignores permissions), the reader is a child process running as user
    ``nobody`` (uid 65534); otherwise it is a child process of this user.
    """
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="dask-broker-ro-"))  # outside root's 0700 tmp_path
    writer = None
    try:
        base.chmod(0o755)
        folders = {name: base / name for name in
                   ("file_only", "clean_folder", "folder_with_writer", "wal_without_shm")}
        for name, folder in folders.items():
            folder.mkdir()
            if name != "wal_without_shm":
                write_runs(folder / "catalog.db", 2)
        # a writer holds the catalog open, with a third run still in its -wal file
        writer = sqlite3.connect(folders["folder_with_writer"] / "catalog.db",
                                 isolation_level=None)
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        # read once so that this connection is attached to the WAL: otherwise the
        # Broker's connection, closed whenever the garbage collector gets to it, is the
        # last one open and checkpoints and deletes the -wal file before it is copied
        writer.execute("SELECT count(*) FROM sqlite_master").fetchone()
        Broker.from_uri(f"sqlite:///{folders['folder_with_writer']}/catalog.db").insert(
            "start", event_model.compose_run(metadata={"scan_id": 3}).start_doc)
        for suffix in ("", "-wal"):  # what a writer killed mid-run leaves, minus its -shm
            shutil.copy(folders["folder_with_writer"] / f"catalog.db{suffix}",
                        folders["wal_without_shm"] / f"catalog.db{suffix}")
        assert (folders["wal_without_shm"] / "catalog.db-wal").stat().st_size > 0

        folders["file_only"].chmod(0o777)  # the reader may make -wal and -shm files here
        for name, folder in folders.items():
            for f in folder.iterdir():
                f.chmod(0o444)
            if name != "file_only":
                folder.chmod(0o555)
        before = {n: digest(f / "catalog.db") for n, f in folders.items()}
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _READER,
                 json.dumps({n: str(f) for n, f in folders.items()})],
                capture_output=True, text=True, timeout=300, cwd=base,
                env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(base)},
                user=65534 if as_root else None, group=65534 if as_root else None,
                extra_groups=[] if as_root else None)
        except PermissionError:  # pragma: no cover - root without the right to change user
            pytest.skip("running as root and cannot run the reader as another user")
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout.split("RESULTS ", 1)[1])

        for name in ("file_only", "clean_folder", "folder_with_writer"):
            got = results[name]
            assert got.get("error") is None, (name, got)
            assert got["read_only"] is True, name
            scan_ids = [3, 2, 1] if name == "folder_with_writer" else [2, 1]
            assert got["scan_ids"] == scan_ids, name
            assert got["x"] == marker(1), name
            assert "read-only" in got["write"] and "may not write" in got["write"], name
            assert got["ls"] == 0 and got["files_list"] == 0, name
        error = results["wal_without_shm"]["error"]
        assert "catalog.db-wal" in error and "writable" in error
        assert {n: digest(f / "catalog.db") for n, f in folders.items()} == before
    finally:
        for folder in [base, *base.iterdir()]:
            folder.chmod(0o755)
        if writer is not None:
            writer.close()
        shutil.rmtree(base)


# ---------------------------------------------------------------- damaged files
@pytest.fixture
def damaged(tmp_path):
    """A catalog of 6 runs whose 3rd run has a page of event data overwritten."""
    path = tmp_path / "catalog.db"
    uids = write_runs(path, 6)
    damage_events_of_run(path, 2)
    return path, uids


@pytest.mark.parametrize("read_only", [False, True])
def test_damaged_page_in_the_middle(damaged, read_only):
    path, uids = damaged
    db = Broker.from_uri(f"sqlite:///{path}", read_only=read_only)  # opens: the damage is elsewhere
    h = db[uids[2]]
    for read in (lambda: h.table().compute(), lambda: list(h.docs()),
                 lambda: list(db.store.iter_event_pages([h.descriptors[0]["uid"]]))):
        with pytest.raises(CatalogCorruptError) as info:
            read()
        message = str(info.value)
        assert str(path) in message and ".recover" in message and "dask-broker check" in message
        assert not isinstance(info.value, sqlite3.Error)
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    for i in (0, 1, 3, 4, 5):  # the other runs read as they were written
        table = db[uids[i]].table().compute()
        assert len(table) == EVENTS and (table["x"] == marker(i)).all()


@pytest.mark.parametrize("read_only", [False, True])
def test_damaged_schema_page_on_open(tmp_path, read_only):
    path = tmp_path / "catalog.db"
    write_runs(path, 3)
    with open(path, "r+b") as f:  # page 1 after its 100-byte header: the schema
        f.seek(100)
        f.write(b"\xff" * 2000)
    with pytest.raises(CatalogCorruptError, match=r"catalog\.db is damaged.*\.recover"):
        SQLiteStore(path, read_only=read_only)


def test_damaged_header_on_open(tmp_path):
    path = tmp_path / "catalog.db"
    write_runs(path, 1)
    overwrite_page(path, 1, b"\x00")
    with pytest.raises(CatalogCorruptError, match="header is damaged"):
        SQLiteStore(path)


def test_damaged_table_on_read_and_write(tmp_path):
    path = tmp_path / "catalog.db"
    uids = write_runs(path, 4)
    damage_table(path, "run_stop")
    store = SQLiteStore(path)
    with pytest.raises(CatalogCorruptError, match="catalog.db is damaged"):
        store.get_stop(uids[0])
    stop = {**event_model.compose_run().compose_stop(), "run_start": uids[0]}
    with pytest.raises(CatalogCorruptError, match="catalog.db is damaged"):
        store.insert_stop(stop)
    # the store is still usable for what is not damaged
    assert store.get_start(uids[1])["uid"] == uids[1]


@pytest.mark.parametrize("replacement", [b'"scan_id"#', b'"scan_id"\xff'])
def test_damaged_document_text(tmp_path, replacement):
    """Bytes changed inside a stored document: not JSON, or not UTF-8 any more."""
    path = tmp_path / "catalog.db"
    uids = write_runs(path, 3)
    data = path.read_bytes()
    assert data.count(b'"scan_id":2') == 1
    path.write_bytes(data.replace(b'"scan_id":2', replacement + b"2"))
    db = Broker.from_uri(f"sqlite:///{path}")
    with pytest.raises(CatalogCorruptError, match="catalog.db is damaged"):
        db[uids[1]]
    with pytest.raises(CatalogCorruptError):
        list(db)
    assert db[uids[0]].start["scan_id"] == 1


def test_check_catalog_reports_each_run(damaged):
    path, uids = damaged
    report = check_catalog(SQLiteStore(path, read_only=True))
    assert not report.ok
    assert report.integrity != ("ok",) and report.listing is None
    assert [r.uid for r in report.runs] == uids
    bad = [r for r in report.runs if not r.ok]
    assert [r.uid for r in bad] == [uids[2]]
    assert "events of descriptor" in bad[0].problems[0]
    assert "malformed" in bad[0].problems[0]
    assert all(r.events == EVENTS for r in report.runs if r.ok)
    assert [r.scan_id for r in report.runs] == [1, 2, 3, 4, 5, 6]


def test_check_catalog_healthy(tmp_path):
    path = tmp_path / "catalog.db"
    uids = write_runs(path, 2)
    report = check_catalog(SQLiteStore(path, read_only=True))
    assert report.ok and report.integrity == ("ok",)
    assert [(r.uid, r.events, r.problems) for r in report.runs] == \
        [(uid, EVENTS, ()) for uid in uids]


def test_big_integers_in_queries_and_documents(tmp_path):
    """Integers past 64 bits: a clear QueryError in queries (as on MongoDB), never a raw
    OverflowError from SQLite; a 64-bit scan_id is still matched."""
    from dask_broker.errors import QueryError

    db = Broker.from_uri(f"sqlite:///{tmp_path}/c.db")
    big = event_model.compose_run(metadata={"scan_id": 2**62})
    db.insert("start", big.start_doc)
    db.insert("start", event_model.compose_run(metadata={"scan_id": 5}).start_doc)
    assert [d["uid"] for d in db.store.search({"scan_id": 2**62})] == [big.start_doc["uid"]]
    assert len(list(db.store.search({"scan_id": {"$gt": 2**40}}))) == 1
    for query in ({"scan_id": 2**70}, {"scan_id": {"$gt": 2**64}}, {"time": {"$lt": 2**80}}):
        with pytest.raises(QueryError, match="64 bits"):
            list(db.store.search(query))


def test_bytes_in_a_document_is_a_validation_error(tmp_path):
    from dask_broker import DocumentValidationError

    db = Broker.from_uri(f"sqlite:///{tmp_path}/c.db")
    run = event_model.compose_run()
    with pytest.raises(DocumentValidationError, match="bytes"):
        db.insert("start", {**run.start_doc, "blob": b"\x00\x01"})
    db.insert("start", run.start_doc)
    desc = run.compose_descriptor(
        name="primary", data_keys={"s": {"source": "s", "dtype": "string", "shape": []}})
    db.insert("descriptor", desc.descriptor_doc)
    with pytest.raises(DocumentValidationError, match="bytes"):
        db.insert("event", desc.compose_event(data={"s": b"raw"}, timestamps={"s": 0.0}))
    assert db[-1].table().compute().empty
