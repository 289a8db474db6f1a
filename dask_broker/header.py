"""Header: one run, with convenience methods that forward to the EventSource.

Besides its own API (``docs``, ``table``, ``to_xarray``, ...) a Header answers
databroker v1's Header calls -- ``h["start"]``, ``fields``, ``devices``,
``config_data``, ``events``, ``documents``, ``stream``, ``data`` -- so a
databroker user's scripts run unchanged.
"""

from __future__ import annotations

import re
import types
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    from .event_source import EventSource

__all__ = ["Header"]


class Header:
    """One run: its start document, and access to the rest through its EventSource.

    ``stop`` and ``descriptors`` are read from the store on each access, so a
    Header of a run in progress sees what has been stored since.

    Parameters
    ----------
    event_source
        The EventSource that holds the run.
    start
        The run's start document.

    Examples
    --------
    >>> h = db[-1]            # doctest: +SKIP
    >>> h.start["scan_id"]    # doctest: +SKIP
    42
    >>> h.fields("primary")   # doctest: +SKIP
    {'motor', 'det'}
    >>> h["start"]["plan_name"]   # databroker's item access  # doctest: +SKIP
    'scan'
    """

    #: The keys of ``h[key]``, ``keys()``, ``values()``, ``items()`` (as databroker's Header).
    _ITEM_KEYS = ("start", "descriptors", "stop", "ext")

    def __init__(self, event_source: "EventSource", start: dict):
        self.event_source = event_source
        self._start = start
        self._stop: dict | None = None

    def __repr__(self) -> str:
        state = "stopped" if self.stop is not None else "in progress"
        return (f"<Header uid={self.uid!r} scan_id={self._start.get('scan_id')!r} "
                f"plan_name={self._start.get('plan_name')!r} ({state})>")

    def __eq__(self, other: object) -> bool:
        """Equal when the start documents are equal, as databroker's Headers.

        Two Headers of one run are equal even when they come from two catalogs
        (a run copied with ``dask-broker ingest``, SQLite and MongoDB).
        """
        if not isinstance(other, Header):
            return NotImplemented
        return other is self or other._start == self._start

    def __hash__(self) -> int:
        # Equal start documents have equal uids: consistent with __eq__.
        return hash(self.uid)

    # ------------------------------------------------------- databroker's mapping
    def __getitem__(self, key: str) -> Any:
        """``h["start"]``, ``h["descriptors"]``, ``h["stop"]``, ``h["ext"]``.

        Raises
        ------
        KeyError
            Any other key.

        Examples
        --------
        >>> h["start"]["scan_id"]  # doctest: +SKIP
        42
        """
        if key in self._ITEM_KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def keys(self) -> Iterator[str]:
        """``start``, ``descriptors``, ``stop``, ``ext``, as databroker's Header."""
        yield from self._ITEM_KEYS

    def values(self) -> Iterator[Any]:
        """The values of :meth:`keys` (the stop and descriptors as stored now)."""
        for key in self._ITEM_KEYS:
            yield getattr(self, key)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` for :meth:`keys`."""
        for key in self._ITEM_KEYS:
            yield key, getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute by name, else ``default`` (databroker's ``Header.get`` is ``getattr``).

        Examples
        --------
        >>> h.get("stop", {})  # doctest: +SKIP
        """
        return getattr(self, name, default)

    @property
    def ext(self) -> types.SimpleNamespace:
        """databroker's external-fetcher results: always empty here (no external fetchers)."""
        return types.SimpleNamespace()

    def _repr_html_(self) -> str:
        """A summary for notebooks: uid, scan_id, plan_name, times, exit status, streams."""
        from .html_repr import header_html

        return header_html(self)

    def __reduce__(self):
        return (type(self), (self.event_source, self._start))

    @property
    def uid(self) -> str:
        """The run's uid (its start document's uid)."""
        return self._start["uid"]

    @property
    def start(self) -> dict:
        """The start document."""
        return self._start

    @property
    def stop(self) -> dict | None:
        """The stop document, or None while the run is in progress."""
        if self._stop is None:
            self._stop = self.event_source.store.get_stop(self.uid)
        return self._stop

    @property
    def descriptors(self) -> list[dict]:
        """Every descriptor of the run, in insertion order."""
        return self.event_source.descriptors(self)

    @property
    def stream_names(self) -> list[str]:
        """Names of the run's streams."""
        return self.event_source.stream_names(self)

    def fields(self, stream_name: str | None = None) -> set[str]:
        """The data keys of a stream, or of every stream: a set, as databroker's.

        :meth:`EventSource.fields` gives them as a list in descriptor order.

        Raises
        ------
        NoEventDescriptors
            The run has no stream ``stream_name``.

        Examples
        --------
        >>> h.fields("primary")  # doctest: +SKIP
        {'motor', 'det'}
        """
        return set(self.event_source.fields(self, stream_name))

    def devices(self, stream_name: str | None = None) -> set[str]:
        """The devices (``object_keys``) of a stream, or of every stream.

        Raises
        ------
        NoEventDescriptors
            The run has no stream ``stream_name``.

        Examples
        --------
        >>> h.devices("primary")  # doctest: +SKIP
        {'det', 'motor'}
        """
        descs = self.event_source.stream_descriptors(self, stream_name)
        return {name for d in descs for name in (d.get("object_keys") or {})}

    def config_data(self, device_name: str) -> dict[str, list[dict]]:
        """A device's configuration values, per stream: ``{stream: [data, ...]}``.

        One entry per descriptor (oldest first) that holds configuration of the
        device: its ``configuration[device_name]["data"]``.  A device no
        descriptor configures gives ``{}``.  As databroker's ``config_data``.

        Examples
        --------
        >>> h.config_data("det")  # doctest: +SKIP
        {'primary': [{'det_exposure': 1.0}, {'det_exposure': 2.0}]}
        """
        out: dict[str, list[dict]] = {}
        descs = sorted(self.descriptors, key=lambda d: d["time"])
        for d in descs:
            config = (d.get("configuration") or {}).get(device_name)
            if config:
                out.setdefault(d.get("name", "primary"), []).append(config.get("data", {}))
        return out

    def resources(self) -> list[dict]:
        """Resource documents; see :meth:`EventSource.resources`."""
        return self.event_source.resources(self)

    def docs(self, stream_name: str | None = None, fields: Sequence[str] | None = None,
             fill: bool = False) -> Iterator[tuple[str, dict]]:
        """``(name, doc)`` pairs; see :meth:`EventSource.docs`."""
        return self.event_source.docs(self, stream_name=stream_name, fields=fields, fill=fill)

    def documents(self, stream_name: str | None = None, fields: Sequence[str] | None = None,
                  fill: bool = False) -> Iterator[tuple[str, dict]]:
        """databroker's name for :meth:`docs`: ``(name, doc)`` pairs of the run.

        Examples
        --------
        >>> for name, doc in h.documents(fill=True):  # doctest: +SKIP
        ...     ...
        """
        return self.docs(stream_name, fields=fields, fill=fill)

    def stream(self, stream_name: str | None = None, fields: Sequence[str] | None = None,
               fill: bool = False) -> Iterator[tuple[str, dict]]:
        """The old name of :meth:`documents` (warns, as databroker does).

        Warns
        -----
        FutureWarning
            Use :meth:`docs` or :meth:`documents`.
        """
        warnings.warn("Header.stream() is the old name of Header.documents() (or docs()); "
                      "use that", FutureWarning, stacklevel=2)
        return self.docs(stream_name, fields=fields, fill=fill)

    def events(self, stream_name: str | None = "primary", fields: Sequence[str] | None = None,
               fill: bool = False) -> Iterator[dict]:
        """The events of a stream (``None``: of every stream), in time order.

        ``fields`` as in :meth:`docs`: names or whole-key regexes; selected
        configuration, start and stop values are merged into each event.

        Examples
        --------
        >>> [e["data"]["det"] for e in h.events(fields=["det"])]  # doctest: +SKIP
        [1.0, 0.98, 1.02]
        """
        return (doc for name, doc in self.docs(stream_name, fields=fields, fill=fill)
                if name == "event")

    def data(self, field: str, stream_name: str = "primary", fill: bool = True) -> Iterator[Any]:
        """The values of one field, row by row in time order; filled by default.

        ``field`` is a name (not a regex).  A key read through stream_datum
        (ophyd-async ``STREAM:``) is read from the table, in seq_num order.

        Examples
        --------
        >>> frames = list(h.data("img"))  # doctest: +SKIP
        """
        from .stream_data import stream_keys

        descs = self.event_source.stream_descriptors(self, stream_name)
        if any(field in stream_keys(d) for d in descs):
            return self._table_values(field, stream_name, fill)
        return (e["data"][field] for e in self.events(stream_name, fields=[re.escape(field)],
                                                      fill=fill)
                if field in e["data"])

    def _table_values(self, field: str, stream_name: str, fill: bool) -> Iterator[Any]:
        table = self.table(stream_name, fields=[re.escape(field)], fill=fill)
        for part in table[field].to_delayed():
            yield from part.compute()

    def table(self, stream_name: str = "primary", fields: Sequence[str] | None = None,
              time_struct: Any = None, timestamps: bool = False, fill: bool = False,
              chunk_size: int | None = None):
        """A lazy Dask DataFrame of a stream; see :meth:`EventSource.table`.

        Examples
        --------
        >>> h.table(fields=["det"]).compute()  # doctest: +SKIP
        """
        return self.event_source.table(self, stream_name, fields=fields, time_struct=time_struct,
                                       timestamps=timestamps, fill=fill, chunk_size=chunk_size)

    def fill_context(self, max_open: int | None = 64, *,
                     retry_intervals: Sequence[float] | None = None):
        """A context that fills this run's data, closing files on exit; see
        :meth:`EventSource.fill_context`.

        Examples
        --------
        >>> with h.fill_context(retry_intervals=[0.5, 1, 2]) as fc:  # doctest: +SKIP
        ...     frame = fc.fill_table(h.table())
        """
        return self.event_source.fill_context(self, max_open=max_open,
                                              retry_intervals=retry_intervals)

    def to_xarray(self, stream_name: str = "primary", fields: Sequence[str] | None = None,
                  chunk_size: int | None = None):
        """A lazy xarray Dataset of a stream; see :meth:`EventSource.to_xarray`.

        Examples
        --------
        >>> ds = h.to_xarray()  # doctest: +SKIP
        """
        return self.event_source.to_xarray(self, stream_name, fields=fields, chunk_size=chunk_size)

    def table_chunks(self, stream_name: str = "primary", fields: Sequence[str] | None = None,
                     time_struct: Any = None, chunk_size: int | None = None,
                     timestamps: bool = False):
        """pandas DataFrames one chunk at a time; see :meth:`EventSource.table_chunks`."""
        return self.event_source.table_chunks(self, stream_name, fields=fields,
                                              time_struct=time_struct, chunk_size=chunk_size,
                                              timestamps=timestamps)

    def table_chunk(self, stream_name: str, chunk_number: int, chunk_size: int | None = None,
                    fields: Sequence[str] | None = None, time_struct: Any = None,
                    timestamps: bool = False):
        """One chunk as a pandas DataFrame; see :meth:`EventSource.table_chunk`."""
        return self.event_source.table_chunk(self, stream_name, chunk_number,
                                             chunk_size=chunk_size, fields=fields,
                                             time_struct=time_struct, timestamps=timestamps)
