"""The ``docs()`` replay engine: a run's documents, rebuilt from the store, in a valid order.

Start first; each descriptor before its events; each resource before its datum;
each datum before the first event that references it; each stream_resource
before its first stream_datum and each stream_datum before the event of its first
row; stop last.  Events of different descriptors are merged in time order
(a heap over one page-reading generator per descriptor).  With ``fill=True``,
events are filled through the one fill path
(:class:`~dask_broker.fill.datum.DatumReader`) in batches, with a handler cache
of the replay's own that is closed when the generator finishes or is closed.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..codec import column_to_list
from ..errors import RunNotFoundError, UnknownFieldError
from ..field_select import FieldSelection, constants
from ..fill.context import DEFAULT_MAX_OPEN
from ..fill.recipe import FillRecipe
from ..handlers.cache import HandlerCache
from ..stores.base import EventPageColumns, Store
from ..stream_data import stream_keys
from .plan import run_uid_of, stream_descriptors

__all__ = ["replay"]


def replay(source: Any, run: Any, stream_name: str | None = None,
           fields: Sequence[str] | None = None, fill: bool = False
           ) -> Iterator[tuple[str, dict]]:
    """Yield the run's documents as ``(name, doc)`` (see :meth:`EventSource.docs`).

    ``source`` is an :class:`~dask_broker.EventSource` (its ``store``, ``registry``
    and ``root_map``); ``run`` a Header, a start document or a uid.

    Examples
    --------
    >>> names = [name for name, _ in replay(db.event_source, h)]  # doctest: +SKIP
    """
    store = source.store
    run_uid = run_uid_of(run)
    start = store.get_start(run_uid)
    if start is None:
        raise RunNotFoundError(f"no run with uid {run_uid!r} in {store.display_uri}")
    every = store.descriptors(run_uid)
    descs = every if stream_name is None else stream_descriptors(store, run_uid, stream_name,
                                                                 every)
    wanted = kept = None
    merged: dict[str, dict] = {}  # descriptor uid -> {key: Constant}
    if fields is not None:
        selection = FieldSelection(fields)
        stop = store.get_stop(run_uid)
        kept = {d["uid"]: selection.select(d["data_keys"]) for d in descs}
        merged = {d["uid"]: constants(selection, d, start, stop) for d in descs}
        wanted = list(dict.fromkeys(k for keys in kept.values() for k in keys))
        known = {k for d in descs for k in d["data_keys"]}
        unknown = selection.unmatched([*known, *(k for m in merged.values() for k in m)])
        if unknown:
            raise UnknownFieldError(
                f"field(s) {unknown} are not in run {run_uid!r}"
                + (f" stream {stream_name!r}" if stream_name else "")
                + f": neither data keys ({sorted(known)}) nor configuration, start or "
                "stop keys"
            )
    yield "start", start
    resources = store.resources(run_uid)
    emitter = _AssetEmitter(store, resources)
    if stream_name is None:
        # Everything the run holds, referenced or not, up front.
        yield from emitter.all()
    if kept is not None:
        # Streams that hold none of the requested fields (nor merged values) are left out.
        descs = [d for d in descs if kept[d["uid"]] or merged[d["uid"]]]
    streams = [_EventStream(store, d, None if kept is None else kept[d["uid"]],
                            emitter, merged.get(d["uid"])) for d in descs]
    streamed = _StreamDatumEmitter.for_run(store, run_uid, descs, wanted,
                                           every_resource=stream_name is None)
    for stream in streams:
        if not stream.has_events():
            yield "descriptor", stream.descriptor
            yield from streamed.up_to(stream.descriptor["uid"], None)
    merged = heapq.merge(*(s.keyed() for s in streams if s.has_events()))
    # Filling: the one fill path over the resources read above, with a cache of its own
    # that is closed when the generator finishes or is closed.
    cache = HandlerCache(DEFAULT_MAX_OPEN) if fill else None
    reader = None
    if fill:
        recipe = FillRecipe.for_run(store, every, resources, source.registry,
                                    source.root_map)
        reader = recipe.reader(cache)
    try:
        for stream in streams:
            stream.reader = reader
        for *_, stream, event in merged:
            if not stream.emitted_descriptor:
                stream.emitted_descriptor = True
                yield "descriptor", stream.descriptor
            yield from streamed.up_to(stream.descriptor["uid"], event["seq_num"])
            yield from emitter.for_event(event, stream.external)
            if reader is not None and stream.external:
                event = stream.filled(event)
            yield "event", event
    finally:
        if cache is not None:
            cache.close_all()
    for stream in streams:  # stream_datum past the last event (fly scans flush late)
        if stream.has_events():
            yield from streamed.up_to(stream.descriptor["uid"], None)
    yield from streamed.unreferenced()
    stop = store.get_stop(run_uid)
    if stop is not None:
        yield "stop", stop




class _EventStream:
    """Events of one descriptor, rebuilt from pages, keyed for a time-ordered merge."""

    _counter = itertools.count()

    def __init__(self, store: Store, descriptor: dict, fields: list[str] | None,
                 emitter: "_AssetEmitter", merged: Mapping[str, Any] | None = None):
        self.store = store
        self.emitter = emitter
        # Configuration / start / stop values merged into every event (fields=).
        merged = merged or {}
        self.merged_data = {k: c.value for k, c in merged.items()}
        self.merged_timestamps = {k: c.timestamp for k, c in merged.items()}
        keys = descriptor["data_keys"]
        kept = [f for f in keys if fields is None or f in fields]
        self.descriptor = descriptor if fields is None else {
            **descriptor, "data_keys": {k: v for k, v in keys.items() if k in kept}}
        streamed = set(stream_keys(descriptor))  # never in events: stream_datum cover them
        self.fields = [f for f in kept if f not in streamed]
        self.external = [f for f in self.fields if keys[f].get("external")]
        self.emitted_descriptor = False
        self.reader = None  # the DatumReader of docs(fill=True)
        self.frames: dict[str, Any] = {}
        self._order = next(self._counter)
        self._count = store.event_counts([descriptor["uid"]]).get(descriptor["uid"], (0,))[0]

    def has_events(self) -> bool:
        return self._count > 0

    #: Events whose frames are read together when filling (one bulk read per resource).
    FILL_BATCH = 64

    def keyed(self) -> Iterator[tuple[float, int, int, "_EventStream", dict]]:
        pages = self.store.iter_event_pages([self.descriptor["uid"]], fields=self.fields,
                                            timestamps=True, uids=True)
        events = itertools.chain.from_iterable(
            _page_to_events(self.emitter.prefetch(page, self.external), self.fields, self.external)
            for page in pages)
        i = 0
        while batch := list(itertools.islice(events, self.FILL_BATCH)):
            if self.reader is not None and self.external:
                ids = list(dict.fromkeys(e["data"][f] for e in batch for f in self.external
                                         if isinstance(e["data"][f], str)))
                # One batch of frames in memory at a time (the merge has emitted the
                # previous batch before it asks for the next event).
                self.frames = dict(zip(ids, self.reader.read(ids), strict=True))
            for event in batch:
                if self.merged_data:
                    event["data"].update(self.merged_data)
                    event["timestamps"].update(self.merged_timestamps)
                yield event["time"], self._order, i, self, event
                i += 1

    def filled(self, event: dict) -> dict:
        """The event with its external fields' datum ids replaced by the frames read."""
        data, filled = dict(event["data"]), dict(event["filled"])
        for f in self.external:
            if isinstance(data.get(f), str):
                data[f] = self.frames[data[f]]
                filled[f] = True
        return {**event, "data": data, "filled": filled}


def _page_to_events(page: EventPageColumns, fields: list[str], external: list[str]) -> Iterator[dict]:
    data = {f: column_to_list(page.data[f]) for f in fields}
    ts = {f: column_to_list(page.timestamps[f]) for f in fields}
    times = page.time.tolist()
    seqs = page.seq_num.tolist()
    filled = {f: False for f in external}
    for i, uid in enumerate(page.uid):
        yield {
            "uid": uid, "descriptor": page.descriptor, "seq_num": seqs[i], "time": times[i],
            "data": {f: data[f][i] for f in fields},
            "timestamps": {f: ts[f][i] for f in fields},
            "filled": dict(filled),
        }


class _StreamDatumEmitter:
    """Emits stream_datum in seq_num order per descriptor, each stream_resource once before
    its first stream_datum, and each stream_datum before the event of its first seq_num."""

    def __init__(self, resources: Mapping[str, dict], datums: Iterable[dict],
                 wanted: list[str] | None, every_resource: bool):
        self.resources = dict(resources)
        self.sent: set[str] = set()
        self.every_resource = every_resource
        keep = self.keep = None if wanted is None else set(wanted)
        self.pending: dict[str, list[dict]] = {}
        for sd in datums:
            key = self.resources.get(sd["stream_resource"], {}).get("data_key")
            if keep is None or key in keep:
                self.pending.setdefault(sd["descriptor"], []).append(sd)
        for queue in self.pending.values():
            queue.sort(key=lambda sd: sd["seq_nums"]["start"])
            queue.reverse()  # pop() from the end

    @classmethod
    def for_run(cls, store: Store, run_uid: str, descriptors: list[dict],
                wanted: list[str] | None, every_resource: bool) -> "_StreamDatumEmitter":
        if not store.supports_stream_data:
            return cls({}, (), wanted, False)
        resources = {r["uid"]: r for r in store.stream_resources(run_uid)}
        datums = store.stream_datums([d["uid"] for d in descriptors]) if descriptors else []
        return cls(resources, datums, wanted, every_resource)

    def up_to(self, descriptor_uid: str, seq_num: int | None) -> Iterator[tuple[str, dict]]:
        """Pending stream_datum of a descriptor starting at or before ``seq_num`` (None: all)."""
        queue = self.pending.get(descriptor_uid)
        while queue and (seq_num is None or queue[-1]["seq_nums"]["start"] <= seq_num):
            sd = queue.pop()
            uid = sd["stream_resource"]
            if uid not in self.sent and uid in self.resources:
                self.sent.add(uid)
                yield "stream_resource", self.resources[uid]
            yield "stream_datum", sd

    def unreferenced(self) -> Iterator[tuple[str, dict]]:
        """stream_resources of the run that no stream_datum pointed at (whole-run replays)."""
        if self.every_resource:
            for uid, doc in self.resources.items():
                if uid not in self.sent and (self.keep is None or doc.get("data_key") in self.keep):
                    self.sent.add(uid)
                    yield "stream_resource", doc


class _AssetEmitter:
    """Emits resources and datum, each once, before the first document needing them."""

    def __init__(self, store: Store, resources: Iterable[dict]):
        self.store = store
        self.resources = {r["uid"]: r for r in resources}
        self.sent_resources: set[str] = set()
        self.sent_datum: set[str] = set()
        self.pending: dict[str, dict] = {}  # datum looked up for a page, not yet emitted

    def prefetch(self, page: EventPageColumns, external: list[str]) -> EventPageColumns:
        """Look up, in one query, the datum a page's events reference (and return the page)."""
        if external:
            ids = {v for f in external for v in page.data.get(f, ())
                   if isinstance(v, str) and v not in self.sent_datum and v not in self.pending}
            if ids:
                self.pending.update(self.store.datum(sorted(ids)))
        return page

    def all(self) -> Iterator[tuple[str, dict]]:
        for uid, resource in self.resources.items():
            self.sent_resources.add(uid)
            yield "resource", resource
            for datum in self.store.datum_of_resource(uid):
                self.sent_datum.add(datum["datum_id"])
                yield "datum", datum

    def for_event(self, event: dict, external: list[str]) -> Iterator[tuple[str, dict]]:
        if not external:
            return
        needed = [event["data"][f] for f in external]
        needed = [d for d in needed if isinstance(d, str) and d not in self.sent_datum]
        if not needed:
            return
        found = {d: self.pending.pop(d) for d in needed if d in self.pending}
        missing = [d for d in needed if d not in found]
        if missing:
            found.update(self.store.datum(missing))
        for datum_id, datum in found.items():
            res_uid = datum["resource"]
            if res_uid not in self.sent_resources:
                resource = self.resources.get(res_uid) or self.store.get_resource(res_uid)
                if resource is not None:
                    self.sent_resources.add(res_uid)
                    yield "resource", resource
            self.sent_datum.add(datum_id)
            yield "datum", datum
