"""Broker: the entry point -- open a catalog, insert, look up and search runs."""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Mapping

from .errors import AmbiguousKeyError, InvalidArgumentError, RunNotFoundError, StoreURIError
from .event_source import EventSource
from .handlers.registry import HandlerRegistry, default_registry
from .readers import ReaderRegistry
from .readers import default_registry as default_readers
from .header import Header
from .query import parse_query
from .stores import Store
from .stores.sqlite import SQLiteStore

__all__ = ["Broker"]


class Broker:
    """A catalog of runs.

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
        return (_rebuild_broker, (self.event_source,))

    def _repr_html_(self) -> str:
        """A summary for notebooks: the URI (password masked), the number of runs, the latest."""
        from .html_repr import broker_html

        return broker_html(self)

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
        """Forget an explicit registration (built-ins and entry points remain).

        Examples
        --------
        >>> db.deregister_handler("AD_TIFF")  # doctest: +SKIP
        """
        self.handlers.deregister(spec)

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
        """Forget an explicit reader registration (built-ins and entry points remain)."""
        self.readers.deregister(mimetype)

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

    def __getitem__(self, key: str | int) -> Header:
        """A run by uid (or unique uid prefix), by recency (-1 is the latest) or by scan_id.

        Examples
        --------
        >>> db["a1b2c3"]  # doctest: +SKIP
        >>> db[-1]        # doctest: +SKIP
        >>> db[42]        # the most recent run with scan_id 42  # doctest: +SKIP
        """
        if isinstance(key, slice):
            return self._recent_slice(key)
        if isinstance(key, str):
            return self._header(self._by_uid(key))
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"look runs up by uid (str) or int, not {type(key).__name__}")
        if key < 0:
            start = next(itertools.islice(self.store.iter_starts(), -key - 1, None), None)
            if start is None:
                raise RunNotFoundError(
                    f"db[{key}]: the catalog holds fewer than {-key} runs "
                    f"({self.store.display_uri})")
            return self._header(start)
        if key == 0:
            raise RunNotFoundError("db[0] is not a run: use db[-1] for the latest, db[scan_id] "
                                   "with a positive scan_id, or db[uid]")
        start = next(iter(self.store.search({"scan_id": key})), None)
        if start is None:
            raise RunNotFoundError(f"no run with scan_id {key} in {self.store.display_uri}")
        return self._header(start)

    def _recent_slice(self, key: slice) -> list[Header]:
        """``db[-3:]``: the three most recent runs, oldest first (negative indices only)."""
        start, stop, step = key.start, key.stop, key.step
        if any(v is not None and (not isinstance(v, int) or v >= 0) for v in (start, stop)) or (
                step not in (None, 1)):
            raise TypeError(
                f"db[{start}:{stop}{'' if step is None else ':' + str(step)}]: slices count back "
                "from the most recent run with negative indices, as in db[-5:] or db[-10:-5]")
        needed = -start if start is not None else None  # how many recent runs to read
        chronological = list(itertools.islice(self.store.iter_starts(), needed))[::-1]
        return [self._header(s) for s in chronological[slice(start, stop)]]

    def _by_uid(self, key: str) -> dict:
        start = self.store.get_start(key)
        if start is not None:
            return start
        matches = self.store.start_uids_with_prefix(key, limit=3) if key else []
        if not matches:
            raise RunNotFoundError(
                f"no run with uid or uid prefix {key!r} in {self.store.display_uri}")
        if len(matches) > 1:
            raise AmbiguousKeyError(
                f"uid prefix {key!r} matches several runs ({', '.join(matches[:2])}, ...); "
                "give more characters of the uid"
            )
        return self.store.get_start(matches[0])

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

    def search(self, query: Mapping | None = None, *, since: Any = None,
               until: Any = None) -> list[Header]:
        """Runs whose start document matches a Mongo-style query, newest first.

        Every store returns the same runs for a query, with MongoDB's rules (see
        :mod:`dask_broker.query`). Supported: equality, ``$in``, ``$nin``, ``$ne``,
        ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists``, ``$regex`` (and compiled
        ``re.Pattern`` values), ``$not``, ``$elemMatch``, ``$and``, ``$or``, ``$nor``,
        dotted keys (which reach into lists of documents).

        Parameters
        ----------
        query
            A query on start-document fields.
        since, until
            Runs that started at or after ``since`` and before ``until``: a date
            string (``"2024-03-01"``, ``"2024-03-01 14:00"``; local time unless
            it has a zone), a datetime, or epoch seconds -- as databroker's
            ``db(since=..., until=...)``.

        Raises
        ------
        QueryError
            The query is malformed, too big or uses an unsupported operator (the
            message names the offending part); no store is asked.

        Examples
        --------
        >>> db.search({"plan_name": "scan", "scan_id": {"$gte": 10}})  # doctest: +SKIP
        >>> db.search({"samples.name": "Si", "plan_name": re.compile("^grid")})  # doctest: +SKIP
        >>> db(since="2024-03-01", until="2024-03-02", plan_name="count")  # doctest: +SKIP
        """
        query = parse_query(query)  # the user's query, checked (and named) on its own
        window = {}
        if since is not None:
            window["$gte"] = _epoch(since, "since")
        if until is not None:
            window["$lt"] = _epoch(until, "until")
        if window:
            query = parse_query(
                {"$and": [dict(query), {"time": window}]} if query else {"time": window})
        return [self._header(s) for s in self.store.search(query)]

    def __call__(self, since: Any = None, until: Any = None, **query: Any) -> list[Header]:
        """``db(plan_name="scan", since="2024-03-01")``: :meth:`search` with keywords."""
        return self.search(query, since=since, until=until)


def _rebuild_broker(event_source: EventSource) -> Broker:
    broker = Broker.__new__(Broker)
    broker.store = event_source.store
    broker.handlers = event_source.registry
    broker.readers = event_source.readers
    broker.event_source = event_source
    return broker


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
