"""Former home of :class:`~dask_broker.fill.StreamFill` (now :mod:`dask_broker.fill.stream`)."""

from __future__ import annotations

from .fill.stream import KeyShape, StreamFill, frame_bytes

__all__ = ["StreamFill", "KeyShape", "frame_bytes"]
