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

Files are searched in this order, the first that names the catalog wins:

1. ``$DASK_BROKER_CONFIG`` (a path to a ``.toml`` or ``.json`` file), if set;
2. ``$XDG_CONFIG_HOME/dask_broker/catalogs.toml`` then ``catalogs.json``
   (``XDG_CONFIG_HOME`` defaults to ``~/.config``).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DaskBrokerError, StoreURIError, _KeyErrorMessage

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "CONFIG_ENV",
    "CatalogConfig",
    "CatalogNotFoundError",
    "ConfigError",
    "config_paths",
    "list_catalogs",
    "lookup",
    "open_catalog",
    "resolve_catalog",
]

#: Environment variable naming a config file.
CONFIG_ENV = "DASK_BROKER_CONFIG"

_SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class ConfigError(DaskBrokerError, ValueError):
    """A catalogs config file cannot be read or is malformed."""


class CatalogNotFoundError(_KeyErrorMessage, DaskBrokerError, KeyError):
    """No config file names the catalog asked for."""


@dataclass(frozen=True)
class CatalogConfig:
    """One named catalog: its URI, optional root_map, and the file that defines it."""

    name: str
    uri: str
    root_map: dict[str, str] = field(default_factory=dict)
    source: str = ""


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
    out = {}
    for name, entry in entries.items():
        if isinstance(entry, str):
            entry = {"uri": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
            raise ConfigError(f"catalog {name!r} in {path} needs a 'uri' string "
                              "(e.g. uri = \"sqlite:////data/catalog.db\")")
        root_map = entry.get("root_map") or {}
        if not isinstance(root_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in root_map.items()):
            raise ConfigError(f"root_map of catalog {name!r} in {path} must map strings to strings")
        out[name] = CatalogConfig(name, _absolute_sqlite(entry["uri"], path.parent),
                                  dict(root_map), str(path))
    return out


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


def lookup(name: str) -> CatalogConfig:
    """The config of the catalog called ``name``.

    Raises
    ------
    CatalogNotFoundError
        With the names known and the files searched.
    """
    catalogs = list_catalogs()
    if name in catalogs:
        return catalogs[name]
    searched = ", ".join(str(p) for p in config_paths())
    known = ", ".join(sorted(catalogs)) or "none"
    raise CatalogNotFoundError(
        f"no catalog named {name!r} (known: {known}; searched {searched}); give a URI such as "
        f"'sqlite:////absolute/catalog.db', or add [catalogs.{name}] uri = \"...\" to one of them")


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
        Open a SQLite catalog read-only (``?mode=ro``): it is never created,
        migrated or written.  Other stores ignore it.

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
            raise StoreURIError(f"no catalog at {path} (from {spec!r}): the file does not exist")
        if read_only:
            options["read_only"] = True
    return Broker.from_uri(cfg.uri, root_map=cfg.root_map or None, **options)
