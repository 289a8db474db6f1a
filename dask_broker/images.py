"""Images: the frames of one field, a lazy sequence over a dask array (``db.get_images``)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any, Iterator

import numpy as np

__all__ = ["Images"]


class Images(Sequence):
    """The frames of a field, one per event, read only when asked for.

    A sequence over a dask array whose first axis counts events: ``len()``,
    ``images[i]`` (a numpy array, reading that one frame), ``images[i:j]`` (a
    smaller lazy ``Images``) and iteration (one chunk of frames in memory at a
    time).  It stands where databroker's ``get_images`` gave a pims sequence.

    Parameters
    ----------
    array
        A dask array, frames along axis 0.

    Examples
    --------
    >>> import dask.array as da
    >>> frames = Images(da.arange(24, chunks=6).reshape(4, 2, 3))
    >>> len(frames), frames.frame_shape
    (4, (2, 3))
    >>> frames[-1]
    array([[18, 19, 20],
           [21, 22, 23]])
    >>> len(frames[1:3])
    2
    """

    def __init__(self, array: Any):
        if getattr(array, "ndim", 0) < 1:
            raise TypeError(f"Images needs an array with frames along axis 0, got {array!r}")
        self._array = array

    def to_dask(self) -> Any:
        """The dask array of the frames (frames along axis 0)."""
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        """``(frames, *frame_shape)``."""
        return tuple(self._array.shape)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame."""
        return tuple(self._array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """The frames' dtype."""
        return self._array.dtype

    #: pims' name for the dtype.
    pixel_type = dtype

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return Images(self._array[key])
        if isinstance(key, Integral) and not isinstance(key, bool):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"frame {key} is out of range: there are {n} frames")
            return np.asarray(self._array[int(key)].compute())
        raise TypeError(f"index frames with an int or a slice, not {type(key).__name__}")

    def __iter__(self) -> Iterator[np.ndarray]:
        start = 0
        for rows in self._array.chunks[0]:
            block = np.asarray(self._array[start:start + rows].compute())
            start += rows
            yield from block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self._array.compute())
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"<Images: {len(self)} frames of {self.frame_shape} {self.dtype}>"
