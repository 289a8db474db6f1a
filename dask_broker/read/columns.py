"""Column dtypes and sizes, from the descriptors' data_keys (nothing is read).

The pandas dtype of each column of a table and the bytes one row of it takes in
memory, which size the partitions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:
    from .plan import ColumnSpec

__all__ = ["column_dtype", "const_dtype", "stream_dtype", "itemsize", "ARRAY_GUESS_BYTES",
           "FRAME_GUESS_BYTES"]

#: Per-row size assumed for array / object fields of unknown size.
ARRAY_GUESS_BYTES = 64
#: Per-row size assumed for a filled frame of unknown shape.
FRAME_GUESS_BYTES = 2**20


def column_dtype(data_keys: list[Mapping], present_everywhere: bool) -> str:
    """The pandas dtype of a field from its data_keys in the stream's descriptors."""
    kinds = set()
    for dk in data_keys:
        if dk.get("external") or dk.get("shape"):
            kinds.add("object")
        else:
            kinds.add(dk.get("dtype", "object"))
    if len(kinds) != 1:
        return "f8" if kinds <= {"number", "integer"} else "object"
    kind = kinds.pop()
    if kind == "number":
        return "f8"
    if kind == "integer":
        return "i8" if present_everywhere else "f8"
    if kind == "boolean":
        return "bool" if present_everywhere else "object"
    if kind == "string":
        return "string"
    return "object"


def itemsize(column: "ColumnSpec", data_keys: list[Mapping]) -> int:
    """Bytes one event's (unfilled) value takes in memory (a guess where data_keys are vague)."""
    if column.dtype in ("f8", "i8"):
        return 8
    if column.dtype == "bool":
        return 1
    if any(dk.get("external") for dk in data_keys):
        return ARRAY_GUESS_BYTES  # a datum id
    shape = next((dk.get("shape") for dk in data_keys if dk.get("shape")), None)
    dtype = next((dk.get("dtype_numpy") for dk in data_keys if dk.get("dtype_numpy")), None)
    item = np.dtype(dtype).itemsize if dtype else 8
    if shape and all(isinstance(s, int) and s > 0 for s in shape):
        return item * math.prod(shape)
    return ARRAY_GUESS_BYTES


def const_dtype(values: list, present_everywhere: bool) -> str:
    """The column dtype of merged values (one per descriptor that has one)."""
    if values and all(isinstance(v, bool) for v in values):
        return "bool" if present_everywhere else "object"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "i8" if present_everywhere else "f8"
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "f8"
    if values and all(isinstance(v, str) for v in values):
        return "string"
    return "object"


def stream_dtype(data_key: Mapping, filled: bool) -> str:
    """A STREAM: key's column: references (object) unfilled; scalars per row as f8 filled."""
    shape = list(data_key.get("shape") or [])
    dtype = data_key.get("dtype_numpy")
    if filled and shape in ([], [1]) and dtype and np.dtype(dtype).kind in "fiub":
        return "f8"
    return "object"
