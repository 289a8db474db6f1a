"""Files that are not there yet: filling tries again (handlers and stream readers) before
MissingFileError, as configured by dask.config or fill_context(retry_intervals=...)."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time

import cloudpickle
import dask
import event_model
import h5py
import numpy as np
import pytest

from dask_broker import Broker
from dask_broker.errors import InvalidArgumentError, MissingFileError
from dask_broker.file_retry import CONFIG_KEY, DEFAULT_RETRY_INTERVALS, resolve_retry_intervals
from dask_broker.readers.hdf5 import HDF5Reader

# Handler and reader classes defined here travel to worker processes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FRAME = np.arange(6.0).reshape(2, 3)


class LateNpyHandler:
    """Opens its ``.npy`` file when created; counts the tries (class-level, reset per test)."""

    attempts = 0
    failed = threading.Event()

    def __init__(self, path):
        type(self).attempts += 1
        try:
            self.array = np.load(path)
        except FileNotFoundError:
            type(self).failed.set()
            raise

    def __call__(self):
        return self.array


class CountingHDF5Reader(HDF5Reader):
    attempts = 0
    failed = threading.Event()

    def __init__(self, path, parameters):
        type(self).attempts += 1
        try:
            super().__init__(path, parameters)
        except MissingFileError:
            type(self).failed.set()
            raise


@pytest.fixture(autouse=True)
def _counters():
    for cls in (LateNpyHandler, CountingHDF5Reader):
        cls.attempts = 0
        cls.failed = threading.Event()


def _appear_later(path, write, after_failure: threading.Event, delay: float = 0.3):
    """A thread that creates ``path`` ``delay`` s after the first failed try (atomically)."""

    def run():
        after_failure.wait(30)
        time.sleep(delay)
        tmp = path + ".partial"
        write(tmp)
        os.replace(tmp, path)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _save_npy(path):
    with open(path, "wb") as f:
        np.save(f, FRAME)


def _write_h5(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data", data=np.stack([FRAME, FRAME + 1, FRAME + 2]))


# ---------------------------------------------------------------- runs
def _npy_run(db, folder):
    """A run whose one event's ``img`` is a datum of a LATE_NPY resource ``img.npy``."""
    db.register_handler("LATE_NPY", LateNpyHandler)
    run = event_model.compose_run()
    desc = run.compose_descriptor(name="primary", data_keys={
        "img": {"source": "d", "dtype": "array", "shape": [2, 3], "external": "FILESTORE:"}})
    res = run.compose_resource(spec="LATE_NPY", root=str(folder), resource_path="img.npy",
                               resource_kwargs={})
    datum = res.compose_datum(datum_kwargs={})
    event = desc.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 1.0},
                               seq_num=1, filled={"img": False})
    for name, doc in [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
                      ("resource", res.resource_doc), ("datum", datum), ("event", event),
                      ("stop", run.compose_stop())]:
        db.insert(name, doc)
    return db[run.start_doc["uid"]], event, os.path.join(folder, "img.npy")


def _stream_run(db, folder):
    """A run whose ``cam`` rows (3) are in an HDF5 file, read through a stream_resource."""
    db.register_reader("application/x-hdf5", CountingHDF5Reader, overwrite=True)
    path = os.path.join(folder, "cam.h5")
    run = event_model.compose_run()
    desc = run.compose_descriptor(name="primary", data_keys={
        "cam": {"source": "d", "dtype": "array", "shape": [2, 3], "external": "STREAM:",
                "dtype_numpy": "<f8"}})
    sr = run.compose_stream_resource(mimetype="application/x-hdf5", uri="file://localhost" + path,
                                     data_key="cam", parameters={"dataset": "/entry/data"})
    sd = sr.compose_stream_datum(indices={"start": 0, "stop": 3}, seq_nums={"start": 1, "stop": 4},
                                 descriptor=desc.descriptor_doc)
    for name, doc in [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
                      ("stream_resource", sr.stream_resource_doc), ("stream_datum", sd),
                      ("stop", run.compose_stop())]:
        db.insert(name, doc)
    return db[run.start_doc["uid"]], path


# ---------------------------------------------------------------- handlers
def test_handler_file_that_appears_late_is_read(any_db, tmp_path):
    h, event, path = _npy_run(any_db, tmp_path)
    thread = _appear_later(path, _save_npy, LateNpyHandler.failed)
    with h.fill_context(retry_intervals=[0.1] * 100) as fc:
        filled = fc.fill(event)
    thread.join()
    np.testing.assert_array_equal(filled["data"]["img"], FRAME)
    assert LateNpyHandler.attempts >= 2


def test_table_fill_retries_as_configured(any_db, tmp_path):
    """dask.config's intervals, resolved on the client, travel in the recipe to the tasks."""
    h, _, path = _npy_run(any_db, tmp_path)
    thread = _appear_later(path, _save_npy, LateNpyHandler.failed)
    with dask.config.set({CONFIG_KEY: [0.1] * 100}):
        lazy = h.table(fill=True)
    df = lazy.compute(scheduler="threads")
    thread.join()
    np.testing.assert_array_equal(df["img"].iloc[0], FRAME)
    assert LateNpyHandler.attempts >= 2


def test_missing_file_after_the_retries(any_db, tmp_path):
    h, event, path = _npy_run(any_db, tmp_path)
    with dask.config.set({CONFIG_KEY: [0.01, 0.02, 0.03]}):
        with h.fill_context() as fc, pytest.raises(MissingFileError) as info:
            fc.fill(event)
    assert LateNpyHandler.attempts == 4
    message = str(info.value)
    assert path in message
    assert "tried 4 times over 0.06 s" in message
    assert CONFIG_KEY in message and "retry_intervals=" in message


def test_no_retry_when_off(any_db, tmp_path):
    h, event, _ = _npy_run(any_db, tmp_path)
    with h.fill_context(retry_intervals=[]) as fc, pytest.raises(MissingFileError) as info:
        fc.fill(event)
    assert LateNpyHandler.attempts == 1
    assert "tried once (retrying is off)" in str(info.value)


# ---------------------------------------------------------------- stream readers
def test_stream_file_that_appears_late_is_read(any_db, tmp_path):
    h, path = _stream_run(any_db, tmp_path)
    thread = _appear_later(path, _write_h5, CountingHDF5Reader.failed)
    with h.fill_context(retry_intervals=[0.1] * 100) as fc:
        df = fc.fill_table(h.table().compute())
    thread.join()
    np.testing.assert_array_equal(np.stack(df["cam"].tolist()), [FRAME, FRAME + 1, FRAME + 2])
    assert CountingHDF5Reader.attempts >= 2


def test_stream_file_missing_after_the_retries(any_db, tmp_path):
    h, path = _stream_run(any_db, tmp_path)
    with dask.config.set({CONFIG_KEY: [0.01, 0.01]}):
        lazy = h.table(fill=True)
    with pytest.raises(MissingFileError) as info:
        lazy.compute(scheduler="sync")
    assert CountingHDF5Reader.attempts == 3
    assert path in str(info.value) and "tried 3 times" in str(info.value)


def test_stream_no_retry_when_off(any_db, tmp_path):
    h, _ = _stream_run(any_db, tmp_path)
    with pytest.raises(MissingFileError) as info:
        h.table(fill=True).compute(scheduler="sync")
    assert CountingHDF5Reader.attempts == 1
    assert "retrying is off" in str(info.value)


# ---------------------------------------------------------------- configuration
def test_retry_intervals_resolution():
    assert resolve_retry_intervals([1, 2.5]) == (1.0, 2.5)
    with dask.config.set({CONFIG_KEY: None}):
        assert resolve_retry_intervals() == DEFAULT_RETRY_INTERVALS == (0.1, 0.2, 0.4, 0.8)
    with dask.config.set({CONFIG_KEY: [0.5]}):
        assert resolve_retry_intervals() == (0.5,)
        assert resolve_retry_intervals([]) == ()
    for bad in ([-1], ["soon"], "0.1", 3, [float("nan")]):
        with pytest.raises(InvalidArgumentError, match="seconds"):
            resolve_retry_intervals(bad)
    with dask.config.set({CONFIG_KEY: "fast"}), pytest.raises(InvalidArgumentError,
                                                              match=CONFIG_KEY):
        resolve_retry_intervals()


def test_recipes_carry_the_intervals(db, make_run, insert):
    h = db[insert(db, make_run()).uid]
    with dask.config.set({CONFIG_KEY: [0.25, 0.5]}):
        recipe = h.event_source.fill_recipe(h)
    assert pickle.loads(pickle.dumps(recipe)).retry_intervals == (0.25, 0.5)
    assert h.event_source.fill_recipe(h).retry_intervals == ()  # the tests' config


@pytest.mark.slow
def test_client_config_reaches_worker_processes(tmp_path):
    """A worker process keeps the config of when it started; the recipe carries the client's."""
    distributed = pytest.importorskip("distributed")
    db = Broker.from_uri(f"sqlite:///{tmp_path / 'catalog.db'}")
    h, _, path = _npy_run(db, tmp_path)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        with dask.config.set({CONFIG_KEY: [0.01, 0.01]}):  # after the worker started
            lazy = h.table(fill=True)
        assert client.run(lambda: dask.config.get(CONFIG_KEY)) == {
            w: [] for w in client.scheduler_info()["workers"]}
        with pytest.raises(MissingFileError, match="tried 3 times"):
            lazy.compute()
