"""Handlers: the registry, the built-in handlers and the lifetime of live handlers.

Modules, one idea each:

- :mod:`~dask_broker.handlers.base`: the handler contract, :func:`read_many`, :func:`close_handler`;
- :mod:`~dask_broker.handlers.registry`: spec -> handler class (explicit > built-in > entry point);
- :mod:`~dask_broker.handlers.hdf5`, :mod:`~dask_broker.handlers.npy`: the built-in
  ``AD_HDF5`` and ``NPY`` handlers;
- :mod:`~dask_broker.handlers.cache`: the LRU of live handlers, per context or per process;
- :mod:`~dask_broker.handlers.plugin`: the Dask worker plugin closing a worker's handlers;
- :mod:`~dask_broker.handlers.locks`: the per-process HDF5 lock;
- :mod:`~dask_broker.testing.files` (also as :mod:`~dask_broker.handlers.testing`): files and
  documents for tests.

Examples
--------
>>> from dask_broker import handlers
>>> handlers.lookup("AD_HDF5").__name__
'AreaDetectorHDF5Handler'
"""

from __future__ import annotations

from typing import Any

from .base import BulkHandler, Handler, close_handler, read_many
from .cache import (
    DEFAULT_SHARED_MAX_OPEN,
    HandlerCache,
    close_shared_handlers,
    shared_handler_cache,
)
from .locks import HDF5_LOCK, PerProcessLock
from .registry import (
    BUILTIN_HANDLERS,
    ENTRY_POINT_GROUPS,
    HandlerRegistry,
    default_registry,
    deregister,
    lookup,
    refresh_entry_points,
    register,
)

__all__ = [
    "Handler",
    "BulkHandler",
    "read_many",
    "close_handler",
    "HandlerRegistry",
    "default_registry",
    "register",
    "deregister",
    "lookup",
    "refresh_entry_points",
    "BUILTIN_HANDLERS",
    "ENTRY_POINT_GROUPS",
    "HandlerCache",
    "shared_handler_cache",
    "close_shared_handlers",
    "DEFAULT_SHARED_MAX_OPEN",
    "HDF5_LOCK",
    "PerProcessLock",
    "AreaDetectorHDF5Handler",
    "NpyHandler",
    "HandlerCachePlugin",
]

# Imported on first use: h5py for the HDF5 handler, distributed for the plugin.
_LAZY = {
    "AreaDetectorHDF5Handler": ".hdf5",
    "NpyHandler": ".npy",
    "HandlerCachePlugin": ".plugin",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
