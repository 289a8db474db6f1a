"""The store conformance suite; it lives in :mod:`dask_broker.testing.store` (kept
importable here: ``from dask_broker.stores.conformance import StoreConformance``)."""

from ..testing.store import StoreConformance  # noqa: F401

__all__ = ["StoreConformance"]
