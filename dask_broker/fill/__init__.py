"""Filling: replace the datum ids in events and tables with the data they point to.

Modules, one job each:

- :mod:`~dask_broker.fill.datum`: the one fill path -- datum ids grouped by resource,
  each group one bulk handler read (:class:`DatumReader`), and ``resource_full_path``;
- :mod:`~dask_broker.fill.context`: :class:`FillContext`, filling with an explicit,
  scoped handler lifetime (every handler closed when its ``with`` block ends);
- :mod:`~dask_broker.fill.recipe`: :class:`FillRecipe`, what a Dask task needs to fill
  (picklable; handlers live in the process's shared cache), and the run's
  :class:`RunFillContext` (``h.fill_context()``);
- :mod:`~dask_broker.fill.stream`: :class:`StreamFill`, the same for ``STREAM:`` keys
  (stream_resource / stream_datum: one bulk read per run of rows of a file).

The lifetime of open files is :mod:`dask_broker.handlers.cache`'s; an example of
a scoped :class:`FillContext` is in :mod:`dask_broker.fill.context`.
"""

from __future__ import annotations

from .context import DEFAULT_MAX_OPEN, FillContext
from .datum import DatumReader, resource_full_path
from .recipe import DEFAULT_TASK_MAX_OPEN, FillRecipe, RunFillContext
from .stream import KeyShape, StreamFill

__all__ = ["FillContext", "DatumReader", "FillRecipe", "RunFillContext", "StreamFill",
           "KeyShape", "resource_full_path", "DEFAULT_MAX_OPEN", "DEFAULT_TASK_MAX_OPEN"]
