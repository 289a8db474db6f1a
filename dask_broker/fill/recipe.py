"""FillRecipe: what a Dask task needs to fill external data on a worker.

A recipe is small and picklable -- the catalog URI, the run's descriptors and
resource documents, the handler classes resolved on the client, the root_map.
The task creates a :class:`~dask_broker.fill.FillContext` from it, looks the
datum documents of its datum ids up in the store (opened from the URI on the
worker) and reads.  The handlers (open files) stay in the process's bounded
shared cache (:func:`~dask_broker.handlers.cache.shared_handler_cache`, sized
by the dask config ``dask_broker.max-open-files``) for the next task, and are
closed at the worker's teardown (or at exit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import HandlerNotFoundError
from ..file_retry import resolve_retry_intervals
from ..handlers.cache import HandlerCache, process_handler_cache
from ..handlers.registry import HandlerRegistry
from ..stores import StoreRef
from .context import FillContext
from .datum import DatumReader

__all__ = ["FillRecipe", "RunFillContext", "DEFAULT_TASK_MAX_OPEN"]

#: Former bound on the handlers of one task; tasks now share the process's cache, whose
#: bound is the dask config ``dask_broker.max-open-files`` (kept for compatibility).
DEFAULT_TASK_MAX_OPEN = 16


@dataclass(frozen=True)
class FillRecipe:
    """Everything a task needs to fill one run's external fields (picklable, no open files).

    Build it with :meth:`for_run` (on the client: the run's resources and their
    handler classes); in a task, :meth:`reader` gives the
    :class:`~dask_broker.fill.datum.DatumReader` (the one fill path) over the
    store opened from its URI and the process's shared handler cache.

    Examples
    --------
    >>> recipe = FillRecipe.for_run(store, descriptors, resources, registry)  # doctest: +SKIP
    >>> frames = recipe(["a1b2/0", "a1b2/1"])                                 # doctest: +SKIP
    """

    store: StoreRef
    descriptors: tuple[Mapping, ...]
    resources: tuple[Mapping, ...]
    handlers: tuple[tuple[str, Any], ...]
    root_map: tuple[tuple[str, str], ...] = ()
    #: spec -> why no handler was found for it on the client (raised when a task needs it)
    missing: tuple[tuple[str, str], ...] = ()
    #: seconds waited before each retry of a missing file (resolved on the client)
    retry_intervals: tuple[float, ...] = ()
    #: the Broker's handler registry: specs of resources outside ``resources`` (legacy
    #: resources without ``run_start``, found through their datum) are looked up there
    registry: Any = field(default=None, compare=False)

    @classmethod
    def for_run(cls, store, descriptors: Sequence[Mapping], resources: Sequence[Mapping],
                registry: HandlerRegistry, root_map: Mapping[str, str] | None = None,
                retry_intervals: Iterable[float] | None = None) -> "FillRecipe":
        """Resolve the handler class of every resource's spec now, on the client.

        A spec without a handler is left out; filling a datum of it raises
        :class:`~dask_broker.errors.HandlerNotFoundError` in the task.  The retry
        intervals (default: the client's dask config) travel in the recipe.
        """
        handlers, missing = {}, {}
        for spec in dict.fromkeys(r["spec"] for r in resources):
            try:
                handlers[spec] = registry.lookup(spec)
            except HandlerNotFoundError as err:
                missing[spec] = str(err)
        ref = store if isinstance(store, StoreRef) else store.ref
        return cls(ref, tuple(descriptors), tuple(resources), tuple(handlers.items()),
                   tuple(sorted((root_map or {}).items())),
                   tuple(missing.items()), resolve_retry_intervals(retry_intervals), registry)

    def __dask_tokenize__(self):
        # A resource update (new root or path) or a new root_map gives new task names.
        return ("dask_broker.FillRecipe", self.store.__dask_tokenize__(),
                tuple(d["uid"] for d in self.descriptors),
                tuple((r.get("uid"), r.get("root"), r.get("resource_path"), r.get("spec"),
                       repr(sorted(r.get("resource_kwargs", {}).items()))) for r in self.resources),
                tuple((spec, f"{cls.__module__}.{cls.__qualname__}") for spec, cls in self.handlers),
                self.root_map)

    def reader(self, cache: HandlerCache | None = None, *, retry: bool = True) -> DatumReader:
        """The fill path in this process: datum looked up in the store, handlers in ``cache``
        (default: the process's shared cache); ``retry=False``: a missing file is not
        waited for (planning)."""
        store = self.store.open()
        resources = {r["uid"]: r for r in self.resources}

        def resource(uid: str) -> Mapping | None:
            return resources.get(uid) or store.get_resource(uid)

        return DatumReader(store.datum, resource, _Handlers(self.handlers, self.missing, self.registry),
                           root_map=dict(self.root_map),
                           cache=process_handler_cache() if cache is None else cache,
                           retry_intervals=self.retry_intervals if retry else ())

    def context(self) -> FillContext:
        """A FillContext over this recipe, keeping its handlers in the process's shared cache."""
        store = self.store.open()
        resources = {r["uid"]: r for r in self.resources}

        def resource(uid: str) -> Mapping | None:
            return resources.get(uid) or store.get_resource(uid)

        return FillContext(self.descriptors, resource, store.datum,
                           registry=_Handlers(self.handlers, self.missing, self.registry),
                           root_map=dict(self.root_map), cache=process_handler_cache(),
                           retry_intervals=self.retry_intervals)

    def __call__(self, datum_ids: Sequence[str]) -> list[np.ndarray]:
        """Arrays for these datum ids."""
        return self.reader().read(list(datum_ids))

    def fill_column(self, values: np.ndarray, *, reader: DatumReader | None = None) -> np.ndarray:
        """An object column with its datum ids (str cells) replaced by their data.

        Other cells (missing values, data already filled) are kept.
        """
        values = np.asarray(values, dtype=object)
        is_id = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
        if not is_id.any():
            return values
        rows = np.flatnonzero(is_id)
        frames = (reader or self.reader()).read(values[rows].tolist())
        out = values.copy()
        for row, frame in zip(rows.tolist(), frames, strict=True):
            out[row] = frame  # element-wise: never broadcast arrays into the column
        return out

    def fill_frame(self, df: pd.DataFrame, fields: Iterable[str]) -> pd.DataFrame:
        """Fill the given external columns of a pandas partition."""
        fields = [f for f in fields if f in df.columns]
        if not fields or df.empty:
            return df
        reader = self.reader()
        out = df.copy(deep=False)
        for f in fields:
            out[f] = pd.Series(self.fill_column(df[f].to_numpy(dtype=object), reader=reader),
                               index=df.index, dtype=object)
        return out


class _Handlers(dict):
    """spec -> handler class; a spec resolved to nothing raises the client's explanation."""

    def __init__(self, handlers, missing, registry=None):
        super().__init__(handlers)
        self.missing = dict(missing)
        self.registry = registry

    def __missing__(self, spec: str):
        if spec not in self.missing and self.registry is not None:
            # a resource the client did not list (no run_start): ask the registry
            self[spec] = self.registry.lookup(spec)
            return self[spec]
        raise HandlerNotFoundError(self.missing.get(spec) or f"no handler for spec {spec!r}")


class RunFillContext(FillContext):
    """The fill context of a run (``h.fill_context()``): also fills Dask DataFrames, lazily.

    ``fill_table`` on a pandas DataFrame fills it here, with this context's
    handlers; on a Dask DataFrame it returns a new lazy Dask DataFrame whose
    tasks each fill their partition from the run's :class:`FillRecipe`.
    """

    def __init__(self, recipe: FillRecipe, store, stream_fill: Any = None, **kwargs: Any):
        super().__init__(recipe.descriptors, store.get_resource, store.datum,
                         registry=_Handlers(recipe.handlers, recipe.missing, recipe.registry),
                         root_map=dict(recipe.root_map),
                         retry_intervals=recipe.retry_intervals, **kwargs)
        self.recipe = recipe
        #: a StreamFill over the run's stream_resources (None if it has none)
        self.stream_fill = stream_fill

    def fill_table(self, df, fields: Iterable[str] | None = None):
        """Fill a table's external columns: datum ids and stream_datum references alike.

        A pandas DataFrame is filled here; a Dask DataFrame gives a new lazy one
        whose tasks each fill their partition.
        """
        import dask.dataframe as dd

        streamed = set(self.stream_fill.layout.names) if self.stream_fill is not None else set()
        wanted = list(df.columns) if fields is None else list(fields)
        stream_cols = [c for c in wanted if c in streamed and c in df.columns]
        others = [c for c in wanted if c not in streamed]
        if not isinstance(df, dd.DataFrame):
            out = super().fill_table(df, others) if (others or fields is None) else df
            return _fill_stream_columns(out, self.stream_fill, stream_cols, self._cache)
        external = set(self.external_fields) - streamed
        columns = [c for c in others if c in external]
        return df.map_partitions(_fill_partition, self.recipe, columns, self.stream_fill,
                                 stream_cols, meta=_filled_meta(df._meta, stream_cols,
                                                                self.stream_fill),
                                 token=f"fill-{'-'.join(columns + stream_cols)}")


def _fill_stream_columns(df: pd.DataFrame, stream_fill, columns: list[str],
                         cache=None) -> pd.DataFrame:
    if not columns or df.empty:
        return df
    out = df.copy(deep=False)
    for col in columns:
        values = stream_fill.read_references(col, df[col].tolist(), cache)
        out[col] = pd.Series(values, index=df.index)
    return out


def _fill_partition(df: pd.DataFrame, recipe: FillRecipe, columns: list[str], stream_fill,
                    stream_columns: list[str]) -> pd.DataFrame:
    return _fill_stream_columns(recipe.fill_frame(df, columns), stream_fill, stream_columns)


def _filled_meta(meta: pd.DataFrame, columns: list[str], stream_fill) -> pd.DataFrame:
    """Filled STREAM: columns of one number per row are floats."""
    if not columns:
        return meta
    meta = meta.copy()
    for col in columns:
        shape = stream_fill.shape(col)
        if not shape.row_shape and shape.dtype and np.dtype(shape.dtype).kind in "fiub":
            meta[col] = meta[col].astype("f8")
    return meta
