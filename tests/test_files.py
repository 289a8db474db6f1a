"""file_list / copy_files / move_files: results, crash safety at each step, dry runs, the CLI;
on each store (``any_uri``, ``any_db``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import dask_broker.cli as cli
from dask_broker import (
    Broker,
    DaskBrokerError,
    InvalidArgumentError,
    UnknownReferenceError,
    copy_files,
    file_list,
    move_files,
)
from dask_broker import files as files_module
from dask_broker.errors import HandlerError
from dask_broker.event_source import EventSource
from dask_broker.files import PARTIAL_SUFFIX, FilesReport
from dask_broker.fill import resource_full_path
from dask_broker.handlers.testing import make_external_run
from dask_broker.stores.base import Store
from dask_broker.stores.sqlite import SQLiteStore


# ---------------------------------------------------------------- helpers
class Setup:
    """A run whose 6 resources (AD_HDF5 and NPY) point at files under ``raw/``, in the
    catalog at ``uri``."""

    def __init__(self, tmp_path, uri: str):
        self.raw = tmp_path / "raw"
        self.archive = tmp_path / "archive"
        # Files in raw/2024/, resources rooted at raw/: resource_path "2024/<file>".
        (self.raw / "2024").mkdir(parents=True)
        self.ext = make_external_run(self.raw / "2024", root=str(self.raw), n_files=2,
                                     points_per_file=2)
        self.uri = uri
        self.db = Broker.from_uri(self.uri)
        for name, doc in self.ext.documents:
            self.db.insert(name, doc)
        self.h = self.db[-1]
        self.expected = frames(self.h)

    def resources(self) -> list[dict]:
        return self.db.event_source.resources(self.h)

    def new_path(self, old: str) -> str:
        return os.path.join(self.archive, os.path.relpath(old, self.raw))


def frames(h) -> dict[str, list[np.ndarray]]:
    df = h.table(fill=True).compute()
    return {c: [np.asarray(v) for v in df[c]] for c in ("img", "spectrum")}


def tree(*dirs) -> dict[str, str]:
    out = {}
    for d in dirs:
        for folder, _, names in os.walk(d):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def catalog_state(s: Setup):
    return [(r, s.db.resource_history(r["uid"])) for r in s.resources()]


def assert_consistent(s: Setup) -> None:
    """Nothing lost: every resource points at existing files and every datum reads as before."""
    for res in s.resources():
        assert os.path.isfile(resource_full_path(res)), res
        assert res["root"] in (str(s.raw), str(s.archive))
    got = frames(Broker.from_uri(s.uri)[-1])
    for col, arrays in s.expected.items():
        assert len(got[col]) == len(arrays)
        for a, b in zip(got[col], arrays, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not [p for p in tree(s.raw, s.archive) if p.endswith(PARTIAL_SUFFIX)]


def assert_moved(s: Setup, report: FilesReport) -> None:
    assert_consistent(s)
    for res in s.resources():
        assert res["root"] == str(s.archive)
        assert s.db.resource_history(res["uid"])[-1]["cmd"] in ("move_files", "copy_files")
    assert tree(s.raw) == {}
    assert sorted(tree(s.archive)) == sorted(s.new_path(f) for f in s.ext.files)
    assert isinstance(report, FilesReport)


@pytest.fixture
def s(tmp_path, any_uri) -> Setup:
    return Setup(tmp_path, any_uri())


@pytest.fixture
def s_sqlite(tmp_path) -> Setup:
    """The same, in a SQLite catalog file (for what needs its path)."""
    return Setup(tmp_path, f"sqlite:///{tmp_path}/catalog.db")


# ---------------------------------------------------------------- file_list
def test_file_list(s):
    assert file_list(s.db, s.h) == s.ext.files
    res = s.resources()
    assert file_list(s.db, res[0]["uid"]) == [s.ext.files[0]]
    assert file_list(s.db, [res[1]["uid"], res[0]["uid"], res[1]["uid"]]) == \
        [s.ext.files[1], s.ext.files[0]]
    assert file_list(s.db, [s.h]) == s.ext.files
    assert file_list(s.db.event_source, s.h) == s.ext.files
    with pytest.raises(UnknownReferenceError, match="nope"):
        file_list(s.db, "nope")
    with pytest.raises(InvalidArgumentError, match="Header"):
        file_list(s.db, [3])
    with pytest.raises(InvalidArgumentError, match="Header"):
        file_list(s.db, 3)


def test_handler_without_get_file_list(s):
    class NoList:
        def __init__(self, filename):
            self.filename = filename

        def __call__(self):
            return np.load(self.filename)

    s.db.register_handler("NPY", NoList)
    with pytest.raises(HandlerError, match="get_file_list"):
        file_list(s.db, s.h)
    with pytest.raises(HandlerError, match="get_file_list"):
        move_files(s.db, s.h, s.archive)
    assert not s.archive.exists()


def test_file_list_follows_root_map(s, tmp_path):
    os.rename(s.raw, tmp_path / "mounted")
    s.db.set_root_map({str(s.raw): str(tmp_path / "mounted")})
    assert file_list(s.db, s.h) == [f.replace(str(s.raw), str(tmp_path / "mounted"))
                                    for f in s.ext.files]


# ---------------------------------------------------------------- copy and move
def test_move_files(s):
    report = move_files(s.db, s.h, s.archive)
    assert_moved(s, report)
    assert [r.action for r in report.resources] == ["moved"] * len(s.ext.files)
    assert report.bytes == sum(os.path.getsize(s.new_path(f)) for f in s.ext.files)
    assert report.files == [(f, s.new_path(f)) for f in s.ext.files]
    assert [d for r in report.resources for d in r.deleted] == s.ext.files
    text = str(report)
    assert text.startswith(f"move_files to {str(s.archive)!r}: 6 resources, 6 files")
    assert "moved" in text and "AD_HDF5" in text and "NPY" in text
    assert "6 files" in repr(report)
    record = s.db.resource_history(s.resources()[0]["uid"])[0]
    assert record["old"]["root"] == str(s.raw) and record["new"]["root"] == str(s.archive)
    assert record["cmd"] == "move_files"
    assert record["cmd_kwargs"] == {"new_root": str(s.archive), "verify": True}
    assert record["new"]["resource_path"] == record["old"]["resource_path"]

    again = move_files(s.db, s.h, s.archive)  # idempotent
    assert [r.action for r in again.resources] == ["skipped"] * len(s.ext.files)
    assert all(len(s.db.resource_history(r["uid"])) == 1 for r in s.resources())
    assert_moved(s, again)


def test_copy_files_keeps_old_files(s):
    before = tree(s.raw)
    report = copy_files(s.db, s.h, s.archive, verify=False)
    assert [r.action for r in report.resources] == ["copied"] * len(s.ext.files)
    assert tree(s.raw) == before
    assert {s.new_path(p): h for p, h in before.items()} == tree(s.archive)
    for res in s.resources():
        assert res["root"] == str(s.archive)
        assert s.db.resource_history(res["uid"])[-1]["cmd"] == "copy_files"
    assert_consistent(s)
    assert [r.action for r in copy_files(s.db, s.h, s.archive).resources] == \
        ["skipped"] * len(s.ext.files)
    # A move to where the files were copied only deletes the old copies.
    report = move_files(s.db, s.h, s.archive)
    assert [r.action for r in report.resources] == ["cleaned"] * len(s.ext.files)
    assert tree(s.raw) == {}
    assert_consistent(s)


def test_move_one_resource_by_uid(s):
    res = s.resources()[0]
    report = move_files(s.db, res["uid"], s.archive)
    assert [r.uid for r in report.resources] == [res["uid"]]
    assert not os.path.exists(s.ext.files[0])
    assert os.path.exists(s.new_path(s.ext.files[0]))
    assert [r["root"] for r in s.resources()] == [str(s.archive)] + [str(s.raw)] * 5
    assert_consistent(s)


def test_identical_destination_is_accepted(s):
    os.makedirs(os.path.dirname(s.new_path(s.ext.files[0])))
    with open(s.ext.files[0], "rb") as src, open(s.new_path(s.ext.files[0]), "wb") as dst:
        dst.write(src.read())
    assert_moved(s, move_files(s.db, s.h, s.archive))


def test_different_destination_is_an_error(s):
    dest = s.new_path(s.ext.files[3])
    os.makedirs(os.path.dirname(dest))
    with open(dest, "wb") as f:
        f.write(b"someone else's data")
    before_tree, before_catalog = tree(s.raw, s.archive), catalog_state(s)
    with pytest.raises(DaskBrokerError, match="different") as info:
        move_files(s.db, s.h, s.archive)
    assert dest in str(info.value) and s.ext.files[3] in str(info.value)
    # Found before anything was done: nothing touched.
    assert tree(s.raw, s.archive) == before_tree
    assert catalog_state(s) == before_catalog
    assert_consistent(s)


def test_dry_run_touches_nothing(s):
    before_tree, before_catalog = tree(s.raw, s.archive), catalog_state(s)
    for function in (copy_files, move_files):
        report = function(s.db, s.h, s.archive, dry_run=True, progress=True)
        verb = "move" if function is move_files else "copy"
        assert [r.action for r in report.resources] == [f"would {verb}"] * 6
        assert report.dry_run and "(dry run)" in str(report)
        assert report.files == [(f, s.new_path(f)) for f in s.ext.files]
        assert tree(s.raw, s.archive) == before_tree
        assert catalog_state(s) == before_catalog
        assert not s.archive.exists()
    copy_files(s.db, s.resources()[0]["uid"], s.archive)
    report = move_files(s.db, s.h, s.archive, dry_run=True)
    assert [r.action for r in report.resources] == ["would clean"] + ["would move"] * 5


def test_progress_bar(s, capsys):
    copy_files(s.db, s.h, s.archive, progress=True)
    err = capsys.readouterr().err
    assert "copy_files" in err and "6/6 files" in err
    move_files(s.db, s.h, s.archive / "x")  # progress=None: stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_resource_without_root(any_db, tmp_path):
    (tmp_path / "d").mkdir()
    ext = make_external_run(tmp_path / "d", root="", n_files=1, points_per_file=1, npy=False)
    db = any_db
    for name, doc in ext.documents:
        db.insert(name, doc)
    with pytest.raises(InvalidArgumentError, match="no root"):
        move_files(db, db[-1], tmp_path / "new")
    assert os.path.exists(ext.files[0])


def test_backend_without_updates_copies_nothing(s_sqlite):
    s = s_sqlite  # a store class without resource updates: a subclass of SQLiteStore's

    class Minimal(SQLiteStore):
        update_resource = Store.update_resource

    db = Broker(Minimal(s.db.store.path))
    with pytest.raises(NotImplementedError, match="Minimal does not implement update_resource"):
        copy_files(db, db[-1], s.archive)
    assert not s.archive.exists()


# ---------------------------------------------------------------- fault injection
def test_error_during_copy(s, monkeypatch):
    real = files_module._copy_to
    calls = []

    def failing(src, dest, progress):
        calls.append(src)
        if len(calls) == 4:
            with open(dest, "wb") as f:
                f.write(b"half a fi")
            raise OSError(28, "No space left on device")
        return real(src, dest, progress)

    monkeypatch.setattr(files_module, "_copy_to", failing)
    with pytest.raises(OSError, match="No space"):
        move_files(s.db, s.h, s.archive)
    assert_consistent(s)
    roots = [r["root"] for r in s.resources()]
    assert roots == [str(s.archive)] * 3 + [str(s.raw)] * 3
    assert all(os.path.exists(f) for f in s.ext.files[3:])
    monkeypatch.setattr(files_module, "_copy_to", real)
    assert_moved(s, move_files(s.db, s.h, s.archive))


def test_checksum_mismatch(s, monkeypatch):
    real = files_module._digest
    bad = s.new_path(s.ext.files[2])

    def corrupt(path):
        size, digest = real(path)
        return (size, "0" * len(digest)) if path == bad else (size, digest)

    monkeypatch.setattr(files_module, "_digest", corrupt)
    with pytest.raises(DaskBrokerError, match="verification") as info:
        move_files(s.db, s.h, s.archive)
    assert bad in str(info.value)
    assert not os.path.exists(bad)  # the bad copy is removed
    assert os.path.exists(s.ext.files[2])
    assert [r["root"] for r in s.resources()] == [str(s.archive)] * 2 + [str(s.raw)] * 4
    assert_consistent(s)
    monkeypatch.setattr(files_module, "_digest", real)
    assert_moved(s, move_files(s.db, s.h, s.archive))


def test_permission_error_on_delete(s, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(files_module, "_remove", refuse)
    with pytest.raises(DaskBrokerError, match="could not be deleted") as info:
        move_files(s.db, s.h, s.archive)
    assert "nothing is lost" in str(info.value) and s.ext.files[0] in str(info.value)
    # every resource is re-pointed before any old file is deleted
    assert [r["root"] for r in s.resources()] == [str(s.archive)] * 6
    assert all(os.path.exists(f) for f in s.ext.files)
    assert_consistent(s)
    monkeypatch.undo()
    report = move_files(s.db, s.h, s.archive)
    assert [r.action for r in report.resources] == ["cleaned"] * 6
    assert report.resources[0].deleted == [s.ext.files[0]]
    assert_moved(s, report)


def test_killed_between_copy_and_update(s, monkeypatch):
    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies after copying, before the catalog changes

    monkeypatch.setattr(EventSource, "update_resource", killed)
    with pytest.raises(KeyboardInterrupt):
        move_files(s.db, s.h, s.archive)
    assert os.path.exists(s.new_path(s.ext.files[0]))  # copied ...
    assert all(os.path.exists(f) for f in s.ext.files)  # ... nothing deleted
    assert all(r["root"] == str(s.raw) for r in s.resources())  # ... catalog unchanged
    assert all(s.db.resource_history(r["uid"]) == [] for r in s.resources())
    assert_consistent(s)
    # A copy killed mid-file leaves a partial file; the re-run replaces it.
    partial = s.new_path(s.ext.files[1]) + PARTIAL_SUFFIX
    with open(partial, "wb") as f:
        f.write(b"partial")
    monkeypatch.undo()
    report = move_files(s.db, s.h, s.archive)
    assert not os.path.exists(partial)
    assert_moved(s, report)


def test_error_during_update_then_rerun(s, monkeypatch):
    real = EventSource.update_resource
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise DaskBrokerError("database is locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EventSource, "update_resource", flaky)
    with pytest.raises(DaskBrokerError, match="locked"):
        move_files(s.db, s.h, s.archive)
    assert [r["root"] for r in s.resources()] == [str(s.archive)] * 2 + [str(s.raw)] * 4
    assert os.path.exists(s.ext.files[2]) and os.path.exists(s.new_path(s.ext.files[2]))
    assert_consistent(s)
    monkeypatch.undo()
    assert_moved(s, move_files(s.db, s.h, s.archive))


# ---------------------------------------------------------------- CLI
@pytest.fixture
def main(monkeypatch):
    # Only this module's subcommand: other subcommand modules are not needed here.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["dask_broker.cli.files"])
    return cli.main


def test_cli_list(s, main, capsys):
    assert main(["files", "list", s.uri, "-1"]) == 0
    assert capsys.readouterr().out.split() == s.ext.files
    assert main(["files", "list", s.uri, s.h.uid[:8]]) == 0
    assert capsys.readouterr().out.split() == s.ext.files


def test_cli_list_takes_a_catalog_file_path(s_sqlite, main, capsys):
    s = s_sqlite
    res = s.resources()[1]
    assert main(["files", "list", str(s.db.store.path), res["uid"]]) == 0
    assert capsys.readouterr().out.split() == [s.ext.files[1]]


def test_cli_copy_move(s, main, capsys):
    before_tree, before_catalog = tree(s.raw, s.archive), catalog_state(s)
    assert main(["files", "move", s.uri, "-1", str(s.archive), "--dry-run"]) == 0
    assert "would move" in capsys.readouterr().out
    assert tree(s.raw, s.archive) == before_tree and catalog_state(s) == before_catalog
    res = s.resources()[0]
    assert main(["files", "copy", s.uri, res["uid"], str(s.archive), "--no-progress"]) == 0
    assert "copied" in capsys.readouterr().out
    assert main(["files", "move", s.uri, s.h.uid, str(s.archive)]) == 0
    out = capsys.readouterr().out
    assert out.count("moved") == 5 and "cleaned" in out
    assert_moved(s, FilesReport("move_files", str(s.archive)))


def test_cli_errors(s, main, capsys, tmp_path):
    assert main(["files", "list", s.uri, "nonexistent"]) == 1
    assert "nonexistent" in capsys.readouterr().err
    assert main(["files", "list", f"sqlite:///{tmp_path}/missing.db", "-1"]) == 1
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()
    dest = s.new_path(s.ext.files[0])
    os.makedirs(os.path.dirname(dest))
    with open(dest, "wb") as f:
        f.write(b"other")
    assert main(["files", "move", s.uri, "-1", str(s.archive)]) == 1
    assert "different" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["files", "copy", s.uri, "-1"])  # NEW_ROOT missing
    assert info.value.code == 2
    assert_consistent(s)


_CLI = [sys.executable, "-c", "import sys; from dask_broker.cli import main; sys.exit(main())"]


def test_cli_subprocess(s_sqlite):
    """The command in a process of its own (SQLite only: the in-process tests above run
    the same command on each store)."""
    s = s_sqlite
    proc = subprocess.run([*_CLI, "files", "move", s.uri, "-1", str(s.archive)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "6 resources, 6 files" in proc.stdout
    assert_moved(s, FilesReport("move_files", str(s.archive)))
    proc = subprocess.run([*_CLI, "files", "list", s.uri, "no-such-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no-such-run" in proc.stderr


def test_move_resources_sharing_a_file(any_db, tmp_path):
    """Two resources pointing at one file: the move re-points both before deleting it."""
    import event_model

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    frame = np.arange(6.0).reshape(2, 3)
    np.save(old / "a.npy", frame)
    db = any_db
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "a": {"source": "a", "dtype": "array", "shape": [2, 3], "external": "FILESTORE:"},
        "b": {"source": "b", "dtype": "array", "shape": [2, 3], "external": "FILESTORE:"}})
    db.insert("descriptor", desc.descriptor_doc)
    data = {}
    for field in ("a", "b"):
        res = bundle.compose_resource(spec="NPY", root=str(old), resource_path="a.npy",
                                      resource_kwargs={})
        db.insert("resource", res.resource_doc)
        datum = res.compose_datum(datum_kwargs={})
        db.insert("datum", datum)
        data[field] = datum["datum_id"]
    db.insert("event", desc.compose_event(data=data, timestamps={"a": 0.0, "b": 0.0}))
    h = db[-1]
    move_files(db, h, new, progress=False)
    assert not (old / "a.npy").exists()
    assert [r["root"] for r in h.resources()] == [str(new), str(new)]
    row = h.table(fill=True).compute().iloc[0]
    np.testing.assert_array_equal(row["a"], frame)
    np.testing.assert_array_equal(row["b"], frame)


def test_move_keeps_files_another_run_still_uses(any_db, tmp_path):
    """A file shared with a resource of another run is copied and re-pointed for the moved
    run, but kept in place, since the other run still points at it."""
    import event_model

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    frame = np.arange(4.0)
    np.save(old / "shared.npy", frame)
    db = any_db
    heads = []
    for _ in range(2):
        bundle = event_model.compose_run()
        db.insert("start", bundle.start_doc)
        desc = bundle.compose_descriptor(name="primary", data_keys={
            "a": {"source": "a", "dtype": "array", "shape": [4], "external": "FILESTORE:"}})
        db.insert("descriptor", desc.descriptor_doc)
        res = bundle.compose_resource(spec="NPY", root=str(old), resource_path="shared.npy",
                                      resource_kwargs={})
        db.insert("resource", res.resource_doc)
        datum = res.compose_datum(datum_kwargs={})
        db.insert("datum", datum)
        db.insert("event", desc.compose_event(data={"a": datum["datum_id"]},
                                              timestamps={"a": 0.0}))
        heads.append(db[-1])
    first, second = heads
    report = move_files(db, first, new, progress=False)
    assert (old / "shared.npy").exists() and (new / "shared.npy").exists()
    (entry,) = report.resources
    assert entry.deleted == [] and entry.kept_for == [second.resources()[0]["uid"]]
    for h in heads:
        np.testing.assert_array_equal(h.table(fill=True).compute()["a"].iloc[0], frame)
    assert first.resources()[0]["root"] == str(new)
    assert second.resources()[0]["root"] == str(old)
