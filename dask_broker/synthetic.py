"""Synthetic runs for the demo and benchmarks; they live in :mod:`dask_broker.testing.runs`
(kept importable here)."""

from .testing.runs import scalar_scan_documents  # noqa: F401

__all__ = ["scalar_scan_documents"]
