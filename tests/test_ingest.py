"""ingest of suitcase-msgpack files as suitcase writes them: one-row event_pages and
datum_pages joined into pages, runs of alike events read a column at a time."""

from __future__ import annotations

import json

import event_model
import msgpack
import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_ingest import run_documents, write_msgpack
from dask_broker import Broker, IngestError, ingest, read_documents
from dask_broker.ingest import _read_msgpack_rows
from dask_broker.ingest_batch import _rows_of
from dask_broker.msgpack_rows import RowLayout, Rows, layout_of


def mixed_run() -> list[tuple[str, dict]]:
    """A run whose events change layout often: ints crossing msgpack's widths (fixint,
    uint8, uint16, negative), an int among floats, bools, strings of other lengths, a
    non-ASCII uid, a second stream between them, datum of a resource in between."""
    run = event_model.compose_run(metadata={"scan_id": 4})
    primary = run.compose_descriptor(name="primary", data_keys={
        "x": {"source": "x", "dtype": "number", "shape": []},
        "n": {"source": "n", "dtype": "integer", "shape": []},
        "ok": {"source": "ok", "dtype": "boolean", "shape": []},
        "label": {"source": "label", "dtype": "string", "shape": []},
        "img": {"source": "img", "dtype": "array", "shape": [2, 2], "external": "FILESTORE:"}})
    baseline = run.compose_descriptor(name="baseline", data_keys={
        "t": {"source": "t", "dtype": "number", "shape": []}})
    resource = run.compose_resource(spec="AD_HDF5", root="/data", resource_path="a.h5",
                                    resource_kwargs={"frame_per_point": 1})
    docs = [("start", run.start_doc), ("descriptor", primary.descriptor_doc),
            ("descriptor", baseline.descriptor_doc), ("resource", resource.resource_doc),
            ("event", baseline.compose_event(data={"t": 1.5}, timestamps={"t": 1.0}, seq_num=1))]
    for i in range(1, 401):
        datum = resource.compose_datum(datum_kwargs={"point_number": i})
        if 150 <= i < 170:  # datum between the events
            docs.append(("datum", datum))
        event = primary.compose_event(
            data={"x": float(i) / 3 if i != 42 else 42, "n": i if i < 380 else -i + 370,
                  "ok": i % 3 == 0, "label": "a" * (1 + i // 100), "img": datum["datum_id"]},
            timestamps={k: 1e9 + i for k in ("x", "n", "ok", "label", "img")},
            seq_num=i, time=1e9 + i)
        if i == 77:
            event["uid"] = "événement-77"
        docs.append(("event", event))
    docs.append(("event", baseline.compose_event(data={"t": 2.5}, timestamps={"t": 2.0},
                                                 seq_num=2)))
    docs.append(("stop", run.compose_stop()))
    return docs


def test_benchmark_file_is_what_suitcase_msgpack_writes(tmp_path):
    """The benchmark's file has suitcase-msgpack's layout, byte for byte."""
    serializer_class = pytest.importorskip("suitcase.msgpack").Serializer
    docs = list(run_documents(30))
    with serializer_class(str(tmp_path / "suitcase")) as serializer:
        for name, doc in docs:
            serializer(name, doc)
    (written,) = serializer.artifacts["all"]
    write_msgpack(tmp_path / "bench.msgpack", docs)
    assert (tmp_path / "bench.msgpack").read_bytes() == open(written, "rb").read()
    assert [n for n, _ in read_documents(written)].count("event_page") == 30


def test_ingest_of_suitcase_msgpack_equals_insert(tmp_path, dump):
    serializer_class = pytest.importorskip("suitcase.msgpack").Serializer
    docs = mixed_run()
    with serializer_class(str(tmp_path)) as serializer:
        for name, doc in docs:
            serializer(name, doc)
    (path,) = serializer.artifacts["all"]
    db = Broker.from_uri(f"sqlite:///{tmp_path / 'cat.db'}")
    report = ingest(db, [path], progress=False)
    assert report.inserted["event_page"] == 402 and report.inserted["datum_page"] == 20
    reference = Broker.temp()
    for name, doc in docs:
        reference.insert(name, doc)
    assert dump(db) == dump(reference)
    for stream in ("primary", "baseline"):
        pd.testing.assert_frame_equal(db[-1].table(stream).compute(),
                                      reference[-1].table(stream).compute())


def test_rows_are_the_documents_msgpack_decodes(tmp_path):
    """Each run read a column at a time holds the documents msgpack decodes there, with
    values of the same types; and progress adds up to the file's size."""
    path = tmp_path / "run.msgpack"
    write_msgpack(path, mixed_run())
    reported = []
    items = list(_read_msgpack_rows(path, reported.append))
    assert sum(reported) == path.stat().st_size
    expanded = []
    for item in items:
        expanded += ([(item.name, d) for d in _rows_of(item.name, item.page)]
                     if type(item) is Rows else [item])
    assert repr(expanded) == repr(list(read_documents(path)))
    runs = [item.count for item in items if type(item) is Rows]
    assert sum(runs) > 300 and max(runs) >= RowLayout.MIN_RUN  # most events, in runs
    assert len(items) > len(runs) + 20  # datum, the non-ASCII uid, ... from msgpack


def test_a_layout_reads_only_rows_laid_out_alike():
    event = {"uid": "u" * 36, "descriptor": "d", "seq_num": 1, "time": 0.5,
             "data": {"x": 1.5, "n": 3, "s": "ab"}, "timestamps": {"x": 0.5, "n": 0.5, "s": 0.5}}
    item = msgpack.packb(["event", event])
    layout = layout_of(item)
    alike = [dict(event, seq_num=i, data={"x": -2.0 * i, "n": i, "s": "cd"}) for i in range(20)]
    other = [dict(event, data={"x": 1.5, "n": 300, "s": "ab"}),          # n is a uint16
             dict(event, data={"x": 1.5, "n": 3, "s": "é"}),             # 2 bytes, not ASCII
             dict(event, data={"y": 1.5, "n": 3, "s": "ab"}),            # another key
             dict(event, descriptor="e"),                                 # another descriptor
             dict(event, data={"x": True, "n": 3, "s": "ab"})]           # another type
    for odd in other:
        buffer = b"".join(msgpack.packb(["event", e]) for e in alike + [odd] + alike)
        assert layout.count(memoryview(buffer), 0, 100) == 20
    rows = layout.read(memoryview(b"".join(msgpack.packb(["event", e]) for e in alike)), 0, 20)
    assert rows.page["data"]["x"].tolist() == [-2.0 * i for i in range(20)]
    assert rows.page["data"]["n"].dtype == np.int64 and rows.page["data"]["s"] == ["cd"] * 20
    assert "filled" not in rows.page  # as saved
    assert layout_of(msgpack.packb(["start", {"uid": "u"}])) is None
    assert layout_of(msgpack.packb(["event", dict(event, extra=1)])) is None


def test_a_bad_event_in_a_run_is_named(tmp_path):
    docs = list(run_documents(500))
    bad = docs[300][1]
    bad["data"] = {("detX" if k == "det0" else k): v for k, v in bad["data"].items()}
    path = tmp_path / "bad.msgpack"
    write_msgpack(path, docs)
    db = Broker.temp()
    with pytest.raises(IngestError, match=bad["uid"]) as info:
        ingest(db, [path], progress=False)
    assert "bad.msgpack" in str(info.value) and "document 300" in str(info.value)
    # the events before the bad one are stored (pages before it), none after it
    assert 0 < db[-1].table().compute().shape[0] <= 298


def test_truncated_in_a_run(tmp_path):
    path = tmp_path / "cut.msgpack"
    write_msgpack(path, run_documents(100))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(IngestError, match="cut.msgpack: truncated"):
        ingest(Broker.temp(), [path], progress=False)


def test_skip_existing_finishes_a_partial_ingest_of_rows(tmp_path, dump):
    docs = list(run_documents(2_000))
    path = tmp_path / "run.msgpack"
    write_msgpack(path, docs)
    db = Broker.from_uri(f"sqlite:///{tmp_path / 'cat.db'}")
    for name, doc in docs[:1_200]:  # what an interrupted ingest left behind
        db.insert(name, doc)
    report = ingest(db, [path], progress=False, skip_existing=True)
    assert report.inserted["event_page"] == 802 and report.skipped["event_page"] == 1_198
    reference = Broker.temp()
    for name, doc in docs:
        reference.insert(name, doc)
    assert dump(db) == dump(reference)


def test_jsonl_lines_read_as_json_loads_reads_them(tmp_path):
    """msgspec decodes the lines; what it refuses (NaN, a lone surrogate, 1e400) is read by
    json.loads, so every line gives exactly what json.loads gives."""
    lines = ['["start", {"uid": "s", "time": 1.5, "n": 123456789012345678901234567890}]',
             '["event", {"uid": "e", "data": {"x": NaN, "y": 1e400, "z": -0.0, "i": 3}}]',
             '',
             '["stop", {"uid": "\\ud800", "a": {"a": 1, "a": 2}, "t": 0.1}]']
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = list(read_documents(path))
    want = [tuple(json.loads(line)) for line in lines if line]
    assert repr(got) == repr(want)
    assert [type(v) for v in got[1][1]["data"].values()] == [float, float, float, int]


def test_cli_ingest_shows_a_progress_bar(tmp_path, capsys):
    from dask_broker.cli import main

    path = tmp_path / "run.msgpack"
    write_msgpack(path, run_documents(50))
    assert main(["ingest", str(tmp_path / "cat.db"), str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ingesting" in err and "100%" in err and "run.msgpack" in err
    assert "53 document(s)" in out and "50 event_page" in out
