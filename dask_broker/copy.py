"""Copy runs between catalogs of any kinds: :func:`copy_runs` (``dask-broker copy``).

Every document of a run is copied as the source replays it
(:meth:`Header.docs <dask_broker.Header.docs>`: start, descriptors, events,
resources, datum, stream_resource, stream_datum, stop), written to the
destination store as it is (no validation, no change: a legacy document stays
legacy).  External files are not touched.

A run is written start-last: its other documents first, then they are read back
from the destination and compared with the source -- the count of each kind of
document, and a checksum of their canonical JSON (see :func:`run_digest`) --
and only then is the start written.  So a run whose start is in the destination
is complete and verified, and is skipped; a copy that was interrupted is
finished by running it again (what the interrupted run had written is kept).

Examples
--------
>>> report = copy_runs("mongodb://db:27017/mds", "postgresql://db/catalog")  # doctest: +SKIP
>>> print(report)                                                            # doctest: +SKIP
copied 120 runs (1,204,511 events), skipped 3 already in postgresql://db/catalog
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import event_model
import numpy as np

from .errors import CopyVerificationError, DuplicateUidError, RunAlreadyStoppedError
from .event_source import EventSource

__all__ = ["copy_runs", "CopyReport", "RunDigest", "run_digest"]

#: Events per event_page written to the destination.
BATCH_EVENTS = 8192
#: datum or stream_datum per write.
BATCH_DATUM = 10_000


@dataclass
class RunDigest:
    """What a run holds: how many documents of each kind, and their checksum.

    ``checksum`` is the sum (modulo 2**256, as hex) of the SHA-256 of each
    document's canonical JSON (keys sorted, numpy values as lists and numbers,
    prefixed with its name): it changes with any value, type or document, and
    not with the order in which a store replays documents of one kind.
    """

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def add(self, name: str, doc: Mapping) -> None:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_plain)
        digest = hashlib.sha256(f"{name}\n{text}".encode("utf-8", "surrogatepass")).digest()
        self.total = (self.total + int.from_bytes(digest, "big")) % 2**256
        self.counts[name] = self.counts.get(name, 0) + 1

    @property
    def checksum(self) -> str:
        return f"{self.total:064x}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDigest) and (self.counts, self.total) == (
            other.counts, other.total)


def _plain(value: Any) -> Any:
    """numpy values as JSON sees plain Python (numpy floats are floats already)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def run_digest(docs: Iterable[tuple[str, Mapping]]) -> RunDigest:
    """The :class:`RunDigest` of ``(name, doc)`` pairs (e.g. ``header.docs()``).

    Examples
    --------
    >>> run_digest([("start", {"uid": "a", "time": 1.0})]).counts
    {'start': 1}
    """
    digest = RunDigest()
    for name, doc in docs:
        digest.add(name, doc)
    return digest


@dataclass
class CopyReport:
    """What :func:`copy_runs` did: runs copied (uid -> digest), runs skipped, events."""

    destination: str
    copied: dict[str, RunDigest] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    events: int = 0

    def __str__(self) -> str:
        return (f"copied {len(self.copied)} run{'s' * (len(self.copied) != 1)} "
                f"({self.events:,} events), skipped {len(self.skipped)} already in "
                f"{self.destination}")


def _open(catalog: Any, *, read_only: bool):
    from .broker import Broker
    from .config import open_catalog

    if isinstance(catalog, Broker):
        return catalog
    return open_catalog(catalog, create=not read_only, read_only=read_only)


def copy_runs(src: Any, dst: Any, query: Mapping | None = None, *, since: Any = None,
              until: Any = None, progress: bool | None = None) -> CopyReport:
    """Copy the runs of ``src`` that match ``query`` into ``dst``; skip those already there.

    Parameters
    ----------
    src, dst
        Brokers, or catalogs as ``dask-broker`` names them: URIs (``sqlite:///...``,
        ``mongodb://...``, ``postgresql://...``), named catalogs, SQLite file paths.
        ``src`` is opened read-only; ``dst`` is created if needed.
    query, since, until
        Which runs (as :meth:`Broker.search <dask_broker.Broker.search>`); all by default.
    progress
        Show tqdm bars of runs and events (default: when stderr is a terminal).

    Returns
    -------
    CopyReport
        The runs copied, with their :class:`RunDigest`, and those skipped.

    Raises
    ------
    CopyVerificationError
        What a run's documents read back from ``dst`` differs from ``src`` (the
        message names the run and the counts); its start is not written, so the
        run is not taken as copied.

    Examples
    --------
    >>> copy_runs("sqlite:////data/cat.db", "postgresql://db/catalog",  # doctest: +SKIP
    ...           {"proposal": "12345"}, since="2024-01-01")
    """
    from tqdm.auto import tqdm

    source, target = _open(src, read_only=True), _open(dst, read_only=False)
    headers = source.search(query, since=since, until=until)[::-1]  # oldest first
    report = CopyReport(destination=target.store.display_uri)
    if progress is None:
        progress = sys.stderr.isatty()
    with tqdm(total=len(headers), desc="runs", unit="run", disable=not progress,
              file=sys.stderr) as runs_bar, \
            tqdm(total=0, desc="events", unit="ev", unit_scale=True, disable=not progress,
                 file=sys.stderr) as events_bar:
        for header in headers:
            if target.store.get_start(header.uid) is not None:
                report.skipped.append(header.uid)
            else:
                counts = source.store.event_counts([d["uid"] for d in header.descriptors])
                events_bar.total += sum(c[0] for c in counts.values())
                events_bar.refresh()
                digest = _copy_run(source.event_source, header.uid, target.store, events_bar)
                report.copied[header.uid] = digest
                report.events += digest.counts.get("event", 0)
            runs_bar.update(1)
    return report


def _copy_run(source: EventSource, uid: str, store: Any, events_bar: Any) -> RunDigest:
    docs = source.docs(uid)
    name, start = next(docs)
    writer = _Writer(store, events_bar)
    sent = RunDigest()
    sent.add(name, start)
    for name, doc in docs:
        sent.add(name, doc)
        writer.add(name, doc)
    writer.flush()
    got = run_digest(EventSource(_WithStart(store, start)).docs(uid))
    if got != sent:
        differ = sorted(k for k in set(sent.counts) | set(got.counts)
                        if sent.counts.get(k) != got.counts.get(k))
        raise CopyVerificationError(
            f"run {uid!r} read back from {store.display_uri} differs from its source "
            f"(documents in the source: {sent.counts}; read back: {got.counts}"
            + (f"; the counts of {differ} differ" if differ else "; the values differ")
            + "): its start was not written, so the run is not taken as copied")
    store.insert_start(start)
    if run_digest([("start", store.get_start(uid))]).total != run_digest(
            [("start", start)]).total:
        raise CopyVerificationError(
            f"run {uid!r}: the start document read back from {store.display_uri} differs "
            "from the source's")
    return sent


class _WithStart:
    """The destination store as if a run's start were in it (to verify before writing it)."""

    def __init__(self, store: Any, start: Mapping):
        self._store, self._start = store, start

    def get_start(self, uid: str) -> dict | None:
        return dict(self._start) if uid == self._start["uid"] else self._store.get_start(uid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Writer:
    """Writes replayed documents to a store: events and datum in pages, the rest one by one.

    A document already in the store (written by an interrupted copy) is skipped; where
    a page meets one, its documents are written one by one.
    """

    def __init__(self, store: Any, events_bar: Any):
        self.store = store
        self.events_bar = events_bar
        self.events: dict[str, list[dict]] = {}  # descriptor uid -> pending events
        self.datum: dict[str, list[dict]] = {}  # resource uid -> pending datum
        self.stream_datum: list[dict] = []

    def add(self, name: str, doc: dict) -> None:
        if name == "event":
            pending = self.events.setdefault(doc["descriptor"], [])
            if pending and (pending[0]["data"].keys() != doc["data"].keys()
                            or pending[0].get("filled", {}).keys()
                            != doc.get("filled", {}).keys()):
                self._flush_events(doc["descriptor"])  # a page holds one set of keys
                pending = self.events.setdefault(doc["descriptor"], [])
            pending.append(doc)
            if len(pending) >= BATCH_EVENTS:
                self._flush_events(doc["descriptor"])
        elif name == "datum":
            pending = self.datum.setdefault(doc["resource"], [])
            pending.append(doc)
            if len(pending) >= BATCH_DATUM:
                self._flush_datum(doc["resource"])
        elif name == "stream_datum":
            self.stream_datum.append(doc)
            if len(self.stream_datum) >= BATCH_DATUM:
                self._flush_stream_datum()
        else:
            insert = {"descriptor": self.store.insert_descriptor,
                      "resource": self.store.insert_resource,
                      "stream_resource": self.store.insert_stream_resource,
                      "stop": self.store.insert_stop}[name]
            _unless_there(insert, doc)

    def flush(self) -> None:
        for descriptor in list(self.events):
            self._flush_events(descriptor)
        for resource in list(self.datum):
            self._flush_datum(resource)
        self._flush_stream_datum()

    def _flush_events(self, descriptor: str) -> None:
        events = self.events.pop(descriptor, [])
        if not events:
            return
        try:
            self.store.insert_event_pages([event_model.pack_event_page(*events)])
        except DuplicateUidError:
            for event in events:
                _unless_there(self.store.insert_event_page, event_model.pack_event_page(event))
        self.events_bar.update(len(events))

    def _flush_datum(self, resource: str) -> None:
        datum = self.datum.pop(resource, [])
        if not datum:
            return
        try:
            self.store.insert_datum_page(event_model.pack_datum_page(*datum))
        except DuplicateUidError:
            for d in datum:
                _unless_there(self.store.insert_datum_page, event_model.pack_datum_page(d))

    def _flush_stream_datum(self) -> None:
        docs, self.stream_datum = self.stream_datum, []
        if not docs:
            return
        try:
            self.store.insert_stream_datums(docs)
        except DuplicateUidError:
            for doc in docs:
                _unless_there(self.store.insert_stream_datums, [doc])


def _unless_there(insert: Any, doc: Any) -> None:
    try:
        insert(doc)
    except (DuplicateUidError, RunAlreadyStoppedError):
        pass  # written by an interrupted copy: the verification decides
