"""``dask_broker.ingest`` of files laid out as suitcase writes them, against baselines
measured on the same file in the same run.

Scenarios (quick / ``--full`` sizes: 300k / 1M events of 10 float fields and an
int field, one run)
- ``ingest msgpack``: a suitcase-msgpack file.  suitcase-msgpack is an
  ``event_model.DocumentRouter`` that writes ``event_page`` (not ``event``), so a
  RunEngine's events are saved as one-row event_pages, each packed with
  ``msgpack.packb(..., default=msgpack_numpy.encode, use_bin_type=True)``;
  :func:`write_msgpack` writes exactly those bytes (``tests/test_ingest.py`` checks
  them against suitcase-msgpack's own Serializer).  Baselines: decoding the file
  with ``msgpack.Unpacker`` and doing nothing else, and a naive columnar ingest
  (decode, append each value to its field's list, write every 10,000 events with
  the naive columnar SQLite writer of ``bench_insert``).
- ``ingest jsonl``: a suitcase-jsonl file (one ``json.dumps([name, doc])`` line per
  document, events as ``event``).  Baseline: ``json.loads`` of every line.

Each measure ingests into a new catalog (``synchronous=full``, the default).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from itertools import count
from pathlib import Path

import numpy as np

from dask_broker import Broker
from dask_broker.testing import RunBuilder

from .bench_insert import FIELDS, PAGE, NaiveColumnar, _data_keys, _k
from .common import Result, measure


def run_documents(n: int):
    """``(name, doc)`` of one run of ``n`` events, as a RunEngine emits them."""
    run = RunBuilder()
    bundle, desc = run.bundle, run.descriptor("primary", _data_keys())
    yield "start", bundle.start_doc
    yield "descriptor", desc.descriptor_doc
    d = desc.descriptor_doc["uid"]
    rng = np.random.default_rng(2)
    for first in range(0, n, PAGE):
        k = min(PAGE, n - first)
        values = rng.random((k, 10)).tolist()
        for i in range(k):
            seq = first + i + 1
            t = 1.7e9 + seq * 0.01
            data = dict(zip(FIELDS, values[i]))
            data["count"] = seq
            yield "event", {"uid": str(uuid.uuid4()), "descriptor": d, "seq_num": seq,
                            "time": t, "data": data, "timestamps": {f: t for f in FIELDS},
                            "filled": {}}
    yield "stop", bundle.compose_stop()


def write_msgpack(path: Path, documents) -> None:
    """The bytes suitcase-msgpack writes for ``documents``: each event as a one-row
    event_page, each datum as a one-datum datum_page (its DocumentRouter's doing)."""
    import event_model
    import msgpack
    import msgpack_numpy

    pack = {"event": ("event_page", event_model.pack_event_page),
            "datum": ("datum_page", event_model.pack_datum_page)}
    with open(path, "wb") as f:
        for name, doc in documents:
            if name in pack:
                name, doc = pack[name][0], pack[name][1](doc)
            f.write(msgpack.packb((name, doc), default=msgpack_numpy.encode, use_bin_type=True))


def write_jsonl(path: Path, documents) -> None:
    """The lines suitcase-jsonl writes for ``documents``."""
    with open(path, "w") as f:
        for item in documents:
            f.write(f"{json.dumps(item)}\n")


def _naive_ingest(path: Path, db_path: Path) -> None:
    """Decode, append each event's values to its field's list, write a page each 10,000."""
    import msgpack

    writer = NaiveColumnar(db_path)
    page: dict = {}

    def write():
        if page.get("uid"):
            writer.write(page)
        page.clear()

    with open(path, "rb") as f:
        for name, doc in msgpack.Unpacker(f, raw=False):
            if name != "event_page":
                continue
            if not page:
                page.update(descriptor=doc["descriptor"], uid=[], seq_num=[], time=[],
                            data={k: [] for k in doc["data"]},
                            timestamps={k: [] for k in doc["timestamps"]})
            for key in ("uid", "seq_num", "time"):
                page[key] += doc[key]
            for part in ("data", "timestamps"):
                columns = page[part]
                for k, v in doc[part].items():
                    columns[k] += v
            if len(page["uid"]) >= PAGE:
                write()
    write()
    writer.close()


def bench_msgpack(folder: Path, n: int) -> tuple[str, str, list[Result]]:
    import msgpack

    from dask_broker import ingest

    scenario = f"ingest msgpack {_k(n)} events"
    path = folder / "run.msgpack"
    write_msgpack(path, run_documents(n))
    fresh = count()

    def decode_only():
        with open(path, "rb") as f:
            for _ in msgpack.Unpacker(f, raw=False):
                pass

    baseline = "msgpack.Unpacker (decode only)"
    results = [measure(scenario, baseline, n, decode_only, repeat=3, warmup=1),
               measure(scenario, "naive columnar ingest (sqlite3)", n,
                       lambda: _naive_ingest(path, folder / f"naive{next(fresh)}.db"),
                       repeat=3, warmup=0),
               measure(scenario, "dask_broker.ingest", n, lambda: ingest(
                   Broker.from_uri(f"sqlite:///{folder / f'ingest{next(fresh)}.db'}"),
                   [path], progress=False), repeat=3, warmup=0)]
    return scenario, baseline, results


def bench_jsonl(folder: Path, n: int) -> tuple[str, str, list[Result]]:
    from dask_broker import ingest

    scenario = f"ingest jsonl {_k(n)} events"
    path = folder / "run.jsonl"
    write_jsonl(path, run_documents(n))
    fresh = count()

    def decode_only():
        with open(path, "rb") as f:
            for line in f:
                json.loads(line)

    baseline = "json.loads per line (decode only)"
    results = [measure(scenario, baseline, n, decode_only, repeat=3, warmup=1),
               measure(scenario, "dask_broker.ingest", n, lambda: ingest(
                   Broker.from_uri(f"sqlite:///{folder / f'ingest{next(fresh)}.db'}"),
                   [path], progress=False), repeat=3, warmup=0)]
    return scenario, baseline, results


def run(quick: bool = True):
    n = 300_000 if quick else 1_000_000
    results: list[Result] = []
    baselines: dict[str, str] = {}
    for part in (bench_msgpack, bench_jsonl):
        with tempfile.TemporaryDirectory(prefix="dask-broker-bench-") as tmp:
            scenario, baseline, rows = part(Path(tmp), n)
        baselines[scenario] = baseline
        results += rows
    notes = ["target (issue #13): dask-broker ingest of a 1M-event suitcase-msgpack file "
             ">= 500k events/s",
             f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)"]
    return results, baselines, notes
