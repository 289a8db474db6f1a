"""The one fill path: datum ids -> grouped by resource -> bulk handler reads -> values.

:class:`DatumReader` is what every filler uses -- a table partition's task,
``to_xarray``'s chunks, ``docs(fill=True)`` and :class:`~dask_broker.fill.FillContext`:
it looks the datum documents up (one query for a list of ids), groups them by
resource, takes each resource's handler from a
:class:`~dask_broker.handlers.HandlerCache` (created once, kept while it stays in
the LRU) and reads each group in one call of the handler's ``read_many`` (or
``read_into``, which writes the frames straight into an output array).  It is
made where it reads -- it holds no open file itself, only its cache does.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from ..errors import (
    DaskBrokerError,
    HandlerError,
    HandlerNotFoundError,
    MissingFileError,
    UnknownDatumError,
    UnknownReferenceError,
)
from ..file_retry import retry_missing_file
from ..handlers.base import read_into, read_many
from ..handlers.cache import HandlerCache
from ..handlers.registry import HandlerRegistry

__all__ = ["DatumReader", "resource_full_path", "ResourceLookup", "DatumLookup"]

ResourceLookup = Union[Callable[[str], "Mapping | None"], Mapping[str, Mapping]]
DatumLookup = Union[Callable[[Sequence[str]], Mapping[str, Mapping]], Mapping[str, Mapping]]


def resource_full_path(resource: Mapping, root_map: Mapping[str, str] | None = None) -> str:
    """The path a resource's handler opens: its (re-mapped) root joined with resource_path.

    ``os.path.join(root_map.get(root, root), resource_path)``, as event-model
    does; a missing or empty root leaves ``resource_path`` as it is.

    Parameters
    ----------
    resource
        A resource document.
    root_map
        Old root -> new root, for files that moved.

    Examples
    --------
    >>> res = {"root": "/old", "resource_path": "a/b.h5"}
    >>> resource_full_path(res)
    '/old/a/b.h5'
    >>> resource_full_path(res, {"/old": "/new"})
    '/new/a/b.h5'
    >>> resource_full_path({"root": "", "resource_path": "b.h5"})
    'b.h5'
    """
    root = resource.get("root") or ""
    if root_map:
        root = root_map.get(root, root) or ""
    return os.path.join(root, resource.get("resource_path") or "")


def _is_missing_file(err: BaseException) -> bool:
    return isinstance(err, FileNotFoundError) or (
        isinstance(err, OSError) and err.errno == errno.ENOENT)


def _ids_text(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:3])
    return shown + (f" (and {len(ids) - 3} more)" if len(ids) > 3 else "")


class DatumReader:
    """Reads the data of datum ids, grouped by resource, with bulk handler reads.

    Parameters
    ----------
    datum
        datum ids -> datum documents: a callable taking a list of ids and
        returning ``{datum_id: doc}`` without the unknown ones (e.g.
        ``store.datum``) or a plain dict.
    resources
        uid -> resource document: a callable returning the document or None, or a dict.
    handlers
        spec -> handler class: a :class:`~dask_broker.handlers.HandlerRegistry` or a mapping.
    root_map
        Old root -> new root, applied to each resource's ``root``.
    cache
        Where the handlers live (their lifetime is the cache's).
    retry_intervals
        Seconds to wait before each new try of a resource whose file is missing.

    Examples
    --------
    >>> reader = DatumReader(datum_docs, resource_docs, {"AD_HDF5": Handler},
    ...                      cache=HandlerCache(4))                        # doctest: +SKIP
    >>> frames = reader.read(["a1b2/0", "a1b2/1"])                       # doctest: +SKIP
    """

    def __init__(self, datum: DatumLookup, resources: ResourceLookup,
                 handlers: HandlerRegistry | Mapping[str, Any], *,
                 root_map: Mapping[str, str] | None = None, cache: HandlerCache,
                 retry_intervals: tuple[float, ...] = ()):
        self._datum = datum
        self._resources = resources
        self.handlers = handlers
        self.root_map = dict(root_map or {})
        self.cache = cache
        self.retry_intervals = tuple(retry_intervals)
        self._resource_docs: dict[str, Mapping] = {}

    # ------------------------------------------------------------ reading
    def read(self, ids: Sequence[str], where: Mapping[str, str] | None = None) -> list:
        """The data of each datum, in order (a repeated id yields the same array object).

        ``where`` names, per datum id, what referenced it (for error messages).

        Raises
        ------
        UnknownDatumError, UnknownReferenceError, HandlerNotFoundError, MissingFileError,
        HandlerError
        """
        ids = list(ids)
        unique = list(dict.fromkeys(ids))
        docs = self.datum_docs(unique, where)
        values: dict[str, Any] = {}
        for resource_uid, group in _groups(unique, docs).items():
            values.update(zip(group, self._read_group(resource_uid, group, docs), strict=True))
        return [values[i] for i in ids]

    def read_into(self, ids: Sequence[str], out: np.ndarray,
                  where: Mapping[str, str] | None = None) -> np.ndarray:
        """Write the data of ``ids[i]`` into ``out[i]``; return ``out``.

        A handler with a ``read_into`` method (the built-in ``AD_HDF5``) reads each
        group of consecutive rows straight into ``out``: no intermediate copy.
        """
        ids = list(ids)
        docs = self.datum_docs(list(dict.fromkeys(ids)), where)
        rows: dict[str, list[int]] = {}
        for i, datum_id in enumerate(ids):
            rows.setdefault(docs[datum_id]["resource"], []).append(i)
        for resource_uid, positions in rows.items():
            group = [ids[i] for i in positions]
            first, last = positions[0], positions[-1]
            if last - first + 1 == len(positions):  # consecutive rows: write in place
                self._read_group(resource_uid, group, docs, out[first:last + 1])
            else:
                block = np.empty((len(positions), *out.shape[1:]), dtype=out.dtype)
                self._read_group(resource_uid, group, docs, block)
                out[positions] = block
        return out

    def describe(self, datum_id: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of one datum's data: the handler's metadata where it has a
        ``describe`` method (no data read), else the datum read."""
        docs = self.datum_docs([datum_id], None)
        doc = docs[datum_id]
        kwargs = doc.get("datum_kwargs") or {}

        def describe(handler: Any) -> tuple[tuple[int, ...], np.dtype]:
            describe_ = getattr(handler, "describe", None)
            if describe_ is not None:
                shape, dtype = describe_(**kwargs)
                return tuple(shape), np.dtype(dtype)
            value = np.asarray(handler(**kwargs))
            return value.shape, value.dtype

        return self._with_handler(doc["resource"], datum_id, describe)

    def datum_docs(self, ids: list[str], where: Mapping[str, str] | None) -> dict[str, Mapping]:
        """The datum documents of ``ids`` (every one must be stored)."""
        if not ids:
            return {}
        if isinstance(self._datum, Mapping):
            found = {i: self._datum[i] for i in ids if i in self._datum}
        else:
            found = dict(self._datum(ids))
        if len(found) != len(ids):
            missing = [i for i in ids if i not in found]
            context = (f" (referenced by {where[missing[0]]})"
                       if where and missing[0] in where else "")
            raise UnknownDatumError(
                f"unknown datum id {_ids_text(missing)}{context}: no datum document with "
                f"this id is stored; was the datum inserted before the event?"
            )
        return found

    # ------------------------------------------------------------ internals
    def resource(self, uid: str, datum_id: str) -> Mapping:
        doc = self._resource_docs.get(uid)
        if doc is None:
            if isinstance(self._resources, Mapping):
                doc = self._resources.get(uid)
            else:
                doc = self._resources(uid)
            if doc is None:
                raise UnknownReferenceError(
                    f"datum {datum_id!r} refers to resource {uid!r}, which is not stored")
            self._resource_docs[uid] = doc
        return doc

    def _handler_class(self, spec: str, resource_uid: str) -> Any:
        try:
            if isinstance(self.handlers, HandlerRegistry):
                return self.handlers.lookup(spec)
            return self.handlers[spec]
        except (HandlerNotFoundError, KeyError) as err:
            detail = str(err) if isinstance(err, HandlerNotFoundError) else (
                f"no handler for spec {spec!r} in the given registry mapping; add one "
                f"(known: {sorted(self.handlers)})")
            raise HandlerNotFoundError(f"cannot fill resource {resource_uid!r}: {detail}") from err

    def _with_handler(self, uid: str, datum_id: str, use: Callable[[Any], Any]) -> Any:
        """``use(handler)`` with the resource's handler from the cache (opened if needed);
        a handler whose first use fails is dropped at once; a missing file is retried."""
        resource = self.resource(uid, datum_id)
        spec = resource.get("spec")
        handler_class = self._handler_class(spec, uid)
        path = resource_full_path(resource, self.root_map)
        resource_kwargs = resource.get("resource_kwargs") or {}
        # resource_kwargs in the key: an updated resource never reuses an old handler
        key = (uid, path, spec, handler_class, repr(sorted(resource_kwargs.items())))

        def opener() -> Any:
            try:
                return handler_class(path, **resource_kwargs)
            except Exception as err:
                raise self.error(err, resource, path, handler_class, datum_id,
                                 opening=True) from err

        def attempt() -> Any:
            fresh = False
            try:
                with self.cache.acquire(key, opener) as (handler, created):
                    fresh = created
                    return use(handler)
            except BaseException:
                if fresh:  # like xarray's acquire_context: drop a handler whose first read failed
                    self.cache.discard(key)
                raise

        # A file on a shared file system may appear after its datum: try again a few times.
        return retry_missing_file(attempt, self.retry_intervals)

    def _read_group(self, uid: str, group: list[str], docs: Mapping[str, Mapping],
                    out: np.ndarray | None = None) -> list | None:
        kwargs_list = [docs[i].get("datum_kwargs") or {} for i in group]

        def use(handler: Any) -> list | None:
            resource = self._resource_docs[uid]
            path = resource_full_path(resource, self.root_map)
            if out is not None:
                try:
                    read_into(handler, kwargs_list, out)
                    return None
                except Exception as err:
                    if isinstance(err, DaskBrokerError):
                        raise
                    # read one datum at a time below: the error then names the failing datum
                values = self._read_values(handler, group, kwargs_list, resource, path)
                for i, value in enumerate(values):
                    out[i] = value
                return None
            return self._read_values(handler, group, kwargs_list, resource, path)

        return self._with_handler(uid, group[0], use)

    def _read_values(self, handler: Any, group: list[str], kwargs_list: list[Mapping],
                     resource: Mapping, path: str) -> list[np.ndarray]:
        if hasattr(handler, "read_many"):
            try:
                return [np.asarray(v) for v in read_many(handler, kwargs_list)]
            except Exception:
                pass  # read one datum at a time below: the error then names the failing datum
        out = []
        for datum_id, kwargs in zip(group, kwargs_list, strict=True):
            try:
                out.append(np.asarray(handler(**kwargs)))
            except Exception as err:
                raise self.error(err, resource, path, type(handler), datum_id) from err
        return out

    def error(self, err: BaseException, resource: Mapping, path: str, handler_class: Any,
              datum_id: str, opening: bool = False) -> DaskBrokerError:
        """The domain error for a handler's failure (names resource, file, datum, fix)."""
        if isinstance(err, DaskBrokerError):
            return err
        uid = resource.get("uid")
        spec = resource.get("spec")
        if _is_missing_file(err):
            other = getattr(err, "filename", None)
            return MissingFileError(
                f"resource {uid!r} (spec {spec!r}): file {path!r} is missing"
                + (f" (the handler looked for {other!r})" if other and other != path else "")
                + f"; root {resource.get('root')!r}, resource_path "
                f"{resource.get('resource_path')!r}, root_map {self.root_map!r}. If the files "
                f"moved, pass root_map={{old_root: new_root}}"
            )
        name = getattr(handler_class, "__qualname__", repr(handler_class))
        action = "opening" if opening else "reading"
        target = (f"resource {uid!r} for datum {datum_id!r}" if opening
                  else f"datum {datum_id!r} of resource {uid!r}")
        return HandlerError(
            f"handler {name} (spec {spec!r}) raised {type(err).__name__}: {err} while {action} "
            f"{target} (file {path!r})"
        )


def _groups(ids: list[str], docs: Mapping[str, Mapping]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for datum_id in ids:
        groups.setdefault(docs[datum_id]["resource"], []).append(datum_id)
    return groups
