"""dask_broker's tunables, in :mod:`dask.config` (as dask projects keep theirs).

The defaults live in ``dask_broker/dask_broker.yaml`` and are registered with
:func:`dask.config.update_defaults` when dask_broker is imported, so they show in
``dask.config.get("dask_broker")`` and may be overridden like any dask setting:

>>> import dask
>>> with dask.config.set({"dask_broker.partition-bytes": "64MiB"}):
...     partition_bytes()
67108864
>>> partition_bytes() == 128 * 2**20
True
>>> max_open_files()
128

Keys:

``dask_broker.partition-bytes``
    Target in-memory size of one partition (table, table_chunks, to_xarray chunk);
    an int or a string that :func:`dask.utils.parse_bytes` reads (``"64MiB"``).
``dask_broker.frame-partition-bytes``
    The same for partitions holding filled frames (``table(fill=True)``, ``to_xarray``).
``dask_broker.block-pool-bytes``
    Most memory each process keeps for reuse as partition blocks (``0``: no reuse);
    see :mod:`dask_broker.read.blocks`.
``dask_broker.max-open-files``
    Most handlers / stream readers each process keeps open (``null``: unbounded);
    see :func:`~dask_broker.handlers.cache.shared_handler_cache`.
``dask_broker.fill-retry-intervals``
    See :mod:`dask_broker.file_retry`.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml
from dask.utils import parse_bytes

from .errors import InvalidArgumentError

__all__ = ["PARTITION_BYTES", "FRAME_PARTITION_BYTES", "MAX_OPEN_FILES", "RETRY_INTERVALS",
           "BLOCK_POOL_BYTES", "partition_bytes", "frame_partition_bytes", "max_open_files",
           "block_pool_bytes", "parse_size",
           "defaults"]

PARTITION_BYTES = "dask_broker.partition-bytes"
FRAME_PARTITION_BYTES = "dask_broker.frame-partition-bytes"
MAX_OPEN_FILES = "dask_broker.max-open-files"
BLOCK_POOL_BYTES = "dask_broker.block-pool-bytes"
RETRY_INTERVALS = "dask_broker.fill-retry-intervals"

_FILE = os.path.join(os.path.dirname(__file__), "dask_broker.yaml")


def _load_defaults() -> dict:
    with open(_FILE) as f:
        return yaml.safe_load(f)


#: The defaults as read from ``dask_broker.yaml``.
defaults: dict = _load_defaults()
dask.config.update_defaults(defaults)


def _default(key: str) -> Any:
    node: Any = defaults
    for part in key.split("."):
        node = node[part]
    return node


def parse_size(value: Any, what: str) -> int:
    """A byte size from an int or a dask size string (``"64MiB"``), checked to be > 0.

    >>> parse_size("1 KiB", "chunk")
    1024
    """
    try:
        size = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(
            f"{what} is {value!r}; give a number of bytes or a size such as '64MiB'") from err
    if isinstance(value, bool) or size <= 0:
        raise InvalidArgumentError(f"{what} is {value!r}; it must be a size > 0, e.g. '64MiB'")
    return size


def partition_bytes() -> int:
    """The configured target size of one partition, in bytes."""
    return parse_size(dask.config.get(PARTITION_BYTES, default=_default(PARTITION_BYTES)),
                      f"the dask config {PARTITION_BYTES!r}")


def frame_partition_bytes() -> int:
    """The configured target size of a partition of filled frames, in bytes."""
    return parse_size(dask.config.get(FRAME_PARTITION_BYTES,
                                      default=_default(FRAME_PARTITION_BYTES)),
                      f"the dask config {FRAME_PARTITION_BYTES!r}")


def block_pool_bytes() -> int:
    """The configured bound on the memory each process keeps for reusing blocks (0: none)."""
    value = dask.config.get(BLOCK_POOL_BYTES, default=_default(BLOCK_POOL_BYTES))
    if value in (0, "0"):
        return 0
    return parse_size(value, f"the dask config {BLOCK_POOL_BYTES!r}")


def max_open_files() -> int | None:
    """The configured bound on each process's open handlers (None: unbounded)."""
    value = dask.config.get(MAX_OPEN_FILES, default=_default(MAX_OPEN_FILES))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(
            f"the dask config {MAX_OPEN_FILES!r} is {value!r}; it must be an int >= 1 "
            "(or null: unbounded)")
    return value
