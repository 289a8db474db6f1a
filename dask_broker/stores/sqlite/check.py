"""Checking a catalog file: SQLite's integrity check, then every run read back.

``PRAGMA integrity_check`` finds damage in the file's structure (pages, indexes);
reading each run's documents and event pages finds what that damage costs, run
by run, and also text or buffers that no longer decode.  Used by
``dask-broker check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .file import connect

if TYPE_CHECKING:
    from .store import SQLiteStore

__all__ = ["CatalogCheck", "RunCheck", "check_catalog", "check_run"]


@dataclass(frozen=True)
class RunCheck:
    """What could be read of one run: its events, and the parts that failed."""

    uid: str
    scan_id: Any = None
    events: int = 0
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class CatalogCheck:
    """The result of :func:`check_catalog`."""

    path: Path
    #: ``("ok",)``, or what SQLite's integrity check found wrong.
    integrity: tuple[str, ...]
    runs: tuple[RunCheck, ...]
    #: Why the list of runs may be incomplete (None: it was read to the end).
    listing: str | None = None

    @property
    def ok(self) -> bool:
        return self.integrity == ("ok",) and self.listing is None and all(r.ok for r in self.runs)


def _what(err: BaseException) -> str:
    return getattr(err, "detail", None) or f"{type(err).__name__}: {err}"


def check_run(store: "SQLiteStore", uid: str) -> RunCheck:
    """Read every document and event page of run ``uid``; report what failed.

    Examples
    --------
    >>> check_run(store, run_uid).ok   # doctest: +SKIP
    True
    """
    problems: list[str] = []

    def attempt(what: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as err:  # noqa: BLE001 -- a checker reports whatever reading raises
            problems.append(f"{what}: {_what(err)}")
            return None

    start = attempt("start document", lambda: store.get_start(uid))
    if start is None and not problems:
        problems.append("start document: missing")
    attempt("stop document", lambda: store.get_stop(uid))
    descriptors = attempt("descriptors", lambda: store.descriptors(uid)) or []
    events = 0
    for desc in descriptors:
        n = attempt(f"events of descriptor {desc['uid']} ({desc.get('name', 'primary')!r})",
                    lambda: sum(len(page) for page in store.iter_event_pages(
                        [desc["uid"]], uids=True)))
        events += n or 0
    for resource in attempt("resources", lambda: store.resources(uid)) or []:
        attempt(f"datum of resource {resource['uid']}",
                lambda: sum(1 for _ in store.datum_of_resource(resource["uid"])))
    attempt("stream_resource documents", lambda: store.stream_resources(uid))
    attempt("stream_datum documents",
            lambda: store.stream_datums([d["uid"] for d in descriptors]))
    return RunCheck(uid, (start or {}).get("scan_id"), events, tuple(problems))


def _run_uids(path: Path) -> tuple[list[str], str | None]:
    """Every run's uid, from the start documents and from the descriptors' run_start.

    A table that cannot be read to the end gives what was read before the damage,
    and a note saying so.
    """
    uids: dict[str, None] = {}
    notes = []
    conn = connect(path, read_only=True)
    try:
        for table, sql in (("run_start", "SELECT uid FROM run_start ORDER BY id"),
                           ("descriptor", "SELECT run_start FROM descriptor "
                                          "GROUP BY run_start ORDER BY MIN(id)")):
            try:
                cursor = conn.execute(sql)
                while rows := cursor.fetchmany(256):
                    uids.update((uid, None) for (uid,) in rows)
            except Exception as err:  # noqa: BLE001
                notes.append(f"the table {table} cannot be read to the end ({_what(err)}); "
                             f"runs listed before the damage: {len(uids)}")
    finally:
        conn.close()
    return list(uids), "; ".join(notes) or None


def _integrity(path: Path, max_errors: int) -> tuple[str, ...]:
    conn = connect(path, read_only=True)
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(max_errors)})").fetchall()
        lines = [line for (text,) in rows for line in str(text).splitlines()]
        return tuple(line for line in lines if not line.startswith("*** in database"))
    except Exception as err:  # noqa: BLE001
        return (f"the integrity check itself failed: {_what(err)}",)
    finally:
        conn.close()


def check_catalog(store: "SQLiteStore", *, max_errors: int = 20,
                  progress: Callable[[RunCheck], None] = lambda run: None) -> CatalogCheck:
    """SQLite's integrity check of the catalog file, then every run read back.

    Parameters
    ----------
    store
        The catalog (open it read-only: checking writes nothing).
    max_errors
        At most this many problems are taken from the integrity check.
    progress
        Called with each run's result as it is checked.

    Examples
    --------
    >>> store = SQLiteStore.from_uri("sqlite:////data/catalog.db?mode=ro")  # doctest: +SKIP
    >>> report = check_catalog(store)  # doctest: +SKIP
    >>> report.ok, [r.uid for r in report.runs if not r.ok]   # doctest: +SKIP
    (False, ['a1b2c3...'])
    """
    integrity = _integrity(store.path, max_errors)
    uids, listing = _run_uids(store.path)
    runs = []
    for uid in uids:
        runs.append(check_run(store, uid))
        progress(runs[-1])
    return CatalogCheck(store.path, integrity, tuple(runs), listing)
