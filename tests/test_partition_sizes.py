"""Partitions follow the rows stored, not the span of their seq_nums."""

from __future__ import annotations

import event_model
import numpy as np
import pandas as pd
import pytest


def _sparse_run(db, seq_nums, fields=("x",)):
    run = event_model.compose_run()
    db.insert("start", run.start_doc)
    desc = run.compose_descriptor(name="primary", data_keys={
        f: {"source": "s", "dtype": "number", "shape": []} for f in fields})
    db.insert("descriptor", desc.descriptor_doc)
    for s in seq_nums:
        db.insert("event", desc.compose_event(data={f: float(s) for f in fields},
                                              timestamps={f: 1.0 for f in fields}, seq_num=s))
    db.insert("stop", run.compose_stop())
    return db[run.start_doc["uid"]]


@pytest.mark.parametrize("far", [10**10, 10**11])
def test_two_far_apart_events_are_one_small_partition(any_db, far, tmp_path):
    h = _sparse_run(any_db, [1, far])
    df = h.table()
    assert df.npartitions == 1
    assert df.divisions == (1, far)
    got = df.compute()
    assert got.index.tolist() == [1, far] and got["x"].tolist() == [1.0, float(far)]
    chunks = list(h.table_chunks())
    assert len(chunks) == 1 and chunks[0].index.tolist() == [1, far]
    assert h.table_chunk("primary", 0).index.tolist() == [1, far]
    ds = h.to_xarray()
    assert ds["seq_num"].values.tolist() == [1, far]
    assert ds["x"].values.tolist() == [1.0, float(far)]
    from dask_broker.cli import main

    out = tmp_path / "t.parquet"
    if any_db.uri.startswith("sqlite"):
        assert main(["export", any_db.uri, h.start["uid"], str(out), "--no-progress"]) == 0
        pd.testing.assert_frame_equal(pd.read_parquet(out), got, check_dtype=False,
                                      check_index_type=False)


def test_sparse_blocks_are_cut_by_rows(any_db):
    seq = list(range(1, 101)) + list(range(10**9, 10**9 + 100))
    h = _sparse_run(any_db, seq)
    df = h.table(chunk_size=40)
    sizes = [len(p) for p in df.partitions]
    assert sum(sizes) == 200 and max(sizes) <= 40 and len(sizes) == 5
    got = df.compute()
    assert got.index.tolist() == seq
    np.testing.assert_array_equal(got["x"].to_numpy(), np.array(seq, dtype=float))
    assert [len(c) for c in h.table_chunks(chunk_size=40)] == sizes
