"""Insert throughput into the embedded store, each against a naive writer in the same run.

Scenarios (quick / ``--full`` sizes)
- ``event_page lists``: pages of 10,000 events x 11 fields (10 floats, 1 int) whose
  columns are Python lists, inserted with validation into one growing run of
  1M / 10M events; throughput per window of the run (first 100k, the last 100k
  before 1M, before 10M) to show whether it stays flat.  Baseline: a naive
  columnar SQLite writer (per page: ``np.asarray`` of each column, ``.tobytes()``,
  one row per field, one transaction) on the same pages, the two taking turns
  page by page.
- ``event_page numpy``: the same with numpy columns (target: >= 1M events/s), with
  the store's default ``synchronous=full`` and with ``synchronous=normal`` (what a bulk
  load would use: WAL commits without fsync), each against the naive writer with the
  same setting.
- ``datum_page``: pages of 10,000 datum; baseline: ``executemany`` of JSON rows.
  Then ``datum look-ups``: ``store.datum`` of 1,000 consecutive ids and
  ``datum_of_resource``, against the same queries on the rows.
- ``single events``: one ``db.insert("event", ...)`` per event, as a RunEngine
  emits them; baseline: one committed JSON row per event.

``dask_broker.ingest`` of suitcase files is measured by ``bench_ingest``.

Only the insert calls are timed: pages are generated between them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from dask_broker import Broker
from dask_broker.testing import RunBuilder

from .common import Result

FIELDS = [f"det{i}" for i in range(10)] + ["count"]
PAGE = 10_000
WINDOW = 100_000


def _data_keys() -> dict:
    return {f: {"source": f, "dtype": "integer" if f == "count" else "number", "shape": []}
            for f in FIELDS}


def _uids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def _page(desc_uid: str, first: int, n: int, rng: np.random.Generator, lists: bool) -> dict:
    """Events first+1 .. first+n of a scan: 10 float fields and an int field."""
    seq = np.arange(first + 1, first + n + 1)
    times = 1.7e9 + seq * 0.01
    data = {f: rng.random(n) for f in FIELDS[:-1]}
    data["count"] = seq * 3
    stamps = {f: times + 0.001 for f in FIELDS}
    page = {"descriptor": desc_uid, "seq_num": seq, "time": times, "uid": _uids(n),
            "data": data, "timestamps": stamps, "filled": {}}
    if lists:
        page.update(seq_num=seq.tolist(), time=times.tolist(),
                    data={k: v.tolist() for k, v in data.items()},
                    timestamps={k: v.tolist() for k, v in stamps.items()})
    return page


class NaiveColumnar:
    """The baseline: per page, np.asarray + tobytes of each column, one row per field,
    one transaction (WAL; ``synchronous``: FULL, as the embedded store by default)."""

    def __init__(self, path: Path, sync: str = "full"):
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={sync.upper()}")
        self.conn.execute("CREATE TABLE page (id INTEGER PRIMARY KEY, descriptor TEXT, "
                          "seq_num BLOB, time BLOB, uid TEXT)")
        self.conn.execute("CREATE TABLE col (page_id INTEGER, field TEXT, data BLOB, ts BLOB, "
                          "PRIMARY KEY (page_id, field))")

    def write(self, page: dict) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        cur = conn.execute("INSERT INTO page (descriptor, seq_num, time, uid) VALUES (?,?,?,?)",
                           (page["descriptor"], np.asarray(page["seq_num"]).tobytes(),
                            np.asarray(page["time"]).tobytes(), json.dumps(page["uid"])))
        pid = cur.lastrowid
        conn.executemany("INSERT INTO col VALUES (?, ?, ?, ?)",
                         [(pid, f, np.asarray(v).tobytes(),
                           np.asarray(page["timestamps"][f]).tobytes())
                          for f, v in page["data"].items()])
        conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _windows(total: int) -> list[int]:
    """Ends of the windows reported: the first 100k and the last 100k before 1M, 10M."""
    ends = [WINDOW] + [m for m in (1_000_000, 10_000_000) if m <= total]
    return sorted(set(ends + [total]))


def _grow(scenario: str, total: int, writers: dict, make_page) -> list[Result]:
    """Write ``total`` events page by page with each writer, the writers taking turns on
    each page (so a busy machine slows them alike); per writer a row per window of the
    run and one for the whole run."""
    ends = _windows(total)
    whole = dict.fromkeys(writers, 0.0)
    window_s: dict[tuple[str, int], float] = {}
    load = os.getloadavg()[0]
    for first in range(0, total, PAGE):
        page = make_page(first)
        end = first + PAGE
        for label, write in writers.items():
            t0 = time.perf_counter()
            write(page)
            dt = time.perf_counter() - t0
            whole[label] += dt
            for e in ends:
                if e - WINDOW < end <= e:
                    window_s[label, e] = window_s.get((label, e), 0.0) + dt
    extra = {"load": (round(load, 2), round(os.getloadavg()[0], 2))}
    results = []
    for label in writers:
        for e in ends:
            if e != total or total > WINDOW:
                s = window_s[label, e]
                results.append(Result(scenario, f"{label}, events {_k(e - WINDOW)}-{_k(e)}",
                                      WINDOW, s, [s], extra=extra))
        results.append(Result(scenario, f"{label}, whole {_k(total)}", total, whole[label],
                              [whole[label]], extra=extra))
    return results


def _k(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def _new_run(folder: Path, name: str, sync: str = "full"):
    db = Broker.from_uri(f"sqlite:///{folder / name}?synchronous={sync}")
    run = RunBuilder()
    desc = run.descriptor("primary", _data_keys())
    db.insert("start", run.start)
    db.insert("descriptor", desc.descriptor_doc)
    return db, run.bundle, desc


def bench_pages(folder: Path, total: int, lists: bool,
                sync: str = "full") -> tuple[str, str, list[Result]]:
    """Pages into one growing run, and the naive writer with the same ``synchronous``."""
    kind = "lists" if lists else "numpy"
    scenario = f"event_page 10k x 11, {kind}"
    naive_label = "naive columnar sqlite3"
    if sync != "full":  # (the report's columns: scenario < 28, method < 46 characters)
        scenario = f"{kind} pages, sync={sync}"
        naive_label = f"naive columnar (sync={sync})"
    baseline = f"{naive_label}, whole {_k(total)}"
    rng = np.random.default_rng(0)
    naive = NaiveColumnar(folder / f"naive-{kind}-{sync}.db", sync)
    db, _, desc = _new_run(folder, f"pages-{kind}-{sync}.db", sync)
    uid = desc.descriptor_doc["uid"]
    results = _grow(scenario, total, {
        naive_label: naive.write,
        "db.insert event_page": lambda page: db.insert("event_page", page)},
        lambda first: _page(uid, first, PAGE, rng, lists))
    naive.close()
    db.store.close()
    return scenario, baseline, results


def bench_datum(folder: Path, total: int) -> list[tuple[str, str, list[Result]]]:
    """Insert ``total`` datum in pages of 10k, then read them back: ``store.datum`` of
    1,000 consecutive ids (a partition's frames) and ``datum_of_resource``; baseline: a
    row per datum (a unique datum_id, an index on the resource), as the catalog kept
    them before datum pages."""
    scenario, read_scenario = "datum_page 10k", "datum look-ups"
    scan_scenario = "datum of a resource"
    db, bundle, _ = _new_run(folder, "datum.db")
    res = bundle.compose_resource(spec="AD_HDF5", root="/data", resource_path="a.h5",
                                  resource_kwargs={"frame_per_point": 1})
    db.insert("resource", res.resource_doc)
    resource = res.resource_doc["uid"]
    pages = [res.compose_datum_page(datum_kwargs={"point_number": list(range(i, i + PAGE))})
             for i in range(0, total, PAGE)]

    conn = sqlite3.connect(folder / "naive-datum.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE datum (id INTEGER PRIMARY KEY, datum_id TEXT UNIQUE, "
                 "resource TEXT, datum_kwargs TEXT)")
    conn.execute("CREATE INDEX datum_resource ON datum (resource, id)")

    def naive():
        for p in pages:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO datum (datum_id, resource, datum_kwargs) "
                             "VALUES (?, ?, ?)",
                             [(d, p["resource"], json.dumps({"point_number": k}))
                              for d, k in zip(p["datum_id"], p["datum_kwargs"]["point_number"])])
            conn.execute("COMMIT")

    def naive_lookup(ids):
        out = {}
        for at in range(0, len(ids), 900):
            chunk = ids[at:at + 900]
            for d, r, k in conn.execute(
                    "SELECT datum_id, resource, datum_kwargs FROM datum WHERE datum_id IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                out[d] = {"datum_id": d, "resource": r, "datum_kwargs": json.loads(k)}
        return out

    def naive_of_resource():
        return sum(1 for _ in ({"datum_id": d, "resource": resource,
                                "datum_kwargs": json.loads(k)} for d, k in conn.execute(
            "SELECT datum_id, datum_kwargs FROM datum WHERE resource = ? ORDER BY id",
            (resource,))))

    ids = [d for p in pages for d in p["datum_id"]]
    windows = [ids[at:at + 1000] for at in range(0, total - 1000, max(1, total // 50))]
    baseline = "sqlite3 executemany JSON rows"
    read_baseline = "sqlite3 rows: datum_id IN (...) of 1,000 ids"
    scan_baseline = "sqlite3 rows: one resource's datum"
    results, read_results, scan_results = [], [], []

    def timed(rows, scenario_, method, size, fn):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        fn()
        s = time.perf_counter() - t0
        rows.append(Result(scenario_, method, size, s, [s], unit="datum",
                           extra={"load": (round(load, 2), round(os.getloadavg()[0], 2))}))

    timed(results, scenario, baseline, total, naive)
    timed(results, scenario, "db.insert datum_page", total,
          lambda: [db.insert("datum_page", p) for p in pages])
    n = 1000 * len(windows)
    timed(read_results, read_scenario, read_baseline, n,
          lambda: [naive_lookup(w) for w in windows])
    timed(read_results, read_scenario, "store.datum of 1,000 ids", n,
          lambda: [db.store.datum(w) for w in windows])
    timed(scan_results, scan_scenario, scan_baseline, total, naive_of_resource)
    timed(scan_results, scan_scenario, "store.datum_of_resource", total,
          lambda: sum(1 for _ in db.store.datum_of_resource(resource)))
    conn.close()
    db.store.close()
    return [(scenario, baseline, results), (read_scenario, read_baseline, read_results),
            (scan_scenario, scan_baseline, scan_results)]


def bench_single(folder: Path, n: int) -> tuple[str, str, list[Result]]:
    scenario = "single events"
    rng = np.random.default_rng(1)
    results = []
    for sync in ("full", "normal"):
        db, _, desc = _new_run(folder, f"single-{sync}.db", sync)
        events = [desc.compose_event(data={**{f: float(v) for f, v in zip(FIELDS, rng.random(10))},
                                           "count": i},
                                     timestamps={f: 1.7e9 + i for f in FIELDS}, validate=False)
                  for i in range(n)]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        for e in events:
            db.insert("event", e)
        s = time.perf_counter() - t0
        results.append(Result(scenario, f"db.insert event (synchronous={sync})", n, s, [s],
                              extra={"load": (round(load, 2), round(os.getloadavg()[0], 2))}))
        db.store.close()

    conn = sqlite3.connect(folder / "naive-single.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE event (uid TEXT PRIMARY KEY, descriptor TEXT, doc TEXT)")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    for e in events:  # one committed transaction per event, like db.insert
        conn.execute("INSERT INTO event VALUES (?, ?, ?)",
                     (e["uid"], e["descriptor"], json.dumps(e)))
    s = time.perf_counter() - t0
    conn.close()
    baseline = "sqlite3 JSON row per event (synchronous=normal)"
    results.append(Result(scenario, baseline, n, s, [s],
                          extra={"load": (round(load, 2), round(os.getloadavg()[0], 2))}))
    return scenario, baseline, results


def run(quick: bool = True):
    total = 1_000_000 if quick else 10_000_000
    results: list[Result] = []
    baselines: dict[str, str] = {}
    # each part: a list of (scenario, baseline, rows)
    parts = [lambda f: [bench_pages(f, total, lists=True)],
             lambda f: [bench_pages(f, total, lists=False),
                        bench_pages(f, total, lists=False, sync="normal")],
             lambda f: bench_datum(f, 200_000 if quick else 1_000_000),
             lambda f: [bench_single(f, 2_000 if quick else 20_000)]]
    only = os.environ.get("DASK_BROKER_BENCH_INSERT_ONLY")  # e.g. "0,2": a subset, by index
    for i, part in enumerate(parts):
        if only and str(i) not in only.split(","):
            continue
        with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
            scenarios = part(Path(tmp))
        for scenario, baseline, rows in scenarios:
            baselines[scenario] = baseline
            results += rows
    notes = ["targets (issue #13): event_page lists <= 1.5x the naive writer's time per event, "
             "flat across the run; numpy pages >= 1M events/s (synchronous full and normal); "
             "datum_page >= 1M datum/s; single events (synchronous=normal) >= 5k/s"]
    return results, baselines, notes
