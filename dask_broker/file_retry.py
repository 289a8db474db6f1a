"""Waiting for files that are not there yet.

On shared file systems (GPFS, NFS) a file a detector writes can appear on the
machine that reads it seconds after its datum or stream_datum was inserted.
So opening a handler or a stream reader that raises
:class:`~dask_broker.errors.MissingFileError` is tried again after each of the
``retry_intervals`` (seconds) before the error is raised -- the idea of
event-model's ``Filler(retry_intervals=...)``.

The intervals come from the ``retry_intervals=`` keyword of
:meth:`~dask_broker.Header.fill_context` (and :class:`~dask_broker.fill.FillContext`),
else from the dask config key ``dask_broker.fill-retry-intervals``, else
:data:`DEFAULT_RETRY_INTERVALS`; ``[]`` turns retrying off.  They are resolved
on the client when a recipe is built and travel inside it, so they reach Dask
workers whatever their own config (distributed hands a worker the config of
when its nanny started, not later ``dask.config.set`` calls of the client).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, TypeVar

from .errors import InvalidArgumentError, MissingFileError

__all__ = ["CONFIG_KEY", "DEFAULT_RETRY_INTERVALS", "resolve_retry_intervals",
           "retry_missing_file"]

#: The dask config key holding the intervals (a list of seconds).
CONFIG_KEY = "dask_broker.fill-retry-intervals"
#: Seconds waited before each retry: 1.5 s in all.
DEFAULT_RETRY_INTERVALS: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)

T = TypeVar("T")


def resolve_retry_intervals(intervals: Iterable[float] | None = None) -> tuple[float, ...]:
    """The retry intervals to use: ``intervals`` if given, else the dask config's, else the default.

    Raises
    ------
    InvalidArgumentError
        The intervals are not a list of non-negative numbers of seconds.

    Examples
    --------
    >>> resolve_retry_intervals([0.5, 1])
    (0.5, 1.0)
    >>> import dask
    >>> with dask.config.set({"dask_broker.fill-retry-intervals": []}):
    ...     resolve_retry_intervals()
    ()
    >>> resolve_retry_intervals()
    (0.1, 0.2, 0.4, 0.8)
    """
    source = "retry_intervals"
    if intervals is None:
        import dask.config

        intervals = dask.config.get(CONFIG_KEY, default=None)
        source = f"the dask config {CONFIG_KEY!r}"
        if intervals is None:
            return DEFAULT_RETRY_INTERVALS
    try:
        out = tuple(float(s) for s in intervals)
    except (TypeError, ValueError):
        out = None
    if out is None or isinstance(intervals, (str, bytes)) or any(
            not s >= 0 or s == float("inf") for s in out):
        raise InvalidArgumentError(
            f"{source} is {intervals!r}; it must be a list of seconds >= 0 to wait before each "
            f"retry of a missing file, e.g. {list(DEFAULT_RETRY_INTERVALS)}, or [] not to retry")
    return out


def retry_missing_file(attempt: Callable[[], T], intervals: tuple[float, ...], *,
                       sleep: Callable[[float], Any] = time.sleep) -> T:
    """``attempt()``, called again after each interval while it raises MissingFileError.

    The last MissingFileError is raised again with its message extended by how
    often it was tried and how to configure the retries.

    Examples
    --------
    >>> retry_missing_file(lambda: 42, (0.1,))
    42
    """
    for wait in intervals:
        try:
            return attempt()
        except MissingFileError:
            sleep(wait)
    try:
        return attempt()
    except MissingFileError as err:
        if intervals:
            tried = (f"tried {len(intervals) + 1} times over {sum(intervals):g} s "
                     f"(retry intervals {list(intervals)} s)")
        else:
            tried = "tried once (retrying is off)"
        raise MissingFileError(
            f"{err} -- {tried}. A file on a shared file system may appear late: set the "
            f"retries with dask.config.set({{{CONFIG_KEY!r}: [seconds, ...]}}) or "
            f"fill_context(retry_intervals=[...])") from err
