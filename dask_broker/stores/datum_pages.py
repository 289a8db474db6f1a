"""Datum stored as pages: what the SQLite and PostgreSQL catalogs share.

A stored page holds a datum_page as it came: its resource, its datum ids (a JSON
list) and its datum_kwargs as columns (a JSON object of lists), so a page of
10,000 datum is one row written and one JSON parse read back, and no
catalog-wide B-tree of random datum ids is updated per datum.  Datum ids are
found again two ways:

- **Counted ids** (what event-model and ophyd write: ``"<resource uid>/<n>"``,
  ``n`` written as ``str(n)`` writes a non-negative 64-bit integer): a page whose
  ids are all of its own resource keeps the least and greatest ``n`` (``first``,
  ``last``), indexed with the resource; ``"R/n"`` is looked for in the pages of
  ``R`` whose range holds ``n``.  A page of consecutive ids in order (``dense``,
  the usual page) holds ``"R/n"`` at row ``n - first``, found without decoding
  its ids.
- **Other ids**: their 64-bit hashes (:func:`~.uid_hashes.uid_hashes`) are rows
  of a ``datum_key`` table (hash, page id); a hash found makes a candidate page,
  whose ids decide.

Uniqueness is checked the same way, in the write transaction, before a page is
written: an id repeated within the page or already stored refuses the page.
Each store answers the few queries of :class:`PageQueries` in its own SQL.

Examples
--------
>>> counted_range("r1", ["r1/0", "r1/1", "r1/7"])
(0, 7)
>>> counted_range("r1", ["r1/0", "r1/01"]) is None  # "01" is not how 1 is written
True
>>> shape = PageShape.of({"resource": "r1", "datum_id": ["r1/3", "r1/4"]})
>>> shape.first, shape.last, shape.dense
(3, 4, True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..errors import DuplicateUidError
from .base import first_repeat
from .uid_hashes import uid_hashes

__all__ = ["PageQueries", "PageShape", "counted_range", "key_hashes", "check_new", "find",
           "datum_of_page", "pages_of_rows"]

_INT64_MAX = 2**63 - 1
#: Datum per page when rows of an older catalog become pages.
MIGRATED_PAGE = 10_000

#: Decodes a stored JSON text (the store's: damaged text is reported as such).
Loads = Callable[[Any], Any]


class PageQueries(Protocol):
    """The queries a store answers, in one transaction, for :func:`find` and :func:`check_new`."""

    def in_range(self, resource: str, lo: int, hi: int) -> Iterable[tuple[int, int, int, bool]]:
        """``(page id, first, last, dense)`` of the counted pages of ``resource``
        whose range meets ``[lo, hi]``."""

    def with_keys(self, ids: Sequence[str]) -> Iterable[int]:
        """Ids of the pages whose ``datum_key`` rows hold any of the :func:`key_hashes`
        of ``ids`` (hashed only when the table has rows)."""

    def ids_of(self, page_ids: list[int]) -> Iterable[tuple[int, str, Any]]:
        """``(page id, resource, datum_id text)`` of these pages."""

    def kwargs_of(self, page_id: int) -> Any:
        """The ``datum_kwargs`` text of a page."""


def counted_range(resource: str, ids: Sequence[str]) -> tuple[int, int] | None:
    """``(least, greatest)`` n of ids that are all ``"<resource>/<n>"``, else None.

    ``n`` must be written as ``str(n)`` writes it (no sign, no leading zero) and
    fit 64 bits, so that ``"R/n"`` names exactly one integer and back.
    """
    numbers = _counted(resource, ids)
    return None if numbers is None else (int(numbers.min()), int(numbers.max()))


def _counted(resource: str, ids: Sequence[str]) -> np.ndarray | None:
    """The n of ids that are all ``"<resource>/<n>"`` (see :func:`counted_range`), else None."""
    prefix = resource + "/"
    if not ids or not all(map(str.startswith, ids, itertools.repeat(prefix))):
        return None
    cut = len(prefix)
    tails = [i[cut:] for i in ids]
    try:
        numbers = list(map(int, tails))
    except ValueError:
        return None
    # written as str(n) writes it: refuses "", "+1", "-1", "01", "1_0", " 1", other digits
    if list(map(str, numbers)) != tails or min(numbers) < 0 or max(numbers) > _INT64_MAX:
        return None
    return np.array(numbers, dtype=np.int64)


def _split(datum_id: Any) -> tuple[str, int] | None:
    """``("R", n)`` of a counted id ``"R/n"``, else None."""
    if type(datum_id) is not str:
        return None
    resource, sep, tail = datum_id.rpartition("/")
    if not sep or not tail.isdigit():
        return None
    try:
        n = int(tail)
    except ValueError:
        return None
    return (resource, n) if str(n) == tail and n <= _INT64_MAX else None


def key_hashes(ids: Sequence[str]) -> list[int]:
    """The ``datum_key`` hashes of ids (:func:`~.uid_hashes.uid_hashes` as signed 64-bit
    integers, which SQL stores)."""
    return uid_hashes(list(ids)).view(np.int64).tolist()


@dataclass(frozen=True)
class PageShape:
    """How a page is stored: its counted range (``first``, ``last``: None for other
    ids) and whether its ids are the range's, in order (``dense``)."""

    numbers: np.ndarray | None
    first: int | None
    last: int | None
    dense: bool

    @classmethod
    def of(cls, page: Mapping) -> "PageShape":
        """The shape of a datum_page; DuplicateUidError for an id repeated within it."""
        ids, resource = page["datum_id"], page["resource"]
        numbers = _counted(resource, ids)
        if numbers is None:
            repeated = len(set(ids)) != len(ids)
        else:
            ordered = np.sort(numbers)
            repeated = bool((ordered[1:] == ordered[:-1]).any())
        if repeated:
            raise DuplicateUidError(
                f"datum {first_repeat(list(ids))!r} (resource {resource!r}) is repeated "
                "within this datum_page; nothing of it was written")
        if numbers is None:
            return cls(None, None, None, False)
        first, last = int(ordered[0]), int(ordered[-1])
        dense = last - first + 1 == len(ids) and bool((numbers[1:] > numbers[:-1]).all())
        return cls(numbers, first, last, dense)


def _located(queries: PageQueries, ids: Sequence[str], loads: Loads,
             counted: Mapping[str, Any] | None = None) -> dict[int, tuple[str, list]]:
    """Where the stored ones of ``ids`` are: page id -> (resource, [(datum id, row)]).

    ``counted``: the n of the counted ids by resource, when the caller knows them.
    """
    if counted is None:
        counted = {}
        for datum_id in ids:
            parts = _split(datum_id)
            if parts is not None:
                counted.setdefault(parts[0], []).append(parts[1])
    found: dict[int, tuple[str, list]] = {}
    undecided: set[int] = set()
    for resource, numbers in counted.items():
        wanted = np.asarray(numbers, dtype=np.int64)
        rows = list(queries.in_range(resource, int(wanted.min()), int(wanted.max())))
        if rows:
            wanted = np.unique(wanted)
        for page_id, lo, hi, dense in rows:
            a, b = np.searchsorted(wanted, [lo, hi + 1])
            if a == b:
                continue
            if dense:
                found[page_id] = (resource, [(f"{resource}/{k}", k - lo)
                                             for k in wanted[a:b].tolist()])
            else:
                undecided.add(page_id)
    undecided.update(queries.with_keys(ids))
    if undecided:
        wanted_ids = set(ids)
        for page_id, resource, id_text in queries.ids_of(sorted(undecided)):
            hits = [(d, i) for i, d in enumerate(loads(id_text)) if d in wanted_ids]
            if hits:
                found[page_id] = (resource, hits)
    return found


def check_new(queries: PageQueries, page: Mapping, loads: Loads) -> PageShape:
    """The shape of a page to write, once sure none of its ids is stored or repeated.

    Raises
    ------
    DuplicateUidError
        Naming the first id of the page that is repeated or already stored.
    """
    shape = PageShape.of(page)
    ids, resource = page["datum_id"], page["resource"]
    located = _located(queries, ids, loads,
                       None if shape.numbers is None else {resource: shape.numbers})
    if located:
        stored = {d for _, hits in located.values() for d, _ in hits}
        dup = next(i for i in ids if i in stored)
        raise DuplicateUidError(
            f"datum {dup!r} (resource {resource!r}) is already stored; nothing of this "
            "datum_page was written")
    return shape


def find(queries: PageQueries, ids: Sequence[str], loads: Loads) -> dict[str, dict]:
    """The stored datum of ``ids`` (those not stored are absent)."""
    out: dict[str, dict] = {}
    if not ids:
        return out
    for page_id, (resource, hits) in sorted(_located(queries, ids, loads).items()):
        kwargs = loads(queries.kwargs_of(page_id))
        keys = list(kwargs)
        for datum_id, i in hits:
            out[datum_id] = {"datum_id": datum_id, "resource": resource,
                             "datum_kwargs": {k: kwargs[k][i] for k in keys}}
    return out


def datum_of_page(resource: str, n: int, ids: list, kwargs: Mapping[str, list]
                  ) -> Iterator[dict]:
    """The datum documents of one stored page (decoded ids and kwargs columns)."""
    keys = list(kwargs)
    rows = (dict(zip(keys, row)) for row in zip(*kwargs.values())) if keys else \
        ({} for _ in range(n))
    for datum_id, row in zip(ids, rows, strict=True):
        yield {"datum_id": datum_id, "resource": resource, "datum_kwargs": row}


def pages_of_rows(rows: Iterable[tuple[str, str, dict]]) -> Iterator[dict]:
    """Datum rows of an older catalog (``(datum_id, resource, datum_kwargs)``, in stored
    order) as datum_pages: runs of one resource whose kwargs have the same keys, of at
    most :data:`MIGRATED_PAGE` datum."""
    pending: list[tuple[str, str, dict]] = []
    keys: list[str] = []
    for row in itertools.chain(rows, [None]):
        if pending and (row is None or row[1] != pending[0][1] or
                        list(row[2]) != keys or len(pending) >= MIGRATED_PAGE):
            yield {"resource": pending[0][1], "datum_id": [r[0] for r in pending],
                   "datum_kwargs": {k: [r[2][k] for r in pending] for k in keys}}
            pending = []
        if row is not None:
            if not pending:
                keys = list(row[2])
            pending.append(row)
