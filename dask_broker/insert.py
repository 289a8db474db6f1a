"""Validation and routing of documents into a store (the DBEP's InsertEV).

:class:`Inserter` is a callable ``(name, doc)`` -- a valid RunEngine
subscriber.  Each document is checked against event-model's JSON schema and
against what is already stored (references, data keys, page shapes) *before*
anything is written, and the store writes each call atomically, so a rejected
document leaves the store unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import event_model
import jsonschema
import numpy as np

from .codec import to_jsonable
from .errors import (
    DataKeysMismatchError,
    DocumentValidationError,
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
    try:
        _VALIDATORS[_DocName[name]].validate(to_jsonable(dict(doc)))
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
        raise DocumentValidationError(
            f"{name} {_uid_of(name, doc)!r} violates the event-model schema at {where}: "
            f"{err.message}"
        ) from err


def _is_kind(column: Any, kinds: str) -> bool:
    try:
        arr = np.asarray(column)
    except (ValueError, TypeError):
        return False
    return arr.ndim == 1 and arr.dtype.kind in kinds


def _validate_page(name: str, doc: Any) -> None:
    """Schema-validate a page without walking every element in Python.

    The schema is checked on a one-row slice of the page (structure, required
    keys, types of the first row); the per-element type checks the schema would
    make on the flat columns are then done vectorized.  Anything unusual falls
    back to the full jsonschema validation, for its precise message.
    """
    if not isinstance(doc, Mapping):
        _validate(name, doc)
        return
    try:
        head = {k: (v[:1] if isinstance(v, (list, np.ndarray)) else
                    {f: c[:1] for f, c in v.items()} if isinstance(v, Mapping) else v)
                for k, v in doc.items()}
    except (TypeError, AttributeError):
        _validate(name, doc)
        return
    _validate(name, head)
    if name == "event_page":
        ok = (_is_kind(doc["seq_num"], "iu") and _is_kind(doc["time"], "fiu")
              and all(isinstance(u, str) for u in doc["uid"])
              and all(_is_kind(c, "fiu") for c in doc["timestamps"].values())
              and all(isinstance(c, (list, np.ndarray)) for c in doc["data"].values()))
    else:  # datum_page
        ok = (all(isinstance(d, str) for d in doc["datum_id"])
              and all(isinstance(c, (list, np.ndarray)) for c in doc["datum_kwargs"].values()))
    if not ok:
        _validate(name, doc)


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

    def __init__(self, store: Store):
        self.store = store
        self._descriptor_keys: dict[str, frozenset] = {}
        self._known_starts: set[str] = set()
        self._known_resources: set[str] = set()
        self._routes: dict[str, Callable[[Mapping], None]] = {
            "start": self.start, "stop": self.stop, "descriptor": self.descriptor,
            "event": self.event, "event_page": self.event_page,
            "resource": self.resource, "datum": self.datum, "datum_page": self.datum_page,
            "bulk_events": self.bulk_events, "bulkevent": self.bulk_events,
            "bulk_datum": self.bulk_datum, "bulkdatum": self.bulk_datum,
        }

    def __call__(self, name: str, doc: Mapping) -> None:
        try:
            route = self._routes[name]
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

    def _data_keys(self, name: str, doc: Mapping, descriptor_uid: Any) -> frozenset:
        keys = self._descriptor_keys.get(descriptor_uid)
        if keys is None:
            desc = self.store.get_descriptor(descriptor_uid) if isinstance(descriptor_uid, str) else None
            if desc is None:
                raise UnknownReferenceError(
                    f"{name} {_uid_of(name, doc)!r} refers to descriptor {descriptor_uid!r}, "
                    "which is not stored; insert the descriptor first"
                )
            keys = self._descriptor_keys[descriptor_uid] = frozenset(desc["data_keys"])
        return keys

    def _check_keys(self, name: str, doc: Mapping, expected: frozenset) -> None:
        for part in ("data", "timestamps"):
            got = set(doc[part])
            if got != expected:
                missing, extra = sorted(expected - got), sorted(got - expected)
                raise DataKeysMismatchError(
                    f"{name} {_uid_of(name, doc)!r}: its {part} keys do not match descriptor "
                    f"{doc['descriptor']!r} (missing {missing}, not in the descriptor {extra}); "
                    "an event must carry exactly its descriptor's data_keys"
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
        self._descriptor_keys[doc["uid"]] = frozenset(doc["data_keys"])

    def resource(self, doc: Mapping) -> None:
        _validate("resource", doc)
        if "run_start" in doc:
            self._require_start("resource", doc, doc["run_start"])
        self.store.insert_resource(doc)
        self._known_resources.add(doc["uid"])

    def event(self, doc: Mapping) -> None:
        _validate("event", doc)
        self._check_keys("event", doc, self._data_keys("event", doc, doc["descriptor"]))
        self.store.insert_event_page(event_model.pack_event_page(doc))

    def event_page(self, doc: Mapping) -> None:
        _validate_page("event_page", doc)
        self._check_page_lengths("event_page", doc, ("seq_num", "time", "uid"),
                                 ("data", "timestamps", "filled"))
        self._check_keys("event_page", doc, self._data_keys("event_page", doc, doc["descriptor"]))
        self.store.insert_event_page(doc)

    def datum(self, doc: Mapping) -> None:
        _validate("datum", doc)
        self._require_resource("datum", doc, doc["resource"])
        self.store.insert_datum_page(event_model.pack_datum_page(doc))

    def datum_page(self, doc: Mapping) -> None:
        _validate_page("datum_page", doc)
        self._check_page_lengths("datum_page", doc, ("datum_id",), ("datum_kwargs",))
        self._require_resource("datum_page", doc, doc["resource"])
        self.store.insert_datum_page(doc)

    def bulk_events(self, doc: Mapping) -> None:
        _validate("bulk_events", doc)
        for events in doc.values():  # check every event (not just each page's first) first
            for event in events:
                self._check_keys("event", event, self._data_keys("event", event, event["descriptor"]))
        # All pages in one atomic write: a rejected bulk insert leaves nothing behind.
        self.store.insert_event_pages(event_model.bulk_events_to_event_pages(doc))

    def bulk_datum(self, doc: Mapping) -> None:
        _validate("bulk_datum", doc)
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
