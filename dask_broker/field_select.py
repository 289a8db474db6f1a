"""``fields=``: names or regexes, and the constants databroker merged into events.

databroker v1 reads each entry of ``fields`` as a regular expression that must
match a whole key, and pulls the matching configuration values of a stream's
devices, then start-document and stop-document values, into events and tables.
dask_broker does the same in :meth:`~dask_broker.EventSource.docs`,
:meth:`~dask_broker.EventSource.table` and ``to_xarray``:

* an entry selects a key it equals, or one it matches as a whole (``re.fullmatch``);
  an entry that is not a valid regex is a name only;
* data keys of the stream are selected first; then, per descriptor, the
  configuration values of its devices (``configuration[device]["data"]``,
  timestamps from ``configuration[device]["timestamps"]``), then start
  values (timestamp: the start time), then stop values (the stop time) --
  the first source holding a key wins;
* ``time`` and ``seq_num`` are never merged (they are the rows' own time and index);
* an entry that selects nothing is an :class:`~dask_broker.errors.UnknownFieldError`
  (databroker ignored it).

Examples
--------
>>> sel = FieldSelection(["det[12]", "motor"])
>>> sel.select(["motor", "det1", "det2", "det10"])
['det1', 'det2', 'motor']
>>> sel.unmatched(["motor"])
['det[12]']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import InvalidArgumentError

__all__ = ["FieldSelection", "Constant", "constants", "RESERVED_NAMES"]

#: Keys never merged from configuration, start or stop: the rows' own time and index.
RESERVED_NAMES = frozenset({"time", "seq_num"})


class FieldSelection:
    """The entries of a ``fields=`` argument: exact names, or regexes matching whole keys.

    Parameters
    ----------
    fields
        A name / regex, or a sequence of them.

    Raises
    ------
    InvalidArgumentError
        An entry that is not a string.

    Examples
    --------
    >>> FieldSelection("x").select(["x", "xx"])
    ['x']
    >>> FieldSelection(["x.*"]).select(["y", "x", "xx"])
    ['x', 'xx']
    """

    def __init__(self, fields: str | Sequence[str]):
        if isinstance(fields, str):
            fields = [fields]
        entries = list(dict.fromkeys(fields))
        bad = [f for f in entries if not isinstance(f, str)]
        if bad:
            raise InvalidArgumentError(
                f"fields must be names or regular expressions (str), not {bad!r}")
        self.entries: tuple[str, ...] = tuple(entries)
        self._regexes = tuple(_compile(f) for f in entries)

    def __repr__(self) -> str:
        return f"FieldSelection({list(self.entries)!r})"

    def _matches(self, i: int, name: str) -> bool:
        rx = self._regexes[i]
        return name == self.entries[i] or (rx is not None and rx.fullmatch(name) is not None)

    def matches(self, name: str) -> bool:
        """Whether some entry selects ``name``."""
        return any(self._matches(i, name) for i in range(len(self.entries)))

    def select(self, names: Iterable[str]) -> list[str]:
        """The names selected: by entry, in the order of the entries, then of ``names``."""
        names = list(names)
        out: dict[str, None] = {}
        for i in range(len(self.entries)):
            for name in names:
                if self._matches(i, name):
                    out.setdefault(name)
        return list(out)

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """The entries that select none of ``names``."""
        names = list(names)
        return [e for i, e in enumerate(self.entries)
                if not any(self._matches(i, n) for n in names)]


def _compile(entry: str) -> re.Pattern | None:
    try:
        return re.compile(entry)
    except re.error:
        return None  # a name only


@dataclass(frozen=True)
class Constant:
    """A value merged into every event of one descriptor."""

    value: Any
    timestamp: float | None
    source: str  # "configuration", "start" or "stop"


def constants(selection: FieldSelection, descriptor: Mapping, start: Mapping | None,
              stop: Mapping | None) -> dict[str, Constant]:
    """The values databroker merged into a descriptor's events for ``fields=``.

    Configuration of the descriptor's devices first (a later device's value of
    a key replaces an earlier one's, as databroker's merge does), then the start
    document, then the stop document; the first source holding a key wins.
    Keys that are data keys of the descriptor, and :data:`RESERVED_NAMES`, are
    never merged.  The result is in the order of the entries that select them.

    Examples
    --------
    >>> desc = {"data_keys": {"det": {}},
    ...         "configuration": {"det": {"data": {"exposure": 0.1},
    ...                                   "timestamps": {"exposure": 5.0}}}}
    >>> constants(FieldSelection(["exposure", "sample"]), desc,
    ...           {"time": 1.0, "sample": "Si"}, None)
    {'exposure': Constant(value=0.1, timestamp=5.0, source='configuration'), \
'sample': Constant(value='Si', timestamp=1.0, source='start')}
    """
    data: dict[str, Any] = {}
    stamps: dict[str, Any] = {}
    for conf in (descriptor.get("configuration") or {}).values():
        data.update(conf.get("data") or {})
        stamps.update(conf.get("timestamps") or {})
    sources = [("configuration", data, stamps.get)]
    for name, doc in (("start", start), ("stop", stop)):
        if doc:
            sources.append((name, doc, lambda key, t=doc.get("time"): t))
    skip = set(descriptor.get("data_keys") or ()) | RESERVED_NAMES
    out: dict[str, Constant] = {}
    for name, values, stamp in sources:
        for key in selection.select(values):
            if key not in skip and key not in out:
                out[key] = Constant(values[key], stamp(key), name)
    return {key: out[key] for key in selection.select(out)}  # in the order of the entries
