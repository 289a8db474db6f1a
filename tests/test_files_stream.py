"""file_list / copy_files / move_files on stream_resource documents (HDF5 files, TIFF
directories, the pre-1.21 form), and the ``files`` command, on each store."""

from __future__ import annotations

import os
from pathlib import Path

import event_model
import numpy as np
import pytest
from streamdata import record

import dask_broker.cli as cli
from dask_broker import copy_files, file_list, move_files
from dask_broker.readers import uri_to_path


def _insert(db, docs):
    for name, doc in docs:
        db.insert(name, doc)


def _recorded(db, case, folder):
    rec = record(case, folder)
    _insert(db, rec.docs)
    return rec, db[rec.uid]


def _srs(db, h):
    return db.store.stream_resources(h.uid)


def _filled(h) -> np.ndarray:
    return np.stack(h.table(fill=True).compute()["img"].tolist())


def _tiffs(folder, n) -> list[str]:
    return [str(Path(folder) / "tiffs" / f"img_{i:06d}.tiff") for i in range(n)]


def _files_under(folder) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------- file_list
def test_file_list_of_hdf5_stream_resources(any_db, tmp_path):
    rec, h = _recorded(any_db, "hdf5_handmade", tmp_path / "raw")
    a, b = str(tmp_path / "raw" / "a.h5"), str(tmp_path / "raw" / "b.h5")
    assert file_list(any_db, h) == [a, b]
    first, second = _srs(any_db, h)
    assert file_list(any_db, second["uid"]) == [b]
    assert file_list(any_db, [second["uid"], first["uid"]]) == [b, a]


def test_file_list_of_a_tiff_directory(any_db, tmp_path):
    """One file per frame the stream_datum reach (indices stop at 6, one frame per row)."""
    rec, h = _recorded(any_db, "tiff_directory", tmp_path / "raw")
    assert file_list(any_db, h) == _tiffs(tmp_path / "raw", 6)
    assert sorted(file_list(any_db, h)) == [str(p) for p in rec.files]


def _tiff_run(folder: Path, *, per_row: int, rows: int, extra_files: int):
    """A TIFF directory written with ``per_row`` frames per row (descriptor shape
    ``[per_row, H, W]``), stream_datum reaching ``rows`` rows, and ``extra_files`` more
    files in the folder that no stream_datum reaches."""
    import tifffile

    H, W = 3, 4
    directory = folder / "tiffs"
    directory.mkdir(parents=True)
    for i in range(rows * per_row + extra_files):
        tifffile.imwrite(directory / f"img_{i:06d}.tiff",
                         (np.arange(H * W, dtype="u2") + 100 * i).reshape(H, W))
    run = event_model.compose_run()
    docs = [("start", run.start_doc)]
    uri = f"file://localhost{directory}/"
    desc = run.compose_descriptor(name="primary", data_keys={"img": {
        "source": uri, "dtype": "array", "shape": [per_row, H, W], "dtype_numpy": "<u2",
        "external": "STREAM:"}})
    docs.append(("descriptor", desc.descriptor_doc))
    sr = run.compose_stream_resource(
        mimetype="multipart/related;type=image/tiff", uri=uri, data_key="img",
        parameters={"template": "img_{:06d}.tiff", "chunk_shape": [1, H, W]})
    docs.append(("stream_resource", sr.stream_resource_doc))
    docs.append(("stream_datum", sr.compose_stream_datum(
        indices={"start": 0, "stop": rows}, seq_nums={"start": 1, "stop": rows + 1},
        descriptor=desc.descriptor_doc)))
    docs.append(("stop", run.compose_stop()))
    return docs


def test_file_list_counts_frames_per_row(any_db, tmp_path):
    """Descriptor shape [2, H, W] over single-frame files: 3 rows are 6 files; files past
    them in the folder are not the run's."""
    _insert(any_db, _tiff_run(tmp_path / "raw", per_row=2, rows=3, extra_files=2))
    h = any_db[-1]
    assert file_list(any_db, h) == _tiffs(tmp_path / "raw", 6)
    report = move_files(any_db, h, tmp_path / "archive", progress=False)
    assert report.files == list(zip(_tiffs(tmp_path / "raw", 6), _tiffs(tmp_path / "archive", 6),
                                    strict=True))
    assert _files_under(tmp_path / "raw") == _tiffs(tmp_path / "raw", 8)[6:]  # not the run's
    frames = _filled(h)
    assert frames.shape == (3, 2, 3, 4)
    np.testing.assert_array_equal(frames[2, 1], np.arange(12).reshape(3, 4) + 500)


def test_file_list_follows_root_map(any_db, tmp_path):
    _recorded(any_db, "tiff_directory", tmp_path / "raw")
    h = any_db[-1]
    os.rename(tmp_path / "raw", tmp_path / "mounted")
    any_db.set_root_map({str(tmp_path / "raw"): str(tmp_path / "mounted")})
    assert file_list(any_db, h) == _tiffs(tmp_path / "mounted", 6)


# ---------------------------------------------------------------- copy and move
@pytest.mark.parametrize("case", ["hdf5_handmade", "tiff_directory", "legacy_sr"])
def test_move_stream_resources_then_read_from_the_new_place(any_db, tmp_path, case):
    rec, h = _recorded(any_db, case, tmp_path / "raw")
    before_srs = _srs(any_db, h)
    old_files = file_list(any_db, h)
    archive = tmp_path / "archive"
    report = move_files(any_db, h, archive, progress=False)
    assert [r.action for r in report.resources] == ["moved"] * len(before_srs)
    assert [r.uid for r in report.resources] == [sr["uid"] for sr in before_srs]
    new_files = [str(archive / os.path.relpath(f, tmp_path / "raw")) for f in old_files]
    assert report.files == list(zip(old_files, new_files, strict=True))
    assert [d for r in report.resources for d in r.deleted] == old_files
    assert _files_under(tmp_path / "raw") == [] and _files_under(archive) == sorted(new_files)
    assert file_list(any_db, h) == new_files
    for old, new in zip(before_srs, _srs(any_db, h), strict=True):
        if case == "legacy_sr":  # the pre-1.21 form keeps its location in root
            assert new == {**old, "root": str(archive)}
        else:  # uri rewritten in the file://localhost form, a directory keeps its "/"
            tail = uri_to_path(old["uri"])[len(str(tmp_path / "raw")):]
            assert new == {**old, "uri": f"file://localhost{archive}{tail}"}
            assert new["uri"].endswith("/") == (case == "tiff_directory")
        (hist,) = any_db.resource_history(old["uid"])
        assert hist["cmd"] == "move_files" and hist["old"] == old and hist["new"] == new
        assert hist["cmd_kwargs"] == {"new_root": str(archive), "verify": True}
    expected = rec.expected["primary"]["img"]
    np.testing.assert_array_equal(_filled(h), expected)
    np.testing.assert_array_equal(h.to_xarray()["img"].values, expected)
    again = move_files(any_db, h, archive, progress=False)
    assert [r.action for r in again.resources] == ["skipped"] * len(before_srs)


def test_copy_stream_resources_through_a_root_map(any_db, tmp_path):
    """Files found through the root_map are copied; the uri then names the new root."""
    rec, h = _recorded(any_db, "tiff_directory", tmp_path / "raw")
    (sr,) = _srs(any_db, h)
    os.rename(tmp_path / "raw", tmp_path / "mounted")
    any_db.set_root_map({str(tmp_path / "raw"): str(tmp_path / "mounted")})
    report = copy_files(any_db, h, tmp_path / "archive", progress=False)
    assert report.files == list(zip(_tiffs(tmp_path / "mounted", 6),
                                    _tiffs(tmp_path / "archive", 6), strict=True))
    assert _files_under(tmp_path / "mounted") == _tiffs(tmp_path / "mounted", 6)  # kept
    assert _srs(any_db, h) == [{**sr, "uri": f"file://localhost{tmp_path}/archive/tiffs/"}]
    np.testing.assert_array_equal(_filled(h), rec.expected["primary"]["img"])
    # a move back to the stored root, itself mapped: files land where the map says
    move_files(any_db, h, tmp_path / "raw", progress=False)
    assert _srs(any_db, h) == [sr]
    assert _files_under(tmp_path / "mounted") == _tiffs(tmp_path / "mounted", 6)
    assert _files_under(tmp_path / "archive") == []
    np.testing.assert_array_equal(_filled(h), rec.expected["primary"]["img"])


def test_move_a_run_with_resources_and_stream_resources(any_db, tmp_path):
    """One call relocates both kinds of document."""
    from dask_broker.handlers.testing import make_external_run

    db = any_db
    (tmp_path / "raw").mkdir()
    ext = make_external_run(tmp_path / "raw", root=str(tmp_path / "raw"), n_files=1,
                            points_per_file=2)
    _insert(db, ext.documents)
    rec = record("hdf5_handmade", tmp_path / "raw" / "sr")
    _insert(db, rec.docs)
    runs = [db[ext.documents[0][1]["uid"]], db[rec.uid]]
    old = file_list(db, runs)
    assert old == [*ext.files, str(tmp_path / "raw/sr/a.h5"), str(tmp_path / "raw/sr/b.h5")]
    before = runs[0].table(fill=True).compute()["img"].tolist()
    move_files(db, runs, tmp_path / "archive", progress=False)
    assert _files_under(tmp_path / "raw") == []
    # a resource keeps its resource_path; a stream_resource its uri's last component
    assert file_list(db, runs) == [
        *(f.replace("/raw/", "/archive/") for f in ext.files),
        str(tmp_path / "archive/a.h5"), str(tmp_path / "archive/b.h5")]
    np.testing.assert_array_equal(_filled(runs[1]), rec.expected["primary"]["img"])
    after = runs[0].table(fill=True).compute()["img"].tolist()
    assert len(after) == len(before) == 2
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- CLI
def test_cli_on_stream_resources(any_uri, tmp_path, monkeypatch, capsys):
    from dask_broker import Broker

    monkeypatch.setattr(cli, "COMMAND_MODULES", ["dask_broker.cli.files"])
    uri = any_uri()
    db = Broker.from_uri(uri)
    rec, h = _recorded(db, "tiff_directory", tmp_path / "raw")
    (sr,) = _srs(db, h)
    assert cli.main(["files", "list", uri, sr["uid"]]) == 0
    assert capsys.readouterr().out.split() == _tiffs(tmp_path / "raw", 6)
    assert cli.main(["files", "move", uri, "-1", str(tmp_path / "archive"),
                     "--keep-empty-dirs"]) == 0
    out = capsys.readouterr().out
    assert "1 resources, 6 files" in out and "moved" in out and "image/tiff" in out
    assert (tmp_path / "raw" / "tiffs").is_dir() and _files_under(tmp_path / "raw") == []
    np.testing.assert_array_equal(_filled(Broker.from_uri(uri)[-1]),
                                  rec.expected["primary"]["img"])
