"""databroker's configuration files, read as dask_broker named catalogs.

Facilities already describe their catalogs for databroker; ``Broker.named("csx")``
reads the same files, so nothing has to be written twice:

- **databroker v1 YAML** (``csx.yml``) in ``~/.config/databroker``,
  ``<dirname(dirname(sys.executable))>/etc/databroker`` (and ``<sys.prefix>/etc/databroker``
  where that differs), then ``/etc/databroker`` (``%APPDATA%\\databroker`` on Windows) --
  the folders databroker searches, in its order; ``$DASK_BROKER_DATABROKER_CONFIG_PATH``
  (folders separated by ``os.pathsep``) replaces them::

      metadatastore:
        module: databroker.headersource.mongo
        class: MDS
        config: {host: localhost, port: 27017, database: metadatastore}
      assets:
        module: databroker.assets.mongo
        class: Registry
        config: {host: localhost, port: 27017, database: assets}
      handlers:
        AD_TIFF: {module: area_detector_handlers.handlers, class: AreaDetectorTiffHandler}
      root_map: {/GPFS/xf23id: /mnt/archive/xf23id}

- **intake catalogs** (databroker v2): every ``*.yml`` / ``*.yaml`` in
  ``$XDG_DATA_HOME/intake`` (default ``~/.local/share/intake``), ``<sys.prefix>/share/intake``
  and the folders or files of ``$INTAKE_PATH``; the *source name* is looked up, not the
  file name::

      sources:
        csx:
          driver: bluesky-mongo-normalized-catalog
          args:
            metadatastore_db: mongodb://localhost:27017/metadatastore
            asset_registry_db: mongodb://localhost:27017/assets
            handler_registry: {AD_TIFF: area_detector_handlers.handlers.AreaDetectorTiffHandler}
            root_map: {/GPFS/xf23id: /mnt/archive/xf23id}

  ``bluesky-msgpack-catalog`` and ``bluesky-jsonl-catalog`` sources (``args: {paths:
  [globs]}``) open a temporary catalog into which the files are ingested on every open.

Each is translated into a :class:`~dask_broker.config.CatalogConfig` (a store URI, a
root_map and handler import paths).  What dask_broker cannot honour -- databroker's
SQLite or other non-MongoDB stores, ``api_version: 2``, ``transforms``, intake templates --
raises :class:`~dask_broker.config.ConfigError` naming the file and what is supported.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from .errors import StoreURIError

__all__ = [
    "DATABROKER_CONFIG_PATH_ENV",
    "databroker_config_path",
    "intake_catalog_path",
    "databroker_config_files",
    "intake_sources",
    "from_databroker_config",
    "from_intake_source",
    "lookup_yaml",
]

#: Environment variable: folders (``os.pathsep``-separated) replacing databroker's search path.
DATABROKER_CONFIG_PATH_ENV = "DASK_BROKER_DATABROKER_CONFIG_PATH"

#: databroker's hidden default config, left out of listings (as databroker does).
_HIDDEN = {"_legacy_config"}

_MDS = ("databroker.headersource.mongo", ("MDS", "MDSRO"))
_ASSETS = ("databroker.assets.mongo", ("Registry", "RegistryRO"))
_SUPPORTED_V1 = (f"metadatastore {_MDS[0]} {'/'.join(_MDS[1])} with assets "
                 f"{_ASSETS[0]} {'/'.join(_ASSETS[1])} (databroker's MongoDB stores)")

_MONGO_DRIVERS = ("bluesky-mongo-normalized-catalog",
                  "databroker._drivers.mongo_normalized.BlueskyMongoCatalog")
_FILE_DRIVERS = ("bluesky-msgpack-catalog", "bluesky-jsonl-catalog",
                 "databroker._drivers.msgpack.BlueskyMsgpackCatalog",
                 "databroker._drivers.jsonl.BlueskyJSONLCatalog")
_SUPPORTED_DRIVERS = ("bluesky-mongo-normalized-catalog, bluesky-msgpack-catalog, "
                      "bluesky-jsonl-catalog")
#: intake args that change what a catalog returns; dask_broker cannot apply them.
_UNSUPPORTED_ARGS = ("transforms", "query", "filler_class")


def _config_error(message: str) -> Exception:
    from .config import ConfigError

    return ConfigError(message)


# ------------------------------------------------------------------ search paths
def databroker_config_path() -> list[Path]:
    """The folders searched for databroker ``NAME.yml`` files, in order.

    ``$DASK_BROKER_DATABROKER_CONFIG_PATH`` (``os.pathsep``-separated) replaces
    databroker's own list.

    Examples
    --------
    >>> databroker_config_path()[-1].as_posix()  # doctest: +SKIP
    '/etc/databroker'
    """
    env = os.environ.get(DATABROKER_CONFIG_PATH_ENV)
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    if os.name == "nt":  # pragma: no cover - databroker's Windows location
        return [Path(os.environ.get("APPDATA", "~")).expanduser() / "databroker"]
    paths = [Path("~/.config/databroker").expanduser(),
             Path(sys.executable).parent.parent / "etc" / "databroker",
             Path(sys.prefix) / "etc" / "databroker",
             Path("/etc/databroker")]
    return list(dict.fromkeys(paths))


def intake_catalog_path() -> list[Path]:
    """The folders (and files) searched for intake catalog YAML files, in order.

    Examples
    --------
    >>> [p.name for p in intake_catalog_path()][:2]  # doctest: +SKIP
    ['intake', 'intake']
    """
    data_home = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    paths = [Path(data_home).expanduser() / "intake", Path(sys.prefix) / "share" / "intake"]
    paths += [Path(p).expanduser() for p in os.environ.get("INTAKE_PATH", "").split(os.pathsep)
              if p]
    return list(dict.fromkeys(paths))


def databroker_config_files() -> dict[str, Path]:
    """``{name: file}`` of every databroker ``*.yml``; the first folder naming a file wins.

    databroker's hidden ``_legacy_config`` is left out.
    """
    found: dict[str, Path] = {}
    for folder in databroker_config_path():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yml")):
                if path.stem not in _HIDDEN and path.is_file():
                    found.setdefault(path.stem, path)
    return found


def _databroker_file(name: str) -> Path | None:
    if not name or Path(name).name != name:  # a name, never a path out of the folder
        return None
    for folder in databroker_config_path():
        path = folder / f"{name}.yml"
        if path.is_file():
            return path
    return None


def _intake_files() -> list[Path]:
    files = []
    for entry in intake_catalog_path():
        if entry.is_file():
            files.append(entry)
        elif entry.is_dir():
            files += sorted(p for p in entry.iterdir()
                            if p.suffix.lower() in (".yml", ".yaml") and p.is_file())
    return files


def intake_sources() -> dict[str, tuple[Path, dict]]:
    """``{source name: (file, entry)}`` of every intake catalog file; the first file wins.

    A file that is not valid YAML is skipped with a :class:`RuntimeWarning`, one
    without a ``sources`` table silently (intake folders may hold other catalogs).
    """
    from .config import ConfigError

    found: dict[str, tuple[Path, dict]] = {}
    for path in _intake_files():
        try:
            data = _load_yaml(path)
        except ConfigError as err:  # warn and go on, like a broken plugin
            warnings.warn(f"skipping the intake catalog {path}: {err}", RuntimeWarning,
                          stacklevel=2)
            continue
        sources = data.get("sources")
        if not isinstance(sources, dict):
            continue
        for name, entry in sources.items():
            if isinstance(entry, dict):
                found.setdefault(str(name), (path, entry))
    return found


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise _config_error(f"cannot read the YAML config {path}: {err}") from err
    if not isinstance(data, dict):
        raise _config_error(f"the YAML config {path} must hold a mapping (key: value lines), "
                            f"not {type(data).__name__}")
    return data


def lookup_yaml(name: str):
    """The :class:`~dask_broker.config.CatalogConfig` of ``name`` from databroker's YAML
    files, then from intake sources; None if neither names it."""
    path = _databroker_file(name)
    if path is not None:
        return from_databroker_config(_load_yaml(path), name=name, source=str(path))
    entry = intake_sources().get(name)
    if entry is not None:
        path, source = entry
        return from_intake_source(source, name=name, source=str(path))
    return None


def searched() -> str:
    """The places searched, for messages."""
    return (", ".join(f"{p}/*.yml" for p in databroker_config_path()) + ", intake catalogs in "
            + ", ".join(str(p) for p in intake_catalog_path()))


# ------------------------------------------------------------------ translation
def _where(name: str, source: str) -> str:
    return f"catalog {name!r} in {source}" if name else source


def _root_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _config_error(f"root_map of {where} must map strings to strings "
                            "(root_map: {/old/root: /new/root})")
    return dict(value)


def _handler_target(spec: str, value: Any, where: str) -> str:
    """``"module:Class"`` from ``{module, class}``, ``"pkg.mod.Class"`` or ``"pkg.mod:Class"``."""
    if isinstance(value, Mapping) and isinstance(value.get("module"), str) \
            and isinstance(value.get("class"), str):
        return f"{value['module']}:{value['class']}"
    if isinstance(value, str) and ("." in value or ":" in value):
        if ":" in value:
            return value
        module, _, attr = value.rpartition(".")
        return f"{module}:{attr}"
    raise _config_error(f"handler {spec!r} of {where} must be {{module: ..., class: ...}} or "
                        f"'package.module.ClassName', not {value!r}")


def _handlers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _config_error(f"handlers of {where} must map a spec to a handler class "
                            "(SPEC: {module: ..., class: ...})")
    return {str(spec): _handler_target(str(spec), target, where)
            for spec, target in value.items()}


def _mongo_uri(section: Mapping, part: str, where: str) -> str:
    """The database URI of a databroker ``metadatastore``/``assets`` ``config`` section."""
    from .stores.mongo.uri import split_uri

    config = section.get("config")
    if not isinstance(config, Mapping):
        raise _config_error(f"{part} of {where} needs a 'config' mapping "
                            "(config: {host: ..., port: 27017, database: ...})")
    database = config.get("database")
    if not isinstance(database, str) or not database:
        raise _config_error(f"{part}.config of {where} needs 'database' (the MongoDB database "
                            "name)")
    if "uri" in config and ({"host", "port"} & set(config)):
        raise _config_error(f"{part}.config of {where} gives 'uri' and 'host'/'port'; "
                            "give one of them (as databroker requires)")
    if "uri" in config:
        try:
            scheme, netloc, _, items = split_uri(config["uri"])
        except StoreURIError as err:
            raise _config_error(f"{part}.config.uri of {where}: {err}") from err
    else:
        host = str(config.get("host") or "localhost")
        port = config.get("port")
        netloc = host if port is None else f"{host}:{port}"
        if "mongo_user" in config and "mongo_pwd" in config:
            netloc = (f"{quote(str(config['mongo_user']), safe='')}:"
                      f"{quote(str(config['mongo_pwd']), safe='')}@{netloc}")
        scheme, items = "mongodb", []
    if "authsource" in config:
        items = [i for i in items if i.partition("=")[0].lower() != "authsource"]
        items.append(f"authSource={quote(str(config['authsource']), safe='')}")
    return f"{scheme}://{netloc}/{database}" + ("?" + "&".join(items) if items else "")


def _store_uri(metadatastore_uri: str, asset_uri: str | None, where: str) -> str:
    """One dask_broker store URI: the metadatastore's, naming a separate asset registry."""
    from .stores.mongo.uri import ASSET_PARAM, parse_store_uri

    try:
        main, _ = parse_store_uri(metadatastore_uri, "metadatastore")
        assets = parse_store_uri(asset_uri, "asset registry")[0] if asset_uri else None
    except StoreURIError as err:
        raise _config_error(f"{where}: {err}") from err
    if assets is None or assets.uri == main.uri:
        return metadatastore_uri
    sep = "&" if "?" in metadatastore_uri else "?"
    return f"{metadatastore_uri}{sep}{ASSET_PARAM}={quote(asset_uri, safe='')}"


def from_databroker_config(config: Mapping, *, name: str = "", source: str = "<dict>"):
    """The :class:`~dask_broker.config.CatalogConfig` of a databroker v1 config dict.

    Raises
    ------
    ConfigError
        For what dask_broker does not read (non-MongoDB stores, ``api_version`` 2,
        ``transforms``), naming ``source`` and what is supported.

    Examples
    --------
    >>> cfg = from_databroker_config({
    ...     "metadatastore": {"module": "databroker.headersource.mongo", "class": "MDS",
    ...                       "config": {"host": "h", "port": 27017, "database": "mds"}},
    ...     "assets": {"module": "databroker.assets.mongo", "class": "Registry",
    ...                "config": {"host": "h", "port": 27017, "database": "mds"}}})
    >>> cfg.uri
    'mongodb://h:27017/mds'
    """
    from .config import CatalogConfig

    where = _where(name, source)
    version = config.get("api_version")
    if version not in (None, 0, 1):
        raise _config_error(
            f"{where} sets api_version: {version!r}; dask_broker reads databroker v0/v1 configs "
            "(api_version 0 or 1, or none) and intake sources -- for a v2 catalog write an intake "
            "source (driver: bluesky-mongo-normalized-catalog) or drop api_version")
    if config.get("transforms"):
        raise _config_error(f"{where} sets 'transforms'; dask_broker does not apply document "
                            "transforms -- remove them (documents are read as stored)")
    uris = {}
    for part, (module, classes) in (("metadatastore", _MDS), ("assets", _ASSETS)):
        section = config.get(part)
        if not isinstance(section, Mapping):
            raise _config_error(f"{where} has no '{part}' section; dask_broker reads "
                                f"{_SUPPORTED_V1}")
        if section.get("module") != module or section.get("class") not in classes:
            raise _config_error(
                f"{part} of {where} is {section.get('module')!r} {section.get('class')!r}, which "
                f"dask_broker does not read; it reads {_SUPPORTED_V1}. For another store, export "
                "the runs with suitcase-msgpack and `dask-broker ingest` them into a catalog")
        uris[part] = _mongo_uri(section, part, where)
    return CatalogConfig(
        name, _store_uri(uris["metadatastore"], uris["assets"], where),
        _root_map(config.get("root_map"), where), source,
        handlers=_handlers(config.get("handlers"), where))


_CATALOG_DIR = re.compile(r"\{\{\s*CATALOG_DIR\s*\}\}")


def _expand(value: Any, folder: Path, where: str) -> Any:
    """``{{ CATALOG_DIR }}`` replaced by the catalog file's folder; other templates refused."""
    if isinstance(value, str):
        value = _CATALOG_DIR.sub(lambda _: str(folder), value)
        if "{{" in value or "{%" in value:
            raise _config_error(f"{where} uses an intake template ({value!r}); dask_broker "
                                "expands only {{ CATALOG_DIR }} -- write the value out")
        return value
    if isinstance(value, list):
        return [_expand(v, folder, where) for v in value]
    if isinstance(value, Mapping):
        return {k: _expand(v, folder, where) for k, v in value.items()}
    return value


def from_intake_source(entry: Mapping, *, name: str = "", source: str = "<dict>"):
    """The :class:`~dask_broker.config.CatalogConfig` of one intake catalog source entry.

    Examples
    --------
    >>> cfg = from_intake_source({"driver": "bluesky-mongo-normalized-catalog", "args": {
    ...     "metadatastore_db": "mongodb://h:27017/mds",
    ...     "asset_registry_db": "mongodb://h:27017/mds"}})
    >>> cfg.uri
    'mongodb://h:27017/mds'
    """
    from .config import CatalogConfig

    where = _where(name, source)
    driver = entry.get("driver")
    args = entry.get("args") or {}
    if not isinstance(args, Mapping):
        raise _config_error(f"'args' of {where} must be a mapping")
    folder = Path(source).parent if Path(source).is_file() else Path.cwd()
    args = {k: _expand(v, folder, f"{where}, args.{k}") for k, v in args.items()}
    unsupported = [k for k in _UNSUPPORTED_ARGS if args.get(k)]
    if unsupported:
        raise _config_error(f"{where} sets {unsupported}; dask_broker does not apply them -- "
                            "remove them (documents are read as stored)")
    root_map = _root_map(args.get("root_map"), where)
    handlers = _handlers(args.get("handler_registry"), where)
    if driver in _MONGO_DRIVERS:
        mds = args.get("metadatastore_db")
        assets = args.get("asset_registry_db")
        if not isinstance(mds, str) or not (assets is None or isinstance(assets, str)):
            raise _config_error(f"{where} needs metadatastore_db (and asset_registry_db) as "
                                "URIs: mongodb://host:27017/database")
        return CatalogConfig(name, _store_uri(mds, assets, where), root_map, source,
                             handlers=handlers)
    if driver in _FILE_DRIVERS:
        paths = args.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _config_error(f"{where} needs 'paths': a list of file globs")
        files = tuple(sorted({f for p in paths
                              for f in glob.glob(str(folder / os.path.expanduser(p)))}))
        return CatalogConfig(name, "", root_map, source, handlers=handlers, files=files)
    raise _config_error(f"{where} has driver {driver!r}; dask_broker reads the intake drivers "
                        f"{_SUPPORTED_DRIVERS}")
