"""A registry of plugin classes by name: explicit > built-in > entry points.

The handler registry (resource ``spec`` -> handler class) and the reader
registry (stream_resource ``mimetype`` -> reader class) are both this idea, as
xarray's backend plugins are:

1. classes registered explicitly (on this registry, then on its ``parent``);
2. built-ins, ``name -> "module:attribute"``, imported on first lookup;
3. entry points of the registry's groups, discovered once, lazily, and loaded
   only when their name is looked up.  A broken entry point is a
   :class:`RuntimeWarning`, not a crash.

:meth:`PluginRegistry.hide` removes a name altogether (built-in and entry point
included) until it is registered again, as databroker's ``deregister_handler``
does; :meth:`PluginRegistry.mapping` is a read-only ``name -> class`` view.

Subclasses say what they hold (:attr:`PluginRegistry.kind`, the error
classes), how names match (:meth:`PluginRegistry.key`) and what a valid class
is (:meth:`PluginRegistry.check`).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["PluginRegistry", "RegistryMapping", "import_object", "discover", "qualified_name"]


def import_object(target: str) -> Any:
    """The object named by ``"module:attr.sub"``."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def discover(groups: Iterable[str]) -> dict[str, list[EntryPoint]]:
    """Entry points of ``groups`` by name (the first group's first); unreadable metadata warns."""
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


def qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class PluginRegistry:
    """Plugin classes by name, from explicit registrations, built-ins and entry points.

    Parameters
    ----------
    builtins
        Built-in plugins, name -> class or ``"module:attribute"`` (imported lazily).
    entry_point_groups
        Entry-point groups to discover plugins in (``()`` disables discovery).
    parent
        A registry whose explicit registrations count as this one's (after its own),
        e.g. the process-wide default registry for a Broker's registry.

    Notes
    -----
    A registry pickles its explicit registrations and configuration; an
    unpickled copy re-discovers entry points in its own process.
    """

    #: What a plugin is, for messages ("handler", "reader").
    kind = "plugin"
    #: What a name is, for messages ("spec", "mimetype").
    name_kind = "name"
    not_found_error: type[Exception] = KeyError
    duplicate_error: type[Exception] = ValueError
    default_builtins: Mapping[str, Any] = {}
    default_groups: tuple[str, ...] = ()

    def __init__(self, *, builtins: Mapping[str, Any] | None = None,
                 entry_point_groups: Iterable[str] | None = None,
                 parent: "PluginRegistry | None" = None):
        source = self.default_builtins if builtins is None else builtins
        self._builtins: dict[str, Any] = {self.key(k): v for k, v in source.items()}
        self._groups = tuple(self.default_groups if entry_point_groups is None
                             else entry_point_groups)
        self._explicit: dict[str, Any] = {}
        self._hidden: set[str] = set()  # names hidden by hide() until registered again
        self.parent = parent
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.RLock()
        self._entry_points: dict[str, list[EntryPoint]] | None = None
        self._loaded: dict[str, Any] = {}     # key -> class loaded from an entry point
        self._failures: dict[str, str] = {}   # key -> why its entry point(s) failed

    def __getstate__(self) -> dict:
        return {"builtins": self._builtins, "groups": self._groups, "explicit": self._explicit,
                "hidden": self._hidden, "parent": self.parent}

    def __setstate__(self, state: dict) -> None:
        self._builtins = state["builtins"]
        self._groups = state["groups"]
        self._explicit = state["explicit"]
        self._hidden = set(state.get("hidden", ()))
        self.parent = state.get("parent")
        self._init_state()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(explicit={sorted(self._explicit)}, "
                f"builtins={sorted(self._builtins)}, entry_point_groups={list(self._groups)})")

    # ------------------------------------------------------------ hooks
    def key(self, name: str) -> str:
        """The key ``name`` is matched by (subclasses normalize, e.g. mimetypes)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.name_kind} must be a non-empty str, got {name!r}")
        return name

    def entry_point_key(self, name: str) -> str:
        """The key of an entry point named ``name``."""
        return self.key(name)

    def check(self, name: str, obj: Any) -> None:
        """Raise TypeError if ``obj`` cannot be a plugin (default: it must be callable)."""
        if not callable(obj):
            raise TypeError(f"the {self.kind} for {self.name_kind} {name!r} must be callable; "
                            f"{obj!r} is not callable")

    def not_found_message(self, name: str) -> str:
        """Why ``name`` has no plugin and how to register one (subclasses add the how)."""
        msg = f"no {self.kind} is registered for {self.name_kind} {name!r}"
        if self.key(name) in self._hidden:
            return msg + " (it was deregistered; register a class for it to use it again)"
        why = self._failures.get(self.key(name))
        return msg + (f" (its {why})" if why else "")

    # ------------------------------------------------------------ explicit
    def register(self, name: str, cls: Any, overwrite: bool = False) -> None:
        """Register ``cls`` for ``name``; it wins over built-ins and entry points.

        Registering the same class again is a no-op; another class needs
        ``overwrite=True`` (else the registry's duplicate error).
        """
        key = self.key(name)
        self.check(name, cls)
        with self._lock:
            current = self._explicit.get(key)
            if current is not None and current is not cls and not overwrite:
                raise self.duplicate_error(
                    f"{self.name_kind} {name!r} already has a registered {self.kind}, "
                    f"{qualified_name(current)}; pass overwrite=True to replace it with "
                    f"{qualified_name(cls)}, or deregister {name!r} first")
            self._explicit[key] = cls
            self._hidden.discard(key)

    def deregister(self, name: str) -> Any:
        """Remove the explicit registration of ``name`` and return its class.

        A built-in or entry-point plugin for ``name``, if any, is used again.
        """
        key = self.key(name)
        with self._lock:
            try:
                return self._explicit.pop(key)
            except KeyError:
                raise self.not_found_error(
                    f"{self.name_kind} {name!r} has no explicitly registered {self.kind} to "
                    f"deregister (registered: {sorted(self._explicit)})") from None

    def hide(self, name: str) -> Any:
        """Remove ``name`` altogether: its explicit registration, and the built-in,
        parent and entry-point plugins for it, until ``name`` is registered again.

        Silent when nothing provides ``name``.  Returns the explicit registration
        removed, or None.
        """
        key = self.key(name)
        with self._lock:
            self._hidden.add(key)
            return self._explicit.pop(key, None)

    def remove(self, name: str) -> Any:
        """Remove the plugin :meth:`lookup` gives for ``name`` now, one layer at a time.

        An explicit registration is deregistered (a built-in or entry-point
        plugin for ``name``, if any, is used again); with none, the built-in,
        parent or entry-point plugin is hidden (:meth:`hide`).  Returns the
        class removed.

        Raises
        ------
        not_found_error
            Nothing provides ``name``.
        """
        key = self.key(name)
        with self._lock:
            if key in self._explicit:
                return self._explicit.pop(key)
            found = self.lookup(name)  # raises when nothing provides it
            self._hidden.add(key)
            return found

    def mapping(self) -> "RegistryMapping":
        """A read-only, live ``name -> class`` mapping of what this registry provides."""
        return RegistryMapping(self)

    # ------------------------------------------------------------ lookup
    def lookup(self, name: str) -> Any:
        """The class for ``name``: explicit, else the parent's explicit, else built-in,
        else an entry point.  Nothing found raises the registry's not-found error."""
        key = self.key(name)
        with self._lock:
            if key in self._explicit:
                return self._explicit[key]
            if key in self._hidden:
                raise self.not_found_error(self.not_found_message(name))
            if self.parent is not None and key in self.parent._explicit:
                return self.parent._explicit[key]
            if key in self._builtins:
                target = self._builtins[key]
                if isinstance(target, str):
                    target = self._builtins[key] = import_object(target)
                return target
            if key in self._loaded:
                return self._loaded[key]
            if key not in self._failures:
                for ep in self._discovered().get(key, ()):
                    obj = self._load(key, ep)
                    if obj is not None:
                        self._loaded[key] = obj
                        return obj
            raise self.not_found_error(self.not_found_message(name))

    def _load(self, key: str, ep: EntryPoint) -> Any:
        try:
            obj = ep.load()
            self.check(ep.name, obj)
        except Exception as err:
            why = (f"entry point {ep.name} = {ep.value} (group {ep.group!r}) failed to load: "
                   f"{type(err).__name__}: {err}")
            self._failures[key] = (self._failures.get(key, "") + "; " + why).lstrip("; ")
            warnings.warn(f"dask_broker {self.kind} {why}", RuntimeWarning, stacklevel=5)
            return None
        return obj

    def names(self) -> list[str]:
        """Every name some source provides (entry points not yet loaded included), sorted."""
        with self._lock:
            parent = set(self.parent._explicit) if self.parent is not None else set()
            below = (parent | set(self._builtins) | set(self._discovered())) - self._hidden
            return sorted(set(self._explicit) | below)

    def __contains__(self, name: object) -> bool:
        try:
            return self.key(name) in self.names()  # type: ignore[arg-type]
        except TypeError:
            return False

    # ------------------------------------------------------------ entry points
    def _discovered(self) -> dict[str, list[EntryPoint]]:
        if self._entry_points is None:
            found: dict[str, list[EntryPoint]] = {}
            for name, eps in discover(self._groups).items():
                try:
                    key = self.entry_point_key(name)
                except TypeError:
                    continue
                found.setdefault(key, []).extend(eps)
            self._entry_points = found
        return self._entry_points

    def refresh(self) -> None:
        """Forget discovered and loaded entry points; the next lookup discovers them again.

        Call it after installing a plugin package into a running process.
        """
        with self._lock:
            self._entry_points = None
            self._loaded.clear()
            self._failures.clear()


class RegistryMapping(Mapping):
    """A read-only view of a :class:`PluginRegistry`: ``name -> class``, live.

    Iterating lists every name some source provides (:meth:`PluginRegistry.names`);
    ``view[name]`` looks the class up (loading an entry point if needed).
    Change the registry with its ``register``/``deregister``/``hide`` methods.

    Examples
    --------
    >>> from dask_broker.handlers import HandlerRegistry
    >>> view = HandlerRegistry(entry_point_groups=()).mapping()
    >>> "AD_HDF5" in view, view["NPY"].__name__
    (True, 'NpyHandler')
    """

    def __init__(self, registry: PluginRegistry):
        self._registry = registry

    def __getitem__(self, name: str) -> Any:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._registry.lookup(name)

    def __iter__(self):
        return iter(self._registry.names())

    def __len__(self) -> int:
        return len(self._registry.names())

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __repr__(self) -> str:
        return f"<{self._registry.kind}s: {', '.join(self._registry.names())}>"
