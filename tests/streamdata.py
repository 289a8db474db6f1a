"""Runs that store detector data with stream_resource / stream_datum documents.

Each case records one run into its own folder and returns a :class:`Recording`: the
documents as emitted, and what a reader should find, rebuilt from the files with h5py /
tifffile by the rule spelled out in :func:`expected_tables` (independently of dask_broker):

- RunEngine cases drive ophyd-async's simulated devices (``ophyd_async.sim``) with a real
  bluesky ``RunEngine``: ``count_blob``, ``scan_blob_motor``, ``point_and_blob``,
  ``fly_blob``, ``fly_two_dets``, ``fly_blob_multi``.
- Hand-made cases compose documents with event_model and write the files themselves:
  ``tiff_directory``, ``hdf5_handmade`` and ``legacy_sr`` (the pre-1.21 stream_resource
  form: ``spec``/``root``/``resource_path``/``resource_kwargs``).

The simulated detectors do not wait in real time here: their pattern generators get a
``sleep`` (:class:`FramePacer`) that only yields, gives every frame a different intensity,
and can hold the writing after a given frame so that fly-scan flushes are deterministic.

Use :func:`record` (one case) or :func:`live_runengine` (a RunEngine and devices for a
test of your own); the pytest fixtures are in ``conftest_streamdata.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

__all__ = [
    "CASES", "HANDMADE_CASES", "RUNENGINE_CASES", "FramePacer", "Recording", "SimBeamline",
    "expected_tables", "handmade_frame", "live_runengine", "open_files_under", "record",
]

HDF5_MIMETYPE = "application/x-hdf5"
TIFF_MIMETYPE = "multipart/related;type=image/tiff"
LEGACY_SPEC = "AD_HDF5_SWMR_STREAM"
#: The pre-1.21 specs whose files this module reads (all HDF5).
LEGACY_HDF5_SPECS = ("AD_HDF5_SWMR_STREAM", "AD_HDF5_SWMR_SLICE", "AD_HDF5")
_T0 = 1_700_000_000.0


# ------------------------------------------------------------------------- Recording
@dataclass
class Recording:
    """One recorded run and what reading it back should give.

    ``expected[stream][key]`` has shape ``(rows[stream], *descriptor shape)`` and the
    descriptor's ``dtype_numpy``: row ``s`` (1-based seq_num) is ``expected[...][s - 1]``.
    """

    name: str
    #: ``(name, doc)`` pairs, deep-copied as emitted, in emission order.
    docs: list[tuple[str, dict]]
    #: The folder holding this run's files (and nothing else).
    folder: Path
    #: stream name -> number of rows (union of event seq_nums and stream_datum ranges).
    rows: dict[str, int]
    #: stream name -> STREAM: data key -> the filled column, read from the files.
    expected: dict[str, dict[str, np.ndarray]]
    #: stream name -> seq_num -> the event's ``data`` (non-stream keys only); rows with
    #: no event (fly scans) are absent.
    internal: dict[str, dict[int, dict[str, Any]]]
    #: stream name -> seq_num -> the event's ``time``.
    times: dict[str, dict[int, float]]
    #: Absolute paths of the data files the run wrote.
    files: list[Path]
    #: What the case exercises, in a sentence.
    description: str = ""

    def of(self, name: str) -> list[dict]:
        """The documents of one kind, in emission order."""
        return [doc for n, doc in self.docs if n == name]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.docs]

    @property
    def start(self) -> dict:
        return self.of("start")[0]

    @property
    def stop(self) -> dict:
        return self.of("stop")[0]

    @property
    def uid(self) -> str:
        return self.start["uid"]

    @property
    def descriptors(self) -> dict[str, dict]:
        """Stream name -> its (first) descriptor."""
        out: dict[str, dict] = {}
        for d in self.of("descriptor"):
            out.setdefault(d["name"], d)
        return out

    def stream_keys(self, stream: str) -> list[str]:
        """The STREAM: data keys of a stream, in descriptor order."""
        keys = self.descriptors[stream]["data_keys"]
        return [k for k, v in keys.items() if v.get("external") == "STREAM:"]

    def events(self, stream: str) -> list[dict]:
        uids = {d["uid"] for d in self.of("descriptor") if d["name"] == stream}
        return sorted((e for e in self.of("event") if e["descriptor"] in uids),
                      key=lambda e: e["seq_num"])


# --------------------------------------------------- expected values, from the files
def _path_of_uri(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"not a file URI: {uri!r}")
    return Path(parsed.path)


def _read_hdf5(path: Path, dataset: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r", swmr=True) as f:
        return f[dataset][()]


def _resource_reader(sr: dict) -> Callable[[int, int], np.ndarray]:
    """``read(first_frame, n_frames) -> array`` for one stream_resource (new or legacy)."""
    if "mimetype" in sr:
        mimetype, params = sr["mimetype"], sr["parameters"]
        if mimetype == HDF5_MIMETYPE:
            data = _read_hdf5(_path_of_uri(sr["uri"]), params["dataset"])
            return lambda first, n: data[first:first + n]
        if mimetype == TIFF_MIMETYPE:
            import tifffile

            directory, template = _path_of_uri(sr["uri"]), params["template"]
            return lambda first, n: np.stack(
                [tifffile.imread(directory / template.format(j)) for j in range(first, first + n)])
        raise ValueError(f"no reader here for mimetype {mimetype!r}")
    if sr.get("spec") in LEGACY_HDF5_SPECS:  # event-model 1.20 form
        path = Path(sr["root"]) / sr["resource_path"].lstrip("/")
        data = _read_hdf5(path, sr["resource_kwargs"].get("dataset", "/entry/data/data"))
        return lambda first, n: data[first:first + n]
    raise ValueError(f"no reader here for stream_resource spec {sr.get('spec')!r}")


def expected_tables(docs: list[tuple[str, dict]]):
    """Rebuild every stream of a run from its documents and files.

    Returns ``(rows, expected, internal, times)`` as in :class:`Recording`.  Row ``s`` of
    key ``k``: the stream_datum of ``k`` with ``seq_nums.start <= s < stop``, block
    ``i = indices.start + (s - seq_nums.start)`` of its resource, i.e. frames
    ``[i*m, (i+1)*m)`` with ``m`` frames per row, reshaped to the descriptor shape.
    """
    descriptors = {d["uid"]: d for n, d in docs if n == "descriptor"}
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    seqs: dict[str, set[int]] = {}
    internal: dict[str, dict[int, dict]] = {}
    times: dict[str, dict[int, float]] = {}
    datums: dict[str, dict[str, list[dict]]] = {}  # stream -> key -> stream_datum
    for name, doc in docs:
        if name == "descriptor":
            seqs.setdefault(doc["name"], set())
            internal.setdefault(doc["name"], {})
            times.setdefault(doc["name"], {})
        elif name == "event":
            stream = descriptors[doc["descriptor"]]["name"]
            seqs[stream].add(doc["seq_num"])
            internal[stream][doc["seq_num"]] = dict(doc["data"])
            times[stream][doc["seq_num"]] = doc["time"]
        elif name == "stream_datum":
            stream = descriptors[doc["descriptor"]]["name"]
            key = resources[doc["stream_resource"]]["data_key"]
            seqs[stream].update(range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"]))
            datums.setdefault(stream, {}).setdefault(key, []).append(doc)
    rows = {stream: len(s) for stream, s in seqs.items()}
    for stream, s in seqs.items():
        if s != set(range(1, rows[stream] + 1)):
            raise ValueError(f"stream {stream!r}: seq_nums {sorted(s)} are not 1..n")

    readers = {uid: _resource_reader(sr) for uid, sr in resources.items()}
    expected: dict[str, dict[str, np.ndarray]] = {}
    for desc in descriptors.values():
        stream = desc["name"]
        for key, dk in desc["data_keys"].items():
            if dk.get("external") != "STREAM:" or key in expected.get(stream, {}):
                continue
            shape = tuple(dk["shape"])
            out = np.zeros((rows[stream], *shape), dtype=np.dtype(dk["dtype_numpy"]))
            for s in range(1, rows[stream] + 1):
                sd = next(d for d in datums[stream][key]
                          if d["seq_nums"]["start"] <= s < d["seq_nums"]["stop"])
                i = sd["indices"]["start"] + (s - sd["seq_nums"]["start"])
                frame = readers[sd["stream_resource"]](0, 1)[0]
                m = int(np.prod(shape)) // max(int(np.prod(frame.shape)), 1)
                block = readers[sd["stream_resource"]](i * m, m)
                if block.shape[0] != m:
                    raise ValueError(f"{key} row {s}: block {i} lies past the end of its data")
                out[s - 1] = block.reshape(shape)
            expected.setdefault(stream, {})[key] = out
    return rows, expected, internal, times


def _finish(name: str, docs, folder: Path, description: str) -> Recording:
    rows, expected, internal, times = expected_tables(docs)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return Recording(name=name, docs=docs, folder=folder, rows=rows, expected=expected,
                     internal=internal, times=times, files=files, description=description)


def open_files_under(folder: Path | str) -> list[str]:
    """The files under ``folder`` this process holds open (from ``/proc/self/fd``)."""
    folder = os.path.realpath(folder)
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(folder + os.sep):
                out.append(target)
    return out


# ------------------------------------------------------- RunEngine and sim devices
class FramePacer:
    """The ``sleep`` of a simulated ``PatternGenerator``.

    It never waits for real time (frames are written as fast as the loop runs), sets the
    generator's x before each frame so that every frame has its own intensity (unless
    ``vary_x`` is false, e.g. when a motor drives x), and, with ``hold_after=n``, holds
    the writing of frame ``n + 1`` until :meth:`release`.
    """

    def __init__(self, *, x0: float = 0.0, step: float = 0.7, vary_x: bool = True):
        self.generator = None  # set by live_runengine
        self.x0, self.step, self.vary_x = x0, step, vary_x
        self.frames = 0  # frames started so far
        self.hold_after: int | None = None
        self._released: asyncio.Event | None = None

    async def __call__(self, timeout: float) -> None:
        # Called before each frame is written (then the write is synchronous).
        if self.hold_after is not None and self.frames >= self.hold_after:
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()
        self.frames += 1
        if self.vary_x and self.generator is not None:
            self.generator.set_x(self.x0 + self.step * self.frames)
        await asyncio.sleep(0)

    async def release(self) -> None:
        """Let the held frames be written (call in the RunEngine's loop)."""
        self.hold_after = None
        if self._released is not None:
            self._released.set()


@dataclass
class SimBeamline:
    """A RunEngine and ophyd-async sim devices, from :func:`live_runengine`.

    ``det`` and ``det2`` are ``SimBlobDetector`` (240x320 uint8 frames + an int64 sum,
    each writing ``<folder>/<data key>_<n>.h5``); ``motor`` a ``SimMotor`` that moves
    instantly; ``pdet`` a ``SimPointDetector`` (3 channels) reading ``det``'s generator.
    """

    RE: Any
    det: Any
    det2: Any
    motor: Any
    pdet: Any
    pacers: dict[str, FramePacer]
    folder: Path
    emitted: list[tuple[str, dict]] = field(default_factory=list)

    def link_motor_to_det(self) -> None:
        """Let ``motor``'s position set ``det``'s x (frames then follow the motor)."""
        generator = self.det.pattern_generator
        self.pacers["det"].vary_x = False

        async def subscribe():  # signals subscribe only inside the RunEngine's loop
            self.motor.user_readback.subscribe_reading(
                lambda readings: generator.set_x(next(iter(readings.values()))["value"]))

        asyncio.run_coroutine_threadsafe(subscribe(), self.RE.loop).result(10)


class _FilenameProvider:
    """``<data key>_<n>``: a new file name per call, stable across sessions."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, datakey_name: str | None = None) -> str:
        key = datakey_name or "data"
        self.counts[key] = self.counts.get(key, 0) + 1
        return f"{key}_{self.counts[key]}"


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def live_runengine(folder: Path | str, *callbacks: Callable) -> Iterator[SimBeamline]:
    """A RunEngine with its own event loop and connected sim devices writing into ``folder``.

    Every emitted document goes to ``callbacks`` and, deep-copied, to
    ``beamline.emitted``.  On exit the devices' files are closed, pending tasks are
    cancelled, the loop is stopped, its thread joined and the loop closed; the previous
    bluesky event loop is restored.

    Example::

        with live_runengine(tmp_path, db.insert) as bl:
            (uid,) = bl.RE(bp.count([bl.det], num=3))
    """
    from bluesky.run_engine import (
        RunEngine, TransitionError, get_bluesky_event_loop, set_bluesky_event_loop)
    from ophyd_async.core import StaticPathProvider, init_devices
    from ophyd_async.sim import PatternGenerator, SimBlobDetector, SimMotor, SimPointDetector

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous_loop = get_bluesky_event_loop()
    loop = asyncio.new_event_loop()
    RE = RunEngine({}, loop=loop)
    generators = []
    try:
        path_provider = StaticPathProvider(_FilenameProvider(), folder)
        pacers = {"det": FramePacer(x0=0.0), "det2": FramePacer(x0=0.35)}
        for pacer in pacers.values():
            generator = PatternGenerator(sleep=pacer)
            # exposure 1: full-range pixels; the period is never waited for (FramePacer)
            generator.setup_acquisition_parameters(exposure=1.0, period=0.01, number_of_frames=1)
            pacer.generator = generator
            generators.append(generator)
        with init_devices():
            det = SimBlobDetector(path_provider, generators[0])
            det2 = SimBlobDetector(path_provider, generators[1])
            motor = SimMotor(instant=True)
            pdet = SimPointDetector(generators[0], num_channels=3)
        RE(_setup_plan(pdet))
        beamline = SimBeamline(RE=RE, det=det, det2=det2, motor=motor, pdet=pdet,
                               pacers=pacers, folder=folder)
        RE.subscribe(lambda name, doc: beamline.emitted.append((name, copy.deepcopy(doc))))
        for cb in callbacks:
            RE.subscribe(cb)
        yield beamline
    finally:
        if RE.state not in ("idle", "panicked"):
            with contextlib.suppress(TransitionError):
                RE.halt()
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_cancel_pending(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        RE._th.join(10)  # the loop's thread (as ophyd-async's own RE fixture does)
        for generator in generators:
            generator.close_file()
        if not loop.is_running():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        set_bluesky_event_loop(previous_loop)


def _setup_plan(pdet):
    import bluesky.plan_stubs as bps

    yield from bps.mv(pdet.acquire_time, 0.01)  # one 10 ms update per trigger


def _call(coro_fn: Callable, *args):
    """A plan stub awaiting ``coro_fn(*args)`` in the RunEngine's loop."""
    import bluesky.plan_stubs as bps

    yield from bps.wait_for([lambda: coro_fn(*args)])


async def _wait_frames(generator, n: int) -> None:
    while await generator.images_written.get_value() < n:
        await asyncio.sleep(0.001)


def _fly_plan(bl: SimBeamline, dets: list, trigger_info, first_flush: dict[str, int], md: dict):
    """prepare, kickoff, ``collect`` once every det has written ``first_flush[name]``
    frames (each is held there), release, then ``collect_while_completing``."""
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    for det in dets:
        bl.pacers[det.name].hold_after = first_flush[det.name]

    @bpp.stage_decorator(dets)
    @bpp.run_decorator(md=md)
    def inner():
        for det in dets:
            yield from bps.prepare(det, trigger_info, group="prepare")
        yield from bps.wait(group="prepare")
        yield from bps.declare_stream(*dets, name="primary", collect=True)
        yield from bps.kickoff_all(*dets, wait=True)
        for det in dets:
            yield from _call(_wait_frames, det.pattern_generator, first_flush[det.name])
        yield from bps.collect(*dets, name="primary")
        for det in dets:
            yield from _call(bl.pacers[det.name].release)
        yield from bps.collect_while_completing(dets, dets, flush_period=None,
                                                stream_name="primary")

    return (yield from inner())


def _record_with_runengine(name: str, folder: Path, plan_factory, description: str) -> Recording:
    with live_runengine(folder) as bl:
        bl.RE(plan_factory(bl))
        docs = bl.emitted
    still_open = open_files_under(folder)
    if still_open:
        raise RuntimeError(f"{name}: files left open after the run: {still_open}")
    return _finish(name, docs, folder, description)


def _count_blob(bl):
    import bluesky.plans as bp

    return bp.count([bl.det], num=5)


def _scan_blob_motor(bl):
    import bluesky.plans as bp

    bl.link_motor_to_det()
    return bp.scan([bl.det], bl.motor, 0, 1, 5)


def _point_and_blob(bl):
    import bluesky.plans as bp

    return bp.count([bl.pdet, bl.det], num=3)


def _fly_blob(bl):
    from ophyd_async.core import TriggerInfo

    return _fly_plan(bl, [bl.det], TriggerInfo(number_of_events=7), {"det": 3},
                     {"plan_name": "fly_blob"})


def _fly_two_dets(bl):
    from ophyd_async.core import TriggerInfo

    # det2 is held one frame earlier: the first collect is cut at the minimum (2)
    return _fly_plan(bl, [bl.det, bl.det2], TriggerInfo(number_of_events=7),
                     {"det": 3, "det2": 2}, {"plan_name": "fly_two_dets"})


def _fly_blob_multi(bl):
    from ophyd_async.core import TriggerInfo

    # 5 frames before the first collect = 2 whole rows of 2 (frame 5 waits for row 3)
    return _fly_plan(bl, [bl.det], TriggerInfo(number_of_events=4, collections_per_event=2),
                     {"det": 5}, {"plan_name": "fly_blob_multi"})


RUNENGINE_CASES: dict[str, tuple[Callable, str]] = {
    "count_blob": (_count_blob, "bp.count([SimBlobDetector], num=5): step scan, events "
                   "with data {}, one stream_datum per STREAM key per point"),
    "scan_blob_motor": (_scan_blob_motor, "bp.scan([det], SimMotor, 0, 1, 5): events "
                        "carry the motor values; the frames follow the motor"),
    "point_and_blob": (_point_and_blob, "bp.count([SimPointDetector, det], num=3): "
                       "internal channel values and STREAM keys in one descriptor"),
    "fly_blob": (_fly_blob, "prepare/kickoff/collect_while_completing, 7 frames, "
                 "flushes {0,3} and {3,7}, no events"),
    "fly_two_dets": (_fly_two_dets, "two blob detectors in one collect: shared seq_nums, "
                     "the first flush cut at the slower one ({0,2} then {2,7})"),
    "fly_blob_multi": (_fly_blob_multi, "TriggerInfo(collections_per_event=2): 4 rows of "
                       "2 frames, flushes {0,2} and {2,4}"),
}


# ------------------------------------------------------------------ hand-made cases
def handmade_frame(seq_num: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The frame a hand-made case stores for row ``seq_num``: ``1000*s + flat index``."""
    return (1000 * seq_num + np.arange(int(np.prod(shape)))).reshape(shape).astype(dtype)


def _uri(path: Path, directory: bool = False) -> str:
    return "file://localhost" + str(path) + ("/" if directory else "")


class _Composer:
    """A run composed with event_model, with explicit increasing times."""

    def __init__(self, name: str, folder: Path):
        import event_model

        self.clock = iter(_T0 + 0.01 * i for i in range(1, 10_000))
        self.bundle = event_model.compose_run(time=_T0, metadata={
            "plan_name": name, "streamdata_case": name, "scan_id": 1})
        self.docs: list[tuple[str, dict]] = [("start", self.bundle.start_doc)]
        self.folder = folder

    def emit(self, name: str, doc: dict) -> dict:
        self.docs.append((name, copy.deepcopy(doc)))
        return doc

    def descriptor(self, data_keys: dict):
        desc = self.bundle.compose_descriptor(name="primary", data_keys=data_keys,
                                              time=next(self.clock))
        self.emit("descriptor", desc.descriptor_doc)
        return desc

    def event(self, desc, seq_num: int, data: dict) -> None:
        t = next(self.clock)
        self.emit("event", desc.compose_event(data=data, timestamps={k: t for k in data},
                                              seq_num=seq_num, time=t))

    def stop(self) -> None:
        self.emit("stop", self.bundle.compose_stop(time=next(self.clock)))


def _x_value(seq_num: int) -> float:
    return 0.5 * seq_num - 1.0


def _tiff_directory(name: str, folder: Path) -> list[tuple[str, dict]]:
    """6 rows, one 6x8 uint16 TIFF per row; stream_datum {0,3} and {3,6}; events (x)."""
    import tifffile

    H, W, n, template = 6, 8, 6, "img_{:06d}.tiff"
    directory = folder / "tiffs"
    directory.mkdir()
    for s in range(1, n + 1):
        tifffile.imwrite(directory / template.format(s - 1), handmade_frame(s, (H, W), np.uint16))
    c = _Composer(name, folder)
    uri = _uri(directory, directory=True)
    desc = c.descriptor({
        "img": {"source": uri, "dtype": "array", "shape": [H, W], "dtype_numpy": "<u2",
                "external": "STREAM:"},
        "x": {"source": "sim:x", "dtype": "number", "shape": [], "units": "mm"}})
    sr = c.bundle.compose_stream_resource(
        mimetype=TIFF_MIMETYPE, uri=uri, data_key="img",
        parameters={"template": template, "chunk_shape": [1, H, W]})
    c.emit("stream_resource", sr.stream_resource_doc)
    for lo, hi in ((0, 3), (3, 6)):
        c.emit("stream_datum", sr.compose_stream_datum(
            indices={"start": lo, "stop": hi}, seq_nums={"start": lo + 1, "stop": hi + 1},
            descriptor=desc.descriptor_doc))
        for s in range(lo + 1, hi + 1):
            c.event(desc, s, {"x": _x_value(s)})
    c.stop()
    return c.docs


#: hdf5_handmade / legacy_sr: frames per file; the second file restarts indices at 0.
_HANDMADE_FILES = (("a.h5", 4), ("b.h5", 3))
_HANDMADE_SHAPE = (5, 7)
_HANDMADE_DATASET = "/entry/data/data"


def _write_handmade_h5(folder: Path) -> list[tuple[Path, int, int]]:
    """The two HDF5 files; returns ``(path, first seq_num, frames)`` per file."""
    import h5py

    out, s0 = [], 1
    for fname, n in _HANDMADE_FILES:
        path = folder / fname
        with h5py.File(path, "w") as f:
            f.create_dataset(_HANDMADE_DATASET, data=np.stack(
                [handmade_frame(s, _HANDMADE_SHAPE, np.float32) for s in range(s0, s0 + n)]),
                chunks=(1, *_HANDMADE_SHAPE))
        out.append((path, s0, n))
        s0 += n
    return out


def _handmade_h5(name: str, folder: Path, legacy: bool) -> list[tuple[str, dict]]:
    """7 rows of 5x7 float32 in two files (4 + 3 frames), one stream_resource each for the
    same key; stream_datum {0,2} {2,4} on the first, {0,3} on the second; events (x)."""
    files = _write_handmade_h5(folder)
    c = _Composer(name, folder)
    desc = c.descriptor({
        "img": {"source": _uri(files[0][0]), "dtype": "array", "shape": list(_HANDMADE_SHAPE),
                "dtype_numpy": "<f4", "external": "STREAM:"},
        "x": {"source": "sim:x", "dtype": "number", "shape": [], "units": "mm"}})
    for k, (path, s0, n) in enumerate(files):
        if legacy:  # event-model 1.20 (pre-1.21) stream_resource, built by hand
            sr_doc = {"uid": f"{c.bundle.start_doc['uid']}-legacy-{k}", "data_key": "img",
                      "spec": LEGACY_SPEC, "root": str(folder), "resource_path": path.name,
                      "resource_kwargs": {"dataset": _HANDMADE_DATASET},
                      "path_semantics": "posix", "run_start": c.bundle.start_doc["uid"]}
            counter = iter(range(100))

            def datum(indices, seq_nums, sr_doc=sr_doc, counter=counter):
                return {"uid": f"{sr_doc['uid']}/{next(counter)}",
                        "stream_resource": sr_doc["uid"], "descriptor": desc.descriptor_doc["uid"],
                        "indices": indices, "seq_nums": seq_nums}
        else:
            sr = c.bundle.compose_stream_resource(
                mimetype=HDF5_MIMETYPE, uri=_uri(path), data_key="img",
                parameters={"dataset": _HANDMADE_DATASET, "chunk_shape": [1, *_HANDMADE_SHAPE]})
            sr_doc = sr.stream_resource_doc

            def datum(indices, seq_nums, sr=sr):
                return sr.compose_stream_datum(indices=indices, seq_nums=seq_nums,
                                               descriptor=desc.descriptor_doc)
        c.emit("stream_resource", sr_doc)
        blocks = [(0, 2), (2, 4)] if n == 4 else [(0, n)]
        for lo, hi in blocks:
            c.emit("stream_datum", datum({"start": lo, "stop": hi},
                                         {"start": s0 + lo, "stop": s0 + hi}))
            for s in range(s0 + lo, s0 + hi):
                c.event(desc, s, {"x": _x_value(s)})
    c.stop()
    return c.docs


HANDMADE_CASES: dict[str, tuple[Callable, str]] = {
    "tiff_directory": (_tiff_directory, "multipart TIFF directory, template img_{:06d}.tiff, "
                       "shape [H, W], two stream_datum blocks, events with x"),
    "hdf5_handmade": (lambda name, folder: _handmade_h5(name, folder, legacy=False),
                      "two HDF5 files for one key (indices restart at 0, seq_nums continue)"),
    "legacy_sr": (lambda name, folder: _handmade_h5(name, folder, legacy=True),
                  "hdf5_handmade with event-model 1.20 stream_resource documents "
                  f"(spec {LEGACY_SPEC}, root, resource_path, resource_kwargs)"),
}

#: Every case name, RunEngine cases first.
CASES: tuple[str, ...] = (*RUNENGINE_CASES, *HANDMADE_CASES)


def record(name: str, folder: Path | str) -> Recording:
    """Record case ``name`` into ``folder`` (created; must be new or empty)."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty")
    try:
        if name in RUNENGINE_CASES:
            plan_factory, description = RUNENGINE_CASES[name]
            return _record_with_runengine(name, folder, plan_factory, description)
        if name in HANDMADE_CASES:
            writer, description = HANDMADE_CASES[name]
            return _finish(name, writer(name, folder), folder, description)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    raise KeyError(f"unknown streamdata case {name!r}; known: {', '.join(CASES)}")
