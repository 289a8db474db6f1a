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

import threading
import warnings
from importlib.metadata import EntryPoint
from typing import Any, Iterable, Mapping
from urllib.parse import unquote

from ..errors import DuplicateReaderError, ReaderNotFoundError
from ..handlers.registry import _discover, _import_object

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


class ReaderRegistry:
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

    def __init__(
        self,
        *,
        builtins: Mapping[str, type | str] | None = None,
        entry_point_groups: Iterable[str] = (ENTRY_POINT_GROUP,),
        parent: "ReaderRegistry | None" = None,
    ):
        source = BUILTIN_READERS if builtins is None else builtins
        self._builtins: dict[str, type | str] = {normalize_mimetype(k): v
                                                 for k, v in source.items()}
        self._groups = tuple(entry_point_groups)
        self._explicit: dict[str, Any] = {}
        self.parent = parent
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.RLock()
        self._entry_points: dict[str, list[EntryPoint]] | None = None
        self._loaded: dict[str, Any] = {}     # mimetype -> class loaded from an entry point
        self._failures: dict[str, str] = {}   # mimetype -> why its entry point(s) failed

    def __getstate__(self) -> dict:
        return {"builtins": self._builtins, "groups": self._groups, "explicit": self._explicit,
                "parent": self.parent}

    def __setstate__(self, state: dict) -> None:
        self._builtins = state["builtins"]
        self._groups = state["groups"]
        self._explicit = state["explicit"]
        self.parent = state.get("parent")
        self._init_state()

    def __reduce_ex__(self, protocol):
        if self is default_registry:  # the process-wide registry stays the receiver's own
            return (_default_registry, ())
        return super().__reduce_ex__(protocol)

    def __repr__(self) -> str:
        return (f"ReaderRegistry(explicit={sorted(self._explicit)}, "
                f"builtins={sorted(self._builtins)}, entry_point_groups={list(self._groups)})")

    # ------------------------------------------------------------ explicit
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
        key = normalize_mimetype(mimetype)
        missing = [m for m in _REQUIRED if not callable(getattr(reader_class, m, None))]
        if not isinstance(reader_class, type) or missing:
            raise TypeError(
                f"reader_class for mimetype {mimetype!r} must be a class with methods "
                f"{list(_REQUIRED)} (see dask_broker.readers.StreamReader); {reader_class!r} "
                + (f"lacks {missing}" if missing else "is not a class"))
        with self._lock:
            current = self._explicit.get(key)
            if current is not None and current is not reader_class and not overwrite:
                raise DuplicateReaderError(
                    f"mimetype {mimetype!r} already has a registered reader, {_name(current)}; "
                    f"pass overwrite=True to replace it with {_name(reader_class)}, or "
                    f"deregister_reader({mimetype!r}) first"
                )
            self._explicit[key] = reader_class

    def deregister(self, mimetype: str) -> Any:
        """Remove the explicit registration of ``mimetype`` and return its class.

        A built-in or entry-point reader for ``mimetype``, if any, is used again.

        Raises
        ------
        ReaderNotFoundError
            ``mimetype`` has no explicit registration.

        Examples
        --------
        >>> from dask_broker.readers import TIFFReader
        >>> reg = ReaderRegistry()
        >>> reg.register("image/x-tiff", TIFFReader)
        >>> reg.deregister("image/x-tiff") is TIFFReader
        True
        """
        key = normalize_mimetype(mimetype)
        with self._lock:
            try:
                return self._explicit.pop(key)
            except KeyError:
                raise ReaderNotFoundError(
                    f"mimetype {mimetype!r} has no explicitly registered reader to deregister "
                    f"(registered: {sorted(self._explicit)})"
                ) from None

    # ------------------------------------------------------------ lookup
    def lookup(self, mimetype: str) -> Any:
        """The reader class for ``mimetype``: explicit, else built-in, else entry point.

        Raises
        ------
        ReaderNotFoundError
            No source provides ``mimetype`` (the message lists the known
            mimetypes and says how to register one).

        Examples
        --------
        >>> ReaderRegistry().lookup("multipart/related; type=image/tiff").__name__
        'TIFFReader'
        """
        key = normalize_mimetype(mimetype)
        with self._lock:
            if key in self._explicit:
                return self._explicit[key]
            if self.parent is not None and key in self.parent._explicit:
                return self.parent._explicit[key]
            if key in self._builtins:
                target = self._builtins[key]
                if isinstance(target, str):
                    target = self._builtins[key] = _import_object(target)
                return target
            if key in self._loaded:
                return self._loaded[key]
            if key not in self._failures:
                for ep in self._discovered().get(key, ()):
                    obj = self._load(key, ep)
                    if obj is not None:
                        self._loaded[key] = obj
                        return obj
            raise ReaderNotFoundError(self._not_found_message(mimetype, key))

    def _load(self, key: str, ep: EntryPoint) -> Any:
        try:
            obj = ep.load()
            if not isinstance(obj, type):
                raise TypeError(f"{obj!r} is not a class")
        except Exception as err:
            why = (f"entry point {ep.name} = {ep.value} (group {ep.group!r}) failed to load: "
                   f"{type(err).__name__}: {err}")
            self._failures[key] = (self._failures.get(key, "") + "; " + why).lstrip("; ")
            warnings.warn(f"dask_broker reader {why}", RuntimeWarning, stacklevel=4)
            return None
        return obj

    def _not_found_message(self, mimetype: str, key: str) -> str:
        msg = f"no reader is registered for stream_resource mimetype {mimetype!r}"
        if key in self._failures:
            msg += f" (its {self._failures[key]})"
        groups = " or ".join(repr(g) for g in self._groups) or "(none searched)"
        return (
            f"{msg}. Register one with db.register_reader({mimetype!r}, ReaderClass) on your "
            f"Broker (or dask_broker.readers.register_reader({mimetype!r}, ReaderClass) for "
            f"every Broker of the process), or install a package that provides it in the "
            f"entry-point group {groups} (entry-point name: the mimetype, '=' written as "
            f"'%3D'). Known mimetypes: {', '.join(self.mimetypes()) or 'none'}"
        )

    def mimetypes(self) -> list[str]:
        """Every (normalized) mimetype some source provides, entry points not yet loaded included.

        Examples
        --------
        >>> "application/x-hdf5" in ReaderRegistry().mimetypes()
        True
        """
        with self._lock:
            parent = set(self.parent._explicit) if self.parent is not None else set()
            return sorted(set(self._explicit) | parent | set(self._builtins)
                          | set(self._discovered()))

    def __contains__(self, mimetype: object) -> bool:
        try:
            return normalize_mimetype(mimetype) in self.mimetypes()  # type: ignore[arg-type]
        except TypeError:
            return False

    # ------------------------------------------------------------ entry points
    def _discovered(self) -> dict[str, list[EntryPoint]]:
        if self._entry_points is None:
            found: dict[str, list[EntryPoint]] = {}
            for name, eps in _discover(self._groups).items():
                try:
                    key = normalize_mimetype(unquote(name))
                except TypeError:
                    continue
                found.setdefault(key, []).extend(eps)
            self._entry_points = found
        return self._entry_points

    def refresh(self) -> None:
        """Forget discovered and loaded entry points; the next lookup discovers them again.

        Examples
        --------
        >>> ReaderRegistry().refresh()
        """
        with self._lock:
            self._entry_points = None
            self._loaded.clear()
            self._failures.clear()


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


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
