"""Legacy documents: forms that databroker accepted and facilities' databases hold,
which event-model's schemas (1.24) now reject.

Insert validates every document against event-model's schema.  A document that
fails it is still accepted when it is one of :data:`LEGACY_FORMS` -- it lacks
only keys that the form allows to be missing, and is valid otherwise -- and it
is stored as given: no key is added (no default ``exit_status``, no ``root``) and
none is dropped.  So ``db.insert``, ``dask-broker ingest`` and ``db.export`` from
a MongoDB database take what databroker took, and every other document is
checked as strictly as before.

Forms event-model's schemas already accept, and that dask_broker stores as given
and reads: descriptors without ``object_keys``, ``configuration``, ``hints`` or
``name`` (stream ``"primary"``), events without ``filled``, resources without
``run_start`` (found through their datum).

Not accepted (a store needs them): a start without ``uid`` or ``time``, a stop
without ``uid``, ``run_start`` or ``time``, a resource without ``uid`` (a MongoDB
database's resources without ``uid`` are read with their ``_id`` as uid, so what
is copied from one has a uid), a datum without ``datum_id``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import event_model
import jsonschema

__all__ = ["LegacyForm", "LEGACY_FORMS", "legacy_form", "check_legacy"]


@dataclass(frozen=True)
class LegacyForm:
    """A document of ``name`` that lacks some of ``missing``, valid otherwise."""

    name: str
    missing: tuple[str, ...]
    description: str

    @cached_property
    def _validator(self) -> Any:
        schema = copy.deepcopy(
            event_model.schemas[event_model.DocumentNames[self.name]])
        _drop_required(schema, set(self.missing))
        cls = jsonschema.validators.validator_for(schema)
        return cls(schema)

    def applies(self, doc: Mapping) -> bool:
        """Whether ``doc`` lacks a key this form allows to be missing."""
        return any(key not in doc for key in self.missing)

    def error(self, doc: Mapping) -> jsonschema.ValidationError | None:
        """What makes ``doc`` (plain JSON values) invalid in this form (None: valid)."""
        return jsonschema.exceptions.best_match(self._validator.iter_errors(doc))


def _drop_required(schema: Any, keys: set[str]) -> None:
    """Remove ``keys`` from every ``required`` list of a JSON schema (in place)."""
    if isinstance(schema, dict):
        if isinstance(schema.get("required"), list):
            schema["required"] = [k for k in schema["required"] if k not in keys]
        for value in schema.values():
            _drop_required(value, keys)
    elif isinstance(schema, list):
        for value in schema:
            _drop_required(value, keys)


#: The legacy forms insert accepts, stored as given.
LEGACY_FORMS = (
    LegacyForm("stop", ("exit_status",),
               "a stop document without exit_status (metadatastore and databroker v0 "
               "stored such)"),
    LegacyForm("resource", ("root",),
               "a resource without root (filestore before root existed): its "
               "resource_path is the whole path"),
)


def legacy_form(name: str, doc: Mapping) -> LegacyForm | None:
    """The legacy form that the ``name`` document ``doc`` is, or None.

    Examples
    --------
    >>> legacy_form("stop", {"uid": "s", "run_start": "r", "time": 1.0}).missing
    ('exit_status',)
    >>> legacy_form("stop", {"uid": "s", "run_start": "r"}) is None   # no time: not legacy
    True
    """
    return check_legacy(name, doc)[0]


def check_legacy(name: str, doc: Mapping
                 ) -> tuple[LegacyForm | None, jsonschema.ValidationError | None]:
    """``(form, None)`` when ``doc`` is a legacy form of a ``name`` document; else
    ``(None, error)``, the error of a form that applies (it lacks a key the form allows
    to be missing, and has another fault), or ``(None, None)`` when no form applies."""
    found = None
    for form in LEGACY_FORMS:
        if form.name == name and form.applies(doc):
            found = form.error(doc)
            if found is None:
                return form, None
    return None, found
