"""dask_broker: fast, parallel, lazy access to Bluesky experiment data.

Examples
--------
>>> from dask_broker import Broker
>>> db = Broker.temp()
>>> len(db)
0
"""

from __future__ import annotations

from .broker import Broker
from .errors import (
    AmbiguousKeyError,
    DaskBrokerError,
    DataKeysMismatchError,
    DocumentValidationError,
    DuplicateUidError,
    FillNotAvailableError,
    InvalidArgumentError,
    NoEventDescriptors,
    PageLengthError,
    RunAlreadyStoppedError,
    RunNotFoundError,
    StoreURIError,
    UnknownDocumentNameError,
    UnknownFieldError,
    UnknownReferenceError,
    UnsupportedQueryError,
)
from .event_source import EventSource
from .header import Header
from .stores import Store, open_store
from .timestruct import TimeStruct

__version__ = "0.1.0"

__all__ = [
    "Broker",
    "EventSource",
    "Header",
    "Store",
    "open_store",
    "TimeStruct",
    "InvalidArgumentError",
    "DaskBrokerError",
    "AmbiguousKeyError",
    "DataKeysMismatchError",
    "DocumentValidationError",
    "DuplicateUidError",
    "FillNotAvailableError",
    "NoEventDescriptors",
    "PageLengthError",
    "RunAlreadyStoppedError",
    "RunNotFoundError",
    "StoreURIError",
    "UnknownDocumentNameError",
    "UnknownFieldError",
    "UnknownReferenceError",
    "UnsupportedQueryError",
]
