"""The per-process pool of frame blocks: reused only once nothing refers to them."""

from __future__ import annotations

import numpy as np
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
