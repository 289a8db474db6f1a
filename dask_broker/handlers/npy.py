"""The built-in ``NPY`` handler: one ``.npy`` file per resource."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["NpyHandler"]


def _no_datum_kwargs() -> None:
    """NPY datum take no arguments (a TypeError names any that are given)."""


class NpyHandler:
    """A whole ``.npy`` file per resource (spec ``NPY``; ``datum_kwargs`` are empty).

    Nothing stays open: each read opens, loads and closes the file.

    Parameters
    ----------
    filename
        Path of the ``.npy`` file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(3))
    >>> NpyHandler(path)()
    array([0, 1, 2])
    """

    specs = {"NPY"}

    def __init__(self, filename: str | os.PathLike):
        self.filename = os.fspath(filename)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.filename!r})"

    def __call__(self) -> np.ndarray:
        """The array stored in the file."""
        return np.load(self.filename, allow_pickle=False)

    def read_many(self, datum_kwargs_list: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """The array, once per datum, reading the file once (each datum gets its own array)."""
        kwargs_list = list(datum_kwargs_list)
        for kwargs in kwargs_list:
            _no_datum_kwargs(**kwargs)
        if not kwargs_list:
            return []
        array = self()
        return [array] + [array.copy() for _ in kwargs_list[1:]]

    def get_file_list(self, datum_kwargs_list: Sequence[Mapping[str, Any]]) -> list[str]:
        """The one file this resource covers."""
        return [self.filename]

    def close(self) -> None:
        """Nothing to release (no file is held open)."""
