"""Validation and routing of documents into a store (the DBEP's InsertEV).

:class:`Inserter` is a callable ``(name, doc)`` -- a valid RunEngine
subscriber.  Each document is checked against event-model's JSON schema and
against what is already stored (references, data keys, page shapes) *before*
anything is written, and the store writes each call atomically, so a rejected
document leaves the store unchanged.

Documents in one of the legacy forms databroker accepted (:mod:`dask_broker.legacy`:
a stop without ``exit_status``, a resource without ``root``) pass, stored as given.

Values are checked too (:mod:`dask_broker.storable`): a document goes in only if
every store keeps it faithfully -- no bytes, datetimes, sets, lone surrogates,
keys that are not str, integers beyond 34 digits, nesting deeper than 64 levels;
seq_num and time fit 64 bits; a uid is not repeated within a page.
"""

from __future__ import annotations

from typing import Any, Mapping

import event_model
import jsonschema
import numpy as np

from .compiled_checks import EventCheck
from .legacy import check_legacy
from .storable import check_column, check_int64, checked_column, checked_jsonable
from .stores.base import first_repeat
from .stream_data import Intervals, stream_keys
from .errors import (
    DataKeysMismatchError,
    DocumentValidationError,
    DuplicateUidError,
    PageLengthError,
    UnknownDocumentNameError,
    UnknownReferenceError,
)
from .stores.base import Store

__all__ = ["Inserter", "DOCUMENT_NAMES"]

#: Accepted document names, including the DBEP's and event-model's bulk names.
DOCUMENT_NAMES = (
    "start", "descriptor", "event", "event_page", "resource", "datum", "datum_page",
    "stop", "bulk_events", "bulk_datum", "bulkevent", "bulkdatum",
    "stream_resource", "stream_datum",
)

_VALIDATORS = event_model.schema_validators
_DocName = event_model.DocumentNames


def _uid_of(name: str, doc: Any) -> str:
    if not isinstance(doc, Mapping):
        return "<not a dict>"
    for key in ("uid", "datum_id"):
        value = doc.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            return f"{value[0]}..." if len(value) > 1 else str(value[0])
    return "<no uid>"


def _validate(name: str, doc: Any) -> None:
    if not isinstance(doc, Mapping):
        raise DocumentValidationError(f"{name} document must be a dict, got {type(doc).__name__}")
    uid = _uid_of(name, doc)
    plain = checked_jsonable(name, uid, doc)
    try:
        _VALIDATORS[_DocName[name]].validate(plain)
    except jsonschema.ValidationError as err:
        form, legacy_err = check_legacy(name, plain)
        if form is None:  # a known legacy form is stored as given
            fault = legacy_err or err  # of a legacy form: its other fault
            where = "/".join(str(p) for p in fault.absolute_path) or "<top level>"
            raise DocumentValidationError(
                f"{name} {uid!r} violates the event-model schema at {where}: {fault.message}"
            ) from err
    for field in ("time", "seq_num"):  # kept as 64-bit numbers by every store
        check_int64(name, uid, field, doc.get(field))


#: event-model 1.19-1.20 stream_resource (before ``mimetype``/``uri``/``parameters``):
#: the 1.24 schema rejects it, so it is checked against this one.
_LEGACY_STREAM_RESOURCE = {
    "type": "object",
    "properties": {
        "uid": {"type": "string"}, "data_key": {"type": "string"},
        "spec": {"type": "string"}, "mimetype": {"type": "string"},
        "root": {"type": "string"}, "resource_path": {"type": "string"},
        "resource_kwargs": {"type": "object"}, "parameters": {"type": "object"},
        "run_start": {"type": "string"}, "path_semantics": {"type": "string"},
    },
    "required": ["uid", "data_key", "resource_path"],
    "anyOf": [{"required": ["spec"]}, {"required": ["mimetype"]}],
}


def _validate_stream_resource(doc: Any) -> None:
    """A stream_resource of event-model >= 1.21, or of the older spec/root/resource_path form."""
    if isinstance(doc, Mapping) and "uri" not in doc and "resource_path" in doc:
        try:
            jsonschema.validate(checked_jsonable("stream_resource",
                                                 _uid_of("stream_resource", doc), doc),
                                _LEGACY_STREAM_RESOURCE)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
            raise DocumentValidationError(
                f"stream_resource {_uid_of('stream_resource', doc)!r} (older spec/root/"
                f"resource_path form) is invalid at {where}: {err.message}") from err
        return
    _validate("stream_resource", doc)


def _validate_page(name: str, doc: Any) -> Any:
    """Schema-validate a page, and check its values, without walking every element in Python.

    The schema is checked on a one-row slice of the page (structure, required
    keys, types of the first row); every column is then checked by its numpy
    dtype or the set of its values' types (:func:`~dask_broker.storable.checked_column`),
    which also gives the per-element types the schema asks for.  Anything unusual
    falls back to the full jsonschema validation, for its precise message.

    Returns the page to store: the same document, but for an event_page whose
    columns of only floats, ints or bools are numpy arrays (that hold exactly
    the same values), so that stores encode them without another pass.
    """
    if not isinstance(doc, Mapping):
        _validate(name, doc)
        return doc
    try:
        head = {k: (v[:1] if isinstance(v, (list, np.ndarray)) else
                    {f: c[:1] for f, c in v.items()} if isinstance(v, Mapping) else v)
                for k, v in doc.items()}
    except (TypeError, AttributeError):
        _validate(name, doc)
        return doc
    _validate_envelope(name, head)
    uid = _uid_of(name, doc)
    if name == "event_page":
        seq, seq_col = checked_column(name, uid, ("seq_num",), doc["seq_num"], 1, int64=True)
        time, time_col = checked_column(name, uid, ("time",), doc["time"], 1, int64=True)
        uids = check_column(name, uid, ("uid",), doc["uid"], 1)
        stamps = {f: checked_column(name, uid, ("timestamps", f), c)
                  for f, c in doc["timestamps"].items()}
        data = {f: checked_column(name, uid, ("data", f), c) for f, c in doc["data"].items()}
        filled = [check_column(name, uid, ("filled", f), c)
                  for f, c in (doc.get("filled") or {}).items()]
        ok = (seq in ("", "i", "u") and time in ("", "i", "u", "f") and uids in ("", "U")
              and all(k in ("", "i", "u", "f") for k, _ in stamps.values())
              and all(k != "X" for k, _ in data.values()) and "X" not in filled)
        if ok:
            return {**doc, "seq_num": seq_col, "time": time_col,
                    "data": {f: c for f, (_, c) in data.items()},
                    "timestamps": {f: c for f, (_, c) in stamps.items()}}
    else:  # datum_page
        ids = check_column(name, uid, ("datum_id",), doc["datum_id"], 1)
        kwargs = [check_column(name, uid, ("datum_kwargs", f), c)
                  for f, c in doc["datum_kwargs"].items()]
        ok = ids in ("", "U") and "X" not in kwargs
    if not ok:
        _validate(name, doc)
    return doc


class _Uncacheable(Exception):
    """A value whose validity its type alone does not decide."""


def _skeleton(value: Any) -> Any:
    """What event-model's page schemas and the storability checks see of a value: its
    type, dict keys, list lengths, array dtype and shape -- and whether a float is
    integral (a JSON-schema ``integer``).  ``_Uncacheable`` for anything whose content
    matters (non-ASCII text, integers beyond 64 bits, other objects)."""
    t = type(value)
    if t is dict:
        return t, tuple((k, _skeleton(v)) for k, v in value.items())
    if t is list or t is tuple:
        return t, tuple(_skeleton(v) for v in value)
    if t is float:
        return t, value.is_integer()
    if t is str:
        if value.isascii():
            return t
    elif t is int:
        if -(2**63) <= value < 2**63:
            return t
    elif t is bool or value is None:
        return t
    elif t is np.ndarray and value.dtype.kind in "biuf":
        return t, value.dtype.str, value.shape
    raise _Uncacheable


#: Skeletons of page envelopes (one-row heads) the schema accepted: a page shaped
#: like one of them is valid without running jsonschema again.
_VALID_ENVELOPES: set[tuple] = set()


def _validate_envelope(name: str, head: Mapping) -> None:
    """Validate a page's head (a one-row slice) with event-model's schema, once per shape."""
    try:
        key = (name, _skeleton(dict(head)))
    except _Uncacheable:
        key = None
    if key is not None and key in _VALID_ENVELOPES:
        return
    _validate(name, head)
    if key is not None:
        if len(_VALID_ENVELOPES) >= 4096:
            _VALID_ENVELOPES.clear()
        _VALID_ENVELOPES.add(key)


def _check_unique(name: str, doc_type: str, ids: Any, context: str) -> None:
    """Refuse a page (or bulk document) that repeats a uid within itself."""
    ids = list(ids)
    if len(set(ids)) == len(ids):
        return
    dup = first_repeat(ids)
    rows = [i for i, v in enumerate(ids) if v == dup]
    raise DuplicateUidError(
        f"{doc_type} {dup!r} ({context}) is repeated within this {name} (rows "
        f"{', '.join(map(str, rows[:5]))}); every {doc_type} needs its own uid. Nothing of "
        f"this {name} was written")


def _declared_rows(resource: Mapping) -> int | None:
    """Rows a stream_resource says its dataset holds, when its parameters say so."""
    params = resource.get("parameters") or resource.get("resource_kwargs") or {}
    shape = params.get("shape")
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], int):
        per_row = params.get("multiplier", params.get("frame_per_point", 1))
        if isinstance(per_row, int) and per_row > 0:
            return shape[0] // per_row
    return None


class Inserter:
    """Insert documents into a store, validating each one first.

    Parameters
    ----------
    store
        The destination store.

    Examples
    --------
    >>> insert = Inserter(store)  # doctest: +SKIP
    >>> RE.subscribe(insert)      # doctest: +SKIP
    """

    #: document name -> method; names, not bound methods, so that an Inserter holds no
    #: reference to itself and its store's connections close as soon as it is dropped
    _ROUTES = {
        "start": "start", "stop": "stop", "descriptor": "descriptor",
        "event": "event", "event_page": "event_page",
        "resource": "resource", "datum": "datum", "datum_page": "datum_page",
        "bulk_events": "bulk_events", "bulkevent": "bulk_events",
        "bulk_datum": "bulk_datum", "bulkdatum": "bulk_datum",
        "stream_resource": "stream_resource", "stream_datum": "stream_datum",
    }

    def __init__(self, store: Store):
        self.store = store
        self._descriptor_keys: dict[str, frozenset] = {}
        #: descriptor uid -> the compiled check of its single events
        self._event_checks: dict[str, EventCheck] = {}
        self._descriptors: dict[str, Mapping] = {}
        self._known_starts: set[str] = set()
        self._known_resources: set[str] = set()
        self._stream_resources: dict[str, Mapping] = {}
        # (run, stream name, data_key) -> seq_num ranges; stream_resource uid -> index ranges
        self._seq_ranges: dict[tuple[str, str, str], Intervals] = {}
        self._index_ranges: dict[str, Intervals] = {}
        self._loaded_streams: set[tuple[str, str]] = set()
    def __call__(self, name: str, doc: Mapping) -> None:
        try:
            route = getattr(self, self._ROUTES[name])
        except (KeyError, TypeError):
            raise UnknownDocumentNameError(
                f"unknown document name {name!r} (document {_uid_of(str(name), doc)!r}); "
                f"insert accepts {', '.join(DOCUMENT_NAMES)}"
            ) from None
        route(doc)

    # ------------------------------------------------------------- lookups
    def _require_start(self, name: str, doc: Mapping, run_uid: Any) -> None:
        if run_uid in self._known_starts:
            return
        if not isinstance(run_uid, str) or self.store.get_start(run_uid) is None:
            raise UnknownReferenceError(
                f"{name} {_uid_of(name, doc)!r} refers to run_start {run_uid!r}, which is not "
                "stored; insert the start document first"
            )
        self._known_starts.add(run_uid)

    def _descriptor(self, name: str, doc: Mapping, descriptor_uid: Any) -> Mapping:
        desc = self._descriptors.get(descriptor_uid)
        if desc is None:
            desc = self.store.get_descriptor(descriptor_uid) if isinstance(descriptor_uid, str) else None
            if desc is None:
                raise UnknownReferenceError(
                    f"{name} {_uid_of(name, doc)!r} refers to descriptor {descriptor_uid!r}, "
                    "which is not stored; insert the descriptor first"
                )
            self._remember_descriptor(desc)
        return desc

    def _remember_descriptor(self, desc: Mapping) -> None:
        self._descriptors[desc["uid"]] = desc
        # Events never carry the keys streamed through stream_datum (external "STREAM:").
        keys = frozenset(desc["data_keys"]) - frozenset(stream_keys(desc))
        self._descriptor_keys[desc["uid"]] = keys
        self._event_checks[desc["uid"]] = EventCheck(desc["uid"], keys)

    def _data_keys(self, name: str, doc: Mapping, descriptor_uid: Any) -> frozenset:
        keys = self._descriptor_keys.get(descriptor_uid)
        if keys is None:
            self._descriptor(name, doc, descriptor_uid)
            keys = self._descriptor_keys[descriptor_uid]
        return keys

    def _check_keys(self, name: str, doc: Mapping, expected: frozenset) -> None:
        for part in ("data", "timestamps"):
            got = set(doc[part])
            if got != expected:
                missing, extra = sorted(expected - got), sorted(got - expected)
                raise DataKeysMismatchError(
                    f"{name} {_uid_of(name, doc)!r}: its {part} keys do not match descriptor "
                    f"{doc['descriptor']!r} (missing {missing}, not in the descriptor {extra}); "
                    "an event must carry exactly its descriptor's data_keys (but those whose "
                    "external is 'STREAM:', which stream_datum documents cover)"
                )

    # ------------------------------------------------------------- routes
    def start(self, doc: Mapping) -> None:
        _validate("start", doc)
        self.store.insert_start(doc)
        self._known_starts.add(doc["uid"])

    def stop(self, doc: Mapping) -> None:
        _validate("stop", doc)
        self._require_start("stop", doc, doc["run_start"])
        self.store.insert_stop(doc)

    def descriptor(self, doc: Mapping) -> None:
        _validate("descriptor", doc)
        self._require_start("descriptor", doc, doc["run_start"])
        self.store.insert_descriptor(doc)
        self._remember_descriptor(doc)

    def resource(self, doc: Mapping) -> None:
        _validate("resource", doc)
        if "run_start" in doc:
            self._require_start("resource", doc, doc["run_start"])
        self.store.insert_resource(doc)
        self._known_resources.add(doc["uid"])

    def stream_resource(self, doc: Mapping) -> None:
        _validate_stream_resource(doc)
        if "run_start" in doc:
            self._require_start("stream_resource", doc, doc["run_start"])
        self.store.insert_stream_resource(doc)
        self._stream_resources[doc["uid"]] = doc

    def stream_datum(self, doc: Mapping) -> None:
        _validate("stream_datum", doc)
        uid = _uid_of("stream_datum", doc)
        resource = self._stream_resource(doc)
        desc = self._descriptor("stream_datum", doc, doc["descriptor"])
        key = resource["data_key"]
        streamed = stream_keys(desc)
        if key not in streamed:
            raise DataKeysMismatchError(
                f"stream_datum {uid!r}: its stream_resource {resource['uid']!r} holds data key "
                f"{key!r}, which descriptor {desc['uid']!r} does not stream (its keys with "
                f"external 'STREAM:' are {sorted(streamed)}); the descriptor must declare "
                f"{key!r} with external 'STREAM:'")
        run = desc["run_start"]
        if resource.get("run_start", run) != run:
            raise DocumentValidationError(
                f"stream_datum {uid!r} joins stream_resource {resource['uid']!r} of run "
                f"{resource['run_start']!r} to descriptor {desc['uid']!r} of run {run!r}; "
                "a stream_datum must stay within its run")
        seq, idx = doc["seq_nums"], doc["indices"]
        for part, ends in (("seq_nums", seq), ("indices", idx)):
            for end in ("start", "stop"):
                check_int64("stream_datum", uid, f"{part}/{end}", ends[end])
        width = seq["stop"] - seq["start"]
        if seq["start"] < 1 or idx["start"] < 0 or width < 0 or \
                idx["stop"] - idx["start"] != width:
            raise DocumentValidationError(
                f"stream_datum {uid!r}: seq_nums {dict(seq)} and indices {dict(idx)} must be "
                "half-open ranges [start, stop) of equal width, seq_nums counting from 1 and "
                "indices from 0")
        declared = _declared_rows(resource)
        if declared is not None and idx["stop"] > declared:
            raise DocumentValidationError(
                f"stream_datum {uid!r}: indices {dict(idx)} reach past the {declared} rows "
                f"that stream_resource {resource['uid']!r} declares")
        seq_ranges, index_ranges = self._ranges(run, desc.get("name", "primary"), key,
                                                resource["uid"])
        clash = seq_ranges.overlap(seq["start"], seq["stop"])
        if clash is not None and clash[2] == doc["uid"]:
            raise DuplicateUidError(
                f"stream_datum {uid!r} is already stored; documents are immutable, so give "
                "the new document a new uid")
        if clash is not None:
            raise DocumentValidationError(
                f"stream_datum {uid!r}: seq_nums [{seq['start']}, {seq['stop']}) of data key "
                f"{key!r} overlap [{clash[0]}, {clash[1]}), already covered by another "
                f"stream_datum of stream {desc.get('name', 'primary')!r} of run {run!r}")
        clash = index_ranges.overlap(idx["start"], idx["stop"])
        if clash is not None:
            raise DocumentValidationError(
                f"stream_datum {uid!r}: indices [{idx['start']}, {idx['stop']}) overlap "
                f"[{clash[0]}, {clash[1]}), already pointed at by another stream_datum of "
                f"stream_resource {resource['uid']!r}")
        self.store.insert_stream_datums([doc])
        seq_ranges.add(seq["start"], seq["stop"], doc["uid"])
        index_ranges.add(idx["start"], idx["stop"], doc["uid"])

    def _stream_resource(self, doc: Mapping) -> Mapping:
        uid = doc["stream_resource"]
        resource = self._stream_resources.get(uid)
        if resource is None:
            resource = self.store.get_stream_resource(uid)
            if resource is None:
                raise UnknownReferenceError(
                    f"stream_datum {_uid_of('stream_datum', doc)!r} refers to stream_resource "
                    f"{uid!r}, which is not stored; insert the stream_resource first")
            self._stream_resources[uid] = resource
        return resource

    def _ranges(self, run: str, stream: str, key: str, resource_uid: str
                ) -> tuple[Intervals, Intervals]:
        """The seq_num ranges of (run, stream, key) and index ranges of a stream_resource."""
        if (run, stream) not in self._loaded_streams:
            # First stream_datum of this stream seen by this inserter: learn what is stored.
            descs = [d for d in self.store.descriptors(run) if d.get("name", "primary") == stream]
            stored = self.store.stream_datums([d["uid"] for d in descs]) if descs else []
            keys = {}
            for sd in stored:
                sr_uid = sd["stream_resource"]
                if sr_uid not in keys:
                    sr = self._stream_resources.get(sr_uid) or self.store.get_stream_resource(sr_uid)
                    keys[sr_uid] = sr["data_key"] if sr else None
                self._seq_ranges.setdefault((run, stream, keys[sr_uid]), Intervals()).add(
                    sd["seq_nums"]["start"], sd["seq_nums"]["stop"], sd["uid"])
                self._index_ranges.setdefault(sr_uid, Intervals()).add(
                    sd["indices"]["start"], sd["indices"]["stop"], sd["uid"])
            self._loaded_streams.add((run, stream))
        return (self._seq_ranges.setdefault((run, stream, key), Intervals()),
                self._index_ranges.setdefault(resource_uid, Intervals()))

    def event(self, doc: Mapping) -> None:
        descriptor = doc.get("descriptor") if type(doc) is dict else None
        check = self._event_checks.get(descriptor) if isinstance(descriptor, str) else None
        page = check.page(doc) if check is not None else None
        if page is None:  # not certainly valid: the full validation decides
            _validate("event", doc)
            self._check_keys("event", doc, self._data_keys("event", doc, doc["descriptor"]))
            page = event_model.pack_event_page(doc)
            if "filled" not in doc:  # stored as given: a store that keeps filled keeps none
                del page["filled"]
        self.store.insert_event_page(page)

    def event_page(self, doc: Mapping) -> None:
        page = _validate_page("event_page", doc)
        self._check_page_lengths("event_page", doc, ("seq_num", "time", "uid"),
                                 ("data", "timestamps", "filled"))
        _check_unique("event_page", "event", doc["uid"], f"descriptor {doc['descriptor']!r}")
        self._check_keys("event_page", doc, self._data_keys("event_page", doc, doc["descriptor"]))
        self.store.insert_event_page(page)

    def datum(self, doc: Mapping) -> None:
        _validate("datum", doc)
        self._require_resource("datum", doc, doc["resource"])
        self.store.insert_datum_page(event_model.pack_datum_page(doc))

    def datum_page(self, doc: Mapping) -> None:
        _validate_page("datum_page", doc)
        self._check_page_lengths("datum_page", doc, ("datum_id",), ("datum_kwargs",))
        _check_unique("datum_page", "datum", doc["datum_id"], f"resource {doc['resource']!r}")
        self._require_resource("datum_page", doc, doc["resource"])
        self.store.insert_datum_page(doc)

    def bulk_events(self, doc: Mapping) -> None:
        _validate("bulk_events", doc)
        for events in doc.values():  # check every event (not just each page's first) first
            for event in events:
                self._check_keys("event", event, self._data_keys("event", event, event["descriptor"]))
                for field in ("time", "seq_num"):
                    check_int64("event", event["uid"], field, event[field])
        _check_unique("bulk_events", "event", (e["uid"] for events in doc.values() for e in events),
                      f"streams {sorted(doc)}")
        # All pages in one atomic write: a rejected bulk insert leaves nothing behind.
        self.store.insert_event_pages(event_model.bulk_events_to_event_pages(doc))

    def bulk_datum(self, doc: Mapping) -> None:
        _validate("bulk_datum", doc)
        _check_unique("bulk_datum", "datum", doc["datum_ids"], f"resource {doc['resource']!r}")
        self.datum_page(event_model.bulk_datum_to_datum_page(doc))

    # ------------------------------------------------------------- helpers
    def _require_resource(self, name: str, doc: Mapping, resource_uid: Any) -> None:
        if resource_uid in self._known_resources:
            return
        if not isinstance(resource_uid, str) or self.store.get_resource(resource_uid) is None:
            raise UnknownReferenceError(
                f"{name} {_uid_of(name, doc)!r} refers to resource {resource_uid!r}, which is "
                "not stored; insert the resource document first"
            )
        self._known_resources.add(resource_uid)

    @staticmethod
    def _check_page_lengths(name: str, doc: Mapping, flat: tuple, nested: tuple) -> None:
        lengths = {key: len(doc[key]) for key in flat}
        for part in nested:
            for field, column in doc.get(part, {}).items():
                lengths[f"{part}.{field}"] = len(column)
        if len(set(lengths.values())) > 1:
            raise PageLengthError(
                f"{name} {_uid_of(name, doc)!r}: columns have unequal lengths "
                f"({', '.join(f'{k}={v}' for k, v in lengths.items())}); every column of a "
                "page holds one value per row"
            )
