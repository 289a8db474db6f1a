"""databroker's configuration files as named catalogs: v1 YAML, intake sources, from_config.

Config files are written into tmp folders; HOME, the databroker search path, the intake
folders and sys.prefix point there, so the machine's own files never leak in.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import event_model
import numpy as np
import pytest
from _config_handlers import SPEC, ScaledNpyHandler

import dask_broker
from dask_broker import Broker, list_configs
from dask_broker.cli import main
from dask_broker.config import CatalogNotFoundError, ConfigError, lookup
from dask_broker.databroker_config import (
    DATABROKER_CONFIG_PATH_ENV,
    databroker_config_path,
    intake_catalog_path,
)
from dask_broker.errors import HandlerNotFoundError
from dask_broker.redact import mask_uri

FRAME = np.arange(6.0).reshape(2, 3)
SCALE = 10
OLD_ROOT = "/old/root/never/mounted"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every config location inside tmp_path; returns the databroker config folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DASK_BROKER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("INTAKE_PATH", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    folder = tmp_path / "databroker"
    folder.mkdir()
    monkeypatch.setenv(DATABROKER_CONFIG_PATH_ENV, str(folder))
    return folder


@pytest.fixture
def new_root(tmp_path):
    """Where the run's file is mounted now (the run records OLD_ROOT)."""
    root = tmp_path / "mounted"
    root.mkdir()
    np.save(root / "frame.npy", FRAME)
    return root


def insert_run(db: Broker, scan_id: int = 1) -> str:
    """A run with a scalar and one external frame of spec SPEC under OLD_ROOT; its uid."""
    run = event_model.compose_run(metadata={"scan_id": scan_id})
    db.insert("start", run.start_doc)
    desc = run.compose_descriptor(name="primary", data_keys={
        "x": {"source": "x", "dtype": "number", "shape": []},
        "img": {"source": "img", "dtype": "array", "shape": [2, 3], "external": "FILESTORE:"}})
    db.insert("descriptor", desc.descriptor_doc)
    res = run.compose_resource(spec=SPEC, root=OLD_ROOT, resource_path="frame.npy",
                               resource_kwargs={"scale": SCALE})
    db.insert("resource", res.resource_doc)
    datum = res.compose_datum(datum_kwargs={})
    db.insert("datum", datum)
    db.insert("event", desc.compose_event(data={"x": 1.5, "img": datum["datum_id"]},
                                          timestamps={"x": 1.0, "img": 1.0}, seq_num=1))
    db.insert("stop", run.compose_stop())
    return run.start_doc["uid"]


def assert_reads_run(db: Broker, uid: str, new_root: Path) -> None:
    """The run is there, its handler is the config's, and root_map finds the file."""
    assert [h.uid for h in db] == [uid]
    assert db.handlers.lookup(SPEC) is ScaledNpyHandler
    assert db.root_map == {OLD_ROOT: str(new_root)}
    row = db[uid].table(fill=True).compute().iloc[0]
    assert row["x"] == 1.5
    np.testing.assert_array_equal(row["img"], FRAME * SCALE)


def host_port_db(uri: str) -> tuple[str, int, str]:
    scheme, _, rest = uri.partition("://")
    netloc, _, path = rest.partition("/")
    if "@" in netloc or "?" in path or scheme != "mongodb":
        pytest.skip("the test server's URI has credentials or options; host/port cannot say it")
    host, _, port = netloc.rpartition(":")
    return host, int(port), path


def v1_yaml(mds: str, assets: str, new_root: Path, **extra: str) -> str:
    """A databroker v1 config file: MongoDB by host/port, a handler and a root_map."""
    host, port, mds_db = host_port_db(mds)
    _, _, assets_db = host_port_db(assets)
    text = f"""\
description: heavyweight shared database
metadatastore:
  module: databroker.headersource.mongo
  class: MDS
  config:
    host: {host}
    port: {port}
    database: {mds_db}
    timezone: US/Eastern
assets:
  module: databroker.assets.mongo
  class: Registry
  config:
    host: {host}
    port: {port}
    database: {assets_db}
handlers:
  {SPEC}:
    module: _config_handlers
    class: ScaledNpyHandler
root_map:
  {OLD_ROOT}: {new_root}
"""
    return text + "".join(f"{k}: {v}\n" for k, v in extra.items())


# ------------------------------------------------------------------ databroker v1 YAML
@pytest.mark.mongo
def test_v1_yaml_named(isolated, new_mongo_uri, new_root, capsys):
    mds, assets = new_mongo_uri(), new_mongo_uri()
    writer = Broker.from_uri(mds, asset_registry_uri=assets)
    uid = insert_run(writer)
    (isolated / "csx.yml").write_text(v1_yaml(mds, assets, new_root))

    db = Broker.named("csx")
    assert_reads_run(db, uid, new_root)
    assert db.store.asset_registry_uri == assets  # resources come from the separate registry
    assert writer.store.asset_registry_uri == assets
    # the writer without the config's handler cannot fill: the handler came from the YAML
    with pytest.raises(HandlerNotFoundError):
        writer.handlers.lookup(SPEC)

    # a run inserted through the named Broker is read through a plain one
    uid2 = insert_run(db, scan_id=2)
    assert [h.uid for h in writer] == [uid2, uid]
    assert "csx" in list_configs()

    code = main(["ls", "csx"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert uid[:8] in out and uid2[:8] in out


@pytest.mark.mongo
def test_v1_yaml_uri_form_and_one_database(isolated, new_mongo_uri, new_root):
    """``uri`` plus ``database`` (the database key names the database, as in databroker);
    the asset registry in the same database."""
    mds = new_mongo_uri()
    uid = insert_run(Broker.from_uri(mds))
    server, _, database = mds.rpartition("/")
    section = {"uri": f"{server}/not_this_one", "database": database}
    db = Broker.from_config({
        "metadatastore": {"module": "databroker.headersource.mongo", "class": "MDSRO",
                          "config": section},
        "assets": {"module": "databroker.assets.mongo", "class": "RegistryRO",
                   "config": section},
        "handlers": {SPEC: {"module": "_config_handlers", "class": "ScaledNpyHandler"}},
        "root_map": {OLD_ROOT: str(new_root)},
    })
    assert db.uri == mds and db.store.asset_registry_uri == mds
    assert_reads_run(db, uid, new_root)


def test_v1_credentials_authsource_and_masking():
    """mongo_user/mongo_pwd/host/port become a URI (percent-encoded), authsource an option;
    no repr or message shows the password."""
    section = {"host": "db.example", "port": 27017, "database": "mds", "mongo_user": "me",
               "mongo_pwd": "p@ss:w/rd", "authsource": "admin"}
    assets = dict(section, database="assets", mongo_pwd="other-secret")
    config = {
        "metadatastore": {"module": "databroker.headersource.mongo", "class": "MDS",
                          "config": section},
        "assets": {"module": "databroker.assets.mongo", "class": "Registry", "config": assets},
    }
    db = Broker.from_config(config)  # nothing is sent to the server until a read
    assert db.store.uri.startswith("mongodb://me:p%40ss%3Aw%2Frd@db.example:27017/mds?"
                                   "authSource=admin&asset_registry_uri=")
    assert db.store.asset_registry_uri == (
        "mongodb://me:other-secret@db.example:27017/assets?authSource=admin")
    cfg = dask_broker.config.catalog_config(config)
    for text in (repr(cfg), mask_uri(db.store.uri), repr(db.store)):
        assert "p%40ss" not in text and "other-secret" not in text, text
        assert "me:***@db.example" in text


def test_default_search_path(isolated, tmp_path, monkeypatch):
    """Without the env var: databroker's folders, in its order; a file in ~/.config/databroker
    is found."""
    monkeypatch.delenv(DATABROKER_CONFIG_PATH_ENV)
    home = Path(os.environ["HOME"])
    paths = databroker_config_path()
    assert paths[0] == home / ".config" / "databroker"
    assert paths[1] == Path(sys.executable).parent.parent / "etc" / "databroker"
    assert Path(sys.prefix) / "etc" / "databroker" in paths
    assert paths[-1] == Path("/etc/databroker")
    paths[0].mkdir(parents=True)
    (paths[0] / "homecat.yml").write_text(
        v1_yaml("mongodb://h:27017/mds", "mongodb://h:27017/assets", tmp_path))
    cfg = lookup("homecat")
    assert cfg.source == str(paths[0] / "homecat.yml")
    assert cfg.uri.startswith("mongodb://h:27017/mds?asset_registry_uri=")
    assert cfg.handlers == {SPEC: "_config_handlers:ScaledNpyHandler"}
    assert cfg.root_map == {OLD_ROOT: str(tmp_path)}

    assert intake_catalog_path()[:2] == [home / ".local" / "share" / "intake",
                                         Path(sys.prefix) / "share" / "intake"]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("INTAKE_PATH", os.pathsep.join(["/a", "/b/cat.yml"]))
    assert intake_catalog_path() == [tmp_path / "data" / "intake",
                                     Path(sys.prefix) / "share" / "intake",
                                     Path("/a"), Path("/b/cat.yml")]


def test_search_order_native_wins_and_list_configs(isolated, tmp_path, monkeypatch):
    """The TOML file wins a name clash; the first databroker folder wins; list_configs is the
    sorted union without databroker's hidden _legacy_config."""
    second = tmp_path / "databroker2"
    second.mkdir()
    monkeypatch.setenv(DATABROKER_CONFIG_PATH_ENV, os.pathsep.join([str(isolated), str(second)]))
    yaml_a = v1_yaml("mongodb://a:1/mds", "mongodb://a:1/mds", tmp_path)
    yaml_b = v1_yaml("mongodb://b:1/mds", "mongodb://b:1/mds", tmp_path)
    (isolated / "both.yml").write_text(yaml_a)
    (second / "both.yml").write_text(yaml_b)
    (second / "second.yml").write_text(yaml_b)
    (second / "_legacy_config.yml").write_text(yaml_b)
    (isolated / "clash.yml").write_text(yaml_a)
    (isolated / "notes.yaml").write_text(yaml_a)  # databroker reads *.yml only
    intake = Path(os.environ["HOME"]) / ".local" / "share" / "intake"
    intake.mkdir(parents=True)
    (intake / "cat.yaml").write_text(json.dumps({"sources": {
        "v2": {"driver": "bluesky-mongo-normalized-catalog",
               "args": {"metadatastore_db": "mongodb://c:1/mds"}},
        "both": {"driver": "bluesky-mongo-normalized-catalog",
                 "args": {"metadatastore_db": "mongodb://c:1/other"}}}}))
    toml = tmp_path / "catalogs.toml"
    toml.write_text('[catalogs]\nclash = "sqlite:////native/clash.db"\n')
    monkeypatch.setenv("DASK_BROKER_CONFIG", str(toml))

    assert list_configs() == ["both", "clash", "second", "v2"]
    assert dask_broker.list_configs is list_configs and "list_configs" in dask_broker.__all__
    assert lookup("clash").uri == "sqlite:////native/clash.db"
    assert lookup("both").uri == "mongodb://a:1/mds"        # first folder, before intake
    assert lookup("second").uri == "mongodb://b:1/mds"
    assert lookup("_legacy_config").uri == "mongodb://b:1/mds"  # hidden, still found
    assert lookup("v2").uri == "mongodb://c:1/mds"
    with pytest.raises(CatalogNotFoundError) as err:
        lookup("nothere")
    message = str(err.value)
    for word in ("'nothere'", "both", "clash", "second", "v2", str(isolated), str(intake)):
        assert word in message


def test_named_temp(isolated):
    db = Broker.named("temp")
    assert len(db) == 0
    uid = insert_run(db)
    assert [h.uid for h in db] == [uid]
    assert len(Broker.named("temp")) == 0  # a new throwaway catalog each time
    assert "temp" not in list_configs()


# ------------------------------------------------------------------ intake sources
@pytest.mark.mongo
def test_intake_source(isolated, tmp_path, new_mongo_uri, new_root, monkeypatch):
    mds, assets = new_mongo_uri(), new_mongo_uri()
    uid = insert_run(Broker.from_uri(mds, asset_registry_uri=assets))
    intake = Path(os.environ["HOME"]) / ".local" / "share" / "intake"
    intake.mkdir(parents=True)
    (intake / "bluesky.yml").write_text(f"""\
sources:
  beamline_v2:
    description: the beamline
    driver: bluesky-mongo-normalized-catalog
    args:
      metadatastore_db: {mds}
      asset_registry_db: {assets}
      handler_registry:
        {SPEC}: _config_handlers.ScaledNpyHandler
      root_map:
        {OLD_ROOT}: {new_root}
""")
    (intake / "other.yml").write_text("sources: [not, a, mapping\n")  # skipped, with a warning
    with pytest.warns(RuntimeWarning, match="other.yml"):
        db = Broker.named("beamline_v2")
    assert_reads_run(db, uid, new_root)
    assert db.store.asset_registry_uri == assets
    (intake / "other.yml").unlink()

    # INTAKE_PATH names a file; a source given as a dict opens the same way
    elsewhere = tmp_path / "elsewhere.yml"
    source = {"driver": "bluesky-mongo-normalized-catalog",
              "args": {"metadatastore_db": mds, "asset_registry_db": assets,
                       "handler_registry": {SPEC: "_config_handlers.ScaledNpyHandler"},
                       "root_map": {OLD_ROOT: str(new_root)}}}
    elsewhere.write_text(json.dumps({"sources": {"from_env": source}}))
    monkeypatch.setenv("INTAKE_PATH", str(elsewhere))
    assert list_configs() == ["beamline_v2", "from_env"]
    assert_reads_run(Broker.named("from_env"), uid, new_root)
    assert_reads_run(Broker.from_config(source), uid, new_root)


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_file_sources_are_ingested_into_a_temporary_catalog(isolated, tmp_path, new_root, fmt):
    """bluesky-msgpack/jsonl-catalog sources: the files are ingested into a throwaway catalog."""
    serializer = pytest.importorskip(f"suitcase.{fmt}").Serializer
    collector = Broker.temp()
    uids = [insert_run(collector, scan_id=i) for i in (1, 2)]
    intake = Path(os.environ["HOME"]) / ".local" / "share" / "intake"
    data = intake / "data"
    for h in collector:
        with serializer(str(data)) as write:
            for name, doc in h.docs():
                write(name, doc)
    (intake / "files.yml").write_text(f"""\
sources:
  saved:
    driver: bluesky-{fmt}-catalog
    args:
      paths: ["{{{{ CATALOG_DIR }}}}/data/*.{fmt}"]
      handler_registry: {{{SPEC}: _config_handlers.ScaledNpyHandler}}
      root_map: {{{OLD_ROOT}: {new_root}}}
""")
    db = Broker.named("saved")
    assert sorted(h.uid for h in db) == sorted(uids)
    assert db.handlers.lookup(SPEC) is ScaledNpyHandler and db.root_map == {OLD_ROOT: str(new_root)}
    np.testing.assert_array_equal(db[uids[0]].table(fill=True).compute().iloc[0]["img"],
                                  FRAME * SCALE)


# ------------------------------------------------------------------ from_config, native
def test_from_config_native_dict(tmp_path, new_root):
    path = tmp_path / "native.db"
    uid = insert_run(Broker.from_uri(f"sqlite:///{path}"))
    db = Broker.from_config({"uri": f"sqlite:///{path}", "root_map": {OLD_ROOT: str(new_root)},
                             "handlers": {SPEC: "_config_handlers.ScaledNpyHandler"}})
    assert_reads_run(db, uid, new_root)


# ------------------------------------------------------------------ what is not supported
MDS = {"module": "databroker.headersource.mongo", "class": "MDS",
       "config": {"host": "h", "port": 27017, "database": "mds"}}
ASSETS = {"module": "databroker.assets.mongo", "class": "Registry",
          "config": {"host": "h", "port": 27017, "database": "assets"}}
SQLITE_V0 = {"metadatastore": {"module": "databroker.headersource.sqlite", "class": "MDS",
                               "config": {"directory": "/tmp/mds"}},
             "assets": {"module": "databroker.assets.sqlite", "class": "Registry",
                        "config": {"dbpath": "/tmp/assets.sqlite"}}}


@pytest.mark.parametrize("config, words", [
    (SQLITE_V0, ["databroker.headersource.sqlite", "databroker.headersource.mongo",
                 "dask-broker ingest"]),
    ({"metadatastore": MDS, "assets": ASSETS, "api_version": 2}, ["api_version: 2",
                                                                  "bluesky-mongo-normalized"]),
    ({"metadatastore": MDS, "assets": ASSETS, "transforms": {"start": "m.f"}}, ["transforms"]),
    ({"metadatastore": MDS}, ["no 'assets' section", "databroker.assets.mongo"]),
    ({"metadatastore": {**MDS, "config": {"host": "h"}}, "assets": ASSETS},
     ["metadatastore.config", "'database'"]),
    ({"metadatastore": {**MDS, "config": {"uri": "mongodb://h", "host": "h", "database": "d"}},
      "assets": ASSETS}, ["'uri' and 'host'/'port'"]),
    ({"metadatastore": MDS, "assets": ASSETS, "root_map": {"/a": 1}}, ["root_map", "strings"]),
    ({"metadatastore": MDS, "assets": ASSETS, "handlers": {"X": {"module": "m"}}},
     ["handler 'X'", "module"]),
    ({"driver": "csv", "args": {"urlpath": "x.csv"}}, ["'csv'", "bluesky-mongo-normalized"]),
    ({"driver": "bluesky-mongo-normalized-catalog",
      "args": {"metadatastore_db": "{{ env(MONGO) }}/mds"}}, ["intake template", "CATALOG_DIR"]),
    ({"driver": "bluesky-mongo-normalized-catalog",
      "args": {"metadatastore_db": "mongodb://h/mds", "transforms": {"start": "m.f"}}},
     ["transforms"]),
])
def test_unsupported_config_names_file_and_what_is_supported(isolated, config, words):
    if "driver" in config:  # an intake source, looked up by its name in an intake file
        folder = Path(os.environ["HOME"]) / ".local" / "share" / "intake"
        folder.mkdir(parents=True)
        path = folder / "sources.yml"
        path.write_text(json.dumps({"sources": {"bad": config}}))  # JSON is YAML
    else:
        path = isolated / "bad.yml"
        path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        Broker.named("bad")
    message = str(err.value)
    assert f"catalog 'bad' in {path}" in message, message
    for word in words:
        assert word in message, (word, message)
    with pytest.raises(ConfigError) as err:  # the same dict given directly
        Broker.from_config(config)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_from_config_unknown_shape():
    with pytest.raises(ConfigError) as err:
        Broker.from_config({"description": "nothing else"})
    for word in ("'uri'", "'metadatastore'", "'driver'", "description"):
        assert word in str(err.value)


def test_bad_yaml_and_missing_handler(isolated, tmp_path):
    (isolated / "broken.yml").write_text("metadatastore: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yml"):
        Broker.named("broken")
    (isolated / "scalar.yml").write_text("just a string\n")
    with pytest.raises(ConfigError, match="scalar.yml.*mapping"):
        Broker.named("scalar")
    text = v1_yaml("mongodb://h:27017/mds", "mongodb://h:27017/mds", tmp_path)
    (isolated / "nohandler.yml").write_text(
        text.replace("module: _config_handlers", "module: no_such_module_here"))
    with pytest.raises(ConfigError) as err:
        Broker.named("nohandler")
    message = str(err.value)
    assert "nohandler.yml" in message and SPEC in message and "no_such_module_here" in message


def test_mask_uri_hides_an_embedded_asset_registry_password():
    from urllib.parse import quote

    assets = "mongodb://u:secret2@h2:27017/assets?authSource=admin"
    uri = f"mongodb://me:secret1@h:27017/mds?asset_registry_uri={quote(assets, safe='')}"
    masked = mask_uri(uri)
    assert "secret1" not in masked and "secret2" not in masked
    assert masked.startswith("mongodb://me:***@h:27017/mds?asset_registry_uri=")
    assert "h2" in masked
