"""Event pages in SQL tables: encoding, decoding, batching, clipping and merging.

The SQLite and PostgreSQL stores keep events in the same layout: a row of
``event_page`` holds, for one descriptor, a run of events' ``seq_num`` and
``time`` (little-endian buffers) and their uids (a JSON list); a row of
``page_column`` holds one field of that page, data and timestamps each an
encoded buffer (see :mod:`dask_broker.codec`).  This module owns what both do
with those rows; the SQL that reads and writes them stays with each store.

Single events are each written as a one-event "open" page; once a descriptor's
open pages hold ``SEAL_EVENTS`` events they are merged (:func:`merge_pages`)
into one sealed page.  Incoming pages larger than ``MAX_PAGE_EVENTS`` are split.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..codec import column_to_list, decode_column, dumps_strings, encode_column
from ..errors import CatalogCorruptError
from .base import EventPageColumns, consecutive_runs

__all__ = ["SEAL_EVENTS", "MAX_PAGE_EVENTS", "PageColumns", "encode_page", "decoded_pages",
           "batches", "clip_page", "merge_pages", "SEQ_RUN_COLUMNS", "seq_runs"]

SEAL_EVENTS = 1024
MAX_PAGE_EVENTS = 8192


class PageColumns(EventPageColumns):
    """An :class:`EventPageColumns` that knows its row (for sealing)."""

    page_id: int = -1


def encode_page(page: Mapping, lo: int, hi: int) -> tuple[tuple, list[tuple]]:
    """``(row, columns)`` of events ``lo:hi`` of an event_page.

    ``row`` is ``(descriptor, n, seq_min, seq_max, sealed, seq_num, time, uid)`` of
    ``event_page``; each of ``columns`` is ``(field, codec, data, ts_codec, ts)`` of
    ``page_column``.

    Examples
    --------
    >>> row, columns = encode_page({"descriptor": "d", "seq_num": [1, 2], "time": [0.0, 1.0],
    ...                             "uid": ["a", "b"], "data": {"x": [1.5, 2.5]},
    ...                             "timestamps": {"x": [0.0, 1.0]}}, 0, 2)
    >>> row[:5], row[7], [c[:2] for c in columns]
    (('d', 2, 1, 2, False), '["a","b"]', [('x', 'f8')])
    """
    seq = np.asarray(page["seq_num"][lo:hi], dtype="<i8")
    time = np.asarray(page["time"][lo:hi], dtype="<f8")
    n = hi - lo
    row = (page["descriptor"], n, int(seq.min()), int(seq.max()), n >= SEAL_EVENTS,
           seq.tobytes(), time.tobytes(), dumps_strings(page["uid"][lo:hi]))
    columns = []
    for field, values in page["data"].items():
        codec, blob = encode_column(values[lo:hi])
        ts_codec, ts_blob = encode_column(page["timestamps"][field][lo:hi])
        columns.append((field, codec, blob, ts_codec, ts_blob))
    return row, columns


def _decode_page(prow: tuple, columns: Iterable[tuple], *, uids: bool, timestamps: bool,
                 loads: Callable[[Any], Any]) -> PageColumns:
    page = PageColumns(
        descriptor=prow[1],
        seq_num=np.frombuffer(prow[2], dtype="<i8"),
        time=np.frombuffer(prow[3], dtype="<f8"),
        data={}, timestamps={},
        uid=loads(prow[4]) if uids else None,
    )
    for r in columns:
        page.data[r[1]] = decode_column(r[2], r[3])
        if timestamps:
            page.timestamps[r[1]] = decode_column(r[4], r[5])
    return page


def decoded_pages(ids: Sequence[int], metas: Mapping[int, tuple],
                  by_page: dict[int, list], *, uids: bool, timestamps: bool,
                  seq_range: tuple[int, int] | None,
                  damaged: Callable[[int, Exception], CatalogCorruptError],
                  loads: Callable[[Any], Any] = json.loads) -> Iterator[PageColumns]:
    """The pages ``ids`` of one batch, decoded, in that order (clipped to ``seq_range``).

    Parameters
    ----------
    ids
        The batch's page ids, in the order to give them.
    metas
        page id -> its ``event_page`` row ``(id, descriptor, seq_num, time[, uid])``.
    by_page
        page id -> its ``page_column`` rows ``(page_id, field, codec, data[, ts_codec, ts])``
        (emptied as pages are decoded).
    damaged
        ``damaged(page_id, err)``: the error to raise for a page whose buffers fit no codec.
    loads
        Decodes the stored uid list.
    """
    for pid in ids:
        try:
            page = _decode_page(metas[pid], by_page.pop(pid, ()), uids=uids,
                                timestamps=timestamps, loads=loads)
        except CatalogCorruptError:
            raise
        except (KeyError, ValueError, TypeError) as err:  # blobs that fit no codec
            raise damaged(pid, err) from err
        page.page_id = pid
        if seq_range is not None:
            page = clip_page(page, *seq_range)
            if not len(page):
                continue
        yield page


def batches(pages: Iterable[tuple[int, int]], max_events: int,
            max_pages: int) -> Iterator[list[int]]:
    """Group ``(page_id, n)`` rows into id lists of at most ``max_events`` events and
    ``max_pages`` pages (at least one page each).

    Examples
    --------
    >>> list(batches([(1, 5), (2, 5), (3, 20), (4, 1)], max_events=10, max_pages=100))
    [[1, 2], [3], [4]]
    """
    batch: list[int] = []
    events = 0
    for pid, n in pages:
        if batch and (events + n > max_events or len(batch) >= max_pages):
            yield batch
            batch, events = [], 0
        batch.append(pid)
        events += n
    if batch:
        yield batch


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


#: The ``event_page`` columns :func:`seq_runs` takes: the seq_num buffer only of pages
#: whose seq_nums are not consecutive.
SEQ_RUN_COLUMNS = ("n, seq_min, seq_max, "
                   "CASE WHEN seq_max - seq_min + 1 = n THEN NULL ELSE seq_num END")


def seq_runs(rows: Iterable[tuple]) -> Iterator[tuple[int, int, int]]:
    """``(start, stop, n)`` runs of consecutive seq_nums of ``SEQ_RUN_COLUMNS`` rows.

    Examples
    --------
    >>> list(seq_runs([(3, 1, 3, None), (2, 7, 9, np.array([7, 9], "<i8").tobytes())]))
    [(1, 4, 3), (7, 8, 1), (9, 10, 1)]
    """
    for n, lo, hi, blob in rows:
        if blob is None:
            yield int(lo), int(hi) + 1, int(n)
        else:
            yield from consecutive_runs(np.frombuffer(blob, dtype="<i8"))


def _joined(columns: list) -> np.ndarray | list:
    """Decoded columns of consecutive pages as one: numpy arrays (one codec, as the
    caller checked) concatenated, anything else chained as a list."""
    if all(isinstance(c, np.ndarray) for c in columns):
        return np.concatenate(columns)
    return list(itertools.chain.from_iterable(column_to_list(c) for c in columns))


def merge_pages(descriptor: str, pages: Sequence[PageColumns]) -> dict:
    """One event_page of a descriptor's open pages (read with uids and timestamps), in
    their order; each field's columns must share one codec (the caller checks)."""
    return {
        "descriptor": descriptor,
        "seq_num": np.concatenate([p.seq_num for p in pages]),
        "time": np.concatenate([p.time for p in pages]),
        "uid": list(itertools.chain.from_iterable(p.uid for p in pages)),
        "data": {f: _joined([p.data[f] for p in pages]) for f in pages[0].data},
        "timestamps": {f: _joined([p.timestamps[f] for p in pages]) for f in pages[0].timestamps},
    }
