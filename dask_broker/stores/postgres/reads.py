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

import json
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ...codec import decode_column
from ...errors import CatalogCorruptError
from ..base import EventPageColumns

__all__ = ["read_pages", "clip_page", "PageColumns", "BATCH_EVENTS"]

#: Events read per round trip (about 16k: a few MB of a table's columns).
BATCH_EVENTS = 16384
_MAX_BATCH_PAGES = 1000


class PageColumns(EventPageColumns):
    """An :class:`EventPageColumns` that knows its row (for sealing)."""

    page_id: int = -1


def _batches(pages: Sequence[tuple[int, int]], max_events: int) -> Iterator[list[int]]:
    batch: list[int] = []
    events = 0
    for pid, n in pages:
        if batch and (events + n > max_events or len(batch) >= _MAX_BATCH_PAGES):
            yield batch
            batch, events = [], 0
        batch.append(pid)
        events += n
    if batch:
        yield batch


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
    cur = conn.cursor(binary=True)
    for ids in _batches(pages, batch_events):
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
        for pid in ids:
            try:
                page = _decode(metas[pid], by_page.pop(pid, ()), uids=uids,
                               timestamps=timestamps)
            except (KeyError, ValueError, TypeError) as err:
                raise CatalogCorruptError(
                    f"event page {pid} of the catalog {where} cannot be decoded "
                    f"({type(err).__name__}: {err})") from err
            page.page_id = pid
            if seq_range is not None:
                page = clip_page(page, *seq_range)
                if not len(page):
                    continue
            yield page


def _decode(prow: tuple, columns: Iterable[tuple], *, uids: bool,
            timestamps: bool) -> PageColumns:
    page = PageColumns(
        descriptor=prow[1],
        seq_num=np.frombuffer(prow[2], dtype="<i8"),
        time=np.frombuffer(prow[3], dtype="<f8"),
        data={}, timestamps={},
        uid=json.loads(prow[4]) if uids else None,
    )
    for r in columns:
        page.data[r[1]] = decode_column(r[2], r[3])
        if timestamps:
            page.timestamps[r[1]] = decode_column(r[4], r[5])
    return page


def clip_page(page: PageColumns, lo: int, hi: int) -> PageColumns:
    """Keep only events with ``lo <= seq_num < hi`` (the page itself when all are inside)."""
    seq = page.seq_num
    if len(seq) and seq.min() >= lo and seq.max() < hi:
        return page
    mask = (seq >= lo) & (seq < hi)
    idx = np.flatnonzero(mask)

    def take(col):
        return col[mask] if isinstance(col, np.ndarray) else [col[i] for i in idx]

    out = PageColumns(
        descriptor=page.descriptor, seq_num=seq[mask], time=page.time[mask],
        data={k: take(v) for k, v in page.data.items()},
        timestamps={k: take(v) for k, v in page.timestamps.items()},
        uid=None if page.uid is None else take(page.uid))
    out.page_id = page.page_id
    return out
