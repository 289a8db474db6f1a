"""Handler lifetime: the LRU bound, closing on exit and on error, the shared cache and plugin."""

from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from dask_broker.errors import HandlerError
from dask_broker.fill import FillContext
from dask_broker.handlers import (
    DEFAULT_SHARED_MAX_OPEN,
    AreaDetectorHDF5Handler,
    HandlerCache,
    HandlerCachePlugin,
    NpyHandler,
    close_shared_handlers,
    shared_handler_cache,
)
from dask_broker.handlers.testing import make_external_run

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")

N_FILES = 4          # AD_HDF5 resources, 3 points each
N_EVENTS = 12        # one NPY resource per event
N_RESOURCES = N_FILES + N_EVENTS


def open_fds() -> list[str]:
    """What this process's file descriptors point to."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


def open_files_under(directory) -> list[str]:
    prefix = os.path.join(str(directory), "")
    return [p for p in open_fds() if p.startswith(prefix)]


class Tracker:
    """Instrumented handler classes that record which handlers are alive."""

    def __init__(self):
        self.live: set[int] = set()
        self.created: list[str] = []
        self.max_live = 0

    def opened(self, handler, path):
        self.live.add(id(handler))
        self.created.append(path)
        self.max_live = max(self.max_live, len(self.live))

    def closed(self, handler):
        self.live.discard(id(handler))

    def registry(self, close_error: Exception | None = None) -> dict:
        tracker = self

        class TrackedHDF5(AreaDetectorHDF5Handler):
            def __init__(self, path, **kwargs):
                super().__init__(path, **kwargs)
                tracker.opened(self, path)

            def close(self):
                tracker.closed(self)
                super().close()
                if close_error is not None:
                    raise close_error

        class TrackedNpy(NpyHandler):
            def __init__(self, path, **kwargs):
                super().__init__(path, **kwargs)
                tracker.opened(self, path)

            def close(self):
                tracker.closed(self)
                if close_error is not None:
                    raise close_error

        return {"AD_HDF5": TrackedHDF5, "NPY": TrackedNpy}


@pytest.fixture
def run(tmp_path):
    return make_external_run(tmp_path, n_files=N_FILES, points_per_file=3)


@pytest.fixture
def tracker():
    return Tracker()


@pytest.fixture
def baseline_fds(run):
    # Warm up (imports, h5py's first open) so later fd counts compare like with like.
    with FillContext([run.descriptor], run.resources, run.datum) as ctx:
        ctx.fill(run.events[0])
    return len(open_fds())


def ctx_for(run, tracker, **kwargs):
    return FillContext([run.descriptor], run.resources, run.datum,
                       registry=tracker.registry(), **kwargs)


# ---------------------------------------------------------------- the LRU bound
@pytest.mark.parametrize("max_open", [1, 2, 3, None])
def test_bound_is_respected_and_everything_closed_on_exit(run, tracker, tmp_path, baseline_fds,
                                                          max_open):
    bound = N_RESOURCES if max_open is None else max_open
    with ctx_for(run, tracker, max_open=max_open) as ctx:
        for event in run.events:
            ctx.fill(event)
            assert len(tracker.live) <= bound
            assert ctx.open_handlers == len(tracker.live)
            assert len(open_files_under(tmp_path)) <= bound
        df = pd.DataFrame([e["data"] for e in run.events])
        filled = ctx.fill_table(df)
        assert len(tracker.live) <= bound
        assert len(open_files_under(tmp_path)) <= min(bound, N_FILES)
    assert tracker.max_live <= bound
    assert tracker.live == set()
    assert open_files_under(tmp_path) == []
    assert len(open_fds()) <= baseline_fds
    assert all(isinstance(v, np.ndarray) for v in filled["img"])
    if max_open is None:
        # Unbounded: one handler per resource, created once, all of them alive until exit.
        assert sorted(tracker.created) == sorted(set(tracker.created))
        assert len(tracker.created) == N_RESOURCES == tracker.max_live


def test_handler_created_once_per_resource_within_the_bound(run, tracker):
    with ctx_for(run, tracker, max_open=N_RESOURCES) as ctx:
        for _ in range(2):
            for event in run.events:
                ctx.fill(event)
            ctx.fill_datum(list(run.datum))
    assert len(tracker.created) == N_RESOURCES


def test_closed_on_exit_when_the_body_raises(run, tracker, tmp_path):
    with pytest.raises(ZeroDivisionError):
        with ctx_for(run, tracker, max_open=3) as ctx:
            for event in run.events[:5]:
                ctx.fill(event)
            assert tracker.live and open_files_under(tmp_path)
            1 / 0
    assert tracker.live == set()
    assert open_files_under(tmp_path) == []


def test_closed_on_exit_when_filling_raises(run, tracker, tmp_path):
    os.remove(run.files[-2])  # the last HDF5 file
    with pytest.raises(Exception):
        with ctx_for(run, tracker) as ctx:
            for event in run.events:
                ctx.fill(event)
    assert tracker.live == set()
    assert open_files_under(tmp_path) == []


def test_fresh_handler_whose_read_fails_is_closed_at_once(run, tracker, tmp_path):
    ids = [e["data"]["img"] for e in run.events[:3]]
    bad = dict(run.datum)
    bad[ids[0]] = {**bad[ids[0]], "datum_kwargs": {"point_number": 99}}
    with FillContext([run.descriptor], run.resources, bad, registry=tracker.registry()) as ctx:
        with pytest.raises(HandlerError, match="point_number 99"):
            ctx.fill_datum(ids)
        assert tracker.live == set() and ctx.open_handlers == 0
        assert open_files_under(tmp_path) == []
        ctx.fill_datum(ids[1:])  # the resource itself is still usable
        assert ctx.open_handlers == 1


def test_close_errors_are_warned_not_raised(run, tracker, tmp_path):
    registry = tracker.registry(close_error=OSError("close failed"))
    ctx = FillContext([run.descriptor], run.resources, run.datum, registry=registry, max_open=1)
    with pytest.warns(RuntimeWarning) as record:
        with ctx:
            filled = ctx.fill(run.events[0])  # two resources, bound 1: one eviction
            assert len(record) == 1           # the evicted one, at eviction
    messages = [str(w.message) for w in record]
    assert len(messages) == 2                 # then the other one, at exit
    assert "TrackedHDF5 of resource" in messages[0] and "TrackedNpy of resource" in messages[1]
    assert all("raised OSError: close failed; ignored" in m for m in messages)
    np.testing.assert_array_equal(filled["data"]["spectrum"],
                                  np.load(run.locations[run.events[0]["data"]["spectrum"]][0]))
    assert tracker.live == set()
    assert open_files_under(tmp_path) == []


def test_forgotten_context_is_closed_when_collected(run, tracker, tmp_path):
    ctx = ctx_for(run, tracker)
    ctx.fill(run.events[0])
    assert tracker.live
    del ctx
    gc.collect()
    assert tracker.live == set()
    assert open_files_under(tmp_path) == []


def test_context_is_reusable_after_close(run, tracker):
    ctx = ctx_for(run, tracker)
    with ctx:
        ctx.fill(run.events[0])
    with ctx:
        ctx.fill(run.events[0])
        assert len(tracker.live) == 2
    assert tracker.live == set()


# ---------------------------------------------------------------- HandlerCache
class Closable:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def close(self):
        self.log.append(self.name)


def test_cache_evicts_least_recently_used():
    log: list[str] = []
    cache = HandlerCache(maxsize=2)
    for name in "ab":
        with cache.acquire(name, lambda n=name: Closable(n, log)):
            pass
    with cache.acquire("a", lambda: Closable("a2", log)) as (handler, created):
        assert handler.name == "a" and not created      # hit; "a" is now most recent
    with cache.acquire("c", lambda: Closable("c", log)):
        pass
    assert log == ["b"] and cache.keys() == ["a", "c"]
    cache.maxsize = 1
    assert log == ["b", "a"] and cache.keys() == ["c"]
    assert cache.close_all() == 1 and log == ["b", "a", "c"] and len(cache) == 0
    with cache.acquire("d", lambda: Closable("d", log)) as (_, created):
        assert created                                   # usable after close_all
    cache.discard("d")
    cache.discard("not there")
    assert log[-1] == "d"


def test_cache_never_closes_a_handler_in_use():
    log: list[str] = []
    cache = HandlerCache(maxsize=1)
    with cache.acquire("a", lambda: Closable("a", log)):
        with cache.acquire("b", lambda: Closable("b", log)):
            assert log == []          # "a" evicted but still in use
        assert log == []
        assert cache.keys() == ["b"]
    assert log == ["a"]               # closed when released
    with cache.acquire("b", lambda: Closable("b2", log)):
        cache.close_all()
        assert log == ["a"]
    assert log == ["a", "b"]


def test_cache_validates_size_and_refuses_pickling():
    import pickle

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            HandlerCache(bad)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(HandlerCache(1))


# ---------------------------------------------------------------- shared cache and plugin
@pytest.fixture
def shared():
    close_shared_handlers()
    cache = shared_handler_cache(maxsize=DEFAULT_SHARED_MAX_OPEN)
    yield cache
    close_shared_handlers()
    cache.maxsize = DEFAULT_SHARED_MAX_OPEN


def test_shared_cache_outlives_contexts(run, tracker, tmp_path, shared):
    registry = tracker.registry()  # the same classes for both contexts: the same cache keys
    for _ in range(2):
        with FillContext([run.descriptor], run.resources, run.datum, registry=registry,
                         cache=shared) as ctx:
            ctx.fill(run.events[0])
        assert len(tracker.live) == 2 == len(shared)    # kept for the next task
    assert len(tracker.created) == 2                      # reused, not re-created
    shared.maxsize = 1
    assert len(tracker.live) == 1
    assert close_shared_handlers() == 1
    assert tracker.live == set()
    assert open_files_under(tmp_path) == []


def _fill_in_task(descriptors, resources, datum, ids):
    with FillContext(descriptors, resources, datum, cache=shared_handler_cache()) as ctx:
        return ctx.fill_datum(ids)


def test_worker_plugin_bounds_and_closes_the_shared_cache(run, tmp_path, shared):
    distributed = pytest.importorskip("distributed")
    ids = [e["data"]["img"] for e in run.events]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            client.register_plugin(HandlerCachePlugin(max_open=2))
            assert shared.maxsize == 2   # in-process worker: this process's shared cache
            values = client.submit(_fill_in_task, [run.descriptor], run.resources,
                                   run.datum, ids).result()
            assert 1 <= len(shared) <= 2
            assert 1 <= len(open_files_under(tmp_path)) <= 2
    # Worker teardown ran the plugin's teardown.
    assert len(shared) == 0
    assert open_files_under(tmp_path) == []
    with FillContext([run.descriptor], run.resources, run.datum) as ctx:
        for value, expected in zip(values, ctx.fill_datum(ids), strict=True):
            np.testing.assert_array_equal(value, expected)


def test_plugin_teardown_closes_without_a_cluster(run, tracker, shared):
    plugin = HandlerCachePlugin(max_open=3)
    plugin.setup(worker=None)
    assert shared.maxsize == 3
    with ctx_for(run, tracker, cache=shared) as ctx:
        for event in run.events[:3]:
            ctx.fill(event)
    assert len(tracker.live) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugin.teardown(worker=None)
    assert tracker.live == set()


def test_bound_holds_with_concurrent_readers():
    """Threads that hold handlers count against the bound: a new open waits for a slot."""
    import threading
    import time as _time

    from dask_broker.handlers.cache import HandlerCache

    state = {"alive": 0, "max": 0}
    guard = threading.Lock()

    class Tracked:
        def __init__(self):
            with guard:
                state["alive"] += 1
                state["max"] = max(state["max"], state["alive"])

        def close(self):
            with guard:
                state["alive"] -= 1

    cache = HandlerCache(maxsize=2)

    def reader(offset):
        for i in range(20):
            with cache.acquire(f"file-{(i + offset) % 7}", Tracked):
                _time.sleep(0.002)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert state["max"] <= 2
    cache.close_all()
    assert state["alive"] == 0


def test_slow_open_does_not_stall_other_keys():
    """Opening happens outside the cache's lock: a hit on another key proceeds meanwhile,
    and a second thread asking for the key being opened waits for that one open."""
    import threading

    from dask_broker.handlers.cache import HandlerCache

    cache = HandlerCache(maxsize=4)
    with cache.acquire("fast", dict):
        pass
    started, release = threading.Event(), threading.Event()
    opened = []

    def slow_opener():
        opened.append("slow")
        started.set()
        assert release.wait(10)
        return {"slow": True}

    def open_slow():
        with cache.acquire("slow", slow_opener):
            pass

    t1 = threading.Thread(target=open_slow)
    t1.start()
    assert started.wait(10)
    hit = threading.Event()

    def use_fast():
        with cache.acquire("fast", dict) as (_, created):
            assert not created
            hit.set()

    t2 = threading.Thread(target=use_fast)
    t2.start()
    assert hit.wait(5)  # not blocked by the slow open
    t3 = threading.Thread(target=open_slow)
    t3.start()
    release.set()
    for t in (t1, t2, t3):
        t.join(10)
    assert opened == ["slow"]  # opened once, although two threads asked
    assert cache.close_all() == 2


def test_dropped_broker_closes_its_catalog_without_the_garbage_collector(tmp_path):
    """A Broker that goes out of scope closes its catalog file at once (no reference
    cycle that waits for the cyclic garbage collector), so another process sees the
    catalog checkpointed and its -wal file gone."""
    import event_model

    from dask_broker import Broker

    catalog = tmp_path / "catalog.db"
    enabled = gc.isenabled()
    gc.disable()
    try:
        db = Broker.from_uri(f"sqlite:///{catalog}")
        run = event_model.compose_run()
        db.insert("start", run.start_doc)
        db.insert("stop", run.compose_stop())
        assert open_files_under(tmp_path)
        del db
        assert open_files_under(tmp_path) == []
        assert not (tmp_path / "catalog.db-wal").exists()
    finally:
        if enabled:
            gc.enable()
