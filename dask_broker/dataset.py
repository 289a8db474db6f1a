"""Former home of the lazy xarray Datasets (now :mod:`dask_broker.read.xarray`)."""

from __future__ import annotations

from typing import Sequence

from .read.xarray import ColumnArray, SeqIndex
from .read.xarray import build_dataset as _build_from_plan
from .timestruct import TimeStruct

__all__ = ["ColumnArray", "EventColumnArray", "SeqIndex", "build_dataset"]

EventColumnArray = ColumnArray


def build_dataset(event_source, header, stream_name: str = "primary",
                  fields: Sequence[str] | None = None, *, chunk_size: int | None = None, **_):
    """A lazy :class:`xarray.Dataset` of one stream (see :meth:`EventSource.to_xarray`)."""
    return _build_from_plan(event_source.plan(header, stream_name, fields=fields, fill=True,
                                              time_struct=TimeStruct(convert_times=False),
                                              chunk_size=chunk_size))
