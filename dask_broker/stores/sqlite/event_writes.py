"""Writing event pages to a SQLite catalog: uids checked, pages split and sealed.

Single events (what a RunEngine emits) are each committed as a one-event
"open" page; when a descriptor has accumulated ``SEAL_EVENTS`` events in open
pages they are merged, in the same transaction as the insert that fills them,
into one sealed page (see :mod:`dask_broker.stores.pages`).  Event uids are unique
through the ``event_uid_hash`` rows (see :mod:`dask_broker.stores.uid_hashes`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Mapping, Sequence

import numpy as np

from ...errors import DuplicateUidError
from ..pages import MAX_PAGE_EVENTS, SEAL_EVENTS, encode_page, merge_pages
from ..base import first_repeat
from ..uid_hashes import HashSet, uid_hashes
from .connection import chunks, marks

__all__ = ["EventWriteMethods", "StoredUids"]


class StoredUids:
    """The hashes of the catalog's event uids that this process knows (see :mod:`.uid_hashes`).

    ``sync`` reads, inside a write transaction, the ``event_uid_hash`` rows
    appended since the last look (all of them, the first time); ``added``
    records what this process committed.  A sealed page's row repeats the hashes
    of the open pages it replaced; the :class:`HashSet` holds each once.  The rows' ids never repeat
    (AUTOINCREMENT), so rows another process appended are never missed.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known = HashSet()
        self.last_id = 0

    def sync(self, conn: sqlite3.Connection) -> None:
        cur = conn.execute("SELECT id, hashes FROM event_uid_hash WHERE id > ? ORDER BY id",
                           (self.last_id,))
        batch, last = [], self.last_id
        while rows := cur.fetchmany(4096):
            batch += [row[1] for row in rows]
            last = rows[-1][0]
        if batch:
            self.known.add(np.frombuffer(b"".join(batch), dtype=np.uint64))
            self.last_id = last

    def added(self, hashes: np.ndarray, last_id: int | None, held: np.ndarray) -> None:
        """Record what this process committed: ``hashes``, of which ``held`` were known
        already (:meth:`first_stored`'s look-up), up to ``event_uid_hash`` row ``last_id``."""
        self.known.add(hashes, held=held)
        self.last_id = max(self.last_id, last_id or 0)

    def first_stored(self, conn: sqlite3.Connection, uids: list[str],
                     hashes: np.ndarray) -> tuple[str | None, np.ndarray]:
        """The first of ``uids`` repeated among them or already stored (or None), and
        which of ``hashes`` are known (a stored uid, or another with the same hash)."""
        held = self.known.contains(hashes)
        ordered = np.sort(hashes)
        if (ordered[1:] == ordered[:-1]).any():  # a repeat, or two uids with one hash
            repeated = first_repeat(uids)
            if repeated is not None:
                return repeated, held
        hits = np.flatnonzero(held)
        if not hits.size:
            return None, held
        # Candidates: compare the uids themselves, in the pages whose hashes hold them.
        wanted = {uids[i]: i for i in hits}
        candidates = np.unique(hashes[hits])
        pages = []
        for page_id, blob in conn.execute("SELECT page_id, hashes FROM event_uid_hash"):
            if np.isin(np.frombuffer(blob, dtype=np.uint64), candidates).any():
                pages.append(page_id)
        stored = set()
        for chunk in chunks(pages):
            for (text,) in conn.execute(
                    f"SELECT uid FROM event_page WHERE id IN ({marks(len(chunk))})", chunk):
                stored.update(u for u in json.loads(text) if u in wanted)
        return (min(stored, key=wanted.__getitem__) if stored else None), held


class EventWriteMethods:
    """Event pages in: uids checked against the stored ones, pages written and sealed."""

    def insert_event_page(self, page: Mapping) -> None:
        self.insert_event_pages([page])

    def insert_event_pages(self, pages: Sequence[Mapping]) -> None:
        pages = [p for p in pages if len(p["seq_num"])]
        if not pages:
            return
        encoded = [
            [encode_page(page, start, min(start + MAX_PAGE_EVENTS, len(page["seq_num"])))
             for start in range(0, len(page["seq_num"]), MAX_PAGE_EVENTS)]
            for page in pages
        ]
        uids = [u for page in pages for u in page["uid"]]
        hashes = uid_hashes(uids)
        self._conn()  # (after a fork: this process's connections and lock)
        with self._uids.lock:
            with self._write() as conn:
                known_open, others_wrote = self._open_events(conn)
                open_events = dict(known_open)  # updated as pages are written and sealed
                if others_wrote:  # (else this process knows every stored uid already)
                    self._uids.sync(conn)
                dup, held = self._uids.first_stored(conn, uids, hashes)
                if dup is not None:
                    descriptor = next(p["descriptor"] for p in pages if dup in p["uid"])
                    raise DuplicateUidError(
                        f"event {dup!r} (descriptor {descriptor!r}) is already stored; "
                        f"nothing of these {len(uids)} events was written")
                at = last = 0  # last: the last event_uid_hash row written
                for page, parts in zip(pages, encoded, strict=True):
                    n = len(page["seq_num"])
                    descriptor = page["descriptor"]
                    if n >= SEAL_EVENTS:
                        # Seal the open pages first: merged later, they would span this page.
                        last = self._maybe_seal(conn, descriptor, open_events, force=True) or last
                    for start, (row, columns) in zip(range(at, at + n, MAX_PAGE_EVENTS), parts):
                        last = self._write_page(conn, row, columns, hashes[start:start + row[1]])
                    at += n
                    if n < SEAL_EVENTS:
                        if descriptor in open_events:
                            open_events[descriptor] += n
                        last = self._maybe_seal(conn, descriptor, open_events) or last
            known_open.clear()  # committed: what this transaction left open
            known_open.update(open_events)
            self._uids.added(hashes, last, held)

    def _open_events(self, conn: sqlite3.Connection) -> tuple[dict[str, int], bool]:
        """Descriptor -> events in its open pages, as this connection last left them, and
        whether another connection has committed since (``PRAGMA data_version``).

        Forgotten when another connection has committed: what is missing is summed
        from the file again.
        """
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        local = self._local
        # (a version is of one connection: a new one, after close(), starts its own count)
        others_wrote = getattr(local, "data_version", None) != (conn, version)
        if others_wrote:
            local.data_version, local.open_events = (conn, version), {}
        return local.open_events, others_wrote

    @staticmethod
    def _write_page(conn: sqlite3.Connection, row: tuple, columns: list[tuple],
                    hashes: np.ndarray, page_id: int | None = None) -> int:
        """Write one page; returns the id of its event_uid_hash row."""
        cur = conn.execute(
            "INSERT INTO event_page (id, descriptor, n, seq_min, seq_max, sealed, seq_num, time, uid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (page_id, *row))
        pid = cur.lastrowid
        conn.executemany(
            "INSERT INTO page_column (page_id, field, codec, data, ts_codec, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)", ((pid, *col) for col in columns))
        return conn.execute("INSERT INTO event_uid_hash (page_id, hashes) VALUES (?, ?)",
                            (pid, hashes.tobytes())).lastrowid

    def _maybe_seal(self, conn: sqlite3.Connection, descriptor: str,
                    open_events: dict[str, int], force: bool = False) -> int | None:
        """Merge a descriptor's open pages into one once they hold SEAL_EVENTS events.

        ``open_events`` caches the events in each descriptor's open pages (kept
        up to date here).  Returns the id of the last event_uid_hash row written
        (None: none written).
        """
        total = open_events.get(descriptor)
        if total is None:
            (total,) = conn.execute(
                "SELECT COALESCE(SUM(n), 0) FROM event_page WHERE descriptor = ? AND sealed = 0",
                (descriptor,)).fetchone()
            open_events[descriptor] = total
        if total == 0 or (total < SEAL_EVENTS and not force):
            return None
        open_events[descriptor] = 0
        (mixed,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT field FROM page_column JOIN event_page "
            "ON page_column.page_id = event_page.id WHERE descriptor = ? AND sealed = 0 "
            "GROUP BY field HAVING COUNT(DISTINCT codec) > 1 OR COUNT(DISTINCT ts_codec) > 1)",
            (descriptor,)).fetchone()
        if mixed:
            # Merging would re-encode values of different kinds together (ints into
            # floats, arrays into lists): seal the pages as they are, types intact.
            conn.execute("UPDATE event_page SET sealed = 1 WHERE descriptor = ? AND sealed = 0",
                         (descriptor,))
            return None
        pages = list(self._read_pages(conn, descriptor_uids=[descriptor], fields=None,
                                      timestamps=True, uids=True, open_only=True,
                                      order="seq_min, id"))
        ids = [p.page_id for p in pages]
        merged = merge_pages(descriptor, pages)
        for chunk in chunks(ids):
            in_chunk = marks(len(chunk))
            conn.execute(f"DELETE FROM page_column WHERE page_id IN ({in_chunk})", chunk)
            conn.execute(f"DELETE FROM event_page WHERE id IN ({in_chunk})", chunk)
            conn.execute(f"DELETE FROM event_uid_hash WHERE page_id IN ({in_chunk})", chunk)
        n = len(merged["uid"])
        hashes = uid_hashes(merged["uid"])
        last = None
        for start in range(0, n, MAX_PAGE_EVENTS):
            row, columns = encode_page(merged, start, min(start + MAX_PAGE_EVENTS, n))
            row = (*row[:4], True, *row[5:])  # sealed
            last = self._write_page(conn, row, columns, hashes[start:start + row[1]],
                                    page_id=ids[0] if start == 0 else None)
        return last
