"""ingest / export of runs with stream_resource and stream_datum (ophyd-async detectors),
on each store (``any_uri``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_broker import Broker
from test_cli import run_cli


def serialize(fmt, docs, folder):
    """Write ``docs`` as suitcase-msgpack / suitcase-jsonl do.  suitcase-msgpack's
    Serializer (a DocumentRouter) drops stream_resource / stream_datum; the file format
    is one ``(name, doc)`` pair per document, so they are written the same way here."""
    if fmt == "jsonl":  # suitcase-jsonl writes every document as it comes
        from test_cli import serialize as suitcase_serialize

        return suitcase_serialize(fmt, docs, folder)
    import suitcase.msgpack as sm

    class Serializer(sm.Serializer):
        def stream_resource(self, doc):
            self._buffer.write(sm._encode(("stream_resource", doc), **self._kwargs))

        def stream_datum(self, doc):
            self._buffer.write(sm._encode(("stream_datum", doc), **self._kwargs))

    folder.mkdir(parents=True, exist_ok=True)
    with Serializer(str(folder)) as serializer:
        for name, doc in docs:
            serializer(name, doc)
    (path,) = serializer.artifacts["all"]
    return path


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
@pytest.mark.parametrize("case", ["scan_blob_motor", "fly_two_dets"])
def test_ingest_keeps_stream_documents(fmt, case, streamdata_recordings, any_uri, tmp_path,
                                       capsys):
    rec = streamdata_recordings[case]
    path = serialize(fmt, rec.docs, tmp_path / "saved")
    names = [n for n, _ in rec.docs]
    cat = any_uri()
    code, out, err = run_cli(capsys, "ingest", cat, path, "--no-progress")
    assert code == 0, err
    db = Broker.from_uri(cat)
    h = db[rec.uid]
    replay = list(h.docs())
    for name in ("stream_resource", "stream_datum", "event"):
        assert [n for n, _ in replay].count(name) == names.count(name), name
    for key in rec.stream_keys("primary"):
        want = rec.expected["primary"][key]
        got = h.to_xarray()[key].values
        np.testing.assert_array_equal(got.reshape(want.shape), want)
    # ingesting again with --skip-existing skips every document, stream ones included
    code, out, err = run_cli(capsys, "ingest", cat, path, "--no-progress", "--skip-existing")
    assert code == 0, err
    assert len(list(db[rec.uid].docs())) == len(replay)


def test_export_of_a_fly_scan(streamdata_recordings, any_uri, tmp_path, capsys):
    rec = streamdata_recordings["fly_blob"]
    cat = any_uri()
    db = Broker.from_uri(cat)
    for name, doc in rec.docs:
        db.insert(name, doc)
    out_file = tmp_path / "fly.parquet"
    code, out, err = run_cli(capsys, "export", cat, rec.uid, out_file,
                             "--no-progress")
    assert code == 0, err
    got = pd.read_parquet(out_file)
    want = db[rec.uid].table().compute()
    assert len(got) == rec.rows["primary"] == 7
    assert got["time"].isna().all()  # fly rows have no time
    assert got["det"].tolist() == want["det"].tolist()  # references "<stream_resource>/<i>"
