"""Reading event pages of a PostgreSQL catalog (one range query, one column query per batch).

Pages come in ``id`` order, a bounded batch of events at a time: the page rows of
the batch, then the wanted fields' ``page_column`` rows, fetched in binary (``bytea`` as bytes, no hex).  Numeric columns decode without a copy
(:func:`dask_broker.codec.decode_column`).

``id`` order is the order a descriptor's events were stored (sealing keeps it: the
merged page takes the first merged id), so that of events repeating a seq_num the
last stored comes last, as :meth:`~dask_broker.stores.base.Store.iter_event_pages`
promises.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from ...errors import CatalogCorruptError
from ..pages import PageColumns, batches, decoded_pages

__all__ = ["read_pages", "BATCH_EVENTS"]

#: Events read per round trip (about 16k: a few MB of a table's columns).
BATCH_EVENTS = 16384
_MAX_BATCH_PAGES = 1000


def read_pages(conn, descriptor_uids: Sequence[str], *, fields: Sequence[str] | None,
               timestamps: bool, uids: bool, seq_range: tuple[int, int] | None = None,
               open_only: bool = False, where: str = "",
               batch_events: int = BATCH_EVENTS) -> Iterator[PageColumns]:
    """The pages of these descriptors, in ``id`` (stored) order (see the module)."""
    cond = ["descriptor = ANY(%s)"]
    params: list[Any] = [list(descriptor_uids)]
    if seq_range is not None:
        lo, hi = seq_range
        cond.append("seq_min < %s AND seq_max >= %s")
        params += [hi, lo]
    if open_only:
        cond.append("NOT sealed")
    pages = conn.execute(
        f"SELECT id, n FROM event_page WHERE {' AND '.join(cond)} ORDER BY id",
        params).fetchall()
    meta_sql = "id, descriptor, seq_num, time" + (", uid" if uids else "")
    col_sql = "page_id, field, codec, data" + (", ts_codec, ts" if timestamps else "")

    def damaged(page_id: int, err: Exception) -> CatalogCorruptError:
        return CatalogCorruptError(f"event page {page_id} of the catalog {where} cannot be "
                                   f"decoded ({type(err).__name__}: {err})")

    cur = conn.cursor(binary=True)
    for ids in batches(pages, batch_events, _MAX_BATCH_PAGES):
        metas = {r[0]: r for r in cur.execute(
            f"SELECT {meta_sql} FROM event_page WHERE id = ANY(%s)", [ids])}
        by_page: dict[int, list] = {}
        if fields is None or fields:
            sql = f"SELECT {col_sql} FROM page_column WHERE page_id = ANY(%s)"
            qparams: list[Any] = [ids]
            if fields is not None:
                sql += " AND field = ANY(%s)"
                qparams.append(list(fields))
            for r in cur.execute(sql, qparams):
                by_page.setdefault(r[0], []).append(r)
        yield from decoded_pages(ids, metas, by_page, uids=uids, timestamps=timestamps,
                                 seq_range=seq_range, damaged=damaged)
