"""A databroker user's Broker calls run unchanged (issue #11): lookups, search, the
eager readers (get_table, get_events, get_documents, get_images), export and db.reg.

Every test runs on SQLite and on MongoDB (``any_db``); expected values are
computed from the documents composed with event_model.
"""

from __future__ import annotations

import pickle

import pytest

from dask_broker import Broker
from dask_broker.errors import (
    ConflictingArgumentsError,
    DaskBrokerError,
    InvalidArgumentError,
    RenamedArgumentWarning,
    RunIndexError,
    RunNotFoundError,
    UnsupportedSearchError,
)

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def six(any_db, make_run, insert):
    """Six small runs a day apart (scan_id 1..6, alternating plan names); oldest first."""
    runs = []
    for i in range(6):
        md = {"scan_id": i + 1, "plan_name": "scan" if i % 2 == 0 else "count"}
        runs.append(insert(any_db, make_run(metadata=md, n_primary=1, n_baseline=0,
                                            external=False, time=T0 + i * DAY)))
    return any_db, [r.start for r in runs]


def uids(headers):
    return [h.uid for h in headers]


# ---------------------------------------------------------------- lookups
def test_list_tuple_set_and_nested_keys(six):
    db, starts = six
    a, b, c = starts[0]["uid"], starts[3]["uid"], starts[5]["uid"]
    assert uids(db[[a, b]]) == [a, b]
    assert uids(db[(b, a, -1)]) == [b, a, c]
    assert sorted(uids(db[{a, b}])) == sorted([a, b])
    assert uids(db[(k for k in (c, a))]) == [c, a]
    nested = db[[-1, [a[:8], 4]]]  # nesting is kept, as databroker v1
    assert nested[0].uid == c and uids(nested[1]) == [a, b]
    assert db[[]] == []
    with pytest.raises(RunNotFoundError):
        db[[a, "no-such-uid"]]


def test_recent_slices_are_newest_first(six):
    db, starts = six
    newest = [s["uid"] for s in reversed(starts)]
    assert uids(db[-5:]) == newest[:5]
    assert uids(db[-3:]) == [db[-1].uid, db[-2].uid, db[-3].uid]
    assert uids(db[-5:-2]) == [newest[2], newest[3], newest[4]]
    assert uids(db[-6::2]) == [newest[1], newest[3], newest[5]]
    assert uids(db[-1:-4:-1]) == [newest[2], newest[1], newest[0]]
    assert uids(db[-3:0]) == newest[:3]
    assert uids(db[-100:]) == newest  # past the oldest run: the runs there are
    assert db[-2:-2] == []


@pytest.mark.parametrize("key", [slice(1, None), slice(-1, 2), slice(None, None), slice(0, None),
                                 slice(None, -2), slice(-3, None, 0)])
def test_unsupported_slices_are_value_errors(six, key):
    db, _ = six
    with pytest.raises(InvalidArgumentError) as info:
        db[key]
    assert isinstance(info.value, ValueError) and "db[-5:]" in str(info.value)


def test_out_of_range_index_is_index_and_key_error(six):
    db, starts = six
    for key in (-7, -100, "-7"):
        with pytest.raises(RunIndexError) as info:
            db[key]
        assert isinstance(info.value, IndexError) and isinstance(info.value, KeyError)
        assert isinstance(info.value, RunNotFoundError) and "fewer than" in str(info.value)
    assert db[-6].uid == starts[0]["uid"]
    with pytest.raises(IndexError):
        Broker.temp()[-1]


def test_numeric_strings_count_as_numbers(any_db, make_run, insert):
    db = any_db
    zero = insert(db, make_run(metadata={"scan_id": 0}, n_primary=1, n_baseline=0,
                               external=False, time=T0))
    twelve = insert(db, make_run(metadata={"scan_id": 12}, n_primary=1, n_baseline=0,
                                 external=False, time=T0 + 1))
    digits = insert(db, make_run(uid="12345678-aaaa", metadata={"scan_id": 5}, n_primary=1,
                                 n_baseline=0, external=False, time=T0 + 2))
    assert db["-1"].uid == digits.uid and db["-3"].uid == zero.uid
    assert db["12"].uid == twelve.uid         # a scan_id wins over the uid prefix "12"
    assert db["5"].uid == digits.uid and db[5].uid == digits.uid
    assert db["12345678"].uid == digits.uid   # no such scan_id: the uid prefix
    assert db[0].uid == zero.uid and db["0"].uid == zero.uid  # scan_id 0, as databroker
    with pytest.raises(RunNotFoundError, match="scan_id 99 or uid prefix '99'"):
        db["99"]
    with pytest.raises(RunNotFoundError, match="db\\[-1\\] is the latest"):
        Broker.temp()[0]


# ---------------------------------------------------------------- search
def test_start_time_stop_time_are_older_names(six):
    db, starts = six
    want = uids(db(since=T0 + DAY, until=T0 + 3 * DAY))
    assert want == [starts[2]["uid"], starts[1]["uid"]]
    with pytest.warns(RenamedArgumentWarning, match="since"):
        got = db(start_time=T0 + DAY, until=T0 + 3 * DAY)
    assert uids(got) == want
    with pytest.warns(RenamedArgumentWarning) as record:
        got = db(start_time=T0 + DAY, stop_time=T0 + 3 * DAY, plan_name="count")
    assert len(record) == 2 and issubclass(RenamedArgumentWarning, UserWarning)
    assert uids(got) == [starts[1]["uid"]]
    for bad in ({"start_time": T0, "since": T0}, {"stop_time": T0, "until": T0}):
        with pytest.raises(ConflictingArgumentsError) as info:
            db(**bad)
        assert isinstance(info.value, TypeError)


def test_data_key_search(any_db, make_run, insert):
    db = any_db
    with_img = insert(db, make_run(metadata={"plan_name": "scan"}, n_baseline=0))
    plain = insert(db, make_run(metadata={"plan_name": "scan"}, external=False, n_baseline=2))
    other = insert(db, make_run(metadata={"plan_name": "count"}, external=False, n_baseline=0))
    runs = [with_img, plain, other]

    def expected(key, plan=None):
        return [r.uid for r in reversed(runs)
                if any(key in d["data_keys"] for d in r.descriptors.values())
                and (plan is None or r.start["plan_name"] == plan)]

    for key in ("img", "temp", "x"):
        assert uids(db(data_key=key)) == expected(key), key
        assert uids(db.search(data_key=key)) == expected(key), key
    assert uids(db(data_key="x", plan_name="scan")) == expected("x", "scan")
    assert expected("img") == [with_img.uid] and len(expected("x")) == 3
    assert db(data_key="no_such_key") == []


def test_filters(six):
    db, starts = six
    scans = [s["uid"] for s in reversed(starts) if s["plan_name"] == "scan"]
    db.add_filter(plan_name="scan")
    assert db.filters == {"plan_name": "scan"}
    assert uids(db()) == scans
    assert uids(db.search({"scan_id": {"$gte": 3}})) == scans[:2]
    assert uids(db(plan_name="count")) == []          # AND-ed with the filter
    with pytest.warns(RenamedArgumentWarning):
        db.add_filter(start_time=T0 + 3 * DAY)
    assert db.filters == {"plan_name": "scan", "since": T0 + 3 * DAY}
    assert uids(db()) == [starts[4]["uid"]]
    assert db[starts[1]["uid"]].uid == starts[1]["uid"]  # lookups ignore filters
    assert uids(pickle.loads(pickle.dumps(db))()) == [starts[4]["uid"]]
    db.clear_filters()
    assert db.filters == {} and len(db()) == 6
    with pytest.raises(InvalidArgumentError, match="since"):
        db.add_filter(since="not a date")
    assert db.filters == {}


def test_alias_and_dynamic_alias(six):
    db, starts = six
    db.alias("counts", plan_name="count")
    assert uids(db.counts) == [s["uid"] for s in reversed(starts) if s["plan_name"] == "count"]
    calls = []

    def recent():
        calls.append(1)
        return {"since": T0 + 4 * DAY}

    db.dynamic_alias("recent", recent)
    assert uids(db.recent) == [starts[5]["uid"], starts[4]["uid"]]
    assert uids(db.recent) and len(calls) == 2  # the query is built on each access
    db.alias("counts", plan_name="scan")        # an alias may be redefined
    assert len(db.counts) == 3
    for name in ("search", "insert", "filters"):
        with pytest.raises(InvalidArgumentError, match=name):
            db.alias(name, plan_name="scan")
    with pytest.raises(InvalidArgumentError):
        db.dynamic_alias("later", {"plan_name": "scan"})
    with pytest.raises(AttributeError, match="no_such_alias"):
        db.no_such_alias


def test_text_search_is_not_available_yet(six):
    db, _ = six
    with pytest.raises(UnsupportedSearchError) as info:
        db("some words")
    assert isinstance(info.value, NotImplementedError) and isinstance(info.value, DaskBrokerError)
