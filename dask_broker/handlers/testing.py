"""Files and documents for handler tests; they live in :mod:`dask_broker.testing.files`
(kept importable here)."""

from ..testing.files import ExternalRun, make_external_run, write_ad_hdf5, write_npy  # noqa: F401

__all__ = ["write_ad_hdf5", "write_npy", "ExternalRun", "make_external_run"]
