"""The reader contract: entries ``[start, stop)`` of one stream_resource's dataset.

A reader class is constructed as ``reader_class(path, parameters)``: ``path``
is the LOCAL path the stream_resource's ``uri`` points at (a file, or for
multipart mimetypes a directory or file-name prefix) and ``parameters`` its
``parameters``.  :class:`StreamReader` is the protocol; :class:`ReaderBase`
adds context-manager support and the range check every reader shares.
"""

from __future__ import annotations

import abc
import operator
import os
from typing import Any, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from ..errors import OutOfRangeError

__all__ = ["StreamReader", "ReaderBase"]


@runtime_checkable
class StreamReader(Protocol):
    """What every reader does (see :class:`ReaderBase` for the meaning of each method)."""

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def describe(self) -> tuple[tuple[int, ...], np.dtype]: ...

    @classmethod
    def paths(cls, path: str, parameters: Mapping[str, Any],
              n_entries: int | None = None) -> list[str]: ...

    def close(self) -> None: ...


class ReaderBase(abc.ABC):
    """Base class of the built-in readers.

    Parameters
    ----------
    path
        Local path of the stream_resource (``uri_to_path(doc["uri"])``, after any
        root_map).
    parameters
        The stream_resource's ``parameters``.

    Notes
    -----
    Subclasses implement :meth:`read`, :meth:`describe` and :meth:`paths`, and
    :meth:`close` if they hold files open.  ``with reader: ...`` closes it.  A
    reader pickles as its recipe ``(path, parameters)``, never its open files.
    """

    #: The mimetypes this class reads (informative; the registry decides).
    mimetypes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | os.PathLike, parameters: Mapping[str, Any]):
        self.path = os.fspath(path)
        self.parameters = dict(parameters)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {self.parameters!r})"

    def __reduce__(self):
        # A reader pickles as its recipe: the copy opens its own files where it is unpickled.
        return (type(self), (self.path, self.parameters))

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Entries ``[start, stop)`` along the first axis, as one array.

        Raises
        ------
        OutOfRangeError
            ``start`` or ``stop`` lies outside ``[0, len]``, or ``start > stop``.
        """

    @abc.abstractmethod
    def describe(self) -> tuple[tuple[int, ...], np.dtype]:
        """The full shape (number of entries first) and dtype, from metadata only."""

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Entries ``[start, stop)`` written into ``out`` (of ``stop - start`` entries, or
        the same number of elements); return ``out``.  By default a copy of :meth:`read`;
        readers that can (HDF5) read straight into it."""
        values = self.read(start, stop)
        out[...] = values.reshape(out.shape)
        return out

    @classmethod
    @abc.abstractmethod
    def paths(cls, path: str, parameters: Mapping[str, Any],
              n_entries: int | None = None) -> list[str]:
        """The files the stream_resource covers.

        No file needs to exist, except with ``n_entries=None`` (then: the files that do).
        """

    def close(self) -> None:
        """Release open files (idempotent); nothing to do by default."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_range(self, start: int, stop: int, length: int | None) -> tuple[int, int]:
        """``(start, stop)`` as ints, checked against ``length`` (None: only their order)."""
        start, stop = operator.index(start), operator.index(stop)
        if start < 0 or stop < start or (length is not None and stop > length):
            raise OutOfRangeError(self._range_message(start, stop, length))
        return start, stop

    def _range_message(self, start: int, stop: int, length: int | None) -> str:
        held = "" if length is None else f" holds {length} entries and"
        return (f"cannot read entries [{start}, {stop}) of {self.path!r} "
                f"({type(self).__name__}): the dataset{held} needs 0 <= start <= stop"
                + ("" if length is None else f" <= {length}"))
