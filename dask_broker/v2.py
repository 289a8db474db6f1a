"""databroker 1.x's ``db.v2`` accessors over dask_broker's Broker.

Notebooks written for databroker 1.x read runs through its intake catalog::

    run = db.v2[uid]
    run.metadata["start"]["plan_name"]
    ds = run.primary.read()                  # an in-memory xarray.Dataset
    lazy = run.primary.to_dask()             # the same, backed by dask
    for name, doc in run.documents(fill="yes"):
        ...

:class:`BlueskyCatalog`, :class:`BlueskyRun` and :class:`BlueskyEventStream` answer
those calls.  They are thin: every read goes through the public API of a
:class:`~dask_broker.Header` (``to_xarray``, ``docs``, ``descriptors``) and of the
:class:`~dask_broker.Broker` (``db[...]``, ``search``).

Differences from databroker (see the README, "Coming from databroker"):

* a stream's Dataset has a ``seq_num`` coordinate along ``time`` and attrs
  ``uid``, ``stream_name`` (and ``scan_id``); array fields without ``dims`` in their
  data_key get dims ``<field>_dim_0, ...`` (databroker: ``dim_0, dim_1, ...``
  counted across fields).  The ``time`` coordinate is float epoch seconds, as
  databroker's;
* after a fill, an event's ``filled[key]`` is ``True`` (databroker: the datum_id);
* ``db.v2`` ignores the filters of ``db.add_filter`` (as databroker's ``db.v2``);
* ``stream.timestamps`` is not provided.

Examples
--------
>>> from dask_broker import Broker
>>> Broker.temp().v2                              # doctest: +ELLIPSIS
<BlueskyCatalog 'sqlite:///...'>
"""

from __future__ import annotations

import copy
import html
import re
import warnings
from numbers import Integral
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from .errors import (
    AmbiguousKeyError,
    InvalidArgumentError,
    NoEventDescriptors,
    RunIndexError,
    RunNotFoundError,
    StoreURIError,
)

if TYPE_CHECKING:
    import xarray as xr

    from .broker import Broker
    from .header import Header

__all__ = ["BlueskyCatalog", "BlueskyRun", "BlueskyEventStream", "BlueskyConfigStream",
           "Document"]

#: The values ``documents(fill=...)`` takes, as databroker's.
FILL_OPTIONS = ("yes", "no", "delayed")


class Document(dict):
    """A document as ``run.metadata`` gives it: a read-only dict, as databroker's.

    Item assignment raises :class:`TypeError`; :meth:`to_dict` returns a plain,
    mutable deep copy.

    Examples
    --------
    >>> doc = Document({"uid": "abc", "plan_name": "scan"})
    >>> doc["plan_name"]
    'scan'
    >>> doc.to_dict()["plan_name"] = "count"      # a copy
    >>> doc["plan_name"]
    'scan'
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(copy.deepcopy(dict(*args, **kwargs)))

    def _read_only(self, *args: Any, **kwargs: Any):
        raise TypeError("documents are read-only; call .to_dict() for a copy to change")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def to_dict(self) -> dict:
        """A plain ``dict``: a deep copy, free to change."""
        return copy.deepcopy(dict(self))

    def __reduce__(self):
        return (type(self), (dict(self),))

    def __copy__(self) -> "Document":
        return self

    def __deepcopy__(self, memo: dict) -> "Document":
        return type(self)(dict(self))


# ---------------------------------------------------------------------- catalog
class BlueskyCatalog:
    """``db.v2``: the runs of a catalog, as databroker 1.x's intake catalog.

    ``list(cat)`` gives uids, newest first; ``cat[key]`` looks a run up with the
    rules of ``db[key]`` (uid, uid prefix, ``-N``, scan_id, slices and lists) and
    gives a :class:`BlueskyRun`; ``cat.search(query)`` gives a catalog of the
    matching runs, in which lookups find only those runs.

    Parameters
    ----------
    broker
        The Broker whose runs these are.
    query
        A query on start documents (None: every run).

    Examples
    --------
    >>> cat = db.v2                                    # doctest: +SKIP
    >>> run = cat[-1]                                  # doctest: +SKIP
    >>> scans = cat.search({"plan_name": "scan"})      # doctest: +SKIP
    >>> list(scans)[:2]                                # doctest: +SKIP
    ['8f2b...', '51c0...']
    """

    def __init__(self, broker: "Broker", query: Mapping | None = None):
        self._broker = broker
        self._query = None if query is None else dict(query)

    def __repr__(self) -> str:
        where = repr(self._broker.display_uri)
        if self._query is not None:
            where += f" search={self._query!r}"
        return f"<BlueskyCatalog {where}>"

    def _repr_html_(self) -> str:
        """A summary for notebooks (the catalog URI without its password)."""
        if self._query is None:
            return self._broker._repr_html_()
        return ("<div class='dask-broker-catalog'><strong>Catalog search</strong><table><tbody>"
                f"<tr><th>uri</th><td>{html.escape(self._broker.display_uri)}</td></tr>"
                f"<tr><th>query</th><td>{html.escape(repr(self._query))}</td></tr>"
                f"<tr><th>runs</th><td>{len(self)}</td></tr></tbody></table></div>")

    # ---------------------------------------------------------- the runs
    def _headers(self) -> Iterable["Header"]:
        """The runs, newest first."""
        if self._query is None:
            return iter(self._broker)
        return self._broker.search(self._query)

    def _search(self, condition: Mapping) -> list["Header"]:
        query = condition if not self._query else {"$and": [self._query, dict(condition)]}
        return self._broker.search(query)

    def __iter__(self) -> Iterator[str]:
        """The runs' uids, newest first."""
        return (h.uid for h in self._headers())

    def keys(self) -> list[str]:
        """The runs' uids, newest first."""
        return list(self)

    def values(self) -> Iterator["BlueskyRun"]:
        """The runs, newest first."""
        return (BlueskyRun(h) for h in self._headers())

    def items(self) -> Iterator[tuple[str, "BlueskyRun"]]:
        """``(uid, run)`` pairs, newest first."""
        return ((h.uid, BlueskyRun(h)) for h in self._headers())

    def __len__(self) -> int:
        if self._query is None:
            return len(self._broker)
        return len(self._broker.search(self._query))

    def __contains__(self, key: Any) -> bool:
        """True when ``cat[key]`` names exactly one run."""
        if self._query is None:
            return key in self._broker
        try:
            self[key]
        except StoreURIError:
            raise  # a damaged or unreadable catalog is an error, not a missing run
        except (KeyError, ValueError, TypeError):
            return False
        return True

    def search(self, query: Mapping) -> "BlueskyCatalog":
        """The runs of this catalog whose start document matches ``query``.

        The query language is :meth:`Broker.search`'s (MongoDB's operators);
        searching a searched catalog AND-s the queries.

        Raises
        ------
        QueryError
            A malformed or unsupported query (raised here, not when reading).

        Examples
        --------
        >>> cat.search({"plan_name": "scan"}).search({"scan_id": {"$gt": 10}})  # doctest: +SKIP
        """
        from .query import parse_query

        parse_query(query)
        combined = dict(query) if not self._query else {"$and": [self._query, dict(query)]}
        return type(self)(self._broker, combined)

    def __getitem__(self, key: Any) -> Any:
        """A :class:`BlueskyRun` by uid, uid prefix, ``-N`` or scan_id (``db[key]``'s
        rules); a slice or a list gives a list of runs.

        Raises
        ------
        RunNotFoundError
            No such run (a :class:`KeyError`); ``-N`` past the oldest run is also
            an :class:`IndexError`.
        AmbiguousKeyError
            A uid prefix matches several runs (a :class:`ValueError`).

        Examples
        --------
        >>> run = db.v2["a1b2c3"]    # doctest: +SKIP
        >>> run = db.v2[-1]          # doctest: +SKIP
        """
        if self._query is None:
            return _wrap(self._broker[key])
        return self._lookup(key)

    # A searched catalog: db[key]'s rules, over the matching runs only.
    def _lookup(self, key: Any) -> Any:
        if isinstance(key, slice):
            return self._recent_slice(key)
        if isinstance(key, str):
            if re.fullmatch(r"[+-]?[0-9]+", key):
                try:
                    return self._by_int(int(key))
                except RunNotFoundError:
                    if int(key) < 0:
                        raise
            return self._by_uid(key)
        if isinstance(key, Integral) and not isinstance(key, bool):
            return self._by_int(int(key))
        if isinstance(key, Iterable) and not isinstance(key, (bytes, bytearray, Mapping)):
            return [self[item] for item in key]
        raise TypeError(f"look runs up by uid (str), int, a slice such as [-5:] or a list of "
                        f"those, not {type(key).__name__}")

    def _by_int(self, key: int) -> "BlueskyRun":
        if key < 0:
            runs = self._broker.search(self._query)
            if -key > len(runs):
                raise RunIndexError(f"{self!r}[{key}]: the search found {len(runs)} runs")
            return BlueskyRun(runs[-key - 1])
        runs = self._search({"scan_id": key})
        if not runs:
            raise RunNotFoundError(f"{self!r}: no run with scan_id {key}")
        return BlueskyRun(runs[0])

    def _by_uid(self, key: str) -> "BlueskyRun":
        runs = self._search({"uid": key}) or (key and self._search(
            {"uid": {"$regex": "^" + re.escape(key)}}))
        if not runs:
            raise RunNotFoundError(f"{self!r}: no run with uid or uid prefix {key!r}")
        if len(runs) > 1:
            raise AmbiguousKeyError(
                f"uid prefix {key!r} matches several runs ({runs[0].uid}, {runs[1].uid}, ...); "
                "give more characters of the uid")
        return BlueskyRun(runs[0])

    def _recent_slice(self, key: slice) -> list["BlueskyRun"]:
        start, stop, step = key.start, key.stop, key.step
        for value in (start, stop, step):
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
                raise TypeError(f"slice indices must be integers or None, not {value!r}")
        if start is None or start >= 0 or (stop is not None and stop > 0) or step == 0:
            raise InvalidArgumentError(
                "slices count back from the most recent run, with a negative start and a "
                "stop that is negative or absent, as in cat[-5:] (newest first)")
        indices = range(start, stop or 0, step or 1)[::-1]
        runs = self._broker.search(self._query) if indices else []
        return [BlueskyRun(runs[-i - 1]) for i in indices if -i <= len(runs)]


def _wrap(found: Any) -> Any:
    """A Header as a BlueskyRun; lists (nesting kept) item by item."""
    if isinstance(found, list):
        return [_wrap(item) for item in found]
    return BlueskyRun(found)


# ---------------------------------------------------------------------- run
class BlueskyRun:
    """One run, as databroker 1.x's ``BlueskyRun``.

    ``run.metadata["start"]`` / ``["stop"]`` (None while the run is in progress);
    ``list(run)`` gives the stream names; ``run.primary`` (any stream name as an
    attribute) is ``run["primary"]``, a :class:`BlueskyEventStream`;
    :meth:`documents` replays the run as databroker's does.

    Parameters
    ----------
    header
        The run, as ``db[...]`` gives it.

    Examples
    --------
    >>> run = db.v2[-1]                          # doctest: +SKIP
    >>> run.metadata["start"]["scan_id"]         # doctest: +SKIP
    42
    >>> list(run)                                # doctest: +SKIP
    ['primary', 'baseline']
    >>> run.primary.read()                       # doctest: +SKIP
    <xarray.Dataset> ...
    """

    def __init__(self, header: "Header"):
        self._header = header

    def __repr__(self) -> str:
        start = self._header.start
        return (f"<BlueskyRun uid={self._header.uid!r} scan_id={start.get('scan_id')!r} "
                f"plan_name={start.get('plan_name')!r}>")

    def _repr_html_(self) -> str:
        """The run's summary for notebooks (as the Header's)."""
        return self._header._repr_html_()

    @property
    def metadata(self) -> dict[str, Document | None]:
        """``{"start": ..., "stop": ...}``; the stop is None while the run is in progress."""
        stop = self._header.stop
        return {"start": Document(self._header.start),
                "stop": None if stop is None else Document(stop)}

    # ---------------------------------------------------------- streams
    def __iter__(self) -> Iterator[str]:
        """The stream names."""
        return iter(self._header.stream_names)

    def __len__(self) -> int:
        return len(self._header.stream_names)

    def __contains__(self, name: object) -> bool:
        return name in self._header.stream_names

    def __getitem__(self, name: str) -> "BlueskyEventStream":
        """The stream ``name``.

        Raises
        ------
        NoEventDescriptors
            The run has no such stream (a :class:`KeyError`; the message lists them).
        """
        streams = self._header.stream_names
        if name not in streams:
            raise NoEventDescriptors(
                f"run {self._header.uid!r} has no stream {name!r}; its streams are {streams}")
        return BlueskyEventStream(self._header, name)

    def __getattr__(self, name: str) -> "BlueskyEventStream":
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}, and run "
                f"{self._header.uid!r} has no stream {name!r}; its streams are "
                f"{self._header.stream_names}") from err

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(s for s in self if s.isidentifier())})

    # ---------------------------------------------------------- documents
    def documents(self, *, fill: str, strict_order: bool = True
                  ) -> Iterator[tuple[str, dict]]:
        """The run's documents, ``(name, doc)``, as databroker's ``documents``.

        Events come as ``event_page`` documents (one event each) and datum as
        ``datum_page`` documents (the datum of a resource together); start, descriptors, resources,
        stream_resource, stream_datum and stop as they are stored.  The order is
        always a valid one (each document before those that refer to it; events
        of all streams merged in time order), so ``strict_order`` changes nothing.

        Parameters
        ----------
        fill
            ``"yes"``: external fields hold their data (numpy arrays, read when the
            event is yielded); ``"no"``: they hold their datum_id; ``"delayed"``:
            they hold dask arrays, read when computed.
        strict_order
            Accepted for databroker's signature.

        Raises
        ------
        InvalidArgumentError
            ``fill`` is not one of ``"yes"``, ``"no"``, ``"delayed"`` (a :class:`ValueError`).
        NotImplementedError
            ``fill="delayed"`` for a stream whose descriptors repeat seq_nums
            (raised when such an event is reached).

        Examples
        --------
        >>> for name, doc in run.documents(fill="yes"):   # doctest: +SKIP
        ...     print(name)
        """
        if not isinstance(fill, str) or fill not in FILL_OPTIONS:
            raise InvalidArgumentError(
                f"documents(fill={fill!r}): fill must be 'yes' (read external data), 'no' "
                "(keep datum_ids) or 'delayed' (dask arrays)")
        return self._documents(fill)

    def _documents(self, fill: str) -> Iterator[tuple[str, dict]]:
        import event_model

        delayed = _DelayedFill(self._header) if fill == "delayed" else None
        datum: list[dict] = []  # consecutive datum of one resource: one datum_page
        for name, doc in self._header.docs(fill=fill == "yes"):
            if datum and (name != "datum" or doc["resource"] != datum[0]["resource"]):
                yield "datum_page", event_model.pack_datum_page(*datum)
                datum = []
            if name == "datum":
                datum.append(doc)
            elif name == "event":
                if delayed is not None:
                    doc = delayed.fill(doc)
                yield "event_page", event_model.pack_event_page(doc)
            else:
                if name == "descriptor" and delayed is not None:
                    delayed.add_descriptor(doc)
                yield name, doc
        if datum:
            yield "datum_page", event_model.pack_datum_page(*datum)

    def canonical(self, *, fill: str, strict_order: bool = True) -> Iterator[tuple[str, dict]]:
        """The old name of :meth:`documents` (warns, as databroker does).

        Warns
        -----
        FutureWarning
            Use :meth:`documents`.
        """
        warnings.warn("BlueskyRun.canonical() is the old name of BlueskyRun.documents(); "
                      "use that", FutureWarning, stacklevel=2)
        return self.documents(fill=fill, strict_order=strict_order)


class _DelayedFill:
    """``documents(fill="delayed")``: an event's external fields as dask arrays, sliced
    from the stream's lazy Dataset (``h.to_xarray``) at the event's row."""

    def __init__(self, header: "Header"):
        self.header = header
        self.descriptors: dict[str, dict] = {}
        self.rows: dict[str, tuple[Any, dict[int, int]]] = {}  # stream -> (ds, seq -> row)

    def add_descriptor(self, descriptor: dict) -> None:
        self.descriptors[descriptor["uid"]] = descriptor

    def fill(self, event: dict) -> dict:
        descriptor = self.descriptors[event["descriptor"]]
        keys = descriptor["data_keys"]
        external = [k for k, v in event["data"].items()
                    if keys.get(k, {}).get("external") and isinstance(v, str)]
        if not external:
            return event
        ds, rows = self._dataset(descriptor.get("name", "primary"))
        row = rows[event["seq_num"]]
        data, filled = dict(event["data"]), dict(event.get("filled") or {})
        for key in external:
            data[key] = ds[key].data[row]
            filled[key] = True
        return {**event, "data": data, "filled": filled}

    def _dataset(self, stream: str):
        if stream not in self.rows:
            descs = [d for d in self.header.descriptors if d.get("name", "primary") == stream]
            external = list(dict.fromkeys(
                k for d in descs for k, v in d["data_keys"].items()
                if v.get("external") and not str(v["external"]).startswith("STREAM:")))
            ds = self.header.to_xarray(stream, fields=[re.escape(k) for k in external])
            seq = ds["seq_num"].values
            if len(np.unique(seq)) != len(seq):
                raise NotImplementedError(
                    f"documents(fill='delayed'): stream {stream!r} of run {self.header.uid!r} "
                    "has several descriptors whose events share seq_nums; use fill='yes', or "
                    f"db.v2[...].{stream}.to_dask() for lazy arrays")
            self.rows[stream] = (ds, {int(s): i for i, s in enumerate(seq)})
        return self.rows[stream]


# ---------------------------------------------------------------------- streams
class BlueskyEventStream:
    """One stream of a run, as databroker 1.x's ``BlueskyEventStream``.

    Parameters
    ----------
    header
        The run.
    name
        The stream's name.

    Examples
    --------
    >>> stream = db.v2[-1].primary                         # doctest: +SKIP
    >>> stream.read()["det"].values                        # doctest: +SKIP
    >>> stream.to_dask()["img"][10].compute()              # doctest: +SKIP
    >>> stream.metadata["descriptors"][0]["data_keys"]     # doctest: +SKIP
    """

    def __init__(self, header: "Header", name: str):
        self._header = header
        self.name = name

    def __repr__(self) -> str:
        return f"<BlueskyEventStream {self.name!r} of run {self._header.uid!r}>"

    @property
    def _descriptors(self) -> list[dict]:
        return [d for d in self._header.descriptors if d.get("name", "primary") == self.name]

    @property
    def metadata(self) -> dict[str, Any]:
        """``{"start": ..., "stop": ..., "descriptors": [...]}`` (this stream's descriptors,
        in insertion order; the stop is None while the run is in progress)."""
        stop = self._header.stop
        return {"start": Document(self._header.start),
                "stop": None if stop is None else Document(stop),
                "descriptors": [Document(d) for d in self._descriptors]}

    def to_dask(self) -> "xr.Dataset":
        """The stream as an :class:`xarray.Dataset` backed by dask (external data filled
        when computed); ``h.to_xarray(stream)``.

        Examples
        --------
        >>> ds = run.primary.to_dask()          # doctest: +SKIP
        >>> ds["img"][:10].mean().compute()     # doctest: +SKIP
        """
        return self._header.to_xarray(self.name)

    def read(self) -> "xr.Dataset":
        """The stream as an in-memory :class:`xarray.Dataset` (external data filled).

        Examples
        --------
        >>> run.primary.read()["det"].values    # doctest: +SKIP
        """
        return self.to_dask().load()

    @property
    def config(self) -> "_ConfigAccessor":
        """The configuration of the stream's devices: ``stream.config["det"].read()``
        (or ``stream.config.det.read()``) gives the device's configuration values as
        variables along ``time``, each event holding its descriptor's values."""
        return _ConfigAccessor(self)


class _ConfigAccessor(Mapping):
    """``stream.config``: device name -> :class:`BlueskyConfigStream`."""

    def __init__(self, stream: BlueskyEventStream):
        self._stream = stream

    def _devices(self) -> list[str]:
        return list(dict.fromkeys(dev for d in self._stream._descriptors
                                  for dev in (d.get("configuration") or {})))

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices())

    def __len__(self) -> int:
        return len(self._devices())

    def __getitem__(self, device: str) -> "BlueskyConfigStream":
        devices = self._devices()
        if device not in devices:
            raise KeyError(f"stream {self._stream.name!r} has no configuration of device "
                           f"{device!r}; its devices are {devices}")
        return BlueskyConfigStream(self._stream, device)

    def __getattr__(self, device: str) -> "BlueskyConfigStream":
        if device.startswith("_"):
            raise AttributeError(device)
        try:
            return self[device]
        except KeyError as err:
            raise AttributeError(str(err.args[0])) from err

    def __repr__(self) -> str:
        return f"<config of stream {self._stream.name!r}: {self._devices()}>"


class BlueskyConfigStream:
    """The configuration values of one device in one stream (``stream.config[device]``)."""

    def __init__(self, stream: BlueskyEventStream, device: str):
        self._stream = stream
        self.device = device

    def __repr__(self) -> str:
        return f"<BlueskyConfigStream {self.device!r} of stream {self._stream.name!r}>"

    def read(self) -> "xr.Dataset":
        """The device's configuration values, one variable per key along ``time`` (each
        event holds its descriptor's value), with the stream's ``time`` and ``seq_num``.

        Raises
        ------
        NotImplementedError
            A descriptor of the stream lacks a key of the device, a key is also a data
            key or the configuration of another device of a descriptor, or is ``time``
            or ``seq_num``: databroker's tiling is not reproduced then.

        Examples
        --------
        >>> run.primary.config["det"].read()["det_exposure"].values  # doctest: +SKIP
        array([0.1, 0.1, 0.1])
        """
        descs = self._stream._descriptors
        keys = list(dict.fromkeys(k for d in descs for k in self._data(d)))
        for d in descs:
            others = {k for dev, c in (d.get("configuration") or {}).items()
                      if dev != self.device for k in (c or {}).get("data") or {}}
            clash = [k for k in keys if k not in self._data(d) or k in d["data_keys"]
                     or k in others or k in ("time", "seq_num")]
            if clash:
                raise NotImplementedError(
                    f"configuration {clash} of device {self.device!r} in stream "
                    f"{self._stream.name!r} of run {self._stream._header.uid!r}: not every "
                    "descriptor holds it, or another device or a data key has the same name; "
                    "read the descriptors' 'configuration' (stream.metadata['descriptors'])")
        header = self._stream._header
        if not keys:  # the stream's coordinates only (nothing is read)
            ds = header.to_xarray(self._stream.name)
            return ds.drop_vars(list(ds.data_vars)).assign_attrs(device=self.device)
        ds = header.to_xarray(self._stream.name, fields=[re.escape(k) for k in keys])
        ds = ds[keys].load()
        for key in keys:
            values = ds[key].values
            if values.dtype == object and len(values) and all(
                    isinstance(v, (list, tuple, np.ndarray)) for v in values):
                stacked = np.stack([np.asarray(v) for v in values])
                dims = tuple(f"{key}_dim_{i}" for i in range(stacked.ndim - 1))
                ds[key] = (("time", *dims), stacked)
        return ds.assign_attrs(device=self.device)

    def _data(self, descriptor: Mapping) -> dict:
        return ((descriptor.get("configuration") or {}).get(self.device) or {}).get("data") or {}
