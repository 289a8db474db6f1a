"""What kind of values a column holds: the one classification every store codes by.

A column is the list of one field's values across consecutive events.  Its *kind*
decides how a store keeps it: ``"b1"`` (booleans), ``"i8"`` (integers of 64 bits),
``"f8"`` (floats, or integers mixed with floats) as numbers, None (anything else:
strings, lists, None, mixed types) as documents.  :mod:`dask_broker.codec` (SQLite,
PostgreSQL) encodes numeric kinds as raw buffers and the rest as JSON;
:mod:`dask_broker.stores.mongo.values` reads numeric kinds back as numpy columns
and the rest as lists.

Examples
--------
>>> column_kind([1, 2, 3]), column_kind([1, 2.5]), column_kind([True, 1])
('i8', 'f8', None)
>>> fits_int64(2**63)
False
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

__all__ = ["INT64_MIN", "INT64_MAX", "SCALAR_DTYPES", "fits_int64", "type_kind", "column_kind"]

#: The range of a stored integer (a wider one becomes JSON, or a Decimal128 in MongoDB).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: The numpy dtype of each numeric kind, as stored (little-endian).
SCALAR_DTYPES = {"f8": np.dtype("<f8"), "i8": np.dtype("<i8"), "b1": np.dtype("?")}

_TYPE_KINDS: dict[type, str | None] = {}


def fits_int64(value: int) -> bool:
    """Whether an integer fits in 64 signed bits.

    >>> fits_int64(-(2**63)), fits_int64(2**63)
    (True, False)
    """
    return INT64_MIN <= value <= INT64_MAX


def type_kind(t: type) -> str | None:
    """The kind of one value type: ``"b1"`` (bools), ``"i8"`` (integers), ``"f8"``
    (floats), None (anything else).

    >>> type_kind(np.bool_), type_kind(np.int32), type_kind(float), type_kind(str)
    ('b1', 'i8', 'f8', None)
    """
    kind = _TYPE_KINDS.get(t, False)
    if kind is False:
        if issubclass(t, (bool, np.bool_)):
            kind = "b1"
        elif issubclass(t, numbers.Integral):
            kind = "i8"
        elif issubclass(t, (float, np.floating)):
            kind = "f8"
        else:
            kind = None
        _TYPE_KINDS[t] = kind
    return kind


def column_kind(values: Sequence[Any]) -> str | None:
    """The kind of a column of values: one pass over their types (in C), then a
    look-up per distinct type.  Integers mixed with floats are ``"f8"``; bools mixed
    with numbers, or anything else, None.

    >>> column_kind([1.0, 2]), column_kind(["a"]), column_kind([])
    ('f8', None, None)
    """
    kinds = {type_kind(t) for t in set(map(type, values))}
    if len(kinds) == 1:
        return next(iter(kinds))  # "b1", "i8", "f8" or None
    if kinds == {"i8", "f8"}:
        return "f8"
    return None
