"""Former home of table planning and reading (now :mod:`dask_broker.read`).

Kept so that ``from dask_broker.table import plan_table, PartitionSpec, ...`` goes on
working: :class:`TablePlan` is :class:`~dask_broker.read.plan.ReadPlan`,
:class:`TableReader` is :class:`~dask_broker.read.partition.PartitionReader`.
"""

from __future__ import annotations

from typing import Any, Sequence

from .read.partition import PartitionReader
from .read.plan import ColumnSpec, PartitionSpec, ReadPlan, partition_bounds, plan_read
from .timestruct import TimeStruct

__all__ = ["PartitionSpec", "ColumnSpec", "TablePlan", "TableReader", "plan_table",
           "partition_bounds", "DEFAULT_PARTITION_BYTES"]

#: Default target in-memory size of one partition (the dask config
#: ``dask_broker.partition-bytes`` decides; see :mod:`dask_broker.tunables`).
DEFAULT_PARTITION_BYTES = 128 * 2**20

TablePlan = ReadPlan
TableReader = PartitionReader


def plan_table(event_source, header, stream_name: str = "primary",
               fields: Sequence[str] | None = None, time_struct: TimeStruct | None = None,
               timestamps: bool = False, chunk_size: int | None = None,
               fill: Any = None, **_: Any) -> ReadPlan:
    """The read plan of a table (see :func:`~dask_broker.read.plan.plan_read`).

    ``fill``: anything true fills external fields and STREAM: keys.
    """
    return plan_read(event_source, header, stream_name, fields=fields, fill=bool(fill),
                     time_struct=time_struct, timestamps=timestamps, chunk_size=chunk_size)
