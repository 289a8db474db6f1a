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

    See :func:`~dask_broker.handlers.cache.shared_handler_cache`.

    Parameters
    ----------
    max_open
        Most handlers each worker process keeps alive.

    Examples
    --------
    >>> from distributed import Client                     # doctest: +SKIP
    >>> client = Client()                                  # doctest: +SKIP
    >>> client.register_plugin(HandlerCachePlugin(max_open=32))  # doctest: +SKIP
    """

    name = "dask-broker-handler-cache"

    def __init__(self, max_open: int | None = DEFAULT_SHARED_MAX_OPEN):
        self.max_open = _validate_maxsize(max_open)

    def setup(self, worker: Any) -> None:
        shared_handler_cache().maxsize = self.max_open

    def teardown(self, worker: Any) -> None:
        close_shared_handlers()
