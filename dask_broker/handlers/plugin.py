"""A Dask worker plugin that bounds and finally closes the worker's shared handlers."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from .cache import (
    DEFAULT_SHARED_MAX_OPEN,
    _validate_maxsize,
    close_shared_handlers,
    shared_handler_cache,
)

__all__ = ["HandlerCachePlugin"]


class HandlerCachePlugin(WorkerPlugin):
    """Size each worker's shared handler cache at setup; close its handlers at teardown.

    Every worker keeps its files open between tasks in its shared cache (see
    :func:`~dask_broker.handlers.cache.shared_handler_cache`), bounded by the dask
    config ``dask_broker.max-open-files`` and closed at teardown even without
    this plugin (the first read on a worker adds one).  Register it to give the
    workers another bound than their config.

    Parameters
    ----------
    max_open
        Most handlers each worker process keeps alive.
    resize
        Apply ``max_open`` at setup (False: keep the configured bound).

    Examples
    --------
    >>> from distributed import Client                     # doctest: +SKIP
    >>> client = Client()                                  # doctest: +SKIP
    >>> client.register_plugin(HandlerCachePlugin(max_open=32))  # doctest: +SKIP
    """

    name = "dask-broker-handler-cache"

    def __init__(self, max_open: int | None = DEFAULT_SHARED_MAX_OPEN, *, resize: bool = True):
        self.max_open = _validate_maxsize(max_open)
        self.resize = resize

    def setup(self, worker: Any) -> None:
        if self.resize:
            shared_handler_cache().maxsize = self.max_open

    def teardown(self, worker: Any) -> None:
        close_shared_handlers()
