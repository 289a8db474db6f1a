"""Values between Python / numpy and BSON, and event columns read from MongoDB.

Columns are classified by :func:`dask_broker.values.column_kind`, as every store does.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ...errors import DaskBrokerError
from ...values import column_kind, fits_int64

__all__ = ["to_bson", "to_bson_list", "restore", "clean_doc", "to_column",
           "to_array_column", "sub_document"]

_DECIMAL_DIGITS = 34  # what a Decimal128 holds exactly


def big_int(value: int) -> Any:
    """An int beyond BSON's 64 bits, as a Decimal128 (exact up to 34 digits)."""
    from bson.decimal128 import Decimal128

    if len(str(abs(value))) > _DECIMAL_DIGITS:
        raise DaskBrokerError(
            f"the integer {value} has more than {_DECIMAL_DIGITS} digits: MongoDB (BSON) "
            "stores integers of 64 bits, and dask_broker stores larger ones as Decimal128, "
            "which holds 34 digits; store it as a string or a float")
    return Decimal128(str(value))


def to_bson(obj: Any) -> Any:
    """A value as BSON-encodable plain Python (numpy converted, big ints as Decimal128)."""
    t = type(obj)
    if t is float or t is str or t is bool or obj is None:
        return obj
    if t is int:
        return obj if fits_int64(obj) else big_int(obj)
    if isinstance(obj, dict):
        return {k: to_bson(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_bson(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_bson_list(obj) if obj.ndim == 1 else to_bson(obj.tolist())
    if isinstance(obj, np.generic):
        return to_bson(obj.item())
    if isinstance(obj, int):  # an int subclass (not bool)
        return to_bson(int(obj))
    return obj


def to_bson_list(column: Any) -> list:
    """A column as a list of BSON-encodable values."""
    if isinstance(column, np.ndarray):
        if column.ndim == 1 and (column.dtype.kind in "fbi" or (
                column.dtype.kind == "u" and column.dtype.itemsize < 8)):
            return column.tolist()
        return [to_bson(v) for v in column.tolist()]
    return [to_bson(v) for v in column]


def restore(obj: Any) -> Any:
    """A stored value as Python: legacy ObjectIds as str, big ints (Decimal128) as int."""
    from bson import ObjectId
    from bson.decimal128 import Decimal128

    if isinstance(obj, dict):
        return {k: restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore(v) for v in obj]
    if isinstance(obj, ObjectId):
        return str(obj)
    if isinstance(obj, Decimal128):
        dec = obj.to_decimal()
        if dec.is_finite() and dec.as_tuple().exponent == 0 and not (
                fits_int64(int(dec))):
            return int(dec)  # written by big_int
        return dec
    return obj



def clean_doc(doc: Mapping | None) -> dict | None:
    """A stored document as the bluesky document (no ``_id``)."""
    if doc is None:
        return None
    doc = dict(doc)
    doc.pop("_id", None)
    return restore(doc)


def to_column(values: list) -> np.ndarray | list:
    """Numeric columns as numpy arrays (int64, float64, bool), anything else as the list."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "fib":  # (u: beyond int64)
        if arr.dtype.kind == "b":
            return arr
        types = set(map(type, values))
        # bools mixed with numbers stay a list, as do ints beyond int64 (numpy makes
        # them floats)
        if bool not in types and (arr.dtype.kind == "i" or float in types):
            return arr.astype("<f8" if arr.dtype.kind == "f" else "<i8", copy=False)
    if column_kind(values) is None:
        return restore(values)
    return values


def to_array_column(values: list) -> np.ndarray | list:
    """A column of a ``dtype: array`` field: stacked into one numpy array when every
    value is a numeric (nested) list of one shape, else as :func:`to_column`."""
    if values and all(isinstance(v, list) for v in values):
        try:
            stacked = np.asarray(values)
        except ValueError:  # ragged
            stacked = None
        if stacked is not None and stacked.ndim >= 2 and stacked.dtype.kind in "fiub":
            return stacked
    return to_column(values)


def sub_document(doc: Mapping, part: str, flat: bool) -> Mapping:
    """``doc[part]`` (a dict), also from a server that returns dotted projections flat."""
    sub = doc.get(part)
    if not flat:
        return sub if isinstance(sub, Mapping) else {}
    out = dict(sub) if isinstance(sub, Mapping) else {}
    prefix = part + "."
    for key, value in doc.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out
