"""Is this uid stored already?  64-bit hashes of uids, and a set of them in memory.

A catalog-wide unique index of random uids (uuid4) is a B-tree whose every
insert lands on a random leaf: once the index outgrows a batch, each batch of
N uids rewrites about N pages of the file (4 KiB per uid), and insert
throughput falls as the catalog grows.  The embedded store keeps instead, per
page of events, one row of their :func:`uid_hashes` (appended, never updated),
and each writing process holds all of them in a :class:`HashSet`: checking a
page of 10,000 uids is a few vectorized binary searches, whatever the catalog's
size, for 8 bytes of memory per stored event.  A hash found in the set is only
a candidate: the store compares the uids themselves before it reports a
duplicate, so a collision of two different uids never refuses a document.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

__all__ = ["uid_hashes", "HashSet"]

_U64 = np.uint64


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


_WEIGHTS = np.zeros(0, dtype=_U64)


def _weights(n: int) -> np.ndarray:
    """An odd 64-bit weight per position of two characters (the same in every process)."""
    global _WEIGHTS
    if _WEIGHTS.size < n:
        size = max(n, 2 * _WEIGHTS.size, 64)
        _WEIGHTS = _splitmix64(np.arange(1, size + 1, dtype=_U64)) | _U64(1)
    return _WEIGHTS[:n]


def uid_hashes(uids: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each uid (uint64), the same in every process and on every run.

    The uids become one fixed-width UCS-4 array; each 64-bit word (two characters)
    is folded (``x ^ x >> 32``), weighted by its position and summed, and the sum
    mixed by splitmix64's finalizer.  Trailing padding adds nothing, so a uid
    hashes alike whatever page it is in.

    Examples
    --------
    >>> h = uid_hashes(["a1b2", "c3d4", "a1b2"])
    >>> h.dtype, bool(h[0] == h[2]), bool(h[0] == h[1])
    (dtype('uint64'), True, False)
    >>> bool(uid_hashes(["a1b2"])[0] == uid_hashes(["a1b2", "a much longer uid"])[0])
    True
    """
    if len(uids) == 1 and type(uids[0]) is str:
        one = _one_hash(uids[0])
        if one is not None:
            return np.array([one], dtype=_U64)
    words = _words(uids)
    if words is None:
        return np.zeros(0, dtype=_U64)
    if not words.shape[1]:
        return _splitmix64(np.zeros(words.shape[0], dtype=_U64))
    folded = words >> _U64(32)
    folded ^= words
    return _splitmix64(np.einsum("ij,j->i", folded, _weights(words.shape[1])))


_MASK = 2**64 - 1


def _one_hash(uid: str) -> int | None:
    """:func:`uid_hashes` of one uid, in plain Python (numpy's per-call cost is the larger
    for one event); None for a str that is not valid Unicode."""
    try:
        points = uid.encode("utf-32-le")
    except UnicodeEncodeError:
        return None
    if len(points) % 8:
        points += b"\0\0\0\0"
    weights = _weights(len(points) // 8).tolist()
    total = 0
    for (word,), weight in zip(struct.iter_unpack("<Q", points), weights):
        total += (word ^ (word >> 32)) * weight
    z = (total + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _words(uids: Sequence[str]) -> np.ndarray | None:
    """The uids as rows of 64-bit words of two UCS-4 code points, zero-padded (None: no uid)."""
    n = len(uids)
    if not n:
        return None
    if isinstance(uids, list) and type(uids[0]) is str:
        # Uids of one length (a uuid4 has 36 characters): the code points of their
        # concatenation, each uid followed by one or two NULs to end on a whole word.
        width = len(uids[0])
        pad = 2 - width % 2
        try:
            points = (("\0" * pad).join(uids) + "\0" * pad).encode("utf-32-le")
        except (TypeError, UnicodeEncodeError):  # not str, or a lone surrogate
            points = b""
        if len(points) == 4 * n * (width + pad):
            cells = np.frombuffer(points, dtype=np.uint32)
            rows = cells.reshape(n, width + pad)
            # Exactly n * pad NULs, all where each row's padding is: every uid has
            # ``width`` characters, none of them NUL.
            if np.count_nonzero(cells) == n * width and not rows[:, width:].any():
                return cells.view(_U64).reshape(n, (width + pad) // 2)
    chars = np.asarray(uids, dtype=np.str_)
    width = chars.dtype.itemsize // 4
    if width % 2:
        width += 1
        chars = chars.astype(f"<U{width}")
    return np.ascontiguousarray(chars).view(_U64).reshape(n, width // 2)


class HashSet:
    """A growing set of uint64 hashes: sorted arrays merged as they grow (log-structured).

    Adding a batch appends it sorted, then merges the smallest arrays while one
    is no more than twice the next (so there are O(log n) arrays).  A bitmap of
    the hashes' top bits (8 to 64 bits per hash, grown as the set grows) answers
    most look-ups at once: only a hash whose bit is set -- one it holds, or 2-12%
    of the others -- is searched for (``np.searchsorted``) in the arrays, so a
    look-up costs about the same at 10 million hashes as at 100 thousand.
    Small batches (single events) wait in a Python set until there are
    :attr:`BUFFER` of them.  A hash is held once however often it is added (a
    sealed page brings back the hashes of the open pages it replaces).

    Examples
    --------
    >>> s = HashSet()
    >>> s.add(np.array([5, 1, 9], dtype=np.uint64))
    >>> s.contains(np.array([9, 2], dtype=np.uint64)).tolist(), len(s)
    ([True, False], 3)
    >>> s.add(np.array([9, 9, 4], dtype=np.uint64))
    >>> len(s)
    4
    """

    #: Hashes kept in a Python set before they become one sorted array.
    BUFFER = 4096

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []
        self._recent: set[int] = set()
        self._count = 0  # hashes in the levels
        self._bits = np.zeros(0, dtype=np.uint8)  # the bitmap of 2**_width bits
        self._width = 0

    def __len__(self) -> int:
        return sum(level.size for level in self._levels) + len(self._recent)

    def add(self, hashes: np.ndarray, *, held: np.ndarray | None = None) -> None:
        """Add hashes; each is held once, however often it is added.

        Parameters
        ----------
        hashes
            uint64 hashes, in any order, repeats allowed.
        held
            ``self.contains(hashes)``, where the caller has it already (saves
            looking the hashes up again).
        """
        hashes = np.asarray(hashes, dtype=_U64)
        if held is None:
            held = self.contains(hashes)
        if held.any():
            hashes = hashes[~held]
        if len(hashes) < 64:
            self._recent.update(hashes.tolist())
            if len(self._recent) < self.BUFFER:
                return
            hashes, self._recent = np.fromiter(self._recent, _U64, len(self._recent)), set()
        if not len(hashes):
            return
        levels = self._levels
        added = np.sort(hashes)
        if (added[1:] == added[:-1]).any():  # (np.unique is 20 times slower)
            added = added[np.concatenate(([True], added[1:] != added[:-1]))]
        levels.append(added)
        self._count += added.size
        if self._count > self._bits.size:  # fewer than 8 bits a hash: 32 or more again
            self._width = max(16, (self._count * 32).bit_length())
            self._bits = np.zeros(2 ** self._width // 8, dtype=np.uint8)
            for level in levels:
                self._mark(level)
        else:
            self._mark(added)
        while len(levels) > 1 and levels[-2].size <= 2 * levels[-1].size:
            b, a = levels.pop(), levels.pop()
            merged = np.concatenate([a, b])
            merged.sort(kind="stable")  # two sorted runs: a linear merge
            levels.append(merged)

    def _mark(self, ordered: np.ndarray) -> None:
        """Set the bitmap's bits of sorted hashes (one OR per byte: their bytes are sorted)."""
        if not ordered.size:
            return
        at = ordered >> _U64(64 - self._width)
        byte = (at >> _U64(3)).astype(np.intp)
        mask = np.left_shift(1, (at & _U64(7)).astype(np.uint8), dtype=np.uint8)
        starts = np.flatnonzero(np.diff(byte, prepend=-1))
        self._bits[byte[starts]] |= np.bitwise_or.reduceat(mask, starts)

    def _maybe(self, hashes: np.ndarray) -> np.ndarray:
        """A bool per hash: whether its bit is set (False: certainly not in the levels)."""
        if not self._width:
            return np.zeros(hashes.shape, dtype=bool)
        at = hashes >> _U64(64 - self._width)
        return ((self._bits[(at >> _U64(3)).astype(np.intp)] >> (at & _U64(7)).astype(np.uint8))
                & 1).astype(bool)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool per hash: whether the set holds it."""
        hashes = np.asarray(hashes, dtype=_U64)
        if hashes.size <= 4:
            return np.array([self._holds(h) for h in hashes.tolist()], dtype=bool)
        found = np.zeros(hashes.shape, dtype=bool)
        candidates = np.flatnonzero(self._maybe(hashes))
        order = candidates[np.argsort(hashes[candidates])]
        wanted = hashes[order]  # sorted keys make each binary search start where the last ended
        hit = np.zeros(wanted.shape, dtype=bool)
        for level in self._levels:
            at = np.searchsorted(level, wanted)
            np.minimum(at, level.size - 1, out=at)
            hit |= level[at] == wanted
        found[order] = hit
        if self._recent:
            found |= np.fromiter((h in self._recent for h in hashes.tolist()), bool,
                                 hashes.size)
        return found

    def _holds(self, h: int) -> bool:
        if h in self._recent:
            return True
        key = _U64(h)
        for level in self._levels:
            at = int(level.searchsorted(key))
            if at < level.size and level[at] == key:
                return True
        return False
