"""Reading a SQLite catalog: documents, datum (pages: :mod:`.datum`), event counts and
event pages.

Pages come in the order they were stored, a bounded batch of events at a time:
one indexed range query over pages, then one query for the wanted fields'
columns, whatever the number of events.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Sequence

from ..base import EventPageColumns
from ..pages import (SEAL_EVENTS, SEQ_RUN_COLUMNS, PageColumns, batches, decoded_pages,
                     seq_runs)
from . import datum
from .connection import SQL_VARS, chunks, marks
from .file import damaged

__all__ = ["ReadMethods"]


class ReadMethods:
    """Documents, datum and event pages out."""

    def _loads(self, text: str | bytes) -> Any:
        """A stored JSON value; text that is not JSON means a damaged file."""
        try:
            return json.loads(text)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise damaged(self._path, f"stored text is not JSON: {err}") from err

    def _one_doc(self, sql: str, params: tuple) -> dict | None:
        row = self._conn().execute(sql, params).fetchone()
        return self._loads(row[0]) if row else None

    def _docs(self, sql: str, params: tuple) -> list[dict]:
        return [self._loads(r[0]) for r in self._conn().execute(sql, params).fetchall()]

    def get_stop(self, run_uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM run_stop WHERE run_start = ?", (run_uid,))

    def get_descriptor(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM descriptor WHERE uid = ?", (uid,))

    def descriptors(self, run_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM descriptor WHERE run_start = ? ORDER BY id", (run_uid,))

    def get_resource(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM resource WHERE uid = ?", (uid,))

    def find_resources(self, *, root: str | None, resource_path: str | None) -> list[dict]:
        return self._docs(
            "SELECT doc FROM resource WHERE json_extract(doc, '$.resource_path') IS ? "
            "AND COALESCE(json_extract(doc, '$.root'), '') = COALESCE(?, '') ORDER BY id",
            (resource_path, root))

    def resources(self, run_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM resource WHERE run_start = ? ORDER BY id", (run_uid,))

    def datum(self, datum_ids: Sequence[str]) -> dict[str, dict]:
        with self._snapshot() as conn:
            found = datum.find(conn, datum_ids, self._loads)
            if self._datum_rows:
                found.update(self._datum_of_rows(conn, [i for i in datum_ids if i not in found]))
        return found

    def _datum_of_rows(self, conn, ids: list[str]) -> dict[str, dict]:
        """Datum of a read-only catalog before version 5 (one ``datum`` row each)."""
        out: dict[str, dict] = {}
        for chunk in chunks(list(dict.fromkeys(ids))):
            rows = conn.execute(
                "SELECT datum_id, resource, datum_kwargs FROM datum "
                f"WHERE datum_id IN ({marks(len(chunk))})", chunk).fetchall()
            kwargs = self._loads_many([r[2] for r in rows])
            for (datum_id, resource, _), kw in zip(rows, kwargs, strict=True):
                out[datum_id] = {"datum_id": datum_id, "resource": resource,
                                 "datum_kwargs": kw}
        return out

    def _loads_many(self, texts: list) -> list:
        """Stored JSON values, decoded in one parse (not one per value)."""
        if len(texts) > 1 and all(isinstance(t, str) for t in texts):
            try:
                values = json.loads("[" + ",".join(texts) + "]")
            except ValueError:
                values = None
            if values is not None and len(values) == len(texts):
                return values
        return [self._loads(t) for t in texts]

    def datum_of_resource(self, resource_uid: str) -> Iterator[dict]:
        with self._snapshot() as conn:
            yield from datum.of_resource(conn, resource_uid, self._loads)
            if self._datum_rows:
                cur = conn.execute("SELECT datum_id, datum_kwargs FROM datum WHERE resource = ? "
                                   "ORDER BY id", (resource_uid,))
                while rows := cur.fetchmany(1024):
                    for datum_id, kwargs in rows:
                        yield {"datum_id": datum_id, "resource": resource_uid,
                               "datum_kwargs": self._loads(kwargs)}

    def event_counts(self, descriptor_uids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        out = {}
        conn = self._conn()
        for chunk in chunks(list(descriptor_uids)):
            rows = conn.execute(
                "SELECT descriptor, SUM(n), MIN(seq_min), MAX(seq_max) FROM event_page "
                f"WHERE descriptor IN ({marks(len(chunk))}) GROUP BY descriptor", chunk)
            for desc, n, lo, hi in rows:
                out[desc] = (int(n), int(lo), int(hi))
        return out

    def seq_num_runs(self, descriptor_uids: Sequence[str]) -> list[tuple[int, int, int]]:
        """From page metadata; only pages whose seq_nums are not consecutive are decoded."""
        runs: list[tuple[int, int, int]] = []
        conn = self._conn()
        for chunk in chunks(list(descriptor_uids)):
            runs.extend(seq_runs(conn.execute(
                f"SELECT {SEQ_RUN_COLUMNS} FROM event_page "
                f"WHERE descriptor IN ({marks(len(chunk))})", chunk)))
        return sorted(runs)

    def iter_event_pages(
        self,
        descriptor_uids: Sequence[str],
        *,
        seq_range: tuple[int, int] | None = None,
        fields: Iterable[str] | None = None,
        timestamps: bool = True,
        uids: bool = False,
    ) -> Iterator[EventPageColumns]:
        with self._snapshot() as conn:
            yield from self._read_pages(conn, descriptor_uids=list(descriptor_uids),
                                        seq_range=seq_range,
                                        fields=None if fields is None else list(fields),
                                        timestamps=timestamps, uids=uids)

    def _read_pages(self, conn, *, descriptor_uids, fields, timestamps, uids,
                    seq_range=None, open_only=False, order: str = "id",
                    batch_events: int = 2 * SEAL_EVENTS * 8) -> Iterator[PageColumns]:
        """Pages in the order they were stored (``order="id"``; events of one descriptor
        sharing a seq_num come as stored, so the last stored wins -- the read contract of
        :meth:`Store.iter_event_pages`), fetched a bounded batch of events at a time."""
        where = [f"descriptor IN ({marks(len(descriptor_uids))})"]
        params: list[Any] = list(descriptor_uids)
        if seq_range is not None:
            lo, hi = seq_range
            where.append("seq_min < ? AND seq_max >= ?")
            params += [hi, lo]
        if open_only:
            where.append("sealed = 0")
        pages = conn.execute(
            f"SELECT id, n FROM event_page WHERE {' AND '.join(where)} ORDER BY {order}",
            params).fetchall()
        meta_sql = "id, descriptor, seq_num, time" + (", uid" if uids else "")
        col_sql = "page_id, field, codec, data" + (", ts_codec, ts" if timestamps else "")
        for ids in batches(pages, batch_events, SQL_VARS):
            in_ids = marks(len(ids))
            metas = {r[0]: r for r in conn.execute(
                f"SELECT {meta_sql} FROM event_page WHERE id IN ({in_ids})", ids)}
            by_page: dict[int, list] = {}
            if fields is None or fields:
                q = f"SELECT {col_sql} FROM page_column WHERE page_id IN ({in_ids})"
                qparams: list[Any] = list(ids)
                if fields is not None:
                    q += f" AND field IN ({marks(len(fields))})"
                    qparams += fields
                for r in conn.execute(q, qparams):
                    by_page.setdefault(r[0], []).append(r)
            yield from decoded_pages(ids, metas, by_page, uids=uids, timestamps=timestamps,
                                     seq_range=seq_range, damaged=self._page_damage,
                                     loads=self._loads)

    def _page_damage(self, page_id: int, err: Exception) -> Exception:
        return damaged(self._path, f"event page {page_id} cannot be decoded: "
                                   f"{type(err).__name__}: {err}")

    def get_stream_resource(self, uid: str) -> dict | None:
        return self._one_doc("SELECT doc FROM stream_resource WHERE uid = ?", (uid,))

    def stream_resources(self, run_uid: str) -> list[dict]:
        return self._docs(
            "SELECT doc FROM stream_resource WHERE run_start = ? OR uid IN ("
            " SELECT sd.stream_resource FROM stream_datum sd JOIN descriptor d"
            " ON sd.descriptor = d.uid WHERE d.run_start = ?) ORDER BY id", (run_uid, run_uid))

    def stream_datums(self, descriptor_uids: Sequence[str]) -> list[dict]:
        out: list[tuple[int, str]] = []
        conn = self._conn()
        for chunk in chunks(list(descriptor_uids)):
            out.extend(conn.execute(
                f"SELECT id, doc FROM stream_datum WHERE descriptor IN ({marks(len(chunk))})",
                chunk).fetchall())
        out.sort()
        return [self._loads(doc) for _, doc in out]

    def stream_datums_of_resource(self, stream_resource_uid: str) -> list[dict]:
        return self._docs("SELECT doc FROM stream_datum WHERE stream_resource = ? ORDER BY id",
                          (stream_resource_uid,))

    def iter_stream_resources(self) -> Iterator[dict]:
        return self._iter_docs("SELECT doc FROM stream_resource ORDER BY id")

    def iter_resources(self) -> Iterator[dict]:
        return self._iter_docs("SELECT doc FROM resource ORDER BY id")

    def _iter_docs(self, sql: str) -> Iterator[dict]:
        with self._snapshot() as conn:
            cur = conn.execute(sql)
            while rows := cur.fetchmany(256):
                for (doc,) in rows:
                    yield json.loads(doc)

    def resource_history(self, resource_uid: str) -> list[dict]:
        rows = self._conn().execute(
            "SELECT time, cmd, cmd_kwargs, old, new FROM resource_update WHERE resource = ? "
            "ORDER BY id", (resource_uid,)).fetchall()
        return [{"resource": resource_uid, "old": self._loads(old), "new": self._loads(new),
                 "time": t, "cmd": cmd, "cmd_kwargs": self._loads(kwargs)}
                for t, cmd, kwargs, old, new in rows]
