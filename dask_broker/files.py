"""List, copy and move the files that a catalog's resources and stream_resources point to.

:func:`copy_files` and :func:`move_files` relocate the files of resources and
stream_resources to a new root, keeping each file's path relative to the old
root (see :mod:`dask_broker.file_assets` for what the root of each kind is),
and re-point the documents (a resource's ``root``; a stream_resource's ``uri``,
in its ``file://localhost`` form, a directory keeping its trailing ``/``),
recording the change in the document's history.  A call first plans the whole
relocation and refuses, touching nothing, when two files would land on one
destination or a file would land on another file of the call.  It then works in
an order that is safe to interrupt anywhere:

1. for each document: copy each file to a temporary name next to its destination,
   fsync it, and rename it into place (a destination is either absent or complete);
2. verify each copy (size and checksum of what was read against what is on disk);
3. update the document, in one transaction with its history record;
4. for a move, once *every* document of the call points at its copies, delete
   each old file that no document of the catalog (of any run, however it writes
   the path: :mod:`dask_broker.file_users`) still points at, then remove the
   source folders below the old root that this left empty.

An interruption therefore never loses a file, the catalog always points at a
complete copy, and calling the same function again finishes the job: a
destination holding identical content is accepted, a document already under the
new root is skipped (a move then only deletes the old files it left behind).  A
destination holding *different* content is an error, never overwritten.  Two
processes copying or moving the same run of one catalog at once: the second gets
a :class:`~dask_broker.errors.FilesLockedError` (:mod:`dask_broker.file_lock`).

Examples
--------
>>> from dask_broker import Broker, move_files                 # doctest: +SKIP
>>> db = Broker.from_uri("sqlite:////data/catalog.db")          # doctest: +SKIP
>>> print(move_files(db, db[-1], "/mnt/archive", dry_run=True))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import DaskBrokerError, InvalidArgumentError, MissingFileError
from .file_assets import Asset, assets_of
from .file_lock import relocation_lock
from .file_report import FilesReport, ResourceReport
from .file_users import users_of
from .read.plan import ReadPlan
from .stores.roles import LIST_RESOURCES
from .stores.base import Store

__all__ = ["file_list", "copy_files", "move_files", "FilesReport", "ResourceReport"]

#: Bytes read and written at a time.
CHUNK_SIZE = 8 << 20
#: Suffix of the temporary name a file is copied to before it is renamed into place.
PARTIAL_SUFFIX = ".dask-broker-partial"


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


def _event_source(db: Any) -> Any:
    return getattr(db, "event_source", db)


def file_list(db: Any, target: Any) -> list[str]:
    """Every file the resources and stream_resources of ``target`` cover, where they are now.

    Parameters
    ----------
    db
        A :class:`~dask_broker.Broker` (or its EventSource).
    target
        A run's :class:`~dask_broker.Header`, a resource or stream_resource uid,
        or a list of them; or a :class:`~dask_broker.read.ReadPlan` made with
        ``fill=True``: the files its filling reads -- the run's resources and the
        stream's stream_resources that the plan holds, with its root_map and
        descriptors (none is read again).

    Returns
    -------
    list of str
        Paths (after the root_map), each once, in document order: resources
        first, then stream_resources (an HDF5 file; for a multipart TIFF/JPEG
        one, a file per frame that its stream_datum reach).

    Raises
    ------
    UnknownReferenceError
        A uid names neither a resource nor a stream_resource.
    InvalidArgumentError
        A ReadPlan made without ``fill=True`` (it reads no file).
    HandlerNotFoundError, HandlerError, ReaderNotFoundError
        No handler (reader) for a spec (mimetype), or the handler cannot list its files.

    Examples
    --------
    >>> from dask_broker import file_list
    >>> file_list(db, db[-1])                          # doctest: +SKIP
    ['/data/det_000.h5', '/data/spectrum_0001.npy']
    >>> file_list(db, db.event_source.plan(db[-1], "primary", fill=True))  # doctest: +SKIP
    ['/data/det_000.h5', '/data/spectrum_0001.npy']
    """
    es = _event_source(db)
    if isinstance(target, ReadPlan):
        return _plan_files(es, target)
    return list(dict.fromkeys(f for a in assets_of(es, target) for f in a.files(es)))


def _plan_files(es: Any, plan: ReadPlan) -> list[str]:
    """The files a plan's filling reads, from the documents it holds."""
    if not plan.fill:
        raise InvalidArgumentError(
            f"file_list: the {plan!r} was made without fill=True, so it reads no file; plan "
            f"the read with es.plan(h, {plan.stream_name!r}, fill=True), or pass the Header")
    assets = [Asset("resource", dict(d)) for d in (plan.recipe.resources if plan.recipe else ())]
    assets += [Asset("stream_resource", dict(d)) for d in plan.stream_resources]
    descriptors = {d["uid"]: d for d in plan.descriptors}
    root_map = dict(plan.root_map)
    return list(dict.fromkeys(f for a in assets for f in
                              a.files(es, root_map=root_map, descriptors=descriptors)))


# ---------------------------------------------------------------- planning
@dataclass
class _Plan:
    asset: Asset
    action: str  # "copy", "skip" or "clean"
    pairs: list[tuple[str, str]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # destinations that exist already
    old_root: str | None = None  # for "clean": the root the files were moved from
    source_root: str = ""  # the (root-mapped) folder the old files are under


def _norm(root: str) -> str:
    return os.path.normpath(root) if root else ""


def _what(asset: Asset) -> str:
    return f"{asset.kind} {asset.uid!r}"


def _relative(path: str, root: str, asset: Asset) -> str:
    rel = os.path.relpath(path, root)
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise InvalidArgumentError(
            f"file {path!r} of {_what(asset)} is not under its root {root!r}, "
            "so it cannot be placed under a new root")
    return rel


def _previous_root(es: Any, asset: Asset, new_root: str) -> str | None:
    """The root a copy/move to ``new_root`` came from (None if the files were not put there)."""
    if not es.store.supports_resource_updates:
        return None
    for record in reversed(es.store.resource_history(asset.uid)):
        if _norm(asset.root(record["new"])) == new_root:
            old = asset.root(record["old"])
            if record.get("cmd") in ("move_files", "copy_files") and old and _norm(old) != new_root:
                return old
            return None
    return None


def _plan(es: Any, asset: Asset, new_root: str, move: bool) -> _Plan:
    root = asset.root()
    if not root:
        raise InvalidArgumentError(
            f"resource {asset.uid!r} has no root (resource_path "
            f"{asset.doc.get('resource_path')!r}), so its files cannot be placed under a new "
            "root; give it a root first with update_resource(uid, root=..., resource_path=...)")
    mapped_root = asset.mapped_root(es.root_map)
    if _norm(root) == new_root:
        old_root = _previous_root(es, asset, new_root) if move else None
        if old_root is None:
            return _Plan(asset, "skip")
        source = asset.mapped(old_root, es.root_map)
        plan = _Plan(asset, "clean", old_root=old_root, source_root=source)
        for path in asset.files(es):
            old = os.path.join(source, _relative(path, mapped_root, asset))
            if os.path.lexists(old) and not _same_file(old, path):
                plan.pairs.append((old, path))
                plan.sizes.append(os.path.getsize(old))
        return plan if plan.pairs else _Plan(asset, "skip")
    plan = _Plan(asset, "copy", source_root=mapped_root)
    target = asset.mapped(new_root, es.root_map)
    for path in asset.files(es):
        dest = os.path.join(target, _relative(path, mapped_root, asset))
        try:
            size = os.path.getsize(path)
        except OSError as err:
            raise MissingFileError(
                f"{_what(asset)} ({asset.label}): file {path!r} cannot be read ({err}); nothing "
                "was copied") from err
        if os.path.lexists(dest):
            plan.present.add(dest)
        plan.pairs.append((path, dest))
        plan.sizes.append(size)
    return plan


def _file_keys(path: str) -> list[Any]:
    """What identifies a file: its real path, and ``(st_dev, st_ino)`` when it exists."""
    keys: list[Any] = [os.path.realpath(path)]
    with contextlib.suppress(OSError):
        st = os.stat(path)
        keys.append((st.st_dev, st.st_ino))
    return keys


def _check_plans(plans: list[_Plan], op: str) -> None:
    """Refuse, before anything is touched, a relocation that would overlay its own files."""
    copies = [p for p in plans if p.action == "copy"]
    dests: dict[str, str] = {}
    for plan in copies:
        for src, dest in plan.pairs:
            if dests.setdefault(os.path.normpath(dest), src) != src:
                raise InvalidArgumentError(
                    f"{dests[os.path.normpath(dest)]!r} and {src!r} would both be copied to "
                    f"{dest!r}; nothing was copied")
    sources: dict[Any, tuple[_Plan, str]] = {}
    for plan in copies:
        for src, _ in plan.pairs:
            for key in _file_keys(src):
                sources.setdefault(key, (plan, src))
    for plan in copies:
        for src, dest in plan.pairs:
            if _same_file(src, dest):
                continue
            hit = next((sources[k] for k in _file_keys(dest) if k in sources), None)
            if hit is not None:
                other, other_src = hit
                raise InvalidArgumentError(
                    f"{op} would copy {src!r} of {_what(plan.asset)} onto {dest!r}, which is "
                    f"{other_src!r}, a file of {_what(other.asset)} that this call relocates "
                    "too; nothing was copied. Choose a new root that is not inside the folders "
                    f"being relocated (here {plan.source_root!r})")
    for plan in copies:
        for src, dest in plan.pairs:
            if dest in plan.present and not _same_file(src, dest):
                _check_identical(src, dest)


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


def _delete(pairs: Iterable[tuple[str, str]], asset: Asset, check: bool) -> list[str]:
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
            f"{_what(asset)} now points at its new copy (nothing is lost), but "
            f"{len(failed)} old file(s) could not be deleted: {'; '.join(failed)}. Fix the cause "
            "and run the same move again to delete them")
    return deleted


def _remove_empty_dirs(deleted: Iterable[str], bound: str) -> list[str]:
    """Remove the folders of deleted files that are now empty, up to (not including) ``bound``."""
    bound = os.path.normpath(bound)
    removed: list[str] = []
    for path in deleted:
        folder = os.path.dirname(os.path.normpath(path))
        while folder != bound and folder.startswith(bound.rstrip(os.sep) + os.sep):
            try:
                os.rmdir(folder)  # only ever removes an empty folder
            except OSError:
                break
            removed.append(folder)
            folder = os.path.dirname(folder)
    return removed


def _delete_old_files(es: Any, plans: list[_Plan], report: FilesReport,
                      remove_empty_dirs: bool) -> None:
    """Phase 4: delete each old file nobody in the catalog points at now."""
    todo = [(p, e) for p, e in zip(plans, report.resources, strict=True)
            if p.action in ("copy", "clean")]
    old_files = [old for plan, _ in todo for old, _ in plan.pairs]
    if LIST_RESOURCES not in es.store.capabilities:
        for _, entry in todo:
            entry.note = (f"old files kept: {type(es.store).__name__} cannot list the "
                          "catalog's resources, so whether other runs use them is unknown")
        return
    users = users_of(es, old_files)  # every document as stored now, of any run
    for plan, entry in todo:
        entry.kept_for = sorted({u for old, _ in plan.pairs for u in users.get(old, ())})
        free = [(old, new) for old, new in plan.pairs if old not in users]
        entry.deleted = _delete(free, plan.asset, check=plan.action == "clean")
        if remove_empty_dirs:
            report.removed_dirs += _remove_empty_dirs(entry.deleted, plan.source_root)


def _progress_bar(progress: bool | None, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, file=sys.stderr)


def _relocate(db: Any, target: Any, new_root: Any, *, move: bool, verify: bool, dry_run: bool,
              progress: bool | None, remove_empty_dirs: bool = True) -> FilesReport:
    es = _event_source(db)
    op = "move_files" if move else "copy_files"
    new_root = _norm(os.path.abspath(os.fspath(new_root)))
    store = es.store
    if not dry_run and type(store).update_resource is Store.update_resource:
        raise NotImplementedError(
            f"{type(store).__name__} does not implement update_resource, so {op} cannot re-point "
            "resources; nothing was copied")
    assets = assets_of(es, target)
    lock = (contextlib.nullcontext() if dry_run else
            relocation_lock(store, {a.run_uid(store) or a.uid for a in assets}, op))
    with lock:
        if not dry_run:
            assets = assets_of(es, target)  # as stored now that no other relocation runs
        plans = [_plan(es, a, new_root, move) for a in assets]
        _check_plans(plans, op)
        report = _execute(es, plans, op, new_root, move=move, verify=verify, dry_run=dry_run,
                          progress=progress)
        if move and not dry_run:
            # Only once every document points at the new copies are old files deleted, so
            # a file shared by several documents is never deleted while one still uses it.
            _delete_old_files(es, plans, report, remove_empty_dirs)
    return report


def _execute(es: Any, plans: list[_Plan], op: str, new_root: str, *, move: bool, verify: bool,
             dry_run: bool, progress: bool | None) -> FilesReport:
    """Phases 1-3: every document gets complete, verified copies and is re-pointed."""
    report = FilesReport(op, new_root, dry_run)
    done = {"copy": "moved" if move else "copied", "skip": "skipped", "clean": "cleaned"}
    todo = sum(s for p in plans if p.action == "copy"
               for (_, d), s in zip(p.pairs, p.sizes, strict=True) if d not in p.present)
    n_files = sum(len(p.pairs) for p in plans if p.action == "copy")
    placed = 0
    with _progress_bar(False if dry_run else progress, todo, op) as bar:
        for plan in plans:
            asset = plan.asset
            entry = ResourceReport(asset.uid, asset.label, done[plan.action], list(plan.pairs),
                                   sum(plan.sizes))
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
                es.update_resource(asset.uid, cmd=op,
                                   cmd_kwargs={"new_root": new_root, "verify": verify},
                                   **asset.repoint(new_root))
    return report


def copy_files(db: Any, target: Any, new_root: str | os.PathLike, *, verify: bool = True,
               dry_run: bool = False, progress: bool | None = None) -> FilesReport:
    """Copy the files of resources and stream_resources under ``new_root`` and point them there.

    Each file keeps its path relative to the document's root: a resource's
    ``resource_path`` is unchanged and its ``root`` becomes ``new_root``; a
    stream_resource's ``uri`` keeps its last component (a file, or a directory
    with its trailing ``/``) and gets ``new_root`` before it.  The old files stay.
    Safe to interrupt and to call again: see :mod:`dask_broker.files`.

    Parameters
    ----------
    db
        A :class:`~dask_broker.Broker` (or its EventSource).
    target
        A run's :class:`~dask_broker.Header`, a resource or stream_resource uid,
        or a list of them.
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
        A resource has no root, a file is outside its root, or a file would be
        copied onto another file of the call (nothing was copied).
    FilesLockedError
        Another process is copying or moving the same run (nothing was copied).

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
               dry_run: bool = False, progress: bool | None = None,
               remove_empty_dirs: bool = True) -> FilesReport:
    """Move the files of resources and stream_resources under ``new_root`` and point them there.

    Like :func:`copy_files`, then, once every document of the call points at
    its verified copies, each old file is deleted unless a document of the
    catalog (of any run) still points at it, however that document writes the
    path (it is then kept and named in the report's ``kept_for``).  If deleting
    fails the documents still point at the complete copies; calling
    ``move_files`` again deletes the leftovers.  A second process moving or
    copying the same run meanwhile gets a :class:`~dask_broker.errors.FilesLockedError`.

    Parameters
    ----------
    db, target, new_root, verify, dry_run, progress
        As for :func:`copy_files`.
    remove_empty_dirs
        Remove the source folders (below each document's old root) that the
        deletions left empty.

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
                     progress=progress, remove_empty_dirs=remove_empty_dirs)
