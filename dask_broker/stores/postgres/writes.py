"""Writing event pages to a PostgreSQL catalog: one statement per page, sealing (pages are
encoded and merged by :mod:`dask_broker.stores.pages`).

Each page is one ``INSERT ... RETURNING`` of its ``event_page`` row chained with
the insert of its ``page_column`` rows (one round trip); event uids go in one
statement per call (``event_uid``'s primary key is what refuses a duplicate).

Single events (what a RunEngine emits) are each committed as a one-event
"open" page; once a descriptor's open pages hold ``SEAL_EVENTS`` events they are
merged into one sealed page in the transaction of the insert that fills them,
as in the embedded store.  Writers of one descriptor take a transaction-level
advisory lock on it first (sorted, so two writers never wait on each other in a
cycle), so that two processes never seal the same open pages; writers of
different descriptors -- different runs -- do not wait for each other.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..pages import MAX_PAGE_EVENTS, SEAL_EVENTS, encode_page, merge_pages
from .reads import read_pages

__all__ = ["write_event_pages", "lock_descriptors"]

_INSERT_PAGE = (
    "WITH page AS (INSERT INTO event_page (id, descriptor, n, seq_min, seq_max, sealed, "
    "seq_num, time, uid) VALUES (COALESCE(%s::bigint, nextval(pg_get_serial_sequence('event_page', "
    "'id'))), %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id) "
    "INSERT INTO page_column (page_id, field, codec, data, ts_codec, ts) "
    "SELECT page.id, c.* FROM page, unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], "
    "%s::bytea[]) AS c")


def lock_descriptors(conn, descriptors) -> None:
    """Take this transaction's advisory locks on these descriptors (in a fixed order)."""
    for descriptor in sorted(set(descriptors)):
        conn.execute("SELECT pg_advisory_xact_lock(1, hashtext(%s))", (descriptor,))


def _write_page(conn, row: tuple, columns: list[tuple], page_id: int | None = None) -> None:
    cols = list(zip(*columns)) if columns else [(), (), (), (), ()]
    conn.execute(_INSERT_PAGE, (page_id, *row, *(list(c) for c in cols)))


def write_event_pages(conn, pages: Sequence[Mapping]) -> None:
    """Write non-empty event_pages in the caller's transaction (uids checked by the caller)."""
    lock_descriptors(conn, (p["descriptor"] for p in pages))
    conn.execute("INSERT INTO event_uid (uid) SELECT unnest(%s::text[])",
                 ([u for page in pages for u in page["uid"]],))
    for page in pages:
        n = len(page["seq_num"])
        if n >= SEAL_EVENTS:
            # Seal the open pages first: merged later, they would span this page.
            _maybe_seal(conn, page["descriptor"], force=True)
        for start in range(0, n, MAX_PAGE_EVENTS):
            _write_page(conn, *encode_page(page, start, min(start + MAX_PAGE_EVENTS, n)))
        if n < SEAL_EVENTS:
            _maybe_seal(conn, page["descriptor"])


def _maybe_seal(conn, descriptor: str, force: bool = False) -> None:
    """Merge a descriptor's open pages into sealed ones once they hold SEAL_EVENTS events."""
    (total,) = conn.execute(
        "SELECT COALESCE(SUM(n), 0) FROM event_page WHERE descriptor = %s AND NOT sealed",
        (descriptor,)).fetchone()
    if total == 0 or (total < SEAL_EVENTS and not force):
        return
    (mixed,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT field FROM page_column JOIN event_page "
        "ON page_column.page_id = event_page.id WHERE descriptor = %s AND NOT sealed "
        "GROUP BY field HAVING COUNT(DISTINCT codec) > 1 OR COUNT(DISTINCT ts_codec) > 1) f",
        (descriptor,)).fetchone()
    if mixed:
        # Merging would re-encode values of different kinds together (ints into
        # floats, arrays into lists): seal the pages as they are, types intact.
        conn.execute("UPDATE event_page SET sealed = true WHERE descriptor = %s AND NOT sealed",
                     (descriptor,))
        return
    pages = list(read_pages(conn, [descriptor], fields=None, timestamps=True, uids=True,
                            open_only=True))
    ids = [p.page_id for p in pages]
    merged = merge_pages(descriptor, pages)
    conn.execute("DELETE FROM page_column WHERE page_id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM event_page WHERE id = ANY(%s)", (ids,))
    n = len(merged["uid"])
    for start in range(0, n, MAX_PAGE_EVENTS):
        row, columns = encode_page(merged, start, min(start + MAX_PAGE_EVENTS, n))
        row = (*row[:4], True, *row[5:])  # sealed
        _write_page(conn, row, columns, page_id=ids[0] if start == 0 else None)
