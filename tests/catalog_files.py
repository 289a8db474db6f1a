"""Catalog files for the tests: several runs, damaged pages, the version-1 layout.

Damage is made the way a failing disk makes it: bytes of the file overwritten
in place, with every connection closed (so SQLite has no cached pages).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import event_model
import numpy as np

from dask_broker import Broker
from dask_broker.codec import encode_column

#: Events per run of :func:`write_runs`: 40 kB of float64 per field, so each field
#: of each run spans several overflow pages of its own.
EVENTS = 5000


def marker(i: int) -> float:
    """The value of field ``x`` in every event of run ``i``: a byte pattern found only there."""
    return 1000.0 * (i + 1) + 0.5


def write_runs(path: Path, n_runs: int = 6) -> list[str]:
    """A catalog of ``n_runs`` finished runs (scan_id 1..n), each one page of EVENTS events."""
    db = Broker.from_uri(f"sqlite:///{path}")
    uids = []
    for i in range(n_runs):
        run = event_model.compose_run(metadata={"scan_id": i + 1, "plan_name": "count"})
        db.insert("start", run.start_doc)
        desc = run.compose_descriptor(
            name="primary", data_keys={"x": {"source": "s:x", "dtype": "number", "shape": []}})
        db.insert("descriptor", desc.descriptor_doc)
        db.insert("event_page", {
            "descriptor": desc.descriptor_doc["uid"],
            "uid": [f"{run.start_doc['uid']}-{j}" for j in range(EVENTS)],
            "seq_num": list(range(1, EVENTS + 1)), "time": [1.0 + j for j in range(EVENTS)],
            "data": {"x": [marker(i)] * EVENTS}, "timestamps": {"x": [1.0] * EVENTS},
            "filled": {}})
        db.insert("stop", run.compose_stop())
        uids.append(run.start_doc["uid"])
    db.store.close()
    assert not path.with_name(path.name + "-wal").exists()  # all of it is in the file
    return uids


def page_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()


def overwrite_page(path: Path, page: int, fill: bytes = b"\xff") -> None:
    """Overwrite page ``page`` (1-based, as SQLite counts) of the file with ``fill`` bytes."""
    size = page_size(path)
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(fill * size)


def damage_events_of_run(path: Path, i: int) -> int:
    """Overwrite a page in the middle of run ``i``'s event data (an overflow page); its number."""
    data = path.read_bytes()
    size = page_size(path)
    pattern = np.full(size // 4, marker(i), dtype="<f8").tobytes()
    # a page whose bytes after the 4-byte next-page pointer are all run i's values
    for page in range(1, len(data) // size + 1):
        if data[(page - 1) * size + 4:page * size] in pattern:
            overwrite_page(path, page)
            return page
    raise AssertionError(f"no overflow page of run {i} in {path}")


def damage_table(path: Path, table: str) -> int:
    """Overwrite the root page of ``table``'s b-tree; its number."""
    conn = sqlite3.connect(path)
    try:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                               (table,)).fetchone()
    finally:
        conn.close()
    overwrite_page(path, root)
    return root


#: The schema of version 1 (dask_broker before stream_resource / stream_datum),
#: as `git show 57d0f4c:dask_broker/stores/sqlite.py` has it.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS run_start (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, time REAL, scan_id INTEGER,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS run_start_time ON run_start (time DESC, id DESC);
CREATE INDEX IF NOT EXISTS run_start_scan_id ON run_start (scan_id);
CREATE TABLE IF NOT EXISTS run_stop (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS descriptor (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT NOT NULL, name TEXT,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS descriptor_run ON descriptor (run_start, id);
CREATE TABLE IF NOT EXISTS resource (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS resource_run ON resource (run_start, id);
CREATE TABLE IF NOT EXISTS datum (
    id INTEGER PRIMARY KEY, datum_id TEXT NOT NULL UNIQUE, resource TEXT NOT NULL,
    datum_kwargs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS datum_resource ON datum (resource, id);
CREATE TABLE IF NOT EXISTS event_page (
    id INTEGER PRIMARY KEY, descriptor TEXT NOT NULL, n INTEGER NOT NULL,
    seq_min INTEGER NOT NULL, seq_max INTEGER NOT NULL, sealed INTEGER NOT NULL,
    seq_num BLOB NOT NULL, time BLOB NOT NULL, uid TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS event_page_range ON event_page (descriptor, seq_min);
CREATE INDEX IF NOT EXISTS event_page_open ON event_page (descriptor, sealed);
CREATE TABLE IF NOT EXISTS page_column (
    page_id INTEGER NOT NULL, field TEXT NOT NULL, codec TEXT NOT NULL, data BLOB NOT NULL,
    ts_codec TEXT NOT NULL, ts BLOB NOT NULL, PRIMARY KEY (page_id, field));
CREATE TABLE IF NOT EXISTS event_uid (uid TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resource_update (
    id INTEGER PRIMARY KEY, resource TEXT NOT NULL, time REAL NOT NULL, cmd TEXT NOT NULL,
    cmd_kwargs TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS resource_update_resource ON resource_update (resource, id);
"""


#: The schema of version 2 (dask_broker before full-text search): version 1's tables,
#: stream_resource and stream_datum, as `git show 00fc99e:dask_broker/stores/sqlite.py`
#: has it.
V2_SCHEMA = V1_SCHEMA + """
CREATE TABLE IF NOT EXISTS stream_resource (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, run_start TEXT, data_key TEXT,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_resource_run ON stream_resource (run_start, id);
CREATE TABLE IF NOT EXISTS stream_datum (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, stream_resource TEXT NOT NULL,
    descriptor TEXT NOT NULL, seq_start INTEGER NOT NULL, seq_stop INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_datum_descriptor ON stream_datum (descriptor, id);
CREATE INDEX IF NOT EXISTS stream_datum_resource ON stream_datum (stream_resource, id);
"""


def write_v1_catalog(path: Path, *, extra_sql: str = "") -> dict:
    """A version-1 catalog (WAL, as version 1 made it) holding one finished run of 3 events.

    Written with sqlite3 and the version-1 DDL, rows as version 1 wrote them.
    Returns ``{"start", "descriptor", "events", "stop"}``.
    """
    return write_old_catalog(path, V1_SCHEMA, 1, extra_sql=extra_sql)


def write_v2_catalog(path: Path, *, extra_sql: str = "", metadata: dict | None = None) -> dict:
    """A version-2 catalog holding one finished run of 3 events (see write_v1_catalog),
    its start document with ``metadata``."""
    return write_old_catalog(path, V2_SCHEMA, 2, extra_sql=extra_sql, metadata=metadata)


def write_old_catalog(path: Path, schema: str, version: int, *, extra_sql: str = "",
                      metadata: dict | None = None) -> dict:
    """A catalog of an older ``schema`` (recorded as ``version``): one run of 3 events,
    written with sqlite3, rows as versions 1 and 2 wrote them."""
    run = event_model.compose_run(metadata={"scan_id": 11, "plan_name": "count",
                                            **(metadata or {})})
    desc = run.compose_descriptor(
        name="primary", data_keys={"x": {"source": "s:x", "dtype": "number", "shape": []}})
    events = [desc.compose_event(data={"x": 0.5 * i}, timestamps={"x": 10.0 + i},
                                 seq_num=i, time=100.0 + i) for i in (1, 2, 3)]
    stop = run.compose_stop()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema + extra_sql)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                     (str(version),))
        start = run.start_doc
        conn.execute("INSERT INTO run_start (uid, time, scan_id, doc) VALUES (?, ?, ?, ?)",
                     (start["uid"], start["time"], start["scan_id"], json.dumps(start)))
        d = desc.descriptor_doc
        conn.execute("INSERT INTO descriptor (uid, run_start, name, doc) VALUES (?, ?, ?, ?)",
                     (d["uid"], start["uid"], "primary", json.dumps(d)))
        cur = conn.execute(
            "INSERT INTO event_page (descriptor, n, seq_min, seq_max, sealed, seq_num, time, uid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (d["uid"], 3, 1, 3, 0, np.array([1, 2, 3], "<i8").tobytes(),
             np.array([e["time"] for e in events], "<f8").tobytes(),
             json.dumps([e["uid"] for e in events])))
        codec, blob = encode_column([e["data"]["x"] for e in events])
        ts_codec, ts = encode_column([e["timestamps"]["x"] for e in events])
        conn.execute("INSERT INTO page_column VALUES (?, ?, ?, ?, ?, ?)",
                     (cur.lastrowid, "x", codec, blob, ts_codec, ts))
        conn.executemany("INSERT INTO event_uid (uid) VALUES (?)", [(e["uid"],) for e in events])
        conn.execute("INSERT INTO run_stop (uid, run_start, doc) VALUES (?, ?, ?)",
                     (stop["uid"], start["uid"], json.dumps(stop)))
    finally:
        conn.close()
    return {"start": run.start_doc, "descriptor": desc.descriptor_doc, "events": events,
            "stop": stop}


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def stored_version(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    finally:
        conn.close()
