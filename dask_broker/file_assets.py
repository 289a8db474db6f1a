"""The documents whose files copy_files / move_files act on: resources and stream_resources.

An :class:`Asset` is one ``resource`` or ``stream_resource`` document seen as a
set of files under a *root* that a copy or move replaces:

- a resource: its ``root`` (``resource_path`` and each file's path below the
  root are kept); the root_map is applied to the root as a whole, as filling does;
- a stream_resource: the folder holding the last component of its ``uri``'s path
  (an HDF5 file ``/data/scan/det.h5`` has root ``/data/scan``; a TIFF directory
  ``/data/scan/tiffs/`` has root ``/data/scan`` and keeps its name and trailing
  ``/``); re-pointing rewrites ``uri`` in the same form (``file://localhost``...).
  The root_map applies to the uri's path as a prefix, as reading does.  A
  stream_resource in the pre-1.21 form keeps its location in ``root`` and
  ``resource_path``, like a resource.

Its files are those its handler lists (resource), or its reader's ``paths``
for the rows its stream_datum reach (stream_resource): for a multipart
mimetype, ``template.format(i)`` for each frame ``i`` below (largest
``indices.stop``) x (frames per row).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import HandlerError, InvalidArgumentError, MissingFileError, UnknownReferenceError
from .fill import resource_full_path
from .handlers.base import close_handler
from .header import Header
from .readers import normalize_stream_resource, remap_uri, uri_to_path
from .resource_updates import find_resource_document

__all__ = ["Asset", "assets_of", "remap_path"]


def remap_path(path: str, root_map: Mapping[str, str]) -> str:
    """``path`` through a root_map applied as a prefix (what reading does to a uri's path)."""
    if not root_map or not path.startswith("/"):
        return path
    return remap_uri(path, root_map)


def _uri_root(uri: str) -> str:
    """The folder holding the last component of the uri's path."""
    return os.path.dirname(uri_to_path(uri).rstrip("/")) or "/"


@dataclass
class Asset:
    """One resource or stream_resource document, as files under a root.

    Examples
    --------
    >>> sr = {"uid": "u", "mimetype": "application/x-hdf5",
    ...       "uri": "file://localhost/data/scan/det.h5", "parameters": {}}
    >>> asset = Asset("stream_resource", sr)
    >>> asset.root()
    '/data/scan'
    >>> asset.repoint("/archive")
    {'uri': 'file://localhost/archive/det.h5'}
    """

    kind: str  # "resource" or "stream_resource"
    doc: dict

    @property
    def uid(self) -> str:
        return self.doc["uid"]

    @property
    def label(self) -> str:
        """What the report shows: the spec, or the mimetype."""
        return str(self.doc.get("spec") or self.doc.get("mimetype"))

    @property
    def _by_uri(self) -> bool:
        return self.kind == "stream_resource" and "mimetype" in self.doc

    def root(self, doc: Mapping | None = None) -> str:
        """The root ``doc`` (by default this asset's document) points under, as stored."""
        doc = self.doc if doc is None else doc
        if self._by_uri:
            return _uri_root(doc["uri"]) if doc.get("uri") else ""
        return doc.get("root") or ""

    def mapped(self, root: str, root_map: Mapping[str, str]) -> str:
        """Where the folder ``root`` (as stored in the catalog) is on this machine."""
        if self.kind == "stream_resource":
            return remap_path(root, root_map)
        return root_map.get(root, root)

    def mapped_root(self, root_map: Mapping[str, str]) -> str:
        """Where this asset's root is on this machine (the folder its files are under)."""
        if self._by_uri:
            return os.path.dirname(self.location(root_map).rstrip("/")) or "/"
        return self.mapped(self.root(), root_map)

    def location(self, root_map: Mapping[str, str]) -> str:
        """The (root-mapped) path the document names: a file, a folder or a file-name prefix."""
        if self.kind == "resource":
            return resource_full_path(self.doc, root_map)
        doc = normalize_stream_resource(self.doc)
        return uri_to_path(remap_uri(doc["uri"], root_map))

    def repoint(self, new_root: str) -> dict:
        """The changes that put this asset under ``new_root`` (for ``update_resource``)."""
        if self._by_uri:
            return {"uri": remap_uri(self.doc["uri"], {self.root(): new_root})}
        return {"root": new_root}

    def run_uid(self, store: Any) -> str | None:
        """The run this asset belongs to (for a stream_resource without ``run_start``: the
        run of a descriptor its stream_datum name)."""
        if self.doc.get("run_start"):
            return self.doc["run_start"]
        if self.kind == "stream_resource":
            for sd in store.stream_datums_of_resource(self.uid):
                desc = store.get_descriptor(sd.get("descriptor") or "")
                if desc is not None:
                    return desc.get("run_start")
        return None

    # ------------------------------------------------------------ files
    def files(self, es: Any, *, root_map: Mapping[str, str] | None = None,
              descriptors: Mapping[str, Mapping] | None = None) -> list[str]:
        """The files the asset covers, at their (root-mapped) location, each once.

        ``root_map`` (default: ``es.root_map``) and ``descriptors`` (uid -> document,
        when the caller has read them, e.g. a :class:`~dask_broker.read.ReadPlan`;
        default: looked up in the store) are those of the caller's read.

        Raises
        ------
        MissingFileError, HandlerError
            A resource's handler cannot be opened or cannot list its files.
        ReaderNotFoundError
            No reader for a stream_resource's mimetype.
        """
        root_map = es.root_map if root_map is None else root_map
        files = (self._resource_files(es, root_map) if self.kind == "resource" else
                 self._stream_files(es, root_map, descriptors))
        return list(dict.fromkeys(files))

    def _resource_files(self, es: Any, root_map: Mapping[str, str]) -> list[str]:
        uid, spec = self.uid, self.doc.get("spec")
        handler_class = es.registry.lookup(spec)
        path = resource_full_path(self.doc, root_map)
        try:
            handler = handler_class(path, **(self.doc.get("resource_kwargs") or {}))
        except FileNotFoundError as err:
            raise MissingFileError(f"resource {uid!r} (spec {spec!r}): {path!r} is missing") \
                from err
        except Exception as err:
            raise HandlerError(f"handler {handler_class.__qualname__} (spec {spec!r}) raised "
                               f"{type(err).__name__}: {err} opening resource {uid!r}") from err
        try:
            get_file_list = getattr(handler, "get_file_list", None)
            if get_file_list is None:
                raise HandlerError(
                    f"handler {handler_class.__qualname__} (spec {spec!r}) of resource {uid!r} "
                    "has no get_file_list method, so its files cannot be listed, copied or moved")
            kwargs = [d.get("datum_kwargs") or {} for d in es.store.datum_of_resource(uid)]
            return [os.fspath(f) for f in get_file_list(kwargs)]
        finally:
            close_handler(handler, what=f"resource {uid!r}")

    def _stream_files(self, es: Any, root_map: Mapping[str, str],
                      descriptors: Mapping[str, Mapping] | None) -> list[str]:
        doc = normalize_stream_resource(self.doc)
        reader_class = es.readers.lookup(doc["mimetype"])
        path = self.location(root_map)
        parameters = doc.get("parameters") or {}
        n_entries = self._entries(es.store, doc, reader_class, path, parameters, descriptors)
        return [os.fspath(f) for f in reader_class.paths(path, parameters, n_entries)]

    def _entries(self, store: Any, doc: Mapping, reader_class: Any, path: str,
                 parameters: Mapping, descriptors: Mapping[str, Mapping] | None) -> int:
        """Entries of the dataset the stream_datum reach: largest ``indices.stop`` x frames
        per row (the rule the stream readers use, :func:`~dask_broker.stream_fill`)."""
        from .fill.stream import _entries_per_row, _Source

        datums = store.stream_datums_of_resource(self.uid)
        rows = max((int(sd["indices"]["stop"]) for sd in datums), default=0)
        if rows == 0:
            return 0
        explicit = parameters.get("multiplier", parameters.get("frame_per_point"))
        if isinstance(explicit, int) and explicit > 0:
            return rows * explicit
        desc_uid = datums[0].get("descriptor") or ""
        desc = (descriptors.get(desc_uid) if descriptors is not None
                else store.get_descriptor(desc_uid))
        key = doc.get("data_key")
        data_key = (desc or {}).get("data_keys", {}).get(key)
        if data_key is None:
            return rows  # no descriptor to say otherwise: one frame per row
        shape = tuple(data_key.get("shape") or ())
        chunks = parameters.get("chunk_shape")
        if isinstance(chunks, (list, tuple)) and chunks:
            ndim = len(chunks)
        else:
            reader = reader_class(path, parameters)
            try:
                ndim = len(reader.describe()[0])
            finally:
                reader.close()
        source = _Source(self.uid, doc["mimetype"], path, ())
        return rows * _entries_per_row(ndim, shape, parameters, source, key)


def assets_of(es: Any, target: Any) -> list[Asset]:
    """The (current) resources and stream_resources a target names, each once.

    ``target`` is a run's :class:`~dask_broker.Header`, a resource or
    stream_resource uid (or document), or a list of them.

    Raises
    ------
    UnknownReferenceError
        A uid names neither a resource nor a stream_resource.
    InvalidArgumentError
        Something else was given.
    """
    try:
        items = [target] if isinstance(target, (str, Header, Mapping)) else list(target)
    except TypeError:
        items = [target]  # not iterable: reported below
    store = es.store
    out: dict[str, Asset] = {}
    for item in items:
        if isinstance(item, Header):
            found = [Asset("resource", d) for d in es.resources(item)]
            if store.supports_stream_data:
                found += [Asset("stream_resource", d) for d in store.stream_resources(item.uid)]
        elif isinstance(item, (str, Mapping)):
            uid = item if isinstance(item, str) else item.get("uid")
            if not isinstance(uid, str):
                raise UnknownReferenceError(f"{item!r} has no uid; pass a Header or a uid")
            try:
                found = [Asset(*find_resource_document(store, uid))]
            except UnknownReferenceError as err:
                raise UnknownReferenceError(
                    f"{err}; to name a run, pass its Header (db[uid])") from err
        else:
            raise InvalidArgumentError(
                f"cannot find resources from {type(item).__name__} {item!r}: pass a Header, a "
                "resource or stream_resource uid, or a list of them")
        for asset in found:
            out.setdefault(asset.uid, asset)
    return list(out.values())
