"""StreamFill: what a task needs to read the STREAM: keys of one stream.

Built on the client from the stream's :class:`~dask_broker.stream_data.StreamLayout`,
its stream_resource documents (normalized to ``mimetype``/``uri``/``parameters``,
``root_map`` applied) and the reader class of each mimetype; small and picklable.
In a task, the rows asked for are grouped into runs of consecutive indices of
one resource, and each run is one bulk ``reader.read`` -- so a partition reads
one slice per resource, whatever its number of rows.

Readers (open files) live in the process's bounded shared cache
(:func:`~dask_broker.handlers.cache.shared_handler_cache`), as handlers do.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import HandlerError, ReaderNotFoundError
from ..file_retry import resolve_retry_intervals, retry_missing_file
from ..handlers.cache import HandlerCache, process_handler_cache
from ..readers import normalize_stream_resource, remap_uri, uri_to_path
from ..stream_data import StreamLayout

__all__ = ["StreamFill", "KeyShape"]


@dataclass(frozen=True)
class KeyShape:
    """How rows of one streamed key look: the descriptor's ``shape`` and ``dtype_numpy``.

    A descriptor shape of ``[1]`` gives one scalar per row (as tiled returns it).
    """

    shape: tuple[int, ...]
    dtype: str | None

    @property
    def row_shape(self) -> tuple[int, ...]:
        return () if self.shape == (1,) else self.shape

    @property
    def known(self) -> bool:
        return self.dtype is not None and all(isinstance(s, int) and s >= 0 for s in self.shape)


@dataclass(frozen=True)
class _Source:
    uid: str
    mimetype: str
    path: str
    parameters: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class StreamFill:
    """Reads the streamed keys of one stream (picklable; no open file inside)."""

    layout: StreamLayout
    sources: tuple[_Source, ...]  # by position in layout.resources
    readers: tuple[tuple[str, Any], ...]  # mimetype -> reader class
    shapes: tuple[tuple[str, KeyShape], ...]
    #: mimetype -> why no reader was found on the client (raised when a task needs it)
    missing: tuple[tuple[str, str], ...] = ()
    #: seconds waited before each retry of a missing file (resolved on the client)
    retry_intervals: tuple[float, ...] = ()

    @classmethod
    def for_stream(cls, layout: StreamLayout, descriptors: Sequence[Mapping],
                   resources: Sequence[Mapping], registry, root_map: Mapping[str, str] | None,
                   retry_intervals: Sequence[float] | None = None) -> "StreamFill":
        by_uid = {r["uid"]: normalize_stream_resource(r) for r in resources}
        sources, readers, missing = [], {}, {}
        for uid in layout.resources:
            doc = by_uid.get(uid)
            if doc is None:
                raise HandlerError(f"stream_resource {uid!r} is referenced by stream_datum but "
                                   "is not stored; re-insert it to read this stream")
            uri = remap_uri(doc["uri"], root_map or {})
            sources.append(_Source(uid, doc["mimetype"], uri_to_path(uri),
                                   tuple(sorted(doc.get("parameters", {}).items()))))
            mimetype = doc["mimetype"]
            if mimetype not in readers and mimetype not in missing:
                try:
                    readers[mimetype] = registry.lookup(mimetype)
                except ReaderNotFoundError as err:
                    missing[mimetype] = str(err)
        shapes = {}
        for key in layout.names:
            dk = next(d["data_keys"][key] for d in descriptors if key in d["data_keys"])
            shapes[key] = KeyShape(tuple(dk.get("shape") or ()), dk.get("dtype_numpy"))
        return cls(layout, tuple(sources), tuple(readers.items()), tuple(shapes.items()),
                   tuple(missing.items()), resolve_retry_intervals(retry_intervals))

    def __dask_tokenize__(self):
        return ("dask_broker.StreamFill", self.layout.__dask_tokenize__(), self.sources,
                tuple((m, f"{c.__module__}.{c.__qualname__}") for m, c in self.readers),
                self.shapes)

    def shape(self, key: str) -> KeyShape:
        return dict(self.shapes)[key]

    # ---------------------------------------------------------------- reading
    @contextlib.contextmanager
    def _cache(self, cache: HandlerCache | None = None) -> Iterator[HandlerCache]:
        yield process_handler_cache() if cache is None else cache

    def _reader_class(self, mimetype: str):
        classes = dict(self.readers)
        if mimetype not in classes:
            raise ReaderNotFoundError(dict(self.missing).get(mimetype)
                                      or f"no reader for mimetype {mimetype!r}")
        return classes[mimetype]

    def read(self, key: str, seq: np.ndarray, *, stacked: bool = False,
             cache: HandlerCache | None = None) -> np.ndarray:
        """Values of ``key`` at these seq_nums.

        ``stacked=False``: a 1-d array, one cell per row (a frame, or a scalar;
        None / NaN where no stream_datum covers the row).  ``stacked=True``: one
        array ``(rows, *row_shape)``; every row must be covered.
        """
        seq = np.asarray(seq, dtype="i8")
        resource, index = self.layout.blocks(key).locate(seq)
        try:
            return self._read_located(key, resource, index, stacked, cache)
        except _Uncovered as err:
            missing = seq[resource < 0][:5].tolist()
            raise HandlerError(f"data key {key!r}: no stream_datum covers seq_num(s) "
                               f"{missing} of this stream") from err

    def read_into(self, key: str, seq: np.ndarray, out: np.ndarray,
                  cache: HandlerCache | None = None) -> np.ndarray:
        """Values of ``key`` at these seq_nums written into ``out`` (``(rows, *row_shape)``;
        every row must be covered): each run of rows of a file is read straight into its
        rows of ``out`` where the reader can (HDF5)."""
        seq = np.asarray(seq, dtype="i8")
        resource, index = self.layout.blocks(key).locate(seq)
        if len(seq) and not np.all(resource >= 0):
            missing = seq[resource < 0][:5].tolist()
            raise HandlerError(f"data key {key!r}: no stream_datum covers seq_num(s) "
                               f"{missing} of this stream")
        shape = self.shape(key)
        with self._cache(cache) as cache_:
            for first, last in _runs(resource, index):
                i0 = int(index[first])
                self._read_rows(cache_, int(resource[first]), i0, i0 + last - first, shape,
                                key, out[first:last])
        return out

    def read_references(self, key: str, references: Sequence[Any],
                        cache: HandlerCache | None = None) -> np.ndarray:
        """Values of ``key`` for unfilled cells (``"<stream_resource uid>/<index>"``).

        Cells that are not references (None, NaN, already filled values) are kept.
        """
        position = {s.uid: i for i, s in enumerate(self.sources)}
        n = len(references)
        resource = np.full(n, -1, dtype="i8")
        index = np.full(n, -1, dtype="i8")
        for i, ref in enumerate(references):
            if isinstance(ref, str):
                uid, _, k = ref.rpartition("/")
                if uid not in position or not k.isdigit():
                    raise HandlerError(
                        f"data key {key!r}: {ref!r} is not a row of a stream_resource of this "
                        f"run (known: {sorted(position)})")
                resource[i], index[i] = position[uid], int(k)
        out = self._read_located(key, resource, index, False, cache)
        for i, ref in enumerate(references):
            if resource[i] < 0 and ref is not None:
                out[i] = ref
        return out

    def _read_located(self, key: str, resource: np.ndarray, index: np.ndarray,
                      stacked: bool, cache: HandlerCache | None = None) -> np.ndarray:
        shape = self.shape(key)
        runs = _runs(resource, index)
        blocks: list[tuple[int, int, np.ndarray]] = []  # (first row, last row + 1, values)
        with self._cache(cache) as cache:
            for first, last in runs:
                r = int(resource[first])
                if r < 0:
                    continue
                i0 = int(index[first])
                blocks.append((first, last, self._read_rows(cache, r, i0, i0 + last - first,
                                                            shape, key)))
        if stacked:
            covered = sum(b - a for a, b, _ in blocks)
            if covered != len(resource):
                raise _Uncovered()
            if len(blocks) == 1:
                return blocks[0][2]
            if not blocks:
                return np.empty((0, *shape.row_shape), dtype=shape.dtype or "f8")
            return np.concatenate([v for *_, v in blocks])
        if not shape.row_shape and shape.dtype and np.dtype(shape.dtype).kind in "fiub":
            out = np.full(len(resource), np.nan)
            for a, b, v in blocks:
                out[a:b] = v
            return out
        out = np.empty(len(resource), dtype=object)
        for a, b, v in blocks:
            for k in range(b - a):
                out[a + k] = v[k]
        return out

    def _read_rows(self, cache: HandlerCache, position: int, start: int, stop: int,
                   shape: KeyShape, key: str, out: np.ndarray | None = None) -> np.ndarray:
        src = self.sources[position]
        cls = self._reader_class(src.mimetype)
        cache_key = (src.uid, src.path, src.mimetype, cls)
        params = dict(src.parameters)

        def attempt() -> tuple[np.ndarray, int]:
            with cache.acquire(cache_key, lambda: cls(src.path, params)) as (reader, _):
                chunks = params.get("chunk_shape")
                # ophyd-async's chunk_shape has one entry per dataset dimension: no metadata read.
                ndim = len(chunks) if isinstance(chunks, (list, tuple)) and chunks else \
                    len(reader.describe()[0])
                per_row = _entries_per_row(ndim, shape.shape, params, src, key)
                if out is not None and hasattr(reader, "read_into"):
                    return reader.read_into(start * per_row, stop * per_row, out), per_row
                return np.asarray(reader.read(start * per_row, stop * per_row)), per_row

        def misfit(found: Any, per_row: Any) -> HandlerError:
            return HandlerError(
                f"data key {key!r}: rows {start}..{stop - 1} of stream_resource {src.uid!r} "
                f"({src.path}) have shape {found} x {per_row} per row, which does "
                f"not fit the descriptor's shape {list(shape.shape)}")

        # A file on a shared file system may appear after its stream_datum: try again.
        try:
            values, per_row = retry_missing_file(attempt, self.retry_intervals)
        except ValueError:
            if out is None:
                raise
            raise misfit("another", "entries") from None
        if values is out:
            return out
        try:
            if out is not None:
                out[...] = values.reshape(out.shape)
                return out
            return values.reshape((stop - start, *shape.row_shape))
        except ValueError:
            raise misfit(values.shape[1:], per_row) from None


class _Uncovered(Exception):
    """Some rows asked for stacked have no stream_datum."""


def _runs(resource: np.ndarray, index: np.ndarray) -> list[tuple[int, int]]:
    """Positions ``[first, last)`` of runs of one resource with consecutive indices."""
    n = len(resource)
    if n == 0:
        return []
    brk = np.flatnonzero((resource[1:] != resource[:-1]) | (index[1:] != index[:-1] + 1)) + 1
    edges = [0, *brk.tolist(), n]
    return list(zip(edges[:-1], edges[1:]))


def _entries_per_row(ndim: int, shape: tuple[int, ...],
                     parameters: Mapping, src: _Source, key: str) -> int:
    """How many entries of the dataset's first axis make one row.

    ophyd-async declares ``shape = [frames_per_row, *frame]`` over a dataset of
    frames (same number of dims); a dataset of rows has one more dim than the
    descriptor's shape.  ``multiplier`` / ``frame_per_point`` parameters win.
    """
    explicit = parameters.get("multiplier", parameters.get("frame_per_point"))
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    if ndim == len(shape) + 1:
        return 1
    if ndim == len(shape) and shape:
        return int(shape[0])
    raise HandlerError(
        f"data key {key!r}: the dataset of stream_resource {src.uid!r} ({src.path}) has "
        f"{ndim} dimensions, which does not fit the descriptor's shape {list(shape)} (expected "
        f"{len(shape)} or {len(shape) + 1} dimensions)")


def frame_bytes(shape: KeyShape) -> int | None:
    """Bytes of one row when the descriptor declares shape and dtype, else None."""
    if not shape.known:
        return None
    return np.dtype(shape.dtype).itemsize * math.prod(shape.row_shape)
