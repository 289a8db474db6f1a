"""Helpers for tests: write area-detector HDF5 and .npy files and the documents of a run over them.

Shipped in the package (like ``zarr.testing``) so every test suite that needs
external data builds it the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .runs import RunBuilder

__all__ = ["write_ad_hdf5", "write_npy", "ExternalRun", "make_external_run"]


def write_ad_hdf5(path: str | os.PathLike, frames: np.ndarray) -> str:
    """Write ``frames`` (frames along axis 0) to ``/entry/data/data`` of a new HDF5 file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = write_ad_hdf5(os.path.join(tempfile.mkdtemp(), "a.h5"), np.zeros((2, 3, 4)))
    """
    import h5py

    from ..handlers.locks import HDF5_LOCK

    path = os.fspath(path)
    with HDF5_LOCK, h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=np.asarray(frames))
    return path


def write_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """Write ``array`` to the ``.npy`` file ``path``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = write_npy(os.path.join(tempfile.mkdtemp(), "a.npy"), np.arange(3))
    """
    path = os.fspath(path)
    np.save(path, np.asarray(array))
    return path


@dataclass
class ExternalRun:
    """The documents of a run with external data, and the files they point to."""

    documents: list[tuple[str, dict]]
    start: dict
    descriptor: dict
    events: list[dict]
    resources: dict[str, dict]
    datum: dict[str, dict]
    files: list[str] = field(default_factory=list)
    #: datum_id -> (file, point_number or None for NPY, frame_per_point or None)
    locations: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)
    stop: dict | None = None


def make_external_run(
    directory: str | os.PathLike,
    *,
    n_files: int = 2,
    points_per_file: int = 3,
    frame_per_point: int = 1,
    frame_shape: Sequence[int] = (4, 5),
    npy: bool = True,
    root: str | None = None,
    seed: int = 0,
) -> ExternalRun:
    """Write files and compose a run whose events point into them.

    Stream ``primary`` has fields ``motor`` (a number), ``img`` (``AD_HDF5``:
    ``n_files`` files of ``points_per_file`` points each) and, if ``npy``,
    ``spectrum`` (``NPY``: one file per event).  One event per point.

    Parameters
    ----------
    directory
        Where the files are written.
    root
        The resources' ``root``; default ``directory``.  With ``root=""`` the
        ``resource_path`` is the file's absolute path.

    Examples
    --------
    >>> import tempfile
    >>> run = make_external_run(tempfile.mkdtemp(), n_files=1, points_per_file=2)
    >>> [name for name, _ in run.documents][:3]
    ['start', 'descriptor', 'resource']
    """
    directory = os.fspath(directory)
    root = directory if root is None else root
    rng = np.random.default_rng(seed)
    fpp = frame_per_point
    img_shape = [fpp, *frame_shape]  # as ophyd declares it: [num_images, y, x]
    run = RunBuilder().bundle
    data_keys = {
        "motor": {"source": "sim:motor", "dtype": "number", "shape": []},
        "img": {"source": "sim:det", "dtype": "array", "shape": img_shape,
                "external": "FILESTORE:"},
    }
    if npy:
        data_keys["spectrum"] = {"source": "sim:mca", "dtype": "array", "shape": [6],
                                 "external": "FILESTORE:"}
    desc = run.compose_descriptor(name="primary", data_keys=data_keys)
    out = ExternalRun(documents=[("start", run.start_doc), ("descriptor", desc.descriptor_doc)],
                      start=run.start_doc, descriptor=desc.descriptor_doc, events=[],
                      resources={}, datum={})

    def resource(spec: str, path: str, kwargs: dict):
        resource_path = os.path.relpath(path, root) if root else os.path.abspath(path)
        bundle = run.compose_resource(spec=spec, root=root, resource_path=resource_path,
                                      resource_kwargs=kwargs)
        out.resources[bundle.resource_doc["uid"]] = bundle.resource_doc
        out.documents.append(("resource", bundle.resource_doc))
        out.files.append(path)
        return bundle

    def datum(bundle, kwargs: dict, location: tuple) -> str:
        doc = bundle.compose_datum(datum_kwargs=kwargs)
        out.datum[doc["datum_id"]] = doc
        out.documents.append(("datum", doc))
        out.locations[doc["datum_id"]] = location
        return doc["datum_id"]

    seq = 0
    for f in range(n_files):
        path = os.path.join(directory, f"det_{f:03d}.h5")
        frames = rng.integers(0, 60000, size=(points_per_file * fpp, *frame_shape), dtype="uint16")
        write_ad_hdf5(path, frames)
        img_res = resource("AD_HDF5", path, {"frame_per_point": fpp})
        for point in range(points_per_file):
            seq += 1
            data = {"motor": float(seq),
                    "img": datum(img_res, {"point_number": point}, (path, point, fpp))}
            if npy:
                npy_path = write_npy(os.path.join(directory, f"spectrum_{seq:04d}.npy"),
                                     rng.normal(size=6))
                data["spectrum"] = datum(resource("NPY", npy_path, {}), {}, (npy_path, None, None))
            event = desc.compose_event(
                data=data, timestamps={k: 0.0 for k in data}, seq_num=seq,
                filled={k: False for k in data if k != "motor"})
            out.events.append(event)
            out.documents.append(("event", event))
    out.stop = run.compose_stop()
    out.documents.append(("stop", out.stop))
    return out
