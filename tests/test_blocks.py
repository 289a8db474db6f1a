"""The per-process pool of blocks (frames, scalar columns): reused only once nothing refers
to them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_broker.read.blocks import BlockPool


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_block_reused_once_idle_never_while_a_view_lives():
    pool = BlockPool(max_blocks=2, min_bytes=0)
    a = pool.empty((8, 4), "u2")
    first = address(a)
    view = a[3:5]
    del a
    b = pool.empty((8, 4), "u2")          # a's block is still seen through ``view``
    assert address(b) != first and not np.shares_memory(b, view)
    frames = [row for row in b]            # views of views keep the block too
    del b
    c = pool.empty((8, 4), "u2")
    assert address(c) != first and len(pool) == 2
    del view
    d = pool.empty((8, 4), "u2")           # now idle: reused
    assert address(d) == first
    assert len(frames) == 8


def test_bounded_and_other_sizes_evict_idle_blocks():
    pool = BlockPool(max_blocks=1, min_bytes=0)
    a = pool.empty((10,), "f8")
    b = pool.empty((10,), "f8")            # the one pooled block is busy: a plain array
    assert len(pool) == 1 and not np.shares_memory(a, b)
    del a
    c = pool.empty((3, 3), "f4")           # another size: the idle block makes room
    assert len(pool) == 1 and c.shape == (3, 3) and c.dtype == np.float32


@pytest.mark.parametrize("dtype, shape", [("O", (4,)), ("f8", (2,))])
def test_objects_and_small_blocks_are_not_pooled(dtype, shape):
    pool = BlockPool(max_blocks=2, min_bytes=1024)
    pool.empty(shape, dtype)
    assert len(pool) == 0


@pytest.fixture
def fresh_pool(monkeypatch):
    """This process's pool, empty and pooling blocks of any size."""
    from dask_broker.read import blocks

    pool = BlockPool(max_blocks=4, min_bytes=0)
    monkeypatch.setattr(blocks, "_pool", pool)
    return pool


def test_scalar_partitions_reuse_a_dropped_partitions_memory_never_a_live_ones(
        db, make_run, insert, fresh_pool):
    run = insert(db, make_run(n_primary=30, n_baseline=0, external=False))
    plan = db[run.uid].event_source.plan(db[run.uid], "primary")
    (spec,) = plan.specs
    reader = plan.reader()
    first = reader(spec)
    numbers = [c for c in first.columns if first[c].dtype.kind in "fib"]
    assert len(numbers) >= 2
    kept = first.copy(deep=True)
    memory = {address(first[c].to_numpy()) for c in numbers} | {address(first.index.to_numpy())}
    second = reader(spec)                  # ``first`` lives: other memory
    assert all(not np.shares_memory(second[c].to_numpy(), first[c].to_numpy())
               for c in numbers)
    second.iloc[:, :] = second.iloc[::-1].to_numpy()  # scribble on the second partition
    pd.testing.assert_frame_equal(first, kept)
    del first, second
    third = reader(spec)                   # both dropped: a block is written again
    assert any(address(third[c].to_numpy()) in memory for c in numbers)
    assert all(any(np.shares_memory(third[c].to_numpy(), block) for block in fresh_pool._blocks)
               for c in numbers)  # every number column lives in a pooled block
    pd.testing.assert_frame_equal(third, kept)


def test_bounded_by_bytes_evicting_idle_blocks_never_busy_ones():
    pool = BlockPool(max_blocks=4, min_bytes=0, max_bytes=100)
    a = pool.empty((5,), "f8")             # 40 B pooled
    b = pool.empty((6,), "f8")             # 48 B pooled: 88 B
    c = pool.empty((3,), "f8")             # 24 B more would pass 100 B: a plain array
    assert len(pool) == 2 and pool.nbytes == 88
    assert not any(np.shares_memory(c, x) for x in (a, b))
    del a
    d = pool.empty((6,), "f8")             # a's idle 40 B make room for 48 B
    assert len(pool) == 2 and pool.nbytes == 96 and not np.shares_memory(d, b)
    assert pool.empty((20,), "f8").nbytes == 160 and pool.nbytes == 96  # larger than the bound
    del d
    e = pool.empty((7,), "f8")             # 56 B: busy b (48 B) + 56 B > 100 B, even with
    assert pool.nbytes == 96 and not np.shares_memory(e, b)  # d's idle block dropped: kept


def test_process_pool_follows_the_dask_config():
    import dask

    from dask_broker.read.blocks import block_pool

    with dask.config.set({"dask_broker.block-pool-bytes": 0}):
        pool = block_pool()
        pool.clear()
        a = pool.empty((1 << 18,), "f8")    # 2 MiB: above min_bytes, but reuse is off
        assert len(pool) == 0 and a.nbytes == 1 << 21
    with dask.config.set({"dask_broker.block-pool-bytes": "4MiB"}):
        b = block_pool().empty((1 << 18,), "f8")
        assert len(block_pool()) == 1 and block_pool().nbytes == 1 << 21
        del b
    block_pool().clear()
    with dask.config.set({"dask_broker.block-pool-bytes": "lots"}):
        with pytest.raises(ValueError, match="block-pool-bytes"):
            block_pool()
