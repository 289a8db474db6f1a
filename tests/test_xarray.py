"""Lazy xarray Datasets: structure, values, and that slicing reads only what is sliced."""

from __future__ import annotations

import event_model
import numpy as np
import pytest
import xarray as xr


DATA_KEYS = {
    "x": {"source": "PV:x", "dtype": "number", "shape": [], "units": "mm"},
    "n": {"source": "PV:n", "dtype": "integer", "shape": []},
    "label": {"source": "PV:l", "dtype": "string", "shape": []},
    "spectrum": {"source": "PV:s", "dtype": "array", "shape": [3, 2], "dims": ["row", "col"]},
    "trace": {"source": "PV:t", "dtype": "array", "shape": [4]},
}


@pytest.fixture
def run(any_db):
    db = any_db
    bundle = event_model.compose_run(metadata={"scan_id": 11})
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys=DATA_KEYS)
    db.insert("descriptor", desc.descriptor_doc)
    rng = np.random.default_rng(0)
    events = []
    for i in range(30):
        data = {"x": float(rng.normal()), "n": i * 2, "label": f"p{i}",
                "spectrum": rng.random((3, 2)).tolist(), "trace": rng.random(4).tolist()}
        ev = desc.compose_event(data=data, timestamps={k: 5.0 for k in data}, time=1.7e9 + i)
        db.insert("event", ev)
        events.append(ev)
    db.insert("stop", bundle.compose_stop())
    return db[-1], events


def test_dataset_structure_and_values(run):
    h, events = run
    ds = h.to_xarray(chunk_size=8)
    assert isinstance(ds, xr.Dataset)
    assert ds.sizes["time"] == 30
    np.testing.assert_array_equal(ds["time"].values, [e["time"] for e in events])
    np.testing.assert_array_equal(ds["seq_num"].values, [e["seq_num"] for e in events])
    assert ds["spectrum"].dims == ("time", "row", "col")
    assert ds["trace"].dims == ("time", "trace_dim_0")
    for name in DATA_KEYS:
        assert hasattr(ds[name].data, "dask"), name
    assert ds["spectrum"].data.chunks[0] == (8, 8, 8, 6)
    assert ds["x"].attrs["units"] == "mm" and ds["x"].attrs["source"] == "PV:x"
    np.testing.assert_array_equal(ds["x"].values, [e["data"]["x"] for e in events])
    np.testing.assert_array_equal(ds["n"].values, [e["data"]["n"] for e in events])
    assert ds["n"].dtype == np.dtype("i8")
    assert list(ds["label"].values) == [e["data"]["label"] for e in events]
    np.testing.assert_array_equal(ds["spectrum"].values,
                                  np.array([e["data"]["spectrum"] for e in events]))
    assert float(ds["trace"].sum().compute()) == pytest.approx(
        sum(sum(e["data"]["trace"]) for e in events))
    assert ds.attrs["uid"] == h.uid and ds.attrs["scan_id"] == 11


def test_slice_reads_only_the_sliced_events(run, monkeypatch):
    h, events = run
    ds = h.to_xarray(chunk_size=10)
    ranges = []
    store_class = type(h.event_source.store)
    original = store_class.iter_event_pages

    def recording(store, descriptor_uids, **kwargs):
        ranges.append(kwargs.get("seq_range"))
        return original(store, descriptor_uids, **kwargs)

    monkeypatch.setattr(store_class, "iter_event_pages", recording)
    got = ds["spectrum"][12:14].values
    np.testing.assert_array_equal(got, np.array([e["data"]["spectrum"] for e in events[12:14]]))
    # seq_num is position + 1: positions 12..13 are seq_nums 13..14
    assert ranges == [(13, 15)]


def test_fields_selection(run):
    h, _ = run
    ds = h.to_xarray(fields=["x"])
    assert list(ds.data_vars) == ["x"]


def test_multi_descriptor_stream_matches_table(any_db):
    """Two descriptors in one stream, each with seq_nums 1..3: xarray rows are the table's."""
    db = any_db
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    keys = {"x": {"source": "x", "dtype": "number", "shape": []}}
    first = bundle.compose_descriptor(name="primary", data_keys=keys)
    second = bundle.compose_descriptor(name="primary", data_keys=keys, validate=False,
                                       configuration={"gain": {"data": {"gain": 2}}})
    for desc, offset in ((first, 0.0), (second, 100.0)):
        db.insert("descriptor", desc.descriptor_doc)
        for seq in (1, 2, 3):
            db.insert("event", desc.compose_event(data={"x": offset + seq}, timestamps={"x": 0.0},
                                                  seq_num=seq, validate=False))
    h = db[-1]
    table = h.table().compute()
    ds = h.to_xarray(chunk_size=2)
    np.testing.assert_array_equal(ds["x"].values, table["x"].to_numpy())
    assert sorted(ds["x"].values) == [1.0, 2.0, 3.0, 101.0, 102.0, 103.0]
    np.testing.assert_array_equal(ds["x"][2:5].values, table["x"].to_numpy()[2:5])
