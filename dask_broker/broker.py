"""Broker: the entry point -- open a catalog, insert, look up and search runs."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .databroker_api import DatabrokerMethods
from .errors import (
    ConflictingArgumentsError,
    InvalidArgumentError,
    RenamedArgumentWarning,
    StoreURIError,
)
from .event_source import EventSource
from .handlers.registry import HandlerRegistry, default_registry
from .readers import ReaderRegistry
from .readers import default_registry as default_readers
from .header import Header
from .query import parse_query
from .run_keys import find_start
from .text_search import parse_text
from .stores import Store
from .stores.sqlite import SQLiteStore

__all__ = ["Broker"]


class Broker(DatabrokerMethods):
    """A catalog of runs.

    Besides its own lazy API, a Broker answers databroker's calls
    (``get_table``, ``get_events``, ``get_documents``, ``restream``, ``process``,
    ``get_images``, ``export``, ``reg``; see :mod:`dask_broker.databroker_api`).

    Parameters
    ----------
    store
        The store holding the documents.

    Examples
    --------
    >>> db = Broker.from_uri("sqlite:///catalog.db")   # doctest: +SKIP
    >>> RE.subscribe(db.insert)                        # doctest: +SKIP
    >>> h = db[-1]                                     # doctest: +SKIP
    >>> h.table().compute()                            # doctest: +SKIP
    """

    def __init__(self, store: Store, *, root_map: Mapping[str, str] | None = None):
        self.store = store
        #: The handler registry: spec -> handler class (built-ins, entry points, yours).
        self.handlers = HandlerRegistry(parent=default_registry)
        #: The reader registry: stream_resource mimetype -> reader class.
        self.readers = ReaderRegistry(parent=default_readers)
        self.event_source = EventSource(store, registry=self.handlers, root_map=root_map,
                                        readers=self.readers)
        #: Conditions every search must also meet (:meth:`add_filter`), as databroker's.
        self.filters: dict[str, Any] = {}
        #: ``db.<name>`` searches: name -> query dict, or a function returning one.
        self.aliases: dict[str, Any] = {}

    @classmethod
    def from_uri(cls, uri: str, *, root_map: Mapping[str, str] | None = None,
                 **kwargs: Any) -> "Broker":
        """Open (or create) the catalog at ``uri``.

        Parameters
        ----------
        uri
            ``sqlite:///relative/catalog.db``, ``sqlite:////absolute/catalog.db``,
            or a store of another registered scheme.
        root_map
            ``{resource root as stored: where it is mounted now}``.
        **kwargs
            Passed to the store.

        Examples
        --------
        >>> db = Broker.from_uri("sqlite:////tmp/catalog.db")  # doctest: +SKIP
        """
        from .stores import store_class

        return cls(store_class(uri).from_uri(uri, **kwargs), root_map=root_map)

    @classmethod
    def named(cls, name: str) -> "Broker":
        """Open the catalog called ``name``.

        Looked up in the catalogs file (TOML or JSON: name -> URI, optional
        root_map) -- ``$DASK_BROKER_CONFIG``, else ``~/.config/dask_broker/catalogs.toml``
        (or ``.json``) --, then ``"temp"`` (a throwaway catalog, like :meth:`temp`),
        then databroker's ``NAME.yml`` files and intake catalog sources (their handlers
        are registered on the Broker); the catalogs file wins on a name clash. See
        :mod:`dask_broker.config` and :mod:`dask_broker.databroker_config`.

        Examples
        --------
        >>> db = Broker.named("csx")  # doctest: +SKIP
        >>> len(Broker.named("temp"))
        0
        """
        from .config import lookup

        return lookup(name).open(cls)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, name: str = "") -> "Broker":
        """Open the catalog a config dict describes.

        Parameters
        ----------
        config
            dask_broker's ``{"uri": ..., "root_map": {...}, "handlers": {...}}``;
            databroker v1's ``{"metadatastore": ..., "assets": ..., "handlers": ...,
            "root_map": ...}`` (MongoDB only); or an intake source
            ``{"driver": "bluesky-mongo-normalized-catalog", "args": {...}}``.
        name
            Used in error messages.

        Raises
        ------
        dask_broker.config.ConfigError
            The dict has none of these shapes, or asks for what dask_broker does not read.

        Examples
        --------
        >>> db = Broker.from_config({"uri": "sqlite:////tmp/catalog.db"})  # doctest: +SKIP
        >>> db = Broker.from_config({                                     # doctest: +SKIP
        ...     "metadatastore": {"module": "databroker.headersource.mongo", "class": "MDS",
        ...                       "config": {"host": "localhost", "port": 27017,
        ...                                  "database": "mds"}},
        ...     "assets": {"module": "databroker.assets.mongo", "class": "Registry",
        ...                "config": {"host": "localhost", "port": 27017,
        ...                           "database": "assets"}}})
        """
        from .config import catalog_config

        return catalog_config(config, name=name).open(cls)

    @classmethod
    def temp(cls) -> "Broker":
        """A throwaway embedded catalog in a temporary folder, removed at exit.

        Examples
        --------
        >>> db = Broker.temp()
        >>> len(db)
        0
        """
        return cls(SQLiteStore.temp())

    def __repr__(self) -> str:
        return f"Broker({self.store.display_uri!r})"

    def __reduce__(self):
        # Dynamic aliases are functions (often lambdas): they stay with this Broker.
        static = {k: v for k, v in self.aliases.items() if not callable(v)}
        return (_rebuild_broker, (self.event_source, self.filters, static))

    def _repr_html_(self) -> str:
        """A summary for notebooks: the URI (password masked), the number of runs, the latest."""
        from .html_repr import broker_html

        return broker_html(self)

    @property
    def v2(self):
        """databroker 1.x's ``db.v2`` catalog: ``db.v2[uid].primary.read()`` and friends.

        Lookups and searches as ``db[...]`` and :meth:`search`, without the
        :attr:`filters` (as databroker's ``db.v2``); see :mod:`dask_broker.v2`.

        Examples
        --------
        >>> run = db.v2[-1]                        # doctest: +SKIP
        >>> run.primary.read()                     # doctest: +SKIP
        >>> run.metadata["start"]["plan_name"]     # doctest: +SKIP
        'scan'
        """
        from .v2 import BlueskyCatalog

        # A Broker on the same EventSource (handlers, root_map), without filters.
        return BlueskyCatalog(_rebuild_broker(self.event_source))

    @staticmethod
    def get_fields(header: Header, name: str | None = None) -> set[str]:
        """The data keys of stream ``name`` (None: every stream) of a run, as databroker's.

        Examples
        --------
        >>> db.get_fields(db[-1], "primary")  # doctest: +SKIP
        {'motor', 'det'}
        """
        return header.fields(name)

    # ------------------------------------------------------------ handlers
    def register_handler(self, spec: str, handler_class: Any, overwrite: bool = False) -> None:
        """Use ``handler_class`` for resources of ``spec``.

        Explicit registrations win over built-in handlers and entry points.
        Registering a spec that is already registered explicitly needs
        ``overwrite=True``.

        Examples
        --------
        >>> from area_detector_handlers.handlers import AreaDetectorTiffHandler  # doctest: +SKIP
        >>> db.register_handler("AD_TIFF", AreaDetectorTiffHandler)              # doctest: +SKIP
        """
        self.handlers.register(spec, handler_class, overwrite=overwrite)

    def deregister_handler(self, spec: str) -> None:
        """Remove the handler this Broker uses for ``spec``, one layer at a time.

        An explicit registration is removed first (a built-in or entry-point
        handler for ``spec`` is used again); with none, the built-in or
        entry-point handler (e.g. ophyd's ``NPY_SEQ``) is removed for this Broker
        until :meth:`register_handler` registers one again.  To remove every
        layer at once, as databroker does, use ``db.reg.deregister_handler``.

        Raises
        ------
        HandlerNotFoundError
            Nothing provides ``spec``.

        Examples
        --------
        >>> db.deregister_handler("AD_TIFF")  # doctest: +SKIP
        """
        self.handlers.remove(spec)

    def register_reader(self, mimetype: str, reader_class: Any, overwrite: bool = False) -> None:
        """Use ``reader_class`` for stream_resource documents of ``mimetype``.

        Explicit registrations win over built-in readers and the
        ``dask_broker.readers`` entry points.  A reader is constructed as
        ``reader_class(path, parameters)`` and has ``read(start, stop)``,
        ``describe()``, ``paths(...)`` and ``close()``
        (see :class:`~dask_broker.readers.StreamReader`).

        Examples
        --------
        >>> db.register_reader("multipart/related;type=image/png", PNGReader)  # doctest: +SKIP
        """
        self.readers.register(mimetype, reader_class, overwrite=overwrite)

    def deregister_reader(self, mimetype: str) -> None:
        """Remove the reader this Broker uses for ``mimetype``, one layer at a time
        (as :meth:`deregister_handler`)."""
        self.readers.remove(mimetype)

    def set_root_map(self, root_map: Mapping[str, str]) -> None:
        """Remap file roots: ``{resource root as stored: where it is mounted now}``.

        Examples
        --------
        >>> db.set_root_map({"/GPFS/xf23id": "/mnt/archive/xf23id"})  # doctest: +SKIP
        """
        self.event_source.set_root_map(root_map)

    @property
    def root_map(self) -> dict[str, str]:
        """The root_map in force."""
        return dict(self.event_source.root_map)

    @property
    def uri(self) -> str:
        """The catalog's URI (passwords included: connect with it, show :attr:`display_uri`)."""
        return self.store.uri

    @property
    def display_uri(self) -> str:
        """The catalog's URI with its passwords masked."""
        return self.store.display_uri

    def update_resource(self, resource_uid: str, **changes: Any) -> dict:
        """Change a resource's ``root``, ``resource_path``, ``resource_kwargs`` or ``spec``
        (a stream_resource's ``uri``, ``mimetype`` or ``parameters``).

        See :meth:`EventSource.update_resource`; to move the files too, use
        :func:`dask_broker.move_files`.

        Examples
        --------
        >>> db.update_resource(res_uid, root="/mnt/archive/xf23id")  # doctest: +SKIP
        """
        return self.event_source.update_resource(resource_uid, **changes)

    def resource_history(self, resource_uid: str) -> list[dict]:
        """A resource's (or stream_resource's) updates, oldest first; see
        :meth:`EventSource.resource_history`.

        Examples
        --------
        >>> db.resource_history(res_uid)[-1]["cmd"]  # doctest: +SKIP
        'move_files'
        """
        return self.event_source.resource_history(resource_uid)

    # ------------------------------------------------------------ insert
    def insert(self, name: str, doc: Mapping) -> None:
        """Validate and store one document; a valid RunEngine subscriber.

        Examples
        --------
        >>> RE.subscribe(db.insert)  # doctest: +SKIP
        """
        self.event_source.insert(name, doc)

    # ------------------------------------------------------------ lookup
    def _header(self, start: dict) -> Header:
        return Header(self.event_source, start)

    def __getitem__(self, key: Any) -> Any:
        """Runs by uid, uid prefix, recency or scan_id, as databroker looks them up
        (:func:`dask_broker.run_keys.find_start`, which every CLI command uses too).

        =====================================  ==========================================
        ``db["a1b2c3"]``                       the run with this uid, else the one run
                                               whose uid starts with it
        ``db[-1]``, ``db[-N]``                 the latest run, the N-th latest
        ``db[42]``                             the most recent run with scan_id 42
        ``db["-1"]``, ``db["42"]``             a whole number in a string counts as a
                                               number (databroker v1); ``"42"`` falls back
                                               to the uid prefix ``42`` when no run has
                                               scan_id 42
        ``db[-5:]``, ``db[-10:-5]``            a list of runs, **newest first**
        ``db[[uid1, -1]]``, tuples, sets       a list, each item looked up (nesting kept)
        =====================================  ==========================================

        Raises
        ------
        RunNotFoundError
            No such uid, uid prefix or scan_id (a :class:`KeyError`).
        RunIndexError
            ``db[-N]`` with fewer than N runs (a :class:`KeyError` and an :class:`IndexError`).
        AmbiguousKeyError
            A uid prefix matches several runs (a :class:`ValueError`).
        InvalidArgumentError
            A slice that does not count back from the latest run: ``db[1:]``,
            ``db[:]``, ``db[-1:2]`` (a :class:`ValueError`).
        TypeError
            A key of another type (float, bytes, dict, None).

        Examples
        --------
        >>> db["a1b2c3"]                 # doctest: +SKIP
        >>> db[-1]                       # doctest: +SKIP
        >>> db[42]                       # the most recent run with scan_id 42  # doctest: +SKIP
        >>> db[-3:]                      # [db[-1], db[-2], db[-3]]  # doctest: +SKIP
        >>> db[["a1b2c3", -1]]           # doctest: +SKIP
        """
        if isinstance(key, slice):
            return self._recent_slice(key)
        if isinstance(key, str) or (isinstance(key, Integral) and not isinstance(key, bool)):
            return self._header(find_start(self.store, key))
        if isinstance(key, Iterable) and not isinstance(key, (bytes, bytearray, Mapping)):
            return [self[item] for item in key]
        raise TypeError(f"look runs up by uid (str), int, a slice such as [-5:] or a list of "
                        f"those, not {type(key).__name__}")

    def _recent_slice(self, key: slice) -> list[Header]:
        """``db[-3:]``: ``[db[-1], db[-2], db[-3]]``, as databroker (negative indices only).

        Indices past the oldest run are left out, as a Python list slice does
        (databroker raises IndexError).
        """
        start, stop, step = key.start, key.stop, key.step
        for value in (start, stop, step):
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
                raise TypeError(f"slice indices must be integers or None, not {value!r}")
        shown = f"db[{start}:{stop}{'' if step is None else ':' + str(step)}]".replace("None", "")
        if start is None or start >= 0 or (stop is not None and stop > 0) or step == 0:
            raise InvalidArgumentError(
                f"{shown}: slices count back from the most recent run, with a negative start "
                "and a stop that is negative or absent, as in db[-5:] (the five most recent "
                "runs, newest first) or db[-10:-5]; to go through every run use "
                "`for h in db`")
        indices = range(start, stop or 0, step or 1)[::-1]
        if not indices:
            return []
        recent = list(itertools.islice(self.store.iter_starts(), -min(indices)))
        return [self._header(recent[-i - 1]) for i in indices if -i <= len(recent)]

    def __contains__(self, key: str | int) -> bool:
        """True when ``db[key]`` names exactly one run (an ambiguous prefix does not)."""
        try:
            self[key]
        except StoreURIError:
            raise  # a damaged or unreadable catalog is an error, not a missing run
        except (KeyError, ValueError, TypeError):
            return False
        return True

    def __len__(self) -> int:
        return self.store.count_starts()

    def __iter__(self) -> Iterator[Header]:
        """Every run, newest first."""
        return (self._header(s) for s in self.store.iter_starts())

    # ------------------------------------------------------------ search
    def search(self, query: Mapping | None = None, *, text: str | None = None,
               since: Any = None, until: Any = None,
               data_key: str | None = None) -> list[Header]:
        """Runs whose start document matches a Mongo-style query, newest first.

        Every store returns the same runs for a query, with MongoDB's rules (see
        :mod:`dask_broker.query`). Supported: equality, ``$in``, ``$nin``, ``$ne``,
        ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists``, ``$regex`` (and compiled
        ``re.Pattern`` values), ``$not``, ``$elemMatch``, ``$and``, ``$or``, ``$nor``,
        dotted keys (which reach into lists of documents).
        The :attr:`filters` in force are AND-ed with the query.

        Parameters
        ----------
        query
            A query on start-document fields.
        text
            Full-text search: runs whose start document holds every word of ``text``
            in its string values (case-insensitive; see :mod:`dask_broker.text_search`
            for what a word is), AND-ed with everything else.
        since, until
            Runs that started at or after ``since`` and before ``until``: a date
            string (``"2024-03-01"``, ``"2024-03-01 14:00"``; local time unless
            it has a zone), a datetime, or epoch seconds -- as databroker's
            ``db(since=..., until=...)``.
        data_key
            Only runs with a descriptor that has this data key (e.g. ``"det1"``).

        Raises
        ------
        QueryError
            The query is malformed, too big or uses an unsupported operator (the
            message names the offending part), or ``text`` has no word; no store is
            asked.

        Examples
        --------
        >>> db.search({"plan_name": "scan", "scan_id": {"$gte": 10}})  # doctest: +SKIP
        >>> db.search(since="2024-03-01", data_key="det1")              # doctest: +SKIP
        >>> db.search({"plan_name": "scan"}, text="silicon wafer")      # doctest: +SKIP
        """
        parse_query(query)  # the user's query, checked (and named) on its own
        parse_text(text)
        terms = [_SearchTerms.of(self.filters, "db.filters"),
                 _SearchTerms(dict(query or {}), since, until,
                              () if data_key is None else (data_key,))]
        query = {}
        parts = [q for q in (t.query() for t in terms) if q]
        if len(parts) == 1:
            query = parts[0]
        elif parts:
            query = {"$and": parts}
        query = parse_query(query)
        data_keys = [k for t in terms for k in t.data_keys]
        # ``text`` only when given, so that a store written before text search still searches
        starts = self.store.search(query) if text is None else self.store.search(query, text=text)
        headers = [self._header(s) for s in starts]
        if data_keys:
            headers = [h for h in headers if self._has_data_keys(h.uid, data_keys)]
        return headers

    def _has_data_keys(self, run_uid: str, data_keys: Sequence[str]) -> bool:
        """True when every key of ``data_keys`` is a data key of some descriptor of the run."""
        found = set()
        for descriptor in self.store.descriptors(run_uid):
            found.update(descriptor.get("data_keys", ()))
        return all(k in found for k in data_keys)

    def __call__(self, text_search: str | None = None, /, **kwargs: Any) -> list[Header]:
        """``db(plan_name="scan", since="2024-03-01")``: search as databroker's ``db(...)``.

        Keywords other than those below are equality conditions (or Mongo
        operator dicts) on start-document fields; see :meth:`search`.

        Parameters
        ----------
        text_search
            Full-text search (``db("silicon wafer")``, or ``text_search=`` as in
            databroker): runs whose start document holds every word, AND-ed with the
            other conditions; see :meth:`search`.
        since, until
            The time window; ``start_time`` and ``stop_time`` are their older
            names (they warn with :class:`~dask_broker.errors.RenamedArgumentWarning`;
            giving both an old and a new name is a TypeError).
        data_key
            Only runs with a descriptor that has this data key.
        **kwargs
            Conditions on the start document.

        Raises
        ------
        QueryError
            The conditions are malformed, or the text has no word.
        ConflictingArgumentsError
            ``start_time`` with ``since``, ``stop_time`` with ``until``, or the text
            given both positionally and as ``text_search=``.

        Examples
        --------
        >>> db(plan_name="count", since="2024-03-01", until="2024-03-02")  # doctest: +SKIP
        >>> db(data_key="det1")                                             # doctest: +SKIP
        >>> db("silicon wafer", plan_name="scan")                           # doctest: +SKIP
        """
        if "text_search" in kwargs:
            if text_search is not None:
                raise ConflictingArgumentsError(
                    "db(...): the full-text search was given twice, positionally and as "
                    "text_search=; give it once")
            text_search = kwargs.pop("text_search")
        terms = _SearchTerms.of(kwargs, "db(...)")
        return self.search(terms.fields, text=text_search, since=terms.since, until=terms.until,
                           data_key=terms.data_keys[0] if terms.data_keys else None)

    def add_filter(self, **kwargs: Any) -> None:
        """Add conditions that every later search (``db(...)``, :meth:`search`) must also meet.

        Takes what ``db(...)`` takes (``since``, ``until``, ``data_key``, start-
        document fields); a key given again replaces the old condition.  Lookups
        (``db[...]``) ignore filters, as in databroker.

        Examples
        --------
        >>> db.add_filter(since="2024-03-01", operator="ann")  # doctest: +SKIP
        >>> db(plan_name="scan")          # scans by ann since March 1st  # doctest: +SKIP
        >>> db.clear_filters()            # doctest: +SKIP
        """
        _SearchTerms.of(kwargs, "db.add_filter(...)")  # errors and warnings now
        self.filters.update({_RENAMED.get(k, k): v for k, v in kwargs.items()})

    def clear_filters(self) -> None:
        """Remove every filter added with :meth:`add_filter`.

        Examples
        --------
        >>> db.clear_filters()  # doctest: +SKIP
        """
        self.filters.clear()

    def alias(self, name: str, **query: Any) -> None:
        """Make ``db.<name>`` run ``db(**query)``.

        Raises
        ------
        InvalidArgumentError
            ``name`` is already an attribute of the Broker.

        Examples
        --------
        >>> db.alias("cal", plan_name="calibration")  # doctest: +SKIP
        >>> db.cal                                    # doctest: +SKIP
        [<Header ...>, ...]
        """
        self._check_alias(name)
        _SearchTerms.of(query, f"db.alias({name!r}, ...)")
        self.aliases[name] = dict(query)

    def dynamic_alias(self, name: str, func: Any) -> None:
        """Make ``db.<name>`` run ``db(**func())``: the query is built on each access.

        Raises
        ------
        InvalidArgumentError
            ``name`` is already an attribute of the Broker, or ``func`` is not callable.

        Examples
        --------
        >>> import time
        >>> db.dynamic_alias("today", lambda: {"since": time.time() - 86400})  # doctest: +SKIP
        >>> db.today                                                          # doctest: +SKIP
        """
        self._check_alias(name)
        if not callable(func):
            raise InvalidArgumentError(
                f"db.dynamic_alias({name!r}, {func!r}): give a function that returns the "
                "query as a dict; for a fixed query use db.alias(name, **query)")
        self.aliases[name] = func

    def _check_alias(self, name: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidArgumentError(f"an alias must be a Python identifier, not {name!r}")
        if name not in self.aliases and hasattr(self, name):
            raise InvalidArgumentError(
                f"{name!r} is already an attribute of Broker and cannot be an alias; "
                "choose another name")

    def __getattr__(self, name: str) -> Any:
        aliases = self.__dict__.get("aliases") or {}
        if name in aliases:
            query = aliases[name]
            return self(**(query() if callable(query) else query))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _rebuild_broker(event_source: EventSource, filters: dict | None = None,
                    aliases: dict | None = None) -> Broker:
    broker = Broker.__new__(Broker)
    broker.store = event_source.store
    broker.handlers = event_source.registry
    broker.readers = event_source.readers
    broker.event_source = event_source
    broker.filters = dict(filters or {})
    broker.aliases = dict(aliases or {})
    return broker


#: databroker's older names of the time-window keywords.
_RENAMED = {"start_time": "since", "stop_time": "until"}


@dataclass(frozen=True)
class _SearchTerms:
    """databroker's search keywords, taken apart: start-document conditions, the time
    window and the data keys the run's descriptors must have."""

    fields: dict
    since: Any = None
    until: Any = None
    data_keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, kwargs: Mapping[str, Any], where: str) -> "_SearchTerms":
        fields = dict(kwargs)
        for old, new in _RENAMED.items():
            if old not in fields:
                continue
            if new in fields:
                raise ConflictingArgumentsError(
                    f"{where}: {old}= is the older name of {new}=; give one of them, not both")
            warnings.warn(f"{where}: {old}= is the older name of {new}=; use {new}=",
                          RenamedArgumentWarning, stacklevel=3)
            fields[new] = fields.pop(old)
        data_key = fields.pop("data_key", None)
        if data_key is not None and not isinstance(data_key, str):
            raise InvalidArgumentError(f"{where}: data_key must be a str, not {data_key!r}")
        terms = cls(fields, fields.pop("since", None), fields.pop("until", None),
                    () if data_key is None else (data_key,))
        parse_query(terms.query())  # errors now, not at the next search
        return terms

    def query(self) -> dict:
        """The Mongo-style query on start documents: the fields AND the time window."""
        window = {}
        if self.since is not None:
            window["$gte"] = _epoch(self.since, "since")
        if self.until is not None:
            window["$lt"] = _epoch(self.until, "until")
        if not window:
            return self.fields
        return {"$and": [self.fields, {"time": window}]} if self.fields else {"time": window}


def _epoch(when: Any, name: str) -> float:
    """Epoch seconds of a date string, datetime or number (naive times are local)."""
    import pandas as pd

    from .timestruct import local_timezone

    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return float(when)
    try:
        stamp = pd.Timestamp(when)
    except (ValueError, TypeError) as err:
        raise InvalidArgumentError(
            f"{name}={when!r} is not a time: give a date string such as '2024-03-01 14:00', "
            "a datetime, or epoch seconds") from err
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(local_timezone())
    return stamp.timestamp()
