"""Shared fixtures: a throwaway catalog and runs composed with event_model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from dask_broker import Broker
from dask_broker.testing import RunBuilder

#: Fixtures of the stream_resource recordings (tests/conftest_streamdata.py).
pytest_plugins = ["conftest_streamdata"]

PRIMARY_KEYS = {
    "x": {"source": "sim:x", "dtype": "number", "shape": [], "units": "mm"},
    "n": {"source": "sim:n", "dtype": "integer", "shape": []},
    "flag": {"source": "sim:flag", "dtype": "boolean", "shape": []},
    "label": {"source": "sim:label", "dtype": "string", "shape": []},
}
EXTERNAL_KEY = {"img": {"source": "sim:img", "dtype": "array", "shape": [4, 5],
                        "external": "FILESTORE:"}}
BASELINE_KEYS = {
    "temp": {"source": "sim:temp", "dtype": "number", "shape": []},
    "motor_setpoint": {"source": "sim:sp", "dtype": "number", "shape": []},
}

_T0 = 1_700_000_000.0
#: Where the (never written) external files of composed runs would be.
MISSING_ROOT = "/nonexistent-dask-broker-test-data"
_run_counter = itertools.count()


def primary_value(key: str, i: int):
    """The value of a primary field at point ``i`` (1-based)."""
    return {"x": 0.25 * i - 1.0, "n": 3 * i - 4, "flag": i % 2 == 0, "label": f"pt{i}"}[key]


@dataclass
class RunDocs:
    """The documents of one run, in the order a RunEngine would emit them."""

    docs: list[tuple[str, dict]]
    start: dict
    stop: dict | None
    descriptors: dict[str, dict]  # stream name -> descriptor
    events: dict[str, list[dict]]  # stream name -> events, in seq order
    resources: list[dict] = field(default_factory=list)
    datum: list[dict] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return self.start["uid"]

    def of(self, name: str) -> list[dict]:
        return [doc for n, doc in self.docs if n == name]

    def external_keys(self, stream: str) -> list[str]:
        keys = self.descriptors[stream]["data_keys"]
        return [k for k, v in keys.items() if v.get("external")]

    def expected_event(self, event: dict, fields=None) -> dict:
        """An event as read back: ``filled`` is ``{key: False}`` for its external keys
        (as databroker's mongo_normalized gives it), ``fields`` projects data."""
        desc = next(d for d in self.descriptors.values() if d["uid"] == event["descriptor"])
        keys = [k for k in desc["data_keys"] if fields is None or k in fields]
        return {
            "uid": event["uid"], "descriptor": event["descriptor"],
            "seq_num": event["seq_num"], "time": event["time"],
            "data": {k: event["data"][k] for k in keys},
            "timestamps": {k: event["timestamps"][k] for k in keys},
            "filled": {k: False for k in keys if desc["data_keys"][k].get("external")},
        }


def build_run(
    *,
    n_primary: int = 5,
    n_baseline: int = 2,
    external: bool = True,
    metadata: dict | None = None,
    time: float | None = None,
    stop: bool = True,
    uid: str | None = None,
) -> RunDocs:
    """Compose a run: a primary stream of scalar fields (number, integer, boolean,
    string) and, with ``external``, an image field stored as a resource + datum;
    a baseline stream read at the start and end.  Times are explicit and
    increasing, so the expected order of documents is known."""
    if time is None:
        time = _T0 + 1000.0 * next(_run_counter)
    run = RunBuilder(uid=uid, time=time, metadata=metadata, step=0.01)
    tick, bundle = run.tick, run.bundle
    docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
    descriptors, events = {}, {"primary": [], "baseline": []}
    resources, datum = [], []

    primary_keys = {**PRIMARY_KEYS, **(EXTERNAL_KEY if external else {})}
    primary = bundle.compose_descriptor(name="primary", data_keys=primary_keys, time=tick())
    docs.append(("descriptor", primary.descriptor_doc))
    descriptors["primary"] = primary.descriptor_doc
    baseline = None
    if n_baseline:
        baseline = bundle.compose_descriptor(name="baseline", data_keys=BASELINE_KEYS, time=tick())
        docs.append(("descriptor", baseline.descriptor_doc))
        descriptors["baseline"] = baseline.descriptor_doc

    def baseline_event(j: int) -> None:
        t = tick()
        ev = baseline.compose_event(
            data={"temp": 290.0 + j, "motor_setpoint": float(j)},
            timestamps={"temp": t, "motor_setpoint": t}, time=t)
        docs.append(("event", ev))
        events["baseline"].append(ev)

    if n_baseline:
        baseline_event(0)
    res = None
    if external:
        res = bundle.compose_resource(spec="NPY_SEQ", root=MISSING_ROOT, resource_path="images.npy",
                                      resource_kwargs={})
        docs.append(("resource", res.resource_doc))
        resources.append(res.resource_doc)
    for i in range(1, n_primary + 1):
        data = {k: primary_value(k, i) for k in PRIMARY_KEYS}
        if external:
            d = res.compose_datum(datum_kwargs={"index": i - 1})
            docs.append(("datum", d))
            datum.append(d)
            data["img"] = d["datum_id"]
        t = tick()
        ev = primary.compose_event(data=data, timestamps={k: t - 0.001 for k in data}, time=t)
        docs.append(("event", ev))
        events["primary"].append(ev)
    for j in range(1, n_baseline):
        baseline_event(j)
    stop_doc = None
    if stop:
        stop_doc = bundle.compose_stop(time=tick())
        docs.append(("stop", stop_doc))
    return RunDocs(docs=docs, start=bundle.start_doc, stop=stop_doc, descriptors=descriptors,
                   events=events, resources=resources, datum=datum)


def insert_run(db: Broker, run: RunDocs) -> RunDocs:
    for name, doc in run.docs:
        db.insert(name, doc)
    return run


def _plain(obj):
    """Numpy values to plain Python, so dumps compare with ==."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def dump_catalog(db: Broker) -> dict:
    """Everything readable from a catalog: every run's documents, and event counts."""
    out = {"runs": [], "counts": {}}
    for header in db:
        out["runs"].append([(name, _plain(doc)) for name, doc in header.docs()])
        descs = [d["uid"] for d in header.descriptors]
        out["counts"].update(db.store.event_counts(descs))
        for r in header.resources():
            out.setdefault("datum", {})[r["uid"]] = list(db.store.datum_of_resource(r["uid"]))
    return out


@pytest.fixture(autouse=True)
def _no_fill_retries():
    """A missing file is an error at once in tests (dask_broker retries by default for
    files that appear late on shared file systems); tests of retrying set their own."""
    import dask

    with dask.config.set({"dask_broker.fill-retry-intervals": []}):
        yield


@pytest.fixture
def db() -> Broker:
    """A fresh, empty, temporary catalog."""
    return Broker.temp()


@pytest.fixture
def make_run():
    """``make_run(**kw) -> RunDocs``; see :func:`build_run`."""
    return build_run


@pytest.fixture
def insert():
    """``insert(db, run)`` inserts every document of a RunDocs, in order."""
    return insert_run


@pytest.fixture
def dump():
    """``dump(db)``: every run's documents and every event count (compare before/after)."""
    return dump_catalog


@pytest.fixture
def rejects(dump):
    """``rejects(db, name, doc, exc, builtin, doc_type, uid)``: the insert raises ``exc``
    (a DaskBrokerError and a ``builtin``), its message names ``doc_type`` and
    ``uid``, and nothing changed -- in this Broker and in one newly opened."""
    from dask_broker import DaskBrokerError

    def check(db, name, doc, exc, builtin, doc_type, uid):
        before = dump(db)
        with pytest.raises(exc) as info:
            db.insert(name, doc)
        err = info.value
        assert isinstance(err, DaskBrokerError)
        assert isinstance(err, builtin)
        message = str(err)
        assert doc_type in message, message
        assert uid in message, message
        assert dump(db) == before
        assert dump(Broker.from_uri(db.uri)) == before
        return err

    return check


@pytest.fixture
def run_in_db(db, make_run):
    """A stopped run with primary (5 events, external img) and baseline (2 events) streams."""
    run = make_run(metadata={"scan_id": 1, "plan_name": "scan", "sample": {"name": "Si"}})
    return insert_run(db, run)


# ------------------------------------------------------------------ MongoDB server
# A MongoDB wire-protocol server for the session: nx-27017 (pure Python) started on a
# free port with in-memory databases, or the server named by DASK_BROKER_TEST_MONGO_URI
# (e.g. a real mongod); each test gets its own database there, dropped afterwards.
# Known gaps of nx-27017 (tests that need them are skipped on it with the reason, and
# run in-process against mongomock as well): it rejects NaN/Inf and Decimal128 values
# and does not create text indexes.
import os
import socket
import subprocess
import sys
import time
import uuid

from _mongo_testing import SharedMongomockClient, mongomock_uri

from dask_broker.stores.mongo import MongoStore

ENV_URI = "DASK_BROKER_TEST_MONGO_URI"
_START_TIMEOUT_S = 60


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires_real_mongod(reason): the test needs a real mongod (set "
        f"{ENV_URI}); on nx-27017 it is skipped with the reason")


@dataclass
class MongoServer:
    """The session's server: ``uri(dbname)`` names a database on it."""

    scheme: str
    netloc: str
    query: str
    kind: str  # "nx-27017" or "external"

    def uri(self, dbname: str) -> str:
        return f"{self.scheme}://{self.netloc}/{dbname}" + (f"?{self.query}" if self.query else "")

    @property
    def is_real_mongod(self) -> bool:
        return self.kind == "external"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(uri: str, timeout_ms: int = 500) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    """The MongoDB wire-protocol server of the session (nx-27017 unless the env var is set)."""
    external = os.environ.get(ENV_URI)
    if external:
        scheme, _, rest = external.partition("://")
        netloc, _, tail = rest.partition("/")
        netloc, _, query = netloc.partition("?") if "?" in netloc else (netloc, "", "")
        query = query or tail.partition("?")[2]
        server = MongoServer(scheme, netloc, query, "external")
        if not _ping(server.uri("admin"), 5000):
            from dask_broker.redact import mask_uri

            pytest.fail(f"{ENV_URI}={mask_uri(external)!r}: no MongoDB server answers there")
        yield server
        return
    folder = tmp_path_factory.mktemp("nx27017")
    port = _free_port()
    log = folder / "server.log"
    with open(folder / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nx_27017.nx_27017", "--db", "memory", "--host", "127.0.0.1",
             "-p", str(port), "--log-file", str(log), "--pid-file", str(folder / "server.pid")],
            stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    server = MongoServer("mongodb", f"127.0.0.1:{port}", "", "nx-27017")
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _ping(server.uri("admin")):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (folder / "stdout.txt").read_text(errors="replace")[-2000:]
                pytest.fail(f"nx-27017 did not start on port {port} (exit {proc.poll()}):\n{text}")
            time.sleep(0.1)
        yield server
    finally:
        from dask_broker.stores.mongo.uri import close_clients

        close_clients()  # while the server still answers
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def new_mongo_uri(mongo_server):
    """``new_mongo_uri()``: the URI of a new database on the server (dropped at teardown)."""
    from pymongo import MongoClient

    names = []

    def make() -> str:
        name = f"dbtest_{uuid.uuid4().hex[:12]}"
        names.append(name)
        return mongo_server.uri(name)

    yield make
    if names:
        client = MongoClient(mongo_server.uri("admin"), serverSelectionTimeoutMS=5000)
        try:
            for name in names:
                client.drop_database(name)
        finally:
            client.close()


@pytest.fixture
def mongo_uri(new_mongo_uri):
    """The URI of a fresh database on the session's server."""
    return new_mongo_uri()


@pytest.fixture
def mongo_store(mongo_uri):
    """A MongoStore on a fresh database of the session's server."""
    store = MongoStore.from_uri(mongo_uri)
    yield store
    store.close()


@pytest.fixture
def raw_db(mongo_store):
    """A plain pymongo Database on the same database as ``mongo_store``."""
    from pymongo import MongoClient

    client = MongoClient(mongo_store.uri, serverSelectionTimeoutMS=5000)
    yield client[mongo_store.database_name]
    client.close()


@pytest.fixture(autouse=True)
def _requires_real_mongod(request):
    marker = request.node.get_closest_marker("requires_real_mongod")
    if marker is None:
        return
    server = request.getfixturevalue("mongo_server")
    if not server.is_real_mongod:
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        pytest.skip(f"needs a real mongod (set {ENV_URI}): {reason}")


# ---------------------------------------------------------------- mongomock
@pytest.fixture
def mock_store():
    """A MongoStore over an in-process mongomock database (no server)."""
    store = MongoStore(mongomock_uri(), mongo_client_class=SharedMongomockClient)
    yield store
    store.close()


# ------------------------------------------------------------------ PostgreSQL server
# One PostgreSQL server for the session, started from pgserver in a temporary folder
# (stopped at the end), or the database named by DASK_BROKER_TEST_POSTGRES_URI; each
# test gets a schema of its own there (its URI sets search_path), dropped afterwards.
PG_ENV_URI = "DASK_BROKER_TEST_POSTGRES_URI"


@dataclass
class PostgresServer:
    """The session's database: ``uri(schema)`` names a catalog in a schema of it."""

    base: str  # a URI of the test database
    kind: str  # "pgserver" or "external"

    def uri(self, schema: str) -> str:
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"

    def connect(self):
        import psycopg

        return psycopg.connect(self.base, autocommit=True, connect_timeout=10)

    def new_schema(self) -> str:
        """Create a schema for a catalog; its name (see :meth:`uri`)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name

    def drop_schemas(self, names) -> None:
        """End the sessions of these schemas' catalogs (in any process), drop the schemas."""
        from dask_broker.stores import _cache

        for key in [k for k in _cache if any(n in k[0] for n in names)]:
            _cache.pop(key).close()
        with self.connect() as conn:
            for name in names:
                # every session of a test's catalog carries its schema's name
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = %s AND pid <> pg_backend_pid()", (name,))
                conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture(scope="session")
def postgres_server():
    """The PostgreSQL server of the session (pgserver unless the env var is set)."""
    external = os.environ.get(PG_ENV_URI)
    if external:
        server = PostgresServer(external, "external")
        try:
            server.connect().close()
        except Exception as err:  # noqa: BLE001
            from dask_broker.redact import mask_uri

            pytest.fail(f"{PG_ENV_URI}={mask_uri(external)!r}: cannot connect ({err})")
        yield server
        return
    import shutil
    import tempfile
    import warnings

    why = "pip install 'dask_broker[test]' (psycopg, pgserver)"
    psycopg = pytest.importorskip("psycopg", reason=why)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        pgserver = pytest.importorskip("pgserver", reason=why)
        # Not under pytest's temporary folder: run as root, pgserver runs the server as
        # another user and opens the folders above to it, which pytest undoes (0700).
        folder = tempfile.mkdtemp(prefix="dask-broker-pgserver-")
        try:
            srv = pgserver.get_server(os.path.join(folder, "pgdata"), cleanup_mode="stop")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    try:
        with psycopg.connect(srv.get_uri(), autocommit=True) as conn:
            # A throwaway server: durability against a crash of the machine is not tested
            # (a writer process killed is; the server keeps what it acknowledged).
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {setting} = off")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE DATABASE dask_broker_test")
        yield PostgresServer(srv.get_uri("dask_broker_test"), "pgserver")
    finally:
        from dask_broker.stores import _cache

        for key in [k for k in _cache if k[0].startswith("postgres")]:
            _cache.pop(key).close()
        srv.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def new_postgres_uri(postgres_server):
    """``new_postgres_uri()``: the URI of a new, empty catalog (a schema dropped at teardown)."""
    names = []

    def make() -> str:
        names.append(postgres_server.new_schema())
        return postgres_server.uri(names[-1])

    yield make
    if names:
        postgres_server.drop_schemas(names)


@pytest.fixture
def postgres_uri(new_postgres_uri):
    """The URI of a new, empty PostgreSQL catalog."""
    return new_postgres_uri()


# ------------------------------------------------------------------ any store
STORES = ["sqlite", pytest.param("mongo", marks=pytest.mark.mongo),
          pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def any_db(request):
    """A new empty Broker over each store backend: embedded SQLite, MongoDB, PostgreSQL."""
    if request.param == "sqlite":
        return Broker.temp()
    if request.param == "postgres":
        return Broker.from_uri(request.getfixturevalue("postgres_uri"))
    return Broker(MongoStore.from_uri(request.getfixturevalue("mongo_uri")))


@pytest.fixture(params=STORES)
def any_uri(request, tmp_path):
    """``any_uri()``: the URI of a new, empty catalog on each store backend in turn --
    ``sqlite:///<tmp_path>/catalogN.db``, a database on the session's MongoDB server, a
    schema on its PostgreSQL server -- for tests that open catalogs by URI (the CLI)."""
    if request.param == "mongo":
        return request.getfixturevalue("new_mongo_uri")
    if request.param == "postgres":
        return request.getfixturevalue("new_postgres_uri")
    counter = itertools.count()
    return lambda: f"sqlite:///{tmp_path}/catalog{next(counter)}.db"


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Replace entry-point discovery (handlers and readers) by a dict group -> list of
    EntryPoint; count calls."""
    from dask_broker import plugins

    groups: dict = {}
    calls: list[str] = []

    def entry_points(group):
        calls.append(group)
        return groups.get(group, [])

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    return groups, calls
