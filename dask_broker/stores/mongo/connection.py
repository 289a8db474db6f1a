"""This process's clients of a store's servers, and their failures as StoreURIError."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ...errors import StoreURIError
from .uri import (
    MongoURI,
    client_for,
    drop_client,
    mask_uri,
)

__all__ = ["Connection", "IN_CHUNK", "AUTH_CODES"]

#: Values per ``$in`` query.
IN_CHUNK = 10_000
#: Unauthorized, AuthenticationFailed
AUTH_CODES = (13, 18)
_AUTH_CODES = AUTH_CODES


def _raised_in_pymongo_auth(err: BaseException) -> bool:
    """Whether ``err`` was raised inside pymongo's authentication code."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.startswith("pymongo.") and module.rpartition(".")[2] == "auth"



class Connection:
    """The databases of a :class:`~dask_broker.stores.mongo.MongoStore` (``_main`` and
    ``_assets``, both :class:`~.uri.MongoURI`), and the error mapping of every call."""

    _main: MongoURI
    _assets: MongoURI | None
    _client_class: Any
    _read_only: bool

    def _check_writable(self) -> None:
        """Refuse a write to a read-only store, before anything reaches the server."""
        if self._read_only:
            from ...errors import ReadOnlyCatalogError

            raise ReadOnlyCatalogError(
                f"the catalog {mask_uri(self.uri)} is read-only: it was opened read-only "  # type: ignore[attr-defined]
                "(read_only=True or ?mode=ro in its URI); nothing was written (open it "
                "without them to write)")

    def _db(self, target: MongoURI):
        return client_for(target, self._client_class)[target.database]

    def _mds(self):
        return self._db(self._main)

    def _ar(self):
        return self._db(self._assets or self._main)

    def close(self) -> None:
        """Close this process's clients of the store's servers (they re-open on use)."""
        drop_client(self._main, self._client_class)
        if self._assets is not None:
            drop_client(self._assets, self._client_class)

    @contextmanager
    def _errors(self, assets: bool = False) -> Iterator[None]:
        """Turn connection and authentication failures into StoreURIError naming the server."""
        from pymongo.errors import ConnectionFailure, OperationFailure, ServerSelectionTimeoutError

        target = (self._assets or self._main) if assets else self._main
        try:
            yield
        except ServerSelectionTimeoutError as err:
            raise StoreURIError(
                f"cannot reach the MongoDB server at {target.hosts} (database "
                f"{target.database!r}, URI {mask_uri(target.uri)}): no server answered within "
                f"{target.effective_timeout_ms / 1000:g} s (serverSelectionTimeoutMS); check that "
                "mongod runs there and the URI is right, or raise the timeout with "
                f"?serverSelectionTimeoutMS=... ({mask_uri(str(err)).split(',')[0][:200]})"
            ) from err
        except ConnectionFailure as err:
            raise StoreURIError(
                f"lost the connection to the MongoDB server at {target.hosts} (database "
                f"{target.database!r}): {mask_uri(str(err))[:300]}"
            ) from err
        except OperationFailure as err:
            if err.code in _AUTH_CODES:
                raise StoreURIError(
                    f"MongoDB at {target.hosts} refused access to database {target.database!r} "
                    f"({mask_uri(str(err.details.get('errmsg', err) if err.details else err))}); "
                    "check the user and password in the URI and the user's roles"
                ) from err
            raise
        except KeyError as err:
            if not _raised_in_pymongo_auth(err):
                raise
            # A wire-protocol server without access control (nx-27017, for one) answers
            # the authentication handshake with a reply pymongo cannot read.
            raise StoreURIError(
                f"the MongoDB server at {target.hosts} did not complete authentication for "
                f"database {target.database!r} (its reply lacks {err}); it may not support "
                "access control: check the user and password in the URI, or leave them out"
            ) from err
