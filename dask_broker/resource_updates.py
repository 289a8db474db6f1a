"""Which document a resource uid names, and which of its keys an update may change.

:meth:`~dask_broker.EventSource.update_resource` re-points a ``resource``
(``root``, ``resource_path``, ``resource_kwargs``, ``spec``) or a
``stream_resource`` (``uri``, ``mimetype``, ``parameters``; a stream_resource
still in the pre-1.21 form -- ``spec``, ``root``, ``resource_path`` -- keeps its
location in those keys, so it takes the resource keys).  The keys that identify
a document (``uid``, ``run_start``, a stream_resource's ``data_key``) never change.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import InvalidArgumentError, UnknownReferenceError
from .readers import uri_to_path

__all__ = ["RESOURCE_KEYS", "STREAM_RESOURCE_KEYS", "find_resource_document", "updatable_keys",
           "check_resource_update"]

#: The keys of a resource (or pre-1.21 stream_resource) an update may change.
RESOURCE_KEYS = ("root", "resource_path", "resource_kwargs", "spec")
#: The keys of a stream_resource an update may change.
STREAM_RESOURCE_KEYS = ("uri", "mimetype", "parameters")
_IDENTITY = {"resource": ("uid", "run_start"),
             "stream_resource": ("uid", "run_start", "data_key")}


def find_resource_document(store: Any, uid: str) -> tuple[str, dict]:
    """``("resource", doc)`` or ``("stream_resource", doc)`` for ``uid``.

    Raises
    ------
    UnknownReferenceError
        Neither a resource nor a stream_resource has this uid.

    Examples
    --------
    >>> kind, doc = find_resource_document(db.store, sr_uid)  # doctest: +SKIP
    >>> kind                                                 # doctest: +SKIP
    'stream_resource'
    """
    doc = store.get_resource(uid)
    if doc is not None:
        return "resource", doc
    if getattr(store, "supports_stream_data", False):
        doc = store.get_stream_resource(uid)
        if doc is not None:
            return "stream_resource", doc
    raise UnknownReferenceError(f"no resource or stream_resource with uid {uid!r} in {store.display_uri}")


def updatable_keys(kind: str, doc: Mapping) -> tuple[str, ...]:
    """The keys of this document that :meth:`~dask_broker.EventSource.update_resource` may change.

    Examples
    --------
    >>> updatable_keys("stream_resource", {"mimetype": "application/x-hdf5"})
    ('uri', 'mimetype', 'parameters')
    >>> updatable_keys("stream_resource", {"spec": "AD_HDF5", "root": "/d"})
    ('root', 'resource_path', 'resource_kwargs', 'spec')
    """
    if kind == "stream_resource" and "mimetype" in doc:
        return STREAM_RESOURCE_KEYS
    return RESOURCE_KEYS


def _check_value(kind: str, uid: str, key: str, value: Any) -> None:
    wanted = dict if key in ("resource_kwargs", "parameters") else str
    non_empty = key in ("spec", "mimetype", "uri")
    if not isinstance(value, wanted) or (non_empty and not value):
        raise InvalidArgumentError(
            f"{kind} {uid!r}: {key} must be a {'non-empty ' if non_empty else ''}"
            f"{wanted.__name__}, got {value!r}")
    if key == "uri":
        try:
            uri_to_path(value)
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"stream_resource {uid!r}: {err}") from err


def check_resource_update(kind: str, doc: Mapping, changes: Mapping) -> None:
    """Refuse an update that changes a key it may not, changes nothing, or has a bad value.

    Raises
    ------
    InvalidArgumentError
        The message names the document, the refused key and the keys that may change.

    Examples
    --------
    >>> check_resource_update("stream_resource", {"uid": "u", "mimetype": "m"},
    ...                       {"uri": "file://localhost/archive/det.h5"})
    >>> try:
    ...     check_resource_update("stream_resource", {"uid": "u", "mimetype": "m"},
    ...                           {"data_key": "x"})
    ... except InvalidArgumentError as err:
    ...     print(err)
    cannot update 'data_key' of stream_resource 'u': only uri, mimetype, parameters may change (uid, run_start, data_key identify it)
    """
    uid = doc.get("uid")
    allowed = updatable_keys(kind, doc)
    bad = [k for k in changes if k not in allowed]
    if bad:
        legacy = " (a pre-1.21 stream_resource: spec, root, resource_path)" \
            if kind == "stream_resource" and allowed is RESOURCE_KEYS else ""
        raise InvalidArgumentError(
            f"cannot update {', '.join(map(repr, bad))} of {kind} {uid!r}{legacy}: only "
            f"{', '.join(allowed)} may change ({', '.join(_IDENTITY[kind])} identify it)")
    if not changes:
        raise InvalidArgumentError(
            f"update_resource({uid!r}) got no change; pass some of {', '.join(allowed)}")
    for key, value in changes.items():
        _check_value(kind, uid, key, value)
