"""Former home of :class:`~dask_broker.fill.FillRecipe` (now :mod:`dask_broker.fill.recipe`)."""

from __future__ import annotations

from .fill.recipe import DEFAULT_TASK_MAX_OPEN, FillRecipe, RunFillContext

__all__ = ["FillRecipe", "RunFillContext", "DEFAULT_TASK_MAX_OPEN"]
