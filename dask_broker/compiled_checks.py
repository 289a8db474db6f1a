"""Validation of single events compiled per descriptor: the RunEngine's hot path.

A RunEngine emits one event document at a time, all of one descriptor shaped
alike.  :class:`EventCheck` is made once per descriptor, from its data keys,
and answers in a few dict and type look-ups whether an event is certainly
valid -- what event-model's ``event`` schema and the storability checks of
:mod:`dask_broker.storable` would accept, with exactly the descriptor's keys
-- and, if so, packs it as a one-event page.  It never rejects: anything it is
not sure of (an array value, a non-ASCII string, a big integer, a missing
key) goes to the full validation, which accepts it or says precisely what is
wrong.

Examples
--------
>>> check = EventCheck("d1", frozenset({"x"}))
>>> check.page({"uid": "e1", "descriptor": "d1", "seq_num": 1, "time": 1.5,
...             "data": {"x": 2.0}, "timestamps": {"x": 1.5}})["data"]
{'x': [2.0]}
>>> check.page({"uid": "e1", "descriptor": "d1", "seq_num": "1", "time": 1.5,
...             "data": {"x": 2.0}, "timestamps": {"x": 1.5}}) is None
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EventCheck"]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_REQUIRED = frozenset({"uid", "descriptor", "seq_num", "time", "data", "timestamps"})
#: event-model's event schema allows no other key (``unevaluatedProperties: false``).
_ALLOWED = _REQUIRED | {"filled"}
_NUMBERS = (float, int)


def _plain(value: Any) -> bool:
    """A value every store keeps as it is, decided by its type alone (str: ASCII)."""
    t = type(value)
    if t is float or t is bool or value is None:
        return True
    if t is int:
        return _I64_MIN <= value <= _I64_MAX
    if t is str:
        return value.isascii()
    return _NUMPY_NUMBERS.get(t, False)


#: numpy scalar types that stores keep as numbers (bool, integers, floats of <= 64 bits).
_NUMPY_NUMBERS = {t: True for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                    np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                                    np.float64)}


class EventCheck:
    """The fast check of the events of one descriptor (see the module's docstring).

    Parameters
    ----------
    descriptor
        The descriptor's uid.
    keys
        The data keys its events carry (its ``STREAM:`` keys left out).
    """

    __slots__ = ("descriptor", "keys")

    def __init__(self, descriptor: str, keys: frozenset):
        self.descriptor = descriptor
        self.keys = keys

    def page(self, doc: Any) -> dict | None:
        """The event as a one-event page when it is certainly valid and storable, else None."""
        if type(doc) is not dict or not _REQUIRED <= doc.keys() <= _ALLOWED:
            return None
        uid, seq, time = doc["uid"], doc["seq_num"], doc["time"]
        data, stamps = doc["data"], doc["timestamps"]
        if (type(uid) is not str or not uid.isascii() or doc["descriptor"] != self.descriptor
                or type(seq) is not int or not _I64_MIN <= seq <= _I64_MAX
                or type(data) is not dict or type(stamps) is not dict
                or data.keys() != self.keys or stamps.keys() != self.keys):
            return None
        t = type(time)
        if t is not float and not (t is int and _I64_MIN <= time <= _I64_MAX):
            return None
        for value in data.values():
            if not _plain(value):
                return None
        for value in stamps.values():
            if type(value) not in _NUMBERS or not _plain(value):
                return None
        page = {"descriptor": self.descriptor, "uid": [uid], "seq_num": [seq], "time": [time],
                "data": {k: [v] for k, v in data.items()},
                "timestamps": {k: [v] for k, v in stamps.items()}}
        if "filled" in doc:  # an event without filled is stored without it
            filled = doc["filled"]
            if type(filled) is not dict:
                return None
            for key, value in filled.items():
                if key not in self.keys or not (type(value) is bool or (
                        type(value) is str and value.isascii())):
                    return None
            page["filled"] = {k: [v] for k, v in filled.items()}
        return page
