"""Encoding of event columns (one field of a page of events) to bytes and back.

A column is the list of one field's values across consecutive events.  Numeric
and boolean columns are stored as raw little-endian numpy buffers (decoding is a
zero-copy ``np.frombuffer``); regular numeric arrays as one stacked buffer plus
shape; anything else (strings, ragged lists, None, mixed types) as JSON.

The codec is chosen from the values themselves, not from the descriptor, so a
document read back has the same Python types that went in.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Sequence

import numpy as np

from .values import SCALAR_DTYPES, column_kind, fits_int64

__all__ = ["encode_column", "decode_column", "column_to_list", "to_jsonable", "dumps"]

_SCALAR_CODECS = SCALAR_DTYPES


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars and arrays (recursively) to plain Python for JSON."""
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def dumps(obj: Any) -> str:
    """JSON-encode a document, accepting numpy values (NaN is kept as ``NaN``).

    A value JSON cannot hold (bytes, a set, an object) raises
    :class:`~dask_broker.errors.DocumentValidationError`.
    """
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


def dumps_strings(values: Sequence[str]) -> str:
    """:func:`dumps` of a list of str, fast for the usual uids: ASCII needing no escape.

    Examples
    --------
    >>> dumps_strings(["a1", "b2"])
    '["a1","b2"]'
    >>> dumps_strings(['say "hi"', "\u00e9"]) == dumps(['say "hi"', "\u00e9"])
    True
    """
    values = list(values)
    try:
        joined = "".join(values)
    except TypeError:  # not all str
        return dumps(values)
    # what json.dumps escapes: all but printable ASCII, and " and \\
    if joined.isascii() and not joined.encode("ascii").translate(None, _UNESCAPED):
        return '["' + '","'.join(values) + '"]' if values else "[]"
    return dumps(values)


#: The ASCII characters JSON writes as they are (printable, but " and \\).
_UNESCAPED = bytes(c for c in range(32, 127) if c not in b'"\\')


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    from .errors import DocumentValidationError

    shown = repr(obj)
    raise DocumentValidationError(
        f"a document holds a value of type {type(obj).__name__} "
        f"({shown[:60] + '...' if len(shown) > 60 else shown}), which JSON cannot hold: "
        "documents hold str, numbers, booleans, None, lists, dicts and numpy arrays "
        "(decode bytes to str, or store them in an external file)")


# The classification lives in :mod:`dask_broker.values` (shared with MongoDB); the old
# private name stays for code that imported it.
_scalar_kind = column_kind


def encode_column(values: Sequence[Any]) -> tuple[str, bytes]:
    """Encode one column of values.

    Returns
    -------
    codec : str
        ``"f8"``, ``"i8"``, ``"b1"``, ``"nd:<dtype>:<shape>"`` or ``"json"``.
    blob : bytes
    """
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "fiub" and not (
            values.dtype.kind == "u" and values.size and values.max() > np.iinfo("<i8").max):
        # (unsigned values past int64 would wrap: they take the JSON path below)
        kind = {"f": "f8", "i": "i8", "u": "i8", "b": "b1"}[values.dtype.kind]
        return kind, np.ascontiguousarray(values, dtype=_SCALAR_CODECS[kind]).tobytes()
    values = list(values)
    if len(values) == 1:  # one event (as a RunEngine emits them): no numpy round trip
        encoded = _encode_one(values[0])
        if encoded is not None:
            return encoded
    kind = column_kind(values)
    if kind == "i8":
        try:
            return kind, np.asarray(values, dtype="<i8").tobytes()
        except OverflowError:
            kind = None
    if kind is not None:
        return kind, np.asarray(values, dtype=_SCALAR_CODECS[kind]).tobytes()
    stacked = _try_stack(values)
    if stacked is not None:
        shape = ",".join(str(s) for s in stacked.shape[1:])
        return f"nd:{stacked.dtype.str}:{shape}", stacked.tobytes()
    return "json", dumps(to_jsonable(values)).encode()


_F8, _I8 = struct.Struct("<d"), struct.Struct("<q")


def _encode_one(value: Any) -> tuple[str, bytes] | None:
    """A column of one plain float, int (of 64 bits) or bool, as :func:`encode_column`
    encodes it; None for anything else."""
    t = type(value)
    if t is float:
        return "f8", _F8.pack(value)
    if t is int and fits_int64(value):
        return "i8", _I8.pack(value)
    if t is bool:
        return "b1", b"\x01" if value else b"\x00"
    return None


def _try_stack(values: list[Any]) -> np.ndarray | None:
    """Stack a column of equal-shape numeric arrays (ndarrays only, not lists).

    Lists stay JSON so that a document read back holds lists again.
    """
    if not values or not all(isinstance(v, np.ndarray) for v in values):
        return None
    first = values[0]
    if first.dtype.kind not in "fiub" or any(
        v.shape != first.shape or v.dtype != first.dtype for v in values
    ):
        return None
    return np.stack(values).astype(first.dtype.newbyteorder("<"), copy=False)


def decode_column(codec: str, blob: bytes) -> np.ndarray | list:
    """Decode a column; numeric codecs give a read-only numpy array (zero copy)."""
    if codec in _SCALAR_CODECS:
        return np.frombuffer(blob, dtype=_SCALAR_CODECS[codec])
    if codec.startswith("nd:"):
        _, dtype, shape = codec.split(":")
        inner = tuple(int(s) for s in shape.split(",") if s)
        arr = np.frombuffer(blob, dtype=np.dtype(dtype))
        return arr.reshape((-1, *inner))
    if codec == "json":
        return json.loads(blob)
    raise ValueError(f"unknown column codec {codec!r}")


def column_to_list(column: np.ndarray | list) -> list:
    """Plain-Python list of a decoded column (for rebuilding documents)."""
    if isinstance(column, np.ndarray):
        if column.ndim > 1:
            return [np.array(row) for row in column]
        return column.tolist()
    return list(column)
