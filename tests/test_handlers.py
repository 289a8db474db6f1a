"""The built-in handlers (AD_HDF5, NPY), the HDF5 lock and the handler registry."""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from importlib.metadata import EntryPoint

import h5py
import numpy as np
import pytest

from dask_broker.errors import DuplicateHandlerError, HandlerNotFoundError
from dask_broker.handlers import (
    HDF5_LOCK,
    AreaDetectorHDF5Handler,
    HandlerRegistry,
    NpyHandler,
    PerProcessLock,
    read_many,
)
from dask_broker.handlers.testing import write_ad_hdf5, write_npy


def _open_paths() -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return paths


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@pytest.fixture
def frames():
    rng = np.random.default_rng(42)
    return rng.integers(0, 60000, size=(12, 4, 5), dtype="uint16")


@pytest.fixture
def h5file(tmp_path, frames):
    return write_ad_hdf5(tmp_path / "det.h5", frames)


def _direct(path, start, stop):
    with h5py.File(path, "r") as f:
        return f["/entry/data/data"][start:stop]


# ---------------------------------------------------------------- AD_HDF5
def test_ad_hdf5_one_frame_per_point(h5file):
    with AreaDetectorHDF5Handler(h5file) as h:
        for point in (0, 5, 11):
            value = h(point_number=point)
            assert value.shape == (1, 4, 5)  # as area-detector-handlers gives it
            np.testing.assert_array_equal(value, _direct(h5file, point, point + 1))


@pytest.mark.parametrize("fpp", [2, 3])
def test_ad_hdf5_several_frames_per_point(h5file, fpp):
    with AreaDetectorHDF5Handler(h5file, frame_per_point=fpp) as h:
        for point in range(12 // fpp):
            value = h(point_number=point)
            assert value.shape == (fpp, 4, 5)
            np.testing.assert_array_equal(value, _direct(h5file, point * fpp, (point + 1) * fpp))


@pytest.mark.parametrize("fpp", [1, 2])
def test_ad_hdf5_read_many_equals_one_at_a_time(h5file, fpp):
    points = [3, 0, 1, 2, 5, 1]  # unordered, a gap, a repeat
    with AreaDetectorHDF5Handler(h5file, frame_per_point=fpp) as h:
        many = h.read_many([{"point_number": p} for p in points])
        single = [h(point_number=p) for p in points]
    assert len(many) == len(points)
    for a, b in zip(many, single, strict=True):
        np.testing.assert_array_equal(a, b)
    # A repeated point gets its own array, not a view shared with the first.
    assert not np.shares_memory(many[5], many[2])


class _CountingDataset:
    def __init__(self, dataset, calls):
        self._dataset, self._calls = dataset, calls
        self.shape = dataset.shape

    def __getitem__(self, key):
        self._calls.append(key)
        return self._dataset[key]


def test_ad_hdf5_read_many_reads_one_slice_per_contiguous_run(h5file, monkeypatch):
    calls: list = []
    h = AreaDetectorHDF5Handler(h5file, frame_per_point=2)
    original = h._dataset
    monkeypatch.setattr(h, "_dataset", lambda: _CountingDataset(original(), calls))
    h.read_many([{"point_number": p} for p in [0, 1, 2, 4, 5]])
    h.close()
    assert calls == [slice(0, 6), slice(8, 12)]


def test_ad_hdf5_out_of_range_and_bad_arguments(h5file):
    with AreaDetectorHDF5Handler(h5file, frame_per_point=5) as h:
        with pytest.raises(IndexError, match="point_number 2 .*holds 12 frames"):
            h(point_number=2)
        with pytest.raises(IndexError):
            h(point_number=-1)
        with pytest.raises(TypeError):
            h.read_many([{"point": 0}])
    with pytest.raises(ValueError, match="frame_per_point"):
        AreaDetectorHDF5Handler(h5file, frame_per_point=0)


def test_ad_hdf5_missing_dataset(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with AreaDetectorHDF5Handler(path) as h, pytest.raises(KeyError, match="/entry/data/data"):
        h(point_number=0)


@needs_proc
def test_ad_hdf5_opens_lazily_and_closes(h5file):
    h = AreaDetectorHDF5Handler(h5file)
    assert h5file not in _open_paths()            # constructing opens nothing
    h(point_number=0)
    assert _open_paths().count(h5file) == 1
    h(point_number=1)
    assert _open_paths().count(h5file) == 1        # one open file, reused
    h.close()
    assert h5file not in _open_paths()
    h.close()                                      # idempotent
    np.testing.assert_array_equal(h(point_number=2), _direct(h5file, 2, 3))  # re-opens
    h.close()
    assert h5file not in _open_paths()


@needs_proc
def test_ad_hdf5_keeps_its_dataset_and_the_handler_cache_still_closes_the_file(tmp_path, frames):
    from dask_broker.handlers import HandlerCache

    first = write_ad_hdf5(tmp_path / "a.h5", frames)
    second = write_ad_hdf5(tmp_path / "b.h5", frames)
    cache = HandlerCache(maxsize=1)
    with cache.acquire(("a", first), lambda: AreaDetectorHDF5Handler(first)) as (h, _):
        h(point_number=0)
        dataset = h._dataset()
        out = np.empty((2, *frames.shape[1:]), dtype=frames.dtype)
        h.read_into([{"point_number": 3}, {"point_number": 4}], out)
        assert h._dataset() is dataset                 # looked up once, kept with the file
        np.testing.assert_array_equal(out, frames[3:5])
    assert _open_paths().count(first) == 1
    with cache.acquire(("b", second), lambda: AreaDetectorHDF5Handler(second)) as (other, _):
        other(point_number=0)                          # evicting the first closes its file
    assert first not in _open_paths()
    assert h._data is None
    np.testing.assert_array_equal(h(point_number=5), frames[5:6])  # re-opens, looks up again
    h.close()
    cache.close_all()
    assert first not in _open_paths() and second not in _open_paths()


def test_ad_hdf5_get_file_list(h5file):
    h = AreaDetectorHDF5Handler(h5file)
    assert h.get_file_list([{"point_number": 0}, {"point_number": 1}]) == [h5file]


def test_ad_hdf5_matches_area_detector_handlers(h5file):
    adh = pytest.importorskip("area_detector_handlers.handlers")
    for fpp in (1, 3):
        theirs = adh.AreaDetectorHDF5Handler(h5file, frame_per_point=fpp)
        try:
            with AreaDetectorHDF5Handler(h5file, frame_per_point=fpp) as ours:
                for point in range(12 // fpp):
                    expected = np.asarray(theirs(point_number=point))
                    got = ours(point_number=point)
                    assert got.shape == expected.shape == (fpp, 4, 5)  # (1, H, W) for fpp=1
                    assert got.dtype == expected.dtype
                    np.testing.assert_array_equal(got, expected)
        finally:
            theirs.close()


def test_ad_hdf5_reads_hold_the_hdf5_lock(h5file):
    h = AreaDetectorHDF5Handler(h5file)
    done = threading.Event()

    def read():
        h(point_number=0)
        done.set()

    with HDF5_LOCK:
        thread = threading.Thread(target=read)
        thread.start()
        assert not done.wait(0.2)  # blocked on the lock
    assert done.wait(10)
    thread.join()
    h.close()


def test_hdf5_lock_is_per_process_and_pickles_by_name():
    copy = pickle.loads(pickle.dumps(HDF5_LOCK))
    assert copy == HDF5_LOCK and copy._lock is HDF5_LOCK._lock
    assert PerProcessLock("other")._lock is not HDF5_LOCK._lock
    with copy:
        assert HDF5_LOCK.acquire(blocking=True)  # re-entrant: same lock
        HDF5_LOCK.release()


# ---------------------------------------------------------------- NPY
def test_npy_handler(tmp_path):
    array = np.arange(12.0).reshape(3, 4)
    path = write_npy(tmp_path / "a.npy", array)
    h = NpyHandler(path)
    np.testing.assert_array_equal(h(), np.load(path))
    many = h.read_many([{}, {}])
    for value in many:
        np.testing.assert_array_equal(value, array)
    assert not np.shares_memory(many[0], many[1])
    assert h.get_file_list([{}]) == [path]
    with pytest.raises(TypeError):
        h.read_many([{"index": 1}])
    h.close()


@needs_proc
def test_npy_handler_keeps_no_file_open(tmp_path):
    path = write_npy(tmp_path / "a.npy", np.arange(3))
    h = NpyHandler(path)
    h()
    assert path not in _open_paths()


def test_read_many_helper_falls_back_to_calls():
    class Plain:
        def __call__(self, x):
            return x + 1

    class Bulk(Plain):
        def read_many(self, kwargs_list):
            return [k["x"] * 10 for k in kwargs_list]

    class Wrong(Plain):
        def read_many(self, kwargs_list):
            return []

    assert read_many(Plain(), [{"x": 1}, {"x": 2}]) == [2, 3]
    assert read_many(Bulk(), [{"x": 1}, {"x": 2}]) == [10, 20]
    with pytest.raises(ValueError, match="returned 0 values for 1 datum"):
        read_many(Wrong(), [{"x": 1}])


# ---------------------------------------------------------------- registry
class MyHandler:
    def __init__(self, path, **kwargs):
        self.path = path

    def __call__(self, **kwargs):
        return np.zeros(1)


class OtherHandler(MyHandler):
    pass


def _ep(name, value, group="databroker.handlers"):
    return EntryPoint(name=name, value=value, group=group)


def test_builtins_are_found():
    reg = HandlerRegistry(entry_point_groups=())
    assert reg.lookup("AD_HDF5") is AreaDetectorHDF5Handler
    assert reg.lookup("NPY") is NpyHandler
    assert {"AD_HDF5", "NPY"} <= set(reg.specs())
    assert "NPY" in reg


def test_register_duplicate_overwrite_deregister():
    reg = HandlerRegistry(entry_point_groups=())
    reg.register("MINE", MyHandler)
    reg.register("MINE", MyHandler)  # the same class again: a no-op
    with pytest.raises(DuplicateHandlerError, match="'MINE'.*overwrite=True"):
        reg.register("MINE", OtherHandler)
    reg.register("MINE", OtherHandler, overwrite=True)
    assert reg.lookup("MINE") is OtherHandler
    assert reg.deregister("MINE") is OtherHandler
    with pytest.raises(HandlerNotFoundError, match="MINE"):
        reg.lookup("MINE")
    with pytest.raises(HandlerNotFoundError, match="no explicitly registered handler"):
        reg.deregister("MINE")
    with pytest.raises(TypeError):
        reg.register("X", "not a class")


def test_lookup_error_says_how_to_register_and_lists_known_specs():
    reg = HandlerRegistry(entry_point_groups=())
    with pytest.raises(HandlerNotFoundError) as info:
        reg.lookup("NOPE")
    msg = str(info.value)
    assert "'NOPE'" in msg
    assert "dask_broker.handlers.register('NOPE', HandlerClass)" in msg
    assert "AD_HDF5" in msg and "NPY" in msg
    assert isinstance(info.value, KeyError)


def test_explicit_beats_builtin_and_deregister_restores_it():
    reg = HandlerRegistry(entry_point_groups=())
    reg.register("AD_HDF5", MyHandler)  # a built-in spec needs no overwrite
    assert reg.lookup("AD_HDF5") is MyHandler
    reg.deregister("AD_HDF5")
    assert reg.lookup("AD_HDF5") is AreaDetectorHDF5Handler


def test_entry_points_precedence(fake_entry_points):
    groups, _ = fake_entry_points
    groups["databroker.handlers"] = [
        _ep("AD_HDF5", f"{__name__}:OtherHandler"),
        _ep("FROM_DATABROKER", f"{__name__}:OtherHandler"),
        _ep("BOTH", f"{__name__}:OtherHandler"),
    ]
    groups["dask_broker.handlers"] = [
        _ep("BOTH", f"{__name__}:MyHandler", group="dask_broker.handlers"),
    ]
    reg = HandlerRegistry()
    assert reg.lookup("FROM_DATABROKER") is OtherHandler      # discovered
    assert reg.lookup("AD_HDF5") is AreaDetectorHDF5Handler   # built-in beats entry point
    assert reg.lookup("BOTH") is MyHandler                    # dask_broker group first
    reg.register("AD_HDF5", MyHandler)
    reg.register("FROM_DATABROKER", MyHandler)
    assert reg.lookup("AD_HDF5") is MyHandler                 # explicit beats both
    assert reg.lookup("FROM_DATABROKER") is MyHandler
    assert {"FROM_DATABROKER", "BOTH"} <= set(reg.specs())


def test_entry_points_are_discovered_once_and_refreshed(fake_entry_points):
    groups, calls = fake_entry_points
    reg = HandlerRegistry()
    assert calls == []  # lazy: nothing discovered at construction
    with pytest.raises(HandlerNotFoundError):
        reg.lookup("LATE")
    n = len(calls)
    assert n == 2  # both groups, once
    groups["databroker.handlers"] = [_ep("LATE", f"{__name__}:MyHandler")]
    with pytest.raises(HandlerNotFoundError):
        reg.lookup("LATE")  # still the first discovery
    assert len(calls) == n
    reg.refresh()
    assert reg.lookup("LATE") is MyHandler
    assert len(calls) == 2 * n


def test_broken_entry_point_is_a_warning(fake_entry_points):
    groups, _ = fake_entry_points
    groups["databroker.handlers"] = [
        _ep("BROKEN", "no_such_module_for_dask_broker_tests:Handler"),
        _ep("NOT_CALLABLE", f"{__name__}:NOT_CALLABLE"),
        _ep("FALLBACK", "no_such_module_for_dask_broker_tests:Handler"),
        _ep("GOOD", f"{__name__}:MyHandler"),
    ]
    groups["dask_broker.handlers"] = [
        _ep("FALLBACK", "no_such_module_for_dask_broker_tests:Other", group="dask_broker.handlers"),
    ]
    groups["databroker.handlers"].append(_ep("FALLBACK", f"{__name__}:OtherHandler"))
    reg = HandlerRegistry()
    assert reg.lookup("GOOD") is MyHandler  # other entry points do not break anything
    with pytest.warns(RuntimeWarning, match="BROKEN = no_such_module_for_dask_broker_tests"):
        with pytest.raises(HandlerNotFoundError, match="failed to load") as info:
            reg.lookup("BROKEN")
    assert "ModuleNotFoundError" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every lookup
        with pytest.raises(HandlerNotFoundError):
            reg.lookup("BROKEN")
    with pytest.warns(RuntimeWarning, match="not callable"):
        with pytest.raises(HandlerNotFoundError):
            reg.lookup("NOT_CALLABLE")
    with pytest.warns(RuntimeWarning, match="FALLBACK"):
        assert reg.lookup("FALLBACK") is OtherHandler  # the next candidate is used


NOT_CALLABLE = 42


def test_area_detector_handlers_entry_points_discovered_but_builtin_wins():
    adh = pytest.importorskip("area_detector_handlers.handlers")
    reg = HandlerRegistry()
    assert "AD_TIFF" in reg.specs()
    assert reg.lookup("AD_TIFF") is adh.AreaDetectorTiffHandler
    assert reg.lookup("AD_HDF5") is AreaDetectorHDF5Handler
    reg.register("AD_HDF5", adh.AreaDetectorHDF5Handler)
    assert reg.lookup("AD_HDF5") is adh.AreaDetectorHDF5Handler


def test_registry_pickles_explicit_registrations(fake_entry_points):
    reg = HandlerRegistry()
    reg.register("MINE", MyHandler)
    reg.lookup("AD_HDF5")
    copy = pickle.loads(pickle.dumps(reg))
    assert copy.lookup("MINE") is MyHandler
    assert copy.lookup("AD_HDF5") is AreaDetectorHDF5Handler


def test_module_level_functions_use_the_default_registry():
    from dask_broker import handlers

    handlers.register("TEST_MODULE_LEVEL", MyHandler)
    try:
        assert handlers.lookup("TEST_MODULE_LEVEL") is MyHandler
        assert handlers.default_registry.lookup("TEST_MODULE_LEVEL") is MyHandler
        with pytest.raises(DuplicateHandlerError):
            handlers.register("TEST_MODULE_LEVEL", OtherHandler)
    finally:
        assert handlers.deregister("TEST_MODULE_LEVEL") is MyHandler
    handlers.refresh_entry_points()
    assert handlers.lookup("AD_HDF5") is AreaDetectorHDF5Handler


@pytest.mark.parametrize("fpp", [1, 2])
def test_ad_hdf5_read_into_equals_read_many(h5file, fpp):
    points = [3, 0, 1, 2, 5, 1]  # unordered, a gap, a repeat
    with AreaDetectorHDF5Handler(h5file, frame_per_point=fpp) as h:
        many = h.read_many([{"point_number": p} for p in points])
        out = np.zeros((len(points), fpp, 4, 5), dtype=many[0].dtype)
        h.read_into([{"point_number": p} for p in points], out)
        assert h.describe(point_number=0) == ((fpp, 4, 5), many[0].dtype)
        if fpp == 1:  # rows of the frame's own shape are accepted too
            squeezed = np.zeros((len(points), 4, 5), dtype="f8")
            h.read_into([{"point_number": p} for p in points], squeezed)
            np.testing.assert_array_equal(squeezed, np.stack(many)[:, 0])
        with pytest.raises(ValueError, match="do not hold"):
            h.read_into([{"point_number": 0}], np.zeros((1, 3, 3)))
        with pytest.raises(IndexError, match="holds 12 frames"):
            h.read_into([{"point_number": 12 // fpp}], np.zeros((1, fpp, 4, 5)))
    np.testing.assert_array_equal(out, np.stack(many))


def test_read_into_helper_falls_back_to_read_many():
    from dask_broker.handlers.base import read_into

    class Plain:
        def __call__(self, x):
            return np.full(2, x)

    out = read_into(Plain(), [{"x": 1}, {"x": 5}], np.zeros((2, 2)))
    np.testing.assert_array_equal(out, [[1, 1], [5, 5]])
