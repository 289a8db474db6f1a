"""Reusable memory for blocks of frames and of scalar columns: a small per-process pool.

Every partition of filled frames is read into a fresh block of tens of MB, and
the scalar columns of a partition into a block per dtype (88 MB for a million
events of eleven fields).  A fresh block costs the kernel a page fault (and
zeroing) per page at first touch -- on a Dask worker, whose nanny sets
``MALLOC_TRIM_THRESHOLD_`` so that freed memory goes back to the system at once,
that is every block, and it costs as much as reading the frames from the page
cache.  :class:`BlockPool` keeps a few blocks per process and hands one out
again once nothing refers to it any more (no array is a view of it), so that a
worker reading partition after partition writes into memory that is already
mapped.

A block is idle when its reference count is the pool's own (CPython's
``sys.getrefcount``; every numpy view of a block holds a reference to it, and
views of views too).  Elsewhere the pool is off and blocks are plain ``np.empty``.

Examples
--------
>>> pool = BlockPool(max_blocks=2, min_bytes=0)
>>> a = pool.empty((4, 3), "u2")
>>> a_memory = a.__array_interface__["data"][0]
>>> del a
>>> b = pool.empty((4, 3), "u2")
>>> b.__array_interface__["data"][0] == a_memory
True
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from ..tunables import block_pool_bytes

__all__ = ["BlockPool", "block_pool"]

_REFCOUNTS = hasattr(sys, "getrefcount") and sys.implementation.name == "cpython"


class BlockPool:
    """Blocks (numpy arrays) reused once nothing refers to them.

    Parameters
    ----------
    max_blocks
        Most blocks the pool keeps (in use or idle); beyond, blocks are plain
        ``np.empty`` arrays.
    min_bytes
        Smaller blocks are never pooled.
    max_bytes
        Most bytes the pool keeps (in use or idle); None: no bound but
        ``max_blocks``; 0: nothing is pooled.
    """

    def __init__(self, max_blocks: int = 4, min_bytes: int = 1 << 20,
                 max_bytes: int | None = None):
        self.max_blocks = max_blocks
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self._blocks: list[np.ndarray] = []  # uint8 buffers the pool owns
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """Bytes of the blocks the pool keeps (in use or idle)."""
        return sum(b.nbytes for b in self._blocks)

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype``: an idle block if one fits."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        limit = self.max_bytes
        if not _REFCOUNTS or nbytes < self.min_bytes or dtype.hasobject or \
                (limit is not None and nbytes > limit):
            return np.empty(shape, dtype=dtype)
        with self._lock:
            idle = []
            for block in self._blocks:
                # references: the list, this loop's name, getrefcount's argument
                if sys.getrefcount(block) == 3:
                    if block.nbytes == nbytes:
                        return block.view(dtype).reshape(shape)
                    idle.append(block)
            busy = [b for b in self._blocks if not any(b is i for i in idle)]
            if len(busy) >= self.max_blocks or \
                    limit is not None and sum(b.nbytes for b in busy) + nbytes > limit:
                return np.empty(shape, dtype=dtype)  # even without the idle blocks: no room

            def over() -> bool:
                return len(self._blocks) >= self.max_blocks or \
                    limit is not None and self.nbytes + nbytes > limit

            while over():  # make room: forget idle blocks of other sizes
                drop = idle.pop()
                self._blocks = [b for b in self._blocks if b is not drop]
                del drop
            del idle, busy
            block = np.empty(nbytes, dtype=np.uint8)
            self._blocks.append(block)
            return block.view(dtype).reshape(shape)

    def clear(self) -> None:
        """Forget every block (those in use stay valid: their views keep them)."""
        with self._lock:
            self._blocks.clear()


_pool: BlockPool | None = None
_pool_guard = threading.Lock()


def block_pool() -> BlockPool:
    """This process's pool of blocks, bounded by ``dask_broker.block-pool-bytes``."""
    global _pool
    with _pool_guard:
        if _pool is None:
            _pool = BlockPool()
        _pool.max_bytes = block_pool_bytes()
        return _pool
