"""The fast write path: uid hashes, open-page counts across connections, compiled event
checks -- each as strict as the full validation, and leaving the same catalog."""

from __future__ import annotations

import copy
import uuid

import event_model
import numpy as np
import pytest

from dask_broker import Broker, DocumentValidationError, DuplicateUidError
from dask_broker.compiled_checks import EventCheck
from dask_broker.stores.sqlite import event_writes as sqlite_store
from dask_broker.stores.sqlite import SEAL_EVENTS, SQLiteStore
from dask_broker.stores.uid_hashes import HashSet, uid_hashes


def _run(store, n_keys=("x", "n")):
    run = event_model.compose_run()
    keys = {"x": {"source": "x", "dtype": "number", "shape": []},
            "n": {"source": "n", "dtype": "integer", "shape": []}}
    desc = run.compose_descriptor(name="primary", data_keys={k: keys[k] for k in n_keys})
    store.insert_start(run.start_doc)
    store.insert_descriptor(desc.descriptor_doc)
    return run, desc


def _event(desc, i):
    return desc.compose_event(data={"x": 0.5 * i, "n": i}, timestamps={"x": 1.0, "n": 1.0},
                              seq_num=i, validate=False)


def _events(store, desc_uid):
    out = []
    for page in store.iter_event_pages([desc_uid], uids=True):
        out += list(zip(page.seq_num.tolist(), page.uid, page.data["x"].tolist()))
    return out


# ---------------------------------------------------------------- hashes
def test_uid_hashes_are_stable_and_padding_free():
    uids = ["a", "ab", "abc", "\u00e9t\u00e9", "\U0001F600", "x" * 37, "" ]
    one_by_one = np.array([uid_hashes([u])[0] for u in uids], dtype=np.uint64)
    np.testing.assert_array_equal(uid_hashes(uids), one_by_one)
    np.testing.assert_array_equal(uid_hashes(np.array(uids)), one_by_one)
    assert len(set(one_by_one.tolist())) == len(uids)
    # the same in every process and version: persisted in catalogs
    assert int(uid_hashes(["abc"])[0]) == int(uid_hashes(["abc", "longer uid"])[0])


@pytest.mark.parametrize("uids", [
    [str(uuid.UUID(int=i)) for i in range(300)],  # one even width (the usual uuid4)
    [f"u{i:04d}" for i in range(300)],  # one odd width
    ["ab", "cd\0", "e\0"],  # NULs inside uids
    ["a\0", "bc"],  # one width, a NUL where the padding goes
    ["\u00e9t\u00e9", "abc"],  # non-ASCII
    ["abc", "de", "fgh"],  # total length of one width, lengths that differ
], ids=["uuid", "odd", "nul", "nul-at-pad", "non-ascii", "mixed"])
def test_uid_hashes_of_a_list_equal_each_uids_own_hash(uids):
    """A list of uids takes the fast path of one width where it can; every path gives the
    hash of each uid alone (what catalogs stored)."""
    one_by_one = np.array([uid_hashes([u])[0] for u in uids], dtype=np.uint64)
    np.testing.assert_array_equal(uid_hashes(uids), one_by_one)
    np.testing.assert_array_equal(uid_hashes(np.array(uids)), one_by_one)


def test_hash_set_holds_each_hash_once():
    s = HashSet()
    values = np.arange(1, 10_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    s.add(values[:6000])
    s.add(values[3000:])  # half of it held already
    s.add(np.concatenate([values[:5], values[:5]]))  # small and repeated: buffered
    for v in values[:100]:
        s.add(v[None])
    s.add(np.repeat(values[:100], 3))
    assert len(s) == values.size
    assert sum(level.size for level in s._levels) == np.unique(
        np.concatenate(s._levels)).size
    assert s.contains(values).all()


def test_hash_set_finds_what_it_holds_across_levels():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, 30_000).astype(np.uint64)
    s = HashSet()
    for i in range(0, 100):  # single events: buffered
        s.add(values[i:i + 1])
    for i in range(100, 20_000, 1000):  # pages
        s.add(values[i:min(i + 1000, 20_000)])
    assert len(s) == 20_000
    assert s.contains(values[:20_000]).all()
    assert not s.contains(values[20_000:]).any()
    assert s.contains(values[[5, 25_000]]).tolist() == [True, False]


def test_hash_set_bitmap_grows_and_only_narrows():
    """The bitmap grows with the set (8+ bits a hash), is never wrong about a hash the set
    holds, and leaves only a few of the others to search for."""
    rng = np.random.default_rng(1)
    held = rng.integers(0, 2**64, 300_000, dtype=np.uint64)
    s = HashSet()
    widths = set()
    for at in range(0, held.size, 10_000):
        s.add(held[at:at + 10_000])
        widths.add(s._width)
        assert s._bits.size * 8 >= 8 * len(s)  # at least 8 bits a hash
    assert len(widths) > 1  # it grew
    others = rng.integers(0, 2**64, 100_000, dtype=np.uint64)
    assert s._maybe(held).all() and s._maybe(others).mean() < 0.15
    assert s.contains(held).all() and not s.contains(others).any()


def test_hash_collision_is_not_a_duplicate(tmp_path, monkeypatch):
    """Two different uids with one hash: both go in; a real repeat is still refused."""
    monkeypatch.setattr(sqlite_store, "uid_hashes",
                        lambda uids: np.full(len(uids), 7, dtype=np.uint64))
    store = SQLiteStore(tmp_path / "c.db")
    _, desc = _run(store)
    store.insert_event_page(event_model.pack_event_page(_event(desc, 1), _event(desc, 2)))
    store.insert_event_page(event_model.pack_event_page(_event(desc, 3)))
    again = _event(desc, 4)
    again["uid"] = _events(store, desc.descriptor_doc["uid"])[1][1]
    with pytest.raises(DuplicateUidError, match=again["uid"]):
        store.insert_event_page(event_model.pack_event_page(again))
    assert [e[0] for e in _events(store, desc.descriptor_doc["uid"])] == [1, 2, 3]


# ---------------------------------------------------------------- two writers
def test_two_writers_see_each_others_uids_and_open_pages(tmp_path):
    """Single events from two stores (two connections) into one descriptor: uids stay
    unique across them, and the open pages are sealed at SEAL_EVENTS events, not later."""
    a = SQLiteStore(tmp_path / "c.db")
    b = SQLiteStore(tmp_path / "c.db")
    _, desc = _run(a)
    d = desc.descriptor_doc["uid"]
    events = [_event(desc, i) for i in range(1, SEAL_EVENTS + 11)]
    for i, e in enumerate(events):
        (a if i % 3 else b).insert_event_page(event_model.pack_event_page(e))
    for store in (a, b):  # each refuses what the other wrote
        with pytest.raises(DuplicateUidError):
            store.insert_event_page(event_model.pack_event_page(
                dict(events[5], seq_num=9999)))
    got = _events(a, d)
    assert [e[0] for e in got] == list(range(1, SEAL_EVENTS + 11))
    assert [e[1] for e in got] == [e["uid"] for e in events]
    conn = a._conn()
    (open_events,) = conn.execute(
        "SELECT COALESCE(SUM(n), 0) FROM event_page WHERE descriptor = ? AND sealed = 0",
        (d,)).fetchone()
    assert open_events == 10


def test_sealed_pages_leave_each_uid_hash_held_once(tmp_path):
    """Two writers of single events: each reads the rows the other appended, among them
    the sealed pages that repeat the hashes of open pages it knew; it holds each once."""
    a = SQLiteStore(tmp_path / "c.db")
    b = SQLiteStore(tmp_path / "c.db")
    _, desc = _run(a)
    n = 3 * SEAL_EVENTS + 10
    for i in range(1, n + 1):
        (a if i % 3 else b).insert_event_page(event_model.pack_event_page(_event(desc, i)))
    a.insert_event_page(event_model.pack_event_page(_event(desc, n + 1)))
    b.insert_event_page(event_model.pack_event_page(_event(desc, n + 2)))
    assert len(b._uids.known) == n + 2  # b knows every stored uid, each once
    assert len(a._uids.known) == n + 1  # (a has not read b's last one yet)
    conn = a._conn()
    stored = np.concatenate([np.frombuffer(blob, dtype=np.uint64) for (blob,) in
                             conn.execute("SELECT hashes FROM event_uid_hash")])
    assert stored.size == n + 2 and b._uids.known.contains(stored).all()
    last = _events(a, desc.descriptor_doc["uid"])[-1][1]  # b's: a reads it now
    with pytest.raises(DuplicateUidError, match=last):
        a.insert_event_page(event_model.pack_event_page(dict(_event(desc, 1), uid=last)))


def test_uids_another_writer_stored_are_seen_after_a_reconnect(tmp_path):
    """A writer skips reading the stored uid hashes while no other connection has committed
    (``PRAGMA data_version``); that count is one connection's, so after ``close()`` its new
    connection still reads what another writer stored meanwhile."""
    a = SQLiteStore(tmp_path / "c.db")
    b = SQLiteStore(tmp_path / "c.db")
    _, desc = _run(a)
    events = [_event(desc, i) for i in range(1, 8)]
    for e in events[:3]:  # a alone: no other commits, no re-reading
        a.insert_event_page(event_model.pack_event_page(e))
    b.insert_event_page(event_model.pack_event_page(events[3]))
    a.close()
    b.insert_event_page(event_model.pack_event_page(events[4]))
    for dup in (events[3], events[4], events[0]):
        with pytest.raises(DuplicateUidError, match=dup["uid"]):
            a.insert_event_page(event_model.pack_event_page(dict(dup, seq_num=99)))
    a.insert_event_page(event_model.pack_event_page(events[5]))
    with pytest.raises(DuplicateUidError, match=events[5]["uid"]):
        b.insert_event_page(event_model.pack_event_page(dict(events[5], seq_num=98)))
    assert [e[0] for e in _events(b, desc.descriptor_doc["uid"])] == [1, 2, 3, 4, 5, 6]


def test_a_refused_page_leaves_the_open_count_alone(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    _, desc = _run(store)
    d = desc.descriptor_doc["uid"]
    events = [_event(desc, i) for i in range(1, SEAL_EVENTS + 1)]
    for e in events[:-1]:
        store.insert_event_page(event_model.pack_event_page(e))
    with pytest.raises(DuplicateUidError):  # refused: nothing counted
        store.insert_event_page(event_model.pack_event_page(
            dict(events[-1], uid=events[0]["uid"])))
    store.insert_event_page(event_model.pack_event_page(events[-1]))
    pages = list(store.iter_event_pages([d]))
    assert [len(p) for p in pages] == [SEAL_EVENTS]  # sealed into one page at SEAL_EVENTS


# ---------------------------------------------------------------- compiled event checks
def _xn_catalog(path) -> Broker:
    """A catalog at ``path`` holding run "run-1" with descriptor "desc-1" of x and n."""
    db = Broker.from_uri(f"sqlite:///{path}")
    run = event_model.compose_run(uid="run-1", time=1.0)
    desc = run.compose_descriptor(
        name="primary", data_keys={"x": {"source": "x", "dtype": "number", "shape": []},
                                   "n": {"source": "n", "dtype": "integer", "shape": []}},
        uid="desc-1", time=1.0)
    db.insert("start", run.start_doc)
    db.insert("descriptor", desc.descriptor_doc)
    return db


def _odd_events(desc_uid="desc-1"):
    good = {"uid": "ev-1", "descriptor": desc_uid, "seq_num": 1, "time": 2.5,
            "data": {"x": 0.5, "n": 1}, "timestamps": {"x": 1.0, "n": 1.0}}
    cases = {
        "good": good,
        "numpy values": dict(good, data={"x": np.float64(1.5), "n": np.int64(3)}),
        "seq_num str": dict(good, seq_num="1"),
        "seq_num bool": dict(good, seq_num=True),
        "seq_num float": dict(good, seq_num=1.0),
        "seq_num beyond 64 bits": dict(good, seq_num=2**63),
        "time str": dict(good, time="noon"),
        "time beyond 64 bits": dict(good, time=2**64),
        "uid int": dict(good, uid=5),
        "uid non-ascii": dict(good, uid="\u00e9v\u00e9nement"),
        "uid lone surrogate": dict(good, uid="a\ud800"),
        "extra key": dict(good, note="hi"),
        "missing timestamps": {k: v for k, v in good.items() if k != "timestamps"},
        "missing key": dict(good, data={"x": 1.0}),
        "extra data key": dict(good, data={"x": 1.0, "n": 1, "y": 2}),
        "bytes value": dict(good, data={"x": b"1", "n": 1}),
        "complex value": dict(good, data={"x": 1j, "n": 1}),
        "big int": dict(good, data={"x": 1.0, "n": 10**40}),
        "34-digit int": dict(good, data={"x": 1.0, "n": 10**33}),
        "list value": dict(good, data={"x": [1.0, 2.0], "n": 1}),
        "str timestamp": dict(good, timestamps={"x": "t", "n": 1.0}),
        "filled bool": dict(good, filled={"x": False}),
        "filled int": dict(good, filled={"x": 1}),
        "filled unknown key": dict(good, filled={"$x": False}),
        "data not a dict": dict(good, data=[1.0, 2]),
        "other descriptor": dict(good, descriptor="elsewhere"),
    }
    return cases


@pytest.mark.parametrize("case", list(_odd_events()))
def test_compiled_event_check_decides_as_the_full_validation(tmp_path, monkeypatch, case):
    """Each event, inserted with the compiled check and without it: the same outcome
    (accepted, or the same error) and the same catalog."""
    outcomes = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(EventCheck, "page", lambda self, doc: None)
        db = _xn_catalog(tmp_path / f"{fast}.db")
        event = copy.deepcopy(_odd_events()[case])
        try:
            db.insert("event", event)
            outcome = None
        except Exception as err:  # noqa: BLE001 -- compared below
            outcome = (type(err), str(err))
        docs = [(n, d) for n, d in db[-1].docs() if n == "event"]
        outcomes.append((outcome, repr(docs)))
    assert outcomes[0] == outcomes[1]


def test_compiled_check_keeps_numpy_values_as_the_full_path(tmp_path):
    db = Broker.from_uri(f"sqlite:///{tmp_path / 'c.db'}")
    run = event_model.compose_run()
    desc = run.compose_descriptor(name="primary", data_keys={
        "x": {"source": "x", "dtype": "number", "shape": []}})
    db.insert("start", run.start_doc)
    db.insert("descriptor", desc.descriptor_doc)
    db.insert("event", desc.compose_event(data={"x": np.float32(0.5)}, timestamps={"x": 1.0},
                                          validate=False))
    with pytest.raises(DocumentValidationError, match="bytes"):
        db.insert("event", desc.compose_event(data={"x": b"x"}, timestamps={"x": 1.0},
                                              validate=False))
    assert [d["data"] for n, d in db[-1].docs() if n == "event"] == [{"x": 0.5}]


# ---------------------------------------------------------------- page envelopes
def _page_cases():
    good = {"descriptor": "desc-1", "uid": ["p1", "p2"], "seq_num": [1, 2], "time": [1.0, 2.0],
            "data": {"x": [0.5, 1.5], "n": [1, 2]},
            "timestamps": {"x": [1.0, 1.0], "n": [1.0, 1.0]}}
    return {
        "good": good,
        "seq_num float": dict(good, seq_num=[1.5, 2.0]),
        "seq_num integral float": dict(good, seq_num=[1.0, 2.0]),
        "uid int": dict(good, uid=[3, 4]),
        "uid non-ascii": dict(good, uid=["\u00e9", "p2"]),
        "uid lone surrogate": dict(good, uid=["\ud800", "p2"]),
        "time str": dict(good, time=["a", "b"]),
        "extra key": dict(good, note=["x"]),
        "descriptor int": dict(good, descriptor=5),
        "data column not a list": dict(good, data={"x": 0.5, "n": [1, 2]}),
        "numpy columns": dict(good, data={"x": np.array([0.5, 1.5]), "n": np.array([1, 2])}),
        "filled int": dict(good, filled={"x": [1, 2]}),
        "big int": dict(good, data={"x": [0.5, 1.5], "n": [10**40, 2]}),
    }


@pytest.mark.parametrize("case", list(_page_cases()))
def test_envelope_cache_decides_as_jsonschema(tmp_path, case):
    """A page after a valid page of the same descriptor (its envelope's shape cached): the
    same outcome as with no cache."""
    from dask_broker import insert as insert_module

    outcomes = []
    for warm in (False, True):
        insert_module._VALID_ENVELOPES.clear()
        db = _xn_catalog(tmp_path / f"{warm}.db")
        if warm:  # every shape of the cases seen valid once (in another run's seq_nums)
            for other in _page_cases().values():
                warm_page = copy.deepcopy(other)
                warm_page.update(uid=["w1", "w2"], seq_num=[101, 102])
                try:
                    db.insert("event_page", warm_page)
                except Exception:  # noqa: BLE001 -- only the valid ones warm the cache
                    pass
        page = copy.deepcopy(_page_cases()[case])
        try:
            db.insert("event_page", page)
            outcome = None
        except Exception as err:  # noqa: BLE001 -- compared below
            outcome = (type(err), str(err))
        outcomes.append(outcome)
    assert outcomes[0] == outcomes[1]
