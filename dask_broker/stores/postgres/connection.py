"""Connections to a PostgreSQL catalog: a small pool per store and process, safe across fork.

Each :class:`ConnectionPool` hands out a connection per operation (any thread)
and keeps a few idle ones for the next.  Connections are autocommit; writes and
consistent reads open their own transaction.

A forked child never uses (nor closes) its parent's connections: at the fork,
and again whenever a pool sees that ``os.getpid()`` changed, every connection
the parent made is cut loose in the child -- its socket is pointed at
``/dev/null`` before it is closed, so libpq's goodbye message cannot end the
parent's session -- and the child connects anew.

A server that does not answer is an error within libpq's ``connect_timeout``
(5 s unless the URI sets it); every connection error becomes a
:class:`~dask_broker.errors.StoreURIError` naming the server (``host:port`` or
the socket) and the database, never the password.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

from ...errors import StoreURIError
from ...redact import mask_uri
from .uri import PostgresURI

__all__ = ["ConnectionPool", "connect"]

#: Idle connections a pool keeps for the next operation.
MAX_IDLE = 4

_pools: "weakref.WeakSet[ConnectionPool]" = weakref.WeakSet()


def connect(target: PostgresURI, *, read_only: bool = False):
    """A new autocommit connection, or StoreURIError naming the server and the fix."""
    import psycopg

    try:
        conn = psycopg.connect(target.conninfo, autocommit=True, **dict(target.connect_kwargs))
    except psycopg.OperationalError as err:
        detail = " ".join(mask_uri(str(err)).split())
        hint = ""
        if "does not exist" in detail and "database" in detail:
            hint = (f"; create the database first (`createdb {target.dbname}`, or "
                    f"CREATE DATABASE {target.dbname})")
        elif "timeout" in detail:
            hint = "; is the server running, and does a firewall let the port through?"
        raise StoreURIError(
            f"cannot connect to the PostgreSQL server at {target.where} (database "
            f"{target.dbname or '(default)'!r}, catalog {mask_uri(target.uri)}): {detail}{hint}"
        ) from None
    if read_only:
        conn.execute("SET default_transaction_read_only = on")
    return conn


def _is_idle_and_alive(conn) -> bool:
    """Whether a pooled connection can be reused: open, outside a transaction, and
    with nothing to read (a server that closed it has sent EOF or an error)."""
    from psycopg.pq import TransactionStatus

    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        # poll, not select: select() refuses descriptors >= FD_SETSIZE (1024), which a
        # long-lived process (a worker, a test run) reaches, and the pool then never reused
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        readable = poller.poll(0)
    except (OSError, ValueError):
        return False
    return not readable


class ConnectionPool:
    """This process's connections to one catalog (see the module docstring)."""

    def __init__(self, target: PostgresURI, *, read_only: bool = False):
        self._target = target
        self._read_only = read_only
        self._lock = threading.Lock()
        self._idle: list = []
        self._made: "weakref.WeakSet" = weakref.WeakSet()
        self._pid = os.getpid()
        _pools.add(self)

    @contextmanager
    def connection(self) -> Iterator:
        """A connection for one operation, given back (or closed) when the block ends."""
        conn = self._take()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _take(self):
        if self._pid != os.getpid():
            self._forget_parent()
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _is_idle_and_alive(conn):
                    return conn
                conn.close()
        conn = connect(self._target, read_only=self._read_only)
        with self._lock:
            self._made.add(conn)
        return conn

    def _give_back(self, conn) -> None:
        if self._pid != os.getpid():  # made by the parent before a fork: never reuse
            return
        if _is_idle_and_alive(conn):
            with self._lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        """Close the idle connections (those in use close when given back)."""
        if self._pid != os.getpid():
            self._forget_parent()
            return
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _forget_parent(self) -> None:
        """In a forked child: cut loose every connection the parent made.

        The lock is replaced, not taken: a parent thread may have held it at the fork.
        """
        self._lock = threading.Lock()
        conns = list(self._made)
        self._idle, self._made = [], weakref.WeakSet()
        self._pid = os.getpid()
        _cut_loose(conns)


def _cut_loose(conns) -> None:
    """Close connections inherited across a fork without touching the parent's sessions."""
    if not conns:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for conn in conns:
            try:
                if not conn.closed:
                    os.dup2(devnull, conn.pgconn.socket)
            except Exception:  # noqa: BLE001 -- a connection already gone
                pass
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        os.close(devnull)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        try:
            pool._forget_parent()
        except Exception:  # noqa: BLE001 -- never break a fork
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
