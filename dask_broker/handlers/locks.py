"""Per-process locks for libraries that are not thread-safe (HDF5).

A :class:`PerProcessLock` is one lock per name and process.  It pickles by name,
so a copy shipped to another process (for example inside a Dask task) uses that
process's lock -- never a lock object copied from elsewhere.
"""

from __future__ import annotations

import os
import threading

__all__ = ["PerProcessLock", "HDF5_LOCK"]

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_named(name: str) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(name)
        if lock is None:
            lock = _LOCKS[name] = threading.RLock()
        return lock


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _LOCKS_GUARD
    _LOCKS_GUARD = threading.Lock()
    _LOCKS.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


class PerProcessLock:
    """A re-entrant lock shared by every user of ``name`` in this process.

    Parameters
    ----------
    name
        The lock's name; equal names mean the same lock.

    Examples
    --------
    >>> lock = PerProcessLock("example")
    >>> with lock:
    ...     pass
    >>> import pickle
    >>> pickle.loads(pickle.dumps(lock)) == lock
    True
    """

    def __init__(self, name: str):
        self.name = name

    @property
    def _lock(self) -> threading.RLock:
        return _lock_named(self.name)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock (see :meth:`threading.RLock.acquire`)."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def __enter__(self) -> "PerProcessLock":
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __reduce__(self):
        return (type(self), (self.name,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerProcessLock) and other.name == self.name

    def __hash__(self) -> int:
        return hash((PerProcessLock, self.name))

    def __repr__(self) -> str:
        return f"PerProcessLock({self.name!r})"


#: Every h5py call of dask_broker (open, read, close) holds this lock: HDF5 is not thread-safe.
HDF5_LOCK = PerProcessLock("hdf5")
