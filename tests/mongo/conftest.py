"""Fixtures for the MongoDB store: a MongoDB wire-protocol server for the session.

By default the pure-Python server nx-27017 is started on a free port (in-memory
databases) and stopped at the end of the session.  Set ``DASK_BROKER_TEST_MONGO_URI``
(e.g. ``mongodb://localhost:27017``) to run the tests against that server instead;
each test uses its own database there, dropped afterwards.

Known gaps of nx-27017 (tests that need them are skipped on it with the reason,
and run in-process against mongomock as well): it rejects NaN/Inf and Decimal128
values, and it does not create text indexes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
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
            pytest.fail(f"{ENV_URI}={external!r}: no MongoDB server answers there")
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
