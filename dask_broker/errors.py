"""The dask_broker exception hierarchy.

Every error raised on purpose by dask_broker derives from :class:`DaskBrokerError`
and, where it fits, from the matching builtin (``ValueError``, ``KeyError``,
``NotImplementedError``), so callers can catch either.  Messages name the
document type, the uid or path involved, and how to fix the problem.
"""

from __future__ import annotations

__all__ = [
    "DaskBrokerError",
    "DocumentValidationError",
    "DuplicateUidError",
    "UnknownReferenceError",
    "RunAlreadyStoppedError",
    "DataKeysMismatchError",
    "PageLengthError",
    "UnknownDocumentNameError",
    "RunNotFoundError",
    "RunIndexError",
    "AmbiguousKeyError",
    "QueryError",
    "UnsupportedQueryError",
    "UnsupportedSearchError",
    "NoEventDescriptors",
    "UnknownFieldError",
    "StoreURIError",
    "CatalogCorruptError",
    "CatalogVersionError",
    "ReadOnlyCatalogError",
    "CopyVerificationError",
    "HandlerNotFoundError",
    "DuplicateHandlerError",
    "MissingFileError",
    "UnknownDatumError",
    "HandlerError",
    "InvalidArgumentError",
    "ConflictingArgumentsError",
    "ColumnTypeError",
    "ReaderNotFoundError",
    "DuplicateReaderError",
    "ReaderError",
    "OutOfRangeError",
    "UnsupportedStreamResourceError",
    "FilesLockedError",
    "RenamedArgumentWarning",
]


class DaskBrokerError(Exception):
    """Base class of every error dask_broker raises on purpose."""


class _KeyErrorMessage:
    """Mixin: show a KeyError's message as plain text instead of its repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DocumentValidationError(DaskBrokerError, ValueError):
    """A document does not satisfy its event-model JSON schema."""


class DuplicateUidError(DaskBrokerError, ValueError):
    """A document reuses a uid (or datum_id) that is already stored."""


class UnknownReferenceError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """A document refers to a start, descriptor or resource that is not stored."""


class RunAlreadyStoppedError(DaskBrokerError, ValueError):
    """A second stop document was inserted for a run."""


class DataKeysMismatchError(DaskBrokerError, ValueError):
    """An event's data keys differ from its descriptor's data_keys."""


class PageLengthError(DaskBrokerError, ValueError):
    """The columns of an event_page or datum_page have unequal lengths."""


class UnknownDocumentNameError(DaskBrokerError, ValueError):
    """``insert`` was given a document name it does not know."""


class RunNotFoundError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """No run matches a uid, uid prefix, scan_id or recency index."""


class RunIndexError(RunNotFoundError, IndexError):
    """``db[-N]`` asks for more runs back than the catalog holds.

    Both a :class:`KeyError` (a run was not found, as for any lookup) and an
    :class:`IndexError` (as databroker raises for an index out of range).
    """


class AmbiguousKeyError(DaskBrokerError, ValueError):
    """A uid prefix matches more than one run."""


class QueryError(DaskBrokerError, ValueError):
    """A search query is malformed, too big, or uses an operator dask_broker does not
    implement (the message names the offending part of the query)."""


#: The former name of :class:`QueryError`, kept so that existing code still works.
UnsupportedQueryError = QueryError


class UnsupportedSearchError(DaskBrokerError, NotImplementedError):
    """A search this catalog cannot do (e.g. full-text search where it is not available)."""


class NoEventDescriptors(_KeyErrorMessage, DaskBrokerError, KeyError):
    """A run has no descriptor for the requested stream."""


class UnknownFieldError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """A requested field is not in any descriptor of the stream."""


class StoreURIError(DaskBrokerError, ValueError):
    """A catalog URI cannot be parsed or opened."""


class CatalogCorruptError(StoreURIError):
    """A catalog file is damaged (or is not a catalog): names the file and how to recover it."""


class CatalogVersionError(StoreURIError):
    """A catalog was written by a newer dask_broker (names both schema versions)."""


class ReadOnlyCatalogError(DaskBrokerError, PermissionError):
    """A write to a catalog that is open read-only (names the catalog and why it is read-only)."""


class CopyVerificationError(DaskBrokerError, ValueError):
    """A run copied between catalogs reads back different from its source (names the run)."""


# ---------------------------------------------------------------- filling
class HandlerNotFoundError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """No handler is registered for a resource's spec."""


class DuplicateHandlerError(DaskBrokerError, ValueError):
    """A handler is already registered for the spec (pass overwrite=True)."""


class MissingFileError(DaskBrokerError, FileNotFoundError):
    """A resource's file is missing (names the resource, the path and the root_map)."""


class UnknownDatumError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """An event refers to a datum_id that is not stored."""


class HandlerError(DaskBrokerError, RuntimeError):
    """A handler raised while reading a datum (wraps the original with ``from``)."""


class InvalidArgumentError(DaskBrokerError, ValueError):
    """An argument has a value dask_broker cannot use (the message says which)."""


class ConflictingArgumentsError(DaskBrokerError, TypeError):
    """Two arguments that mean the same thing were both given (e.g. ``since`` and ``start_time``)."""


class ColumnTypeError(DaskBrokerError, TypeError):
    """Stored values do not fit the column dtype their descriptor's data_keys declare."""


# ---------------------------------------------------------------- stream readers
class ReaderNotFoundError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """No reader is registered for a stream_resource's mimetype."""


class DuplicateReaderError(DaskBrokerError, ValueError):
    """A reader is already registered for the mimetype (pass overwrite=True)."""


class ReaderError(DaskBrokerError, RuntimeError):
    """A reader could not read a stream_resource's file (wraps the original with ``from``)."""


class OutOfRangeError(DaskBrokerError, IndexError):
    """Entries were asked for outside a dataset (names the path and the dataset's length)."""


class UnsupportedStreamResourceError(DaskBrokerError, NotImplementedError):
    """A stream_resource uses a form of its mimetype that no built-in reader supports."""


class FilesLockedError(DaskBrokerError, RuntimeError):
    """Another process is copying or moving the same run's files (names the run and the lock)."""


# ---------------------------------------------------------------- warnings
class RenamedArgumentWarning(UserWarning):
    """An argument was given under an older name that still works (the message gives the new one).

    A :class:`UserWarning`, as databroker's own warning for these names, so
    scripts written for databroker keep running where deprecation warnings
    are errors.
    """
