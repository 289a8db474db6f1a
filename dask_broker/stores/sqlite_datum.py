"""Datum in the embedded catalog: a datum_page is stored as a page.

A row of ``datum_page`` holds one page as it came: its resource, its datum ids
(a JSON list) and its datum_kwargs as columns (a JSON object of lists), so a
page of 10,000 datum is one row written and one JSON parse read back, and a
catalog-wide B-tree of random datum ids is never updated.  Datum ids are found
again two ways:

- **Counted ids** (what event-model and ophyd write: ``"<resource uid>/<n>"``,
  ``n`` a canonical non-negative integer): a page whose ids are all of its own
  resource has the least and greatest ``n`` in ``first`` / ``last``, indexed with
  the resource; ``"R/n"`` is looked for in the pages of ``R`` whose range holds ``n``.
  A page of consecutive ids in order (``dense``, the usual page) holds ``"R/n"``
  at row ``n - first``: found without decoding its ids.
- **Any other ids**: their 64-bit hashes (:func:`~.uid_hashes.uid_hashes`) are
  rows of ``datum_key`` (``hash``, ``page_id``); a hash found is only a candidate,
  the page's ids decide.

Uniqueness is checked the same way, inside the write transaction, before the
page is written: a datum id already stored refuses the whole page.

Examples
--------
>>> counted_range("r1", ["r1/0", "r1/1", "r1/7"])
(0, 7)
>>> counted_range("r1", ["r1/0", "r1/01"]) is None  # "01" is not how 1 is written
True
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..codec import dumps, dumps_strings
from ..errors import DuplicateUidError
from .base import first_repeat
from .uid_hashes import uid_hashes

__all__ = ["DDL", "counted_range", "insert_page", "find", "of_resource", "migrate_rows"]

DDL = """
CREATE TABLE IF NOT EXISTS datum_page (
    id INTEGER PRIMARY KEY, resource TEXT NOT NULL, n INTEGER NOT NULL,
    first INTEGER, last INTEGER, dense INTEGER NOT NULL, datum_id TEXT NOT NULL,
    datum_kwargs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS datum_page_resource ON datum_page (resource, first);
CREATE TABLE IF NOT EXISTS datum_key (
    hash INTEGER NOT NULL, page_id INTEGER NOT NULL, PRIMARY KEY (hash, page_id)) WITHOUT ROWID;
"""

_INT64_MAX = 2**63 - 1
_VARS = 900  # bound parameters per statement, below SQLite's limit

#: Decodes a stored JSON text (the store's: damaged text is reported as such).
Loads = Callable[[Any], Any]


def counted_range(resource: str, ids: Sequence[str]) -> tuple[int, int] | None:
    """``(least, greatest)`` n of ids that are all ``"<resource>/<n>"``, else None.

    ``n`` must be written as ``str(n)`` writes it (no sign, no leading zero) and
    fit 64 bits, so that ``"R/n"`` names exactly one integer and back.
    """
    numbers = _counted(resource, ids)
    return None if numbers is None else (int(numbers.min()), int(numbers.max()))


def _counted(resource: str, ids: Sequence[str]) -> np.ndarray | None:
    """The n of ids that are all ``"<resource>/<n>"`` (see :func:`counted_range`), else None."""
    prefix = resource + "/"
    if not ids or not all(map(str.startswith, ids, itertools.repeat(prefix))):
        return None
    cut = len(prefix)
    tails = [i[cut:] for i in ids]
    try:
        numbers = list(map(int, tails))
    except ValueError:
        return None
    # written as str(n) writes it: refuses "", "+1", "-1", "01", "1_0", " 1", other digits
    if list(map(str, numbers)) != tails or min(numbers) < 0 or max(numbers) > _INT64_MAX:
        return None
    return np.array(numbers, dtype=np.int64)


def _split(datum_id: Any) -> tuple[str, int] | None:
    """``("R", n)`` of a counted id ``"R/n"``, else None."""
    if type(datum_id) is not str:
        return None
    resource, sep, tail = datum_id.rpartition("/")
    if not sep or not tail.isdigit():
        return None
    try:
        n = int(tail)
    except ValueError:
        return None
    return (resource, n) if str(n) == tail and n <= _INT64_MAX else None


def _signed(hashes: np.ndarray) -> list[int]:
    """uint64 hashes as SQLite integers (signed 64 bits)."""
    return hashes.view(np.int64).tolist()


def _located(conn: sqlite3.Connection, ids: Sequence[str], loads: Loads,
             counted: Mapping[str, Any] | None = None) -> dict[int, tuple[str, list]]:
    """Where the stored ones of ``ids`` are: page id -> (resource, [(datum id, row)]).

    ``counted``: the n of the counted ids by resource, when the caller knows them.
    A page of a resource's consecutive ids in order (``dense``) answers from its
    range alone; other candidate pages have their ids decoded.
    """
    if counted is None:
        counted = {}
        for datum_id in ids:
            parts = _split(datum_id)
            if parts is not None:
                counted.setdefault(parts[0], []).append(parts[1])
    found: dict[int, tuple[str, list]] = {}
    undecided: set[int] = set()
    for resource, numbers in counted.items():
        wanted = np.asarray(numbers, dtype=np.int64)
        rows = conn.execute(
            "SELECT id, first, last, dense FROM datum_page WHERE resource = ? AND first <= ? "
            "AND last >= ?", (resource, int(wanted.max()), int(wanted.min()))).fetchall()
        if rows:
            wanted = np.unique(wanted)
        for page_id, lo, hi, dense in rows:
            a, b = np.searchsorted(wanted, [lo, hi + 1])
            if a == b:
                continue
            if dense:
                found[page_id] = (resource, [(f"{resource}/{k}", k - lo)
                                             for k in wanted[a:b].tolist()])
            else:
                undecided.add(page_id)
    if conn.execute("SELECT 1 FROM datum_key LIMIT 1").fetchone() is not None:
        hashes = _signed(uid_hashes(list(ids)))
        for at in range(0, len(hashes), _VARS):
            chunk = hashes[at:at + _VARS]
            undecided.update(r[0] for r in conn.execute(
                f"SELECT page_id FROM datum_key WHERE hash IN ({','.join('?' * len(chunk))})",
                chunk))
    if undecided:
        wanted_ids = set(ids)
        pages = sorted(undecided)
        for at in range(0, len(pages), _VARS):
            chunk = pages[at:at + _VARS]
            for page_id, resource, id_text in conn.execute(
                    "SELECT id, resource, datum_id FROM datum_page "
                    f"WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                hits = [(d, i) for i, d in enumerate(loads(id_text)) if d in wanted_ids]
                if hits:
                    found[page_id] = (resource, hits)
    return found


def _rows(kwargs: Mapping[str, list], n: int) -> list[dict]:
    """The datum_kwargs of each of ``n`` rows, from their columns."""
    if not kwargs:
        return [{} for _ in range(n)]
    keys = list(kwargs)
    return [dict(zip(keys, row)) for row in zip(*kwargs.values())]


def insert_page(conn: sqlite3.Connection, page: Mapping) -> None:
    """Write a datum_page as one row, in the caller's write transaction.

    Raises
    ------
    DuplicateUidError
        A datum id is repeated within the page or already stored (nothing written).
    """
    ids = list(page["datum_id"])
    if not ids:
        return
    resource = page["resource"]
    numbers = _counted(resource, ids)
    if numbers is None:
        repeated = len(set(ids)) != len(ids)
    else:
        ordered = np.sort(numbers)
        repeated = bool((ordered[1:] == ordered[:-1]).any())
    if repeated:
        raise DuplicateUidError(
            f"datum {first_repeat(ids)!r} (resource {resource!r}) is repeated within this "
            "datum_page; nothing of it was written")
    located = _located(conn, ids, json.loads,
                       None if numbers is None else {resource: numbers})
    stored = {d for _, hits in located.values() for d, _ in hits}
    dup = next((i for i in ids if i in stored), None) if stored else None
    if dup is not None:
        raise DuplicateUidError(
            f"datum {dup!r} (resource {resource!r}) is already stored; nothing of this "
            "datum_page was written")
    first = last = None
    dense = False
    if numbers is not None:
        first, last = int(ordered[0]), int(ordered[-1])  # (numbers unique: see above)
        dense = last - first + 1 == len(ids) and bool((numbers[1:] > numbers[:-1]).all())
    cur = conn.execute(
        "INSERT INTO datum_page (resource, n, first, last, dense, datum_id, datum_kwargs) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (resource, len(ids), first, last, dense, dumps_strings(ids),
         dumps(dict(page["datum_kwargs"]))))
    if numbers is None:
        page_id = cur.lastrowid
        conn.executemany("INSERT OR IGNORE INTO datum_key (hash, page_id) VALUES (?, ?)",
                         zip(_signed(uid_hashes(ids)), itertools.repeat(page_id)))


def find(conn: sqlite3.Connection, ids: Sequence[str], loads: Loads) -> dict[str, dict]:
    """The stored datum of ``ids`` (those not stored are absent)."""
    out: dict[str, dict] = {}
    if not ids:
        return out
    for page_id, (resource, hits) in sorted(_located(conn, ids, loads).items()):
        (text,) = conn.execute("SELECT datum_kwargs FROM datum_page WHERE id = ?",
                               (page_id,)).fetchone()
        kwargs = loads(text)
        keys = list(kwargs)
        for datum_id, i in hits:
            out[datum_id] = {"datum_id": datum_id, "resource": resource,
                             "datum_kwargs": {k: kwargs[k][i] for k in keys}}
    return out


def of_resource(conn: sqlite3.Connection, resource: str, loads: Loads) -> Iterator[dict]:
    """Every datum of a resource, in the order they were stored."""
    cur = conn.execute("SELECT n, datum_id, datum_kwargs FROM datum_page WHERE resource = ? "
                       "ORDER BY id", (resource,))
    while rows := cur.fetchmany(16):
        for n, id_text, kwargs_text in rows:
            for datum_id, kwargs in zip(loads(id_text), _rows(loads(kwargs_text), n),
                                        strict=True):
                yield {"datum_id": datum_id, "resource": resource, "datum_kwargs": kwargs}


def migrate_rows(conn: sqlite3.Connection) -> None:
    """Migration to version 5: the ``datum`` table's rows (one per datum) become pages of
    consecutive datum of one resource, then the table is dropped (in the migration's
    transaction)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'datum'"
                        ).fetchone():
        return
    cur = conn.execute("SELECT datum_id, resource, datum_kwargs FROM datum ORDER BY id")
    pending: list[tuple] = []

    def flush() -> None:
        if pending:
            kwargs = [json.loads(text) for _, _, text in pending]
            keys = list(kwargs[0])
            if all(list(k) == keys for k in kwargs):  # one page: the same keys in each row
                groups = [(pending, kwargs)]
            else:  # rows of different keys: a page each
                groups = [([row], [kw]) for row, kw in zip(pending, kwargs)]
            for rows, kws in groups:
                insert_page(conn, {"resource": rows[0][1], "datum_id": [r[0] for r in rows],
                                   "datum_kwargs": {k: [kw[k] for kw in kws] for k in kws[0]}})
            pending.clear()

    while rows := cur.fetchmany(4096):
        for row in rows:
            if pending and (row[1] != pending[-1][1] or len(pending) >= 10_000):
                flush()
            pending.append(row)
    flush()
    conn.execute("DROP TABLE datum")
