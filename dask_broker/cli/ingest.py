"""``dask-broker ingest CATALOG FILES...``: insert documents saved by suitcase (msgpack, jsonl).

Both formats hold ``(name, doc)`` pairs, one run per file, as databroker v1's
temporary and file-based catalogs write them:

- ``.msgpack`` (suitcase-msgpack): concatenated msgpack arrays ``[name, doc]``;
  numpy arrays and scalars are encoded as msgpack-numpy does
  (``{b"nd": ..., b"type": ..., b"shape": ..., b"data": ...}``);
- ``.jsonl`` (suitcase-jsonl): one JSON array ``[name, doc]`` per line.
"""

from __future__ import annotations

import event_model

import argparse
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DaskBrokerError, DuplicateUidError, RunAlreadyStoppedError

__all__ = ["IngestError", "read_documents", "find_files", "ingest", "register"]

SUFFIXES = (".msgpack", ".jsonl")


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


def _pair(item: Any, path: Path, index: int) -> tuple[str, dict]:
    if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
            or not isinstance(item[1], dict)):
        raise IngestError(f"{path}: item {index} is not a (name, document) pair "
                          f"(got {type(item).__name__}); is this a suitcase file?")
    return item[0], item[1]


def _read_msgpack(path: Path, progress) -> Iterator[tuple[str, dict]]:
    import msgpack

    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, object_hook=_decode_numpy,
                                    strict_map_key=False, max_buffer_size=2**31 - 1)
        last, index = 0, 0
        try:
            for index, item in enumerate(unpacker):
                pos = unpacker.tell()
                progress(pos - last)
                last = pos
                yield _pair(item, path, index)
        except (ValueError, msgpack.UnpackException) as err:
            if isinstance(err, IngestError):
                raise
            raise IngestError(f"{path}: not a valid msgpack document file (item {index}): "
                              f"{err or type(err).__name__}") from err
        size = path.stat().st_size
        if last != size:  # the Unpacker stops quietly at an incomplete object
            raise IngestError(f"{path}: truncated or not msgpack: {size - last} byte(s) after "
                              f"the last complete document (byte {last}) cannot be read")


def _read_jsonl(path: Path, progress) -> Iterator[tuple[str, dict]]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            progress(len(line))
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise IngestError(f"{path}:{lineno}: not a JSON line: {err}") from err
            yield _pair(item, path, lineno)


def read_documents(path: str | os.PathLike, progress=lambda n: None) -> Iterator[tuple[str, dict]]:
    """``(name, doc)`` pairs of a ``.msgpack`` or ``.jsonl`` file written by suitcase.

    ``progress(nbytes)`` is called as the file is read.

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


def find_files(paths: list[str]) -> list[Path]:
    """Files to ingest: the files given, and the ``.msgpack``/``.jsonl`` files of folders given."""
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


#: Consecutive events (or datum) batched into one page insert.
BATCH = 1000


def _filled_keys(doc: dict) -> tuple | None:
    """The keys of an event's ``filled`` (None without it): one page holds events alike."""
    filled = doc.get("filled")
    return None if "filled" not in doc else tuple(filled) if isinstance(filled, dict) else ()


class _Inserter:
    """Inserts documents in order, batching runs of events (datum) into pages.

    With ``skip_existing``, documents already in the catalog are skipped one by
    one, so a partly ingested file can be ingested again to finish the job.
    """

    def __init__(self, db, skip_existing: bool):
        self.db = db
        self.skip_existing = skip_existing
        self.pending: list[dict] = []
        self.pending_name: str | None = None
        self.inserted: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: (name, count) of the batch being inserted, for error messages.
        self.batch: tuple[str, int] | None = None

    def add(self, name: str, doc: dict) -> None:
        key = {"event": "descriptor", "datum": "resource"}.get(name)
        if key is not None:
            if self.pending and (self.pending_name != name or len(self.pending) >= BATCH
                                 or self.pending[0].get(key) != doc.get(key)
                                 or _filled_keys(self.pending[0]) != _filled_keys(doc)):
                self.flush()
            self.pending_name = name
            self.pending.append(doc)
            return
        self.flush()
        self._insert(name, doc, [doc])

    def flush(self) -> None:
        if not self.pending:
            return
        docs, name = self.pending, self.pending_name
        self.pending, self.pending_name = [], None
        self.batch = (name, len(docs))  # left set if the insert raises
        if len(docs) == 1:
            self._insert(name, docs[0], docs)
        else:
            page = (event_model.pack_event_page(*docs) if name == "event"
                    else event_model.pack_datum_page(*docs))
            if name == "event" and _filled_keys(docs[0]) is None:
                del page["filled"]  # events saved without filled are stored without it
            try:
                self.db.insert(f"{name}_page", page)
            except DuplicateUidError:
                if not self.skip_existing:
                    raise
                for doc in docs:  # some are stored already: insert the others one by one
                    self._insert(name, doc, [doc])
            else:
                self.inserted[name] = self.inserted.get(name, 0) + len(docs)
        self.batch = None

    def _insert(self, name: str, doc: dict, docs: list) -> None:
        try:
            self.db.insert(name, doc)
        except (DuplicateUidError, RunAlreadyStoppedError):
            stored_stop = (self.db.store.get_stop(doc.get("run_start")) or {}
                           if name == "stop" else {})
            if not self.skip_existing or (
                    name == "stop" and stored_stop.get("uid") != doc.get("uid")):
                raise
            self.skipped[name] = self.skipped.get(name, 0) + 1
            return
        self.inserted[name] = self.inserted.get(name, 0) + 1


def ingest(db, paths: list[str], *, progress: bool = True, skip_existing: bool = False,
           out=print) -> dict[str, int]:
    """Insert every document of ``paths`` into ``db``; returns counts by document name.

    Consecutive events of one descriptor (datum of one resource) are inserted as
    pages of up to :data:`BATCH`, which is much faster than one transaction per event.

    Parameters
    ----------
    skip_existing
        Skip documents already in the catalog (instead of failing), so that an
        interrupted ingest can be run again to finish it.
    """
    from tqdm.auto import tqdm

    files = find_files(paths)
    total = sum(f.stat().st_size for f in files)
    inserter = _Inserter(db, skip_existing)
    with tqdm(total=total, unit="B", unit_scale=True, desc="ingesting",
              disable=not progress) as bar:
        for path in files:
            bar.set_postfix_str(path.name[-40:], refresh=False)
            index, name = -1, "?"
            try:
                for index, (name, doc) in enumerate(read_documents(path, bar.update)):
                    inserter.add(name, doc)
                inserter.flush()
            except DaskBrokerError as err:
                where = f"document {index} ({name})"
                if inserter.batch is not None:
                    batch_name, count = inserter.batch
                    where = f"the {count} {batch_name} document(s) before {where}"
                hint = (" (use --skip-existing to skip what is already in the catalog)"
                        if isinstance(err, DuplicateUidError) else "")
                raise IngestError(f"{path}: near {where}: {err}{hint}") from err
    counts = inserter.inserted
    runs = counts.get("start", 0)
    detail = ", ".join(f"{v} {k}" for k, v in counts.items())
    skipped = sum(inserter.skipped.values())
    out(f"ingested {runs} run(s), {sum(counts.values())} document(s) from {len(files)} file(s)"
        + (f": {detail}" if detail else "")
        + (f"; skipped {inserter.skipped.get('start', 0)} run(s) ({skipped} document(s)) "
           "already in the catalog" if skipped else ""))
    return counts


def _run(args: argparse.Namespace) -> int:
    from ..config import open_catalog

    files = find_files(args.files)  # fail on a bad file before creating a catalog
    db = open_catalog(args.catalog, create=True)
    ingest(db, [str(f) for f in files], progress=not args.no_progress,
           skip_existing=args.skip_existing)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "ingest", help="insert documents saved by suitcase-msgpack (.msgpack) or suitcase-jsonl "
                       "(.jsonl)",
        description="Insert the documents of suitcase-msgpack (.msgpack) or suitcase-jsonl "
                    "(.jsonl) files -- as databroker v1 temporary and file-based catalogs save "
                    "them -- into CATALOG (created if it does not exist).")
    p.add_argument("catalog", metavar="CATALOG",
                   help="catalog URI (sqlite:///..., mongodb://...), named catalog, or path of "
                        "a .db file")
    p.add_argument("files", nargs="+", metavar="FILES",
                   help=".msgpack / .jsonl files, or folders holding them")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip runs already in the catalog instead of failing")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)
