"""What a test suite of dask_broker -- or of a third-party store or handler -- builds on.

- :class:`StoreConformance` (:mod:`.store`, with the searches of
  :mod:`.store_queries` and :mod:`.store_text`): the tests every :class:`~dask_broker.stores.Store`
  passes; subclass it and override the ``make_store`` fixture (needs pytest);
- :class:`RunBuilder`, :func:`scalar_scan_documents` (:mod:`.runs`): runs
  composed with event-model;
- :func:`write_ad_hdf5`, :func:`write_npy`, :func:`make_external_run`
  (:mod:`.files`): area-detector HDF5 and ``.npy`` files, and the documents of a
  run over them.

Shipped in the package, as ``zarr.testing`` is.

Examples
--------
>>> from dask_broker.testing import RunBuilder
>>> run = RunBuilder()
>>> run.descriptor().descriptor_doc["name"]
'primary'
"""

from __future__ import annotations

from .files import ExternalRun, make_external_run, write_ad_hdf5, write_npy
from .runs import DATA_KEYS, RunBuilder, scalar_scan_documents, value_of

__all__ = ["StoreConformance", "QueryConformance", "TextSearchConformance", "RunBuilder", "DATA_KEYS", "value_of",
           "scalar_scan_documents", "ExternalRun", "make_external_run", "write_ad_hdf5",
           "write_npy"]


def __getattr__(name: str):
    # The conformance suite imports pytest: only when it is asked for.
    if name == "StoreConformance":
        from .store import StoreConformance

        return StoreConformance
    if name == "QueryConformance":
        from .store_queries import QueryConformance

        return QueryConformance
    if name == "TextSearchConformance":
        from .store_text import TextSearchConformance

        return TextSearchConformance
    raise AttributeError(f"module 'dask_broker.testing' has no attribute {name!r}")
