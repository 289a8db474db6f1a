"""Named catalogs: a small config file mapping names to catalog URIs.

databroker users open catalogs by name (``Broker.named("csx")``); dask_broker
reads the names from a TOML or JSON file:

.. code-block:: toml

    # ~/.config/dask_broker/catalogs.toml
    [catalogs.csx]
    uri = "sqlite:////data/csx/catalog.db"
    root_map = { "/GPFS/xf23id" = "/mnt/archive/xf23id" }   # optional

    [catalogs]
    scratch = "sqlite:///scratch.db"        # shorthand: just the URI

The same as JSON: ``{"catalogs": {"csx": {"uri": "...", "root_map": {...}}}}``.
A relative ``sqlite:///`` path is relative to the config file's folder.

A name is looked up in this order, the first that names the catalog wins:

1. ``$DASK_BROKER_CONFIG`` (a path to a ``.toml`` or ``.json`` file), if set;
2. ``$XDG_CONFIG_HOME/dask_broker/catalogs.toml`` then ``catalogs.json``
   (``XDG_CONFIG_HOME`` defaults to ``~/.config``);
3. ``temp``: a throwaway catalog (as databroker's ``Broker.named("temp")``);
4. databroker's own files: ``NAME.yml`` (v1 ``metadatastore``/``assets``) in databroker's
   config folders, then intake catalog sources (``bluesky-mongo-normalized-catalog`` and
   friends); see :mod:`dask_broker.databroker_config`.

So the native TOML/JSON file wins when it and a databroker file use the same name.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import DaskBrokerError, StoreURIError, _KeyErrorMessage
from .redact import mask_uri

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "CONFIG_ENV",
    "CatalogConfig",
    "CatalogNotFoundError",
    "ConfigError",
    "config_paths",
    "catalog_config",
    "list_catalogs",
    "list_configs",
    "lookup",
    "open_catalog",
    "resolve_catalog",
]

#: Environment variable naming a config file.
CONFIG_ENV = "DASK_BROKER_CONFIG"

_SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_MONGO_SCHEMES = ("mongodb", "mongodb+srv")


class ConfigError(DaskBrokerError, ValueError):
    """A catalogs config file cannot be read or is malformed."""


class CatalogNotFoundError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """No config file names the catalog asked for."""


#: The name of the throwaway catalog (databroker's ``Broker.named("temp")``).
TEMP_NAME = "temp"


@dataclass(frozen=True)
class CatalogConfig:
    """One named catalog: its URI, optional root_map and handlers, and the file defining it.

    ``uri == ""`` is a temporary catalog; ``files`` (suitcase ``.msgpack``/``.jsonl``)
    are ingested into it when it is opened.
    """

    name: str
    uri: str
    root_map: dict[str, str] = field(default_factory=dict)
    source: str = ""
    #: spec -> ``"module:Class"``, registered on the Broker when it is opened.
    handlers: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"CatalogConfig(name={mask_uri(self.name)!r}, uri={mask_uri(self.uri)!r}, "
                f"root_map={self.root_map!r}, source={self.source!r}, "
                f"handlers={self.handlers!r}, files={self.files!r})")

    def open(self, broker_class: "type[Broker] | None" = None, **options: Any) -> "Broker":
        """Open the catalog: a Broker with this root_map and these handlers registered.

        Raises
        ------
        ConfigError
            A handler cannot be imported (the message names the spec and the file).

        Examples
        --------
        >>> db = CatalogConfig("t", "").open()
        >>> len(db)
        0
        """
        if broker_class is None:
            from .broker import Broker as broker_class
        handlers = {spec: self._import_handler(spec, target)
                    for spec, target in self.handlers.items()}
        if self.uri:
            db = broker_class.from_uri(self.uri, root_map=self.root_map or None, **options)
        else:
            db = broker_class.temp()
            if self.root_map:
                db.set_root_map(self.root_map)
        for spec, handler_class in handlers.items():
            db.register_handler(spec, handler_class, overwrite=True)
        if self.files:
            from .ingest import ingest

            ingest(db, list(self.files), progress=False)
        return db

    def _import_handler(self, spec: str, target: str) -> Any:
        from .plugins import import_object

        try:
            return import_object(target)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"handler {spec!r} of catalog {self.name!r} ({self.source}) is {target!r}, which "
                f"cannot be imported: {type(err).__name__}: {err}; install the package that "
                "provides it or fix the module/class") from err



def config_paths() -> list[Path]:
    """The config files searched, in order (whether they exist or not).

    Examples
    --------
    >>> [p.name for p in config_paths()][-2:]
    ['catalogs.toml', 'catalogs.json']
    """
    paths = []
    env = os.environ.get(CONFIG_ENV)
    if env:
        paths.append(Path(env).expanduser())
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
    paths += [base / "dask_broker" / "catalogs.toml", base / "dask_broker" / "catalogs.json"]
    return paths


def _read(path: Path) -> dict[str, CatalogConfig]:
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse the catalogs config {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"the catalogs config {path} must hold a table/object of catalogs")
    entries = data.get("catalogs", data)
    if not isinstance(entries, dict):
        raise ConfigError(f"'catalogs' in {path} must be a table/object: name -> URI")
    return {name: _native(name, entry, str(path), path.parent)
            for name, entry in entries.items()}


def _native(name: str, entry: Any, source: str, folder: Path) -> CatalogConfig:
    """A native entry: a URI string, or ``{uri, root_map?, handlers?}``."""
    if isinstance(entry, str):
        entry = {"uri": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("uri"), str):
        raise ConfigError(f"catalog {name!r} in {source} needs a 'uri' string "
                          "(e.g. uri = \"sqlite:////data/catalog.db\")")
    root_map = entry.get("root_map") or {}
    if not isinstance(root_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in root_map.items()):
        raise ConfigError(f"root_map of catalog {name!r} in {source} must map strings to strings")
    from .databroker_config import _handlers

    handlers = _handlers(entry.get("handlers"), f"catalog {name!r} in {source}")
    return CatalogConfig(name, _absolute_sqlite(entry["uri"], folder), dict(root_map), source,
                         handlers=handlers)


def _absolute_sqlite(uri: str, folder: Path) -> str:
    """``sqlite:///rel.db`` made relative to ``folder``; other URIs unchanged."""
    if not uri.startswith(_SQLITE_PREFIX):
        return uri
    rest, sep, query = uri[len(_SQLITE_PREFIX):].partition("?")
    if not rest or rest.startswith("/") or rest == ":memory:":
        return uri
    rest = os.path.expanduser(rest)
    if not os.path.isabs(rest):
        rest = os.path.abspath(os.path.join(folder, rest))
    return _SQLITE_PREFIX + rest + sep + query


def list_catalogs() -> dict[str, CatalogConfig]:
    """Every named catalog of every config file (the first definition of a name wins).

    Raises
    ------
    ConfigError
        If ``$DASK_BROKER_CONFIG`` names a missing file, or a file is malformed.
    """
    found: dict[str, CatalogConfig] = {}
    env = os.environ.get(CONFIG_ENV)
    for i, path in enumerate(config_paths()):
        if not path.is_file():
            if i == 0 and env:
                raise ConfigError(f"${CONFIG_ENV} is {env!r}, which is not a file")
            continue
        for name, cfg in _read(path).items():
            found.setdefault(name, cfg)
    return found


def list_configs() -> list[str]:
    """Sorted names of every named catalog: the TOML/JSON catalogs files, databroker's
    YAML files and intake catalog sources (``temp`` is always available, not listed).

    Examples
    --------
    >>> list_configs()  # doctest: +SKIP
    ['csx', 'scratch']
    """
    from .databroker_config import databroker_config_files, intake_sources

    return sorted(set(list_catalogs()) | set(databroker_config_files()) | set(intake_sources()))


def lookup(name: str) -> CatalogConfig:
    """The config of the catalog called ``name`` (see the module for the search order).

    Raises
    ------
    CatalogNotFoundError
        With the names known and the places searched.
    ConfigError
        The file naming the catalog is malformed, or asks for what dask_broker does not read.
    """
    from .databroker_config import lookup_yaml, searched

    catalogs = list_catalogs()
    if name in catalogs:
        return catalogs[name]
    if name == TEMP_NAME:
        return CatalogConfig(name, "", source="<temporary catalog>")
    found = lookup_yaml(name)
    if found is not None:
        return found
    where = ", ".join(str(p) for p in config_paths()) + ", " + searched()
    known = ", ".join(list_configs()) or "none"
    raise CatalogNotFoundError(
        f"no catalog named {name!r} (known: {known}; searched {where}); give a URI such as "
        f"'sqlite:////absolute/catalog.db', or add [catalogs.{name}] uri = \"...\" to one of "
        "the catalogs files")


def catalog_config(config: Mapping, *, name: str = "", source: str = "<dict>") -> CatalogConfig:
    """The :class:`CatalogConfig` of a config dict of any supported shape.

    Shapes: dask_broker's ``{"uri": ..., "root_map": ..., "handlers": ...}``; databroker
    v1's ``{"metadatastore": ..., "assets": ..., "handlers": ..., "root_map": ...}``; an
    intake source ``{"driver": "bluesky-mongo-normalized-catalog", "args": {...}}``.

    Examples
    --------
    >>> catalog_config({"uri": "sqlite:////tmp/x.db"}).uri
    'sqlite:////tmp/x.db'
    """
    from .databroker_config import from_databroker_config, from_intake_source

    if not isinstance(config, Mapping):
        raise ConfigError(f"a catalog config must be a dict, not {type(config).__name__}")
    if "uri" in config:
        return _native(name, config, source, Path.cwd())
    if "metadatastore" in config:
        return from_databroker_config(config, name=name, source=source)
    if "driver" in config:
        return from_intake_source(config, name=name, source=source)
    raise ConfigError(
        f"{source}: a catalog config needs 'uri' (dask_broker), 'metadatastore' and 'assets' "
        "(databroker v1) or 'driver' and 'args' (an intake source); it has "
        f"{sorted(map(str, config)) or 'no keys'}")


def _looks_like_uri(spec: str) -> bool:
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum()


def resolve_catalog(spec: str) -> CatalogConfig:
    """A catalog URI, a named catalog, or the path of a SQLite file (``*.db``).

    Examples
    --------
    >>> resolve_catalog("sqlite:////tmp/x.db").uri
    'sqlite:////tmp/x.db'
    >>> resolve_catalog("/tmp/x.db").uri
    'sqlite:////tmp/x.db'
    """
    if not isinstance(spec, str) or not spec:
        raise StoreURIError(f"{spec!r} is neither a catalog URI nor a catalog name")
    if _looks_like_uri(spec):
        return CatalogConfig(spec, spec)
    path = Path(spec).expanduser()
    if os.sep in spec or path.suffix.lower() in _SQLITE_SUFFIXES:
        return CatalogConfig(spec, _SQLITE_PREFIX + str(path.absolute()))
    return lookup(spec)


def open_catalog(spec: str, *, create: bool = True, read_only: bool = False) -> "Broker":
    """Open a catalog given by URI, name (see :func:`lookup`) or SQLite file path.

    Parameters
    ----------
    spec
        ``sqlite:///...``, ``mongodb://...``, a named catalog, or ``path/to/catalog.db``.
    create
        If False, a SQLite catalog must already exist (commands that only read
        use this, so a typo does not create an empty catalog).
    read_only
        Open a SQLite, PostgreSQL or MongoDB catalog read-only (``?mode=ro``): it is
        never created, migrated or written (MongoDB: no indexes made).  Other stores
        ignore it.

    Examples
    --------
    >>> db = open_catalog("csx")              # doctest: +SKIP
    >>> db = open_catalog("sqlite:////tmp/catalog.db")  # doctest: +SKIP
    """
    from .broker import Broker

    cfg = resolve_catalog(spec)
    options = {}
    if cfg.uri.startswith(_SQLITE_PREFIX):
        from .stores.sqlite import parse_sqlite_uri

        path, _ = parse_sqlite_uri(cfg.uri)
        if (read_only or not create) and not path.is_file():
            raise StoreURIError(
                f"no catalog at {mask_uri(str(path))} (from {mask_uri(spec)!r}): the file does not "
                "exist")
        if read_only:
            options["read_only"] = True
    elif read_only and cfg.uri.partition(":")[0].lower() in (*_POSTGRES_SCHEMES, *_MONGO_SCHEMES):
        options["read_only"] = True  # never creates tables (PostgreSQL) or indexes (MongoDB)
    return cfg.open(Broker, **options)
