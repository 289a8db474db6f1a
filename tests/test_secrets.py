"""A password in a store URI never shows: not in a repr, an error, a log record,
CLI output, nor a dask task name or graph repr (issue #10, "Secrets").

The real URI is kept only where a connection is made and in the pickled recipe a
worker needs; everything a person reads goes through
:func:`dask_broker.redact.mask_uri`.
"""

from __future__ import annotations

import logging
import pickle
import socket
import traceback
import uuid
from urllib.parse import quote

import numpy as np
import pytest
from _mongo_testing import SharedMongomockClient

from dask_broker import Broker
from dask_broker.cli import main
from dask_broker.config import resolve_catalog
from dask_broker.errors import (
    DaskBrokerError,
    RunNotFoundError,
    StoreURIError,
    UnknownReferenceError,
)
from dask_broker.redact import mask_uri
from dask_broker.stores import StoreRef, open_store
from dask_broker.stores.mongo import MongoStore

# Letters and digits only, so each is the same percent-encoded (once or twice) as
# plain: one substring test covers every form a URI can carry it in.
SECRET = "Zq7mainPw4"
ASSET_SECRET = "Kx9assetPw2"
SECRETS = (SECRET, ASSET_SECRET)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        text = str(text)
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} shows in: {text[:2000]}"


def error_text(err: BaseException) -> str:
    """All a person could read of an error: str, repr, and the printed traceback with
    its causes."""
    parts = [str(err), repr(err), "".join(traceback.format_exception(err))]
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts += [str(err), repr(err), str(getattr(err, "args", ""))]
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def graph_text(graph) -> str:
    """What a dashboard or a debugger can show of a graph: task names, task reprs and
    the reprs of every task's arguments (which dask's Task repr shortens)."""
    parts = [str(list(graph.keys())), str(dict(graph))]

    def walk(obj, depth=0):
        parts.append(repr(obj))
        if depth > 4:
            return
        for arg in (*getattr(obj, "args", ()), *getattr(obj, "kwargs", {}).values()):
            walk(arg, depth + 1)
        if isinstance(obj, (tuple, list)):
            for item in obj:
                walk(item, depth + 1)

    for task in dict(graph).values():
        walk(task)
    return "\n".join(parts)


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_uri(host: str, db: str = "mds", *, assets: bool = True, query: str = "") -> str:
    """A store URI with a password, and an asset registry URI with another one,
    percent-encoded in its ``asset_registry_uri`` option."""
    uri = f"mongodb://alice:{SECRET}@{host}/{db}"
    options = [query] if query else []
    if assets:
        asset = f"mongodb://bob:{ASSET_SECRET}@{host}/assets"
        options.append(f"asset_registry_uri={quote(asset, safe='')}")
    return uri + ("?" + "&".join(options) if options else "")


@pytest.fixture(autouse=True)
def _nothing_shows_the_secret(caplog, capsys, recwarn):
    """Every test: no log record (dask_broker's and root's, at DEBUG), no printed
    output and no warning of the test names a password."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="dask_broker")
    yield
    for record in caplog.records:
        assert_no_secret(record.getMessage(), record.exc_text or "",
                         "".join(traceback.format_exception(*record.exc_info))
                         if record.exc_info else "")
    out, err = capsys.readouterr()
    assert_no_secret(out, err)
    assert_no_secret(*(str(w.message) for w in recwarn))


@pytest.fixture
def mock_host() -> str:
    return f"mock-{uuid.uuid4().hex[:12]}:27017"


@pytest.fixture
def secret_db(mock_host, make_run, insert, tmp_path):
    """A Broker on a mongomock store whose URIs carry passwords, holding one run
    (5 primary events with an external 4x5 image field in .npy files, a baseline stream)."""
    for i in range(5):
        np.save(tmp_path / f"images.npy_{i}.npy", np.full((4, 5), float(i)))
    run = make_run(metadata={"scan_id": 1, "plan_name": "scan"})
    store = MongoStore(secret_uri(mock_host), mongo_client_class=SharedMongomockClient)
    db = Broker(store, root_map={run.resources[0]["root"]: str(tmp_path)})
    insert(db, run)
    yield db, run
    store.close()


# ------------------------------------------------------------------ mask_uri
@pytest.mark.parametrize("text, kept", [
    (f"mongodb://alice:{SECRET}@h1:27017,h2:27018/mds?replicaSet=rs0",
     "mongodb://alice:***@h1:27017,h2:27018/mds?replicaSet=rs0"),
    (f"mongodb+srv://alice:{SECRET}@cluster0.example.net/mds",
     "mongodb+srv://alice:***@cluster0.example.net/mds"),
    (f"postgresql://alice:{SECRET}@db.example.org:5432/catalog",
     "postgresql://alice:***@db.example.org:5432/catalog"),
    (f"postgresql+psycopg://alice:{SECRET}@db/catalog?sslmode=require",
     "postgresql+psycopg://alice:***@db/catalog?sslmode=require"),
    # the asset registry's URI, percent-encoded inside the main one
    ("mongodb://h/mds?asset_registry_uri="
     + quote(f"mongodb://bob:{ASSET_SECRET}@h2/assets?authSource=admin", safe=""),
     "mongodb://h/mds?asset_registry_uri=mongodb%3A%2F%2Fbob%3A***%40h2%2Fassets"),
    # passwords given as query options
    (f"postgresql://db/catalog?user=alice&password={SECRET}&sslmode=require",
     "postgresql://db/catalog?user=alice&password=***&sslmode=require"),
    (f"mongodb://h/mds?tls=true&tlsCertificateKeyFilePassword={SECRET}",
     "mongodb://h/mds?tls=true&tlsCertificateKeyFilePassword=***"),
    (f"mongodb://h/mds?authMechanism=MONGODB-AWS&authMechanismProperties="
     f"AWS_SESSION_TOKEN:{SECRET},SERVICE_NAME:mongo",
     "authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:mongo"),
    (f"host=db user=alice password={SECRET} dbname=catalog",
     "host=db user=alice password=*** dbname=catalog"),
    # passwords that should have been escaped: masked all the same
    (f"mongodb://alice:{SECRET}@x@h/mds", "mongodb://alice:***@h/mds"),
    (f"mongodb://alice:{SECRET}/x@h/mds", "mongodb://alice:***@h/mds"),
    # a message with two URIs in quotes
    (f"'mongodb://a:{SECRET}@h/mds' names 'mongodb://b:{ASSET_SECRET}@h/assets', not x",
     "'mongodb://a:***@h/mds' names 'mongodb://b:***@h/assets', not x"),
])
def test_mask_uri_hides_passwords_and_keeps_the_rest(text, kept):
    masked = mask_uri(text)
    assert_no_secret(masked)
    assert kept in masked


@pytest.mark.parametrize("text", [
    "mongodb://alice@h:27017/mds?authSource=admin",
    "mongodb://h1,h2/mds?replicaSet=rs0&serverSelectionTimeoutMS=200",
    "sqlite:////data/catalog.db?synchronous=normal",
    "no run with uid 'abc' in sqlite:////tmp/x.db",
])
def test_mask_uri_leaves_uris_without_a_password_alone(text):
    assert mask_uri(text) == text


# ------------------------------------------------------------------ reprs
def test_reprs_and_strs_hide_the_passwords(secret_db):
    db, run = secret_db
    h = db[run.uid]
    es = db.event_source
    store = db.store
    objects = [db, h, es, store, store.ref, StoreRef(store.uri), store._main, store._assets,
               resolve_catalog(store.uri)]
    for obj in objects:
        assert_no_secret(repr(obj), str(obj))
    # what is shown still says where the data is
    assert "alice:***@mock-" in repr(db)
    assert repr(db) == f"Broker({store.display_uri!r})"
    assert "alice:***@mock-" in repr(store.ref)
    assert_no_secret(store.display_uri, db.display_uri)
    # the real URI is kept for connections
    assert SECRET in store.uri and ASSET_SECRET in store.uri
    assert ASSET_SECRET in store.asset_registry_uri


def test_the_recipe_a_worker_gets_keeps_the_real_uri(secret_db):
    db, run = secret_db
    df = db[run.uid].table(fields=["x", "n"])
    graph = dict(df.__dask_graph__())
    blob = pickle.dumps(graph)
    assert SECRET.encode() in blob  # the worker connects with the real URI ...
    copy = pickle.loads(pickle.dumps(db.store.ref))
    assert copy.uri == db.store.uri and copy == db.store.ref
    assert copy.open() is open_store(db.store.uri, **dict(db.store.ref.options))
    # ... and the table it reads is the run's
    frame = df.compute(scheduler="sync")
    assert list(frame["x"]) == [e["data"]["x"] for e in run.events["primary"]]


def test_table_reprs_task_names_and_graph_hide_the_passwords(secret_db):
    db, run = secret_db
    h = db[run.uid]
    for df in (h.table(), h.table(fill=True), h.table("baseline", timestamps=True)):
        graph = df.__dask_graph__()
        shown = [repr(df), str(df), repr(df.expr), str(list(df.dask.keys())),
                 graph_text(graph), repr(graph), str(df.__dask_keys__())]
        assert_no_secret(*shown)
        assert "alice:***@mock-" in graph_text(graph)  # the specs show where they read


def test_xarray_reprs_and_graph_hide_the_passwords(secret_db):
    db, run = secret_db
    ds = db[run.uid].to_xarray()
    assert "img" in ds and "x" in ds
    shown = [repr(ds), str(ds), ds._repr_html_()]
    for name, var in ds.variables.items():
        shown += [repr(var), repr(var.data)]
        graph = getattr(var.data, "__dask_graph__", lambda: None)()
        if graph is not None:
            shown.append(graph_text(graph))
    assert_no_secret(*shown)
    assert "alice:***@mock-" in "".join(shown)  # the arrays' recipes show where they read


# ------------------------------------------------------------------ errors
def test_lookup_errors_hide_the_passwords(secret_db):
    db, run = secret_db
    for key in ("nope", 999, -50):
        with pytest.raises(RunNotFoundError) as info:
            db[key]
        assert_no_secret(error_text(info.value))
        assert "alice:***@mock-" in str(info.value)  # names the catalog
    with pytest.raises(RunNotFoundError) as info:
        list(db.event_source.docs("nope"))
    assert_no_secret(error_text(info.value))
    assert "nope" not in db and run.uid in db


def test_resource_errors_hide_the_passwords(secret_db):
    db, _ = secret_db
    with pytest.raises(UnknownReferenceError) as info:
        db.update_resource("no-such-resource", root="/elsewhere")
    assert_no_secret(error_text(info.value))
    assert "no-such-resource" in str(info.value) and "alice:***@mock-" in str(info.value)
    with pytest.raises(UnknownReferenceError) as info:
        db.resource_history("no-such-resource")
    assert_no_secret(error_text(info.value))
    from dask_broker.files import file_list

    with pytest.raises(UnknownReferenceError) as info:
        file_list(db, "no-such-resource")
    assert_no_secret(error_text(info.value))
    assert "alice:***@mock-" in str(info.value)


@pytest.mark.parametrize("uri, words", [
    (f"mongodb://alice:{SECRET}@host:27017/", "names no database"),
    (f"mongodb://alice:{SECRET}@/mds", "names no host"),
    (f"mongodb://alice:{SECRET}@host/a.b", "contains '.'"),
    (f"mongodb://alice:{SECRET}@host:notaport/mds", "is not valid"),
    (f"mongodb://alice:{SECRET}:x@host/mds", "is not valid"),
    (f"mongodb://alice:{SECRET}@x@host/mds", "is not valid"),
    (f"mongodb://alice:{SECRET}@host/mds?serverSelectionTimeoutMS=soon", "give milliseconds"),
    ("mongodb://host/mds?asset_registry_uri="
     + quote(f"mongodb://bob:{ASSET_SECRET}@host/", safe=""), "names no database"),
    ("mongodb://host/mds?asset_registry_uri=" + quote(
        f"mongodb://bob:{ASSET_SECRET}@host/assets?asset_registry_uri=x", safe=""),
     "names an asset registry itself"),
    (f"postgresql://alice:{SECRET}@host/catalog",
     "cannot connect to the PostgreSQL server at host:5432"),
    (f"postgresql://alice:{SECRET}@host:notaport/catalog", "not a valid PostgreSQL URI"),
    (f"mongodbx://alice:{SECRET}@host/mds", "no store for the URI"),
])
def test_uri_errors_hide_the_passwords(uri, words):
    with pytest.raises(StoreURIError) as info:
        Broker.from_uri(uri, **({} if "no store" in words or uri.startswith("postgres") else {
            "mongo_client_class": SharedMongomockClient}))
    assert words in str(info.value)
    assert_no_secret(error_text(info.value))


def test_conflicting_asset_registry_uris_hide_the_passwords(mock_host):
    with pytest.raises(StoreURIError) as info:
        MongoStore(secret_uri(mock_host),
                   asset_registry_uri=f"mongodb://carol:{SECRET}@elsewhere/assets",
                   mongo_client_class=SharedMongomockClient)
    assert "give one" in str(info.value)
    assert_no_secret(error_text(info.value))


def test_unreachable_server_errors_hide_the_passwords(caplog):
    uri = secret_uri(f"127.0.0.1:{free_port()}", query="serverSelectionTimeoutMS=150")
    db = Broker.from_uri(uri)  # connects lazily
    assert_no_secret(repr(db))
    for action in (len, lambda db: db[-1], lambda db: db.update_resource("r", root="/x"),
                   lambda db: db.insert("start", {"uid": "u", "time": 1.0})):
        with pytest.raises(StoreURIError) as info:
            action(db)
        assert "cannot reach the MongoDB server at 127.0.0.1" in str(info.value)
        assert_no_secret(error_text(info.value))
    db.store.close()
    # pymongo logged its attempts (at DEBUG), which the autouse fixture checks
    assert any(r.name.startswith("pymongo") for r in caplog.records)


@pytest.mark.mongo
def test_authentication_errors_hide_the_passwords(mongo_server):
    """A server that does not know the user: the error (whatever the server makes of
    the credentials) never shows them."""
    hosts = mongo_server.netloc.rpartition("@")[2]  # (an external server's own user dropped)
    uri = secret_uri(hosts, f"dbtest_{uuid.uuid4().hex[:12]}",
                     query="serverSelectionTimeoutMS=2000")
    store = MongoStore.from_uri(uri)
    db = Broker(store)
    try:
        for action in (len, lambda db: db[-1], lambda db: db.insert("start", {"uid": "u", "time": 1.0})):
            with pytest.raises(StoreURIError) as info:
                action(db)
            assert_no_secret(error_text(info.value))
            assert "check the user and password in the URI" in str(info.value)
            assert hosts in str(info.value)
    finally:
        store.close()


# ------------------------------------------------------------------ CLI
@pytest.fixture
def cli_secret_db(secret_db, monkeypatch, tmp_path):
    """``secret_db``, reachable by the CLI (whose stores use pymongo.MongoClient)."""
    import pymongo

    monkeypatch.setattr(pymongo, "MongoClient", SharedMongomockClient)
    monkeypatch.delenv("DASK_BROKER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return secret_db


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert_no_secret(out, err)
    return code, out, err


def test_cli_output_hides_the_passwords(cli_secret_db, capsys, tmp_path):
    db, run = cli_secret_db
    uri = db.store.uri
    code, out, _ = run_cli(capsys, "ls", uri)
    assert code == 0 and run.uid[:8] in out and "scan" in out
    code, out, _ = run_cli(capsys, "export", uri, run.uid, tmp_path / "t.csv", "--no-progress")
    assert code == 0 and "wrote 5 row(s)" in out and (tmp_path / "t.csv").is_file()
    code, out, _ = run_cli(capsys, "files", "list", uri, run.uid)
    assert code == 0 and "images.npy" in out
    # a named catalog whose configured URI holds the passwords
    config = tmp_path / "xdg" / "dask_broker" / "catalogs.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[catalogs.csx]\nuri = "{uri}"\n')
    code, out, _ = run_cli(capsys, "ls", "csx")
    assert code == 0 and run.uid[:8] in out


@pytest.mark.parametrize("argv, words", [
    (["ls", "{uri}", "--query", '{"scan_id": {"$bogus": 1}}'], "$bogus"),
    (["export", "{uri}", "nope", "{out}"], "no run with uid or uid prefix 'nope' in mongodb://"),
    (["export", "{uri}", "999", "{out}"], "'999'"),
    (["files", "list", "{uri}", "nope"], "alice:***@mock-"),
    (["ls", f"mongodb://alice:{SECRET}@host/a.b"], "contains '.'"),
    (["ls", f"mongodb://alice:{SECRET}:x@host/mds"], "is not valid"),
    (["ls", f"postgresql://alice:{SECRET}@host/catalog"],
     "cannot connect to the PostgreSQL server at host:5432"),
])
def test_cli_errors_hide_the_passwords(cli_secret_db, capsys, tmp_path, argv, words):
    db, _ = cli_secret_db
    argv = [a.replace("{uri}", db.store.uri).replace("{out}", str(tmp_path / "t.csv"))
            for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and err.startswith("dask-broker: error:"), err
    assert words in err


def test_cli_unreachable_server_error_hides_the_passwords(capsys):
    uri = secret_uri(f"127.0.0.1:{free_port()}", query="serverSelectionTimeoutMS=150")
    code, _, err = run_cli(capsys, "ls", uri)
    assert code == 1 and "cannot reach the MongoDB server at 127.0.0.1" in err
    assert "alice:***@127.0.0.1" in err


def test_dask_broker_errors_are_still_dask_broker_errors(secret_db):
    """Masking changes what is shown, not what is raised."""
    db, _ = secret_db
    with pytest.raises(DaskBrokerError):
        db["nope"]
    with pytest.raises(KeyError):
        db["nope"]
