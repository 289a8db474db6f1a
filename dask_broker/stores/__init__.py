"""Document stores: the backends behind a Broker.

:func:`open_store` turns a URI into a store.  Built-in backends are imported
lazily by scheme; others register in the ``dask_broker.stores`` entry-point
group (name = URI scheme).  Within one process, :func:`open_store` returns the
same store object for the same URI, so a Dask worker that computes many
partitions opens its database once.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..errors import StoreURIError
from ..redact import mask_uri
from .base import EventPageColumns, Store

__all__ = ["Store", "StoreRef", "EventPageColumns", "open_store", "store_class"]

_BUILTIN = {
    "sqlite": "dask_broker.stores.sqlite:SQLiteStore",
    "mongodb": "dask_broker.stores.mongo:MongoStore",
    "mongodb+srv": "dask_broker.stores.mongo:MongoStore",
    "postgresql": "dask_broker.stores.postgres:PostgresStore",
    "postgres": "dask_broker.stores.postgres:PostgresStore",
    "postgresql+psycopg": "dask_broker.stores.postgres:PostgresStore",
}
_cache: dict[tuple, Store] = {}
_lock = threading.Lock()


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def store_class(uri: str) -> type[Store]:
    """The Store subclass that opens ``uri`` (by its scheme)."""
    scheme = uri.partition(":")[0].lower() if isinstance(uri, str) and ":" in uri else ""
    if scheme in _BUILTIN:
        try:
            return _load(_BUILTIN[scheme])
        except ImportError as err:
            raise StoreURIError(f"the {scheme!r} store could not be imported: {err}") from err
    for ep in entry_points(group="dask_broker.stores"):
        if ep.name == scheme:
            return ep.load()
    known = sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group="dask_broker.stores")})
    raise StoreURIError(
        f"no store for the URI {mask_uri(uri)!r}; known schemes: {', '.join(known)} "
        "(for example 'sqlite:////absolute/catalog.db' or 'mongodb://host:27017/dbname')"
    )


def open_store(uri: str, **kwargs: Any) -> Store:
    """Open the existing store named by ``uri``, reusing this process's store for that URI.

    This is how tasks on workers reach the catalog: it never creates one (see
    :meth:`Store.open_existing`).

    Examples
    --------
    >>> store = open_store("sqlite:////tmp/example.db")  # doctest: +SKIP
    """
    key = (uri, tuple(sorted(kwargs.items())))
    with _lock:
        store = _cache.get(key)
        if store is None:
            store = _cache[key] = store_class(uri).open_existing(uri, **kwargs)
        return store


@dataclass(frozen=True)
class StoreRef:
    """A picklable recipe for reaching a store from any process: its URI and options.

    This is what Dask graphs carry (never a connection); ``open()`` gives the
    process's store for it (see :func:`open_store`).  ``uri`` is the real URI (a
    worker connects with it); the repr shows :attr:`display_uri`, without passwords.
    """

    uri: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def display_uri(self) -> str:
        """:attr:`uri` with its passwords masked (see :func:`~dask_broker.redact.mask_uri`)."""
        return mask_uri(self.uri)

    def __repr__(self) -> str:
        return f"StoreRef(uri={self.display_uri!r}, options={self.options!r})"

    def open(self) -> Store:
        return open_store(self.uri, **dict(self.options))

    def __dask_tokenize__(self):
        return ("dask_broker.StoreRef", self.uri,
                tuple((k, getattr(v, "__qualname__", repr(v))) for k, v in self.options))
