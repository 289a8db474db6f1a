"""The search conformance tests; they live in :mod:`dask_broker.testing.store_queries`
(kept importable here)."""

from ..testing.store_queries import QUERY_RUNS, QueryConformance  # noqa: F401 (re-exports)

__all__ = ["QueryConformance"]
