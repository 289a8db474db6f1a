"""Synthetic runs, written with event-model's compose helpers (for the demo and benchmarks)."""

from __future__ import annotations

import time
from typing import Iterator

import event_model
import numpy as np

__all__ = ["scalar_scan_documents"]


def scalar_scan_documents(
    num_events: int,
    *,
    num_float_fields: int = 10,
    num_int_fields: int = 1,
    page_size: int = 10_000,
    baseline: bool = True,
    seed: int = 0,
    metadata: dict | None = None,
) -> Iterator[tuple[str, dict]]:
    """Documents of a scan: a primary stream of scalar fields and a baseline stream.

    The primary stream has ``motor`` (a float that steps), ``det0..`` floats
    and ``count0..`` ints, written as event_pages of ``page_size`` events.

    Examples
    --------
    >>> docs = list(scalar_scan_documents(100, page_size=50))
    >>> [name for name, _ in docs]
    ['start', 'descriptor', 'event_page', 'descriptor', 'event_page', 'event_page', 'event_page', 'stop']
    """
    rng = np.random.default_rng(seed)
    bundle = event_model.compose_run(metadata={"plan_name": "scan", "scan_id": 1,
                                               "num_points": num_events, **(metadata or {})})
    yield "start", bundle.start_doc
    float_fields = ["motor"] + [f"det{i}" for i in range(num_float_fields - 1)]
    int_fields = [f"count{i}" for i in range(num_int_fields)]
    data_keys = {f: {"source": f"SIM:{f}", "dtype": "number", "shape": [], "units": "mm"
                     if f == "motor" else "counts", "precision": 4} for f in float_fields}
    data_keys.update({f: {"source": f"SIM:{f}", "dtype": "integer", "shape": []} for f in int_fields})
    primary = bundle.compose_descriptor(name="primary", data_keys=data_keys,
                                        hints={"motor": {"fields": ["motor"]}})
    base_keys = {"temperature": {"source": "SIM:T", "dtype": "number", "shape": []},
                 "sample": {"source": "SIM:sample", "dtype": "string", "shape": []}}
    base = bundle.compose_descriptor(name="baseline", data_keys=base_keys) if baseline else None
    yield "descriptor", primary.descriptor_doc
    t0 = time.time()
    if base is not None:
        yield "descriptor", base.descriptor_doc
        yield "event_page", base.compose_event_page(
            data={"temperature": [295.0], "sample": ["Si(111)"]},
            timestamps={"temperature": [t0], "sample": [t0]}, seq_num=[1], time=[t0])
    for start in range(0, num_events, page_size):
        n = min(page_size, num_events - start)
        seq = np.arange(start + 1, start + n + 1)
        times = t0 + seq * 0.01
        data = {"motor": seq * 0.1}
        for f in float_fields[1:]:
            data[f] = rng.normal(100.0, 10.0, n)
        for f in int_fields:
            data[f] = rng.integers(0, 10_000, n)
        ts = {f: times for f in data}
        # Columns as numpy arrays: dask_broker validates and stores them without a
        # round trip through Python lists.
        yield "event_page", primary.compose_event_page(
            data=data, timestamps=ts, seq_num=seq, time=times, validate=False)
    if base is not None:
        t1 = t0 + (num_events + 1) * 0.01
        yield "event_page", base.compose_event_page(
            data={"temperature": [295.5], "sample": ["Si(111)"]},
            timestamps={"temperature": [t1], "sample": [t1]}, seq_num=[2], time=[t1])
    yield "stop", bundle.compose_stop()
