"""Runs of alike event documents in a suitcase-msgpack file, decoded a column at a time.

A RunEngine's events are written one by one -- suitcase-msgpack writes each as an
``event_page`` of one row -- so a file is mostly a long run of items that differ
only in their values: same keys in the same order, same descriptor, same type
of every value.  :class:`RowLayout` is the byte layout of one such item, found by
walking its msgpack encoding once; a run of items with that layout is then
checked as one block of bytes against it, and each value becomes a numpy column
(a field of a record dtype over the block: big-endian floats and ints converted
straight from their bytes), with no Python object per event but the uid strings.

A row belongs to the run only if every byte that is not a value (headers, keys,
type bytes, the name and the descriptor uid) is the layout's, and its values are
of the layout's kind (a fixint is below 0x80, a string is ASCII, ...);
anything else ends the run and is decoded by msgpack as usual.  Such a row is
exactly what msgpack would decode: the same keys, and values that are equal and
of a type that stores alike (ints as int64, floats as float64, ASCII strings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RowLayout", "Rows", "layout_of", "read_rows"]

#: Keys an event (or a one-row event_page) may have to be read a column at a time.
_EVENT_KEYS = frozenset({"uid", "descriptor", "seq_num", "time", "data", "timestamps",
                         "filled"})
_REQUIRED = frozenset({"uid", "descriptor", "seq_num", "time", "data", "timestamps"})
#: Type byte -> (kind, size of the value after it) of fixed-width numbers.
_NUMBERS = {0xca: (">f4", 4), 0xcb: (">f8", 8), 0xcc: (">u1", 1), 0xcd: (">u2", 2),
            0xce: (">u4", 4), 0xd0: (">i1", 1), 0xd1: (">i2", 2), 0xd2: (">i4", 4),
            0xd3: (">i8", 8)}


class _Unsupported(Exception):
    """An item whose layout is not one :func:`layout_of` reads a column at a time."""


@dataclass(frozen=True)
class _Slot:
    """One value of a row: where its bytes are, and how to read them."""

    column: tuple  # ("uid",), ("time",), ("data", key), ...
    offset: int
    kind: str  # a numpy dtype (">f8", ...), "fixint", "negfixint", "bool" or "str"
    size: int


@dataclass(frozen=True)
class Rows:
    """``count`` documents named ``name``, read as one event_page with numpy columns."""

    name: str
    page: dict
    count: int


class RowLayout:
    """The byte layout of one event item; reads runs of items laid out alike.

    Parameters
    ----------
    item
        The msgpack bytes of one ``[name, event]`` item (``name`` "event" or a
        one-row "event_page").
    name, slots, has_filled, descriptor
        What :func:`layout_of` found in it.
    """

    #: Rows checked before a run is read (a shorter run is left to msgpack).
    MIN_RUN = 16

    def __init__(self, item: bytes, name: str, slots: list[_Slot], has_filled: bool,
                 descriptor: str):
        self.length = len(item)
        self.name = name
        self.slots = slots
        self.has_filled = has_filled
        self.descriptor = descriptor
        # A row is laid out alike when (byte ^ expect) & mask is 0 for each of its bytes:
        # every byte that is not a value is the item's, and every value of its kind
        expect = np.frombuffer(item, np.uint8).copy()
        mask = np.full(self.length, 0xff, np.uint8)
        for s in slots:
            o = s.offset
            expect[o:o + s.size], mask[o:o + s.size] = _VALUE_CHECKS[s.kind]
        self._expect, self._mask = expect, mask
        self._tiles: tuple[np.ndarray, np.ndarray] | None = None
        # the bytes before the first value: a quick look that the next item may be alike
        self._prefix = item[:int(np.argmin(mask == 0xff)) if (mask != 0xff).any() else None]
        self._keys = {part: [s.column[1] for s in slots if s.column[0] == part]
                      for part in ("data", "timestamps", "filled")}
        # every value a field of one record: numpy reads and converts a column in one step
        self._record = np.dtype({
            "names": [f"v{i}" for i in range(len(slots))],
            "formats": [_FORMATS.get(s.kind, f"S{s.size}") for s in slots],
            "offsets": [s.offset for s in slots], "itemsize": self.length})

    def count(self, buffer: memoryview, start: int, limit: int) -> int:
        """How many rows from ``start`` (at most ``limit``) are laid out as this one."""
        n = min(limit, (len(buffer) - start) // self.length)
        if n <= 0 or buffer[start:start + len(self._prefix)] != self._prefix:
            return 0
        first = self._matching(buffer, start, min(n, self.MIN_RUN))
        if first < min(n, self.MIN_RUN) or n <= self.MIN_RUN:
            return first
        return self._matching(buffer, start, n)

    def _matching(self, buffer: memoryview, start: int, n: int) -> int:
        """How many of the ``n`` rows from ``start`` are laid out alike (the first that is
        not ends them)."""
        size = n * self.length
        if self._tiles is None or len(self._tiles[0]) < size:
            self._tiles = (np.tile(self._expect, n), np.tile(self._mask, n))
        expect, mask = self._tiles
        differ = np.frombuffer(buffer, np.uint8, size, start) ^ expect[:size]
        differ &= mask[:size]
        wrong = np.flatnonzero(differ)
        return int(wrong[0]) // self.length if len(wrong) else n

    def read(self, buffer: memoryview, start: int, n: int) -> Rows:
        """The event_page of the ``n`` rows from ``start`` (counted by :meth:`count`)."""
        records = np.frombuffer(buffer, self._record, n, start)
        columns = {s.column: _column(records[f"v{i}"], s) for i, s in enumerate(self.slots)}
        page = {"time": columns["time",], "uid": columns["uid",],
                "seq_num": columns["seq_num",], "descriptor": self.descriptor,
                "data": {k: columns["data", k] for k in self._keys["data"]},
                "timestamps": {k: columns["timestamps", k] for k in self._keys["timestamps"]}}
        if self.has_filled:
            page["filled"] = {k: columns["filled", k] for k in self._keys["filled"]}
        return Rows(self.name, page, n)


#: (expected bits, mask) of a value's bytes, by kind: a fixint is below 0x80, a negative
#: fixint at least 0xe0, a bool 0xc2 or 0xc3, a string ASCII (what msgpack decodes
#: as one character a byte); a number's bytes are anything.
_VALUE_CHECKS = {**{kind: (0, 0) for kind, _ in _NUMBERS.values()},
                 "fixint": (0, 0x80), "negfixint": (0xe0, 0xe0), "bool": (0xc3, 0xfe),
                 "str": (0, 0x80)}
#: numpy formats of the values' bytes (strings: ``S{size}``).
_FORMATS = {**{kind: kind for kind, _ in _NUMBERS.values()},
            "fixint": "u1", "negfixint": "i1", "bool": "u1"}


def _column(values: np.ndarray, slot: _Slot) -> np.ndarray | list:
    """A column of values as msgpack would give them: int64, float64, bool or ``str``."""
    if slot.kind == "str":
        n = slot.size
        text = values.tobytes().decode("ascii")
        return [text[i:i + n] for i in range(0, len(text), n)]
    if slot.kind == "bool":
        return values == 0xc3
    return values.astype("<f8" if slot.kind[1:2] == "f" else "<i8")


# ------------------------------------------------------------------ finding a layout
class _Walker:
    """Reads the msgpack encoding of one item, noting where each value is."""

    def __init__(self, item: bytes):
        self.item = item
        self.pos = 0

    def byte(self) -> int:
        b = self.item[self.pos]
        self.pos += 1
        return b

    def size(self, width: int) -> int:
        value = int.from_bytes(self.item[self.pos:self.pos + width], "big")
        self.pos += width
        return value

    def header(self, fix: int, fix_max: int, wide: int) -> int:
        """The length of a map or array (fix form, or the 16-bit form ``wide``)."""
        b = self.byte()
        if fix <= b <= fix_max:
            return b - fix
        if b == wide:
            return self.size(2)
        raise _Unsupported

    def text(self) -> tuple[int, int]:
        """(offset, length) of a str's bytes, which must be ASCII."""
        b = self.byte()
        if 0xa0 <= b <= 0xbf:
            n = b - 0xa0
        elif b in (0xd9, 0xda):
            n = self.size(1 if b == 0xd9 else 2)
        else:
            raise _Unsupported
        start = self.pos
        self.pos += n
        if self.pos > len(self.item) or not self.item[start:self.pos].isascii():
            raise _Unsupported
        return start, n

    def string(self) -> str:
        start, n = self.text()
        return self.item[start:start + n].decode("ascii")

    def scalar(self, column: tuple) -> _Slot:
        """A number, bool or string value: the slot it fills."""
        b = self.item[self.pos]
        if b < 0x80 or b >= 0xe0:
            self.pos += 1
            return _Slot(column, self.pos - 1, "fixint" if b < 0x80 else "negfixint", 1)
        if b in (0xc2, 0xc3):
            self.pos += 1
            return _Slot(column, self.pos - 1, "bool", 1)
        if b in _NUMBERS:
            kind, n = _NUMBERS[b]
            self.pos += 1 + n
            return _Slot(column, self.pos - n, kind, n)
        start, n = self.text()
        if not n:
            raise _Unsupported  # an empty string has no bytes to read
        return _Slot(column, start, "str", n)

    def value(self, column: tuple, in_list: bool) -> _Slot:
        if in_list and self.header(0x90, 0x9f, 0xdc) != 1:
            raise _Unsupported
        return self.scalar(column)


def layout_of(item: bytes) -> RowLayout | None:
    """The layout of one ``[name, event]`` item, or None if it is not read a column at a time.

    Examples
    --------
    >>> import msgpack
    >>> ev = {"uid": "u1", "descriptor": "d", "seq_num": 1, "time": 0.5,
    ...       "data": {"x": 1.5}, "timestamps": {"x": 0.5}}
    >>> layout = layout_of(msgpack.packb(["event", ev]))
    >>> buf = memoryview(msgpack.packb(["event", ev]) + msgpack.packb(["event", dict(ev, uid="u2")]))
    >>> layout.count(buf, 0, 10)
    2
    >>> layout.read(buf, 0, 2).page["uid"]
    ['u1', 'u2']
    """
    w = _Walker(item)
    try:
        if w.byte() != 0x92:
            return None
        name = w.string()
        if name not in ("event", "event_page"):
            return None
        in_list = name == "event_page"
        slots: list[_Slot] = []
        keys: list[str] = []
        descriptor = None
        for _ in range(w.header(0x80, 0x8f, 0xde)):
            key = w.string()
            keys.append(key)
            if key == "descriptor":
                descriptor = w.string()
            elif key in ("uid", "seq_num", "time"):
                slots.append(w.value((key,), in_list))
            elif key in ("data", "timestamps", "filled"):
                fields: list[str] = []
                for _ in range(w.header(0x80, 0x8f, 0xde)):
                    field = w.string()
                    fields.append(field)
                    slots.append(w.value((key, field), in_list))
                if len(set(fields)) != len(fields):
                    return None
            else:
                return None
    except (_Unsupported, IndexError, UnicodeDecodeError):
        return None
    kinds = {s.column: s.kind for s in slots}
    if (w.pos != len(item) or len(set(keys)) != len(keys) or not _REQUIRED <= set(keys)
            or not set(keys) <= _EVENT_KEYS or descriptor is None
            or kinds[("uid",)] != "str" or kinds[("seq_num",)] in ("str", "bool", ">f4", ">f8")
            or kinds[("time",)] in ("str", "bool")
            or any(k in ("str", "bool") for c, k in kinds.items() if c[0] == "timestamps")):
        return None  # left to msgpack, and to insert's validation
    return RowLayout(item, name, slots, "filled" in keys, descriptor)


def read_rows(layout: RowLayout | None, buffer: memoryview, start: int,
              limit: int) -> Rows | None:
    """The run of rows laid out as ``layout`` from ``start``, if it is long enough."""
    if layout is None:
        return None
    n = layout.count(buffer, start, limit)
    if n < min(layout.MIN_RUN, limit):
        return None
    return layout.read(buffer, start, n)
