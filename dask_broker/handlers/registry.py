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

import importlib
import threading
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable, Mapping

from ..errors import DuplicateHandlerError, HandlerNotFoundError

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


def _import_object(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _discover(groups: Iterable[str]) -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for group in groups:
        try:
            eps = list(entry_points(group=group))
        except Exception as err:  # broken installation metadata
            warnings.warn(f"could not list entry points of group {group!r}: "
                          f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=3)
            continue
        for ep in eps:
            candidates = found.setdefault(ep.name, [])
            if all(c.value != ep.value for c in candidates):
                candidates.append(ep)
    return found


class HandlerRegistry:
    """A registry of handler classes by resource spec.

    Parameters
    ----------
    builtins
        Built-in handlers, spec -> class or ``"module:attribute"`` (imported lazily).
    entry_point_groups
        Entry-point groups to discover handlers in (``()`` disables discovery).

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

    def __init__(
        self,
        *,
        builtins: Mapping[str, type | str] | None = None,
        entry_point_groups: Iterable[str] = ENTRY_POINT_GROUPS,
        parent: "HandlerRegistry | None" = None,
    ):
        self._builtins: dict[str, type | str] = dict(
            BUILTIN_HANDLERS if builtins is None else builtins)
        self._groups = tuple(entry_point_groups)
        self._explicit: dict[str, Any] = {}
        #: A registry whose explicit registrations count as this one's (after its own).
        self.parent = parent
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.RLock()
        self._entry_points: dict[str, list[EntryPoint]] | None = None
        self._loaded: dict[str, Any] = {}        # spec -> class loaded from an entry point
        self._failures: dict[str, str] = {}      # spec -> why its entry point(s) failed

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
        return (f"HandlerRegistry(explicit={sorted(self._explicit)}, "
                f"builtins={sorted(self._builtins)}, entry_point_groups={list(self._groups)})")

    # ------------------------------------------------------------ explicit
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
        if not isinstance(spec, str) or not spec:
            raise TypeError(f"spec must be a non-empty str, got {spec!r}")
        if not callable(handler_class):
            raise TypeError(f"handler_class for spec {spec!r} must be callable, "
                            f"got {handler_class!r}")
        with self._lock:
            current = self._explicit.get(spec)
            if current is not None and current is not handler_class and not overwrite:
                raise DuplicateHandlerError(
                    f"spec {spec!r} already has a registered handler, {_name(current)}; "
                    f"pass overwrite=True to replace it with {_name(handler_class)}, or "
                    f"deregister({spec!r}) first"
                )
            self._explicit[spec] = handler_class

    def deregister(self, spec: str) -> Any:
        """Remove the explicit registration of ``spec`` and return its class.

        A built-in or entry-point handler for ``spec``, if any, is used again.

        Raises
        ------
        HandlerNotFoundError
            ``spec`` has no explicit registration.

        Examples
        --------
        >>> reg = HandlerRegistry()
        >>> class H: ...
        >>> reg.register("MY_SPEC", H)
        >>> reg.deregister("MY_SPEC") is H
        True
        """
        with self._lock:
            try:
                return self._explicit.pop(spec)
            except KeyError:
                raise HandlerNotFoundError(
                    f"spec {spec!r} has no explicitly registered handler to deregister "
                    f"(registered: {sorted(self._explicit)})"
                ) from None

    # ------------------------------------------------------------ lookup
    def lookup(self, spec: str) -> Any:
        """The handler class for ``spec``: explicit, else built-in, else entry point.

        Raises
        ------
        HandlerNotFoundError
            No source provides ``spec`` (the message says how to register one and
            lists the known specs).

        Examples
        --------
        >>> HandlerRegistry().lookup("NPY").__name__
        'NpyHandler'
        """
        with self._lock:
            if spec in self._explicit:
                return self._explicit[spec]
            if self.parent is not None and spec in self.parent._explicit:
                return self.parent._explicit[spec]
            if spec in self._builtins:
                target = self._builtins[spec]
                if isinstance(target, str):
                    target = self._builtins[spec] = _import_object(target)
                return target
            if spec in self._loaded:
                return self._loaded[spec]
            if spec not in self._failures:
                for ep in self._discovered().get(spec, ()):
                    obj = self._load(ep)
                    if obj is not None:
                        self._loaded[spec] = obj
                        return obj
            raise HandlerNotFoundError(self._not_found_message(spec))

    def _load(self, ep: EntryPoint) -> Any:
        try:
            obj = ep.load()
            if not callable(obj):
                raise TypeError(f"{obj!r} is not callable")
        except Exception as err:
            why = (f"entry point {ep.name} = {ep.value} (group {ep.group!r}) failed to load: "
                   f"{type(err).__name__}: {err}")
            self._failures[ep.name] = (self._failures.get(ep.name, "") + "; " + why).lstrip("; ")
            warnings.warn(f"dask_broker handler {why}", RuntimeWarning, stacklevel=4)
            return None
        return obj

    def _not_found_message(self, spec: str) -> str:
        msg = f"no handler is registered for spec {spec!r}"
        if spec in self._failures:
            msg += f" (its {self._failures[spec]})"
        groups = " or ".join(repr(g) for g in self._groups) or "(none searched)"
        return (
            f"{msg}. Register one with db.register_handler({spec!r}, HandlerClass) on your "
            f"Broker (or dask_broker.handlers.register({spec!r}, HandlerClass) for every "
            f"Broker of the process), "
            f"or install a package that provides it in the entry-point group {groups} "
            f"(area-detector-handlers provides the AD_* specs). "
            f"Known specs: {', '.join(self.specs()) or 'none'}"
        )

    def specs(self) -> list[str]:
        """Every spec some source provides (entry points not yet loaded included), sorted.

        Examples
        --------
        >>> "AD_HDF5" in HandlerRegistry().specs()
        True
        """
        with self._lock:
            return sorted(set(self._explicit) | set(self._builtins) | set(self._discovered()))

    def __contains__(self, spec: object) -> bool:
        return spec in self.specs()

    # ------------------------------------------------------------ entry points
    def _discovered(self) -> dict[str, list[EntryPoint]]:
        if self._entry_points is None:
            self._entry_points = _discover(self._groups)
        return self._entry_points

    def refresh(self) -> None:
        """Forget discovered and loaded entry points; the next lookup discovers them again.

        Call it after installing a handler package into a running process.

        Examples
        --------
        >>> HandlerRegistry().refresh()
        """
        with self._lock:
            self._entry_points = None
            self._loaded.clear()
            self._failures.clear()


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


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
