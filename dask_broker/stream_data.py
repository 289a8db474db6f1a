"""Rows of a stream described by stream_datum documents (ophyd-async detectors).

A data key whose descriptor entry says ``external: "STREAM:"`` is never in
events: ``stream_datum`` documents map blocks of the stream's seq_nums to
blocks of rows (``indices``) of a ``stream_resource``'s dataset.  A stream's
rows are the union of its events' seq_nums and those blocks (a fly scan may
have no events at all).

:class:`StreamLayout` is that mapping for one stream, built once on the client
from the stored stream_datum (consecutive blocks merged, as tiled does) and
shipped, small, with every task: it answers which seq_nums a partition covers
and, for each streamed key, which resource and index each row reads.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["STREAM_EXTERNAL", "stream_keys", "Intervals", "KeyBlocks", "StreamLayout",
           "stream_reference"]

#: The ``external`` value of a data key filled from stream_datum documents.
STREAM_EXTERNAL = "STREAM:"


def stream_keys(descriptor: Mapping) -> list[str]:
    """The descriptor's data keys whose values come from stream_datum documents."""
    return [k for k, dk in descriptor.get("data_keys", {}).items()
            if isinstance(dk, Mapping) and str(dk.get("external", "")).startswith(STREAM_EXTERNAL)]


def stream_reference(resource_uid: str, index: int) -> str:
    """What an unfilled STREAM: cell holds: ``"<stream_resource uid>/<row index>"``."""
    return f"{resource_uid}/{index}"


class Intervals:
    """Disjoint half-open integer intervals, each with the uid that claimed it
    (overlap checks at insert)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        self._uids: list[str | None] = []

    def overlap(self, start: int, stop: int) -> tuple[int, int, str | None] | None:
        """A stored interval ``(start, stop, uid)`` that overlaps ``[start, stop)``, or None."""
        if stop <= start:
            return None
        i = bisect.bisect_right(self._starts, start) - 1
        for j in (i, i + 1):
            if 0 <= j < len(self._starts):
                a, b = self._starts[j], self._stops[j]
                if a < stop and start < b:
                    return a, b, self._uids[j]
        return None

    def add(self, start: int, stop: int, uid: str | None = None) -> None:
        if stop <= start:
            return
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._stops.insert(i, stop)
        self._uids.insert(i, uid)


@dataclass(frozen=True, eq=False)
class KeyBlocks:
    """Blocks of one streamed key: ``seq_num`` ``[seq_start, seq_stop)`` reads rows
    ``index_start + (seq_num - seq_start)`` of stream_resource ``resources[resource]``.

    Sorted by ``seq_start``; consecutive stream_datum of one resource are merged.
    """

    seq_start: np.ndarray
    seq_stop: np.ndarray
    resource: np.ndarray  # position in StreamLayout.resources
    index_start: np.ndarray

    @classmethod
    def from_datums(cls, datums: Sequence[Mapping], position: Mapping[str, int]) -> "KeyBlocks":
        rows = sorted((d["seq_nums"]["start"], d["seq_nums"]["stop"],
                       position[d["stream_resource"]], d["indices"]["start"])
                      for d in datums if d["seq_nums"]["stop"] > d["seq_nums"]["start"])
        merged: list[list[int]] = []
        for s0, s1, r, i0 in rows:
            if merged:
                p = merged[-1]
                if p[2] == r and p[1] == s0 and p[3] + (p[1] - p[0]) == i0:
                    p[1] = s1
                    continue
            merged.append([s0, s1, r, i0])
        arr = np.array(merged, dtype="i8").reshape(-1, 4)
        return cls(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy())

    def __len__(self) -> int:
        return len(self.seq_start)

    def locate(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each seq_num: (resource position, row index), ``-1`` where no block covers it."""
        seq = np.asarray(seq, dtype="i8")
        block = np.searchsorted(self.seq_start, seq, side="right") - 1
        ok = block >= 0
        clipped = np.where(ok, block, 0)
        if len(self):
            ok &= seq < self.seq_stop[clipped]
        else:
            ok[:] = False
        resource = np.where(ok, self.resource[clipped] if len(self) else -1, -1)
        index = np.where(ok, (self.index_start[clipped] + seq - self.seq_start[clipped])
                         if len(self) else -1, -1)
        return resource, index

    def covered(self, lo: int, hi: int) -> np.ndarray:
        """The seq_nums in ``[lo, hi)`` that some block covers (sorted)."""
        parts = [np.arange(max(a, lo), min(b, hi), dtype="i8")
                 for a, b in zip(self.seq_start.tolist(), self.seq_stop.tolist())
                 if a < hi and lo < b]
        return np.concatenate(parts) if parts else np.empty(0, dtype="i8")

    def token(self) -> tuple:
        return tuple(a.tobytes() for a in (self.seq_start, self.seq_stop, self.resource,
                                             self.index_start))


@dataclass(frozen=True, eq=False)
class StreamLayout:
    """Where the streamed keys of one stream live, row by row.

    ``resources`` are the stream_resource uids the blocks point into;
    ``keys`` maps each streamed data key to its :class:`KeyBlocks`.
    """

    resources: tuple[str, ...]
    keys: tuple[tuple[str, KeyBlocks], ...]

    @classmethod
    def build(cls, descriptors: Sequence[Mapping], datums: Iterable[Mapping],
              resources: Iterable[Mapping]) -> "StreamLayout | None":
        """The layout of a stream from its descriptors, stream_datum and stream_resources.

        None when no descriptor of the stream has a STREAM: key.
        """
        keys = list(dict.fromkeys(k for d in descriptors for k in stream_keys(d)))
        if not keys:
            return None
        key_of = {r["uid"]: r.get("data_key") for r in resources}
        by_key: dict[str, list[Mapping]] = {k: [] for k in keys}
        used: dict[str, int] = {}
        for sd in datums:
            key = key_of.get(sd["stream_resource"])
            if key in by_key:
                by_key[key].append(sd)
                used.setdefault(sd["stream_resource"], len(used))
        return cls(tuple(used), tuple((k, KeyBlocks.from_datums(v, used))
                                      for k, v in by_key.items()))

    def blocks(self, key: str) -> KeyBlocks:
        return dict(self.keys)[key]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def covered(self, lo: int, hi: int) -> np.ndarray:
        """The seq_nums in ``[lo, hi)`` that a stream_datum of any key covers (sorted, unique)."""
        parts = [b.covered(lo, hi) for _, b in self.keys]
        if not parts:
            return np.empty(0, dtype="i8")
        return np.unique(np.concatenate(parts))

    def seq_bounds(self) -> tuple[int, int] | None:
        """(first seq_num, last seq_num) covered, or None if no stream_datum is stored."""
        starts = [int(b.seq_start.min()) for _, b in self.keys if len(b)]
        stops = [int(b.seq_stop.max()) for _, b in self.keys if len(b)]
        return (min(starts), max(stops) - 1) if starts else None

    def intervals(self) -> list[tuple[int, int]]:
        """The covered seq_nums as sorted, disjoint ``[start, stop)`` intervals."""
        pairs = sorted((int(a), int(b)) for _, blk in self.keys
                       for a, b in zip(blk.seq_start, blk.seq_stop))
        out: list[list[int]] = []
        for a, b in pairs:
            if out and a <= out[-1][1]:
                out[-1][1] = max(out[-1][1], b)
            else:
                out.append([a, b])
        return [(a, b) for a, b in out]

    def references(self, key: str, seq: np.ndarray) -> np.ndarray:
        """Unfilled cells of ``key`` for these seq_nums: references, None where uncovered."""
        resource, index = self.blocks(key).locate(seq)
        out = np.full(len(seq), None, dtype=object)
        rows = np.flatnonzero(resource >= 0)
        if len(rows):
            # One Python str per row is the cost (numpy's string ops measure no faster):
            # the "<uid>/" prefixes are made once, the cells in one pass.
            prefixes = [stream_reference(uid, "") for uid in self.resources]
            out[rows] = [prefixes[r] + str(k) for r, k in zip(resource[rows].tolist(),
                                                              index[rows].tolist())]
        return out

    def __dask_tokenize__(self):
        return ("dask_broker.StreamLayout", self.resources,
                tuple((k, b.token()) for k, b in self.keys))
