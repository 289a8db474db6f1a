"""Cutting a stream's rows into partitions: seq_num ranges of about ``chunk_size`` rows.

Partitions follow the rows stored (events and stream_datum blocks), not the span
of their seq_nums, from what the store tells cheaply: event counts per
descriptor, page metadata for sparse seq_nums, the stream_datum layout.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..stream_data import StreamLayout

__all__ = ["partition_bounds", "file_partition_bounds", "event_runs", "rows_without_events"]


def event_runs(store, counts: Mapping[str, tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``(start, stop, count)`` runs of the events' seq_nums, per descriptor.

    A descriptor whose events are consecutive (the usual case) is one run and
    costs no query; others ask the store (page metadata on SQLite).
    """
    runs, sparse = [], []
    for uid, (n, lo, hi) in counts.items():
        if n == hi - lo + 1:
            runs.append((lo, hi + 1, n))
        else:
            sparse.append(uid)
    if sparse:
        runs += store.seq_num_runs(sparse)
    return runs


def partition_bounds(runs: Sequence[tuple[int, int, int]], chunk_size: int
                     ) -> list[tuple[int, int, int]]:
    """Cut rows into partitions of about ``chunk_size`` rows: ``(lo, hi, rows)`` seq ranges.

    ``runs`` are ``(start, stop, count)``: ``count`` rows with ``start <= seq_num <
    stop`` (consecutive when ``count == stop - start``; otherwise assumed spread
    evenly); they may overlap (a row both in an event and in a stream_datum, or
    in several descriptors).  Partitions follow the rows, not the span of their
    seq_nums: two rows at seq_num 1 and 10**10 are one partition.

    >>> partition_bounds([(1, 2, 1), (10**10, 10**10 + 1, 1)], 1000)
    [(1, 10000000001, 2)]
    >>> partition_bounds([(1, 11, 10)], 4)
    [(1, 5, 4), (5, 9, 4), (9, 11, 2)]
    """
    merged: list[list[int]] = []
    for a, b, n in sorted(runs):
        if merged and a < merged[-1][1]:
            m = merged[-1]
            dense = m[2] == m[1] - m[0] and n == b - a
            m[1] = max(m[1], b)
            m[2] = m[1] - m[0] if dense else min(m[1] - m[0], m[2] + n)
        else:
            merged.append([a, b, n])
    parts: list[tuple[int, int, int]] = []
    lo, rows = None, 0
    for a, b, n in merged:
        if lo is None:
            lo = a
        while n > 0:
            take = min(n, chunk_size - rows)
            if take == n:
                rows += n
                break
            # Cut inside this run, where ``take`` of its rows have been passed.
            cut = a + max(1, -(-take * (b - a) // n))
            parts.append((lo, cut, rows + take))
            lo, rows = cut, 0
            n -= take
            a = cut
        if rows >= chunk_size:
            parts.append((lo, b, rows))
            lo, rows = None, 0
    if lo is not None and rows:
        parts.append((lo, merged[-1][1], rows))
    return parts


def file_partition_bounds(seq: np.ndarray, files: np.ndarray, chunk_size: int
                          ) -> list[tuple[int, int, int]]:
    """Cut rows into partitions that follow their files: ``(lo, hi, rows)`` seq ranges.

    A partition is a whole number of files (consecutive, up to ``chunk_size`` rows
    in all) or, for a file of more than ``chunk_size`` rows, one of the equal
    slices it is cut into -- so a bulk read never reads a file for two partitions
    when it can be avoided, and no partition holds more than ``chunk_size`` rows
    (rows sharing a seq_num stay in one partition, which may then hold more).

    Parameters
    ----------
    seq
        The rows' seq_nums, ascending (a seq_num may repeat: several descriptors).
    files
        An integer per row naming its file (its resource); -1: the row has no
        file (it stays with the rows before it).
    chunk_size
        Rows per partition, at most.

    >>> seq = np.arange(1, 11)
    >>> file_partition_bounds(seq, np.repeat([0, 1, 2, 3, 4], 2), 5)
    [(1, 5, 4), (5, 9, 4), (9, 11, 2)]
    >>> file_partition_bounds(seq, np.repeat([0, 1], [8, 2]), 5)
    [(1, 5, 4), (5, 9, 4), (9, 11, 2)]
    """
    seq = np.asarray(seq, dtype="i8")
    if not len(seq):
        return []
    files = np.asarray(files, dtype="i8")
    known = np.where(files >= 0, np.arange(len(files)), 0)
    files = files[np.maximum.accumulate(known)]  # a row without a file joins the one before
    # one entry per seq_num (rows sharing one are never split)
    values, first, counts = np.unique(seq, return_index=True, return_counts=True)
    owner = files[first]
    upto = np.concatenate([[0], np.cumsum(counts)])  # rows before each seq_num
    starts = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
    groups = list(zip(starts.tolist(), [*starts[1:].tolist(), len(values)]))
    cuts: list[int] = [0]  # positions (in ``values``) where a partition starts
    rows = 0
    for a, b in groups:
        n = int(upto[b] - upto[a])
        if n > chunk_size:  # a file larger than a partition: equal slices of it
            if cuts[-1] != a:
                cuts.append(a)
            pieces = -(-n // chunk_size)
            marks = upto[a] + np.arange(1, pieces) * n // pieces
            inner = np.searchsorted(upto, marks, side="left")
            cuts += [c for c in np.unique(inner).tolist() if a < c < b]
            cuts.append(b)
            rows = 0
        elif rows + n > chunk_size:
            if cuts[-1] != a:
                cuts.append(a)
            rows = n
        else:
            rows += n
    if cuts[-1] != len(values):
        cuts.append(len(values))
    return [(int(values[a]), int(values[b]) if b < len(values) else int(values[-1]) + 1,
             int(upto[b] - upto[a])) for a, b in zip(cuts[:-1], cuts[1:])]


def rows_without_events(counts: Mapping[str, tuple[int, int, int]],
                         layout: StreamLayout) -> bool:
    """Whether some rows of the stream may have no event (so no time, no internal values).

    Exact when the events' seq_nums are contiguous (the usual case); otherwise
    assumed (columns are then made nullable, which is always safe).
    """
    intervals = layout.intervals()
    if not intervals:
        return False
    if len(counts) != 1:
        return True
    n, lo, hi = next(iter(counts.values()))
    if n != hi - lo + 1:
        return True
    return any(a < lo or b - 1 > hi for a, b in intervals)
