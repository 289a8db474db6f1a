"""A writer killed with SIGKILL loses nothing whose insert had returned."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import event_model
import pytest

from dask_broker import Broker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

_WRITER = textwrap.dedent("""
    import sys
    import event_model
    from dask_broker import Broker

    db = Broker.from_uri(sys.argv[1])
    run = event_model.compose_run(metadata={"scan_id": 1})
    db.insert("start", run.start_doc)
    desc = run.compose_descriptor(name="primary", data_keys={
        "x": {"source": "s", "dtype": "number", "shape": []},
        "label": {"source": "s", "dtype": "string", "shape": []},
    })
    db.insert("descriptor", desc.descriptor_doc)
    print("run", run.start_doc["uid"], desc.descriptor_doc["uid"], flush=True)
    i = 0
    while True:
        i += 1
        event = desc.compose_event(data={"x": i * 0.5, "label": f"e{i}"},
                                   timestamps={"x": float(i), "label": float(i)})
        db.insert("event", event)
        # the insert has returned: report the event as stored
        sys.stdout.write(f"{event['uid']} {i}\\n")
        sys.stdout.flush()
""")


def _kill_writer(uri: str, kill_after: int) -> tuple[str, str, list[tuple[str, int]]]:
    """Run the writer on ``uri``, SIGKILL it after ``kill_after`` reported events;
    ``(run uid, descriptor uid, the (uid, seq_num) of every insert that returned)``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, uri], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    reported: list[tuple[str, int]] = []
    try:
        header = proc.stdout.readline().split()
        assert header and header[0] == "run", proc.stderr.read()
        _, run_uid, desc_uid = header
        while len(reported) < kill_after:
            line = proc.stdout.readline()
            assert line, f"writer exited early: {proc.stderr.read()}"
            uid, seq = line.split()
            reported.append((uid, int(seq)))
        proc.send_signal(signal.SIGKILL)  # mid-way: the writer is inserting the next events
        proc.wait(timeout=60)
        # what the writer printed before dying (read through the same buffered reader:
        # communicate() would skip what readline() has already buffered)
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):  # a complete line: that insert had returned
            uid, seq = line.split()
            reported.append((uid, int(seq)))
    assert len(reported) >= kill_after
    return run_uid, desc_uid, reported


def _check_nothing_returned_was_lost(uri: str, run_uid: str, desc_uid: str,
                                     reported: list[tuple[str, int]]) -> Broker:
    db = Broker.from_uri(uri)  # opens fine after the crash
    h = db[run_uid]
    assert h.stop is None
    events = [d for n, d in h.docs() if n == "event"]
    stored = {e["uid"]: e for e in events}
    missing = [uid for uid, _ in reported if uid not in stored]
    assert missing == []
    for uid, seq in reported:
        e = stored[uid]
        assert e["seq_num"] == seq and e["data"] == {"x": seq * 0.5, "label": f"e{seq}"}
    # at most the one insert in flight at the kill went in unreported; no gaps, no repeats
    seqs = [e["seq_num"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(reported) <= len(seqs) <= len(reported) + 1
    assert db.store.event_counts([desc_uid]) == {desc_uid: (len(seqs), 1, len(seqs))}

    # the catalog takes writes again: finish the run
    desc = h.descriptors[0]
    db.insert("event", {"uid": "after-crash", "descriptor": desc["uid"],
                        "seq_num": len(seqs) + 1, "time": 1.0,
                        "data": {"x": 0.0, "label": "after"},
                        "timestamps": {"x": 1.0, "label": 1.0}})
    stop = event_model.compose_run().compose_stop()
    db.insert("stop", {**stop, "run_start": run_uid})
    assert Broker.from_uri(uri)[run_uid].stop["run_start"] == run_uid
    assert db.store.event_counts([desc_uid])[desc_uid][0] == len(seqs) + 1
    return db


@pytest.mark.parametrize("query", ["", "?synchronous=normal"])
@pytest.mark.parametrize("kill_after", [700, 1030])
def test_sigkill_loses_no_returned_insert(tmp_path, query, kill_after):
    uri = f"sqlite:///{tmp_path}/catalog.db{query}"
    run_uid, desc_uid, reported = _kill_writer(uri, kill_after)
    db = _check_nothing_returned_was_lost(uri, run_uid, desc_uid, reported)
    conn = sqlite3.connect(db.store.path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("kill_after", [700, 1030])
def test_sigkill_loses_no_returned_insert_postgres(postgres_uri, kill_after):
    """The same on PostgreSQL: its session dies with the writer, and what it committed stays
    (1,030 single events: the kill may fall while the open pages are being sealed)."""
    from dask_broker.stores.postgres import PostgresStore

    PostgresStore.from_uri(postgres_uri).close()  # the catalog exists before the writer
    run_uid, desc_uid, reported = _kill_writer(postgres_uri, kill_after)
    _check_nothing_returned_was_lost(postgres_uri, run_uid, desc_uid, reported)
