"""Mongo-style queries on start documents: checked once, matched alike on every store.

:func:`parse_query` checks a query up front and returns a :class:`Query`, which
matches start documents in Python with MongoDB's rules.  Every store decides
with :meth:`Query.match`; a store with an index first narrows the candidates
with the query's simple conditions (:meth:`Query.conditions`,
:meth:`Query.index_filter`), which every match satisfies.  So one query returns
the same runs from SQLite and from any MongoDB server.

Supported, with MongoDB's meaning:

- equality, ``$eq``, ``$ne``, ``$in``, ``$nin`` (a list-valued field matches if
  the list or any element equals; a missing field equals ``None``; numbers equal
  across int and float, never booleans; embedded documents equal key by key, in
  order);
- ``$gt``, ``$gte``, ``$lt``, ``$lte`` on numbers, strings or booleans (only
  values of the same kind compare; a list matches if any element does);
- ``$exists``; ``$regex`` with ``$options`` (``i``, ``m``, ``s``, ``x``), and
  compiled :class:`re.Pattern` values (as the value of a field, in ``$in`` and
  ``$nin``, under ``$not``); patterns are Python regular expressions;
- ``$not`` (of a field's conditions), ``$elemMatch``, ``$and``, ``$or``, ``$nor``;
- dotted keys (``"sample.name"``), which reach into lists of documents
  (``"samples.name"`` matches if any sample has that name) and take list
  positions (``"tags.0"``).

Anything else -- another operator, a malformed or too big query -- raises
:class:`~dask_broker.errors.QueryError` naming the offending part, before any
store is asked.  The limits are :data:`MAX_QUERY_DEPTH`, :data:`MAX_IN_VALUES`
and :data:`MAX_QUERY_SIZE`.
"""

from __future__ import annotations

import decimal
import math
import operator
import re
import reprlib
from typing import Any, Callable, Iterator, Mapping

from .errors import QueryError

__all__ = [
    "Query",
    "parse_query",
    "match_query",
    "validate_query",
    "SUPPORTED_OPERATORS",
    "MAX_QUERY_DEPTH",
    "MAX_IN_VALUES",
    "MAX_QUERY_SIZE",
]

#: How deeply dicts and lists may nest in a query (MongoDB's limit for BSON documents).
MAX_QUERY_DEPTH = 100
#: How many values one ``$in`` / ``$nin`` (or ``$and`` / ``$or`` / ``$nor``) list may hold.
MAX_IN_VALUES = 100_000
#: How big a query may be, estimated in bytes (16 per value plus the length of each
#: string); well under the 16 MiB MongoDB takes in one message.
MAX_QUERY_SIZE = 8 * 2**20

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_REGEX_OPTIONS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_PATTERN_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE | re.UNICODE
_COMPARISONS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_LOGICAL_OPERATORS = ("$and", "$or", "$nor")
_FIELD_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", "$regex", "$options", "$not",
                    "$elemMatch", *_COMPARISONS)
SUPPORTED_OPERATORS = tuple(sorted((*_FIELD_OPERATORS, *_LOGICAL_OPERATORS)))
#: Operators whose conditions an index can answer (see Query.conditions).
_INDEXABLE = ("$eq", "$in", *_COMPARISONS)

_MISSING = object()  # a path that leads nowhere: equals None, does not "exist"

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 5

Predicate = Callable[[Mapping], bool]  # a start document -> matches?
Condition = Callable[[list], bool]  # the values a path leads to -> match?


# ---------------------------------------------------------------- the public API
class Query(Mapping):
    """A checked query: read it as the (normalized) dict, match documents with it.

    Make one with :func:`parse_query`.  The mapping holds the query as given, with
    tuples, sets and numpy arrays of ``$in`` / ``$nin`` as lists and numpy scalars
    as Python numbers.

    Examples
    --------
    >>> q = parse_query({"samples.name": "Si", "scan_id": {"$gte": 2}})
    >>> q.match({"scan_id": 3, "samples": [{"name": "Ge"}, {"name": "Si"}]})
    True
    >>> q.conditions()
    [('samples.name', '$eq', 'Si'), ('scan_id', '$gte', 2)]
    """

    __slots__ = ("_query", "_predicate", "_conditions", "_or_branches")

    def __init__(self, query: dict, predicate: Predicate, conditions: list,
                 or_branches: list[list[Query]]):
        self._query = query
        self._predicate = predicate
        self._conditions = conditions
        self._or_branches = or_branches

    def __getitem__(self, key: str) -> Any:
        return self._query[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._query)

    def __len__(self) -> int:
        return len(self._query)

    def __repr__(self) -> str:
        return f"Query({_repr.repr(self._query)})"

    def __reduce__(self):
        return parse_query, (self._query,)

    def match(self, doc: Mapping) -> bool:
        """True if the start document ``doc`` matches."""
        return self._predicate(doc)

    def conditions(self) -> list[tuple[str, str, Any]]:
        """``(field, operator, value)`` conditions that every match satisfies.

        They come from the top level of the query and its ``$and``; the operator is
        ``$eq``, ``$in`` (the value a list) or a comparison, and each value is a
        string or a finite int or float.  A store answers them with an index and
        decides with :meth:`match`.
        """
        return list(self._conditions)

    def index_filter(self, *, basic: bool = False) -> dict:
        """A MongoDB filter that every match passes (more documents may pass).

        It holds the :meth:`conditions`, and an ``$or`` whose every branch has some.
        With ``basic``, only ``$eq`` and ``$in`` on top-level fields: what a server that
        speaks MongoDB's protocol without all of its query language (nx-27017, for one)
        still answers right.  A store sends it to the server and decides with
        :meth:`match`.

        Examples
        --------
        >>> q = parse_query({"plan_name": {"$regex": "^sc"}, "scan_id": {"$in": [1, 2]},
        ...                  "sample.name": "Si", "time": {"$gt": 1.7e9}})
        >>> q.index_filter()
        {'$and': [{'scan_id': {'$in': [1, 2]}}, {'sample.name': 'Si'}, {'time': {'$gt': 1700000000.0}}]}
        >>> q.index_filter(basic=True)
        {'scan_id': {'$in': [1, 2]}}
        """
        parts = _index_parts(self, basic)
        if not parts:
            return {}
        return parts[0] if len(parts) == 1 else {"$and": parts}


def parse_query(query: Mapping | None) -> Query:
    """Check a Mongo-style query once and return it as a :class:`Query`.

    ``None`` is the empty query (everything matches); a :class:`Query` comes back
    as it is.

    Raises
    ------
    QueryError
        The query is not a dict of field conditions, uses an unsupported operator,
        a value MongoDB cannot take (a set, an int beyond 64 bits, ...), or is
        deeper than :data:`MAX_QUERY_DEPTH`, has a list longer than
        :data:`MAX_IN_VALUES` or is bigger than :data:`MAX_QUERY_SIZE`; the message
        names the offending part.

    Examples
    --------
    >>> parse_query({"plan_name": {"$regex": "^sc", "$options": "i"}}).match({"plan_name": "Scan"})
    True
    >>> parse_query({"$and": []})
    Traceback (most recent call last):
    ...
    dask_broker.errors.QueryError: query["$and"]: $and takes a non-empty list of queries, got []
    """
    return _checked({} if query is None else query)


def validate_query(query: Mapping) -> None:
    """Raise :class:`~dask_broker.errors.QueryError` if ``query`` is not a valid query.

    Examples
    --------
    >>> validate_query({"scan_id": {"$gt": 1, "x": 2}})
    Traceback (most recent call last):
    ...
    dask_broker.errors.QueryError: query["scan_id"] mixes operators ($gt) with plain keys (x): ...
    """
    _checked(query)


def match_query(doc: Mapping, query: Mapping) -> bool:
    """True if ``doc`` matches the Mongo-style ``query``.

    Examples
    --------
    >>> match_query({"scan_id": 3, "sample": {"name": "Si"}}, {"sample.name": "Si"})
    True
    >>> match_query({"scan_id": 3}, {"scan_id": {"$gt": 5}})
    False
    """
    return _checked(query).match(doc)


def _checked(query: Any) -> Query:
    return query if isinstance(query, Query) else _Parser().filter(query, (), 1)


# ---------------------------------------------------------------- checking
def _where(at: tuple) -> str:
    """``query["$and"][0]["scan_id"]``, shortened when deep."""
    parts = [f"[{p}]" if isinstance(p, int) else f'["{p}"]' for p in at]
    if len(parts) > 8:
        parts = parts[:4] + [f"...({len(parts) - 7} more)..."] + parts[-3:]
    return "query" + "".join(parts)


def _unsupported(op: str, at: tuple) -> QueryError:
    return QueryError(
        f"{_where(at)}: the query operator {op!r} is not supported; supported operators "
        f"are {', '.join(SUPPORTED_OPERATORS)} and plain equality")


def _is_operator_dict(cond: Any) -> bool:
    return isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$")
                                             for k in cond)


class _Parser:
    """Checks a query, tracking where it is and how big the query has grown."""

    def __init__(self) -> None:
        self.size = 0

    def grow(self, nbytes: int, at: tuple) -> None:
        self.size += nbytes
        if self.size > MAX_QUERY_SIZE:
            raise QueryError(
                f"{_where(at)}: the query is bigger than MAX_QUERY_SIZE ({MAX_QUERY_SIZE:,} "
                "bytes, estimated); narrow it (a range instead of a long $in) or run "
                "several searches")

    def nest(self, depth: int, at: tuple) -> None:
        if depth > MAX_QUERY_DEPTH:
            raise QueryError(
                f"{_where(at)}: the query nests deeper than MAX_QUERY_DEPTH ({MAX_QUERY_DEPTH}) "
                "levels of dicts and lists; flatten it (one $and or $or of many conditions "
                "instead of nested ones)")

    def seq(self, value: Any, at: tuple, what: str) -> list:
        """A list for $in / $and / ...: list, tuple, set or numpy array, not too long."""
        if not isinstance(value, (list, tuple, set, frozenset)) and not _is_ndarray(value):
            raise QueryError(f"{_where(at)}: {what}, got {_repr.repr(value)}")
        if len(value) > MAX_IN_VALUES:
            raise QueryError(
                f"{_where(at)}: {len(value):,} values, more than MAX_IN_VALUES "
                f"({MAX_IN_VALUES:,}) in one list; query a range ($gte/$lt) or run several "
                "searches")
        return value.tolist() if _is_ndarray(value) else list(value)

    # ------------------------------------------------------------ filters
    def filter(self, query: Any, at: tuple, depth: int) -> Query:
        """A query document: field conditions and $and / $or / $nor."""
        if not isinstance(query, Mapping):
            raise QueryError(f"{_where(at)}: a query is a dict of field conditions, like "
                             f"{{'plan_name': 'scan'}}, not {type(query).__name__} "
                             f"{_repr.repr(query)}")
        self.nest(depth, at)
        normal: dict = {}
        predicates: list[Predicate] = []
        conditions: list = []
        or_branches: list = []
        for key, cond in query.items():
            here = (*at, key)
            self.grow(16 + len(key) if isinstance(key, str) else 16, here)
            if not isinstance(key, str):
                raise QueryError(f"{_where(at)}: query keys are field names (str), got "
                                 f"{_repr.repr(key)}")
            if key in _LOGICAL_OPERATORS:
                subs = self.logical(key, cond, here, depth + 1)
                normal[key] = [dict(s._query) for s in subs]
                predicates.append(_logical_predicate(key, subs))
                if key == "$and":
                    for s in subs:
                        conditions += s._conditions
                        or_branches += s._or_branches
                elif key == "$or":
                    or_branches.append(subs)
            elif key.startswith("$"):
                if key == "$not":
                    raise QueryError(
                        f"{_where(here)}: $not applies to one field's conditions, as in "
                        "{'scan_id': {'$not': {'$gt': 5}}}; to negate whole queries use "
                        "{'$nor': [query, ...]}")
                raise _unsupported(key, here)
            else:
                path = self.path(key, here)
                normal[key], condition, simple = self.condition(cond, here, depth + 1)
                predicates.append(_field_predicate(path, condition))
                conditions += [(key, op, value) for op, value in simple]
        return Query(normal, _all_of(predicates), conditions, or_branches)

    def logical(self, op: str, subs: Any, at: tuple, depth: int) -> list[Query]:
        items = self.seq(subs, at, f"{op} takes a non-empty list of queries")
        if not items:
            raise QueryError(f"{_where(at)}: {op} takes a non-empty list of queries, got []")
        self.nest(depth, at)
        return [self.filter(sub, (*at, i), depth + 1) for i, sub in enumerate(items)]

    def path(self, key: str, at: tuple) -> tuple[str, ...]:
        parts = tuple(key.split("."))
        if any(not p for p in parts):
            raise QueryError(f"{_where(at)}: the field name {key!r} has an empty part; "
                             "write dotted names like 'sample.name'")
        if "\x00" in key or any(p.startswith("$") for p in parts[1:]):
            raise QueryError(f"{_where(at)}: the field name {key!r} is not valid (no NUL "
                             "characters, no parts after a dot starting with '$')")
        return parts

    # ------------------------------------------------------------ conditions
    def condition(self, cond: Any, at: tuple, depth: int) -> tuple[Any, Condition, list]:
        """One field's condition: a value (equality) or a dict of operators.

        Returns its normal form, the condition on the path's values and the
        ``(op, value)`` pairs an index can answer."""
        if not _is_operator_dict(cond):
            value = self.value(cond, at, depth, regex=True)
            if isinstance(value, re.Pattern):
                return value, _regex_condition(value), []
            return value, _equality_condition(value), _indexable("$eq", value)
        plain = [k for k in cond if not (isinstance(k, str) and k.startswith("$"))]
        if plain:
            ops = [k for k in cond if k not in plain]
            raise QueryError(
                f"{_where(at)} mixes operators ({', '.join(ops)}) with plain keys "
                f"({', '.join(map(str, plain))}): a condition is either a dict of operators, "
                "like {'$gt': 1}, or a value to equal; for a field inside, write "
                "'field.key' as the query key")
        self.nest(depth, at)
        normal: dict = {}
        checks: list[Condition] = []
        simple: list = []
        for op, arg in cond.items():
            here = (*at, op)
            self.grow(16 + len(op), here)
            if op == "$options":
                if "$regex" not in cond:
                    raise QueryError(f"{_where(here)}: $options goes with $regex, as in "
                                     "{'$regex': '^scan', '$options': 'i'}")
                normal[op] = arg
                continue
            normal[op], check, indexable = self.operator(op, arg, cond, here, depth + 1)
            checks.append(check)
            simple += indexable
        return normal, _all_of(checks), simple

    def operator(self, op: str, arg: Any, cond: Mapping, at: tuple,
                 depth: int) -> tuple[Any, Condition, list]:
        if op in ("$eq", "$ne"):
            value = self.value(arg, at, depth)
            check = _equality_condition(value)
            if op == "$ne":
                return value, _negated(check), []
            return value, check, _indexable("$eq", value)
        if op in ("$in", "$nin"):
            items = self.seq(arg, at, f"{op} takes a list of values")
            values = [self.value(v, (*at, i), depth + 1, regex=True) for i, v in enumerate(items)]
            checks = [_regex_condition(v) if isinstance(v, re.Pattern) else _equality_condition(v)
                      for v in values]
            check = _any_of(checks)
            if op == "$nin":
                return values, _negated(check), []
            return values, check, _indexable("$in", values)
        if op in _COMPARISONS:
            value = self.value(arg, at, depth)
            if value is None or isinstance(value, (list, dict)):
                raise QueryError(
                    f"{_where(at)}: {op} compares with a number, a string or a boolean, not "
                    f"{_repr.repr(value)}; for missing or None fields use equality with None "
                    "or $exists")
            return value, _comparison_condition(_COMPARISONS[op], value), _indexable(op, value)
        if op == "$exists":
            if not isinstance(arg, (bool, int, float)):
                raise QueryError(f"{_where(at)}: $exists takes True or False, got "
                                 f"{_repr.repr(arg)}")
            return arg, _exists_condition(bool(arg)), []
        if op == "$regex":
            pattern = self.regex(arg, cond.get("$options"), at)
            return arg, _regex_condition(pattern), []
        if op == "$not":
            if isinstance(arg, re.Pattern):
                pattern = self.regex(arg, None, at)
                return arg, _negated(_regex_condition(pattern)), []
            if not _is_operator_dict(arg):
                raise QueryError(
                    f"{_where(at)}: $not takes a dict of operators or a regex, as in "
                    f"{{'$not': {{'$gt': 5}}}}, got {_repr.repr(arg)}; for inequality use $ne")
            normal, check, _ = self.condition(arg, at, depth)
            return normal, _negated(check), []
        if op == "$elemMatch":
            if not isinstance(arg, Mapping) or not arg:
                raise QueryError(
                    f"{_where(at)}: $elemMatch takes a non-empty dict: a query on the "
                    "elements ({'name': 'Si', 'mass': {'$gt': 1}}) or operators "
                    f"({{'$gte': 1, '$lt': 5}}), got {_repr.repr(arg)}")
            if all(k in _LOGICAL_OPERATORS or not (isinstance(k, str) and k.startswith("$"))
                   for k in arg):
                sub = self.filter(arg, at, depth)
                return dict(sub._query), _elem_match_query(sub._predicate), []
            normal, check, _ = self.condition(arg, at, depth)
            return normal, _elem_match_condition(check), []
        raise _unsupported(op, at)

    def regex(self, pattern: Any, options: Any, at: tuple) -> re.Pattern:
        if isinstance(pattern, re.Pattern):
            if options is not None:
                raise QueryError(f"{_where(at)}: give the options of a compiled pattern as "
                                 "its flags, or a string pattern with $options, not both")
            if not isinstance(pattern.pattern, str) or pattern.flags & ~_PATTERN_FLAGS:
                raise QueryError(
                    f"{_where(at)}: the pattern {_repr.repr(pattern)} is not a str pattern "
                    "with flags among re.I, re.M, re.S and re.X (what MongoDB supports)")
            self.grow(16 + len(pattern.pattern), at)
            return pattern
        if not isinstance(pattern, str):
            raise QueryError(f"{_where(at)}: $regex takes a pattern (str or re.Pattern), got "
                             f"{_repr.repr(pattern)}")
        if options is None:
            options = ""
        if not isinstance(options, str) or set(options) - set(_REGEX_OPTIONS):
            raise QueryError(f"{_where(at)}: $options takes letters among i, m, s and x, got "
                             f"{_repr.repr(options)}")
        self.grow(16 + len(pattern), at)
        flags = 0
        for letter in options:
            flags |= _REGEX_OPTIONS[letter]
        try:
            return re.compile(pattern, flags)
        except re.error as err:
            raise QueryError(f"{_where(at)}: the regular expression {pattern!r} does not "
                             f"compile ({err}); patterns are Python regular expressions") from err

    # ------------------------------------------------------------ values
    def value(self, value: Any, at: tuple, depth: int, *, regex: bool = False) -> Any:
        """A value to compare with, checked and normalized (numpy as Python)."""
        self.grow(16, at)
        t = type(value)
        if value is None or t is bool or t is float:
            return value
        if t is str:
            self.grow(len(value), at)
            return value
        if t is int:
            if not _I64_MIN <= value <= _I64_MAX:
                raise QueryError(
                    f"{_where(at)}: the integer {value} is beyond 64 bits, which MongoDB "
                    "(BSON) cannot compare; query with a float or a string")
            return value
        if isinstance(value, re.Pattern):
            if not regex:
                raise QueryError(
                    f"{_where(at)}: a regex cannot be compared with $eq, $ne or $gt...; "
                    "match it as the field's value ({'field': re.compile(...)}), with "
                    "$regex, in $in / $nin, or negate it with $not")
            return self.regex(value, None, at)
        if isinstance(value, Mapping):
            self.nest(depth, at)
            out = {}
            for k, v in value.items():
                if not isinstance(k, str) or "\x00" in k:
                    raise QueryError(f"{_where(at)}: keys of a document to compare with are "
                                     f"str without NUL characters, got {_repr.repr(k)}")
                self.grow(len(k), at)
                out[k] = self.value(v, (*at, k), depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            self.nest(depth, at)
            if len(value) > MAX_IN_VALUES:
                self.seq(value, at, "a list")
            return [self.value(v, (*at, i), depth + 1) for i, v in enumerate(value)]
        if isinstance(value, (set, frozenset)):
            raise QueryError(
                f"{_where(at)}: a set is not a query value (MongoDB has no sets); for any of "
                "several values write {'$in': [...]}, for a list value write a list")
        if isinstance(value, str):  # numpy str_, str subclasses
            return self.value(str(value), at, depth)
        if isinstance(value, int):  # int subclasses (IntEnum)
            return self.value(int(value), at, depth)
        if isinstance(value, float):
            return float(value)
        if _is_numpy_scalar(value):
            return self.value(value.item(), at, depth)
        if _is_ndarray(value):
            return self.value(value.tolist(), at, depth, regex=regex)
        hint = ""
        if type(value).__module__ == "datetime":
            hint = ("; start times are epoch seconds: compare 'time' with a float, or use "
                    "db.search(since=..., until=...)")
        raise QueryError(f"{_where(at)}: a query value cannot be a {type(value).__name__} "
                         f"({_repr.repr(value)}); use None, bool, int, float, str, list or "
                         f"dict{hint}")


def _is_ndarray(value: Any) -> bool:
    return type(value).__name__ == "ndarray" and hasattr(value, "tolist")


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item") and \
        isinstance(value.item(), (bool, int, float, str))


def _indexable(op: str, value: Any) -> list:
    if op == "$in":
        return [(op, value)] if value and all(_plain_scalar(v) for v in value) else []
    return [(op, value)] if _plain_scalar(value) else []


def _plain_scalar(value: Any) -> bool:
    t = type(value)
    return t is str or ((t is int or t is float) and math.isfinite(value))


# ---------------------------------------------------------------- index filters
def _index_parts(query: Query, basic: bool) -> list[dict]:
    """The conditions of ``query`` a Mongo server answers, as filter documents."""
    parts = []
    for key, op, value in query._conditions:
        if not basic or ("." not in key and op in ("$eq", "$in")):
            parts.append({key: value if op == "$eq" else {op: value}})
    for branches in query._or_branches:
        filters = [_index_parts(b, basic) for b in branches]
        if all(filters):
            parts.append({"$or": [f[0] if len(f) == 1 else {"$and": f} for f in filters]})
    return parts


# ---------------------------------------------------------------- matching
def _resolve(doc: Any, path: tuple[str, ...]) -> list:
    """The values a dotted path leads to, as MongoDB finds them.

    A list on the way is entered at a numeric part (``tags.0``), else each of its
    documents is followed; a missing key (or a path through a scalar) gives _MISSING.
    """
    out: list = []
    _walk(doc, path, 0, out)
    return out


def _walk(value: Any, path: tuple[str, ...], i: int, out: list) -> None:
    if i == len(path):
        out.append(value)
        return
    part = path[i]
    if isinstance(value, Mapping):
        if part in value:
            _walk(value[part], path, i + 1, out)
        else:
            out.append(_MISSING)
    elif isinstance(value, list):
        if part.isascii() and part.isdigit():
            if int(part) < len(value):
                _walk(value[int(part)], path, i + 1, out)
            else:
                out.append(_MISSING)
        else:
            for element in value:
                if isinstance(element, Mapping):
                    _walk(element, path, i, out)
    else:
        out.append(_MISSING)


def _kind(value: Any) -> int:
    """MongoDB's type classes: only values of one class equal or compare."""
    t = type(value)
    if t is bool:
        return 1
    if t is int or t is float or t is decimal.Decimal:
        return 2
    if t is str:
        return 3
    if value is None:
        return 0
    if isinstance(value, Mapping):
        return 4
    if isinstance(value, list):
        return 5
    return 6


def _equal(a: Any, b: Any) -> bool:
    """MongoDB equality: same class; numbers by value; documents key by key, in order."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == 2:
        return a == b or (a != a and b != b)  # NaN equals NaN
    if kind == 4:
        return len(a) == len(b) and all(
            ka == kb and _equal(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if kind == 5:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _equality_condition(target: Any) -> Condition:
    def check(values: list) -> bool:
        for v in values:
            if v is _MISSING:
                if target is None:
                    return True
            elif _equal(v, target) or (isinstance(v, list) and any(_equal(e, target) for e in v)):
                return True
        return False
    return check


def _regex_condition(pattern: re.Pattern) -> Condition:
    search = pattern.search

    def check(values: list) -> bool:
        for v in values:
            if isinstance(v, str):
                if search(v):
                    return True
            elif isinstance(v, list) and any(isinstance(e, str) and search(e) for e in v):
                return True
        return False
    return check


def _comparison_condition(compare: Callable, target: Any) -> Condition:
    kind = _kind(target)

    def check(values: list) -> bool:
        for v in values:
            for c in (v, *v) if isinstance(v, list) else (v,):
                if c is not _MISSING and _kind(c) == kind and compare(c, target):
                    return True
        return False
    return check


def _exists_condition(wanted: bool) -> Condition:
    def check(values: list) -> bool:
        return any(v is not _MISSING for v in values) == wanted
    return check


def _elem_match_query(predicate: Predicate) -> Condition:
    def check(values: list) -> bool:
        return any(isinstance(v, list) and any(isinstance(e, Mapping) and predicate(e) for e in v)
                   for v in values)
    return check


def _elem_match_condition(condition: Condition) -> Condition:
    def check(values: list) -> bool:
        return any(isinstance(v, list) and any(condition([e]) for e in v) for v in values)
    return check


def _negated(condition: Condition) -> Condition:
    return lambda values: not condition(values)


def _any_of(conditions: list[Condition]) -> Condition:
    return lambda values: any(c(values) for c in conditions)


def _all_of(checks: list) -> Callable:
    if len(checks) == 1:
        return checks[0]
    return lambda x: all(c(x) for c in checks)


def _field_predicate(path: tuple[str, ...], condition: Condition) -> Predicate:
    if len(path) == 1:
        key = path[0]
        return lambda doc: condition([doc[key]] if key in doc else [_MISSING])
    return lambda doc: condition(_resolve(doc, path))


def _logical_predicate(op: str, subs: list[Query]) -> Predicate:
    predicates = [s._predicate for s in subs]
    if op == "$and":
        return lambda doc: all(p(doc) for p in predicates)
    if op == "$or":
        return lambda doc: any(p(doc) for p in predicates)
    return lambda doc: not any(p(doc) for p in predicates)
