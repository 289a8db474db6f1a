"""Header: one run, with convenience methods that forward to the EventSource."""

from __future__ import annotations

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
    ['motor', 'det']
    """

    def __init__(self, event_source: "EventSource", start: dict):
        self.event_source = event_source
        self._start = start
        self._stop: dict | None = None

    def __repr__(self) -> str:
        state = "stopped" if self.stop is not None else "in progress"
        return (f"<Header uid={self.uid!r} scan_id={self._start.get('scan_id')!r} "
                f"plan_name={self._start.get('plan_name')!r} ({state})>")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Header) and other.uid == self.uid and (
            other.event_source.store == self.event_source.store)

    def __hash__(self) -> int:
        return hash(self.uid)

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

    def fields(self, stream_name: str | None = None) -> list[str]:
        """Data keys of a stream; see :meth:`EventSource.fields`."""
        return self.event_source.fields(self, stream_name)

    def resources(self) -> list[dict]:
        """Resource documents; see :meth:`EventSource.resources`."""
        return self.event_source.resources(self)

    def docs(self, stream_name: str | None = None, fields: Sequence[str] | None = None,
             fill: bool = False) -> Iterator[tuple[str, dict]]:
        """``(name, doc)`` pairs; see :meth:`EventSource.docs`."""
        return self.event_source.docs(self, stream_name=stream_name, fields=fields, fill=fill)

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
