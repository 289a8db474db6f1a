"""List, copy and move the files a catalog's resources point to.

:func:`copy_files` and :func:`move_files` relocate the files of resources to a
new root, keeping each file's path relative to the old root, and re-point the
resource documents (recording the change in the resource's history).  The work
is done in an order that is safe to interrupt anywhere:

1. for each resource: copy each file to a temporary name next to its destination,
   fsync it, and rename it into place (a destination is either absent or complete);
2. verify each copy (size and checksum of what was read against what is on disk);
3. update the resource document, in one transaction with its history record;
4. for a move, once *every* resource of the call points at its copies, delete
   the old files (so a file shared by several resources of the call is never
   deleted while one of them still points at it).

An interruption therefore never loses a file, the catalog always points at a
complete copy, and calling the same function again finishes the job: a
destination holding identical content is accepted, a resource already under the
new root is skipped (a move then only deletes the old files it left behind).  A
destination holding *different* content is an error, never overwritten.

Examples
--------
>>> from dask_broker import Broker, move_files                 # doctest: +SKIP
>>> db = Broker.from_uri("sqlite:////data/catalog.db")          # doctest: +SKIP
>>> print(move_files(db, db[-1], "/mnt/archive", dry_run=True))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import (
    DaskBrokerError,
    HandlerError,
    InvalidArgumentError,
    MissingFileError,
    UnknownReferenceError,
)
from .fill import resource_full_path
from .handlers.base import close_handler
from .header import Header
from .stores.base import Store

__all__ = ["file_list", "copy_files", "move_files", "FilesReport", "ResourceReport"]

#: Bytes read and written at a time.
CHUNK_SIZE = 8 << 20
#: Suffix of the temporary name a file is copied to before it is renamed into place.
PARTIAL_SUFFIX = ".dask-broker-partial"


# ---------------------------------------------------------------- report
def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass
class ResourceReport:
    """What was (or, in a dry run, would be) done to one resource.

    ``action`` is ``copied``, ``moved``, ``skipped`` (already under the new
    root), ``cleaned`` (already moved; old files left behind were deleted), or
    the same prefixed with ``would `` in a dry run.  ``files`` pairs each old
    path with its new path; ``bytes`` is their total size.
    """

    uid: str
    spec: str
    action: str
    files: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    #: uids of other resources that still point at the old files (which were kept)
    kept_for: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        n = len(self.files)
        kept = (f"; old files kept: resource(s) {', '.join(self.kept_for)} still use them"
                if self.kept_for else "")
        return (f"{self.action:<14} {self.spec:<10} {self.uid}  "
                f"{n} file{'s' if n != 1 else ''}, {_human(self.bytes)}{kept}")


@dataclass
class FilesReport:
    """The result of :func:`copy_files` / :func:`move_files`: one :class:`ResourceReport` each.

    Examples
    --------
    >>> report = FilesReport("move_files", "/new", dry_run=True)
    >>> print(report)
    move_files to '/new' (dry run): 0 resources, 0 files, 0 B
    """

    operation: str
    new_root: str
    dry_run: bool = False
    resources: list[ResourceReport] = field(default_factory=list)

    @property
    def files(self) -> list[tuple[str, str]]:
        """Every ``(old path, new path)`` pair."""
        return [pair for r in self.resources for pair in r.files]

    @property
    def bytes(self) -> int:
        """Total size of the files."""
        return sum(r.bytes for r in self.resources)

    def _summary(self) -> str:
        return (f"{self.operation} to {self.new_root!r}{' (dry run)' if self.dry_run else ''}: "
                f"{len(self.resources)} resources, {len(self.files)} files, {_human(self.bytes)}")

    def __str__(self) -> str:
        return "\n".join([self._summary(), *(f"  {r}" for r in self.resources)])

    def __repr__(self) -> str:
        return f"<FilesReport {self._summary()}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


# ---------------------------------------------------------------- file primitives
def _hasher():
    try:
        import xxhash

        return xxhash.xxh3_128()
    except ImportError:
        return hashlib.sha256()


def _digest(path: str) -> tuple[int, str]:
    """``(size, checksum)`` of a file's content."""
    h = _hasher()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_to(src: str, dest: str, progress: Any) -> tuple[int, str]:
    """Copy ``src`` to ``dest`` (created or truncated) and fsync it; return the source's digest."""
    h = _hasher()
    size = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(CHUNK_SIZE):
            fout.write(chunk)
            h.update(chunk)
            size += len(chunk)
            progress.update(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    try:
        shutil.copystat(src, dest)
    except OSError:
        pass  # permissions and times are a courtesy
    return size, h.hexdigest()


def _remove(path: str) -> None:
    os.remove(path)


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_identical(src: str, dest: str) -> None:
    """Raise unless the existing ``dest`` holds exactly the content of ``src``."""
    try:
        same = os.path.isfile(dest) and _digest(src) == _digest(dest)
    except OSError as err:
        raise DaskBrokerError(f"cannot compare {src!r} with {dest!r}: {err}") from err
    if not same:
        raise DaskBrokerError(
            f"{dest!r} already exists with content different from {src!r}; it was not "
            "overwritten. Remove or rename it, or choose another new_root")


# ---------------------------------------------------------------- resources and their files
def _event_source(db: Any) -> Any:
    return getattr(db, "event_source", db)


def _resources(es: Any, target: Any) -> list[dict]:
    """The (current) resource documents a target names, each once."""
    try:
        items = [target] if isinstance(target, (str, Header, Mapping)) else list(target)
    except TypeError:
        items = [target]  # not iterable: reported below
    out: dict[str, dict] = {}
    for item in items:
        if isinstance(item, Header):
            docs = es.resources(item)
        elif isinstance(item, (str, Mapping)):
            uid = item if isinstance(item, str) else item.get("uid")
            doc = es.store.get_resource(uid) if isinstance(uid, str) else None
            if doc is None:
                raise UnknownReferenceError(
                    f"no resource with uid {uid!r} in {es.store.display_uri}; to name a run, "
                    "pass its Header (db[uid])")
            docs = [doc]
        else:
            raise InvalidArgumentError(
                f"cannot find resources from {type(item).__name__} {item!r}: pass a Header, a "
                "resource uid, or a list of them")
        for doc in docs:
            out.setdefault(doc["uid"], doc)
    return list(out.values())


def _files_of(es: Any, resource: Mapping) -> list[str]:
    """The files the resource's handler says it covers, at its (root-mapped) location."""
    uid, spec = resource["uid"], resource.get("spec")
    handler_class = es.registry.lookup(spec)
    path = resource_full_path(resource, es.root_map)
    try:
        handler = handler_class(path, **(resource.get("resource_kwargs") or {}))
    except FileNotFoundError as err:
        raise MissingFileError(f"resource {uid!r} (spec {spec!r}): {path!r} is missing") from err
    except Exception as err:
        raise HandlerError(f"handler {handler_class.__qualname__} (spec {spec!r}) raised "
                           f"{type(err).__name__}: {err} opening resource {uid!r}") from err
    try:
        get_file_list = getattr(handler, "get_file_list", None)
        if get_file_list is None:
            raise HandlerError(
                f"handler {handler_class.__qualname__} (spec {spec!r}) of resource {uid!r} has "
                "no get_file_list method, so its files cannot be listed, copied or moved")
        kwargs = [d.get("datum_kwargs") or {} for d in es.store.datum_of_resource(uid)]
        files = [os.fspath(f) for f in get_file_list(kwargs)]
    finally:
        close_handler(handler, what=f"resource {uid!r}")
    return list(dict.fromkeys(files))


def file_list(db: Any, target: Any) -> list[str]:
    """Every file the resources of ``target`` cover, as the catalog locates them now.

    Parameters
    ----------
    db
        A :class:`~dask_broker.Broker` (or its EventSource).
    target
        A run's :class:`~dask_broker.Header`, a resource uid, or a list of them.

    Returns
    -------
    list of str
        Paths (after the root_map), each once, in resource order.

    Raises
    ------
    UnknownReferenceError
        A resource uid is not stored.
    HandlerNotFoundError, HandlerError
        No handler for a spec, or the handler cannot list its files.

    Examples
    --------
    >>> from dask_broker import file_list
    >>> file_list(db, db[-1])                          # doctest: +SKIP
    ['/data/det_000.h5', '/data/spectrum_0001.npy']
    """
    es = _event_source(db)
    return list(dict.fromkeys(f for r in _resources(es, target) for f in _files_of(es, r)))


# ---------------------------------------------------------------- planning
@dataclass
class _Plan:
    resource: dict
    action: str  # "copy", "skip" or "clean"
    pairs: list[tuple[str, str]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # destinations already holding the content
    old_root: str | None = None  # for "clean": the root the files were moved from


def _norm(root: str) -> str:
    return os.path.normpath(root) if root else ""


def _relative(path: str, root: str, resource: Mapping) -> str:
    rel = os.path.relpath(path, root)
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise InvalidArgumentError(
            f"file {path!r} of resource {resource['uid']!r} is not under its root {root!r}, "
            "so it cannot be placed under a new root")
    return rel


def _previous_root(es: Any, resource: Mapping, new_root: str) -> str | None:
    """The root a copy/move to ``new_root`` came from (None if the files were not put there)."""
    try:
        history = es.store.resource_history(resource["uid"])
    except NotImplementedError:
        return None
    for record in reversed(history):
        if _norm(record["new"].get("root") or "") == new_root:
            old = record["old"].get("root") or ""
            if record.get("cmd") in ("move_files", "copy_files") and old and _norm(old) != new_root:
                return old
            return None
    return None


def _plan(es: Any, resource: dict, new_root: str, move: bool) -> _Plan:
    root = resource.get("root") or ""
    if not root:
        raise InvalidArgumentError(
            f"resource {resource['uid']!r} has no root (resource_path "
            f"{resource.get('resource_path')!r}), so its files cannot be placed under a new "
            "root; give it a root first with update_resource(uid, root=..., resource_path=...)")
    mapped = lambda r: es.root_map.get(r, r)  # noqa: E731
    if _norm(root) == new_root:
        old_root = _previous_root(es, resource, new_root) if move else None
        if old_root is None:
            return _Plan(resource, "skip")
        plan = _Plan(resource, "clean", old_root=old_root)
        for path in _files_of(es, resource):
            old = os.path.join(mapped(old_root), _relative(path, mapped(root), resource))
            if os.path.lexists(old) and not _same_file(old, path):
                plan.pairs.append((old, path))
                plan.sizes.append(os.path.getsize(old))
        return plan if plan.pairs else _Plan(resource, "skip")
    plan = _Plan(resource, "copy")
    for path in _files_of(es, resource):
        dest = os.path.join(mapped(new_root), _relative(path, mapped(root), resource))
        try:
            size = os.path.getsize(path)
        except OSError as err:
            raise MissingFileError(
                f"resource {resource['uid']!r} (spec {resource.get('spec')!r}): file {path!r} "
                f"cannot be read ({err}); nothing was copied") from err
        if os.path.lexists(dest):
            if not _same_file(path, dest):
                _check_identical(path, dest)
            plan.present.add(dest)
        plan.pairs.append((path, dest))
        plan.sizes.append(size)
    return plan


# ---------------------------------------------------------------- execution
def _place(src: str, dest: str, verify: bool, progress: Any) -> None:
    """Put a complete, verified copy of ``src`` at ``dest`` (accepting an identical one there)."""
    if os.path.lexists(dest):
        if not _same_file(src, dest):
            _check_identical(src, dest)
        return
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    partial = dest + PARTIAL_SUFFIX
    try:
        size, digest = _copy_to(src, partial, progress)
    except BaseException:
        _discard(partial)
        raise
    if os.path.lexists(dest):  # appeared meanwhile: never overwrite
        _discard(partial)
        _check_identical(src, dest)
        return
    os.replace(partial, dest)
    _fsync_dir(os.path.dirname(dest) or ".")
    got = _digest(dest) if verify else (os.path.getsize(dest), digest)
    if got != (size, digest):
        _discard(dest)  # our own bad copy: removed so that a re-run copies again
        raise DaskBrokerError(
            f"verification of the copy of {src!r} at {dest!r} failed (size, checksum "
            f"{got} != {(size, digest)}); the copy was removed, the source is untouched")


def _delete(pairs: Iterable[tuple[str, str]], resource: Mapping, check: bool) -> list[str]:
    """Delete each old file (after checking it matches its new copy if ``check``)."""
    deleted, failed = [], []
    for old, new in pairs:
        if not os.path.lexists(old) or _same_file(old, new):
            continue
        try:
            if check:
                _check_identical(old, new)
            _remove(old)
        except FileNotFoundError:
            continue
        except (OSError, DaskBrokerError) as err:
            failed.append(f"{old!r} ({err})")
            continue
        deleted.append(old)
    if failed:
        raise DaskBrokerError(
            f"resource {resource['uid']!r} now points at its new copy (nothing is lost), but "
            f"{len(failed)} old file(s) could not be deleted: {'; '.join(failed)}. Fix the cause "
            "and run the same move again to delete them")
    return deleted


def _other_users(store: Store, plan: _Plan, moved: set[str]) -> list[str]:
    """Uids of resources not in ``moved`` that still point at this plan's old files."""
    res = plan.resource
    old_root = plan.old_root if plan.old_root is not None else res.get("root")
    try:
        users = store.find_resources(root=old_root, resource_path=res.get("resource_path"))
    except NotImplementedError:
        return []  # the store cannot tell; as before, the files go
    return [r["uid"] for r in users if r.get("uid") not in moved]


def _progress_bar(progress: bool | None, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, file=sys.stderr)


def _relocate(db: Any, target: Any, new_root: Any, *, move: bool, verify: bool, dry_run: bool,
              progress: bool | None) -> FilesReport:
    es = _event_source(db)
    op = "move_files" if move else "copy_files"
    new_root = _norm(os.path.abspath(os.fspath(new_root)))
    store = es.store
    if not dry_run and type(store).update_resource is Store.update_resource:
        raise NotImplementedError(
            f"{type(store).__name__} does not implement update_resource, so {op} cannot re-point "
            "resources; nothing was copied")
    plans = [_plan(es, r, new_root, move) for r in _resources(es, target)]
    dests: dict[str, str] = {}
    for plan in plans:
        for src, dest in plan.pairs if plan.action == "copy" else ():
            if dests.setdefault(dest, src) != src:
                raise InvalidArgumentError(
                    f"{dests[dest]!r} and {src!r} would both be copied to {dest!r}; nothing "
                    "was copied")
    report = FilesReport(op, new_root, dry_run)
    done = {"copy": "moved" if move else "copied", "skip": "skipped", "clean": "cleaned"}
    todo = sum(s for p in plans if p.action == "copy"
               for (_, d), s in zip(p.pairs, p.sizes, strict=True) if d not in p.present)
    n_files = sum(len(p.pairs) for p in plans if p.action == "copy")
    bar = _progress_bar(False if dry_run else progress, todo, op)
    placed = 0
    with bar:
        # Phase 1: every resource gets complete, verified copies and is re-pointed.
        for plan in plans:
            res = plan.resource
            entry = ResourceReport(res["uid"], str(res.get("spec")), done[plan.action],
                                   list(plan.pairs), sum(plan.sizes))
            report.resources.append(entry)
            if dry_run:
                verb = ("move" if move else "copy") if plan.action == "copy" else plan.action
                entry.action = f"would {verb}"
                continue
            if plan.action == "copy":
                for src, dest in plan.pairs:
                    _place(src, dest, verify, bar)
                    placed += 1
                    bar.set_postfix_str(f"{placed}/{n_files} files", refresh=False)
                es.update_resource(res["uid"], root=new_root, cmd=op,
                                   cmd_kwargs={"new_root": new_root, "verify": verify})
        # Phase 2 (a move): only once every resource points at the new copies are old
        # files deleted, so a file shared by several resources is never deleted while
        # one of them still points at it.
        if move and not dry_run:
            moved = {p.resource["uid"] for p in plans}
            for plan, entry in zip(plans, report.resources, strict=True):
                if plan.action not in ("copy", "clean"):
                    continue
                # Resources outside this call (other runs) may point at the same files.
                entry.kept_for = _other_users(store, plan, moved)
                if not entry.kept_for:
                    entry.deleted = _delete(plan.pairs, plan.resource,
                                            check=plan.action == "clean")
    return report


def copy_files(db: Any, target: Any, new_root: str | os.PathLike, *, verify: bool = True,
               dry_run: bool = False, progress: bool | None = None) -> FilesReport:
    """Copy the files of resources under ``new_root`` and point the resources at the copies.

    Each file keeps its path relative to the resource's root (``resource_path``
    is unchanged; ``root`` becomes ``new_root``).  The old files stay.  Safe to
    interrupt and to call again: see :mod:`dask_broker.files`.

    Parameters
    ----------
    db
        A :class:`~dask_broker.Broker` (or its EventSource).
    target
        A run's :class:`~dask_broker.Header`, a resource uid, or a list of them.
    new_root
        The folder the files go under (made absolute).
    verify
        Re-read each copy and compare its checksum with the source's (else
        only sizes are compared).  Existing destinations are always compared.
    dry_run
        Only report what would be done; nothing is written.
    progress
        Show a progress bar on stderr (None: if stderr is a terminal).

    Returns
    -------
    FilesReport
        Per resource: its files, their size and the action taken.

    Raises
    ------
    DaskBrokerError
        A destination holds different content, or a copy failed verification.
    MissingFileError
        A file of a resource is missing (nothing was copied).
    InvalidArgumentError
        A resource has no root, or a file is outside its root.

    Examples
    --------
    >>> from dask_broker import copy_files
    >>> report = copy_files(db, db[-1], "/mnt/archive")   # doctest: +SKIP
    >>> print(report)                                     # doctest: +SKIP
    copy_files to '/mnt/archive': 3 resources, 3 files, 1.2 MiB
      copied         AD_HDF5    0b6e...  1 file, 1.1 MiB
    """
    return _relocate(db, target, new_root, move=False, verify=verify, dry_run=dry_run,
                     progress=progress)


def move_files(db: Any, target: Any, new_root: str | os.PathLike, *, verify: bool = True,
               dry_run: bool = False, progress: bool | None = None) -> FilesReport:
    """Move the files of resources under ``new_root`` and point the resources at them.

    Like :func:`copy_files`, then each old file is deleted once its resource
    points at the verified copy.  If deleting fails the resource still points at
    the complete copy; calling ``move_files`` again deletes the leftovers.

    Parameters
    ----------
    db, target, new_root, verify, dry_run, progress
        As for :func:`copy_files`.

    Returns
    -------
    FilesReport
        Per resource: its files, their size, the action and the deleted files.

    Raises
    ------
    DaskBrokerError
        As for :func:`copy_files`; also when old files could not be deleted.

    Examples
    --------
    >>> from dask_broker import move_files
    >>> print(move_files(db, db[-1], "/mnt/archive", dry_run=True))  # doctest: +SKIP
    move_files to '/mnt/archive' (dry run): 3 resources, 3 files, 1.2 MiB
      would move     AD_HDF5    0b6e...  1 file, 1.1 MiB
    """
    return _relocate(db, target, new_root, move=True, verify=verify, dry_run=dry_run,
                     progress=progress)
