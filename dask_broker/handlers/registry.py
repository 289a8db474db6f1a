"""Which handler class reads which resource ``spec``.

Three sources, in order of precedence:

1. classes registered explicitly with :meth:`HandlerRegistry.register`;
2. dask_broker's built-in handlers (``AD_HDF5``, ``NPY``), imported lazily;
3. entry points in the groups ``dask_broker.handlers`` and ``databroker.handlers``
   (so existing handler packages such as area-detector-handlers work unchanged),
   discovered once, lazily, and loaded only when their spec is looked up.  A
   broken entry point is a :class:`RuntimeWarning`, not a crash.

:data:`default_registry` is the process-wide registry behind the module-level
:func:`register`, :func:`deregister`, :func:`lookup` and :func:`refresh_entry_points`.
"""

from __future__ import annotations

from typing import Any

from ..errors import DuplicateHandlerError, HandlerNotFoundError
from ..plugins import PluginRegistry

__all__ = [
    "BUILTIN_HANDLERS",
    "ENTRY_POINT_GROUPS",
    "HandlerRegistry",
    "default_registry",
    "register",
    "deregister",
    "lookup",
    "refresh_entry_points",
]

#: Built-in handlers: spec -> "module:attribute", imported on first lookup.
BUILTIN_HANDLERS: dict[str, str] = {
    "AD_HDF5": "dask_broker.handlers.hdf5:AreaDetectorHDF5Handler",
    "NPY": "dask_broker.handlers.npy:NpyHandler",
}

#: Entry-point groups searched for handlers; on a clash the first group wins.
ENTRY_POINT_GROUPS: tuple[str, ...] = ("dask_broker.handlers", "databroker.handlers")


class HandlerRegistry(PluginRegistry):
    """A registry of handler classes by resource spec.

    Parameters
    ----------
    builtins
        Built-in handlers, spec -> class or ``"module:attribute"`` (imported lazily).
    entry_point_groups
        Entry-point groups to discover handlers in (``()`` disables discovery).
    parent
        A registry whose explicit registrations count as this one's (after its own).

    Notes
    -----
    A registry pickles its explicit registrations and configuration; an
    unpickled copy re-discovers entry points in its own process.

    Examples
    --------
    >>> reg = HandlerRegistry()
    >>> reg.lookup("AD_HDF5").__name__
    'AreaDetectorHDF5Handler'
    >>> class MyHandler:
    ...     def __init__(self, path, **resource_kwargs): ...
    ...     def __call__(self, **datum_kwargs): ...
    >>> reg.register("MY_SPEC", MyHandler)
    >>> reg.lookup("MY_SPEC") is MyHandler
    True
    """

    kind = "handler"
    name_kind = "spec"
    not_found_error = HandlerNotFoundError
    duplicate_error = DuplicateHandlerError
    default_builtins = BUILTIN_HANDLERS
    default_groups = ENTRY_POINT_GROUPS

    def __reduce_ex__(self, protocol):
        if self is default_registry:  # the process-wide registry stays the receiver's own
            return (_default_registry, ())
        return super().__reduce_ex__(protocol)

    def register(self, spec: str, handler_class: Any, overwrite: bool = False) -> None:
        """Register ``handler_class`` for ``spec``; it takes precedence over every other source.

        Registering the same class again is a no-op.

        Parameters
        ----------
        spec
            The resource spec, e.g. ``"AD_HDF5"``.
        handler_class
            Called as ``handler_class(full_path, **resource_kwargs)``.
        overwrite
            Replace a class already registered explicitly for ``spec``.

        Raises
        ------
        DuplicateHandlerError
            Another class is already registered for ``spec`` and ``overwrite`` is False.

        Examples
        --------
        >>> reg = HandlerRegistry()
        >>> class H:
        ...     def __init__(self, path): ...
        >>> reg.register("MY_SPEC", H)
        >>> reg.register("MY_SPEC", H, overwrite=True)
        """
        super().register(spec, handler_class, overwrite)

    def not_found_message(self, spec: str) -> str:
        groups = " or ".join(repr(g) for g in self._groups) or "(none searched)"
        return (
            f"{super().not_found_message(spec)}. Register one with "
            f"db.register_handler({spec!r}, HandlerClass) on your Broker (or "
            f"dask_broker.handlers.register({spec!r}, HandlerClass) for every Broker of the "
            f"process), or install a package that provides it in the entry-point group "
            f"{groups} (area-detector-handlers provides the AD_* specs). "
            f"Known specs: {', '.join(self.specs()) or 'none'}"
        )

    def specs(self) -> list[str]:
        """Every spec some source provides (entry points not yet loaded included), sorted.

        Examples
        --------
        >>> "AD_HDF5" in HandlerRegistry().specs()
        True
        """
        return self.names()


#: The process-wide registry used when no other is given.
default_registry = HandlerRegistry()


def register(spec: str, handler_class: Any, overwrite: bool = False) -> None:
    """Register a handler class for ``spec`` in the default registry.

    An explicitly registered class wins over the built-in and entry-point ones.

    Parameters
    ----------
    spec
        The resource spec.
    handler_class
        Called as ``handler_class(full_path, **resource_kwargs)``; instances are
        called as ``handler(**datum_kwargs)``.
    overwrite
        Replace a class already registered for ``spec``.

    Raises
    ------
    DuplicateHandlerError
        ``spec`` is taken by another class and ``overwrite`` is False.

    Examples
    --------
    >>> from dask_broker.handlers import register, deregister
    >>> class TiffHandler:
    ...     def __init__(self, path, template, filename, frame_per_point=1): ...
    ...     def __call__(self, point_number): ...
    >>> register("MY_TIFF", TiffHandler)
    >>> _ = deregister("MY_TIFF")
    """
    default_registry.register(spec, handler_class, overwrite=overwrite)


def deregister(spec: str) -> Any:
    """Remove an explicit registration from the default registry; return its class.

    Examples
    --------
    >>> class H: ...
    >>> register("MY_SPEC", H)
    >>> deregister("MY_SPEC") is H
    True
    """
    return default_registry.deregister(spec)


def lookup(spec: str) -> Any:
    """The handler class the default registry uses for ``spec``.

    Raises
    ------
    HandlerNotFoundError
        Nothing provides ``spec``.

    Examples
    --------
    >>> lookup("AD_HDF5").__name__
    'AreaDetectorHDF5Handler'
    """
    return default_registry.lookup(spec)


def refresh_entry_points() -> None:
    """Re-discover the default registry's entry points (e.g. after ``pip install``).

    Examples
    --------
    >>> refresh_entry_points()
    """
    default_registry.refresh()


def _default_registry() -> HandlerRegistry:
    return default_registry
