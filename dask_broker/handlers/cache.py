"""Bounded lifetime of live handlers: an LRU that closes what it evicts.

Modelled on xarray's ``CachingFileManager`` + ``LRUCache``: a handler is keyed by
its recipe ``(resource uid, full path, spec, handler class)``; at most
``maxsize`` handlers are kept alive; the least recently used one is closed when
a new one would exceed the bound.  A handler being read from (acquired) is
never closed under its user: if it is evicted meanwhile, it is closed when
released.  Errors from a handler's ``close()`` become warnings.

:func:`shared_handler_cache` is one such cache per process, as xarray's
``FILE_CACHE``: every read of a table, an array or a stream -- in the tasks of a
Dask worker and in the client -- keeps its files there, bounded by the dask config
``dask_broker.max-open-files``.  :func:`close_shared_handlers` closes it (at exit,
and at a worker's teardown).  A :class:`~dask_broker.fill.FillContext` has a
private cache of its own and closes it when its ``with`` block ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator

from .base import close_handler

__all__ = [
    "HandlerCache",
    "DEFAULT_SHARED_MAX_OPEN",
    "shared_handler_cache",
    "process_handler_cache",
    "close_shared_handlers",
]


@dataclass
class _Entry:
    handler: Any
    refs: int = 0
    evicted: bool = False
    opening: bool = False  # its opener is running (outside the cache's lock)


def _validate_maxsize(maxsize: int | None) -> int | None:
    if maxsize is None:
        return None
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"the handler cache size must be an int >= 1 or None, got {maxsize!r}")
    return maxsize


def _describe(key: Hashable) -> str:
    if isinstance(key, tuple) and key:
        return f"resource {key[0]!r}"
    return repr(key)


class HandlerCache:
    """A thread-safe LRU of live handlers that closes each handler it evicts.

    Parameters
    ----------
    maxsize
        Most handlers alive at once (``None``: unbounded, closed only by
        :meth:`close_all`).  A handler in use when evicted is closed on release;
        until then it still counts, and a thread that needs to open a new
        handler waits for a slot (unless it holds one itself, which would
        deadlock: then it opens anyway), so concurrent readers never push the
        number of live handlers past the bound.

    Examples
    --------
    >>> from dask_broker.handlers import NpyHandler
    >>> cache = HandlerCache(maxsize=2)
    >>> with cache.acquire(("uid", "/tmp/a.npy", "NPY", NpyHandler),
    ...                    lambda: NpyHandler("/tmp/a.npy")) as (handler, created):
    ...     created
    True
    >>> len(cache)
    1
    >>> cache.close_all()
    1
    """

    def __init__(self, maxsize: int | None = 64):
        self._maxsize = _validate_maxsize(maxsize)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._slot_freed = threading.Condition(self._lock)
        self._alive = 0  # opened and not yet closed (cached, or evicted but in use)
        self._held = threading.local()  # handlers this thread has acquired

    def __repr__(self) -> str:
        return f"HandlerCache(maxsize={self._maxsize}, live={len(self)})"

    def __reduce__(self):
        raise TypeError("a HandlerCache holds live handlers (open files) and cannot be "
                        "pickled; create one in each process (see shared_handler_cache())")

    @property
    def maxsize(self) -> int | None:
        """Most handlers kept alive; setting a smaller value evicts (and closes) at once."""
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int | None) -> None:
        with self._lock:
            self._maxsize = _validate_maxsize(value)
            evicted = self._evict_locked()
        self._close(evicted)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[Hashable]:
        """Keys of the live handlers, least recently used first.

        Examples
        --------
        >>> cache = HandlerCache(2)
        >>> for key in "abc":
        ...     with cache.acquire(key, dict):
        ...         pass
        >>> cache.keys()
        ['b', 'c']
        """
        with self._lock:
            return list(self._entries)

    @contextlib.contextmanager
    def acquire(self, key: Hashable, opener: Callable[[], Any]) -> Iterator[tuple[Any, bool]]:
        """Use the handler cached under ``key``, creating it with ``opener()`` if absent.

        Yields ``(handler, created)``; the handler is not closed while acquired.
        To stay within the bound, the least recently used handler is closed
        *before* ``opener`` runs.  ``opener`` and the closing of evicted
        handlers run outside the cache's lock (a slow open or a close waiting
        for the HDF5 lock does not stall other threads); a key is still opened
        at most once when threads race: the others wait for that open.

        Examples
        --------
        >>> cache = HandlerCache(1)
        >>> with cache.acquire("k", dict) as (h, created):
        ...     created
        True
        >>> with cache.acquire("k", dict) as (h, created):
        ...     created
        False
        """
        created = False
        with self._lock:
            while True:
                entry = self._entries.get(key)
                if entry is not None:
                    if entry.opening:
                        self._slot_freed.wait()  # another thread is opening this key
                        continue
                    self._entries.move_to_end(key)
                    break
                # Make room first, so that never more than maxsize handlers are alive.
                evicted = self._evict_locked(room=1)
                if evicted:
                    self._lock.release()
                    try:
                        self._close(evicted)
                    finally:
                        self._lock.acquire()
                    continue  # the cache may have changed meanwhile
                if (self._maxsize is None or self._alive < self._maxsize
                        or getattr(self._held, "count", 0)):
                    entry = _Entry(None, opening=True)
                    self._alive += 1  # the slot is ours while we open
                    self._entries[key] = entry
                    created = True
                    break
                self._slot_freed.wait()  # every slot is in use by other threads
            entry.refs += 1
            self._held.count = getattr(self._held, "count", 0) + 1
        if created:
            try:
                handler = opener()
            except BaseException:
                with self._lock:
                    entry.opening = False
                    entry.refs -= 1
                    self._held.count -= 1
                    if self._entries.get(key) is entry:
                        del self._entries[key]
                    self._alive -= 1
                    self._slot_freed.notify_all()
                raise
            with self._lock:
                entry.handler, entry.opening = handler, False
                self._slot_freed.notify_all()
        try:
            yield entry.handler, created
        finally:
            with self._lock:
                entry.refs -= 1
                self._held.count -= 1
                close_now = entry.evicted and entry.refs == 0
            if close_now:
                self._close([(key, entry)])

    def discard(self, key: Hashable) -> None:
        """Drop ``key`` and close its handler (when released, if in use); ignore absent keys.

        Examples
        --------
        >>> cache = HandlerCache(2)
        >>> with cache.acquire("a", dict):
        ...     pass
        >>> cache.discard("a")
        >>> "a" in cache
        False
        """
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return
            entry.evicted = True
            evicted = [(key, entry)] if entry.refs == 0 else []
        self._close(evicted)

    def close_all(self) -> int:
        """Close every live handler (those in use: when released); return how many were dropped.

        Errors from ``close()`` are warned, never raised.  The cache stays usable.

        Examples
        --------
        >>> cache = HandlerCache(None)
        >>> with cache.acquire("a", dict):
        ...     pass
        >>> cache.close_all()
        1
        >>> len(cache)
        0
        """
        with self._lock:
            entries = list(self._entries.items())
            self._entries.clear()
            to_close = []
            for key, entry in entries:
                entry.evicted = True
                if entry.refs == 0:
                    to_close.append((key, entry))
        self._close(to_close)
        return len(entries)

    def _evict_locked(self, room: int = 0) -> list[tuple[Hashable, _Entry]]:
        evicted = []
        while self._maxsize is not None and self._entries and (
                len(self._entries) + room > self._maxsize):
            key, entry = self._entries.popitem(last=False)
            entry.evicted = True
            if entry.refs == 0:
                evicted.append((key, entry))
        return evicted

    def _close(self, entries: list[tuple[Hashable, _Entry]]) -> None:
        for key, entry in entries:
            handler, entry.handler = entry.handler, None
            if handler is not None:
                close_handler(handler, what=_describe(key))
                with self._lock:
                    self._alive -= 1
                    self._slot_freed.notify_all()


#: Size of the per-process shared cache unless configured otherwise
#: (the default of the dask config ``dask_broker.max-open-files``).
DEFAULT_SHARED_MAX_OPEN = 128

_shared: HandlerCache | None = None
_shared_pid: int | None = None
_shared_config: object = None  # the config value last applied to the shared cache
_shared_guard = threading.Lock()
_torn_down_workers: set[int] = set()  # workers told to close the cache at teardown


def _configured_size() -> int | None:
    from ..tunables import max_open_files

    return max_open_files()


def shared_handler_cache(maxsize: int | None = None) -> HandlerCache:
    """The handler cache shared by everything in this process: every task and the client.

    Its bound is the dask config ``dask_broker.max-open-files`` (default
    :data:`DEFAULT_SHARED_MAX_OPEN`), read when the cache is made and again
    whenever that setting changes; ``maxsize`` (or
    :class:`~dask_broker.handlers.plugin.HandlerCachePlugin`) resizes it until the
    setting next changes.  A forked child gets its own, empty cache (the parent's
    handlers are not reused).  Its handlers are closed at exit, and on a Dask
    worker at teardown (see :func:`process_handler_cache`).

    Parameters
    ----------
    maxsize
        If given, resize the cache (evicting and closing as needed).

    Examples
    --------
    >>> cache = shared_handler_cache()
    >>> cache is shared_handler_cache()
    True
    >>> shared_handler_cache(maxsize=256).maxsize
    256
    >>> shared_handler_cache(maxsize=DEFAULT_SHARED_MAX_OPEN).maxsize
    128
    """
    global _shared, _shared_pid, _shared_config
    configured = _configured_size()
    with _shared_guard:
        if _shared is None or _shared_pid != os.getpid():
            _shared = HandlerCache(configured)
            _shared_pid = os.getpid()
            _shared_config = configured
            _torn_down_workers.clear()
            cache, resize = _shared, None
        else:
            cache = _shared
            resize = configured if configured != _shared_config else None
            _shared_config = configured
    if maxsize is not None:
        cache.maxsize = maxsize
    elif resize is not None:
        cache.maxsize = resize
    return cache


def process_handler_cache() -> HandlerCache:
    """The shared cache, for a read in a task: on a Dask worker, closed at its teardown.

    The first use on a worker adds
    :class:`~dask_broker.handlers.plugin.HandlerCachePlugin` to the worker's
    plugins (unless one is there), so that the worker's handlers are closed
    when it shuts down, as the plugin registered by hand does.
    """
    cache = shared_handler_cache()
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return cache
    if id(worker) not in _torn_down_workers:
        from .plugin import HandlerCachePlugin

        plugins = getattr(worker, "plugins", None)
        if isinstance(plugins, dict):
            plugins.setdefault(HandlerCachePlugin.name, HandlerCachePlugin(max_open=None,
                                                                           resize=False))
        _torn_down_workers.add(id(worker))
    return cache


def close_shared_handlers() -> int:
    """Close every handler of this process's shared cache; return how many.

    Registered with :mod:`atexit`, and called by
    :class:`~dask_broker.handlers.plugin.HandlerCachePlugin` at worker teardown.

    Examples
    --------
    >>> close_shared_handlers()
    0
    """
    with _shared_guard:
        cache = _shared if _shared_pid == os.getpid() else None
    return 0 if cache is None else cache.close_all()


atexit.register(close_shared_handlers)
