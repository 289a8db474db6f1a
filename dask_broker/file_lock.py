"""One copy or move at a time per catalog and run: an advisory lock file.

:func:`relocation_lock` takes, without waiting, an exclusive ``flock`` on one
lock file per (catalog, run) in :func:`lock_dir` (a folder of the machine's
temporary directory; set :data:`LOCK_DIR` to share one between machines on a
filesystem where ``flock`` works across them).  A second process asking for a
run that is locked gets a :class:`~dask_broker.errors.FilesLockedError` at once,
before it has touched anything.  The kernel releases the lock when the holder
exits, also when it is killed, so a crashed move never leaves a run locked.  On
a platform without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
from typing import Any, Iterable, Iterator

from .errors import FilesLockedError

__all__ = ["LOCK_DIR", "lock_dir", "lock_path", "catalog_key", "relocation_lock"]

#: The folder of the lock files (None: ``<temporary directory>/dask-broker-locks``).
LOCK_DIR: str | None = None


def lock_dir() -> str:
    """The folder of the lock files, created (world-writable, sticky, like /tmp) if needed."""
    folder = LOCK_DIR or os.path.join(tempfile.gettempdir(), "dask-broker-locks")
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    else:
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o1777)  # other users lock their runs here too
    return folder


def catalog_key(store: Any) -> str:
    """What names a catalog in a lock: a SQLite file's real path, else the store's URI."""
    path = getattr(store, "path", None)
    if path is not None:
        return "sqlite:" + os.path.realpath(os.fspath(path))
    return str(store.uri)


def lock_path(catalog: str, run_uid: str) -> str:
    """The lock file of one run of one catalog (named by a hash: no URI leaks into it)."""
    digest = hashlib.sha256(f"{catalog}\0{run_uid}".encode()).hexdigest()[:32]
    return os.path.join(lock_dir(), f"{digest}.lock")


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return f" (held by {text})"
    return ""


@contextlib.contextmanager
def relocation_lock(store: Any, run_uids: Iterable[str], operation: str) -> Iterator[None]:
    """Hold the locks of these runs of ``store``'s catalog for the ``with`` block.

    Raises
    ------
    FilesLockedError
        Another process holds one of them (none is held on return).

    Examples
    --------
    >>> with relocation_lock(db.store, [h.uid], "move_files"):  # doctest: +SKIP
    ...     ...
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        yield
        return
    catalog = catalog_key(store)
    held: list[int] = []
    try:
        for run_uid in sorted(set(run_uids)):
            path = lock_path(catalog, run_uid)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # another user's lock file: locking needs no write access
                fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise FilesLockedError(
                    f"run {run_uid!r} of catalog {store!r} is being copied or moved by another "
                    f"process{holder}; nothing was done. Wait for it to finish, then run "
                    f"{operation} again (lock file {path})") from None
            held.append(fd)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, "
                              f"{operation}".encode(), 0)
        yield
    finally:
        for fd in held:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the file releases its lock
