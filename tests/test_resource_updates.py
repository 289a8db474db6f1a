"""Resource updates through EventSource / Broker, and reading after an update.

Store-level behaviour is in the shipped conformance suite
(:class:`dask_broker.testing.StoreConformance`).
"""

from __future__ import annotations

import shutil
import sqlite3

import dask
import numpy as np
import pytest

from dask_broker import Broker, InvalidArgumentError, UnknownReferenceError
from dask_broker.errors import MissingFileError
from dask_broker.handlers.testing import make_external_run
from dask_broker.stores.base import Store
from dask_broker.stores.sqlite import SQLiteStore


def _external_run(db, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ext = make_external_run(data, n_files=2, points_per_file=2)
    for name, doc in ext.documents:
        db.insert(name, doc)
    return db, db[-1], ext


@pytest.fixture
def run(any_db, tmp_path):
    """``(db, header, ext)``: a run with resources of AD_HDF5 and NPY files, on each store."""
    return _external_run(any_db, tmp_path)


@pytest.fixture
def sqlite_run(tmp_path):
    """The same run in a SQLite catalog file."""
    return _external_run(Broker.from_uri(f"sqlite:///{tmp_path}/catalog.db"), tmp_path)


def _frames(df):
    return {c: [np.asarray(v) for v in df[c]] for c in ("img", "spectrum")}


def _assert_same_frames(a, b):
    for col in a:
        assert len(a[col]) == len(b[col])
        for x, y in zip(a[col], b[col], strict=True):
            np.testing.assert_array_equal(x, y)


def test_update_and_history(run):
    db, h, _ = run
    res = h.resources()[0]
    new = db.update_resource(res["uid"], root="/elsewhere", resource_kwargs={"frame_per_point": 1})
    assert new == {**res, "root": "/elsewhere", "resource_kwargs": {"frame_per_point": 1}}
    assert db.event_source.resources(h)[0] == new
    new2 = db.event_source.update_resource(res["uid"], root=res["root"], cmd="undo",
                                           cmd_kwargs={"why": "test"})
    history = db.resource_history(res["uid"])
    assert [r["cmd"] for r in history] == ["update_resource", "undo"]
    assert history[0]["cmd_kwargs"] == {"root": "/elsewhere",
                                        "resource_kwargs": {"frame_per_point": 1}}
    assert history[0]["old"] == res and history[0]["new"] == new
    assert history[1]["old"] == new and history[1]["new"] == new2
    assert history[1]["cmd_kwargs"] == {"why": "test"}
    assert db.resource_history(h.resources()[1]["uid"]) == []


@pytest.mark.parametrize("changes, match", [
    ({"uid": "x"}, "'uid'.*only root, resource_path, resource_kwargs, spec"),
    ({"run_start": "x"}, "'run_start'"),
    ({"path_semantics": "windows", "root": "/a"}, "'path_semantics'"),
    ({}, "no change"),
    ({"root": 3}, "root must be a str"),
    ({"resource_kwargs": [1]}, "resource_kwargs must be a dict"),
    ({"spec": ""}, "spec must be a non-empty str"),
])
def test_update_rejects_bad_changes(run, changes, match):
    db, h, _ = run
    res = h.resources()[0]
    with pytest.raises(InvalidArgumentError, match=match) as info:
        db.update_resource(res["uid"], **changes)
    assert isinstance(info.value, ValueError)
    assert db.store.get_resource(res["uid"]) == res
    assert db.resource_history(res["uid"]) == []


def test_unknown_resource(run):
    db, _, _ = run
    with pytest.raises(UnknownReferenceError, match="no-such-resource"):
        db.update_resource("no-such-resource", root="/x")
    with pytest.raises(KeyError):
        db.resource_history("no-such-resource")


def test_reading_after_update_uses_new_location(run, tmp_path):
    db, h, _ = run
    before_df = h.table(fill=True)
    before = _frames(before_df.compute())
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "data"), moved)
    with pytest.raises(MissingFileError):
        h.table(fill=True).compute()
    for res in h.resources():
        db.update_resource(res["uid"], root=str(moved))
    after_df = h.table(fill=True)
    # New resource roots give new task names: no cached result of the old location is reused.
    assert dask.base.tokenize(after_df) != dask.base.tokenize(before_df)
    assert h.table(fill=True)._name == after_df._name  # (names are deterministic)
    assert after_df._name != before_df._name
    _assert_same_frames(_frames(after_df.compute()), before)
    with h.fill_context() as fc:
        table = fc.fill_table(h.table().compute())
    _assert_same_frames(_frames(table), before)
    events = [doc for name, doc in h.event_source.docs(h, fill=True) if name == "event"]
    np.testing.assert_array_equal(events[0]["data"]["img"], before["img"][0])


def test_existing_catalog_without_history_table(tmp_path, sqlite_run):
    db, h, _ = sqlite_run
    path = db.store.path
    db.store.close()
    with sqlite3.connect(path) as conn:  # a catalog written before resource updates existed
        conn.execute("DROP TABLE resource_update")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")  # version 1
    conn.close()
    reopened = Broker.from_uri(f"sqlite:///{path}")
    res = reopened[-1].resources()[0]
    assert reopened.resource_history(res["uid"]) == []
    reopened.update_resource(res["uid"], root="/x")
    assert [r["new"]["root"] for r in reopened.resource_history(res["uid"])] == ["/x"]


def test_backend_without_updates_says_so():
    class Minimal(SQLiteStore):
        update_resource = Store.update_resource
        resource_history = Store.resource_history

    store = Minimal(SQLiteStore.temp().path)
    with pytest.raises(NotImplementedError, match="Minimal does not implement update_resource"):
        store.update_resource("x", {"root": "/"}, cmd="c", cmd_kwargs={})
    with pytest.raises(NotImplementedError, match="Minimal does not implement resource_history"):
        store.resource_history("x")


# ---------------------------------------------------------------- stream_resource documents
def _recorded(db, case, folder):
    from streamdata import record

    rec = record(case, folder)
    for name, doc in rec.docs:
        db.insert(name, doc)
    return rec, db[rec.uid]


def test_update_stream_resource_uri_and_history(any_db, tmp_path):
    rec, h = _recorded(any_db, "hdf5_handmade", tmp_path / "rec")
    sr = any_db.store.stream_resources(h.uid)[0]
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(tmp_path / "rec" / "a.h5"), moved / "a.h5")
    with pytest.raises(MissingFileError, match="a.h5"):
        h.table(fill=True).compute()
    new_uri = f"file://localhost{moved}/a.h5"
    new = any_db.update_resource(sr["uid"], uri=new_uri)
    assert new == {**sr, "uri": new_uri}
    assert any_db.store.get_stream_resource(sr["uid"]) == new
    got = np.stack(h.table(fill=True).compute()["img"].tolist())
    np.testing.assert_array_equal(got, rec.expected["primary"]["img"])
    (record,) = any_db.resource_history(sr["uid"])
    assert record["old"] == sr and record["new"] == new
    assert record["cmd"] == "update_resource" and record["cmd_kwargs"] == {"uri": new_uri}
    any_db.event_source.update_resource(sr["uid"], parameters={**sr["parameters"], "x": 1},
                                        cmd="tune", cmd_kwargs={"why": "test"})
    assert [r["cmd"] for r in any_db.event_source.resource_history(sr["uid"])] == \
        ["update_resource", "tune"]


@pytest.mark.parametrize("changes, match", [
    ({"data_key": "other"}, "'data_key' of stream_resource .*only uri, mimetype, parameters"),
    ({"uid": "x"}, "'uid'.*uid, run_start, data_key identify it"),
    ({"run_start": "x"}, "'run_start'"),
    ({"root": "/a"}, "'root'.*only uri, mimetype, parameters"),
    ({}, "no change"),
    ({"uri": 3}, "uri must be a non-empty str"),
    ({"uri": "http://host/a.h5"}, "scheme 'http'"),
    ({"uri": "relative/a.h5"}, "neither a file:// uri nor an absolute path"),
    ({"mimetype": ""}, "mimetype must be a non-empty str"),
    ({"parameters": [1]}, "parameters must be a dict"),
])
def test_update_stream_resource_rejects_bad_changes(any_db, tmp_path, changes, match):
    _, h = _recorded(any_db, "hdf5_handmade", tmp_path / "rec")
    sr = any_db.store.stream_resources(h.uid)[0]
    with pytest.raises(InvalidArgumentError, match=match) as info:
        any_db.update_resource(sr["uid"], **changes)
    assert sr["uid"] in str(info.value)
    assert any_db.store.get_stream_resource(sr["uid"]) == sr
    assert any_db.resource_history(sr["uid"]) == []


def test_update_legacy_stream_resource_takes_resource_keys(any_db, tmp_path):
    """A pre-1.21 stream_resource keeps its location in root/resource_path."""
    rec, h = _recorded(any_db, "legacy_sr", tmp_path / "rec")
    sr = any_db.store.stream_resources(h.uid)[0]
    with pytest.raises(InvalidArgumentError, match="pre-1.21.*only root, resource_path"):
        any_db.update_resource(sr["uid"], uri="file://localhost/x.h5")
    shutil.move(str(tmp_path / "rec"), tmp_path / "moved")
    for doc in any_db.store.stream_resources(h.uid):
        any_db.update_resource(doc["uid"], root=str(tmp_path / "moved"))
    got = np.stack(h.table(fill=True).compute()["img"].tolist())
    np.testing.assert_array_equal(got, rec.expected["primary"]["img"])


def test_unknown_stream_resource(any_db):
    with pytest.raises(UnknownReferenceError, match="no resource or stream_resource.*nope"):
        any_db.update_resource("nope", uri="file://localhost/a.h5")
    with pytest.raises(UnknownReferenceError, match="nope"):
        any_db.resource_history("nope")
