"""Documents of a saved run inserted in order, consecutive events (datum) as pages.

suitcase-msgpack writes each event as an ``event_page`` of one row and each
datum as a ``datum_page`` of one; suitcase-jsonl writes ``event`` and ``datum``
documents.  :class:`PageBatcher` joins consecutive ones of one descriptor (one
resource) into a page of up to :data:`BATCH` rows -- one validated, atomic
insert -- and inserts every other document as it comes.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Iterable

import event_model
import numpy as np

from .errors import DuplicateUidError, RunAlreadyStoppedError
from .msgpack_rows import Rows

__all__ = ["BATCH", "PageBatcher", "pack_events"]

#: Rows (events or datum) batched into one page insert.
BATCH = 10_000

_EVENT_FIELDS = itemgetter("uid", "seq_num", "time")
_ABSENT = object()


def pack_events(events: list[dict]) -> dict:
    """The event_page of events of one descriptor, as ``event_model.pack_event_page``
    builds it, transposed a field at a time when the events are regular (every one
    with the same data and timestamps keys).

    Examples
    --------
    >>> e = {"uid": "a", "descriptor": "d", "seq_num": 1, "time": 0.5,
    ...      "data": {"x": 1.0}, "timestamps": {"x": 0.5}}
    >>> pack_events([e, dict(e, uid="b", seq_num=2)])["data"]
    {'x': [1.0, 1.0]}
    """
    try:
        keys = tuple(events[0]["data"])
        uids, seqs, times = (list(c) for c in zip(*map(_EVENT_FIELDS, events)))
        data = _columns(events, "data", keys)
        stamps = _columns(events, "timestamps", tuple(events[0]["timestamps"]))
        descriptor = events[-1]["descriptor"]
    except (KeyError, TypeError, ValueError):
        return event_model.pack_event_page(*events)
    if data is None or stamps is None:
        return event_model.pack_event_page(*events)
    filled = [e.get("filled", {}) for e in events]
    return {"time": times, "uid": uids, "seq_num": seqs, "descriptor": descriptor,
            "filled": event_model._transpose_list_of_dicts(filled) if any(filled) else {},
            "data": data, "timestamps": stamps}


def _columns(events: list[dict], part: str, keys: tuple) -> dict[str, list] | None:
    """``{key: [event[part][key] for event in events]}``; None when the events' keys differ."""
    dicts = list(map(itemgetter(part), events))
    if set(map(len, dicts)) != {len(keys)}:
        return None
    if not keys:
        return {}
    rows = map(itemgetter(*keys), dicts)  # KeyError: a key missing
    if len(keys) == 1:
        return {keys[0]: list(rows)}
    return dict(zip(keys, map(list, zip(*rows))))


def _filled_keys(doc: dict) -> tuple | None:
    """The keys of an event's ``filled`` (None without it): one page holds events alike."""
    filled = doc.get("filled")
    return None if "filled" not in doc else tuple(filled) if isinstance(filled, dict) else ()


# ------------------------------------------------------------------ pages joined
_PAGE_COLUMNS = {"event_page": (("uid", "seq_num", "time"), ("data", "timestamps", "filled")),
                 "datum_page": (("datum_id",), ("datum_kwargs",))}
_PAGE_KEYS = {"event_page": {"descriptor", *_PAGE_COLUMNS["event_page"][0],
                             *_PAGE_COLUMNS["event_page"][1]},
              "datum_page": {"resource", "datum_id", "datum_kwargs"}}


def _page_key(name: str, page: Any) -> tuple | None:
    """What consecutive pages must share to be joined, and their rows; None for a page
    that is not plainly one (inserted alone, so that validation names what is wrong)."""
    try:
        if name == "event_page":
            rows = len(page["uid"])
            key = (page["descriptor"], tuple(page["data"]), tuple(page["timestamps"]),
                   tuple(page["filled"]) if "filled" in page else None)
            columns = [page["uid"], page["seq_num"], page["time"], *page["data"].values(),
                       *page["timestamps"].values(), *page.get("filled", {}).values()]
        else:
            rows = len(page["datum_id"])
            key = (page["resource"], tuple(page["datum_kwargs"]))
            columns = [page["datum_id"], *page["datum_kwargs"].values()]
        if not set(page) <= _PAGE_KEYS[name] or any(
                type(c) not in (list, np.ndarray) or len(c) != rows
                or type(c) is np.ndarray and c.ndim != 1 for c in columns):
            return None
        return key, rows
    except (KeyError, TypeError, AttributeError):
        return None


def _join(parts: list) -> list | np.ndarray:
    """One column of the joined page: numpy when every part is a numeric (or every part a
    bool) numpy column -- ints and floats join as floats, as insert stores a list of both
    -- else a list of the parts' values."""
    if len(parts) == 1:
        return parts[0]
    if all(type(p) is np.ndarray for p in parts):
        kinds = {p.dtype.kind for p in parts}
        if kinds <= {"i", "f"} or kinds == {"b"}:
            return np.concatenate(parts)
    out: list = []
    for p in parts:
        out += p.tolist() if type(p) is np.ndarray else p
    return out


def _join_pages(name: str, pages: list[dict]) -> dict:
    if len(pages) == 1:
        return pages[0]
    flat, nested = _PAGE_COLUMNS[name]
    first = pages[0]
    joined = {k: v for k, v in first.items() if k not in flat and k not in nested}
    for k in flat:
        joined[k] = _join([p[k] for p in pages])
    for k in nested:
        if k in first:
            joined[k] = {f: _join([p[k][f] for p in pages]) for f in first[k]}
    return joined


def _rows_of(name: str, page: dict) -> list[dict]:
    """The one-row pages (events, for ``name`` "event") of a page read a column at a time."""
    page = {k: (v.tolist() if type(v) is np.ndarray else
                {f: c.tolist() if type(c) is np.ndarray else c for f, c in v.items()}
                if isinstance(v, dict) else v) for k, v in page.items()}
    events = list(event_model.unpack_event_page(page))
    if "filled" not in page:
        for e in events:
            e.pop("filled", None)
    return events if name == "event" else [event_model.pack_event_page(e) for e in events]


class PageBatcher:
    """Inserts documents in order, batching runs of events (datum) into pages.

    With ``skip_existing``, documents already in the catalog are skipped one by
    one, so a partly ingested file can be ingested again to finish the job.

    Examples
    --------
    >>> batcher = PageBatcher(db, skip_existing=False)      # doctest: +SKIP
    >>> batcher.add_all(read_documents("run.msgpack"))      # doctest: +SKIP
    >>> batcher.flush()                                     # doctest: +SKIP
    """

    def __init__(self, db, skip_existing: bool):
        self.db = db
        self.skip_existing = skip_existing
        self.pending: list = []
        #: "event", "datum" (documents packed at flush), "event_page", "datum_page" (pages)
        self.pending_name: str | None = None
        self.pending_key: Any = None
        self.pending_rows = 0
        #: (name, documents) of each part pending, for the counts
        self.pending_docs: list[tuple[str, int]] = []
        self.inserted: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: Documents given so far, and the name of the last one (for error messages).
        self.added, self.last_name = 0, "?"
        self.pending_first = 0
        #: (name, count, index of its first document) of the batch being inserted, for
        #: error messages.
        self.batch: tuple[str, int, int] | None = None

    def _pend(self, kind: str, key: Any, rows: int, part: Any, name: str, docs: int) -> None:
        if self.pending and (self.pending_name != kind or self.pending_key != key
                             or self.pending_rows + rows > BATCH):
            self.flush()
        if not self.pending:
            self.pending_first = self.added
        self.added += docs
        self.last_name = name
        self.pending_name, self.pending_key = kind, key
        self.pending.append(part)
        self.pending_rows += rows
        if kind in _PAGE_COLUMNS:  # (events and datum: one each, counted at flush)
            self.pending_docs.append((name, docs))

    def add(self, name: str, doc: Any) -> None:
        """Insert a document, or keep it to insert with the next ones alike."""
        if name == "event":
            self._pend("event", (doc.get("descriptor"), _filled_keys(doc)), 1, doc, name, 1)
        elif name == "datum":
            self._pend("datum", doc.get("resource"), 1, doc, name, 1)
        elif name in _PAGE_COLUMNS and (found := _page_key(name, doc)) is not None:
            self._pend(name, found[0], found[1], doc, name, 1)
        else:
            self.flush()
            self.batch = (name, 1, self.added)
            self.added += 1
            self.last_name = name
            self._insert(name, doc)
            self.batch = None

    def add_rows(self, rows: Rows) -> None:
        """Keep a run of events read a column at a time (:class:`~.msgpack_rows.Rows`)."""
        page = rows.page
        key = (page["descriptor"], tuple(page["data"]), tuple(page["timestamps"]),
               tuple(page["filled"]) if "filled" in page else None)
        self._pend("event_page", key, rows.count, page, rows.name, rows.count)

    def add_all(self, documents: Iterable) -> None:
        """:meth:`add` each ``(name, doc)`` (:meth:`add_rows` each ``Rows``); a run of
        events of one descriptor (with ``filled`` alike) in a tight loop."""
        pending, key, run = self.pending, None, 0
        try:
            for item in documents:
                if type(item) is not Rows:
                    name, doc = item
                    if name == "event" and key is not None and len(pending) < BATCH:
                        filled = doc.get("filled", _ABSENT)
                        if doc.get("descriptor") == key[0] and (
                                key[1] == () and type(filled) is dict and not filled
                                or _filled_keys(doc) == key[1]):
                            pending.append(doc)
                            run += 1
                            continue
                    self.added += run
                    self.pending_rows += run
                    run = 0
                    self.add(name, doc)
                else:
                    self.added += run
                    self.pending_rows += run
                    run = 0
                    self.add_rows(item)
                pending = self.pending
                key = self.pending_key if self.pending_name == "event" else None
        finally:
            self.added += run
            self.pending_rows += run

    def flush(self) -> None:
        """Insert what is pending."""
        if not self.pending:
            return
        parts, kind, counts = self.pending, self.pending_name, self.pending_docs
        if kind not in _PAGE_COLUMNS:
            counts = [(kind, 1)] * len(parts)
        self.pending, self.pending_name, self.pending_rows, self.pending_docs = [], None, 0, []
        # left set if the insert raises
        self.batch = (kind, sum(n for _, n in counts), self.pending_first)
        if kind in ("event", "datum"):
            try:
                page = (None if len(parts) == 1 else pack_events(parts) if kind == "event"
                        else event_model.pack_datum_page(*parts))
            except (KeyError, TypeError, AttributeError):
                page = None  # a malformed document: inserted alone, validation names it
            if page is not None and kind == "event" and _filled_keys(parts[0]) is None:
                del page["filled"]  # events saved without filled are stored without it
            if page is None:
                for i, doc in enumerate(parts):
                    self.batch = (kind, 1, self.batch[2] + i)
                    self._insert(kind, doc)
                self.batch = None
                return
            table = f"{kind}_page"
        else:
            page, table = _join_pages(kind, parts), kind
        try:
            self.db.insert(table, page)
        except DuplicateUidError:
            if not self.skip_existing:
                raise
            # some are stored already: insert the documents one by one
            for part, (name, n) in zip(parts, counts):
                docs = [part] if n == 1 and type(part) is dict and name == kind else \
                    _rows_of(name, part)
                for doc in docs:
                    self._insert(name, doc)
        else:
            for name, n in counts:
                self.inserted[name] = self.inserted.get(name, 0) + n
        self.batch = None

    def _insert(self, name: str, doc: dict) -> None:
        try:
            self.db.insert(name, doc)
        except (DuplicateUidError, RunAlreadyStoppedError):
            stored_stop = (self.db.store.get_stop(doc.get("run_start")) or {}
                           if name == "stop" else {})
            if not self.skip_existing or (
                    name == "stop" and stored_stop.get("uid") != doc.get("uid")):
                raise
            self.skipped[name] = self.skipped.get(name, 0) + 1
            return
        self.inserted[name] = self.inserted.get(name, 0) + 1
