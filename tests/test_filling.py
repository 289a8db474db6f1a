"""Filling through the Broker: filled tables, docs, fill_context, xarray, root_map, errors."""

from __future__ import annotations

import os
import shutil

import dask
import dask.dataframe as dd
import h5py
import numpy as np
import pandas as pd
import pytest

from dask_broker import Broker
from dask_broker.errors import (
    DaskBrokerError,
    DuplicateHandlerError,
    HandlerError,
    HandlerNotFoundError,
    MissingFileError,
    UnknownDatumError,
)
from dask_broker.handlers.hdf5 import AreaDetectorHDF5Handler
from dask_broker.handlers.testing import make_external_run


def read_directly(location) -> np.ndarray:
    """The frame a datum points to, read without dask_broker."""
    path, point, fpp = location
    if point is None:
        return np.load(path)
    with h5py.File(path, "r") as f:
        frames = f["entry/data/data"][point * fpp:(point + 1) * fpp]
    return frames  # (fpp, H, W), as area-detector-handlers returns it


class CountingHandler(AreaDetectorHDF5Handler):
    """The built-in AD_HDF5 handler, counting instances and reads in this process."""

    created: list[str] = []
    reads: list[int] = []

    def __init__(self, filename, **kwargs):
        CountingHandler.created.append(filename)
        super().__init__(filename, **kwargs)

    def read_many(self, datum_kwargs_list):
        CountingHandler.reads.append(len(datum_kwargs_list))
        return super().read_many(datum_kwargs_list)

    def read_into(self, datum_kwargs_list, out):
        CountingHandler.reads.append(len(datum_kwargs_list))
        return super().read_into(datum_kwargs_list, out)


class FailingHandler:
    def __init__(self, filename, **kwargs):
        self.filename = filename

    def __call__(self, **kwargs):
        raise RuntimeError("detector firmware exploded")


@pytest.fixture
def run(tmp_path, any_db):
    data = tmp_path / "data"
    data.mkdir()
    ext = make_external_run(data, n_files=3, points_per_file=4, frame_per_point=1)
    db = any_db
    for name, doc in ext.documents:
        db.insert(name, doc)
    CountingHandler.created.clear()
    CountingHandler.reads.clear()
    return db, db[-1], ext


def test_filled_table_equals_files(run):
    db, h, ext = run
    df = h.table(fill=True, chunk_size=5)
    assert isinstance(df, dd.DataFrame) and df.npartitions == 3
    got = df.compute()
    assert list(got.index) == [e["seq_num"] for e in ext.events]
    for event, (_, row) in zip(ext.events, got.iterrows(), strict=True):
        for field in ("img", "spectrum"):
            np.testing.assert_array_equal(row[field], read_directly(ext.locations[event["data"][field]]))
        assert row["motor"] == event["data"]["motor"]


def test_unselected_columns_are_not_filled(run):
    db, h, ext = run
    db.register_handler("AD_HDF5", CountingHandler)
    with dask.config.set(scheduler="sync"):
        motor = h.table(fill=True)[["motor"]].compute()
    assert list(motor["motor"]) == [e["data"]["motor"] for e in ext.events]
    # No frame is read. The plan read the first file's metadata once (its descriptor
    # gives no dtype_numpy: the frame size comes from the file) -- changed on purpose.
    assert CountingHandler.reads == []
    assert len(CountingHandler.created) <= 1
    with dask.config.set(scheduler="sync"):
        h.table(fill=True, fields=["img"]).compute()
    assert len(CountingHandler.created) == 3  # one handler per resource (file), kept
    assert sum(CountingHandler.reads) == 12  # bulk reads cover every datum once


def test_docs_fill(run):
    db, h, ext = run
    db.register_handler("AD_HDF5", CountingHandler)
    events = [doc for name, doc in h.docs(fill=True) if name == "event"]
    assert len(CountingHandler.reads) == 3  # one bulk read per file, not one per event
    assert len(events) == len(ext.events)
    for got, original in zip(events, ext.events, strict=True):
        assert got["filled"] == {"img": True, "spectrum": True}
        for field in ("img", "spectrum"):
            np.testing.assert_array_equal(got["data"][field],
                                          read_directly(ext.locations[original["data"][field]]))


def test_fill_context_pandas_dask_and_events(run):
    db, h, ext = run
    event = ext.events[4]
    before = {k: v for k, v in event["data"].items()}
    with h.fill_context() as fc:
        filled = fc.fill(event)
        np.testing.assert_array_equal(filled["data"]["img"],
                                      read_directly(ext.locations[event["data"]["img"]]))
        assert event["data"] == before  # the input is untouched
        pdf = fc.fill_table(h.table().compute(), fields=["img"])
        assert isinstance(pdf, pd.DataFrame)
        assert isinstance(pdf["img"].iloc[0], np.ndarray)
        assert isinstance(pdf["spectrum"].iloc[0], str)  # not asked for: still a datum id
        lazy = fc.fill_table(h.table(chunk_size=4))
        assert isinstance(lazy, dd.DataFrame)
        assert fc.open_handlers > 0
    assert fc.open_handlers == 0  # every handler closed on exit
    computed = lazy.compute()  # lazy: computed after the context closed, in tasks
    np.testing.assert_array_equal(computed["spectrum"].iloc[2],
                                  read_directly(ext.locations[ext.events[2]["data"]["spectrum"]]))


def test_fill_context_closes_on_error(run):
    db, h, ext = run
    with pytest.raises(ZeroDivisionError):
        with h.fill_context() as fc:
            fc.fill(ext.events[0])
            assert fc.open_handlers == 2
            1 / 0
    assert fc.open_handlers == 0


def test_xarray_filled_frames_read_only_sliced(run):
    db, h, ext = run
    db.register_handler("AD_HDF5", CountingHandler)
    ds = h.to_xarray(chunk_size=6)
    assert ds["img"].dims == ("time", "img_dim_0", "img_dim_1", "img_dim_2")
    assert ds["img"].shape == (12, 1, 4, 5) and ds["img"].dtype == np.uint16
    CountingHandler.reads.clear()
    with dask.config.set(scheduler="sync"):
        two = ds["img"][7:9].values
    expected = np.stack([read_directly(ext.locations[e["data"]["img"]]) for e in ext.events[7:9]])
    np.testing.assert_array_equal(two, expected)
    assert sum(CountingHandler.reads) == 2
    total = ds["img"].sum().compute()
    assert int(total) == int(sum(read_directly(ext.locations[e["data"]["img"]]).sum(dtype="u8")
                                 for e in ext.events))


def test_root_map(run, tmp_path):
    db, h, ext = run
    old = os.path.dirname(ext.files[0])
    new = str(tmp_path / "moved")
    before = h.to_xarray(fields=["spectrum"])["spectrum"].data.name
    shutil.move(old, new)
    with pytest.raises(MissingFileError) as info:
        h.table(fill=True, fields=["img"]).compute()
    message = str(info.value)
    resource_uid = next(iter(ext.resources))
    assert resource_uid in message or any(uid in message for uid in ext.resources)
    assert old in message and "root_map" in message
    db.set_root_map({old: new})
    # frames now come from another place: new task names, no stale cached chunks
    assert h.to_xarray(fields=["spectrum"])["spectrum"].data.name != before
    got = h.table(fill=True, fields=["img"]).compute()
    assert len(got) == 12 and isinstance(got["img"].iloc[0], np.ndarray)
    assert h.table(fill=True)._name != Broker.from_uri(db.uri).event_source.table(h, fill=True)._name
    db2 = Broker.from_uri(db.uri, root_map={old: new})
    assert db2.root_map == {old: new}
    frame = db2[h.uid].table(fill=True, fields=["spectrum"]).compute()
    np.testing.assert_array_equal(
        frame["spectrum"].iloc[0],
        np.load(os.path.join(new, os.path.basename(ext.locations[ext.events[0]["data"]["spectrum"]][0]))))


def test_register_and_deregister(run):
    db, h, ext = run
    db.register_handler("MY_SPEC", FailingHandler)
    with pytest.raises(DuplicateHandlerError, match="MY_SPEC"):
        db.register_handler("MY_SPEC", CountingHandler)
    db.register_handler("MY_SPEC", CountingHandler, overwrite=True)
    db.deregister_handler("MY_SPEC")
    with pytest.raises(HandlerNotFoundError, match="MY_SPEC"):
        db.handlers.lookup("MY_SPEC")


def test_no_handler_error_raised_by_compute(tmp_path, any_db):
    data = tmp_path / "d"
    data.mkdir()
    ext = make_external_run(data, n_files=1, points_per_file=2, npy=False)
    db = any_db
    for name, doc in ext.documents:
        if name == "resource":
            doc = {**doc, "spec": "MYSTERY_DETECTOR"}
        db.insert(name, doc)
    df = db[-1].table(fill=True)  # planning works; the compute raises
    with pytest.raises(HandlerNotFoundError, match="MYSTERY_DETECTOR") as info:
        df.compute()
    assert "db.register_handler('MYSTERY_DETECTOR'" in str(info.value)


def test_process_wide_registration_reaches_brokers(run):
    """dask_broker.handlers.register(...) counts for every Broker; db.register_handler wins."""
    from dask_broker.handlers import registry as registry_module

    db, h, ext = run
    registry_module.register("NPY", CountingHandler)
    try:
        assert db.handlers.lookup("NPY") is CountingHandler
        db.register_handler("NPY", FailingHandler)
        assert db.handlers.lookup("NPY") is FailingHandler
    finally:
        registry_module.deregister("NPY")
    db.deregister_handler("NPY")
    assert db.handlers.lookup("NPY").__name__ == "NpyHandler"


def test_handler_that_raises_is_wrapped(run):
    db, h, ext = run
    db.register_handler("NPY", FailingHandler)
    with pytest.raises(HandlerError) as info:
        h.table(fill=True, fields=["spectrum"]).compute()
    message = str(info.value)
    assert any(d in message for d in ext.datum) and any(r in message for r in ext.resources)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_unknown_datum_id(tmp_path, any_db):
    data = tmp_path / "d"
    data.mkdir()
    ext = make_external_run(data, n_files=1, points_per_file=2, npy=False)
    db = any_db
    for name, doc in ext.documents:
        if name == "datum" and doc["datum_kwargs"]["point_number"] == 1:
            continue  # lose one datum document
        db.insert(name, doc)
    missing = ext.events[1]["data"]["img"]
    with pytest.raises(UnknownDatumError, match=missing):
        db[-1].table(fill=True).compute()
    assert issubclass(UnknownDatumError, DaskBrokerError)
