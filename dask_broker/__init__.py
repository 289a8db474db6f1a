"""dask_broker: fast, parallel, lazy access to Bluesky experiment data.

Examples
--------
>>> from dask_broker import Broker
>>> db = Broker.temp()
>>> len(db)
0
"""

from __future__ import annotations

from . import tunables  # registers dask_broker.yaml with dask.config
from .broker import Broker
from .config import list_configs
from .databroker_api import ALL
from .errors import (
    AmbiguousKeyError,
    CatalogCorruptError,
    CatalogVersionError,
    CopyVerificationError,
    DaskBrokerError,
    DataKeysMismatchError,
    DocumentValidationError,
    DuplicateUidError,
    DuplicateHandlerError,
    HandlerError,
    HandlerNotFoundError,
    InvalidArgumentError,
    MissingFileError,
    UnknownDatumError,
    NoEventDescriptors,
    PageLengthError,
    ReadOnlyCatalogError,
    RunAlreadyStoppedError,
    RunNotFoundError,
    StoreURIError,
    UnknownDocumentNameError,
    UnknownFieldError,
    UnknownReferenceError,
    QueryError,
    UnsupportedQueryError,
)
from .copy import CopyReport, copy_runs
from .event_source import EventSource
from .export import export_table
from .files import copy_files, file_list, move_files
from .ingest import IngestError, IngestReport, ingest, read_documents
from .header import Header
from .stores import Store, open_store
from .timestruct import TimeStruct
from .fill import FillContext
from .fill.recipe import FillRecipe
from .handlers import HandlerRegistry

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "Broker",
    "copy_runs",
    "CopyReport",
    "list_configs",
    "EventSource",
    "Header",
    "Store",
    "open_store",
    "TimeStruct",
    "file_list",
    "copy_files",
    "move_files",
    "ingest",
    "read_documents",
    "IngestError",
    "IngestReport",
    "export_table",
    "FillContext",
    "FillRecipe",
    "HandlerRegistry",
    "HandlerCachePlugin",
    "HandlerNotFoundError",
    "DuplicateHandlerError",
    "MissingFileError",
    "UnknownDatumError",
    "HandlerError",
    "InvalidArgumentError",
    "DaskBrokerError",
    "AmbiguousKeyError",
    "DataKeysMismatchError",
    "DocumentValidationError",
    "DuplicateUidError",
    "NoEventDescriptors",
    "PageLengthError",
    "RunAlreadyStoppedError",
    "RunNotFoundError",
    "StoreURIError",
    "CatalogCorruptError",
    "CatalogVersionError",
    "CopyVerificationError",
    "ReadOnlyCatalogError",
    "UnknownDocumentNameError",
    "UnknownFieldError",
    "UnknownReferenceError",
    "QueryError",
    "UnsupportedQueryError",
]


def __getattr__(name: str):
    # distributed is imported only when its worker plugin is asked for.
    if name == "HandlerCachePlugin":
        from .handlers.plugin import HandlerCachePlugin

        return HandlerCachePlugin
    raise AttributeError(f"module 'dask_broker' has no attribute {name!r}")
