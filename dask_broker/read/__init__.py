"""Reading runs: one plan, one partition reader, and what is built on them.

Modules, one job each:

- :mod:`~dask_broker.read.plan`: :class:`ReadPlan` -- descriptors, counts, stop state,
  column and partition specs, StreamLayout, fill recipes and frame sizes -- built once
  on the client by :func:`plan_read`; with :mod:`~dask_broker.read.columns` (column
  dtypes and sizes from the data_keys) and :mod:`~dask_broker.read.bounds` (rows cut
  into partitions);
- :mod:`~dask_broker.read.partition`: :class:`PartitionReader`, store pages -> numpy
  columns -> a pandas partition (``table``, ``table_chunks``, ``export``) or a numpy
  block (``to_xarray``);
- :mod:`~dask_broker.read.xarray`: the lazy xarray Dataset of a plan;
- :mod:`~dask_broker.read.blocks`: reusable memory for blocks of frames;
- :mod:`~dask_broker.read.docs`: the ``docs()`` replay engine.

Filling (datum ids -> data) is :mod:`dask_broker.fill`'s.
"""

from __future__ import annotations

from .partition import PartitionReader
from .plan import (
    ColumnSpec,
    FrameSpec,
    PartitionSpec,
    ReadPlan,
    partition_bounds,
    plan_read,
    plan_run_fill,
)

__all__ = ["ReadPlan", "plan_read", "plan_run_fill", "PartitionReader", "ColumnSpec",
           "PartitionSpec", "FrameSpec", "partition_bounds", "build_dataset", "replay"]


def __getattr__(name: str):
    # xarray (and the replay engine) load on first use.
    if name == "build_dataset":
        from .xarray import build_dataset

        return build_dataset
    if name == "replay":
        from .docs import replay

        return replay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
