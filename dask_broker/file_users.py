"""Which documents of a catalog still point at a file: asked before a move deletes it.

Two paths name the same file when their real paths (symlinks resolved,
normalized) are equal, or when both exist with the same ``(st_dev, st_ino)``.
So ``root="/d/"`` and ``"/d"``, a legacy ``root=""`` with an absolute
``resource_path``, a file split differently between ``root`` and
``resource_path``, and a symlinked (or bind-mounted) folder are all recognised.

Every resource and stream_resource of the catalog is looked at, but cheaply: its
*location* (``root`` + ``resource_path``, or the uri's path, root-mapped) is
compared with the files by folder, with one ``realpath`` / ``stat`` per distinct
folder (so a symlink that is the *last* component of a location is followed only
when it sits in the folder of one of the files or in that folder's parent).  Only
a document whose location is a folder or file-name prefix that could hold one of
the files has its files listed (its handler or reader, which reads its datum); a
document whose files cannot be listed counts as a user (nothing is deleted on a
guess).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Iterable, Iterator

from .file_assets import Asset

__all__ = ["users_of"]

_Ident = tuple[int, int]


def _ident(path: str) -> _Ident | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Files:
    """The files asked about, indexed by real path, identity, folder and ancestor folder."""

    def __init__(self, paths: Iterable[str]):
        self.by_real: dict[str, set[str]] = defaultdict(set)
        self.by_ident: dict[_Ident, set[str]] = defaultdict(set)
        self.by_dir_real: dict[str, set[str]] = defaultdict(set)
        self.by_dir_ident: dict[_Ident, set[str]] = defaultdict(set)
        self.by_ancestor: dict[str, set[str]] = defaultdict(set)
        self.parent_dir_ident: dict[_Ident, set[str]] = defaultdict(set)
        self.paths: list[str] = []
        for path in dict.fromkeys(paths):
            ident = _ident(path)
            if ident is None:
                continue  # nothing to delete there
            self.paths.append(path)
            real = os.path.realpath(path)
            folder = os.path.dirname(real)
            self.by_real[real].add(path)
            self.by_ident[ident].add(path)
            self.by_dir_real[folder].add(path)
            folder_ident = _ident(folder)
            if folder_ident is not None:
                self.by_dir_ident[folder_ident].add(path)
            grand = _ident(os.path.dirname(folder))
            if grand is not None:
                self.parent_dir_ident[grand].add(path)
            ancestor = folder
            while True:
                self.by_ancestor[ancestor].add(path)
                up = os.path.dirname(ancestor)
                if up == ancestor:
                    break
                ancestor = up

    def same(self, path: str) -> set[str]:
        """The files asked about that ``path`` is."""
        found = set(self.by_real.get(os.path.realpath(path), ()))
        ident = _ident(path)
        if ident is not None:
            found |= self.by_ident.get(ident, set())
        return found


class _Folders:
    """``realpath`` and identity of folders, each looked up once."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, _Ident | None]] = {}

    def __call__(self, folder: str) -> tuple[str, _Ident | None]:
        if folder not in self._cache:
            self._cache[folder] = (os.path.realpath(folder), _ident(folder))
        return self._cache[folder]


def _match(location: str, files: _Files, folders: _Folders) -> tuple[set[str], set[str]]:
    """``(files the location is, files it may hold)``, from the location alone."""
    stripped = location.rstrip("/") or "/"
    folder, name = os.path.split(stripped)
    real_folder, folder_ident = folders(folder or ".")
    beside = set(files.by_dir_real.get(real_folder, ()))
    if folder_ident is not None:
        beside |= files.by_dir_ident.get(folder_ident, set())
    exact, maybe = set(), set()
    if beside and not location.endswith("/"):
        ident = _ident(stripped)  # a symlink to one of the files, beside it
        if ident is not None:
            exact |= files.by_ident.get(ident, set())
    for path in beside:
        base = os.path.basename(path)
        if base == name and not location.endswith("/"):
            exact.add(path)
        elif name and base.startswith(name):
            maybe.add(path)  # a file-name prefix (NPY_SEQ, multipart without a folder)
    real = os.path.join(real_folder, name)
    maybe |= files.by_ancestor.get(real, set())  # a folder holding them
    if folder_ident is not None and folder_ident in files.parent_dir_ident:
        ident = _ident(stripped)  # a folder reached another way (bind mount)
        if ident is not None:
            maybe |= files.by_dir_ident.get(ident, set())
    return exact, maybe - exact


def _catalog(es: Any) -> Iterator[Asset]:
    store = es.store
    for doc in store.iter_resources():
        yield Asset("resource", doc)
    if store.supports_stream_data:
        for doc in store.iter_stream_resources():
            yield Asset("stream_resource", doc)


def users_of(es: Any, paths: Iterable[str]) -> dict[str, list[str]]:
    """The uids of the resources and stream_resources (of any run) that point at each file.

    Documents are read as they are stored now, so a document a move has
    re-pointed already no longer counts for its old files.

    Parameters
    ----------
    es
        The EventSource (its store, handler and reader registries, root_map).
    paths
        Files about to be deleted; those that do not exist are left out.

    Returns
    -------
    dict
        ``{path: [uid, ...]}`` for each file someone points at (others are absent).

    Raises
    ------
    NotImplementedError
        The store cannot list all its resources (so nobody can tell).

    Examples
    --------
    >>> users_of(db.event_source, ["/data/shared.h5"])  # doctest: +SKIP
    {'/data/shared.h5': ['0b6e...']}
    """
    files = _Files(paths)
    out: dict[str, list[str]] = defaultdict(list)
    if not files.paths:
        return {}
    folders = _Folders()
    for asset in _catalog(es):
        try:
            location = asset.location(es.root_map)
        except Exception:  # noqa: BLE001 - a document naming no local file points at none
            continue
        exact, maybe = _match(location, files, folders)
        if maybe:
            try:
                listed = asset.files(es)
            except Exception:  # noqa: BLE001 - cannot tell: count it as a user
                exact |= maybe
            else:
                for path in listed:
                    exact |= files.same(path) & maybe
        for path in exact:
            out[path].append(asset.uid)
    return dict(out)
