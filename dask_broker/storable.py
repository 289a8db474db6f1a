"""What every store keeps faithfully: the value checks of insert.

SQLite keeps documents as JSON, MongoDB as BSON.  A document goes in only if
both keep it and give it back unchanged, so it holds only:

- dicts whose keys are ``str`` -- valid Unicode, no NUL character, not starting
  with ``$`` (MongoDB's operators: a query cannot name such a key, and servers
  before 5.0 refuse it);
- lists and tuples (read back as lists), nested at most :data:`MAX_DEPTH` deep;
- ``str`` (valid Unicode: no lone surrogates), ``float``, ``bool``, ``None``;
- ``int`` of at most :data:`MAX_INT_DIGITS` digits (MongoDB keeps integers
  beyond 64 bits as Decimal128, exact to 34 digits);
- numpy bool, integer and float (up to 64-bit) scalars and arrays, numpy
  strings, object arrays of the above.

Not bytes, datetimes, sets, complex numbers, Decimals or other objects.

:func:`checked_jsonable` walks a document once (recursively, bounded by
``MAX_DEPTH``) and returns its plain-Python copy for the JSON-schema check;
:func:`check_column` checks one column of a page by its numpy dtype or the set
of its values' types, without a Python call per value.  Both raise
:class:`~dask_broker.errors.DocumentValidationError` naming the document, its
uid, where the value is and what to do about it.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
from operator import countOf
from typing import Any, Mapping

import numpy as np

from .errors import DocumentValidationError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "checked_jsonable", "check_column", "checked_column",
           "check_int64"]

#: Deepest nesting of dicts and lists accepted (MongoDB's own limit is 100 levels).
MAX_DEPTH = 64
#: Most decimal digits of an int (what a MongoDB Decimal128 holds exactly).
MAX_INT_DIGITS = 34

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_INT_BOUND = 10**MAX_INT_DIGITS
_PLAIN_NUMBERS = frozenset({float, int, bool})


class _Refused(Exception):
    """A value no store keeps faithfully; ``path`` grows as the error leaves the walk."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix
        self.path: list[str] = []


def _where(path: list[str]) -> str:
    parts = list(reversed(path))
    if len(parts) > 8:
        parts = parts[:4] + ["..."] + parts[-3:]
    return "/".join(parts) or "<top level>"


def _refusal(name: str, uid: str, err: _Refused,
             prefix: tuple[str, ...] = ()) -> DocumentValidationError:
    err.path.extend(reversed(prefix))
    return DocumentValidationError(
        f"{name} {uid!r} cannot be stored faithfully: {err.what} at {_where(err.path)}; "
        f"{err.fix}. Nothing of this {name} was written")


def checked_jsonable(name: str, uid: str, doc: Mapping) -> dict:
    """A plain-Python (JSON-able) copy of ``doc``; refuses what no store keeps faithfully.

    Raises
    ------
    DocumentValidationError
        A value or key of the document is not storable (the message names the
        document, its uid, the key path and the fix).

    Examples
    --------
    >>> checked_jsonable("start", "u1", {"uid": "u1", "n": np.int64(3)})
    {'uid': 'u1', 'n': 3}
    >>> checked_jsonable("start", "u1", {"uid": "u1", "raw": b"x"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_broker.errors.DocumentValidationError: start 'u1' cannot be stored faithfully: a bytes value at raw; ...
    """
    try:
        return _value(dict(doc), 0)
    except _Refused as err:
        raise _refusal(name, uid, err) from None


def _value(v: Any, depth: int) -> Any:
    t = type(v)
    if t is float or t is bool or v is None:
        return v
    if t is str:
        if not v.isascii():
            _check_text(v)
        return v
    if t is int:
        return v if _I64_MIN <= v <= _I64_MAX else _big_int(v)
    if t is dict:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        out = {}
        for k, item in v.items():
            if type(k) is not str or k[:1] == "$" or not k.isascii() or "\x00" in k:
                k = _check_key(k)
            try:
                out[k] = _value(item, depth + 1)
            except _Refused as err:
                err.path.append(k)
                raise
        return out
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        items = []
        for i, item in enumerate(v):
            try:
                items.append(_value(item, depth + 1))
            except _Refused as err:
                err.path.append(str(i))
                raise
        return items
    return _other(v, depth)


def _other(v: Any, depth: int) -> Any:
    """Everything but the plain types: numpy values, subclasses, and what is refused."""
    if isinstance(v, np.ndarray):
        return _array(v, depth)
    if isinstance(v, np.generic):
        kind = v.dtype.kind
        if kind in "biu" or (kind == "f" and v.dtype.itemsize <= 8):
            return _value(v.item(), depth)
        if kind == "U":
            return _value(str(v), depth)
        raise _refused_type(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        raise _refused_type(v)
    for base in (str, int, float, dict, list, tuple):  # subclasses (IntEnum, OrderedDict, ...)
        if isinstance(v, base):
            return _value(base(v), depth)
    raise _refused_type(v)


def _array(v: np.ndarray, depth: int) -> Any:
    kind = v.dtype.kind
    if depth + v.ndim > MAX_DEPTH:
        raise _too_deep()
    if kind in "biu" or (kind == "f" and v.dtype.itemsize <= 8):
        return v.tolist()
    if kind in "UO":
        return _value(v.tolist(), depth)
    raise _Refused(f"a numpy array of dtype {v.dtype}", _fix_for_dtype(v.dtype))


def _check_text(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _Refused(
            f"a str holding the lone surrogate {s[err.start]!r} (position {err.start})",
            "strings must be valid Unicode (UTF-8 encodable); decode the original bytes with "
            "errors='replace' or drop the character") from None


def _check_key(k: Any) -> str:
    if not isinstance(k, str):
        raise _Refused(f"the {type(k).__name__} key {k!r}",
                       "keys must be str (JSON and BSON have no other keys); use str(key)")
    try:
        _check_text(k)
    except _Refused as err:
        err.what = f"the key {k!r}, {err.what}"
        raise
    if k.startswith("$"):
        raise _Refused(f"the key {k!r}",
                       "keys starting with '$' are MongoDB operators (no query can name them, "
                       "and servers before 5.0 refuse them); rename the key")
    if "\x00" in k:
        raise _Refused(f"the key {k!r}", "BSON keys cannot hold the NUL character; rename "
                       "the key")
    return str(k)


def _big_int(v: int) -> int:
    if -_INT_BOUND < v < _INT_BOUND:
        return v
    raise _Refused(
        f"an integer of {len(str(abs(v)))} digits",
        f"MongoDB (BSON) keeps integers of 64 bits, and dask_broker larger ones as Decimal128, "
        f"exact to {MAX_INT_DIGITS} digits, on every store alike; store it as a str (or as a "
        f"float, if rounding is acceptable)")


def _too_deep() -> _Refused:
    return _Refused(f"nesting deeper than {MAX_DEPTH} levels",
                    "MongoDB keeps at most 100 levels of nested documents and lists, and "
                    f"dask_broker accepts {MAX_DEPTH} on every store; flatten the structure")


_TYPE_FIXES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((bytes, bytearray, memoryview, np.bytes_),
     "JSON has no bytes; decode them to a str (.decode(), or base64 for binary data)"),
    ((datetime.datetime, datetime.date, datetime.time, np.datetime64),
     "store a number (seconds since the epoch, .timestamp()) or an ISO string (.isoformat())"),
    ((datetime.timedelta, np.timedelta64), "store seconds as a float (.total_seconds())"),
    ((set, frozenset), "store a list (e.g. sorted(values))"),
    ((complex, np.complexfloating), "store the real and imaginary parts, e.g. [z.real, z.imag]"),
    ((decimal.Decimal, fractions.Fraction), "store a float, or a str to keep every digit"),
    ((np.floating,), "store it as float64 (float(x), or x.astype('f8'))"),
)


def _fix_for(value: Any) -> str:
    for types, fix in _TYPE_FIXES:
        if isinstance(value, types):
            return fix
    return ("documents hold only dicts, lists, str, int, float, bool, None and numpy "
            "numbers; convert it to one of those")


def _fix_for_dtype(dtype: np.dtype) -> str:
    return {"S": _TYPE_FIXES[0][1], "M": _TYPE_FIXES[1][1], "m": _TYPE_FIXES[2][1],
            "c": _TYPE_FIXES[4][1], "f": _TYPE_FIXES[6][1]}.get(
        dtype.kind, "store numbers, booleans or strings (structured arrays: one field per key)")


def _refused_type(v: Any) -> _Refused:
    if isinstance(v, np.generic):
        return _Refused(f"a numpy {v.dtype} value", _fix_for(v))
    return _Refused(f"a {type(v).__name__} value", _fix_for(v))


# ------------------------------------------------------------------ page columns
def check_column(name: str, uid: str, where: tuple[str, ...], column: Any,
                 depth: int = 2, *, int64: bool = False) -> str:
    """Check every value of one column of a page, by its dtype or the set of its types.

    Parameters
    ----------
    name, uid
        The page document (for the message).
    where
        The column's place in the page, e.g. ``("data", "x")``.
    column
        A list, tuple or numpy array: one value per row.
    depth
        The depth of one value in the event or datum document a row becomes.
    int64
        Integers must fit 64 bits (seq_num, time), not just :data:`MAX_INT_DIGITS` digits.

    Returns
    -------
    str
        The column's kind: ``""`` (empty), ``"b"``, ``"i"``, ``"u"``, ``"f"`` (1-d:
        bools, ints, unsigned ints, numbers), ``"U"`` (str), ``"O"`` (any other
        storable column), ``"X"`` (not a list or array: left to the schema check).

    Raises
    ------
    DocumentValidationError
        A value is not storable (the message gives its row).

    Examples
    --------
    >>> check_column("event_page", "e1", ("data", "x"), np.arange(3.0))
    'f'
    >>> check_column("event_page", "e1", ("data", "x"), [1.0, 2j])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_broker.errors.DocumentValidationError: event_page 'e1' cannot be stored faithfully: a complex value at data/x/1; ...
    """
    return checked_column(name, uid, where, column, depth, int64=int64)[0]


def checked_column(name: str, uid: str, where: tuple[str, ...], column: Any,
                   depth: int = 2, *, int64: bool = False) -> tuple[str, Any]:
    """:func:`check_column`, and the column as an exact numpy array where one holds it.

    A list of only floats, only ints (within 64 bits) or only bools comes back
    as a float64, int64 or bool array -- whose ``tolist()`` gives the very same
    values, so every store keeps the same document -- made by one
    ``np.fromiter`` call; any other column comes back as it was given.

    Returns
    -------
    kind : str
        As :func:`check_column`.
    column : numpy.ndarray or the column given

    Examples
    --------
    >>> checked_column("event_page", "e1", ("data", "x"), [1.0, 2.5])
    ('f', array([1. , 2.5]))
    >>> checked_column("event_page", "e1", ("data", "x"), [1, 2.5])
    ('f', [1, 2.5])
    """
    try:
        return _column(column, depth, int64)
    except _Refused as err:
        raise _refusal(name, uid, err, where) from None


#: The array a list of values of exactly one type becomes (and gives back by tolist()).
_EXACT = {float: ("f", np.float64), int: ("i", np.int64), bool: ("b", np.bool_)}


def _column(column: Any, depth: int, int64: bool) -> tuple[str, Any]:
    if isinstance(column, np.ndarray):
        kind = column.dtype.kind
        if kind in "biu" or (kind == "f" and column.dtype.itemsize <= 8):
            if depth + column.ndim - 1 > MAX_DEPTH:
                raise _too_deep()
            if int64 and kind == "u" and column.size and column.max() > _I64_MAX:
                row = int(np.argmax(column > _I64_MAX))
                err = _beyond_int64(int(column.flat[row]))
                err.path.append(str(row))
                raise err
            return (kind if column.ndim == 1 else "O"), column
        if kind not in "UO":
            raise _Refused(f"a numpy column of dtype {column.dtype}",
                           _fix_for_dtype(column.dtype))
        listed = column.tolist()
        return _list_column(listed, depth, int64)[0], column
    if not isinstance(column, (list, tuple)):
        return "X", column
    return _list_column(column, depth, int64)


def _list_column(column: list | tuple, depth: int, int64: bool) -> tuple[str, Any]:
    if not column:
        return "", column
    first = type(column[0])  # one type (the usual column): counted, without a set
    types = ({first} if countOf(map(type, column), first) == len(column)
             else set(map(type, column)))
    if len(types) == 1:
        exact = _EXACT.get(next(iter(types)))
        if exact is not None:
            kind, dtype = exact
            try:  # (fromiter: no type inference, which the count above made moot)
                return kind, np.fromiter(column, dtype=dtype, count=len(column))
            except OverflowError:  # ints beyond 64 bits: checked below, kept as they are
                pass
    if types <= _PLAIN_NUMBERS:
        if int in types:
            ints = column if float not in types else [v for v in column if type(v) is int]
            lo, hi = (_I64_MIN, _I64_MAX) if int64 else (-_INT_BOUND + 1, _INT_BOUND - 1)
            if min(ints) < lo or max(ints) > hi:
                _rows(column, depth, int64)  # raises, naming the row
        if bool in types:
            return ("b" if len(types) == 1 else "O"), column
        return ("i" if float not in types else "f"), column
    if types == {str}:
        if not "".join(column).isascii():
            _rows(column, depth, int64)
        return "U", column
    _rows(column, depth, int64)
    return "O", column


def _rows(column: Any, depth: int, int64: bool) -> None:
    for i, item in enumerate(column):
        try:
            if int64:
                _check_int64(item)
            _value(item, depth)
        except _Refused as err:
            err.path.append(str(i))
            raise


def check_int64(name: str, uid: str, field: str, value: Any) -> None:
    """Refuse an integer ``field`` (seq_num, time, ...) that 64 bits cannot hold.

    Examples
    --------
    >>> check_int64("event", "e1", "seq_num", 2**63 - 1)
    >>> check_int64("event", "e1", "seq_num", np.uint64(2**63))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_broker.errors.DocumentValidationError: event 'e1' cannot be stored faithfully: the integer 9223372036854775808, beyond 64 bits, at seq_num; ...
    """
    try:
        _check_int64(value)
    except _Refused as err:
        raise _refusal(name, uid, err, tuple(field.split("/"))) from None


def _check_int64(value: Any) -> None:
    if type(value) is int:
        if not _I64_MIN <= value <= _I64_MAX:
            raise _beyond_int64(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        _check_int64(int(value))


def _beyond_int64(value: int) -> _Refused:
    return _Refused(
        f"the integer {value}, beyond 64 bits,",
        "every store keeps seq_num, time and the ranges of a stream_datum as 64-bit numbers "
        "(it would be read back changed); use a value in [-2**63, 2**63 - 1]")
