"""The built-in ``AD_HDF5`` handler: area-detector frames in one HDF5 dataset.

The file is opened on the first read and stays open until :meth:`close`, and
its dataset is looked up once and kept with it (both live exactly as long as the
open file); every h5py call holds :data:`~dask_broker.handlers.locks.HDF5_LOCK`.
"""

from __future__ import annotations

import operator
import os
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from .locks import HDF5_LOCK

__all__ = ["AreaDetectorHDF5Handler"]


def _point_number(point_number: int) -> int:
    point = operator.index(point_number)
    if point < 0:
        raise IndexError(f"point_number must be >= 0, got {point}")
    return point


def _runs(points: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted unique points grouped into contiguous runs ``(first, last)``."""
    runs: list[tuple[int, int]] = []
    for p in sorted(set(points)):
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


class AreaDetectorHDF5Handler:
    """Frames written by an area detector's HDF5 plugin (spec ``AD_HDF5``).

    Datum ``point_number=n`` is frames ``[n * fpp, (n + 1) * fpp)`` of the dataset
    ``/entry/data/data``: an array of shape ``(fpp, *frame)`` -- ``(1, *frame)`` when
    ``frame_per_point`` is 1, as area-detector-handlers returns it and as ophyd
    declares it (``shape: [num_images, y, x]``).

    Parameters
    ----------
    filename
        Path of the HDF5 file.
    frame_per_point
        Frames per datum (``resource_kwargs['frame_per_point']``).

    Examples
    --------
    >>> h = AreaDetectorHDF5Handler("/data/det_000.h5", frame_per_point=1)  # doctest: +SKIP
    >>> h(point_number=3).shape                                            # doctest: +SKIP
    (1, 256, 256)
    >>> [a.shape for a in h.read_many([{"point_number": 0}, {"point_number": 1}])]  # doctest: +SKIP
    [(1, 256, 256), (1, 256, 256)]
    >>> h.close()                                                          # doctest: +SKIP
    """

    specs = {"AD_HDF5"}
    dataset_path = "/entry/data/data"

    def __init__(self, filename: str | os.PathLike, frame_per_point: int = 1):
        fpp = operator.index(frame_per_point)
        if fpp < 1:
            raise ValueError(f"frame_per_point must be >= 1, got {frame_per_point!r}")
        self.filename = os.fspath(filename)
        self.frame_per_point = fpp
        self._file: h5py.File | None = None
        self._data: h5py.Dataset | None = None

    def __repr__(self) -> str:
        state = "open" if self._file is not None else "closed"
        return (f"{type(self).__name__}({self.filename!r}, "
                f"frame_per_point={self.frame_per_point}) <{state}>")

    def _dataset(self) -> h5py.Dataset:
        """The open file's dataset, looked up on the first read only (caller holds HDF5_LOCK)."""
        if self._data is not None:
            return self._data
        if self._file is None:
            self._file = h5py.File(self.filename, "r")
        try:
            self._data = self._file[self.dataset_path]
        except KeyError as err:
            raise KeyError(f"{self.filename!r} has no dataset {self.dataset_path!r}") from err
        return self._data

    def __call__(self, point_number: int) -> np.ndarray:
        """The frame(s) of one point."""
        return self.read_many([{"point_number": point_number}])[0]

    def read_many(self, datum_kwargs_list: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """The frames of several points, read as one slice per contiguous run of points.

        The arrays returned for distinct points are views into the block read
        for their run (no copy); a repeated point gets its own copy.
        """
        points = [_point_number(**kwargs) for kwargs in datum_kwargs_list]
        if not points:
            return []
        fpp = self.frame_per_point
        located: dict[int, tuple[np.ndarray, int]] = {}  # point -> (its run's block, offset)
        with HDF5_LOCK:
            dataset = self._dataset()
            n_frames = dataset.shape[0] if dataset.shape else 0
            for first, last in _runs(points):
                stop = (last + 1) * fpp
                if stop > n_frames:
                    bad = min(p for p in points if (p + 1) * fpp > n_frames)
                    raise IndexError(
                        f"point_number {bad} (frame_per_point {fpp}) needs frames "
                        f"[{bad * fpp}:{(bad + 1) * fpp}] but {self.dataset_path} of "
                        f"{self.filename!r} holds {n_frames} frames"
                    )
                block = dataset[first * fpp:stop]
                for p in range(first, last + 1):
                    located[p] = (block, p - first)
        out: list[np.ndarray] = []
        seen: set[int] = set()
        for p in points:
            block, i = located[p]
            value = block[i * fpp:(i + 1) * fpp]
            out.append(value.copy() if p in seen else value)
            seen.add(p)
        return out

    def read_into(self, datum_kwargs_list: Sequence[Mapping[str, Any]], out: np.ndarray) -> None:
        """Write the frames of each point into ``out[i]``, straight from the file.

        ``out`` holds one row per datum, of shape ``(fpp, *frame)`` (or ``frame`` when
        ``frame_per_point`` is 1); each run of consecutive points is one HDF5 read
        into the rows it fills (no intermediate array).
        """
        points = [_point_number(**kwargs) for kwargs in datum_kwargs_list]
        if len(out) != len(points):
            raise ValueError(f"out has {len(out)} rows for {len(points)} datum")
        if not points:
            return
        fpp = self.frame_per_point
        with HDF5_LOCK:
            dataset = self._dataset()
            n_frames = dataset.shape[0] if dataset.shape else 0
            frame = dataset.shape[1:]
            if out.shape[1:] not in ((fpp, *frame), frame if fpp == 1 else None) or \
                    not out.flags.c_contiguous:
                raise ValueError(f"out rows of shape {out.shape[1:]} do not hold {fpp} "
                                 f"frame(s) of {frame}")
            flat = out.reshape((len(points) * fpp, *frame))  # a view: out is contiguous
            i = 0
            while i < len(points):
                j = i + 1
                while j < len(points) and points[j] == points[j - 1] + 1:
                    j += 1
                first, stop = points[i] * fpp, (points[j - 1] + 1) * fpp
                if stop > n_frames:
                    bad = next(p for p in points[i:j] if (p + 1) * fpp > n_frames)
                    raise IndexError(
                        f"point_number {bad} (frame_per_point {fpp}) needs frames "
                        f"[{bad * fpp}:{(bad + 1) * fpp}] but {self.dataset_path} of "
                        f"{self.filename!r} holds {n_frames} frames"
                    )
                dataset.read_direct(flat, np.s_[first:stop], np.s_[i * fpp:j * fpp])
                i = j

    def describe(self, point_number: int = 0) -> tuple[tuple[int, ...], np.dtype]:
        """Shape ``(fpp, *frame)`` and dtype of a point's data, from the file's metadata."""
        _point_number(point_number)
        with HDF5_LOCK:
            dataset = self._dataset()
            return (self.frame_per_point, *dataset.shape[1:]), dataset.dtype

    def get_file_list(self, datum_kwargs_list: Sequence[Mapping[str, Any]]) -> list[str]:
        """The one file this resource covers."""
        return [self.filename]

    def close(self) -> None:
        """Close the HDF5 file (idempotent; a later read re-opens it)."""
        with HDF5_LOCK:
            file, self._file, self._data = self._file, None, None
            if file is not None:
                file.close()

    def __enter__(self) -> "AreaDetectorHDF5Handler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
