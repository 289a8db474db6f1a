"""Insert documents saved by suitcase (msgpack, jsonl) into a catalog, batched into pages.

Both formats hold ``(name, doc)`` pairs, one run per file, as databroker v1's
temporary and file-based catalogs write them:

- ``.msgpack`` (suitcase-msgpack): concatenated msgpack arrays ``[name, doc]``;
  numpy arrays and scalars are encoded as msgpack-numpy does
  (``{b"nd": ..., b"type": ..., b"shape": ..., b"data": ...}``);
- ``.jsonl`` (suitcase-jsonl): one JSON array ``[name, doc]`` per line.

:func:`read_documents` reads one file; :func:`ingest` inserts files into a
catalog, consecutive events of one descriptor (datum of one resource) as one
page of up to :data:`BATCH` rows -- one validated, atomic insert instead of one
per document (:mod:`~dask_broker.ingest_batch`) -- and is what ``dask-broker
ingest`` runs.  In a ``.msgpack`` file, runs of events laid out alike are read a
column at a time (:mod:`~dask_broker.msgpack_rows`); ``.jsonl`` lines are
decoded by msgspec.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import DaskBrokerError, DuplicateUidError
from .ingest_batch import BATCH, PageBatcher
from .msgpack_rows import Rows, layout_of, read_rows

__all__ = ["IngestError", "IngestReport", "SUFFIXES", "read_documents", "find_files", "ingest"]

SUFFIXES = (".msgpack", ".jsonl")
#: How many documents are read between two updates of the progress callback.
_PROGRESS_EVERY = 4096


class IngestError(DaskBrokerError, ValueError):
    """A file cannot be read as saved documents, or one of its documents is rejected."""


# ------------------------------------------------------------------ reading
def _decode_numpy(obj: dict) -> Any:
    """msgpack-numpy's encoding of numpy arrays and scalars, decoded without pickle."""
    if b"nd" in obj and b"type" in obj and b"data" in obj:
        kind = obj.get(b"kind", b"")
        if kind == b"O":
            raise IngestError("an object-dtype numpy array is stored pickled; refusing to "
                              "unpickle it")
        descr = obj[b"type"]
        if kind == b"V":
            descr = [tuple(t.decode() if isinstance(t, bytes) else t for t in d) for d in descr]
        dtype = np.dtype(descr)
        if obj[b"nd"] is True:
            return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"]).copy()
        return np.frombuffer(obj[b"data"], dtype=dtype)[0]
    if b"complex" in obj and b"data" in obj:
        return complex(obj[b"data"].decode() if isinstance(obj[b"data"], bytes) else obj[b"data"])
    return obj


#: How msgpack packs the keys msgpack-numpy writes (bin 8 of b"nd", b"complex").
_NUMPY_MARKERS = (b"\xc4\x02nd", b"\xc4\x07complex")


def _has_numpy_values(path: Path) -> bool:
    """Whether the file may hold msgpack-numpy values (a fast scan of its bytes).

    Without them, the file is decoded with no Python call per map (no object_hook).
    """
    overlap = max(map(len, _NUMPY_MARKERS)) - 1
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(2**24):
            block = tail + chunk
            if any(marker in block for marker in _NUMPY_MARKERS):
                return True
            tail = block[-overlap:]
    return False


def _pair(item: Any, path: Path, index: int) -> tuple[str, dict]:
    if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
            or not isinstance(item[1], dict)):
        raise IngestError(f"{path}: item {index} is not a (name, document) pair "
                          f"(got {type(item).__name__}); is this a suitcase file?")
    return item[0], item[1]


def _read_msgpack(path: Path, progress: Callable[[int], None]) -> Iterator[tuple[str, dict]]:
    import msgpack

    hook = {"object_hook": _decode_numpy} if _has_numpy_values(path) else {}
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False,
                                    max_buffer_size=2**31 - 1, **hook)
        reported = last = index = 0
        tell = unpacker.tell
        try:
            for index, item in enumerate(unpacker):
                last = tell()  # after the last complete document
                if not index % _PROGRESS_EVERY:
                    progress(last - reported)
                    reported = last
                if type(item) is list and len(item) == 2 and type(item[0]) is str \
                        and type(item[1]) is dict:
                    yield item[0], item[1]
                else:
                    yield _pair(item, path, index)
        except (ValueError, msgpack.UnpackException) as err:
            if isinstance(err, IngestError):
                raise
            raise IngestError(f"{path}: not a valid msgpack document file (item {index}): "
                              f"{err or type(err).__name__}") from err
        progress(last - reported)
        size = path.stat().st_size
        if last != size:  # the Unpacker stops quietly at an incomplete object
            raise IngestError(f"{path}: truncated or not msgpack: {size - last} byte(s) after "
                              f"the last complete document (byte {last}) cannot be read")


#: Bytes given to msgpack at once, between runs of events.
_FEED = 2**18
#: Bytes of the mapped file read before their pages are dropped from memory.
_RELEASE = 2**26


def _read_msgpack_rows(path: Path, progress: Callable[[int], None]
                       ) -> Iterator[tuple[str, dict] | Rows]:
    """The documents of a suitcase-msgpack file, runs of alike events as :class:`Rows`.

    What :func:`read_documents` gives, but each run of events laid out alike
    (:mod:`~dask_broker.msgpack_rows`) is one ``Rows`` of up to :data:`BATCH`
    rows, read a column at a time from the mapped file; everything else is
    decoded by msgpack.
    """
    with open(path, "rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            read = released = 0

            def advance(nbytes: int) -> None:
                """Report progress, and drop the pages read from this process's memory."""
                nonlocal read, released
                progress(nbytes)
                read += nbytes
                if read - released >= _RELEASE and hasattr(mapped, "madvise"):
                    upto = read // mmap.PAGESIZE * mmap.PAGESIZE
                    mapped.madvise(mmap.MADV_DONTNEED, released, upto - released)
                    released = upto

            view = memoryview(mapped)
            try:
                yield from _scan_msgpack(path, view, advance)
            finally:
                view.release()


def _scan_msgpack(path: Path, view: memoryview, progress: Callable[[int], None]
                  ) -> Iterator[tuple[str, dict] | Rows]:
    """:func:`_read_msgpack_rows` of the file's bytes: at each place, the run of rows laid
    out as the last run was, or else one document decoded by msgpack -- and, if it is an
    event, a layout found from it (tried again after 1, 2, 4, ... documents while none
    gives a run)."""
    import msgpack

    layout = None
    retry_at, backoff = 0, 1  # documents to pass before looking for a layout again
    size = len(view)
    pos = index = reported = 0
    unpacker, u_start, u_fed = None, 0, 0
    while pos < size:
        rows = read_rows(layout, view, pos, BATCH)
        if rows is None:
            # one document, decoded by msgpack
            if unpacker is None or u_start + unpacker.tell() != pos:
                unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                            max_buffer_size=2**31 - 1,
                                            object_hook=_decode_numpy)
                u_start = u_fed = pos
            while True:
                try:
                    item = unpacker.unpack()
                    break
                except msgpack.OutOfData:
                    if u_fed == size:  # the Unpacker stops quietly at an incomplete object
                        raise IngestError(
                            f"{path}: truncated or not msgpack: {size - pos} byte(s) after "
                            f"the last complete document (byte {pos}) cannot be read") from None
                    unpacker.feed(view[u_fed:u_fed + _FEED])
                    u_fed = min(size, u_fed + _FEED)
                except (ValueError, msgpack.UnpackException) as err:
                    if isinstance(err, IngestError):
                        raise
                    raise IngestError(f"{path}: not a valid msgpack document file (item "
                                      f"{index}): {err or type(err).__name__}") from err
            end = u_start + unpacker.tell()
            if (type(item) is list and len(item) == 2 and item[0] in ("event", "event_page")
                    and index >= retry_at):
                found = layout_of(bytes(view[pos:end]))
                rows = read_rows(found, view, pos, BATCH)
                if rows is None:
                    retry_at, backoff = index + backoff, min(2 * backoff, 1024)
                else:
                    layout, backoff = found, 1
        if rows is not None:
            yield rows
            pos += rows.count * layout.length
            index += rows.count
        else:
            if type(item) is list and len(item) == 2 and type(item[0]) is str \
                    and type(item[1]) is dict:
                yield item[0], item[1]
            else:
                yield _pair(item, path, index)
            pos = end
            index += 1
            if index % _PROGRESS_EVERY:
                continue
        progress(pos - reported)
        reported = pos
    progress(pos - reported)


def _read_jsonl(path: Path, progress: Callable[[int], None]) -> Iterator[tuple[str, dict]]:
    """Each line decoded by msgspec (3-4x faster than ``json.loads``); a line it refuses
    -- ``NaN``, which suitcase-jsonl writes for a NaN, a lone surrogate, a number out of
    float range -- by ``json.loads``, so that every line gives what ``json.loads`` gives."""
    import msgspec

    decode = msgspec.json.Decoder().decode
    with open(path, "rb") as f:
        unreported = 0
        for lineno, line in enumerate(f, 1):
            unreported += len(line)
            if not lineno % _PROGRESS_EVERY:
                progress(unreported)
                unreported = 0
            try:
                item = decode(line)
            except msgspec.MsgspecError:
                if line.isspace():
                    continue
                try:
                    item = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise IngestError(f"{path}:{lineno}: not a JSON line: {err}") from err
            if type(item) is list and len(item) == 2 and type(item[0]) is str \
                    and type(item[1]) is dict:
                yield item[0], item[1]
            else:
                yield _pair(item, path, lineno)
        progress(unreported)


def read_documents(path: str | os.PathLike,
                   progress: Callable[[int], None] = lambda n: None
                   ) -> Iterator[tuple[str, dict]]:
    """``(name, doc)`` pairs of a ``.msgpack`` or ``.jsonl`` file written by suitcase.

    ``progress(nbytes)`` is called, now and then, with the bytes read since its last call.

    Raises
    ------
    IngestError
        Not one of these formats, not valid, or truncated (naming the file and where).

    Examples
    --------
    >>> for name, doc in read_documents("run.jsonl"):   # doctest: +SKIP
    ...     db.insert(name, doc)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".msgpack":
        return _read_msgpack(path, progress)
    if suffix == ".jsonl":
        return _read_jsonl(path, progress)
    raise IngestError(f"{path}: unknown format {suffix or '(no suffix)'!r}; ingest reads "
                      "suitcase-msgpack (.msgpack) and suitcase-jsonl (.jsonl) files")


def find_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Files to ingest: the files given, and the ``.msgpack``/``.jsonl`` files of folders given.

    Examples
    --------
    >>> find_files(["saved/"])   # doctest: +SKIP
    [PosixPath('saved/run1.msgpack'), PosixPath('saved/run2.jsonl')]
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file())
            if not found:
                raise IngestError(f"{p}: no .msgpack or .jsonl file in this folder")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise IngestError(f"{p}: unknown format {p.suffix or '(no suffix)'!r}; ingest "
                                  "reads suitcase-msgpack (.msgpack) and suitcase-jsonl (.jsonl) "
                                  "files")
            files.append(p)
        else:
            raise IngestError(f"{p}: no such file or folder")
    return files


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a batch holds tens of thousands of freshly
    decoded dicts (no cycles), which it would otherwise scan again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class IngestReport:
    """What :func:`ingest` did: documents inserted and skipped, by name, and the files read."""

    files: list[Path]
    inserted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        """Runs inserted (start documents)."""
        return self.inserted.get("start", 0)

    def __str__(self) -> str:
        detail = ", ".join(f"{v} {k}" for k, v in self.inserted.items())
        skipped = sum(self.skipped.values())
        return (f"ingested {self.runs} run(s), {sum(self.inserted.values())} document(s) from "
                f"{len(self.files)} file(s)" + (f": {detail}" if detail else "")
                + (f"; skipped {self.skipped.get('start', 0)} run(s) ({skipped} document(s)) "
                   "already in the catalog" if skipped else ""))


def ingest(db, paths: list[str | os.PathLike], *, progress: bool = True,
           skip_existing: bool = False) -> IngestReport:
    """Insert every document of suitcase files (``.msgpack``, ``.jsonl``, or folders of them).

    Consecutive events of one descriptor (datum of one resource) are inserted as
    pages of up to :data:`BATCH`, each validated and written in one transaction.

    Parameters
    ----------
    db
        The :class:`~dask_broker.Broker` to insert into.
    paths
        Files, or folders whose ``.msgpack`` / ``.jsonl`` files are read (sorted by name).
    progress
        Show a progress bar (bytes read).
    skip_existing
        Skip documents already in the catalog (instead of failing), so that an
        interrupted ingest can be run again to finish it.

    Returns
    -------
    IngestReport
        ``str(report)`` is the one-line summary ``dask-broker ingest`` prints.

    Raises
    ------
    IngestError
        A file cannot be read, or a document is rejected (naming the file, the
        document's place and why; nothing of that document or batch is written).

    Examples
    --------
    >>> from dask_broker import Broker, ingest
    >>> report = ingest(Broker.from_uri("sqlite:///catalog.db"), ["saved/"])  # doctest: +SKIP
    >>> print(report)                                                         # doctest: +SKIP
    ingested 2 run(s), 20012 document(s) from 2 file(s): 2 start, ...
    """
    from tqdm.auto import tqdm

    files = find_files(list(paths))
    total = sum(f.stat().st_size for f in files)
    batcher = PageBatcher(db, skip_existing)
    with tqdm(total=total, unit="B", unit_scale=True, desc="ingesting",
              disable=not progress) as bar, _gc_paused():
        for path in files:
            bar.set_postfix_str(path.name[-40:], refresh=False)
            first = batcher.added  # documents of the files before
            try:
                batcher.add_all(_read_msgpack_rows(path, bar.update)
                                if path.suffix.lower() == ".msgpack"
                                else read_documents(path, bar.update))
                batcher.flush()
            except DaskBrokerError as err:
                where = f"document {batcher.added - first} ({batcher.last_name})"
                if batcher.batch is not None:
                    name, count, start = batcher.batch
                    where = (f"document {start - first} ({name})" if count == 1 else
                             f"documents {start - first}-{start - first + count - 1} "
                             f"({count} {name})")
                hint = (" (use --skip-existing to skip what is already in the catalog)"
                        if isinstance(err, DuplicateUidError) else "")
                raise IngestError(f"{path}: at {where}: {err}{hint}") from err
    return IngestReport(files, batcher.inserted, batcher.skipped)
