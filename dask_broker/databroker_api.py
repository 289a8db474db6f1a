"""databroker's eager ``Broker`` methods, over dask_broker's lazy reading.

``get_table``, ``get_events``, ``get_documents`` (``restream``, ``stream``),
``process``, ``get_images``, ``export`` and ``reg`` -- what a databroker script
calls on its ``db`` -- mixed into :class:`~dask_broker.Broker`.  Each is built on
:meth:`EventSource.table`, :meth:`EventSource.docs` or
:meth:`EventSource.to_xarray`; nothing here reads or fills data another way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from .field_select import FieldSelection
from .errors import InvalidArgumentError
from .header import Header
from .images import Images
from .timestruct import TimeStruct

if TYPE_CHECKING:
    import pandas as pd

    from .broker import Broker

__all__ = ["ALL", "DatabrokerMethods", "AssetRegistry"]

#: ``stream_name=ALL``: every stream (databroker's sentinel; None means the same).
ALL = "__ALL__"


def _headers(headers: Any) -> list[Header]:
    """One Header, or an iterable of them, as a list."""
    if isinstance(headers, Header):
        return [headers]
    if isinstance(headers, (str, bytes, Mapping)) or not isinstance(headers, Iterable):
        raise InvalidArgumentError(
            f"expected a Header or a list of Headers (db[-1], db[-5:], db(...)), got "
            f"{type(headers).__name__} {headers!r:.80}")
    out = list(headers)
    for h in out:
        if not isinstance(h, Header):
            raise InvalidArgumentError(
                f"expected Headers, got {type(h).__name__} {h!r:.80} in the list; look runs up "
                "with db[...] first")
    return out


def _stream(stream_name: str | None) -> str | None:
    return None if stream_name in (None, ALL) else stream_name


def run_fields(es, h, descriptors: Sequence[Mapping], fields: Sequence[str] | str | None
               ) -> tuple[list[str] | None, bool]:
    """The entries of ``fields`` that select something in this run, and whether one
    selects a data key.

    As databroker, an entry is a name or a regex matching a whole key; it may
    name data keys, configuration keys of the stream's devices, or start / stop
    keys (merged into the rows).  Entries that select nothing in this run are
    dropped (databroker ignores them), so one list of fields serves many runs.
    """
    if fields is None:
        return None, True
    selection = FieldSelection(fields)
    keys = list(dict.fromkeys(k for d in descriptors for k in d["data_keys"]))
    names = set(keys)
    for d in descriptors:
        for config in (d.get("configuration") or {}).values():
            names.update((config or {}).get("data", {}))
    names.update(h.start)
    names.update(es.store.get_stop(h.uid) or {})
    unmatched = set(selection.unmatched(names))
    return [e for e in selection.entries if e not in unmatched], bool(selection.select(keys))


class DatabrokerMethods:
    """databroker's eager reading methods; mixed into :class:`~dask_broker.Broker`.

    They take one Header or a list of them (``db[-1]``, ``db[-5:]``, ``db(...)``),
    as databroker's do.
    """

    # ------------------------------------------------------------ tables
    def get_table(self: "Broker", headers: Any, stream_name: str = "primary",
                  fields: Sequence[str] | None = None, fill: bool = False, *,
                  timezone: str | None = None, convert_times: bool = True,
                  localize_times: bool = True) -> "pd.DataFrame":
        """A stream of one or several runs as one **pandas** DataFrame (eager).

        The eager counterpart of ``h.table(...)`` (a lazy Dask DataFrame),
        shaped as databroker's ``get_table``: each run's rows in the order the
        headers are given, indexed by ``seq_num`` (repeated across runs; no run
        column), a ``time`` column, then the fields.  Runs without the stream,
        or without any of the ``fields``, add no rows; nothing at all gives
        ``pandas.DataFrame()``.

        Parameters
        ----------
        headers
            A Header or a list of Headers.
        stream_name
            The stream.
        fields
            Regular expressions, each matching whole field names (``"det.*"``);
            None: every field.
        fill
            Replace external references with the data (array cells).
        timezone, convert_times, localize_times
            ``time`` is naive ``datetime64``: the wall time in ``timezone``
            (default: the local zone) with ``localize_times``, else UTC.  Float
            epoch seconds only when ``convert_times`` and ``localize_times``
            are both False, as databroker's.

        Examples
        --------
        >>> df = db.get_table(db[-1], fields=["det.*"])   # doctest: +SKIP
        >>> df = db.get_table(db[-3:], convert_times=False, localize_times=False)  # doctest: +SKIP
        """
        import pandas as pd

        time_struct = TimeStruct(convert_times=convert_times or localize_times,
                                 timezone=timezone, localize_times=localize_times)
        es = self.event_source
        frames = []
        for h in _headers(headers):
            descriptors = es.descriptors(h, stream_name)
            if not descriptors:
                continue
            kept, selects_data = run_fields(es, h, descriptors, fields)
            if not selects_data:  # as databroker: no data key selected, no rows
                continue
            frames.append(es.table(h, stream_name, fields=kept, time_struct=time_struct,
                                   fill=fill).compute())
        if not frames:
            return pd.DataFrame()
        return frames[0] if len(frames) == 1 else pd.concat(frames)

    # ------------------------------------------------------------ documents
    def get_documents(self: "Broker", headers: Any, stream_name: str | None = ALL,
                      fields: Sequence[str] | None = None,
                      fill: bool = False) -> Iterator[tuple[str, dict]]:
        """``(name, doc)`` of each run in turn, as databroker's ``get_documents``.

        Per run: start, then descriptors, resources, datum and events (of every
        stream, merged by time) in a valid order, then stop.  A run without
        ``stream_name`` yields its start and stop only.

        Parameters
        ----------
        headers
            A Header or a list of Headers.
        stream_name
            One stream, or ``ALL`` (None) for every stream.
        fields
            Regular expressions matching whole field names; unknown names select
            nothing (no error, as databroker's).
        fill
            Replace external references in events with the data.

        Examples
        --------
        >>> for name, doc in db.get_documents(db[-1]):  # doctest: +SKIP
        ...     print(name)
        """
        es = self.event_source
        stream = _stream(stream_name)
        for h in _headers(headers):
            descriptors = es.descriptors(h, stream)
            if stream is not None and not descriptors:
                yield "start", h.start
                stop = es.store.get_stop(h.uid)
                if stop is not None:
                    yield "stop", stop
                continue
            kept, _ = run_fields(es, h, descriptors, fields)
            yield from es.docs(h, stream_name=stream, fields=kept, fill=fill)

    def get_events(self: "Broker", headers: Any, stream_name: str | None = "primary",
                   fields: Sequence[str] | None = None, fill: bool = False) -> Iterator[dict]:
        """The event documents of a stream (``ALL``: every stream), run after run.

        Examples
        --------
        >>> [ev["data"]["det"] for ev in db.get_events(db[-1], fields=["det"])]  # doctest: +SKIP
        """
        for name, doc in self.get_documents(headers, stream_name, fields, fill):
            if name == "event":
                yield doc

    def restream(self: "Broker", headers: Any, fields: Sequence[str] | None = None,
                 fill: bool = False) -> Iterator[tuple[str, dict]]:
        """Every document of every stream, run after run: ``get_documents(headers)``.

        Examples
        --------
        >>> for name, doc in db.restream(db[-3:]):  # doctest: +SKIP
        ...     callback(name, doc)
        """
        return self.get_documents(headers, ALL, fields, fill)

    #: databroker's other name of :meth:`restream`.
    stream = restream

    def process(self: "Broker", headers: Any, func: Callable[[str, dict], Any],
                fields: Sequence[str] | None = None, fill: bool = False) -> None:
        """Call ``func(name, doc)`` on every document of the runs (see :meth:`restream`).

        Examples
        --------
        >>> db.process(db[-1], LiveTable(["det"]))  # doctest: +SKIP
        """
        if not callable(func):
            raise InvalidArgumentError(f"db.process(headers, func): func must be callable "
                                       f"(name, doc), got {func!r}")
        for name, doc in self.restream(headers, fields, fill):
            func(name, doc)

    # ------------------------------------------------------------ images
    def get_images(self: "Broker", headers: Any, name: str,
                   stream_name: str = "primary") -> Images:
        """The frames of field ``name``, one per event, as a lazy :class:`~dask_broker.images.Images`.

        Built on ``h.to_xarray(...)[name]``: ``images[i]`` reads (and fills)
        frame ``i`` only.  The frames of several runs follow each other in the
        order the headers are given.

        Raises
        ------
        UnknownFieldError, NoEventDescriptors
            A run lacks the field or the stream.
        InvalidArgumentError
            No headers, or runs whose frames differ in shape.

        Examples
        --------
        >>> images = db.get_images(db[-1], "pilatus_image")  # doctest: +SKIP
        >>> images[0].shape                                  # doctest: +SKIP
        (1, 195, 487)
        """
        import dask.array as da

        runs = _headers(headers)
        if not runs:
            raise InvalidArgumentError("db.get_images: no headers given")
        arrays = [self.event_source.to_xarray(h, stream_name, fields=[name])[name].data
                  for h in runs]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            raise InvalidArgumentError(
                f"db.get_images: the frames of {name!r} differ in shape between runs "
                f"({sorted(shapes)}); get the images of each run separately")
        return Images(arrays[0] if len(arrays) == 1 else da.concatenate(arrays, axis=0))

    # ------------------------------------------------------------ export
    def export(self: "Broker", headers: Any, db: Any, new_root: str | None = None,
               copy_kwargs: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """Copy runs into the catalog ``db``, and with ``new_root`` their files too.

        Every document of each run (start, descriptors, events, resources,
        datum, stream_resource, stream_datum, stop) is inserted with
        ``db.insert``.  With ``new_root``, the files of the runs' resources are
        copied under it (relative paths kept, each copy verified, see
        :func:`~dask_broker.copy_files`) and the resources in ``db`` point at
        the copies; the catalog exported from is unchanged.

        Parameters
        ----------
        headers
            A Header or a list of Headers of this catalog.
        db
            The catalog to copy into (a Broker; without ``new_root``, anything
            with an ``insert(name, doc)`` method).
        new_root
            Where to copy the files (None: documents only).
        copy_kwargs
            Options of :func:`~dask_broker.copy_files` (``verify``, ``progress``).

        Returns
        -------
        list of (str, str)
            ``(old path, new path)`` of each file copied.

        Raises
        ------
        DuplicateUidError
            A run is already in ``db``.

        Examples
        --------
        >>> archive = Broker.from_uri("sqlite:////mnt/archive/catalog.db")  # doctest: +SKIP
        >>> db.export(db[-5:], archive, new_root="/mnt/archive/data")       # doctest: +SKIP
        [('/GPFS/xf23id/2024/det_000.h5', '/mnt/archive/data/2024/det_000.h5'), ...]
        """
        from .event_source import EventSource
        from .files import copy_files

        runs = _headers(headers)
        store = getattr(db, "store", None)
        if new_root is not None and store is None:
            raise InvalidArgumentError(
                f"db.export(..., new_root={new_root!r}) copies files into a dask_broker "
                f"catalog; {type(db).__name__} is not one")
        for h in runs:
            for name, doc in self.event_source.docs(h):
                db.insert(name, doc)
        if new_root is None:
            return []
        # The copies are made from where *this* catalog finds the files (its
        # root_map and handlers); the resources re-pointed are those of ``db``.
        target = EventSource(store, registry=self.handlers, root_map=self.root_map,
                             readers=self.readers)
        report = copy_files(target, [Header(target, h.start) for h in runs], new_root,
                            **dict(copy_kwargs or {}))
        return report.files

    # ------------------------------------------------------------ registry
    @property
    def reg(self: "Broker") -> "AssetRegistry":
        """databroker's ``db.reg``: handlers and root_map, as databroker scripts use them."""
        return AssetRegistry(self)


class AssetRegistry:
    """``db.reg``: the handler registry and root_map of a Broker, databroker-style.

    ``register_handler(spec, cls, overwrite=False)`` and ``deregister_handler(spec)``
    act on the Broker's own handler registry (``db.handlers``); deregistering
    removes the spec altogether -- built-in and entry-point handlers (e.g.
    ophyd's ``NPY_SEQ``) included -- until a handler is registered for it again,
    and is silent when nothing provides it, as databroker's.  ``handler_reg``
    is a read-only, live ``spec -> class`` mapping; ``root_map`` is the Broker's
    live root_map dict.

    Examples
    --------
    >>> db.reg.register_handler("AD_TIFF", AreaDetectorTiffHandler)  # doctest: +SKIP
    >>> db.reg.deregister_handler("NPY_SEQ")                         # doctest: +SKIP
    >>> "NPY_SEQ" in db.reg.handler_reg                              # doctest: +SKIP
    False
    >>> db.reg.root_map["/GPFS/xf23id"] = "/mnt/archive/xf23id"      # doctest: +SKIP
    """

    def __init__(self, broker: "Broker"):
        self._broker = broker

    def __repr__(self) -> str:
        return f"<AssetRegistry of {self._broker!r}>"

    @property
    def handler_reg(self) -> Mapping[str, Any]:
        """Read-only ``spec -> handler class`` (explicit, built-in and entry-point handlers)."""
        return self._broker.handlers.mapping()

    @property
    def root_map(self) -> dict[str, str]:
        """The Broker's root_map, live: changing this dict changes what later reads open."""
        return self._broker.event_source.root_map

    @root_map.setter
    def root_map(self, value: Mapping[str, str]) -> None:
        self._broker.set_root_map(value)

    def register_handler(self, spec: str, handler: Any, overwrite: bool = False) -> None:
        """Use ``handler`` for resources of ``spec`` (the same class again is a no-op).

        Raises
        ------
        DuplicateHandlerError
            Another class is registered explicitly for ``spec`` and ``overwrite`` is False.
        """
        self._broker.handlers.register(spec, handler, overwrite=overwrite)

    def deregister_handler(self, spec: str) -> None:
        """Remove ``spec`` altogether until a handler is registered for it again (silent)."""
        self._broker.handlers.hide(spec)
