"""Runs to test and benchmark with, composed with event-model (one builder for all).

:class:`RunBuilder` wraps ``event_model.compose_run`` with a clock (explicit,
increasing times, so the order of documents is known) and helpers for
descriptors, pages of events, single events, resources and the stop.  The
conformance suite, the test suite's runs, the handler tests' runs over real
files (:func:`~dask_broker.testing.files.make_external_run`), the synthetic
scans of the demo and benchmarks (:func:`scalar_scan_documents`) are built
with it.

Examples
--------
>>> run = RunBuilder(time=100.0)
>>> desc = run.descriptor()
>>> page = run.page(desc, range(1, 4))
>>> page["seq_num"], sorted(page["data"])
([1, 2, 3], ['flag', 'label', 'n', 'x'])
"""

from __future__ import annotations

import time as _time
from typing import Any, Callable, Iterable, Iterator

import event_model
import numpy as np

__all__ = ["RunBuilder", "DATA_KEYS", "value_of", "scalar_scan_documents"]

#: Data keys of the stream most tests write: a number, an integer, a boolean, a string.
DATA_KEYS = {
    "x": {"source": "sim", "dtype": "number", "shape": []},
    "n": {"source": "sim", "dtype": "integer", "shape": []},
    "flag": {"source": "sim", "dtype": "boolean", "shape": []},
    "label": {"source": "sim", "dtype": "string", "shape": []},
}


def value_of(field: str, i: int) -> Any:
    """The value of a :data:`DATA_KEYS` field in event ``i``."""
    return {
        "x": 0.5 * i - 3.25,
        "n": 7 * i - 20,
        "flag": i % 3 == 0,
        "label": f"point-{i}",
    }[field]


class RunBuilder:
    """A run composed with event_model, with a clock and helpers to make its documents.

    Parameters
    ----------
    uid, time, metadata
        Of the start document (``event_model.compose_run``'s).
    step
        Seconds the clock advances at each :meth:`tick`.

    Attributes
    ----------
    bundle
        event_model's ``ComposeRunBundle`` (``compose_descriptor``, ``compose_resource``,
        ``compose_stop``, ...).
    start
        The start document.
    """

    def __init__(self, *, uid: str | None = None, time: float | None = None,
                 metadata: dict | None = None, step: float = 0.25):
        self.bundle = event_model.compose_run(uid=uid, time=time, metadata=metadata)
        self.start = self.bundle.start_doc
        self.step = step
        self._ticks = 0

    @property
    def uid(self) -> str:
        return self.start["uid"]

    def tick(self) -> float:
        """The next time of the run's clock: the start's time plus ``step`` per tick."""
        self._ticks += 1
        return self.start["time"] + self.step * self._ticks

    def descriptor(self, name: str = "primary", data_keys: dict | None = None,
                   time: float | None = None, **kwargs: Any):
        """A descriptor bundle (``.descriptor_doc``, ``.compose_event``, ...)."""
        return self.bundle.compose_descriptor(
            name=name, data_keys=dict(data_keys or DATA_KEYS),
            time=self.tick() if time is None else time, **kwargs)

    def page(self, desc_bundle, seq_nums: Iterable[int],
             values: Callable[[str, int], Any] | None = None) -> dict:
        """An event_page of ``desc_bundle`` with these seq_nums (lists as columns).

        ``values(field, seq_num)`` gives each value (default: :func:`value_of`).
        """
        values = values or value_of
        keys = list(desc_bundle.descriptor_doc["data_keys"])
        seq_nums = list(seq_nums)
        return desc_bundle.compose_event_page(
            data={k: [values(k, s) for s in seq_nums] for k in keys},
            timestamps={k: [self.tick() for _ in seq_nums] for k in keys},
            seq_num=seq_nums,
            time=[self.tick() for _ in seq_nums],
        )

    def event(self, desc_bundle, seq_num: int | None = None,
              values: Callable[[str, int], Any] | None = None, **kwargs: Any) -> dict:
        """One event document (seq_num: the descriptor's next by default)."""
        values = values or value_of
        keys = list(desc_bundle.descriptor_doc["data_keys"])
        t = self.tick()
        if seq_num is not None:
            kwargs["seq_num"] = seq_num
        data = kwargs.pop("data", None)
        if data is None:
            data = {k: values(k, seq_num if seq_num is not None else 0) for k in keys}
        return desc_bundle.compose_event(
            data=data, timestamps=kwargs.pop("timestamps", {k: t for k in data}),
            time=kwargs.pop("time", t), **kwargs)

    def single(self, desc_bundle, seq_num: int,
               values: Callable[[str, int], Any] | None = None) -> dict:
        """One event, packed as a one-event event_page (what an Inserter sends a store)."""
        values = values or value_of
        keys = list(desc_bundle.descriptor_doc["data_keys"])
        event = desc_bundle.compose_event(
            data={k: values(k, seq_num) for k in keys},
            timestamps={k: self.tick() for k in keys},
            seq_num=seq_num, time=self.tick())
        return event_model.pack_event_page(event)

    def resource(self, path: str = "data.h5", *, spec: str = "NPY_SEQ", root: str = "/data",
                 resource_kwargs: dict | None = None):
        """A resource bundle (``.resource_doc``, ``.compose_datum``, ...)."""
        return self.bundle.compose_resource(
            spec=spec, root=root, resource_path=path,
            resource_kwargs={"k": 1} if resource_kwargs is None else resource_kwargs)

    def stop(self, **kwargs: Any) -> dict:
        return self.bundle.compose_stop(**kwargs)


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
    and ``count0..`` ints, written as event_pages of ``page_size`` events
    whose columns are numpy arrays (validated and stored without a round trip
    through Python lists).

    Examples
    --------
    >>> docs = list(scalar_scan_documents(100, page_size=50))
    >>> [name for name, _ in docs]
    ['start', 'descriptor', 'event_page', 'descriptor', 'event_page', 'event_page', 'event_page', 'stop']
    """
    rng = np.random.default_rng(seed)
    run = RunBuilder(time=_time.time(), metadata={"plan_name": "scan", "scan_id": 1,
                                                  "num_points": num_events, **(metadata or {})})
    yield "start", run.start
    float_fields = ["motor"] + [f"det{i}" for i in range(num_float_fields - 1)]
    int_fields = [f"count{i}" for i in range(num_int_fields)]
    data_keys = {f: {"source": f"SIM:{f}", "dtype": "number", "shape": [], "units": "mm"
                     if f == "motor" else "counts", "precision": 4} for f in float_fields}
    data_keys.update({f: {"source": f"SIM:{f}", "dtype": "integer", "shape": []}
                      for f in int_fields})
    primary = run.descriptor("primary", data_keys, hints={"motor": {"fields": ["motor"]}})
    base_keys = {"temperature": {"source": "SIM:T", "dtype": "number", "shape": []},
                 "sample": {"source": "SIM:sample", "dtype": "string", "shape": []}}
    base = run.descriptor("baseline", base_keys) if baseline else None
    yield "descriptor", primary.descriptor_doc
    t0 = run.tick()
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
        yield "event_page", primary.compose_event_page(
            data=data, timestamps=ts, seq_num=seq, time=times, validate=False)
    if base is not None:
        t1 = t0 + (num_events + 1) * 0.01
        yield "event_page", base.compose_event_page(
            data={"temperature": [295.5], "sample": ["Si(111)"]},
            timestamps={"temperature": [t1], "sample": [t1]}, seq_num=[2], time=[t1])
    yield "stop", run.stop()
