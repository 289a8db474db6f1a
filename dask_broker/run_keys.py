"""How a run is named: uid, uid prefix, ``-N``, scan_id, or a number in a string.

The one resolver behind ``db[key]`` (:meth:`Broker.__getitem__
<dask_broker.Broker.__getitem__>`) and every ``dask-broker`` command that takes
a run, as databroker looks runs up:

=====================================  ==========================================
``"a1b2c3"``                           the run with this uid, else the one run
                                       whose uid starts with it
``-1``, ``-N``                         the latest run, the N-th latest
``42``                                 the most recent run with scan_id 42
``"-1"``, ``"42"``                     a whole number in a string counts as a
                                       number (databroker v1); ``"42"`` falls back
                                       to the uid prefix ``42`` when no run has
                                       scan_id 42
=====================================  ==========================================

:func:`run_or_asset` also takes a resource or stream_resource uid (``dask-broker
files``).
"""

from __future__ import annotations

import itertools
import re
from numbers import Integral
from typing import Any

from .errors import AmbiguousKeyError, RunIndexError, RunNotFoundError

__all__ = ["find_start", "run_or_asset"]

_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def find_start(store: Any, key: str | int) -> dict:
    """The start document of the run ``key`` names in ``store`` (see the module docstring).

    Raises
    ------
    RunNotFoundError
        No such uid, uid prefix or scan_id (a :class:`KeyError`).
    RunIndexError
        ``-N`` with fewer than N runs (a :class:`KeyError` and an :class:`IndexError`).
    AmbiguousKeyError
        A uid prefix matches several runs (a :class:`ValueError`).
    TypeError
        Neither a str nor an int.

    Examples
    --------
    >>> find_start(db.store, "-1")["uid"]   # doctest: +SKIP
    'a1b2c3d4-...'
    """
    if isinstance(key, str):
        return _by_str(store, key)
    if isinstance(key, Integral) and not isinstance(key, bool):
        return _by_int(store, int(key))
    raise TypeError(f"a run is named by a uid (str) or a number (int), not "
                    f"{type(key).__name__}")


def run_or_asset(db: Any, key: str) -> Any:
    """A resource or stream_resource uid as it is, else the run (a Header) ``db[key]`` names.

    What ``dask-broker files`` takes as its TARGET; ``-N`` always names a run.

    Examples
    --------
    >>> run_or_asset(db, "-1")   # doctest: +SKIP
    <Header uid='...' ...>
    """
    store = db.store
    if not (key.startswith("-") and _WHOLE_NUMBER.fullmatch(key)) and (
            store.get_resource(key) is not None or (
                store.supports_stream_data and store.get_stream_resource(key) is not None)):
        return key
    return db[key]


def _by_int(store: Any, key: int) -> dict:
    if key < 0:
        start = next(itertools.islice(store.iter_starts(), -key - 1, None), None)
        if start is None:
            raise RunIndexError(
                f"db[{key}]: the catalog holds fewer than {-key} runs ({store.display_uri})")
        return start
    start = next(iter(store.search({"scan_id": key})), None)
    if start is None:
        hint = ("; db[-1] is the latest run" if key == 0 else "")
        raise RunNotFoundError(f"no run with scan_id {key} in {store.display_uri}{hint}")
    return start


def _by_str(store: Any, key: str) -> dict:
    if _WHOLE_NUMBER.fullmatch(key):
        number = int(key)
        if number < 0:
            return _by_int(store, number)
        try:
            return _by_int(store, number)
        except RunNotFoundError as err:
            try:
                return _by_uid(store, key)
            except RunNotFoundError:
                raise RunNotFoundError(
                    f"no run with scan_id {number} or uid prefix {key!r} in "
                    f"{store.display_uri}") from err
    return _by_uid(store, key)


def _by_uid(store: Any, key: str) -> dict:
    start = store.get_start(key)
    if start is not None:
        return start
    matches = store.start_uids_with_prefix(key, limit=3) if key else []
    if not matches:
        raise RunNotFoundError(f"no run with uid or uid prefix {key!r} in {store.display_uri}")
    if len(matches) > 1:
        raise AmbiguousKeyError(
            f"uid prefix {key!r} matches several runs ({', '.join(matches[:2])}, ...); "
            "give more characters of the uid")
    return store.get_start(matches[0])
