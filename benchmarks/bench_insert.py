"""Insert throughput into the embedded store: single events (as a RunEngine emits them) and pages.

Baseline in the same run: plain ``sqlite3`` with one JSON row per event in one
transaction (what a naive document store does), on the same documents.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

import event_model
import numpy as np

from dask_broker import Broker

from .common import Result

FIELDS = [f"det{i}" for i in range(10)] + ["count"]


def _documents(num_events: int):
    bundle = event_model.compose_run()
    keys = {f: {"source": f, "dtype": "integer" if f == "count" else "number", "shape": []}
            for f in FIELDS}
    desc = bundle.compose_descriptor(name="primary", data_keys=keys)
    rng = np.random.default_rng(0)
    events = []
    for i in range(num_events):
        data = {f: float(v) for f, v in zip(FIELDS[:-1], rng.random(10))}
        data["count"] = int(i)
        events.append(desc.compose_event(data=data, timestamps={f: 0.0 for f in FIELDS},
                                         validate=False))
    return bundle.start_doc, desc.descriptor_doc, events


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(quick: bool = True):
    n_single = 1_000 if quick else 20_000
    n_pages = 100_000 if quick else 1_000_000
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
        folder = Path(tmp)
        start, desc, events = _documents(n_single)
        for sync in ("full", "normal"):
            db = Broker.from_uri(f"sqlite:///{folder / f'single-{sync}.db'}?synchronous={sync}")
            db.insert("start", start)
            db.insert("descriptor", desc)
            s = _timed(lambda: [db.insert("event", e) for e in events])
            results.append(Result("insert single events", f"db.insert event (synchronous={sync})",
                                  n_single, s, [s]))

        def naive():
            conn = sqlite3.connect(folder / "naive.db", isolation_level=None)
            conn.execute("CREATE TABLE event (uid TEXT PRIMARY KEY, descriptor TEXT, doc TEXT)")
            for e in events:  # one committed transaction per event, like db.insert
                conn.execute("INSERT INTO event VALUES (?, ?, ?)",
                             (e["uid"], e["descriptor"], json.dumps(e)))
            conn.close()

        s = _timed(naive)
        results.append(Result("insert single events", "sqlite3 JSON row per event (baseline)",
                               n_single, s, [s]))

        start, desc, events = _documents(min(n_pages, 200_000))
        pages = [event_model.pack_event_page(*events[i:i + 10_000])
                 for i in range(0, len(events), 10_000)]
        reps = max(1, n_pages // len(events))
        total = 0.0
        for r in range(reps):
            db = Broker.from_uri(f"sqlite:///{folder / f'pages-{r}.db'}")
            db.insert("start", start)
            db.insert("descriptor", desc)
            total += _timed(lambda: [db.insert("event_page", p) for p in pages])
        results.append(Result("insert event_pages", "db.insert event_page (10k events)",
                              len(events) * reps, total, [total]))

        def naive_bulk():
            conn = sqlite3.connect(folder / "naive-bulk.db")
            conn.execute("CREATE TABLE event (uid TEXT PRIMARY KEY, descriptor TEXT, doc TEXT)")
            with conn:
                conn.executemany("INSERT INTO event VALUES (?, ?, ?)",
                                 ((e["uid"], e["descriptor"], json.dumps(e)) for e in events))
            conn.close()

        s = _timed(naive_bulk)
        results.append(Result("insert event_pages", "sqlite3 executemany JSON rows (baseline)",
                              len(events), s, [s]))
    baselines = {"insert single events": "sqlite3 JSON row per event (baseline)",
                 "insert event_pages": "sqlite3 executemany JSON rows (baseline)"}
    return results, baselines, []
