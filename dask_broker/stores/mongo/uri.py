"""MongoDB URIs and this process's clients, for :class:`~dask_broker.stores.mongo.MongoStore`.

A store URI is a MongoDB connection string naming a database, plus dask_broker's
own ``asset_registry_uri`` parameter.  Each process makes one client per URI,
lazily, and a forked child never uses its parent's sockets.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ...errors import StoreURIError
from ...redact import mask_uri

__all__ = ["MongoURI", "parse_store_uri", "split_uri", "with_timeout", "mask_uri",
           "client_for", "drop_client", "close_clients", "indexed",
           "DEFAULT_SERVER_SELECTION_TIMEOUT_MS",
           "ASSET_PARAM", "MODE_PARAM", "TIMEOUT_OPTION", "split_mode"]

#: How long an operation waits for an unreachable server before failing (ms).
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5000
ASSET_PARAM = "asset_registry_uri"
#: dask_broker's URI parameter for a read-only store (``mode=ro``), as for SQLite and PostgreSQL.
MODE_PARAM = "mode"
TIMEOUT_OPTION = "serverSelectionTimeoutMS"
_SCHEMES = ("mongodb", "mongodb+srv")


# ----------------------------------------------------------------------- URIs
@dataclass(frozen=True)
class MongoURI:
    """One parsed database URI (without dask_broker's own parameters)."""

    uri: str            # what MongoClient is given
    database: str
    hosts: str          # for messages: no credentials
    timeout_ms: int | None  # the URI's serverSelectionTimeoutMS, if it sets one

    def __repr__(self) -> str:
        return (f"MongoURI(uri={mask_uri(self.uri)!r}, database={self.database!r}, "
                f"hosts={self.hosts!r}, timeout_ms={self.timeout_ms!r})")

    @property
    def has_timeout(self) -> bool:
        return self.timeout_ms is not None

    @property
    def effective_timeout_ms(self) -> int:
        return DEFAULT_SERVER_SELECTION_TIMEOUT_MS if self.timeout_ms is None else self.timeout_ms


def split_uri(uri: Any) -> tuple[str, str, str, list[str]]:
    """``(scheme, netloc, path, query items)`` of a mongodb URI, items still encoded."""
    if not isinstance(uri, str) or "://" not in uri:
        raise StoreURIError(
            f"{mask_uri(uri)!r} is not a MongoDB URI; write 'mongodb://host:27017/dbname'")
    scheme, _, rest = uri.partition("://")
    if scheme.lower() not in _SCHEMES:
        raise StoreURIError(
            f"{mask_uri(uri)!r} is not a MongoDB URI (scheme {scheme!r}); "
            "write 'mongodb://host:27017/dbname'")
    if "/" in rest.split("?", 1)[0]:
        netloc, _, tail = rest.partition("/")
    else:
        netloc, _, tail = rest.partition("?")
        tail = "?" + tail if tail else ""
    path, _, query = tail.partition("?")
    items = [item for item in query.replace(";", "&").split("&") if item]
    return scheme.lower(), netloc, path, items


def parse_store_uri(uri: str, what: str = "catalog") -> tuple[MongoURI, str | None]:
    """Parse a store URI; returns the database URI and the asset-registry URI it names."""
    scheme, netloc, path, items = split_uri(uri)
    asset_uri = None
    kept = []
    for item in items:
        key, _, value = item.partition("=")
        if key == ASSET_PARAM:
            asset_uri = unquote(value)
        else:
            kept.append(item)
    database = unquote(path)
    hosts = netloc.rpartition("@")[2]
    shown = mask_uri(uri)
    if not hosts:
        raise StoreURIError(
            f"the {what} URI {shown!r} names no host; write 'mongodb://host:27017/dbname'")
    if not database:
        raise StoreURIError(
            f"the {what} URI {shown!r} names no database; write 'mongodb://{hosts}/dbname'")
    bad = [c for c in '/\\. "$' if c in database]
    if bad:
        raise StoreURIError(
            f"the {what} URI {shown!r} names the database {database!r}, which contains "
            f"{''.join(bad)!r}; MongoDB database names cannot")
    client_uri = f"{scheme}://{netloc}/{path}" + ("?" + "&".join(kept) if kept else "")
    if scheme == "mongodb":  # (+srv would resolve DNS here)
        from pymongo.errors import ConfigurationError, InvalidURI
        from pymongo.uri_parser import parse_uri

        try:
            parse_uri(client_uri, warn=True)
        except (InvalidURI, ConfigurationError, ValueError) as err:
            raise StoreURIError(
                f"the {what} URI {shown!r} is not valid: {mask_uri(str(err))}") from err
    timeout_ms = None
    for item in kept:
        key, _, value = item.partition("=")
        if key.lower() == TIMEOUT_OPTION.lower():
            try:
                timeout_ms = int(float(unquote(value)))
            except ValueError:
                raise StoreURIError(
                    f"the {what} URI {shown!r} sets {key}={value!r}; give milliseconds") from None
    return MongoURI(client_uri, database, hosts, timeout_ms), asset_uri


def split_mode(uri: Any) -> tuple[Any, bool]:
    """``uri`` without dask_broker's ``mode=ro``, and whether it had it (read-only).

    >>> split_mode("mongodb://h/db?mode=ro&w=1")
    ('mongodb://h/db?w=1', True)
    """
    if not isinstance(uri, str) or "?" not in uri:
        return uri, False
    base, _, query = uri.partition("?")
    kept, read_only = [], False
    for item in query.replace(";", "&").split("&"):
        key, _, value = item.partition("=")
        if key == MODE_PARAM:
            if unquote(value) != "ro":
                raise StoreURIError(
                    f"{mask_uri(uri)!r} sets {item!r}; the only mode is 'mode=ro' (read-only)")
            read_only = True
        elif item:
            kept.append(item)
    return base + ("?" + "&".join(kept) if kept else ""), read_only


def with_timeout(uri: str, timeout_ms: int) -> str:
    """``uri`` with serverSelectionTimeoutMS set to ``timeout_ms``."""
    scheme, netloc, path, items = split_uri(uri)
    items = [i for i in items if i.partition("=")[0].lower() != TIMEOUT_OPTION.lower()]
    items.append(f"{TIMEOUT_OPTION}={int(timeout_ms)}")
    return f"{scheme}://{netloc}/{path}?" + "&".join(items)


# ----------------------------------------------------------------- clients
_clients: dict[tuple, Any] = {}
_clients_pid = os.getpid()
_clients_lock = threading.Lock()
indexed: set[tuple] = set()


def client_for(target: MongoURI, client_class: Any) -> Any:
    """This process's client for a URI (made on first use; never inherited through fork)."""
    global _clients_pid
    key = (client_class, target.uri)
    with _clients_lock:
        if _clients_pid != os.getpid():
            # A forked child must not use its parent's sockets; drop (not close) them.
            _clients.clear()
            indexed.clear()
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None:
            if client_class is None:
                from pymongo import MongoClient as client_class
            kwargs = {} if target.has_timeout else {
                TIMEOUT_OPTION: DEFAULT_SERVER_SELECTION_TIMEOUT_MS}
            try:
                client = client_class(target.uri, connect=False, **kwargs)
            except Exception as err:  # pymongo.errors.ConfigurationError and friends
                raise StoreURIError(
                    f"cannot open {mask_uri(target.uri)}: {mask_uri(str(err))}") from err
            _clients[key] = client
        return client


def close_clients() -> None:
    """Close every client of this process (they are made again on next use).

    Not registered with atexit: closing a client whose server is gone can
    block for the server-selection timeout.
    """
    with _clients_lock:
        clients = list(_clients.values()) if _clients_pid == os.getpid() else []
        _clients.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001 -- best effort at exit
            pass


def drop_client(target: MongoURI, client_class: Any) -> None:
    with _clients_lock:
        client = _clients.pop((client_class, target.uri), None)
    if client is not None and _clients_pid == os.getpid():
        client.close()


