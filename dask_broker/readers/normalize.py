"""Upgrade a pre-1.21 stream_resource (``spec``, ``root``, ``resource_path``) to the modern form.

event-model 1.19-1.20 wrote ``spec``, ``root``, ``resource_path`` and
``resource_kwargs``; 1.21 replaced them by ``mimetype``, ``uri`` and
``parameters``.  :func:`normalize_stream_resource` converts the old form as
bluesky-tiled-plugins' ``RunNormalizer`` does, so readers only ever see the new one.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..errors import DocumentValidationError
from .uri import path_to_uri

__all__ = ["SPEC_TO_MIMETYPE", "DEFAULT_MIMETYPE", "normalize_stream_resource"]

HDF5 = "application/x-hdf5"
#: Old ``spec`` -> mimetype (any other spec becomes :data:`DEFAULT_MIMETYPE`).
SPEC_TO_MIMETYPE: dict[str, str] = {
    "HDF5": HDF5,
    "AD_HDF5": HDF5,
    "AD_HDF5_SINGLE": HDF5,
    "AD_HDF5_SWMR": HDF5,
    "AD_HDF5_SWMR_STREAM": HDF5,
    "AD_HDF5_SWMR_SLICE": HDF5,
    "AD_TIFF": "multipart/related;type=image/tiff",
    "NPY_SEQ": "multipart/related;type=application/x-npy",
}
#: The mimetype of a spec missing from :data:`SPEC_TO_MIMETYPE`.
DEFAULT_MIMETYPE = "application/octet-stream"

_LEGACY_KEYS = ("spec", "root", "resource_path", "resource_kwargs", "path_semantics",
                "stream_names")
_AD_HDF5_DATASET = "/entry/data/data"
# ophyd.sim's NPY_SEQ writes <resource path>_<i>.npy, i counting from 0.
_NPY_SEQ_TEMPLATE = "_{:d}.npy"


def _spec_dataset(spec: str) -> str | None:
    if spec.startswith("AD_HDF5") or spec == "HDF5":
        return _AD_HDF5_DATASET
    return None


def normalize_stream_resource(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The stream_resource ``doc`` in the modern (event-model >= 1.21) form.

    A modern document (it has a ``mimetype``) is returned as a shallow copy.
    An old one gets

    - ``mimetype`` from its ``spec`` (:data:`SPEC_TO_MIMETYPE`, else
      :data:`DEFAULT_MIMETYPE`);
    - ``uri = "file://localhost" + os.path.join(root, resource_path)``
      (percent-encoded, so :func:`~dask_broker.readers.uri_to_path` gives the path back);
    - ``parameters = {**resource_kwargs, "spec": spec}``, with ``frame_per_point``
      renamed ``multiplier``; an HDF5 ``path`` becomes ``dataset``; ``dataset``
      defaults to ``/entry/data/data`` for ``AD_HDF5*`` and ``HDF5``; ``NPY_SEQ``
      gets the ``template`` ``"_{:d}.npy"`` of ophyd.sim's files.

    The old keys (``spec``, ``root``, ``resource_path``, ``resource_kwargs``,
    ``path_semantics``, ``stream_names``) are dropped; ``uid``, ``data_key``,
    ``run_start`` and any other key are kept.  ``doc`` is not modified.

    Raises
    ------
    DocumentValidationError
        An old-form document lacks ``spec``, ``root`` or ``resource_path``.

    Examples
    --------
    >>> old = {"uid": "u1", "data_key": "det", "spec": "AD_HDF5", "root": "/data",
    ...        "resource_path": "scan/det.h5", "resource_kwargs": {"frame_per_point": 2}}
    >>> new = normalize_stream_resource(old)
    >>> new["mimetype"], new["uri"]
    ('application/x-hdf5', 'file://localhost/data/scan/det.h5')
    >>> new["parameters"]
    {'multiplier': 2, 'spec': 'AD_HDF5', 'dataset': '/entry/data/data'}
    """
    out = dict(doc)
    if "mimetype" in doc:
        return out
    missing = [key for key in ("spec", "root", "resource_path") if key not in doc]
    if missing:
        raise DocumentValidationError(
            f"stream_resource {doc.get('uid')!r} has no 'mimetype' and lacks {missing} of the "
            f"pre-1.21 form (spec, root, resource_path, resource_kwargs); cannot tell how to "
            f"read it"
        )
    spec = doc["spec"]
    mimetype = SPEC_TO_MIMETYPE.get(spec, DEFAULT_MIMETYPE)
    parameters = dict(doc.get("resource_kwargs") or {})
    if "frame_per_point" in parameters:
        parameters["multiplier"] = parameters.pop("frame_per_point")
    parameters["spec"] = spec
    if mimetype == HDF5:
        if "dataset" not in parameters and "path" in parameters:
            parameters["dataset"] = parameters.pop("path")
        default = _spec_dataset(spec)
        if default is not None:
            parameters.setdefault("dataset", default)
    if spec == "NPY_SEQ":
        parameters.setdefault("template", _NPY_SEQ_TEMPLATE)
    path = os.path.join(doc["root"] or "/", doc["resource_path"])
    if not path.startswith("/"):
        path = "/" + path
    for key in _LEGACY_KEYS:
        out.pop(key, None)
    out.update(mimetype=mimetype, uri=path_to_uri(path), parameters=parameters)
    return out
