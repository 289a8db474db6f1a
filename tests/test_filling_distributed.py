"""Filling on a LocalCluster of worker processes: bounded open files, closed at teardown, faults."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import dask
import pytest

from dask_broker import Broker
from dask_broker.handlers import close_shared_handlers
from dask_broker.handlers.hdf5 import AreaDetectorHDF5Handler
from dask_broker.handlers.plugin import HandlerCachePlugin
from dask_broker.handlers.testing import make_external_run

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

# Handler classes defined here travel to worker processes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SlowHandler(AreaDetectorHDF5Handler):
    """The built-in AD_HDF5 handler, slowed down so that a compute can be interrupted."""

    def read_many(self, datum_kwargs_list):
        time.sleep(0.02 * len(datum_kwargs_list))
        return super().read_many(datum_kwargs_list)


def open_data_files(pid: int, folder: str) -> int:
    """How many files under ``folder`` process ``pid`` holds open (from /proc/<pid>/fd)."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(os.path.join(fd_dir, fd)).startswith(folder):
                count += 1
        except OSError:
            continue
    return count


class FdSampler(threading.Thread):
    """Samples the open data files of some processes until stopped; keeps the maximum."""

    def __init__(self, pids, folder):
        super().__init__(daemon=True)
        self.pids, self.folder = list(pids), folder
        self.max_per_pid = {pid: 0 for pid in self.pids}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            for pid in self.pids:
                self.max_per_pid[pid] = max(self.max_per_pid[pid], open_data_files(pid, self.folder))
            self.samples += 1

    def stop(self):
        self._stop_event.set()
        self.join()


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    ext = make_external_run(folder, n_files=240, points_per_file=2, frame_shape=(32, 32),
                            npy=False)
    db = Broker.temp()
    for name, doc in ext.documents:
        db.insert(name, doc)
    return db, db[-1], ext, str(folder)


#: The workers' bound on open files (dask config, handed to the worker processes).
MAX_OPEN = 16


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"dask_broker.max-open-files": MAX_OPEN}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _has_teardown(dask_worker) -> bool:
    return HandlerCachePlugin.name in dask_worker.plugins


def _expected_sum(ext) -> int:
    total = 0
    import h5py

    for path in ext.files:
        with h5py.File(path, "r") as f:
            total += int(f["entry/data/data"][()].sum(dtype="u8"))
    return total


def test_fill_on_workers_bounded_and_closed(many_files, client):
    db, h, ext, folder = many_files
    pids = list(client.run(os.getpid).values())
    df = h.table(fill=True, fields=["img"], chunk_size=120)  # 4 partitions of 120 frames, 60 files each
    assert df.npartitions == 4
    sampler = FdSampler(pids, folder)
    sampler.start()
    try:
        frames = client.compute(df).result()
    finally:
        sampler.stop()
    assert len(frames) == 480
    total = sum(int(a.sum(dtype="u8")) for a in frames["img"])
    assert total == _expected_sum(ext)
    assert sampler.samples > 10
    # each worker keeps at most dask_broker.max-open-files handlers alive (its process cache)
    assert max(sampler.max_per_pid.values()) <= MAX_OPEN
    # ... across tasks (changed on purpose: files stay open for the next task, as xarray's
    # FILE_CACHE keeps them), and the worker's teardown will close them
    assert all(open_data_files(pid, folder) <= MAX_OPEN for pid in pids)
    assert all(client.run(_has_teardown).values())
    client.run(close_shared_handlers)
    assert [open_data_files(pid, folder) for pid in pids] == [0, 0]


def test_shared_worker_cache_closed_by_plugin_teardown(many_files):
    db, h, ext, folder = many_files
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        c.register_plugin(HandlerCachePlugin(max_open=5))
        (pid,) = c.run(os.getpid).values()
        sampler = FdSampler([pid], folder)
        sampler.start()
        try:
            result = c.compute(h.to_xarray(chunk_size=60)["img"].sum()).result()
        finally:
            sampler.stop()
        assert int(result) == _expected_sum(ext)
        # files stay open between tasks, in the plugin's bounded cache ...
        held = open_data_files(pid, folder)
        assert 0 < held <= 5
        assert sampler.max_per_pid[pid] <= 5
        c.unregister_worker_plugin(HandlerCachePlugin.name)
        # ... which its teardown closes
        assert open_data_files(pid, folder) == 0


def test_worker_killed_mid_compute(many_files):
    db, h, ext, folder = many_files
    db.register_handler("AD_HDF5", SlowHandler)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as c:
            df = h.table(fill=True, fields=["img"], chunk_size=40)  # 12 tasks of ~0.8 s
            future = c.compute(df.img.apply(lambda a: int(a.sum(dtype="u8")),
                                            meta=("img", "i8")).sum())
            time.sleep(1.5)
            victim = next(iter(c.run(os.getpid).values()))
            os.kill(victim, signal.SIGKILL)
            assert future.result(timeout=120) == _expected_sum(ext)
    finally:
        db.deregister_handler("AD_HDF5")


def test_frames_values_with_a_client_compute_on_the_cluster(many_files, client):
    """to_xarray's frames read .values straight into one array only in this process;
    with a Client, .values computes on the workers, as any dask array."""
    db, h, ext, folder = many_files
    from dask_broker.read import xarray as read_xarray

    calls = []
    original = read_xarray.ColumnArray.read_all
    read_xarray.ColumnArray.read_all = lambda self, chunks: calls.append(1) or original(
        self, chunks)
    try:
        values = h.to_xarray(fields=["img"], chunk_size=120)["img"].values
    finally:
        read_xarray.ColumnArray.read_all = original
    assert calls == []
    assert values.shape[0] == 480 and int(values.sum(dtype="u8")) == _expected_sum(ext)
