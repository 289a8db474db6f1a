"""dask_broker's tunables in dask.config, and the process-wide handler cache they size."""

from __future__ import annotations

import os

import dask
import pytest

from dask_broker import Broker, tunables
from dask_broker.errors import InvalidArgumentError
from dask_broker.handlers import close_shared_handlers, shared_handler_cache
from dask_broker.handlers.testing import make_external_run


def test_defaults_are_registered_with_dask_config():
    assert dask.config.get("dask_broker.partition-bytes") == "128MiB"
    assert dask.config.get("dask_broker.max-open-files") == 128
    assert dask.config.get("dask_broker.fill-retry-intervals") is not None
    assert tunables.partition_bytes() == 128 * 2**20
    assert tunables.max_open_files() == 128


@pytest.mark.parametrize("value, expected", [("64MiB", 64 * 2**20), ("1 GB", 10**9),
                                             (4096, 4096), ("1kiB", 1024)])
def test_partition_bytes_takes_dask_sizes(value, expected):
    with dask.config.set({"dask_broker.partition-bytes": value}):
        assert tunables.partition_bytes() == expected


@pytest.mark.parametrize("value", ["lots", 0, -5, True])
def test_bad_partition_bytes_say_what_to_give(value):
    with dask.config.set({"dask_broker.partition-bytes": value}):
        with pytest.raises(InvalidArgumentError, match="partition-bytes"):
            tunables.partition_bytes()


@pytest.mark.parametrize("value", [0, "many", 1.5])
def test_bad_max_open_files(value):
    with dask.config.set({"dask_broker.max-open-files": value}):
        with pytest.raises(InvalidArgumentError, match="max-open-files"):
            tunables.max_open_files()


def test_environment_variable_reaches_the_setting(monkeypatch):
    monkeypatch.setenv("DASK_DASK_BROKER__PARTITION_BYTES", "8MiB")
    config = {}
    dask.config.refresh(config=config)
    assert dask.config.get("dask_broker.partition-bytes", config=config) == "8MiB"


def test_shared_cache_follows_the_config():
    cache = shared_handler_cache()
    assert cache.maxsize == 128
    with dask.config.set({"dask_broker.max-open-files": 3}):
        assert shared_handler_cache() is cache and cache.maxsize == 3
    assert shared_handler_cache().maxsize == 128


def _open_under(folder) -> list[str]:
    prefix = os.path.join(str(folder), "")
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            out.append(target)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("bound", [1, 2, 3, None])
def test_tables_keep_files_in_the_bounded_process_cache(tmp_path, bound):
    """Filling in tasks (here the client's threads) keeps files open between reads, never
    more than dask_broker.max-open-files, until the process cache is closed."""
    ext = make_external_run(tmp_path, n_files=6, points_per_file=2, npy=False)
    db = Broker.temp()
    for name, doc in ext.documents:
        db.insert(name, doc)
    h = db[-1]
    close_shared_handlers()
    try:
        with dask.config.set({"dask_broker.max-open-files": bound}):
            first = h.table(fill=True, fields=["img"], chunk_size=4).compute()
            held = _open_under(tmp_path)
            assert 1 <= len(held) <= (6 if bound is None else bound)
            again = h.to_xarray(fields=["img"], chunk_size=4)["img"].values
            assert len(_open_under(tmp_path)) <= (6 if bound is None else bound)
        assert len(first) == 12 and again.shape[0] == 12
    finally:
        close_shared_handlers()
    assert _open_under(tmp_path) == []


def test_partition_bytes_sizes_the_partitions():
    from dask_broker.synthetic import scalar_scan_documents

    db = Broker.temp()
    for name, doc in scalar_scan_documents(20_000, baseline=False):
        db.insert(name, doc)
    h = db[-1]
    default = h.table().npartitions
    with dask.config.set({"dask_broker.partition-bytes": "256KiB"}):
        small = h.table()
    assert small.npartitions > default
    assert len(small.partitions[0].compute()) * 8 <= 256 * 1024
