"""Unit tests of dask_broker.query (Mongo-style matching of start documents)."""

from __future__ import annotations

import itertools
import operator
import random

import pytest

from dask_broker.errors import DaskBrokerError, QueryError, UnsupportedQueryError
from dask_broker.query import SUPPORTED_OPERATORS, match_query, validate_query

DOC = {
    "uid": "u1",
    "scan_id": 7,
    "plan_name": "scan",
    "temperature": 295.5,
    "sample": {"name": "Si", "dims": {"x": 2, "y": 3}},
    "tags": ["hot", "calib"],
    "matrix": [[1, 2], [3, 4]],
    "nothing": None,
    "flag": False,
    "detectors": ["det1", "det2"],
}


# ---------------------------------------------------------------- equality
@pytest.mark.parametrize("query,expected", [
    ({}, True),
    ({"plan_name": "scan"}, True),
    ({"plan_name": "count"}, False),
    ({"scan_id": 7}, True),
    ({"scan_id": 7.0}, True),
    ({"scan_id": "7"}, False),
    ({"plan_name": "scan", "scan_id": 8}, False),
    ({"sample.name": "Si"}, True),
    ({"sample.name": "Ge"}, False),
    ({"sample.dims.y": 3}, True),
    ({"sample.dims": {"x": 2, "y": 3}}, True),
    ({"sample.dims": {"x": 2}}, False),
    ({"sample.missing": None}, True),  # a missing field equals None (as in Mongo)
    ({"absent": None}, True),
    ({"nothing": None}, True),
    ({"absent": 0}, False),
    ({"tags": "hot"}, True),  # list membership
    ({"tags": "cold"}, False),
    ({"tags": ["hot", "calib"]}, True),  # whole-list equality
    ({"tags": ["calib", "hot"]}, False),
    ({"tags.0": "hot"}, True),  # list index in a dotted key
    ({"tags.1": "hot"}, False),
    ({"tags.5": None}, True),
    ({"matrix.1.0": 3}, True),
    ({"flag": False}, True),
    ({"flag": None}, False),
    ({"uid.x": None}, True),  # cannot descend into a string: missing
])
def test_equality(query, expected):
    assert match_query(DOC, query) is expected


@pytest.mark.parametrize("query,expected", [
    ({"plan_name": {"$eq": "scan"}}, True),
    ({"tags": {"$eq": "calib"}}, True),
    ({"plan_name": {"$ne": "scan"}}, False),
    ({"plan_name": {"$ne": "count"}}, True),
    ({"tags": {"$ne": "hot"}}, False),  # $ne on a list: no element equals
    ({"tags": {"$ne": "cold"}}, True),
    ({"absent": {"$ne": 1}}, True),
    ({"absent": {"$ne": None}}, False),
    ({"nothing": {"$ne": None}}, False),
    ({"scan_id": {"$in": [1, 7]}}, True),
    ({"scan_id": {"$in": []}}, False),
    ({"scan_id": {"$in": (6, 8)}}, False),
    ({"tags": {"$in": ["cold", "calib"]}}, True),
    ({"tags": {"$in": ["cold"]}}, False),
    ({"absent": {"$in": [None]}}, True),
    ({"scan_id": {"$nin": [1, 7]}}, False),
    ({"scan_id": {"$nin": [1, 2]}}, True),
    ({"tags": {"$nin": ["hot"]}}, False),
    ({"absent": {"$nin": [1]}}, True),
    ({"absent": {"$exists": False}}, True),
    ({"absent": {"$exists": True}}, False),
    ({"nothing": {"$exists": True}}, True),  # present, though None
    ({"sample.dims.x": {"$exists": True}}, True),
    ({"sample.dims.z": {"$exists": 0}}, True),
])
def test_operators(query, expected):
    assert match_query(DOC, query) is expected


# ---------------------------------------------------------------- comparisons
_OPS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


@pytest.mark.parametrize("op", list(_OPS))
def test_comparisons_agree_with_python(op):
    rng = random.Random(op)
    values = [rng.randint(-5, 5) for _ in range(20)] + [rng.uniform(-5, 5) for _ in range(20)]
    for value, target in itertools.product(values[::3], values[::2]):
        assert match_query({"v": value}, {"v": {op: target}}) is _OPS[op](value, target)


@pytest.mark.parametrize("op", list(_OPS))
def test_comparison_on_list_matches_any_element(op):
    values = [1, 5, 9]
    for target in range(0, 11):
        expected = any(_OPS[op](v, target) for v in values)
        assert match_query({"v": values}, {"v": {op: target}}) is expected


@pytest.mark.parametrize("op", list(_OPS))
def test_comparison_across_types_does_not_match_or_raise(op):
    assert match_query({"v": "abc"}, {"v": {op: 3}}) is False
    assert match_query({"v": 3}, {"v": {op: "abc"}}) is False
    assert match_query({"v": None}, {"v": {op: 3}}) is False
    assert match_query({}, {"v": {op: 3}}) is False


def test_comparison_of_strings():
    assert match_query({"v": "beta"}, {"v": {"$gt": "alpha"}})
    assert not match_query({"v": "beta"}, {"v": {"$lt": "alpha"}})


def test_several_operators_on_one_field_all_apply():
    for v in range(0, 10):
        expected = 3 <= v < 7 and v != 5
        assert match_query({"v": v}, {"v": {"$gte": 3, "$lt": 7, "$ne": 5}}) is expected


# ---------------------------------------------------------------- logic
@pytest.mark.parametrize("a,b", list(itertools.product([True, False], repeat=2)))
def test_logical_operators(a, b):
    qa = {"plan_name": "scan" if a else "count"}
    qb = {"scan_id": {"$gt": 5} if b else {"$lt": 5}}
    assert match_query(DOC, {"$and": [qa, qb]}) is (a and b)
    assert match_query(DOC, {"$or": [qa, qb]}) is (a or b)
    assert match_query(DOC, {"$nor": [qa, qb]}) is (not (a or b))
    assert match_query(DOC, {**qa, **qb}) is (a and b)


def test_nested_logic():
    query = {"$or": [{"$and": [{"tags": "hot"}, {"scan_id": 1}]},
                     {"$nor": [{"sample.name": "Ge"}]}]}
    assert match_query(DOC, query)
    assert not match_query({**DOC, "sample": {"name": "Ge"}}, query)
    assert match_query({**DOC, "sample": {"name": "Ge"}, "scan_id": 1}, query)


@pytest.mark.parametrize("op", ["$and", "$or", "$nor"])
def test_empty_logical_lists_are_errors(op):
    # MongoDB refuses them ("$and/$or/$nor must be a nonempty array"): so does every store
    with pytest.raises(QueryError, match=rf'query\["\{op}"\]: \{op} takes a non-empty list'):
        match_query(DOC, {op: []})


def test_empty_dict_is_equality():
    assert match_query({"md": {}}, {"md": {}})
    assert not match_query({"md": {"a": 1}}, {"md": {}})


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("query,name", [
    ({"plan_name": {"$expr": "sc"}}, "$expr"),
    ({"$where": "1"}, "$where"),
    ({"$text": {"$search": "x"}}, "$text"),
    ({"scan_id": {"$not": {"$mod": [2, 0]}}}, "$mod"),
    ({"tags": {"$size": 2}}, "$size"),
    ({"tags": {"$all": ["hot"]}}, "$all"),
    ({"scan_id": {"$gt": 1, "$mod": [2, 0]}}, "$mod"),
    ({"$or": [{"scan_id": 1}, {"tags": {"$elemMatch": {"$size": 1}}}]}, "$size"),
    ({"$and": [{"$nor": [{"x": {"$type": "string"}}]}]}, "$type"),
])
def test_unsupported_operator(query, name):
    with pytest.raises(UnsupportedQueryError) as info:
        validate_query(query)
    err = info.value
    assert isinstance(err, DaskBrokerError) and isinstance(err, ValueError)
    assert name in str(err)
    for op in SUPPORTED_OPERATORS:  # the message lists what is supported
        assert op in str(err)
    with pytest.raises(UnsupportedQueryError):
        match_query(DOC, query)


def test_unsupported_operator_raises_even_when_not_reached():
    # the first condition fails, but the unsupported operator is still reported
    with pytest.raises(UnsupportedQueryError, match=r"\$size"):
        match_query(DOC, {"plan_name": "count", "tags": {"$size": 2}})


@pytest.mark.parametrize("query", [
    ["plan_name", "scan"],
    "plan_name",
    None,
    {"$and": {"scan_id": 1}},
    {"$or": "scan"},
    {"$or": [["scan_id", 1]]},
    {"scan_id": {"$in": 7}},
    {"scan_id": {"$nin": "7"}},
    {1: "scan"},
])
def test_malformed_query(query):
    with pytest.raises(UnsupportedQueryError):
        validate_query(query)


@pytest.mark.parametrize("query", [
    {}, {"a": 1}, {"a.b.c": {"$in": [1, 2]}}, {"$and": [{"a": 1}, {"b": {"$exists": True}}]},
    {"a": {"$eq": {"$gt": 1}}},
])
def test_valid_queries_pass_validation(query):
    validate_query(query)


def test_supported_operators():
    expected = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists",
                "$regex", "$options", "$not", "$elemMatch", "$and", "$or", "$nor"}
    assert set(SUPPORTED_OPERATORS) == expected
    assert list(SUPPORTED_OPERATORS) == sorted(SUPPORTED_OPERATORS)
