"""Filling: replace the datum ids in events and tables with the data they point to.

A :class:`FillContext` is a context manager that owns the handlers it creates:
each resource's handler is created once (while it stays in the LRU), at most
``max_open`` handlers are alive at once, and every one is closed when the
context exits -- also when its body raises.  It never ships handlers anywhere:
in a Dask task, build a FillContext inside the task from plain data (descriptors,
resource and datum dicts, root_map, a registry), or from a store opened there.

Examples
--------
>>> from dask_broker.fill import FillContext
>>> ctx = FillContext.from_store(store, descriptors, root_map={"/old": "/new"})  # doctest: +SKIP
>>> with ctx:                                                    # doctest: +SKIP
...     filled = ctx.fill(event)
...     table = ctx.fill_table(df)
"""

from __future__ import annotations

import copy
import weakref
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from ..errors import UnknownDatumError, UnknownFieldError, UnknownReferenceError
from ..file_retry import resolve_retry_intervals
from ..handlers.cache import HandlerCache
from ..handlers.registry import HandlerRegistry, default_registry
from .datum import DatumLookup, DatumReader, ResourceLookup, resource_full_path

if TYPE_CHECKING:
    import pandas as pd

    from ..stores.base import Store

__all__ = ["FillContext", "resource_full_path", "DEFAULT_MAX_OPEN"]

#: Default bound on the handlers a FillContext keeps alive.
DEFAULT_MAX_OPEN = 64


class FillContext:
    """Fill events, datum and tables, owning (and finally closing) the handlers it opens.

    Parameters
    ----------
    descriptors
        The descriptors of the events to fill (an iterable of documents, or a
        mapping uid -> document); their ``data_keys`` with ``external`` are the
        fields that get filled.
    resources
        uid -> resource document: a callable returning the document or None
        (e.g. ``store.get_resource``) or a plain dict.
    datum
        datum ids -> datum documents: a callable taking a list of ids and
        returning ``{datum_id: doc}`` without the unknown ones (e.g.
        ``store.datum``) or a plain dict ``{datum_id: doc}``.
    registry
        Where handler classes come from: a :class:`~dask_broker.handlers.HandlerRegistry`
        (default: the process-wide one) or a plain mapping spec -> class.
    root_map
        Old root -> new root, applied to each resource's ``root``.
    max_open
        Most handlers alive at once (``None``: unbounded); the least recently
        used one is closed to make room.  Ignored when ``cache`` is given.
    cache
        A :class:`~dask_broker.handlers.HandlerCache` to share (e.g.
        :func:`~dask_broker.handlers.shared_handler_cache` in a Dask worker).
        Its handlers belong to it and outlive the context; by default the
        context has a private cache that it closes on exit.
    retry_intervals
        Seconds to wait before each new try of a resource whose file is missing
        (it may appear late on a shared file system), before MissingFileError;
        ``[]``: no retry.  Default: the dask config ``dask_broker.fill-retry-intervals``,
        else ``[0.1, 0.2, 0.4, 0.8]`` (see :mod:`dask_broker.file_retry`).

    Notes
    -----
    A filled array is materialized with :func:`numpy.asarray` while its handler
    is alive (so lazy results, e.g. dask arrays over an open file, are safe).
    A FillContext cannot be pickled.

    Examples
    --------
    >>> ctx = FillContext(descriptors, resources={r["uid"]: r for r in resources},
    ...                   datum={d["datum_id"]: d for d in datum},
    ...                   root_map={"/old/root": "/new/root"}, max_open=16)  # doctest: +SKIP
    >>> with ctx:                                                           # doctest: +SKIP
    ...     event = ctx.fill(event)
    ...     event["data"]["det_image"].shape
    (256, 256)
    """

    def __init__(
        self,
        descriptors: Iterable[Mapping] | Mapping[str, Mapping] = (),
        resources: ResourceLookup | None = None,
        datum: DatumLookup | None = None,
        *,
        registry: HandlerRegistry | Mapping[str, Any] | None = None,
        root_map: Mapping[str, str] | None = None,
        max_open: int | None = DEFAULT_MAX_OPEN,
        cache: HandlerCache | None = None,
        retry_intervals: Iterable[float] | None = None,
    ):
        if isinstance(descriptors, Mapping):
            descriptors = descriptors.values()
        self._data_keys: dict[str, Mapping] = {d["uid"]: d["data_keys"] for d in descriptors}
        self._external: dict[str, tuple[str, ...]] = {
            uid: tuple(k for k, v in keys.items() if v.get("external"))
            for uid, keys in self._data_keys.items()
        }
        self.registry = default_registry if registry is None else registry
        self.root_map: dict[str, str] = dict(root_map or {})
        #: seconds waited before each retry of a missing file
        self.retry_intervals = resolve_retry_intervals(retry_intervals)
        self._owns_cache = cache is None
        self._cache = HandlerCache(max_open) if cache is None else cache
        #: the one fill path (datum -> resource groups -> bulk handler reads)
        self._reader = DatumReader({} if datum is None else datum,
                                   {} if resources is None else resources, self.registry,
                                   root_map=self.root_map, cache=self._cache,
                                   retry_intervals=self.retry_intervals)
        if self._owns_cache:
            # Close forgotten handlers when the context is garbage collected.
            self._finalizer = weakref.finalize(self, self._cache.close_all)

    @classmethod
    def from_store(
        cls, store: "Store", descriptors: Iterable[Mapping] | Mapping[str, Mapping], **kwargs: Any
    ) -> "FillContext":
        """A FillContext whose resources and datum come from ``store``.

        Parameters
        ----------
        store
            The store holding the resource and datum documents.
        descriptors
            The descriptors of the events to fill.
        **kwargs
            ``registry``, ``root_map``, ``max_open``, ``cache``, ``retry_intervals``.

        Examples
        --------
        >>> descs = store.descriptors(run_uid)                    # doctest: +SKIP
        >>> with FillContext.from_store(store, descs) as ctx:     # doctest: +SKIP
        ...     arrays = ctx.fill_datum(datum_ids)
        """
        return cls(descriptors, store.get_resource, store.datum, **kwargs)

    def __repr__(self) -> str:
        return (f"FillContext(descriptors={len(self._data_keys)}, root_map={self.root_map!r}, "
                f"open_handlers={len(self._cache)}, max_open={self._cache.maxsize})")

    def __reduce__(self):
        raise TypeError(
            "a FillContext holds live handlers (open files) and cannot be pickled; ship its "
            "recipe instead -- descriptors, resource and datum documents (plain dicts), "
            "root_map and registry, or a store -- and create the FillContext inside the task"
        )

    # ------------------------------------------------------------ lifetime
    def __enter__(self) -> "FillContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every handler this context owns (errors from ``close()`` are warned).

        The context may be used again; it opens handlers anew.  With a shared
        ``cache`` this does nothing: the cache's owner closes its handlers.

        Examples
        --------
        >>> ctx.close()  # doctest: +SKIP
        """
        if self._owns_cache:
            self._cache.close_all()

    @property
    def open_handlers(self) -> int:
        """How many handlers are alive in this context's cache."""
        return len(self._cache)

    @property
    def external_fields(self) -> list[str]:
        """The external fields of all the context's descriptors, in descriptor order."""
        return list(dict.fromkeys(k for keys in self._external.values() for k in keys))

    # ------------------------------------------------------------ filling
    def fill(self, event: Mapping, fields: Iterable[str] | None = None) -> dict:
        """A deep copy of ``event`` with its external fields filled.

        Each filled field's datum id in ``data`` becomes the array it points to
        and its ``filled`` flag becomes True; fields already marked filled are
        left alone.  The input is not modified.

        Parameters
        ----------
        event
            An event document whose descriptor the context was given.
        fields
            Fill only these fields (None: every external field).

        Raises
        ------
        UnknownReferenceError
            The event's descriptor, or a datum's resource, is unknown.
        UnknownFieldError
            A requested field is not in the event's descriptor.
        UnknownDatumError, HandlerNotFoundError, MissingFileError, HandlerError
            See :meth:`fill_datum`.

        Examples
        --------
        >>> with FillContext(descriptors, resources, datum) as ctx:  # doctest: +SKIP
        ...     filled = ctx.fill(event)
        >>> filled["filled"]                                        # doctest: +SKIP
        {'det_image': True}
        """
        desc_uid = event.get("descriptor")
        external = self._external.get(desc_uid)
        if external is None:
            raise UnknownReferenceError(
                f"event {event.get('uid')!r} refers to descriptor {desc_uid!r}, which this "
                f"FillContext was not given; pass it in descriptors= "
                f"(known: {sorted(self._external)})"
            )
        keys = list(external)
        if fields is not None:
            fields = list(fields)
            unknown = [f for f in fields if f not in self._data_keys[desc_uid]]
            if unknown:
                raise UnknownFieldError(
                    f"field(s) {unknown} are not in descriptor {desc_uid!r}; "
                    f"its fields are {list(self._data_keys[desc_uid])}"
                )
            keys = [k for k in keys if k in fields]
        out = copy.deepcopy(dict(event))
        flags = out.setdefault("filled", {})
        for key in external:
            flags.setdefault(key, False)
        todo = [k for k in keys if not flags[k]]
        if not todo:
            return out
        for key in todo:
            if not isinstance(out["data"].get(key), str):
                raise UnknownDatumError(
                    f"event {event.get('uid')!r} field {key!r} is marked unfilled but holds "
                    f"{type(out['data'].get(key)).__name__} {out['data'].get(key)!r}, "
                    f"not a datum id"
                )
        ids = [out["data"][k] for k in todo]
        where = {i: f"event {event.get('uid')!r} field {k!r}" for i, k in zip(ids, todo, strict=True)}
        for key, value in zip(todo, self._fill_ids(ids, where), strict=True):
            out["data"][key] = value
            flags[key] = True
        return out

    def fill_datum(self, datum_ids: Iterable[str]) -> list[np.ndarray]:
        """The data of each datum, in order.

        Datum are grouped by resource; each resource's handler is created once
        (and kept in the LRU) and reads the group with its ``read_many`` method
        where it has one, else one datum at a time.  A repeated id yields the
        same array object.

        Parameters
        ----------
        datum_ids
            The datum ids.

        Returns
        -------
        list of numpy.ndarray

        Raises
        ------
        UnknownDatumError
            A datum id is not stored (the message names it).
        UnknownReferenceError
            A datum's resource is not stored.
        HandlerNotFoundError
            No handler for a resource's spec.
        MissingFileError
            A resource's file is missing, also after the ``retry_intervals``
            (names the resource, the path after root_map and the root_map).
        HandlerError
            The handler raised (names the datum id and the resource uid).

        Examples
        --------
        >>> with FillContext(datum=datum_docs, resources=resource_docs) as ctx:  # doctest: +SKIP
        ...     frames = ctx.fill_datum(["a1b2/0", "a1b2/1"])
        """
        return self._fill_ids(list(datum_ids), None)

    def fill_table(self, df: "pd.DataFrame", fields: Iterable[str] | None = None) -> "pd.DataFrame":
        """A copy of a pandas DataFrame whose external columns hold arrays instead of datum ids.

        Cells holding a datum id (str) are filled; other cells (missing values,
        already filled data) are kept.  Filled columns have dtype object.

        Parameters
        ----------
        df
            A table whose columns are fields (e.g. a partition of a run's table).
        fields
            Fill only these columns (None: every external column of ``df``).

        Raises
        ------
        UnknownFieldError
            A requested field is not a column of ``df``.

        Examples
        --------
        >>> with FillContext.from_store(store, descriptors) as ctx:  # doctest: +SKIP
        ...     filled = ctx.fill_table(df)
        >>> filled["det_image"].iloc[0].shape                        # doctest: +SKIP
        (256, 256)
        """
        external = set(self.external_fields)
        if fields is None:
            columns = [c for c in df.columns if c in external]
        else:
            fields = list(fields)
            unknown = [f for f in fields if f not in df.columns]
            if unknown:
                raise UnknownFieldError(f"field(s) {unknown} are not columns of the table; "
                                        f"its columns are {list(df.columns)}")
            columns = [f for f in fields if f in external]
        out = df.copy(deep=False)
        cells: list[tuple[str, int]] = []
        ids: list[str] = []
        values: dict[str, list] = {}
        for col in columns:
            values[col] = df[col].tolist()
            for row, value in enumerate(values[col]):
                if isinstance(value, str):
                    cells.append((col, row))
                    ids.append(value)
        arrays = self._fill_ids(ids, None) if ids else []
        for (col, row), array in zip(cells, arrays, strict=True):
            values[col][row] = array
        for col in columns:
            column = np.empty(len(df), dtype=object)
            for row, value in enumerate(values[col]):
                column[row] = value  # element-wise: never broadcast arrays into the column
            out[col] = column
        return out

    # ------------------------------------------------------------ internals
    def _fill_ids(self, ids: list[str], where: Mapping[str, str] | None) -> list[np.ndarray]:
        return self._reader.read(ids, where)
