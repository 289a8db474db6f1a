"""The PostgreSQL store: a scan read as a table beside SQLite and ``read_parquet``; inserts;
copying a catalog from SQLite.

- ``table N``: ``h.table().compute()`` of one run of N scalar events (quick: 100k, full:
  1M) from PostgreSQL and from SQLite, on threads and on a LocalCluster of 1 and 2
  worker processes, against ``pandas.read_parquet`` of the same frame;
- ``insert N``: ``db.insert("event_page", ...)`` of pages of 50,000 events, PostgreSQL
  against SQLite;
- ``copy N``: ``copy_runs`` of that run from SQLite into PostgreSQL (every document
  replayed, written, read back and checksummed).

Uses the database named by ``DASK_BROKER_BENCH_POSTGRES_URI`` (a catalog is made in a
new schema there, and dropped); otherwise starts a PostgreSQL server with pgserver in
a temporary folder, with its default (durable) settings.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from dask_broker import Broker, TimeStruct, copy_runs

from .bench_tables import write_scan
from .common import Result, measure

RAW = TimeStruct(convert_times=False)


@contextmanager
def postgres_database():
    """``(uri of a database, description)``: the env var's, or a pgserver of this run."""
    external = os.environ.get("DASK_BROKER_BENCH_POSTGRES_URI")
    if external:
        yield external, "external server"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import pgserver

        folder = tempfile.mkdtemp(prefix="dask-broker-bench-pg-")
        srv = pgserver.get_server(Path(folder) / "pgdata", cleanup_mode="delete")
    try:
        yield srv.get_uri(), "pgserver (PostgreSQL 16, Unix socket, default settings)"
    finally:
        srv.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def new_catalog(base: str):
    """The URI of a new catalog in a schema of its own (dropped at the end)."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{name}&application_name={name}"
    finally:
        from dask_broker.stores import _cache

        for key in [k for k in _cache if name in k[0]]:
            _cache.pop(key).close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = %s", (name,))
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def _tables(results: list[Result], scenario: str, label: str, h, num: int, repeat: int) -> None:
    results.append(measure(scenario, f"{label} h.table().compute() threads", num,
                           lambda: h.table(time_struct=RAW).compute(scheduler="threads"),
                           repeat=repeat))


def run(quick: bool = True):
    import distributed

    num = 100_000 if quick else 1_000_000
    repeat = 3
    results: list[Result] = []
    notes: list[str] = []
    with postgres_database() as base, tempfile.TemporaryDirectory(prefix="dask-broker-") as tmp:
        base_uri, kind = base
        notes.append(f"server: {kind}")
        sqlite_db = Broker.from_uri(f"sqlite:///{Path(tmp) / 'catalog.db'}")
        insert = f"insert {num:,}"
        t0 = time.perf_counter()
        write_scan(sqlite_db, num)
        s = time.perf_counter() - t0
        results.append(Result(insert, "SQLite db.insert pages", num, s, [s]))
        with new_catalog(base_uri) as pg_uri, new_catalog(base_uri) as copy_uri:
            pg_db = Broker.from_uri(pg_uri)
            t0 = time.perf_counter()
            write_scan(pg_db, num)
            s = time.perf_counter() - t0
            results.append(Result(insert, "PostgreSQL db.insert pages", num, s, [s]))

            t0 = time.perf_counter()
            report = copy_runs(sqlite_db, copy_uri, progress=False)
            s = time.perf_counter() - t0
            assert report.events == num
            results.append(Result(f"copy {num:,}", "copy_runs SQLite -> PostgreSQL", num, s, [s]))

            scenario = f"table {num:,}"
            sq, pg = sqlite_db[-1], pg_db[-1]
            frame = sq.table(time_struct=RAW).compute()
            pd.testing.assert_frame_equal(pg.table(time_struct=RAW).compute(), frame)
            parquet = Path(tmp) / "scan.parquet"
            frame.to_parquet(parquet, engine="pyarrow")
            results.append(measure(scenario, "pandas.read_parquet", num,
                                   lambda: pd.read_parquet(parquet, engine="pyarrow"),
                                   repeat=repeat))
            _tables(results, scenario, "SQLite", sq, num, repeat)
            _tables(results, scenario, "PostgreSQL", pg, num, repeat)
            chunk = max(1, num // 8)
            for k in (1, 2):
                with distributed.LocalCluster(n_workers=k, threads_per_worker=1, processes=True,
                                              dashboard_address=":0") as cluster, \
                        distributed.Client(cluster):
                    for label, h in (("SQLite", sq), ("PostgreSQL", pg)):
                        results.append(measure(
                            scenario, f"{label} h.table().compute() {k} worker(s)", num,
                            lambda h=h: h.table(time_struct=RAW, chunk_size=chunk).compute(),
                            repeat=repeat))
    baselines = {f"table {num:,}": "pandas.read_parquet",
                 insert: "SQLite db.insert pages"}
    return results, baselines, notes
