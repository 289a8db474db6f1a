"""Searching start documents in SQL: the ``search`` copy, and queries as bound SQL.

The server narrows the candidates with the query's simple conditions
(:meth:`Query.conditions <dask_broker.query.Query.conditions>`: ``$eq``, ``$in``,
``$gt``...) and :meth:`Query.match <dask_broker.query.Query.match>` decides in
Python, so the runs are those every other store returns.  The SQL therefore only
has to keep every match (it may keep more); it is:

- ``uid``: the ``uid`` column (``COLLATE "C"``: code-point order, as Python's);
- ``time`` and ``scan_id`` with numbers: ``numeric`` columns holding the exact value
  of each number (a float's binary value, digit for digit), compared with the
  exact value of the query's number, so ints and floats compare as in Python;
  where the value is not a plain number (NULL: a list, a string, missing) the
  jsonb path test below decides;
- any other key, dotted or not: a jsonpath on the ``search`` jsonb copy of the
  document, e.g. ``$."sample"."name" ? (@ == "Si")``, bound as a parameter.
  jsonpath's lax mode enters lists (of values and of documents) as MongoDB does,
  compares only values of one kind, and orders strings by code point.

The ``search`` copy is the document with every float written as its exact
decimal value, infinities as ``±1e1000`` (beyond every float) and NaN as
``null`` (NaN matches no simple condition).  A document holding what jsonb
cannot (a NUL character in a string) is marked ``exact = false`` and always
left to Python.  Keys with a numeric part (``tags.0``, a list position in
MongoDB) and values jsonpath cannot write are left to Python as well.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from ...query import Query

__all__ = ["search_copy", "exact_number", "where_clause", "MAX_PATH_VALUES"]

#: ``$in`` lists longer than this on a jsonb key are left to Python.
MAX_PATH_VALUES = 256
_OPS = {"$eq": "==", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_BIG = "1e1000"


def exact_number(value: Any) -> Decimal | None:
    """The exact value of a plain number (int or float, not bool); None for anything else.

    NaN is None too (an indexed NULL, decided in Python); infinities stay infinite.
    """
    t = type(value)
    if t is int:
        return Decimal(value)
    if t is float:
        return None if value != value else Decimal(value)
    return None


def _number_text(value: float) -> str:
    if math.isnan(value):
        return "null"
    if math.isinf(value):
        return _BIG if value > 0 else "-" + _BIG
    return format(Decimal(value), "f")


class _Copy:
    def __init__(self) -> None:
        self.exact = True
        self.out: list[str] = []

    def string(self, s: str) -> None:
        if "\x00" in s:
            self.exact = False
            s = s.replace("\x00", "\ufffd")
        self.out.append(json.dumps(s))

    def value(self, v: Any) -> None:
        t = type(v)
        if v is None:
            self.out.append("null")
        elif t is bool:
            self.out.append("true" if v else "false")
        elif t is int:
            self.out.append(str(v))
        elif t is float:
            self.out.append(_number_text(v))
        elif t is str:
            self.string(v)
        elif t is dict:
            self.out.append("{")
            for i, (k, item) in enumerate(v.items()):
                if i:
                    self.out.append(",")
                self.string(k)
                self.out.append(":")
                self.value(item)
            self.out.append("}")
        elif t is list:
            self.out.append("[")
            for i, item in enumerate(v):
                if i:
                    self.out.append(",")
                self.value(item)
            self.out.append("]")
        else:  # what json.loads gives is covered above
            raise TypeError(f"unexpected {t.__name__} in a JSON document")


def search_copy(plain: dict) -> tuple[str, bool]:
    """The ``search`` jsonb text of a document (as :func:`json.loads` gives it) and
    whether it is exact (see the module docstring)."""
    copy = _Copy()
    copy.value(plain)
    return "".join(copy.out), copy.exact


def _literal(value: Any) -> str | None:
    """A jsonpath literal of a string or finite number; None where jsonpath cannot write it."""
    if type(value) is str:
        if "\x00" in value:
            return None
        return json.dumps(value)
    return format(Decimal(value), "f")


def _path_clause(key: str, op: str, value: Any) -> tuple[str, list] | None:
    parts = key.split(".")
    if any(p.isascii() and p.isdigit() for p in parts) or any("\x00" in p for p in parts):
        return None  # list positions: MongoDB's meaning, decided in Python
    values = value if op == "$in" else [value]
    if len(values) > MAX_PATH_VALUES:
        return None
    literals = [_literal(v) for v in values]
    if any(lit is None for lit in literals):
        return None
    cmp = "==" if op == "$in" else _OPS[op]
    test = " || ".join(f"@ {cmp} {lit}" for lit in literals)
    path = "$" + "".join("." + json.dumps(p) for p in parts) + f" ? ({test})"
    return "(NOT exact OR search @? %s::jsonpath)", [path]


def _column_clause(key: str, op: str, value: Any) -> tuple[str, list] | None:
    values = value if op == "$in" else [value]
    if key == "uid":
        if not all(type(v) is str and "\x00" not in v for v in values):
            return None
        if op == "$in":
            return "uid = ANY(%s)", [values]
        return f"uid {_SQL_OPS[op]} %s", [value]
    numbers = [exact_number(v) for v in values]
    if any(n is None for n in numbers):
        return None
    # NULL: the value is not a plain number (a list, a string, missing): the jsonb path
    # test decides, as for any other key
    other = _path_clause(key, op, value)
    null = f"{key} IS NULL" + (f" AND {other[0]}" if other else "")
    params = other[1] if other else []
    if op == "$in":
        return f"({key} = ANY(%s::numeric[]) OR ({null}))", [numbers, *params]
    return f"({key} {_SQL_OPS[op]} %s OR ({null}))", [numbers[0], *params]


def where_clause(query: Query) -> tuple[str, list]:
    """``("WHERE ...", params)`` keeping every run that matches ``query`` (or ``("", [])``)."""
    clauses, params = [], []
    for key, op, value in query.conditions():
        clause = None
        if key in ("uid", "time", "scan_id"):
            clause = _column_clause(key, op, value)
        if clause is None:
            clause = _path_clause(key, op, value)
        if clause is not None:
            clauses.append(clause[0])
            params += clause[1]
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
