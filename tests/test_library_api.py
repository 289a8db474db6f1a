"""What the CLI calls, as a library: ingest, read_documents, export_table, one run-key resolver;
on each store where a catalog is read or written."""

from __future__ import annotations

import event_model
import msgpack
import numpy as np
import pandas as pd
import pytest

import dask_broker
from dask_broker import (
    Broker,
    IngestError,
    IngestReport,
    InvalidArgumentError,
    RunNotFoundError,
    export_table,
    ingest,
    read_documents,
)
from dask_broker.ingest import pack_events
from dask_broker.run_keys import find_start, run_or_asset


def _write_msgpack(path, docs, default=None):
    packer = msgpack.Packer(default=default)
    with open(path, "wb") as f:
        for name, doc in docs:
            f.write(packer.pack([name, doc]))
    return path


def test_public_names():
    assert callable(dask_broker.ingest) and callable(dask_broker.export_table)
    assert {"ingest", "read_documents", "export_table", "IngestError"} <= set(dask_broker.__all__)


def test_ingest_returns_a_report_and_matches_direct_insert(any_db, tmp_path, make_run, dump):
    run = make_run(metadata={"scan_id": 3})
    path = _write_msgpack(tmp_path / "run.msgpack", run.docs)
    db = any_db
    report = ingest(db, [path], progress=False)
    assert isinstance(report, IngestReport) and report.runs == 1
    assert str(report).startswith("ingested 1 run(s)")
    reference = Broker.temp()
    for name, doc in run.docs:
        reference.insert(name, doc)
    assert dump(db) == dump(reference)
    assert [name for name, _ in read_documents(path)] == [name for name, _ in run.docs]


def test_ingest_numpy_values_from_msgpack(any_db, tmp_path):
    msgpack_numpy = pytest.importorskip("msgpack_numpy")
    run = event_model.compose_run()
    desc = run.compose_descriptor(name="primary", data_keys={
        "x": {"source": "x", "dtype": "number", "shape": []},
        "a": {"source": "a", "dtype": "array", "shape": [3]}})
    events = [desc.compose_event(data={"x": np.float64(i), "a": np.arange(3) * i},
                                 timestamps={"x": 1.0, "a": 1.0}, seq_num=i)
              for i in range(1, 4)]
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
            *[("event", e) for e in events], ("stop", run.compose_stop())]
    path = _write_msgpack(tmp_path / "np.msgpack", docs, default=msgpack_numpy.encode)
    db = any_db
    ingest(db, [path], progress=False)
    table = db[-1].table().compute()
    assert table["x"].tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(np.stack(table["a"]), np.stack([e["data"]["a"]
                                                                  for e in events]))


def test_ingest_names_a_bad_event_in_a_batch(any_db, tmp_path, make_run):
    run = make_run()
    docs = [(n, dict(d)) for n, d in run.docs]
    events = [d for n, d in docs if n == "event"]
    del events[2]["time"]  # a malformed event in the middle of a batch
    path = _write_msgpack(tmp_path / "bad.msgpack", docs)
    with pytest.raises(IngestError, match=events[2]["uid"]):
        ingest(any_db, [path], progress=False)


@pytest.mark.parametrize("case", ["regular", "other keys", "no filled", "partly filled"])
def test_pack_events_is_event_models(case):
    run = event_model.compose_run()
    desc = run.compose_descriptor(name="p", data_keys={
        k: {"source": k, "dtype": "number", "shape": []} for k in ("x", "y")})
    events = [desc.compose_event(data={"x": float(i), "y": i}, timestamps={"x": 1.0, "y": 2.0},
                                 seq_num=i, validate=False) for i in range(1, 5)]
    if case == "other keys":
        events[2] = dict(events[2], data={"x": 1.0, "z": 2})
    if case == "no filled":
        events = [{k: v for k, v in e.items() if k != "filled"} for e in events]
    if case == "partly filled":
        events[1] = dict(events[1], filled={"x": False})
    assert pack_events(events) == event_model.pack_event_page(*events)


def test_export_table(any_db, tmp_path, make_run, insert):
    db = any_db
    run = insert(db, make_run())
    df = db[-1].table("baseline")
    out = tmp_path / "t.csv"
    assert export_table(df, out, progress=False) == len(df)
    got = pd.read_csv(out, index_col="seq_num")
    assert got["temp"].tolist() == df.compute()["temp"].tolist()
    with pytest.raises(InvalidArgumentError, match="--overwrite"):
        export_table(df, out, progress=False)
    assert export_table(df, out, "csv", overwrite=True, progress=False) == len(df)
    with pytest.raises(InvalidArgumentError, match="format"):
        export_table(df, tmp_path / "t.txt", progress=False)
    assert run.uid == db[-1].uid


def test_one_run_key_resolver(any_db, make_run, insert):
    db = any_db
    first = insert(db, make_run(metadata={"scan_id": 42}))
    second = insert(db, make_run(metadata={"scan_id": 7}))
    assert find_start(db.store, "-1")["uid"] == second.uid == db["-1"].uid
    assert find_start(db.store, -2)["uid"] == first.uid
    assert find_start(db.store, "42")["uid"] == first.uid == db[42].uid
    assert find_start(db.store, first.uid[:10])["uid"] == first.uid
    with pytest.raises(RunNotFoundError, match="scan_id 99"):
        find_start(db.store, "99")
    with pytest.raises(TypeError):
        find_start(db.store, 1.5)
    # files' targets: an asset uid as it is, anything else a run
    resource = first.resources[0]["uid"]
    assert run_or_asset(db, resource) == resource
    assert run_or_asset(db, "42").uid == first.uid
    assert run_or_asset(db, "-1").uid == second.uid


def test_cli_files_takes_a_scan_id(any_uri, capsys, make_run, insert):
    from dask_broker.cli import main

    uri = any_uri()
    db = Broker.from_uri(uri)
    run = insert(db, make_run(metadata={"scan_id": 5}))
    db.store.close()
    assert main(["files", "list", uri, "5"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == dask_broker.file_list(db, db[run.uid])
