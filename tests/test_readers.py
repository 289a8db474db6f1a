"""stream_resource readers: uris, root_map, normalization, HDF5 and multipart readers, registry."""

from __future__ import annotations

import os
import pickle
import sys
import types
from importlib.metadata import EntryPoint

import event_model
import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from dask_broker.errors import (
    DaskBrokerError,
    DocumentValidationError,
    DuplicateReaderError,
    InvalidArgumentError,
    MissingFileError,
    OutOfRangeError,
    ReaderError,
    ReaderNotFoundError,
    UnsupportedStreamResourceError,
)
from dask_broker.handlers import HDF5_LOCK
from dask_broker.readers import (
    HDF5Reader,
    JPEGReader,
    NPYReader,
    ReaderBase,
    ReaderRegistry,
    StreamReader,
    TIFFReader,
    compile_template,
    default_registry,
    deregister_reader,
    lookup_reader,
    normalize_stream_resource,
    path_to_uri,
    register_reader,
    remap_uri,
    uri_to_path,
)
from dask_broker.readers import hdf5 as hdf5_module

TIFF = "multipart/related;type=image/tiff"
JPEG = "multipart/related;type=image/jpeg"
NPY = "multipart/related;type=application/x-npy"
HDF5 = "application/x-hdf5"
DATASET = "/entry/data/data"


# ================================================================ uri
@pytest.mark.parametrize("uri, path", [
    ("file://localhost/data/det.h5", "/data/det.h5"),
    ("file://LOCALHOST/data/det.h5", "/data/det.h5"),
    ("file:///data/det.h5", "/data/det.h5"),
    ("file:/data/det.h5", "/data/det.h5"),
    ("/data/det.h5", "/data/det.h5"),
    ("file://localhost/data/tiffs/", "/data/tiffs/"),
    ("file://localhost/data/scan%201/a%25b%23c.h5", "/data/scan 1/a%b#c.h5"),
    ("/data/scan%201/", "/data/scan%201/"),  # a bare path is not percent-decoded
])
def test_uri_to_path(uri, path):
    assert uri_to_path(uri) == path


@pytest.mark.parametrize("uri", [
    "http://example.com/data/det.h5",
    "s3://bucket/det.h5",
    "file://beamline-ioc/data/det.h5",
    "relative/det.h5",
    "file:relative/det.h5",
    "file://localhost",
    "",
])
def test_uri_to_path_rejects_non_local(uri):
    with pytest.raises(InvalidArgumentError) as info:
        uri_to_path(uri)
    assert isinstance(info.value, ValueError)
    assert repr(uri) in str(info.value)


def test_path_to_uri_round_trips():
    path = "/data/scan 1/a%b#c?/"
    uri = path_to_uri(path)
    assert uri.startswith("file://localhost/data/scan%201/")
    assert uri_to_path(uri) == path
    with pytest.raises(InvalidArgumentError, match="'rel/p'"):
        path_to_uri("rel/p")


ROOT_MAP = {"/a/b": "/new", "/a/b/deep/": "/deeper", "/a": "/elsewhere/a",
            "/old root": "/new root/"}


@pytest.mark.parametrize("uri, expected", [
    ("file://localhost/a/b/c.h5", "file://localhost/new/c.h5"),
    ("file:///a/b/c.h5", "file:///new/c.h5"),
    ("/a/b/c.h5", "/new/c.h5"),
    ("file://localhost/a/b/dir/", "file://localhost/new/dir/"),  # trailing / kept
    ("file://localhost/a/b/", "file://localhost/new/"),
    ("file://localhost/a/b", "file://localhost/new"),
    ("file://localhost/a/b/deep/x.h5", "file://localhost/deeper/x.h5"),  # longest prefix wins
    # /a/b is no prefix of /a/bc (component boundary), so the shorter /a applies
    ("file://localhost/a/bc/c.h5", "file://localhost/elsewhere/a/bc/c.h5"),
    ("file://localhost/z/c.h5", "file://localhost/z/c.h5"),  # no match: unchanged
    ("file://localhost/old%20root/x%20y.h5", "file://localhost/new%20root/x%20y.h5"),
])
def test_remap_uri(uri, expected):
    assert remap_uri(uri, ROOT_MAP) == expected


def test_remap_uri_matches_whole_components_only():
    assert remap_uri("file://localhost/a/bc/c.h5", {"/a/b": "/new"}) == \
        "file://localhost/a/bc/c.h5"
    assert remap_uri("/a/b2", {"/a/b": "/new"}) == "/a/b2"


def test_remap_uri_to_and_from_filesystem_root():
    assert remap_uri("file://localhost/a/x.h5", {"/a": "/"}) == "file://localhost/x.h5"
    assert remap_uri("file://localhost/a/", {"/a": "/"}) == "file://localhost/"
    assert remap_uri("/x/y.h5", {"/": "/mnt"}) == "/mnt/x/y.h5"


def test_remap_uri_errors():
    with pytest.raises(InvalidArgumentError, match="'rel'"):
        remap_uri("file://localhost/a/x.h5", {"rel": "/b"})
    with pytest.raises(InvalidArgumentError, match="http://h/a"):
        remap_uri("http://h/a", {"/a": "/b"})


# ================================================================ normalize
def test_normalize_modern_is_a_shallow_copy():
    doc = event_model.compose_stream_resource(
        mimetype=HDF5, uri="file://localhost/data/det.h5", data_key="det",
        parameters={"dataset": DATASET, "chunk_shape": [1, 4, 5]}).stream_resource_doc
    out = normalize_stream_resource(doc)
    assert out == doc and out is not doc
    out["uri"] = "changed"
    assert doc["uri"] == "file://localhost/data/det.h5"


def _old_sr(spec, root, resource_path, kwargs, **extra):
    return {"uid": "sr-1", "data_key": "det", "spec": spec, "root": root,
            "resource_path": resource_path, "resource_kwargs": kwargs,
            "path_semantics": "posix", "run_start": "start-1", **extra}


def test_normalize_old_ad_hdf5():
    old = _old_sr("AD_HDF5", "/data", "scan 1/det.h5", {"frame_per_point": 2})
    snapshot = pickle.dumps(old)
    new = normalize_stream_resource(old)
    assert pickle.dumps(old) == snapshot  # input untouched
    assert new == {
        "uid": "sr-1", "data_key": "det", "run_start": "start-1", "mimetype": HDF5,
        "uri": "file://localhost/data/scan%201/det.h5",
        "parameters": {"multiplier": 2, "spec": "AD_HDF5", "dataset": DATASET},
    }
    assert uri_to_path(new["uri"]) == "/data/scan 1/det.h5"


@pytest.mark.parametrize("spec, kwargs, mimetype, parameters", [
    ("AD_HDF5_SWMR", {"dataset": "/x"}, HDF5, {"dataset": "/x", "spec": "AD_HDF5_SWMR"}),
    ("HDF5", {"path": "/y"}, HDF5, {"dataset": "/y", "spec": "HDF5"}),
    ("AD_TIFF", {"template": "%s%s_%6.6d.tiff", "filename": "det"}, TIFF,
     {"template": "%s%s_%6.6d.tiff", "filename": "det", "spec": "AD_TIFF"}),
    ("NPY_SEQ", {}, NPY, {"template": "_{:d}.npy", "spec": "NPY_SEQ"}),
    ("MY_SPEC", {"a": 1}, "application/octet-stream", {"a": 1, "spec": "MY_SPEC"}),
])
def test_normalize_old_specs(spec, kwargs, mimetype, parameters):
    new = normalize_stream_resource(_old_sr(spec, "", "/abs/file", kwargs))
    assert new["mimetype"] == mimetype
    assert new["parameters"] == parameters
    assert new["uri"] == "file://localhost/abs/file"


def test_normalize_old_missing_keys():
    with pytest.raises(DocumentValidationError, match="'sr-2'.*'root'"):
        normalize_stream_resource({"uid": "sr-2", "spec": "AD_HDF5", "resource_path": "a.h5"})


def test_normalized_old_documents_are_readable(tmp_path, frames):
    """Old AD_HDF5, AD_TIFF and NPY_SEQ documents read through lookup_reader."""
    write_h5(tmp_path / "det.h5", frames)
    write_tiffs(tmp_path / "tiffs", frames[:3], "det_{:06d}.tiff")
    for i in range(3):
        np.save(tmp_path / f"seq_{i}.npy", frames[i])
    docs = [
        _old_sr("AD_HDF5", str(tmp_path), "det.h5", {"frame_per_point": 1}),
        _old_sr("AD_TIFF", str(tmp_path), "tiffs/",
                {"template": "%s%s_%6.6d.tiff", "filename": "det", "frame_per_point": 1}),
        _old_sr("NPY_SEQ", str(tmp_path), "seq", {}),
    ]
    for doc in docs:
        new = normalize_stream_resource(doc)
        cls = lookup_reader(new["mimetype"])
        with cls(uri_to_path(new["uri"]), new["parameters"]) as reader:
            np.testing.assert_array_equal(reader.read(0, 3), frames[:3])


# ================================================================ HDF5
@pytest.fixture
def frames():
    return np.random.default_rng(7).integers(0, 60000, size=(12, 4, 5), dtype="uint16")


def write_h5(path, frames, *, swmr=False):
    path = os.fspath(path)
    with h5py.File(path, "w", libver="latest" if swmr else "earliest") as f:
        f.create_dataset(DATASET, data=frames, maxshape=(None, *frames.shape[1:]),
                         chunks=(1, *frames.shape[1:]))
        f.create_dataset("/entry/sum", data=frames.sum(axis=(1, 2)).astype("float64"))
        if swmr:
            f.swmr_mode = True
    return path


def direct(path, dataset, start, stop):
    with h5py.File(path, "r") as f:
        return f[dataset][start:stop]


@pytest.fixture
def h5file(tmp_path, frames):
    return write_h5(tmp_path / "det.h5", frames)


@pytest.mark.parametrize("start, stop", [(0, 1), (3, 7), (0, 12), (11, 12)])
def test_hdf5_read(h5file, start, stop):
    with HDF5Reader(h5file, {"dataset": DATASET, "chunk_shape": [1, 4, 5]}) as reader:
        value = reader.read(start, stop)
    assert value.dtype == np.uint16
    np.testing.assert_array_equal(value, direct(h5file, DATASET, start, stop))


def test_hdf5_describe_and_other_dataset(h5file, frames):
    with HDF5Reader(h5file, {"dataset": DATASET}) as reader:
        assert reader.describe() == ((12, 4, 5), np.dtype("uint16"))
        assert reader.read(4, 4).shape == (0, 4, 5)
    with HDF5Reader(h5file, {"dataset": "/entry/sum"}) as reader:
        assert reader.describe() == ((12,), np.dtype("float64"))
        np.testing.assert_array_equal(reader.read(2, 5), direct(h5file, "/entry/sum", 2, 5))
    assert isinstance(reader, StreamReader) and isinstance(reader, ReaderBase)


def test_hdf5_read_is_one_slice_under_the_lock(h5file, monkeypatch):
    calls = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        calls.append((key, HDF5_LOCK._lock._is_owned()))
        return original(self, key)

    with HDF5Reader(h5file, {"dataset": DATASET}) as reader:
        monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
        reader.read(2, 10)
    assert calls == [(slice(2, 10), True)]


@pytest.mark.parametrize("swmr_file", [False, True])
@pytest.mark.parametrize("swmr", [None, True, False])
def test_hdf5_swmr_modes(tmp_path, frames, swmr_file, swmr):
    path = write_h5(tmp_path / "det.h5", frames, swmr=swmr_file)
    parameters = {"dataset": DATASET} if swmr is None else {"dataset": DATASET, "swmr": swmr}
    with HDF5Reader(path, parameters) as reader:
        np.testing.assert_array_equal(reader.read(0, 12), frames)
        assert reader._file.swmr_mode is (swmr is not False)  # default: swmr=True, as tiled


def test_hdf5_swmr_falls_back_to_plain_open(h5file, frames, monkeypatch):
    opened = []
    real_file = h5py.File

    def fake_file(path, mode, **kwargs):
        opened.append(kwargs)
        if kwargs.get("swmr"):
            raise OSError("Unable to open file (file format does not support SWMR)")
        return real_file(path, mode, **kwargs)

    monkeypatch.setattr(hdf5_module.h5py, "File", fake_file)
    with HDF5Reader(h5file, {"dataset": DATASET, "locking": False}) as reader:
        np.testing.assert_array_equal(reader.read(0, 12), frames)
        assert not reader._file.swmr_mode
    monkeypatch.undo()
    assert opened == [{"swmr": True, "locking": False}, {"locking": False}]


def test_hdf5_swmr_sees_appended_frames(tmp_path, frames):
    path = os.fspath(tmp_path / "live.h5")
    with h5py.File(path, "w", libver="latest") as writer:
        data = writer.create_dataset(DATASET, data=frames[:3], maxshape=(None, 4, 5),
                                     chunks=(1, 4, 5))
        writer.swmr_mode = True
        with HDF5Reader(path, {"dataset": DATASET}) as reader:
            assert reader.describe()[0] == (3, 4, 5)
            with pytest.raises(OutOfRangeError):
                reader.read(0, 5)
            data.resize((5, 4, 5))
            data[3:5] = frames[3:5]
            data.flush()
            assert reader.describe()[0] == (5, 4, 5)
            np.testing.assert_array_equal(reader.read(0, 5), frames[:5])


def test_readers_pickle_as_recipes(h5file, frames, tmp_path):
    path = write_tiffs(tmp_path / "t", frames[:2], "i{:d}.tiff")
    for reader in (HDF5Reader(h5file, {"dataset": DATASET, "swmr": False}),
                   TIFFReader(path, {"template": "i{:d}.tiff"})):
        with reader, pickle.loads(pickle.dumps(reader)) as copy:
            assert type(copy) is type(reader) and copy.parameters == reader.parameters
            np.testing.assert_array_equal(copy.read(0, 2), reader.read(0, 2))
            if isinstance(copy, HDF5Reader):
                assert copy._file is not reader._file


def test_hdf5_close_is_idempotent_and_reopens(h5file, frames):
    reader = HDF5Reader(h5file, {"dataset": DATASET})
    assert "<open>" in repr(reader)
    reader.close()
    reader.close()
    assert reader._file is None and "<closed>" in repr(reader)
    np.testing.assert_array_equal(reader.read(1, 2), frames[1:2])  # re-opened
    with reader:
        pass
    assert reader._file is None


def test_hdf5_missing_dataset_parameter(h5file):
    with pytest.raises(InvalidArgumentError) as info:
        HDF5Reader(h5file, {"chunk_shape": [1, 4, 5]})
    assert "'dataset'" in str(info.value) and h5file in str(info.value)
    with pytest.raises(InvalidArgumentError, match="'dataset'"):
        HDF5Reader.paths(h5file, {})


def test_hdf5_dataset_not_in_file(h5file):
    with pytest.raises(ReaderError) as info:
        HDF5Reader(h5file, {"dataset": "/entry/nope"})
    message = str(info.value)
    assert "/entry/nope" in message and h5file in message and DATASET in message
    with pytest.raises(ReaderError, match="not a dataset"):
        HDF5Reader(h5file, {"dataset": "/entry"})


def test_hdf5_missing_file(tmp_path):
    path = os.fspath(tmp_path / "gone.h5")
    with pytest.raises(MissingFileError) as info:
        HDF5Reader(path, {"dataset": DATASET, "chunk_shape": [1, 2, 2]})
    assert isinstance(info.value, FileNotFoundError)
    assert path in str(info.value) and "chunk_shape" in str(info.value)


def test_hdf5_not_an_hdf5_file(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5")
    with pytest.raises(ReaderError, match="text.h5"):
        HDF5Reader(path, {"dataset": DATASET})


@pytest.mark.parametrize("start, stop", [(10, 13), (-1, 2), (5, 3), (12, 13)])
def test_hdf5_out_of_range(h5file, start, stop):
    with HDF5Reader(h5file, {"dataset": DATASET}) as reader:
        with pytest.raises(OutOfRangeError) as info:
            reader.read(start, stop)
    assert isinstance(info.value, IndexError)
    assert h5file in str(info.value) and "12 entries" in str(info.value)


def test_hdf5_scalar_dataset(tmp_path):
    path = os.fspath(tmp_path / "s.h5")
    with h5py.File(path, "w") as f:
        f["x"] = 3.0
    with HDF5Reader(path, {"dataset": "/x"}) as reader:
        assert reader.describe() == ((), np.dtype("float64"))
        with pytest.raises(ReaderError, match="scalar"):
            reader.read(0, 1)


def test_hdf5_template_is_not_supported(h5file):
    parameters = {"dataset": DATASET, "template": "det_{:06d}.h5"}
    with pytest.raises(UnsupportedStreamResourceError) as info:
        HDF5Reader(h5file, parameters)
    assert isinstance(info.value, NotImplementedError)
    assert "det_{:06d}.h5" in str(info.value) and "register_reader" in str(info.value)
    with pytest.raises(UnsupportedStreamResourceError):
        HDF5Reader.paths(h5file, parameters)


def test_hdf5_paths(h5file):
    assert HDF5Reader.paths(h5file, {"dataset": DATASET}, 5) == [h5file]


# ================================================================ multipart
def write_tiffs(directory, frames, template):
    os.makedirs(directory, exist_ok=True)
    for i, frame in enumerate(frames):
        tifffile.imwrite(os.path.join(directory, template.format(i)), frame)
    return os.fspath(directory) + "/"


def write_jpegs(directory, images, template):
    os.makedirs(directory, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(directory, template.format(i)), quality=95)
    return os.fspath(directory) + "/"


def independent(reader_class, files):
    if reader_class is TIFFReader:
        return np.stack([tifffile.imread(f) for f in files])
    if reader_class is JPEGReader:
        return np.stack([np.asarray(Image.open(f)) for f in files])
    return np.stack([np.load(f) for f in files])


@pytest.fixture(params=["tiff", "tiff-old", "jpeg-grey", "jpeg-rgb", "npy"])
def series(request, tmp_path, frames):
    """(reader class, path, parameters, files, entry shape, dtype) of 5 files."""
    kind = request.param
    rng = np.random.default_rng(3)
    if kind == "tiff":
        path = write_tiffs(tmp_path / "tiffs", frames[:5], "img_{:06d}.tiff")
        parameters = {"template": "img_{:06d}.tiff", "chunk_shape": [1, 4, 5]}
        cls, shape, dtype = TIFFReader, (4, 5), "uint16"
    elif kind == "tiff-old":
        path = write_tiffs(tmp_path / "tiffs", frames[:5], "det_{:06d}.tiff")
        parameters = {"template": "%s%s_%6.6d.tiff", "filename": "det"}
        cls, shape, dtype = TIFFReader, (4, 5), "uint16"
    elif kind.startswith("jpeg"):
        shape = (16, 24) if kind == "jpeg-grey" else (16, 24, 3)
        images = rng.integers(0, 255, size=(5, *shape), dtype="uint8")
        path = write_jpegs(tmp_path / "jpegs", images, "frame{:03d}.jpg")
        parameters = {"template": "frame{:03d}.jpg"}
        cls, dtype = JPEGReader, "uint8"
    else:
        path = os.fspath(tmp_path / "spectra")  # a file-name prefix, not a directory
        for i in range(5):
            np.save(f"{path}_{i}.npy", rng.normal(size=(6,)))
        parameters = {"template": "_{:d}.npy"}
        cls, shape, dtype = NPYReader, (6,), "float64"
    files = cls.paths(path, parameters, 5)
    return cls, path, parameters, files, shape, np.dtype(dtype)


def test_multipart_describe_and_read(series):
    cls, path, parameters, files, shape, dtype = series
    assert all(os.path.exists(f) for f in files)
    with cls(path, parameters) as reader:
        assert reader.describe() == ((5, *shape), dtype)
        for start, stop in [(0, 5), (1, 4), (4, 5)]:
            value = reader.read(start, stop)
            assert value.shape == (stop - start, *shape) and value.dtype == dtype
            np.testing.assert_array_equal(value, independent(cls, files[start:stop]))
        assert reader.read(2, 2).shape == (0, *shape)


def test_multipart_out_of_range(series):
    cls, path, parameters, *_ = series
    with cls(path, parameters) as reader:
        for start, stop in [(3, 7), (5, 6), (-1, 1), (3, 2)]:
            with pytest.raises(OutOfRangeError) as info:
                reader.read(start, stop)
            assert path in str(info.value)
        with pytest.raises(OutOfRangeError, match="holds 5 entries"):
            reader.read(3, 7)


def test_multipart_paths(tmp_path, frames):
    path = write_tiffs(tmp_path / "t", frames[:3], "a_{:02d}.tif")
    tifffile.imwrite(os.path.join(path, "a_04.tif"), frames[4])  # after a gap: not counted
    params = {"template": "a_{:02d}.tif"}
    assert TIFFReader.paths(path, params, 2) == [path + "a_00.tif", path + "a_01.tif"]
    assert TIFFReader.paths(path, params) == [path + f"a_0{i}.tif" for i in range(3)]
    assert TIFFReader(path, params).describe()[0][0] == 3
    # a template with its own leading "/" after a directory uri: one "/" kept
    assert TIFFReader.paths(path, {"template": "/a_{:02d}.tif"}, 1) == [path + "a_00.tif"]
    assert TIFFReader.paths(os.fspath(tmp_path / "none") + "/", params) == []


def test_multipart_missing_template(tmp_path):
    with pytest.raises(InvalidArgumentError) as info:
        TIFFReader(os.fspath(tmp_path) + "/", {"chunk_shape": [1, 2, 2]})
    assert "'template'" in str(info.value) and TIFF in str(info.value)


@pytest.mark.parametrize("template", ["img_{name}.tiff", "img_{}_{}.tiff", "%d_%d.tiff"])
def test_multipart_bad_template(tmp_path, template):
    with pytest.raises(InvalidArgumentError, match="template"):
        TIFFReader(os.fspath(tmp_path) + "/", {"template": template})


def test_multipart_missing_directory(tmp_path):
    path = os.fspath(tmp_path / "gone") + "/"
    with pytest.raises(MissingFileError) as info:
        JPEGReader(path, {"template": "f{:03d}.jpg", "chunk_shape": [1, 8, 8]})
    assert path.rstrip("/") in str(info.value) and JPEG in str(info.value)
    assert "chunk_shape" in str(info.value)


def test_multipart_no_files_yet(tmp_path):
    reader = NPYReader(os.fspath(tmp_path) + "/", {"template": "x_{:d}.npy"})
    with pytest.raises(MissingFileError, match="x_0.npy"):
        reader.describe()
    with pytest.raises(OutOfRangeError, match="holds 0 entries"):
        reader.read(0, 1)


def test_multipart_corrupt_and_mismatched_files(tmp_path, frames):
    path = write_tiffs(tmp_path / "t", frames[:2], "i{:d}.tiff")
    tifffile.imwrite(path + "i2.tiff", frames[2, :2])          # another shape
    (tmp_path / "t" / "i3.tiff").write_bytes(b"not a tiff")    # not a TIFF
    reader = TIFFReader(path, {"template": "i{:d}.tiff"})
    with pytest.raises(ReaderError) as info:
        reader.read(0, 3)
    assert "i2.tiff" in str(info.value) and "(2, 5)" in str(info.value)
    with pytest.raises(ReaderError) as info:
        reader.read(3, 4)
    assert "i3.tiff" in str(info.value) and TIFF in str(info.value)


@pytest.mark.parametrize("template, filename, expected", [
    ("%s%s_%6.6d.tiff", "det", "det_{:06d}.tiff"),
    ("%s%s_%6.6d.tif", "", "_{:06d}.tif"),
    ("%s_%d.npy", "", "_{:d}.npy"),
    ("%s%s_%.4d.tiff", "x", "x_{:04d}.tiff"),
    ("%s%s%05d.tiff", "{b}", "{{b}}{:05d}.tiff"),
    ("f_%d_100%%.jpg", "", "f_{:d}_100%.jpg"),
    ("img_{:06d}.tiff", "ignored", "img_{:06d}.tiff"),
])
def test_compile_template(template, filename, expected):
    compiled = compile_template(template, filename)
    assert compiled == expected
    if "%" in template:  # the same file names as printf-style formatting
        n = template.count("%s")
        old = template % ((filename,) + ("",) * (n - 1) + (7,)) if n else template % 7
        assert compiled.format(7) == old


# ================================================================ registry
class FakeReader:
    def __init__(self, path, parameters): ...

    def read(self, start, stop): ...

    def describe(self): ...

    @classmethod
    def paths(cls, path, parameters, n_entries=None): ...


class OtherReader(FakeReader):
    pass


def _ep(name, value):
    return EntryPoint(name=name, value=value, group="dask_broker.readers")


def test_builtins_by_mimetype():
    reg = ReaderRegistry(entry_point_groups=())
    assert reg.lookup(HDF5) is HDF5Reader
    assert reg.lookup(TIFF) is TIFFReader
    assert reg.lookup(JPEG) is JPEGReader
    assert reg.lookup(NPY) is NPYReader
    assert reg.lookup(" Multipart/Related; TYPE=Image/TIFF ") is TIFFReader
    assert TIFF in reg and "multipart/related" not in reg
    for other in ("multipart/related", "multipart/related;type=image/png"):
        with pytest.raises(ReaderNotFoundError):
            reg.lookup(other)


def test_register_overwrite_deregister():
    reg = ReaderRegistry(entry_point_groups=())
    reg.register(HDF5, FakeReader)                     # explicit beats built-in
    assert reg.lookup("APPLICATION/X-HDF5") is FakeReader
    reg.register(HDF5, FakeReader)                     # same class again: no-op
    with pytest.raises(DuplicateReaderError) as info:
        reg.register("application/x-hdf5 ", OtherReader)
    assert isinstance(info.value, ValueError)
    assert HDF5 in str(info.value) and "overwrite=True" in str(info.value)
    reg.register(HDF5, OtherReader, overwrite=True)
    assert reg.lookup(HDF5) is OtherReader
    assert reg.deregister(HDF5) is OtherReader
    assert reg.lookup(HDF5) is HDF5Reader              # the built-in again
    with pytest.raises(ReaderNotFoundError, match="no explicitly registered reader"):
        reg.deregister(HDF5)


def test_register_checks_the_class():
    reg = ReaderRegistry(entry_point_groups=())
    with pytest.raises(TypeError, match="not a class"):
        reg.register("image/x", FakeReader("/p", {}))
    with pytest.raises(TypeError, match=r"lacks \['read', 'describe', 'paths'\]"):
        reg.register("image/x", type("Empty", (), {}))


def test_reader_not_found_message():
    reg = ReaderRegistry(entry_point_groups=())
    with pytest.raises(ReaderNotFoundError) as info:
        reg.lookup("image/png")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, DaskBrokerError)
    message = str(err)
    assert not message.startswith('"')  # plain text, not a KeyError repr
    assert "'image/png'" in message
    assert "db.register_reader('image/png', ReaderClass)" in message
    assert "dask_broker.readers.register_reader" in message
    assert HDF5 in message and TIFF in message


def test_entry_points_discovered_once_lazily_and_refreshed(fake_entry_points, monkeypatch):
    groups, calls = fake_entry_points
    module = types.ModuleType("fake_reader_pkg")
    module.PNGReader = FakeReader
    monkeypatch.setitem(sys.modules, "fake_reader_pkg", module)
    reg = ReaderRegistry()
    assert calls == []                                  # nothing at construction
    with pytest.raises(ReaderNotFoundError):
        reg.lookup("image/png")
    assert calls == ["dask_broker.readers"]
    groups["dask_broker.readers"] = [
        _ep("multipart/related;type%3Dimage/png", "fake_reader_pkg:PNGReader"),
        _ep(HDF5, "fake_reader_pkg:PNGReader"),
    ]
    with pytest.raises(ReaderNotFoundError):
        reg.lookup("multipart/related;type=image/png")  # still the first discovery
    reg.refresh()
    assert reg.lookup("Multipart/Related; type=image/PNG") is FakeReader
    assert reg.lookup(HDF5) is HDF5Reader               # built-in beats entry point
    assert "multipart/related;type=image/png" in reg.mimetypes()
    assert calls == ["dask_broker.readers"] * 2


def test_broken_entry_point_is_a_warning(fake_entry_points):
    groups, _ = fake_entry_points
    groups["dask_broker.readers"] = [_ep("image/png", "no_such_package_xyz:Reader")]
    reg = ReaderRegistry()
    with pytest.warns(RuntimeWarning, match="image/png.*no_such_package_xyz"):
        with pytest.raises(ReaderNotFoundError) as info:
            reg.lookup("image/png")
    assert "failed to load" in str(info.value)
    with pytest.raises(ReaderNotFoundError):  # no second warning
        reg.lookup("image/png")


def test_parent_registry_and_pickling():
    parent = ReaderRegistry(entry_point_groups=())
    child = ReaderRegistry(entry_point_groups=(), parent=parent)
    parent.register("image/png", FakeReader)
    assert child.lookup("image/png") is FakeReader
    child.register("image/png", OtherReader)
    assert child.lookup("image/png") is OtherReader
    copy = pickle.loads(pickle.dumps(child))
    assert copy.lookup("image/png") is OtherReader and copy.lookup(HDF5) is HDF5Reader
    assert pickle.loads(pickle.dumps(default_registry)) is default_registry


def test_default_registry_functions():
    register_reader("image/x-test", FakeReader)
    try:
        assert lookup_reader("image/x-test") is FakeReader
        assert default_registry.lookup("IMAGE/X-TEST") is FakeReader
    finally:
        assert deregister_reader("image/x-test") is FakeReader
    with pytest.raises(ReaderNotFoundError):
        lookup_reader("image/x-test")


def test_hdf5_read_into_reads_straight_into_out(h5file, frames):
    with HDF5Reader(h5file, {"dataset": "/entry/data/data"}) as reader:
        out = np.zeros((3, *frames.shape[1:]), dtype=frames.dtype)
        assert reader.read_into(2, 5, out) is out
        np.testing.assert_array_equal(out, frames[2:5])
        # rows of several entries: the same elements in another shape
        rows = np.zeros((1, 2, *frames.shape[1:]), dtype=frames.dtype)
        reader.read_into(0, 2, rows)
        np.testing.assert_array_equal(rows[0], frames[0:2])
        # another dtype: read, then converted
        as_float = np.zeros((2, *frames.shape[1:]))
        reader.read_into(1, 3, as_float)
        np.testing.assert_array_equal(as_float, frames[1:3])
        with pytest.raises(OutOfRangeError):
            reader.read_into(0, len(frames) + 1, np.zeros((len(frames) + 1, *frames.shape[1:])))
