"""The ``application/x-hdf5`` reader: entries of one dataset of one HDF5 file.

The file is opened when the reader is made and stays open until :meth:`close`
(a later read re-opens it).  Every h5py call holds
:data:`~dask_broker.handlers.locks.HDF5_LOCK`.  As tiled does, the file is
opened in SWMR mode unless ``parameters["swmr"]`` is false, so a file still
being written can be read; a file that cannot be opened that way is opened
plainly read-only.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import h5py
import numpy as np

from ..errors import (
    InvalidArgumentError,
    MissingFileError,
    ReaderError,
    UnsupportedStreamResourceError,
)
from ..handlers.locks import HDF5_LOCK
from .base import ReaderBase

__all__ = ["HDF5Reader"]

MIMETYPE = "application/x-hdf5"


def _datasets(file: h5py.File, limit: int = 20) -> list[str]:
    names: list[str] = []

    def visit(name: str, obj: Any) -> Any:
        if isinstance(obj, h5py.Dataset):
            names.append("/" + name)
        return True if len(names) >= limit else None

    file.visititems(visit)
    return names


class HDF5Reader(ReaderBase):
    """Entries along the first axis of ``parameters["dataset"]`` in the HDF5 file ``path``.

    Parameters
    ----------
    path
        Local path of the HDF5 file.
    parameters
        The stream_resource's parameters: ``dataset`` (required, the dataset's
        path in the file), ``swmr`` (default True) and ``locking`` (HDF5 file
        locking, passed to :class:`h5py.File`; default: h5py's).

    Raises
    ------
    InvalidArgumentError
        ``parameters`` has no ``dataset``.
    UnsupportedStreamResourceError
        ``parameters`` has a ``template`` (a series of HDF5 files).
    MissingFileError
        ``path`` does not exist.
    ReaderError
        The file is not HDF5, or has no such dataset (the message lists some
        that it has).

    Examples
    --------
    >>> import h5py, numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "det.h5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("/entry/data/data", data=np.arange(24).reshape(6, 2, 2))
    >>> with HDF5Reader(path, {"dataset": "/entry/data/data"}) as reader:
    ...     reader.describe()
    ...     reader.read(2, 4).shape
    ((6, 2, 2), dtype('int64'))
    (2, 2, 2)
    """

    mimetypes = (MIMETYPE,)

    def __init__(self, path: str | os.PathLike, parameters: Mapping[str, Any]):
        super().__init__(path, parameters)
        self.dataset_path = self._dataset_parameter(self.path, self.parameters)
        self.swmr = bool(self.parameters.get("swmr", True))
        self.locking = self.parameters.get("locking")
        self._file: h5py.File | None = None
        self._dataset: h5py.Dataset | None = None
        with HDF5_LOCK:
            self._open()

    @staticmethod
    def _dataset_parameter(path: str, parameters: Mapping[str, Any]) -> str:
        if parameters.get("template"):
            raise UnsupportedStreamResourceError(
                f"stream_resource of {path!r} ({MIMETYPE}) has a 'template' parameter "
                f"({parameters['template']!r}): a series of HDF5 files, which dask_broker "
                f"does not read yet. Register a reader for it with "
                f"db.register_reader({MIMETYPE!r}, ReaderClass)"
            )
        dataset = parameters.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise InvalidArgumentError(
                f"stream_resource of {path!r} ({MIMETYPE}) needs the parameter 'dataset' "
                f"(the dataset's path in the file, e.g. '/entry/data/data'); its parameters "
                f"are {dict(parameters)!r}"
            )
        return dataset

    def __repr__(self) -> str:
        state = "open" if self._file is not None else "closed"
        return f"{type(self).__name__}({self.path!r}, dataset={self.dataset_path!r}) <{state}>"

    # ------------------------------------------------------------ files
    def _open_file(self) -> h5py.File:
        kwargs = {} if self.locking is None else {"locking": self.locking}
        if self.swmr:
            try:
                return h5py.File(self.path, "r", swmr=True, **kwargs)
            except FileNotFoundError:
                raise
            except OSError:
                if not os.path.exists(self.path):
                    raise
                # Not openable in SWMR mode (e.g. an old file format): read it plainly.
        return h5py.File(self.path, "r", **kwargs)

    def _open(self) -> h5py.Dataset:
        """The dataset, opening the file if needed (caller holds HDF5_LOCK)."""
        if self._dataset is not None:
            return self._dataset
        try:
            file = self._open_file()
        except FileNotFoundError as err:
            raise MissingFileError(
                f"HDF5 file {self.path!r} of a stream_resource (parameters "
                f"{self.parameters!r}) is missing; if the files were moved, set a root_map "
                f"(db.set_root_map) that maps the uri's directory to where they are now"
            ) from err
        except OSError as err:
            raise ReaderError(
                f"cannot open {self.path!r} as HDF5 ({MIMETYPE}): {err} (if another process "
                f"holds it open for writing, the stream_resource parameter 'locking': False "
                f"may help)") from err
        try:
            obj = file.get(self.dataset_path)
            if not isinstance(obj, h5py.Dataset):
                what = "no object" if obj is None else f"a {type(obj).__name__}, not a dataset,"
                raise ReaderError(
                    f"{self.path!r} has {what} at {self.dataset_path!r} (stream_resource "
                    f"parameter 'dataset'); datasets in the file include {_datasets(file)}"
                )
        except BaseException:
            file.close()
            raise
        self._file, self._dataset = file, obj
        return obj

    def close(self) -> None:
        """Close the file (idempotent; a later read re-opens it)."""
        with HDF5_LOCK:
            file, self._file, self._dataset = self._file, None, None
            if file is not None:
                file.close()

    # ------------------------------------------------------------ reading
    def describe(self) -> tuple[tuple[int, ...], np.dtype]:
        """The dataset's shape and dtype (its current shape, for a file being written)."""
        with HDF5_LOCK:
            dataset = self._open()
            return tuple(dataset.shape), dataset.dtype

    def _entries(self, start: int, stop: int) -> tuple[h5py.Dataset, int, int]:
        """The dataset and the checked range ``[start, stop)`` (caller holds HDF5_LOCK)."""
        dataset = self._open()
        if dataset.ndim == 0:
            raise ReaderError(
                f"dataset {self.dataset_path!r} of {self.path!r} is a scalar; it has "
                f"no entries along a first axis to read")
        if stop > dataset.shape[0] and self._file is not None and self._file.swmr_mode:
            # Only when asked past the known end: see what a SWMR writer appended.
            # (Never by default: refresh() with the same file opened twice in one
            # process corrupts HDF5's state -- "can't insert duplicate key", crashes.)
            dataset.refresh()
        start, stop = self._check_range(start, stop, dataset.shape[0])
        return dataset, start, stop

    def read(self, start: int, stop: int) -> np.ndarray:
        """Entries ``[start, stop)`` of the dataset, read as one h5py slice.

        Raises
        ------
        OutOfRangeError
            The range lies outside the dataset (the message gives its length).
        ReaderError
            The dataset is a scalar, or h5py failed to read it.
        """
        with HDF5_LOCK:
            dataset, start, stop = self._entries(start, stop)
            try:
                return dataset[start:stop]
            except OSError as err:
                raise ReaderError(
                    f"reading entries [{start}, {stop}) of {self.dataset_path!r} in "
                    f"{self.path!r} failed: {err}") from err

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Entries ``[start, stop)`` read straight into ``out`` (one HDF5 read, no copy).

        ``out`` holds the same number of elements (e.g. rows of several entries);
        when it is not contiguous or of another size, the entries are read and copied.
        """
        with HDF5_LOCK:
            dataset, start, stop = self._entries(start, stop)
            shape = (stop - start, *dataset.shape[1:])
            direct = out.flags.c_contiguous and out.size == int(np.prod(shape)) and \
                out.dtype == dataset.dtype
            if direct:
                try:
                    dataset.read_direct(out.reshape(shape), np.s_[start:stop])
                except OSError as err:
                    raise ReaderError(
                        f"reading entries [{start}, {stop}) of {self.dataset_path!r} in "
                        f"{self.path!r} failed: {err}") from err
        if not direct:
            return super().read_into(start, stop, out)
        return out

    @classmethod
    def paths(cls, path: str, parameters: Mapping[str, Any],
              n_entries: int | None = None) -> list[str]:
        """``[path]``: the one file the stream_resource covers.

        Examples
        --------
        >>> HDF5Reader.paths("/data/det.h5", {"dataset": "/entry/data/data"})
        ['/data/det.h5']
        """
        cls._dataset_parameter(os.fspath(path), parameters)
        return [os.fspath(path)]
