"""Readers of ``stream_resource`` documents, chosen by mimetype.

Modules, one idea each:

- :mod:`~dask_broker.readers.uri`: a stream_resource ``uri`` -> local path; ``root_map``;
- :mod:`~dask_broker.readers.normalize`: pre-1.21 stream_resource (``spec``, ``root``)
  -> the modern form (``mimetype``, ``uri``, ``parameters``);
- :mod:`~dask_broker.readers.base`: the reader contract;
- :mod:`~dask_broker.readers.registry`: mimetype -> reader class
  (explicit > built-in > entry point);
- :mod:`~dask_broker.readers.hdf5`, :mod:`~dask_broker.readers.multipart`: the
  built-in readers (HDF5; TIFF, JPEG and NPY file series).

Examples
--------
>>> from dask_broker import readers
>>> doc = {"mimetype": "application/x-hdf5", "uri": "file://localhost/data/det.h5",
...        "parameters": {"dataset": "/entry/data/data"}}
>>> cls = readers.lookup_reader(doc["mimetype"])
>>> cls.__name__, cls.paths(readers.uri_to_path(doc["uri"]), doc["parameters"])
('HDF5Reader', ['/data/det.h5'])
"""

from __future__ import annotations

from typing import Any

from .base import ReaderBase, StreamReader
from .normalize import DEFAULT_MIMETYPE, SPEC_TO_MIMETYPE, normalize_stream_resource
from .registry import (
    BUILTIN_READERS,
    ENTRY_POINT_GROUP,
    ReaderRegistry,
    default_registry,
    deregister_reader,
    lookup_reader,
    normalize_mimetype,
    refresh_reader_entry_points,
    register_reader,
)
from .uri import path_to_uri, remap_uri, uri_to_path

__all__ = [
    "StreamReader",
    "ReaderBase",
    "uri_to_path",
    "path_to_uri",
    "remap_uri",
    "normalize_stream_resource",
    "SPEC_TO_MIMETYPE",
    "DEFAULT_MIMETYPE",
    "ReaderRegistry",
    "default_registry",
    "register_reader",
    "deregister_reader",
    "lookup_reader",
    "refresh_reader_entry_points",
    "normalize_mimetype",
    "BUILTIN_READERS",
    "ENTRY_POINT_GROUP",
    "HDF5Reader",
    "MultipartReader",
    "TIFFReader",
    "JPEGReader",
    "NPYReader",
    "compile_template",
]

# Imported on first use: h5py for the HDF5 reader.
_LAZY = {
    "HDF5Reader": ".hdf5",
    "MultipartReader": ".multipart",
    "TIFFReader": ".multipart",
    "JPEGReader": ".multipart",
    "NPYReader": ".multipart",
    "compile_template": ".multipart",
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
