"""The MongoDB store: a scan read as a table, against a plain pymongo find -> DataFrame.

Uses the server named by ``DASK_BROKER_BENCH_MONGO_URI`` (e.g. a real mongod,
``mongodb://localhost:27017``); otherwise starts the pure-Python wire-protocol
server nx-27017 for the run (much slower than mongod: compare ratios, not absolutes).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from dask_broker import Broker, TimeStruct
from dask_broker.stores.mongo import MongoStore
from dask_broker.synthetic import scalar_scan_documents

from .common import Result, measure

RAW = TimeStruct(convert_times=False)


@contextmanager
def mongo_server():
    external = os.environ.get("DASK_BROKER_BENCH_MONGO_URI")
    if external:
        yield external.rstrip("/"), "external server"
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="dask-broker-nx-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nx_27017.nx_27017", "--db", "memory", "--host", "127.0.0.1",
             "-p", str(port), "--log-file", str(Path(tmp) / "log"),
             "--pid-file", str(Path(tmp) / "pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            from pymongo import MongoClient

            deadline = time.monotonic() + 60
            while True:
                try:
                    MongoClient(f"mongodb://127.0.0.1:{port}",
                                serverSelectionTimeoutMS=500).admin.command("ping")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield f"mongodb://127.0.0.1:{port}", "nx-27017 (pure Python)"
        finally:
            proc.terminate()
            proc.wait(10)


def pymongo_baseline(uri: str, descriptor_uid: str) -> pd.DataFrame:
    """What a user writes by hand: find all events of a descriptor, one dict each."""
    from pymongo import MongoClient

    client = MongoClient(uri)
    try:
        db = client.get_default_database()
        rows, index, times = [], [], []
        for ev in db.event.find({"descriptor": descriptor_uid}, {"_id": 0, "data": 1,
                                                                 "seq_num": 1, "time": 1},
                                sort=[("seq_num", 1)]):
            rows.append(ev["data"])
            index.append(ev["seq_num"])
            times.append(ev["time"])
    finally:
        client.close()
    df = pd.DataFrame(rows, index=pd.Index(index, name="seq_num"))
    df.insert(0, "time", times)
    return df


def insert_scan(db: Broker, num: int) -> float:
    """Seconds ``db.insert`` takes for the event_pages of a scan (the documents made, and
    the other documents of the run inserted, before the clock starts and after it stops)."""
    docs = list(scalar_scan_documents(num, baseline=False, page_size=50_000))
    pages = [doc for name, doc in docs if name == "event_page"]
    rest = [(name, doc) for name, doc in docs if name != "event_page"]
    for name, doc in rest[:-1]:  # start, descriptor (and the first write's indexes)
        db.insert(name, doc)
    t0 = time.perf_counter()
    for page in pages:
        db.insert("event_page", page)
    seconds = time.perf_counter() - t0
    db.insert(*rest[-1])  # stop
    return seconds


def pymongo_insert_many(server: str, num: int) -> float:
    """Seconds to insert_many the event documents insert_scan stores (mongo_normalized
    documents, made before the clock starts), 10,000 a call, into a fresh database."""
    from pymongo import MongoClient

    docs = [doc for name, page in scalar_scan_documents(num, baseline=False, page_size=50_000)
            if name == "event_page" for doc in MongoStore._event_docs(page)]
    client = MongoClient(server)
    try:
        coll = client[f"bench_many_{uuid.uuid4().hex[:8]}"]["event"]
        coll.create_index("uid", unique=True)
        coll.create_index([("descriptor", -1), ("time", 1)])  # as the store makes them
        t0 = time.perf_counter()
        for i in range(0, len(docs), 10_000):
            coll.insert_many(docs[i:i + 10_000], ordered=False)
        return time.perf_counter() - t0
    finally:
        client.close()


def run(quick: bool = True):
    num = 5_000 if quick else 100_000
    results: list[Result] = []
    notes: list[str] = []
    with mongo_server() as (server, kind):
        uri = f"{server}/bench_{uuid.uuid4().hex[:8]}"
        db = Broker(MongoStore.from_uri(uri))
        load = os.getloadavg()[0]
        write_s = insert_scan(db, num)
        extra = {"load": (round(load, 2), round(os.getloadavg()[0], 2))}
        h = db[-1]
        (desc,) = h.descriptors
        scenario = f"mongo table {num:,}"
        insert_scenario = f"mongo insert {num:,} events"
        results.append(Result(insert_scenario, "db.insert event_page (50k-event pages)", num,
                              write_s, [write_s], extra=extra))
        load = os.getloadavg()[0]
        insert_many_s = pymongo_insert_many(server, num)
        results.append(Result(insert_scenario, "pymongo insert_many (same documents)", num,
                              insert_many_s, [insert_many_s],
                              extra={"load": (round(load, 2), round(os.getloadavg()[0], 2))}))
        expected = pymongo_baseline(uri, desc["uid"])
        got = h.table(time_struct=RAW).compute()
        pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
        results.append(measure(scenario, "pymongo find -> DataFrame", num,
                               lambda: pymongo_baseline(uri, desc["uid"]), repeat=3))
        results.append(measure(scenario, "h.table().compute() threads", num,
                               lambda: h.table(time_struct=RAW).compute(), repeat=3))
        import distributed

        chunk = max(1, num // 8)
        for k in (1, 2):
            with distributed.LocalCluster(n_workers=k, threads_per_worker=1, processes=True,
                                          dashboard_address=":0") as cluster, \
                    distributed.Client(cluster):
                results.append(measure(scenario, f"h.table().compute() {k} worker(s)", num,
                                       lambda: h.table(time_struct=RAW, chunk_size=chunk)
                                       .compute(), repeat=3))
        notes.append(f"server: {kind}")
    return results, {scenario: "pymongo find -> DataFrame",
                     insert_scenario: "pymongo insert_many (same documents)"}, notes
