"""Helpers of the MongoDB store tests (importable by name, so picklable)."""

from __future__ import annotations

import uuid

import mongomock
from mongomock.store import ServerStore

__all__ = ["SharedMongomockClient", "mongomock_uri"]


class SharedMongomockClient(mongomock.MongoClient):
    """A mongomock client whose data lives per host for the whole session, like a
    server's: two clients of one host (a closed and re-opened store, an unpickled
    copy) see the same databases."""

    _stores: dict[str, ServerStore] = {}

    def __init__(self, host=None, *args, **kwargs):
        key = host if isinstance(host, str) else repr(host)
        kwargs.setdefault("_store", self._stores.setdefault(key, ServerStore()))
        super().__init__(host, *args, **kwargs)


def mongomock_uri() -> str:
    """The URI of a fresh mongomock "server" and database."""
    return f"mongodb://mock-{uuid.uuid4().hex[:12]}:27017/dbtest"
