"""What a move promises beyond one run: it never deletes a file another document still
points at (however the path is written), never overlays its own files, runs once per run
at a time, and removes the source folders it empties."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import event_model
import numpy as np
import pytest
from streamdata import record

from dask_broker import InvalidArgumentError, copy_files, file_list, move_files
from dask_broker.errors import FilesLockedError


def _insert(db, docs):
    for name, doc in docs:
        db.insert(name, doc)


def _npy_run(db, root: str, resource_path: str):
    """A run whose one event reads the NPY file at ``root`` + ``resource_path``."""
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "a": {"source": "a", "dtype": "array", "shape": [4], "external": "FILESTORE:"}})
    db.insert("descriptor", desc.descriptor_doc)
    res = bundle.compose_resource(spec="NPY", root=root, resource_path=resource_path,
                                  resource_kwargs={})
    db.insert("resource", res.resource_doc)
    datum = res.compose_datum(datum_kwargs={})
    db.insert("datum", datum)
    db.insert("event", desc.compose_event(data={"a": datum["datum_id"]}, timestamps={"a": 0.0}))
    db.insert("stop", bundle.compose_stop())
    return db[bundle.start_doc["uid"]]


def _read(h) -> np.ndarray:
    return h.table(fill=True).compute()["a"].iloc[0]


def _files_under(folder) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------- other runs' documents
def _other_spelling(variant: str, old: Path, tmp_path: Path) -> tuple[str, str]:
    """``(root, resource_path)`` naming ``old/sub/shared.npy`` another way."""
    if variant == "root-with-slash":
        return f"{old}/", "sub/shared.npy"
    if variant == "legacy-empty-root":
        return "", f"{old}/sub/shared.npy"
    if variant == "split-differently":
        return f"{old}/sub", "shared.npy"
    if variant == "dot-segments":
        return f"{old}/sub/..", "sub/./shared.npy"
    assert variant == "symlinked-folder"
    os.symlink(old, tmp_path / "link")
    return str(tmp_path / "link"), "sub/shared.npy"


@pytest.mark.parametrize("variant", ["root-with-slash", "legacy-empty-root", "split-differently",
                                     "dot-segments", "symlinked-folder"])
def test_move_keeps_a_file_another_run_names_differently(any_db, tmp_path, variant):
    old = tmp_path / "old"
    (old / "sub").mkdir(parents=True)
    frame = np.arange(4.0)
    np.save(old / "sub" / "shared.npy", frame)
    mover = _npy_run(any_db, str(old), "sub/shared.npy")
    other = _npy_run(any_db, *_other_spelling(variant, old, tmp_path))
    report = move_files(any_db, mover, tmp_path / "new", progress=False)
    (entry,) = report.resources
    assert entry.deleted == [] and entry.kept_for == [other.resources()[0]["uid"]]
    assert (old / "sub" / "shared.npy").exists() and (tmp_path / "new/sub/shared.npy").exists()
    np.testing.assert_array_equal(_read(other), frame)
    np.testing.assert_array_equal(_read(mover), frame)


def test_move_deletes_what_nobody_else_names(any_db, tmp_path):
    """A file of another run beside the moved one (a name prefix of it) does not keep it."""
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "a.npy", np.arange(4.0))
    np.save(old / "a.npy.bak.npy", np.zeros(4))
    mover = _npy_run(any_db, str(old), "a.npy")
    _npy_run(any_db, str(old), "a.npy.bak.npy")
    (entry,) = move_files(any_db, mover, tmp_path / "new", progress=False).resources
    assert entry.kept_for == [] and entry.deleted == [str(old / "a.npy")]
    assert _files_under(old) == [str(old / "a.npy.bak.npy")]


def test_a_folder_resource_whose_files_cannot_be_listed_keeps_them(any_db, tmp_path):
    """Another run's resource names the folder holding the file but has no handler here:
    nobody can tell which files it reads, so none of that folder's files is deleted."""
    old = tmp_path / "old"
    (old / "sub").mkdir(parents=True)
    np.save(old / "sub" / "f.npy", np.arange(4.0))
    mover = _npy_run(any_db, str(old), "sub/f.npy")
    bundle = event_model.compose_run()
    any_db.insert("start", bundle.start_doc)
    res = bundle.compose_resource(spec="NO_HANDLER_HERE", root=str(old), resource_path="sub",
                                  resource_kwargs={})
    any_db.insert("resource", res.resource_doc)
    (entry,) = move_files(any_db, mover, tmp_path / "new", progress=False).resources
    assert entry.kept_for == [res.resource_doc["uid"]] and entry.deleted == []
    assert (old / "sub" / "f.npy").exists()


def _stream_run_at(db, uri: str):
    """A run with one HDF5 stream_resource at ``uri`` (a 5x7 float32 dataset, rows 0 and 1)."""
    run = event_model.compose_run()
    docs = [("start", run.start_doc)]
    desc = run.compose_descriptor(name="primary", data_keys={"img": {
        "source": uri, "dtype": "array", "shape": [5, 7], "dtype_numpy": "<f4",
        "external": "STREAM:"}})
    docs.append(("descriptor", desc.descriptor_doc))
    sr = run.compose_stream_resource(mimetype="application/x-hdf5", uri=uri, data_key="img",
                                     parameters={"dataset": "/entry/data/data"})
    docs.append(("stream_resource", sr.stream_resource_doc))
    docs.append(("stream_datum", sr.compose_stream_datum(
        indices={"start": 0, "stop": 2}, seq_nums={"start": 1, "stop": 3},
        descriptor=desc.descriptor_doc)))
    docs.append(("stop", run.compose_stop()))
    _insert(db, docs)
    return db[run.start_doc["uid"]]


@pytest.mark.parametrize("variant", ["file:///-form", "percent-encoded", "symlinked-folder",
                                     "resource"])
def test_move_keeps_a_stream_file_another_run_names_differently(any_db, tmp_path, variant):
    rec = record("hdf5_handmade", tmp_path / "old")
    _insert(any_db, rec.docs)
    mover = any_db[rec.uid]
    a = tmp_path / "old" / "a.h5"
    if variant == "resource":  # a resource (AD_HDF5) of another run reads the same file
        bundle = event_model.compose_run()
        any_db.insert("start", bundle.start_doc)
        desc = bundle.compose_descriptor(name="primary", data_keys={"img": {
            "source": "x", "dtype": "array", "shape": [5, 7], "external": "FILESTORE:"}})
        any_db.insert("descriptor", desc.descriptor_doc)
        res = bundle.compose_resource(spec="AD_HDF5", root=str(tmp_path),
                                      resource_path="old//a.h5",
                                      resource_kwargs={"frame_per_point": 1})
        any_db.insert("resource", res.resource_doc)
        datum = res.compose_datum(datum_kwargs={"point_number": 1})
        any_db.insert("datum", datum)
        any_db.insert("event", desc.compose_event(data={"img": datum["datum_id"]},
                                                  timestamps={"img": 0.0}))
        other = any_db[bundle.start_doc["uid"]]
        other_uid = res.resource_doc["uid"]
    else:
        if variant == "symlinked-folder":
            os.symlink(tmp_path / "old", tmp_path / "link")
            uri = f"file://localhost{tmp_path}/link/a.h5"
        elif variant == "percent-encoded":
            uri = f"file://localhost{tmp_path}/%6Fld/a.h5"  # %6F is "o"
        else:
            uri = f"file://{tmp_path}/old/a.h5"
        other = _stream_run_at(any_db, uri)
        other_uid = any_db.store.stream_resources(other.uid)[0]["uid"]
    report = move_files(any_db, mover, tmp_path / "new", progress=False)
    kept = {r.uid: r for r in report.resources}
    first, second = any_db.store.stream_resources(mover.uid)
    assert kept[first["uid"]].kept_for == [other_uid] and kept[first["uid"]].deleted == []
    assert kept[second["uid"]].deleted == [str(tmp_path / "old" / "b.h5")]
    assert _files_under(tmp_path / "old") == [str(a)]
    np.testing.assert_array_equal(np.stack(mover.table(fill=True).compute()["img"].tolist()),
                                  rec.expected["primary"]["img"])
    got = other.table(fill=True).compute()["img"].tolist()
    # AD_HDF5 gives (1, H, W) for one frame per point, as area-detector-handlers does
    want = rec.expected["primary"]["img"]
    np.testing.assert_array_equal(got[0] if variant == "resource" else np.stack(got),
                                  want[1:2] if variant == "resource" else want[0:2])


def test_move_keeps_a_tiff_directory_another_run_reaches_through_a_symlink(any_db, tmp_path):
    """A multipart stream_resource of another run, at the same folder through a symlink:
    its files are listed (from its stream_datum) and compared file by file."""
    rec = record("tiff_directory", tmp_path / "old")
    _insert(any_db, rec.docs)
    mover = any_db[rec.uid]
    (sr,) = any_db.store.stream_resources(mover.uid)
    os.symlink(tmp_path / "old", tmp_path / "link")
    other_docs = [(n, dict(d)) for n, d in record("tiff_directory", tmp_path / "x").docs]
    for name, doc in other_docs:
        if name == "stream_resource":
            doc["uri"] = f"file://localhost{tmp_path}/link/tiffs/"
    _insert(any_db, other_docs)
    (other_sr,) = any_db.store.stream_resources(other_docs[0][1]["uid"])
    (entry,) = move_files(any_db, mover, tmp_path / "new", progress=False).resources
    assert entry.kept_for == [other_sr["uid"]] and entry.deleted == []
    assert _files_under(tmp_path / "old") == [str(p) for p in rec.files]
    assert sr["uid"] != other_sr["uid"]


# ---------------------------------------------------------------- the plan
@pytest.mark.parametrize("same_content", [True, False])
def test_move_into_a_subfolder_where_a_destination_is_another_source(any_db, tmp_path,
                                                                     same_content):
    """``f.npy`` and ``n/f.npy`` moved into ``root/n``: ``f.npy`` would land on ``n/f.npy``,
    which is itself moved; refused before anything is touched."""
    root = tmp_path / "root"
    (root / "n").mkdir(parents=True)
    np.save(root / "f.npy", np.arange(4.0))
    np.save(root / "n" / "f.npy", np.arange(4.0) * (1 if same_content else 2))
    bundle = event_model.compose_run()
    any_db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        k: {"source": k, "dtype": "array", "shape": [4], "external": "FILESTORE:"}
        for k in ("a", "b")})
    any_db.insert("descriptor", desc.descriptor_doc)
    data = {}
    for key, path in (("a", "f.npy"), ("b", "n/f.npy")):
        res = bundle.compose_resource(spec="NPY", root=str(root), resource_path=path,
                                      resource_kwargs={})
        any_db.insert("resource", res.resource_doc)
        datum = res.compose_datum(datum_kwargs={})
        any_db.insert("datum", datum)
        data[key] = datum["datum_id"]
    any_db.insert("event", desc.compose_event(data=data, timestamps={"a": 0.0, "b": 0.0}))
    h = any_db[bundle.start_doc["uid"]]
    before_files, before_docs = _files_under(root), h.resources()
    for function in (move_files, copy_files):
        with pytest.raises(InvalidArgumentError, match="relocates too") as info:
            function(any_db, h, root / "n", progress=False)
        assert f"{root}/n/f.npy" in str(info.value) and "nothing was copied" in str(info.value)
        assert _files_under(root) == before_files and h.resources() == before_docs
        assert all(any_db.resource_history(r["uid"]) == [] for r in before_docs)
    # the same files moved elsewhere go
    move_files(any_db, h, tmp_path / "elsewhere", progress=False)
    row = h.table(fill=True).compute().iloc[0]
    np.testing.assert_array_equal(row["a"], np.arange(4.0))
    np.testing.assert_array_equal(row["b"], np.arange(4.0) * (1 if same_content else 2))


# ---------------------------------------------------------------- one move per run at a time
_CHILD = textwrap.dedent("""
    import os, sys, time
    from dask_broker import Broker, move_files
    from dask_broker import files

    uri, new_root, signal_file = sys.argv[1:4]
    real = files._copy_to

    def slow(src, dest, progress):
        open(signal_file, "w").close()   # the lock is held and copying has begun
        time.sleep(600)                  # until killed
        return real(src, dest, progress)

    files._copy_to = slow
    db = Broker.from_uri(uri)
    move_files(db, db[-1], new_root, progress=False)
""")


def test_a_second_process_moving_the_same_run_is_refused(any_db, tmp_path):
    from dask_broker.handlers.testing import make_external_run

    (tmp_path / "raw").mkdir()
    ext = make_external_run(tmp_path / "raw", n_files=2, points_per_file=1)
    _insert(any_db, ext.documents)
    h = any_db[-1]
    before = h.table(fill=True).compute()["img"].tolist()
    signal_file = tmp_path / "copying"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, any_db.store.uri,
                              str(tmp_path / "a"), str(signal_file)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not signal_file.exists():  # (pytest-timeout ends a child that never gets there)
            assert child.poll() is None, child.communicate()[1]
            time.sleep(0.05)
        with pytest.raises(FilesLockedError, match=f"run {h.uid!r}.*another process") as info:
            move_files(any_db, h, tmp_path / "b", progress=False)
        assert f"pid {child.pid}" in str(info.value)
        with pytest.raises(FilesLockedError):
            copy_files(any_db, h, tmp_path / "b", progress=False)
        assert not (tmp_path / "b").exists()
        assert [r["root"] for r in h.resources()] == [str(tmp_path / "raw")] * len(ext.files)
        # a dry run takes no lock
        assert move_files(any_db, h, tmp_path / "b", dry_run=True).resources
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    # the killed holder's lock is gone with it: the move goes ahead
    report = move_files(any_db, h, tmp_path / "b", progress=False)
    assert [r.action for r in report.resources] == ["moved"] * len(ext.files)
    assert _files_under(tmp_path / "raw") == []
    for a, b in zip(h.table(fill=True).compute()["img"].tolist(), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- emptied folders
def _nested_run(db, raw: Path):
    """NPY files in raw/2024/a/ and raw/2024/b/, resources rooted at raw."""
    bundle = event_model.compose_run()
    db.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        k: {"source": k, "dtype": "array", "shape": [4], "external": "FILESTORE:"}
        for k in ("a", "b")})
    db.insert("descriptor", desc.descriptor_doc)
    data = {}
    for key in ("a", "b"):
        (raw / "2024" / key).mkdir(parents=True)
        np.save(raw / "2024" / key / "f.npy", np.arange(4.0))
        res = bundle.compose_resource(spec="NPY", root=str(raw), resource_path=f"2024/{key}/f.npy",
                                      resource_kwargs={})
        db.insert("resource", res.resource_doc)
        datum = res.compose_datum(datum_kwargs={})
        db.insert("datum", datum)
        data[key] = datum["datum_id"]
    db.insert("event", desc.compose_event(data=data, timestamps={"a": 0.0, "b": 0.0}))
    return db[bundle.start_doc["uid"]]


def test_move_removes_the_source_folders_it_empties(any_db, tmp_path):
    db = any_db
    raw = tmp_path / "raw"
    h = _nested_run(db, raw)
    (raw / "2024" / "b" / "notes.txt").write_text("not the run's")
    report = move_files(db, h, tmp_path / "new", progress=False)
    assert report.removed_dirs == [str(raw / "2024" / "a")]
    assert "emptied source folder(s) deleted" in str(report)
    assert sorted(p.name for p in raw.rglob("*")) == ["2024", "b", "notes.txt"]
    assert file_list(db, h) == [str(tmp_path / "new/2024/a/f.npy"),
                                str(tmp_path / "new/2024/b/f.npy")]
    # the root itself is kept even when emptied
    other = _nested_run(db, tmp_path / "raw2")
    report = move_files(db, other, tmp_path / "new2", progress=False)
    assert sorted(report.removed_dirs) == sorted(
        str(tmp_path / "raw2" / p) for p in ("2024/a", "2024/b", "2024"))
    assert list((tmp_path / "raw2").iterdir()) == []


def test_move_keeps_folders_on_request_or_when_not_empty(any_db, tmp_path):
    db = any_db
    raw = tmp_path / "raw"
    h = _nested_run(db, raw)
    report = move_files(db, h, tmp_path / "new", progress=False, remove_empty_dirs=False)
    assert report.removed_dirs == []
    assert _files_under(raw) == [] and (raw / "2024" / "a").is_dir()
    # moved into a subfolder of the old folder: that folder holds the new files, so stays
    other = _nested_run(db, tmp_path / "raw2")
    inside = tmp_path / "raw2" / "2024" / "moved"
    report = move_files(db, other, inside, progress=False)
    assert sorted(report.removed_dirs) == sorted(
        str(tmp_path / "raw2" / "2024" / k) for k in ("a", "b"))
    assert _files_under(tmp_path / "raw2") == [str(inside / f"2024/{k}/f.npy") for k in "ab"]
