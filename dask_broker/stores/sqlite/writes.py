"""Writing documents other than events to a SQLite catalog, and resource updates.

Every write is one ``BEGIN IMMEDIATE`` transaction (:meth:`ConnectionMethods._write
<.connection.ConnectionMethods._write>`): a call that raises leaves nothing behind.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Mapping, Sequence

from ...codec import dumps
from ...errors import DuplicateUidError, RunAlreadyStoppedError, UnknownReferenceError
from ...text_search import index_text
from ..base import check_resource_changes, first_repeat
from . import datum
from .connection import chunks, marks
from .schema import TEXT_TABLE

__all__ = ["WriteMethods"]


def _indexed_scan_id(scan_id: Any) -> int | float | None:
    """The scan_id for the indexed column: a plain number SQLite holds, else NULL (a search
    matches those rows in Python)."""
    if isinstance(scan_id, bool) or not isinstance(scan_id, (int, float)):
        return None
    if isinstance(scan_id, int) and not -(2**63) <= scan_id < 2**63:
        return None
    return scan_id


class WriteMethods:
    """Start, stop, descriptor, resource, datum and stream documents in; resource updates."""

    def _insert_unique(self, sql: str, params: tuple, doc_type: str, uid: str) -> None:
        try:
            with self._write() as conn:
                conn.execute(sql, params)
        except sqlite3.IntegrityError as err:
            raise DuplicateUidError(
                f"{doc_type} {uid!r} is already stored; documents are immutable, "
                "so give the new document a new uid"
            ) from err

    def insert_start(self, doc: Mapping) -> None:
        """Store a start document, and its words in the full-text table (one transaction)."""
        row = (doc["uid"], doc["time"], _indexed_scan_id(doc.get("scan_id")), dumps(doc))
        text = index_text(doc)
        try:
            with self._write() as conn:
                cur = conn.execute(
                    "INSERT INTO run_start (uid, time, scan_id, doc) VALUES (?, ?, ?, ?)", row)
                conn.execute(f"INSERT INTO {TEXT_TABLE} (rowid, words) VALUES (?, ?)",
                             (cur.lastrowid, text))
        except sqlite3.IntegrityError as err:
            raise DuplicateUidError(
                f"start {doc['uid']!r} is already stored; documents are immutable, "
                "so give the new document a new uid"
            ) from err

    def insert_stop(self, doc: Mapping) -> None:
        try:
            with self._write() as conn:
                conn.execute("INSERT INTO run_stop (uid, run_start, doc) VALUES (?, ?, ?)",
                             (doc["uid"], doc["run_start"], dumps(doc)))
        except sqlite3.IntegrityError as err:
            if "run_stop.run_start" in str(err):
                raise RunAlreadyStoppedError(
                    f"stop {doc['uid']!r}: run {doc['run_start']!r} already has a stop "
                    "document; a run is stopped once"
                ) from err
            raise DuplicateUidError(f"stop {doc['uid']!r} is already stored") from err

    def insert_descriptor(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO descriptor (uid, run_start, name, doc) VALUES (?, ?, ?, ?)",
            (doc["uid"], doc["run_start"], doc.get("name", "primary"), dumps(doc)),
            "descriptor", doc["uid"],
        )

    def insert_resource(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO resource (uid, run_start, doc) VALUES (?, ?, ?)",
            (doc["uid"], doc.get("run_start"), dumps(doc)),
            "resource", doc["uid"],
        )

    def insert_datum_page(self, page: Mapping) -> None:
        """Store a datum_page as one page (see :mod:`.datum`)."""
        with self._write() as conn:
            datum.insert_page(conn, page)

    supports_stream_data = True

    def insert_stream_resource(self, doc: Mapping) -> None:
        self._insert_unique(
            "INSERT INTO stream_resource (uid, run_start, data_key, doc) VALUES (?, ?, ?, ?)",
            (doc["uid"], doc.get("run_start"), doc.get("data_key"), dumps(doc)),
            "stream_resource", doc["uid"],
        )

    def insert_stream_datums(self, docs: Sequence[Mapping]) -> None:
        if not docs:
            return
        rows = [(d["uid"], d["stream_resource"], d["descriptor"], d["seq_nums"]["start"],
                 d["seq_nums"]["stop"], dumps(d)) for d in docs]
        try:
            with self._write() as conn:
                conn.executemany(
                    "INSERT INTO stream_datum (uid, stream_resource, descriptor, seq_start, "
                    "seq_stop, doc) VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError as err:
            dup = self._first_duplicate("stream_datum", "uid", [d["uid"] for d in docs])
            raise DuplicateUidError(
                f"stream_datum {dup!r} is already stored; nothing of these {len(docs)} "
                "stream_datum was written") from err

    def update_resource(self, resource_uid: str, changes: Mapping, *, cmd: str,
                        cmd_kwargs: Mapping) -> dict:
        changes = check_resource_changes(resource_uid, changes)
        with self._write() as conn:
            table = "resource"
            row = conn.execute("SELECT doc FROM resource WHERE uid = ?", (resource_uid,)).fetchone()
            if row is None:
                table = "stream_resource"
                row = conn.execute("SELECT doc FROM stream_resource WHERE uid = ?",
                                   (resource_uid,)).fetchone()
            if row is None:
                raise UnknownReferenceError(
                    f"no resource or stream_resource with uid {resource_uid!r} in "
                    f"{self.display_uri}; "
                    "nothing was updated")
            old = self._loads(row[0])
            new = {**old, **changes}
            conn.execute(f"UPDATE {table} SET doc = ? WHERE uid = ?", (dumps(new), resource_uid))
            conn.execute(
                "INSERT INTO resource_update (resource, time, cmd, cmd_kwargs, old, new) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (resource_uid, time.time(), cmd, dumps(dict(cmd_kwargs)), row[0], dumps(new)))
        return json.loads(dumps(new))

    def _first_duplicate(self, table: str, column: str, ids: Sequence[str]) -> str:
        repeated = first_repeat(ids)
        if repeated is not None:
            return repeated
        conn = self._conn()
        for chunk in chunks(ids):
            row = conn.execute(
                f"SELECT {column} FROM {table} WHERE {column} IN ({marks(len(chunk))}) LIMIT 1",
                chunk).fetchone()
            if row:
                return row[0]
        return ids[0]
