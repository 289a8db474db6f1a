"""The full-text search conformance tests; they live in :mod:`dask_broker.testing.store_text`
(kept importable here)."""

from ..testing.store_text import TextSearchConformance  # noqa: F401

__all__ = ["TextSearchConformance"]
