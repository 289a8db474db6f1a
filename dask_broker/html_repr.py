"""HTML summaries of a run and of a catalog, for notebooks (``_repr_html_``).

Every value is HTML-escaped: start documents hold whatever users typed.
"""

from __future__ import annotations

import datetime
import html
import json
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from .broker import Broker
    from .header import Header

__all__ = ["header_html", "broker_html"]

#: How many recent runs a catalog's summary lists.
RECENT_RUNS = 5


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _time(epoch: Any) -> str:
    """Local time, to the second, with its UTC offset."""
    try:
        stamp = datetime.datetime.fromtimestamp(float(epoch), tz=datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return stamp.astimezone().isoformat(sep=" ", timespec="seconds")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """A table whose cells are escaped (headers and caption included)."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{_text(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_text(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_text(v)}</td>" for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _fields_table(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th style='text-align:left'>{_text(k)}</th><td>{_text(v)}</td></tr>"
                   for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def _document(name: str, doc: Any) -> str:
    """A document, collapsed, as indented JSON."""
    text = json.dumps(doc, indent=1, sort_keys=True, default=repr)
    return f"<details><summary>{_text(name)}</summary><pre>{_text(text)}</pre></details>"


def _masked_uri(uri: str) -> str:
    """``uri`` without passwords, also in URIs nested in its query (``asset_registry_uri``)."""
    from urllib.parse import quote, unquote

    from .stores.mongo.uri import mask_uri

    head, sep, query = mask_uri(uri).partition("?")
    items = []
    for item in query.split("&") if sep else ():
        key, eq, value = item.partition("=")
        if "://" in unquote(value):
            value = quote(mask_uri(unquote(value)), safe="")
        items.append(key + eq + value)
    return head + sep + "&".join(items)


def _stream_rows(h: "Header") -> list[tuple[str, int, int, list[str]]]:
    """``(stream, events, rows, fields)`` per stream.

    ``rows`` also counts the seq_nums only stream_datum cover (exact when a
    descriptor's events have consecutive seq_nums, as a RunEngine writes them).
    """
    from .stream_data import StreamLayout

    store = h.event_source.store
    descs = h.descriptors
    counts = store.event_counts([d["uid"] for d in descs]) if descs else {}
    datums = store.stream_datums([d["uid"] for d in descs]) if (
        descs and store.supports_stream_data) else []
    resources = store.stream_resources(h.uid) if datums else []
    out = []
    for stream in dict.fromkeys(d.get("name", "primary") for d in descs):
        mine = [d for d in descs if d.get("name", "primary") == stream]
        events = sum(counts.get(d["uid"], (0,))[0] for d in mine)
        uids = {d["uid"] for d in mine}
        layout = StreamLayout.build(mine, [sd for sd in datums if sd["descriptor"] in uids],
                                    resources) if datums else None
        rows = events
        if layout is not None and layout.intervals():
            spans = list(layout.intervals())
            spans += [(c[1], c[2] + 1) for uid in uids if (c := counts.get(uid)) and c[0]]
            rows = _union_length(spans)
        fields = list(dict.fromkeys(k for d in mine for k in d["data_keys"]))
        out.append((stream, events, rows, fields))
    return out


def _union_length(spans: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def header_html(h: "Header") -> str:
    """A run's summary: uid, scan_id, plan_name, times, exit status, streams, documents.

    Examples
    --------
    >>> from IPython.display import HTML      # doctest: +SKIP
    >>> HTML(header_html(db[-1]))             # doctest: +SKIP
    """
    start, stop = h.start, h.stop
    summary = [
        ("uid", h.uid),
        ("scan_id", start.get("scan_id")),
        ("plan_name", start.get("plan_name")),
        ("start time", _time(start.get("time"))),
        ("stop time", _time(stop.get("time")) if stop else ""),
        ("exit status", stop.get("exit_status") if stop else "in progress (no stop document)"),
    ]
    streams = _stream_rows(h)
    table = _table(["stream", "events", "rows", "fields"],
                   [(s, e, r, ", ".join(f)) for s, e, r, f in streams])
    docs = _document("start document", start)
    if stop:
        docs += _document("stop document", stop)
    return (f"<div class='dask-broker-header'><strong>Run {_text(h.uid)}</strong>"
            f"{_fields_table(summary)}{table}{docs}</div>")


def broker_html(db: "Broker", recent: int = RECENT_RUNS) -> str:
    """A catalog's summary: its URI (password masked), how many runs, the latest few.

    Examples
    --------
    >>> from IPython.display import HTML      # doctest: +SKIP
    >>> HTML(broker_html(db))                 # doctest: +SKIP
    """
    import itertools

    store = db.store
    n = len(db)
    rows = []
    for start in itertools.islice(store.iter_starts(), recent):
        stop = store.get_stop(start["uid"])
        rows.append((start["uid"], start.get("scan_id"), start.get("plan_name"),
                     _time(start.get("time")),
                     stop.get("exit_status") if stop else "in progress"))
    runs = _table(["uid", "scan_id", "plan_name", "start time", "exit status"], rows,
                  caption="most recent runs")
    return (f"<div class='dask-broker-catalog'><strong>Catalog</strong>"
            f"{_fields_table([('uri', _masked_uri(store.uri)), ('runs', n)])}"
            f"{runs if rows else ''}</div>")
