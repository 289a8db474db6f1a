"""Which reader class reads which stream_resource ``mimetype``.

Three sources, in order of precedence:

1. classes registered explicitly with :meth:`ReaderRegistry.register`;
2. dask_broker's built-in readers (HDF5, TIFF, JPEG, NPY), imported lazily;
3. entry points in the group ``dask_broker.readers``, discovered once, lazily,
   and loaded only when their mimetype is looked up.  A broken entry point is a
   :class:`RuntimeWarning`, not a crash.  An entry point's name is its mimetype,
   percent-encoded where the entry-point syntax needs it (``=`` as ``%3D``):
   ``multipart/related;type%3Dimage/png = my_package:PNGReader``.

Mimetypes match case-insensitively and ignoring whitespace; their parameters
(``;type=image/tiff``) count.  :data:`default_registry` is the process-wide
registry behind :func:`register_reader`, :func:`deregister_reader`,
:func:`lookup_reader` and :func:`refresh_reader_entry_points`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ..errors import DuplicateReaderError, ReaderNotFoundError
from ..plugins import PluginRegistry

__all__ = [
    "BUILTIN_READERS",
    "ENTRY_POINT_GROUP",
    "ReaderRegistry",
    "normalize_mimetype",
    "default_registry",
    "register_reader",
    "deregister_reader",
    "lookup_reader",
    "refresh_reader_entry_points",
]

#: Built-in readers: mimetype -> "module:attribute", imported on first lookup.
BUILTIN_READERS: dict[str, str] = {
    "application/x-hdf5": "dask_broker.readers.hdf5:HDF5Reader",
    "multipart/related;type=image/tiff": "dask_broker.readers.multipart:TIFFReader",
    "multipart/related;type=image/jpeg": "dask_broker.readers.multipart:JPEGReader",
    "multipart/related;type=application/x-npy": "dask_broker.readers.multipart:NPYReader",
}

#: The entry-point group searched for readers.
ENTRY_POINT_GROUP = "dask_broker.readers"

_REQUIRED = ("read", "describe", "paths")


def normalize_mimetype(mimetype: str) -> str:
    """The key a mimetype is matched by: lower case, without whitespace.

    Examples
    --------
    >>> normalize_mimetype("Multipart/Related; type=image/TIFF")
    'multipart/related;type=image/tiff'
    """
    if not isinstance(mimetype, str) or not mimetype.strip():
        raise TypeError(f"a mimetype must be a non-empty str, got {mimetype!r}")
    return "".join(mimetype.split()).lower()


class ReaderRegistry(PluginRegistry):
    """A registry of reader classes by stream_resource mimetype.

    Parameters
    ----------
    builtins
        Built-in readers, mimetype -> class or ``"module:attribute"`` (imported lazily).
    entry_point_groups
        Entry-point groups to discover readers in (``()`` disables discovery).
    parent
        A registry whose explicit registrations count as this one's (after its own),
        e.g. :data:`default_registry` for a Broker's registry.

    Notes
    -----
    A registry pickles its explicit registrations and configuration; an
    unpickled copy re-discovers entry points in its own process.

    Examples
    --------
    >>> reg = ReaderRegistry()
    >>> reg.lookup("application/x-hdf5").__name__
    'HDF5Reader'
    >>> from dask_broker.readers import NPYReader
    >>> class CSVReader(NPYReader): ...
    >>> reg.register("text/csv", CSVReader)
    >>> reg.lookup("TEXT/CSV") is CSVReader
    True
    """

    kind = "reader"
    name_kind = "mimetype"
    not_found_error = ReaderNotFoundError
    duplicate_error = DuplicateReaderError
    default_builtins = BUILTIN_READERS
    default_groups = (ENTRY_POINT_GROUP,)

    def __reduce_ex__(self, protocol):
        if self is default_registry:  # the process-wide registry stays the receiver's own
            return (_default_registry, ())
        return super().__reduce_ex__(protocol)

    def key(self, mimetype: str) -> str:
        return normalize_mimetype(mimetype)

    def entry_point_key(self, name: str) -> str:
        # '=' cannot be written in an entry-point name: 'type%3Dimage/png'.
        return normalize_mimetype(unquote(name))

    def check(self, mimetype: str, reader_class: Any) -> None:
        missing = [m for m in _REQUIRED if not callable(getattr(reader_class, m, None))]
        if not isinstance(reader_class, type) or missing:
            raise TypeError(
                f"reader_class for mimetype {mimetype!r} must be a class with methods "
                f"{list(_REQUIRED)} (see dask_broker.readers.StreamReader); {reader_class!r} "
                + (f"lacks {missing}" if missing else "is not a class"))

    def register(self, mimetype: str, reader_class: Any, overwrite: bool = False) -> None:
        """Register ``reader_class`` for ``mimetype``; it wins over every other source.

        Registering the same class again is a no-op.

        Parameters
        ----------
        mimetype
            The stream_resource mimetype, e.g. ``"multipart/related;type=image/png"``.
        reader_class
            A class with ``read``, ``describe`` and ``paths`` (see
            :class:`~dask_broker.readers.StreamReader`), constructed as
            ``reader_class(path, parameters)``.
        overwrite
            Replace a class already registered explicitly for ``mimetype``.

        Raises
        ------
        DuplicateReaderError
            Another class is already registered and ``overwrite`` is False.
        TypeError
            ``reader_class`` is not a class with those methods.

        Examples
        --------
        >>> from dask_broker.readers import TIFFReader
        >>> reg = ReaderRegistry()
        >>> reg.register("multipart/related;type=image/x-tiff", TIFFReader)
        """
        super().register(mimetype, reader_class, overwrite)

    def not_found_message(self, mimetype: str) -> str:
        groups = " or ".join(repr(g) for g in self._groups) or "(none searched)"
        return (
            f"{super().not_found_message(mimetype)} (stream_resource). Register one with "
            f"db.register_reader({mimetype!r}, ReaderClass) on your Broker (or "
            f"dask_broker.readers.register_reader({mimetype!r}, ReaderClass) for every Broker "
            f"of the process), or install a package that provides it in the entry-point group "
            f"{groups} (entry-point name: the mimetype, '=' written as '%3D'). "
            f"Known mimetypes: {', '.join(self.mimetypes()) or 'none'}"
        )

    def mimetypes(self) -> list[str]:
        """Every (normalized) mimetype some source provides, entry points not yet loaded included.

        Examples
        --------
        >>> "application/x-hdf5" in ReaderRegistry().mimetypes()
        True
        """
        return self.names()


#: The process-wide registry used when no other is given.
default_registry = ReaderRegistry()


def register_reader(mimetype: str, reader_class: Any, overwrite: bool = False) -> None:
    """Register a reader class for ``mimetype`` in the default registry.

    See :meth:`ReaderRegistry.register`.

    Examples
    --------
    >>> from dask_broker.readers import TIFFReader
    >>> register_reader("multipart/related;type=image/x-tiff", TIFFReader)
    >>> _ = deregister_reader("multipart/related;type=image/x-tiff")
    """
    default_registry.register(mimetype, reader_class, overwrite=overwrite)


def deregister_reader(mimetype: str) -> Any:
    """Remove an explicit registration from the default registry; return its class.

    Examples
    --------
    >>> from dask_broker.readers import NPYReader
    >>> register_reader("application/x-my-npy", NPYReader)
    >>> deregister_reader("application/x-my-npy") is NPYReader
    True
    """
    return default_registry.deregister(mimetype)


def lookup_reader(mimetype: str) -> Any:
    """The reader class the default registry uses for ``mimetype``.

    Raises
    ------
    ReaderNotFoundError
        Nothing provides ``mimetype``.

    Examples
    --------
    >>> lookup_reader("application/x-hdf5").__name__
    'HDF5Reader'
    """
    return default_registry.lookup(mimetype)


def refresh_reader_entry_points() -> None:
    """Re-discover the default registry's entry points (e.g. after ``pip install``).

    Examples
    --------
    >>> refresh_reader_entry_points()
    """
    default_registry.refresh()


def _default_registry() -> ReaderRegistry:
    return default_registry
