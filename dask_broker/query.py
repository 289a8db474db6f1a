"""Mongo-style queries on start documents, evaluated in Python.

Supported: equality (a list-valued field matches if any element equals),
``$eq``, ``$ne``, ``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``,
``$exists``, ``$and``, ``$or``, ``$nor`` and dotted keys (``"sample.name"``).
Anything else raises :class:`~dask_broker.errors.UnsupportedQueryError`
rather than being ignored.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import UnsupportedQueryError

__all__ = ["match_query", "validate_query", "SUPPORTED_OPERATORS"]

_MISSING = object()
_COMPARISONS = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}
_FIELD_OPERATORS = {"$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS}
_LOGICAL_OPERATORS = {"$and", "$or", "$nor"}
SUPPORTED_OPERATORS = tuple(sorted(_FIELD_OPERATORS | _LOGICAL_OPERATORS))


def _unsupported(op: str) -> UnsupportedQueryError:
    return UnsupportedQueryError(
        f"query operator {op!r} is not supported; supported operators are "
        f"{', '.join(SUPPORTED_OPERATORS)} and plain equality"
    )


def validate_query(query: Mapping) -> None:
    """Raise UnsupportedQueryError for any operator this module cannot evaluate."""
    if not isinstance(query, Mapping):
        raise UnsupportedQueryError(f"a query must be a dict, not {type(query).__name__}")
    for key, cond in query.items():
        if key in _LOGICAL_OPERATORS:
            if not isinstance(cond, (list, tuple)):
                raise UnsupportedQueryError(f"{key} takes a list of queries, got {cond!r}")
            for sub in cond:
                validate_query(sub)
        elif not isinstance(key, str):
            raise UnsupportedQueryError(f"query keys are field names (str), got {key!r}")
        elif key.startswith("$"):
            raise _unsupported(key)
        elif _is_operator_dict(cond):
            for op, arg in cond.items():
                if op not in _FIELD_OPERATORS:
                    raise _unsupported(op)
                if op in ("$in", "$nin") and not isinstance(arg, (list, tuple, set)):
                    raise UnsupportedQueryError(f"{op} takes a list, got {arg!r}")


def _is_operator_dict(cond: Any) -> bool:
    return isinstance(cond, Mapping) and bool(cond) and all(
        isinstance(k, str) and k.startswith("$") for k in cond
    )


def _lookup(doc: Any, dotted: str) -> Any:
    value = doc
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _equals(value: Any, target: Any) -> bool:
    if value is _MISSING:
        return target is None
    if value == target:
        return True
    return isinstance(value, list) and not isinstance(target, list) and target in value


def _compare(value: Any, target: Any, fn) -> bool:
    candidates = value if isinstance(value, list) else [value]
    for v in candidates:
        try:
            if v is not _MISSING and fn(v, target):
                return True
        except TypeError:  # Mongo compares only within a type class
            continue
    return False


def _match_condition(value: Any, cond: Any) -> bool:
    if not _is_operator_dict(cond):
        return _equals(value, cond)
    for op, arg in cond.items():
        if op == "$eq":
            ok = _equals(value, arg)
        elif op == "$ne":
            ok = not _equals(value, arg)
        elif op == "$in":
            ok = any(_equals(value, a) for a in arg)
        elif op == "$nin":
            ok = not any(_equals(value, a) for a in arg)
        elif op == "$exists":
            ok = (value is not _MISSING) == bool(arg)
        elif op in _COMPARISONS:
            ok = _compare(value, arg, _COMPARISONS[op])
        else:
            raise _unsupported(op)
        if not ok:
            return False
    return True


def match_query(doc: Mapping, query: Mapping) -> bool:
    """True if ``doc`` matches the Mongo-style ``query``.

    Examples
    --------
    >>> match_query({"scan_id": 3, "sample": {"name": "Si"}}, {"sample.name": "Si"})
    True
    >>> match_query({"scan_id": 3}, {"scan_id": {"$gt": 5}})
    False
    """
    validate_query(query)
    return _match(doc, query)


def _match(doc: Mapping, query: Mapping) -> bool:
    for key, cond in query.items():
        if key == "$and":
            if not all(_match(doc, q) for q in cond):
                return False
        elif key == "$or":
            if not any(_match(doc, q) for q in cond):
                return False
        elif key == "$nor":
            if any(_match(doc, q) for q in cond):
                return False
        elif not _match_condition(_lookup(doc, key), cond):
            return False
    return True
