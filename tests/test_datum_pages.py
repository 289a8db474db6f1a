"""Datum stored as pages (dask_broker.stores.datum_pages, stores.sqlite.datum, stores.postgres.datum):
look-ups of counted and other ids, uniqueness, and the migration of version-4 rows."""

from __future__ import annotations

import json
import sqlite3
import uuid

import numpy as np
import pytest

from catalog_files import stored_version, tables, write_v1_catalog
from dask_broker import DuplicateUidError
from dask_broker.stores import datum_pages
from dask_broker.stores.sqlite import SCHEMA_VERSION, SQLiteStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def page_store(request, tmp_path):
    """A new empty store of each kind that keeps datum as pages."""
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "c.db")
    pytest.importorskip("psycopg")
    from dask_broker.stores.postgres import PostgresStore

    return PostgresStore.from_uri(request.getfixturevalue("postgres_uri"))


@pytest.mark.parametrize("ids, expected", [
    (["r/0", "r/1", "r/12"], (0, 12)),
    (["r/5"], (5, 5)),
    (["r/0", "q/1"], None),            # another resource
    (["r/01"], None),                  # not how 1 is written
    (["r/+1"], None), (["r/-1"], None), (["r/1_0"], None), (["r/ 1"], None),
    (["r/\u0661"], None),              # an Arabic-Indic digit int() reads
    ([f"r/{2**63}"], None),            # beyond 64 bits
    (["r/"], None), (["r"], None), ([], None),
])
def test_counted_range(ids, expected):
    assert datum_pages.counted_range("r", ids) == expected


def _page(resource: str, ids: list[str], **kwargs) -> dict:
    return {"resource": resource, "datum_id": ids,
            "datum_kwargs": kwargs or {"point_number": list(range(len(ids)))}}


def _expected(*pages: dict) -> dict[str, dict]:
    out = {}
    for p in pages:
        keys = list(p["datum_kwargs"])
        for i, d in enumerate(p["datum_id"]):
            out[d] = {"datum_id": d, "resource": p["resource"],
                      "datum_kwargs": {k: p["datum_kwargs"][k][i] for k in keys}}
    return out


def test_counted_and_other_ids_are_found_and_unique(page_store):
    store = page_store
    counted = _page("R", ["R/9", "R/0", "R/4"])        # a range [0, 9] with gaps
    other = _page("S", [str(uuid.uuid4()) for _ in range(3)], frame=["a", "b", "c"])
    mixed = _page("T", ["R/5", "t-1"])                 # a counted-looking id of another page
    for p in (counted, other, mixed):
        store.insert_datum_page(p)
    expected = _expected(counted, other, mixed)
    assert store.datum([*expected, "R/1", "R/10", "nope"]) == expected
    assert list(store.datum_of_resource("R")) == list(_expected(counted).values())
    assert list(store.datum_of_resource("T")) == list(_expected(mixed).values())
    # each id is refused again, whichever way it is found; nothing is written then
    for dup in ("R/4", "R/5", other["datum_id"][1], "t-1"):
        with pytest.raises(DuplicateUidError, match=dup):
            store.insert_datum_page(_page("R", ["R/7", dup]))
        assert store.datum(["R/7"]) == {}
    # the gaps of a counted range are free
    gaps = _page("R", ["R/1", "R/2", "R/3"])
    store.insert_datum_page(gaps)
    assert store.datum(["R/2", "R/9"]) == {k: v for k, v in _expected(gaps, counted).items()
                                           if k in ("R/2", "R/9")}
    # consecutive ids in order (found by their row) and in another order (by their ids)
    dense, reverse = _page("R", ["R/20", "R/21", "R/22"]), _page("R", ["R/32", "R/31", "R/30"])
    store.insert_datum_page(dense)
    store.insert_datum_page(reverse)
    both = _expected(dense, reverse)
    assert store.datum(["R/21", "R/31", "R/23", "R/22"]) == {
        k: both[k] for k in ("R/21", "R/31", "R/22")}
    for dup in ("R/22", "R/30"):
        with pytest.raises(DuplicateUidError, match=dup):
            store.insert_datum_page(_page("R", ["R/40", dup]))
    with pytest.raises(DuplicateUidError, match="repeated within"):
        store.insert_datum_page(_page("R", ["R/20", "R/20"]))


def test_hash_collisions_only_make_candidates(page_store, monkeypatch):
    """Every id hashed alike: look-ups and uniqueness still go by the ids themselves."""
    monkeypatch.setattr(datum_pages, "uid_hashes",
                        lambda ids: np.zeros(len(ids), dtype=np.uint64))
    store = page_store
    a, b = _page("S", ["a1", "a2"]), _page("S", ["b1"])
    store.insert_datum_page(a)
    store.insert_datum_page(b)  # same hashes as a's: not a duplicate
    assert store.datum(["a2", "b1", "c1"]) == {k: v for k, v in _expected(a, b).items()
                                               if k in ("a2", "b1")}
    with pytest.raises(DuplicateUidError, match="b1"):
        store.insert_datum_page(_page("S", ["c1", "b1"]))


def _old_datum_rows(path) -> list[tuple]:
    """Datum rows as versions 1-4 stored them: counted ids of r1 around uuid ids of r2,
    one row of r1 with other keys."""
    rows = [(f"r1/{i}", "r1", {"point_number": i}) for i in range(3)]
    rows += [(str(uuid.uuid4()), "r2", {"frame": i, "tag": "x"}) for i in range(2)]
    rows += [("r1/3", "r1", {"point_number": 3}), ("r1/4", "r1", {"other": [1, 2]})]
    # a long run: more than a batch read (4,096) and than a page (MIGRATED_PAGE)
    rows += [(f"r3/{i}", "r3", {"i": i}) for i in range(datum_pages.MIGRATED_PAGE + 2_000)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany("INSERT INTO datum (datum_id, resource, datum_kwargs) VALUES (?, ?, ?)",
                     [(d, r, json.dumps(k)) for d, r, k in rows])
    conn.close()
    return rows


@pytest.mark.parametrize("read_only", [False, True], ids=["migrated", "read-only"])
def test_datum_rows_of_an_older_catalog(tmp_path, read_only):
    path = tmp_path / "v1.db"
    write_v1_catalog(path)
    rows = _old_datum_rows(path)
    expected = {d: {"datum_id": d, "resource": r, "datum_kwargs": k} for d, r, k in rows}
    store = SQLiteStore(path, read_only=read_only)
    assert stored_version(path) == ("1" if read_only else str(SCHEMA_VERSION))
    assert ("datum" in tables(path)) == read_only
    assert store.datum([*expected, "r1/9"]) == expected
    for resource in ("r1", "r2", "r3"):
        assert list(store.datum_of_resource(resource)) == \
            [v for v in expected.values() if v["resource"] == resource]
    if not read_only:  # the migrated ids stay unique, counted or not
        for dup in ("r1/2", rows[3][0]):
            with pytest.raises(DuplicateUidError, match=dup):
                store.insert_datum_page(_page("r1", ["r1/5", dup]))
        store.insert_datum_page(_page("r1", ["r1/5"]))
        assert set(store.datum(["r1/5", "r1/4"])) == {"r1/5", "r1/4"}
    store.close()


@pytest.mark.postgres
def test_postgres_version_1_datum_rows_become_pages(postgres_uri):
    psycopg = pytest.importorskip("psycopg")
    from dask_broker.stores.postgres import PostgresStore, schema

    rows = [(f"r1/{i}", "r1", {"point_number": i}) for i in range(3)]
    rows += [(str(uuid.uuid4()), "r2", {"frame": 1, "tag": "x"}), ("r1/4", "r1", {"o": [1]})]
    rows += [(f"r3/{i}", "r3", {"i": i}) for i in range(datum_pages.MIGRATED_PAGE + 2_000)]
    with psycopg.connect(postgres_uri, autocommit=True) as conn:  # a catalog as version 1 made it
        for statement in (s.strip() for s in schema.MIGRATIONS[1].split(";") if s.strip()):
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        conn.cursor().executemany(
            "INSERT INTO datum (datum_id, resource, datum_kwargs) VALUES (%s, %s, %s)",
            [(d, r, json.dumps(k)) for d, r, k in rows])
    store = PostgresStore.from_uri(postgres_uri)
    expected = {d: {"datum_id": d, "resource": r, "datum_kwargs": k} for d, r, k in rows}
    assert store.datum([*expected, "r1/3"]) == expected
    for resource in ("r1", "r3"):
        assert list(store.datum_of_resource(resource)) == \
            [v for v in expected.values() if v["resource"] == resource]
    with pytest.raises(DuplicateUidError, match=rows[3][0]):
        store.insert_datum_page(_page("r2", ["r2/0", rows[3][0]]))
    with psycopg.connect(postgres_uri) as conn:
        found = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema()")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert {"datum_page", "datum_key"} <= found and "datum" not in found
    assert version == (str(schema.SCHEMA_VERSION),)
