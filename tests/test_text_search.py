"""Full-text search: the word rule, SQLite's FTS5 table (in sync, migrated into a
version-2 catalog), MongoDB's ``$text`` narrowing.  The same runs from every store
for the same words: dask_broker/testing/store_text.py (run on every store)."""

from __future__ import annotations

import sqlite3

import event_model
import pytest

from catalog_files import stored_version, tables, write_v2_catalog
from dask_broker import Broker, DuplicateUidError, StoreURIError
from dask_broker.stores.mongo import MongoStore
from dask_broker.stores.mongo.indexes import _is_wildcard_text_index
from dask_broker.stores.sqlite import SCHEMA_VERSION
from dask_broker.text_search import (
    MONGO_STOP_WORDS,
    document_words,
    index_text,
    parse_text,
    words,
)

from _mongo_testing import SharedMongomockClient, mongomock_uri


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("text, expected", [
    ("Grid scan", ["grid", "scan"]),
    ("rel_scan", ["rel_scan"]),                   # underscore: part of the word
    ("O'Brien's", ["o'brien's"]),                 # apostrophe too (MongoDB, English)
    ("Si-111/Ge(2)", ["si", "111", "ge", "2"]),   # ASCII punctuation separates
    ("a\u00a0b\u3000c\u2014d", ["a", "b", "c", "d"]),  # no-break space, ideographic space, em dash
    ("10\u00b0C \u00d7 2", ["10", "c", "2"]),     # degree sign, multiplication sign
    ("5\u20ac", ["5\u20ac"]),                     # a currency sign (not Pattern_Syntax) stays
    ("ΔT=3K", ["δt", "3k"]),
    ("scan scan SCAN", ["scan"]),
])
def test_words(text, expected):
    assert words(text) == expected


def test_document_words_reach_every_string_value():
    doc = {"uid": "u-1", "plan_name": "count", "scan_id": 7, "hints": {"dims": [[["x"], "y"]]},
           "sample": {"name": "Si", "composition": [{"el": "Ge"}], "language": "fr"},
           "language": "en", "flag": True, "note": None}
    assert document_words(doc) == {"u", "1", "count", "x", "y", "si", "ge"}
    assert index_text(doc) == "1 count ge si u x y"


def test_index_text_drops_ascii_control_characters():
    # FTS5's ascii tokenizer separates at them; the words still match in Python
    assert index_text({"a": "ab\x01cd"}) == "ab cd"
    assert parse_text("ab\x01cd").fts_query() == '"ab cd"'
    assert parse_text("\x01").fts_query() is None


def test_mongo_search_word_is_plain_and_not_a_stop_word():
    assert parse_text("the silicon wafer").mongo_search() == "silicon"  # the longest
    assert parse_text("the of").mongo_search() is None                 # stop words only
    assert parse_text("café").mongo_search() is None                   # not plain ASCII
    assert parse_text("café si").mongo_search() == "si"
    assert {"the", "don't", "of"} <= MONGO_STOP_WORDS and "scan" not in MONGO_STOP_WORDS


# ---------------------------------------------------------------- SQLite
def _text_rows(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM run_start_text").fetchone()[0]
    finally:
        conn.close()


def test_sqlite_text_table_is_written_with_each_start(tmp_path, make_run, insert):
    db = Broker.from_uri(f"sqlite:///{tmp_path}/c.db")
    runs = [insert(db, make_run(metadata={"sample": s})) for s in ("Si wafer", "Ge")]
    assert _text_rows(db.store.path) == 2
    # a refused start (a duplicate uid) leaves no row behind: one transaction
    with pytest.raises(DuplicateUidError):
        db.insert("start", runs[0].start)
    assert _text_rows(db.store.path) == 2
    assert [h.uid for h in db("wafer")] == [runs[0].uid]


def test_sqlite_text_search_narrows_with_the_text_table(tmp_path):
    """The FTS5 table answers the words (a run whose row is gone is not found)."""
    db = Broker.from_uri(f"sqlite:///{tmp_path}/c.db")
    starts = [event_model.compose_run(metadata={"sample": "Si wafer"}).start_doc
              for _ in range(2)]
    for start in starts:
        db.insert("start", start)
    assert {h.uid for h in db("wafer")} == {s["uid"] for s in starts}
    conn = sqlite3.connect(db.store.path)
    with conn:  # a contentless table deletes a row given its words
        conn.execute("INSERT INTO run_start_text (run_start_text, rowid, words) "
                     "SELECT 'delete', id, ? FROM run_start WHERE uid = ?",
                     (index_text(starts[0]), starts[0]["uid"]))
    conn.close()
    db.store.close()
    assert [h.uid for h in db("wafer")] == [starts[1]["uid"]]
    assert len(db.search({"sample": "Si wafer"})) == 2  # other searches do not use it


def test_version_2_catalog_is_migrated_and_its_runs_indexed(tmp_path):
    path = tmp_path / "v2.db"
    v2 = write_v2_catalog(path, metadata={"sample": {"name": "Silicon wafer"}})
    assert stored_version(path) == "2" and "run_start_text" not in tables(path)

    db = Broker.from_uri(f"sqlite:///{path}")  # a writable open migrates, in place
    assert stored_version(path) == str(SCHEMA_VERSION) and "run_start_text" in tables(path)
    assert _text_rows(path) == 1
    assert [h.uid for h in db("silicon WAFER")] == [v2["start"]["uid"]]
    assert db[-1].stop == v2["stop"]
    new = event_model.compose_run(metadata={"sample": "wafer of Ge"}).start_doc
    db.insert("start", new)
    assert [h.uid for h in db("wafer")] == [new["uid"], v2["start"]["uid"]]
    assert [h.uid for h in db("wafer", plan_name="count")] == [v2["start"]["uid"]]


def test_failed_version_3_migration_changes_nothing(tmp_path):
    """Indexing the stored runs is part of the migration's transaction."""
    path = tmp_path / "v2.db"
    # a plain table where version 3 wants its full-text table: indexing the runs fails
    write_v2_catalog(path, extra_sql="CREATE TABLE run_start_text (x);")
    with pytest.raises(StoreURIError, match="words"):
        Broker.from_uri(f"sqlite:///{path}")
    assert stored_version(path) == "2"


def test_version_2_catalog_read_only_searches_text_without_the_table(tmp_path):
    path = tmp_path / "v2.db"
    v2 = write_v2_catalog(path, metadata={"sample": "Silicon wafer"})
    db = Broker.from_uri(f"sqlite:///{path}?mode=ro")
    assert [h.uid for h in db("wafer")] == [v2["start"]["uid"]]
    assert db("germanium") == []
    db.store.close()
    assert stored_version(path) == "2" and "run_start_text" not in tables(path)


# ---------------------------------------------------------------- MongoDB
#: index_information() of suitcase-mongo's text index on MongoDB 4-7.
_MONGODB_TEXT_INDEX = {"v": 2, "key": [("_fts", "text"), ("_ftsx", 1)], "weights": {"$**": 1},
                       "default_language": "english", "language_override": "language",
                       "textIndexVersion": 3}


@pytest.mark.parametrize("spec, usable", [
    (_MONGODB_TEXT_INDEX, True),
    ({**_MONGODB_TEXT_INDEX, "textIndexVersion": 2}, False),  # the older tokenizer
    ({**_MONGODB_TEXT_INDEX, "weights": {"plan_name": 1}}, False),  # some fields only
    ({**_MONGODB_TEXT_INDEX, "default_language": "none"}, False),
    ({**_MONGODB_TEXT_INDEX, "key": [("scan_id", 1), ("_fts", "text"), ("_ftsx", 1)]}, False),
    ({"key": [("$**", "text")], "v": 2}, False),  # mongomock's
    ({"key": [("uid", 1)], "v": 2, "unique": True}, False),
])
def test_which_mongo_text_index_narrows(spec, usable):
    assert _is_wildcard_text_index(spec) is usable


@pytest.fixture
def mock_db():
    store = MongoStore(mongomock_uri(), mongo_client_class=SharedMongomockClient)
    yield Broker(store)
    store.close()


def test_mongo_text_search_narrows_with_text_where_the_index_is(mock_db, monkeypatch):
    """With the wildcard text index, the server gets ``$text`` with one word (mongomock
    cannot answer it: the test removes it before the query runs) and Python decides."""
    store = mock_db.store
    starts = [event_model.compose_run(metadata={"sample": s}).start_doc
              for s in ("the Si wafer", "Si", "Ge wafer")]
    for start in starts:
        mock_db.insert("start", start)
    assert store._has_text_index() is False  # mongomock's text index is not MongoDB's
    asked = []
    starts_of = store._starts

    def recording(query):
        asked.append(dict(query))
        return starts_of({k: v for k, v in query.items() if k != "$text"})

    monkeypatch.setattr(store, "_starts", recording)
    monkeypatch.setattr(store, "_has_text_index", lambda: True)
    assert [h.uid for h in mock_db("Si wafer")] == [starts[0]["uid"]]
    assert asked[-1] == {"$text": {"$search": "wafer"}}
    assert [h.uid for h in mock_db("wafer", plan_name="x")] == []
    assert asked[-1] == {"plan_name": "x", "$text": {"$search": "wafer"}}
    # only stop words: the server would find nothing, so every start is read
    assert [h.uid for h in mock_db("the")] == [starts[0]["uid"]]
    assert asked[-1] == {}
    # without the index (mongomock's own, nx-27017, an old database): no $text
    monkeypatch.setattr(store, "_has_text_index", lambda: False)
    assert [h.uid for h in mock_db("wafer")] == [starts[2]["uid"], starts[0]["uid"]]
    assert asked[-1] == {}


@pytest.mark.mongo
def test_nx_server_text_search_reads_without_text(mongo_server, mongo_store, monkeypatch):
    """A server that is not MongoDB gets no ``$text`` (its own differs or is missing)."""
    if mongo_server.is_real_mongod:
        pytest.skip("checks the wire-protocol server that is not MongoDB")
    db = Broker(mongo_store)
    start = event_model.compose_run(metadata={"sample": "Si wafer"}).start_doc
    db.insert("start", start)
    asked = []
    starts_of = mongo_store._starts
    monkeypatch.setattr(mongo_store, "_starts",
                        lambda query: asked.append(query) or starts_of(query))
    assert [h.uid for h in db("wafer")] == [start["uid"]]
    assert "$text" not in asked[-1]
