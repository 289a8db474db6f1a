"""The stream_resource recordings of ``streamdata.py`` are what their names say.

These tests check the recorded documents and files only (no dask_broker): document order,
counts, stream_datum ranges, the expected arrays against the files, and the teardown of
the live RunEngine.
"""

from __future__ import annotations

import copy
import threading

import h5py
import numpy as np
import pytest

from dask_broker.handlers import close_shared_handlers

from streamdata import (
    CASES, HANDMADE_CASES, HDF5_MIMETYPE, LEGACY_SPEC, RUNENGINE_CASES, TIFF_MIMETYPE,
    expected_tables, handmade_frame, live_runengine, open_files_under, record,
)

BLOB = {"det": ([1, 240, 320], "|u1"), "det-sum": ([1], "<i8")}
HANDMADE_IMG = {"img": ([5, 7], "<f4")}


def _steps(n):
    return [((i, i + 1), (i + 1, i + 2)) for i in range(n)]


#: Per case: rows, number of stream_resource / stream_datum / event documents, the
#: STREAM keys (shape, dtype_numpy), mimetype (None: legacy), the internal keys, and
#: per STREAM key its stream_datum (indices, seq_nums) in order.
SPEC = {
    "count_blob": dict(rows=5, sr=2, sd=10, events=5, keys=BLOB, mimetype=HDF5_MIMETYPE,
                       internal=set(), ranges={k: _steps(5) for k in BLOB}),
    "scan_blob_motor": dict(rows=5, sr=2, sd=10, events=5, keys=BLOB, mimetype=HDF5_MIMETYPE,
                            internal={"motor"}, ranges={k: _steps(5) for k in BLOB}),
    "point_and_blob": dict(rows=3, sr=2, sd=6, events=3, keys=BLOB, mimetype=HDF5_MIMETYPE,
                           internal={f"pdet-channel-{i}-value" for i in (1, 2, 3)},
                           ranges={k: _steps(3) for k in BLOB}),
    "fly_blob": dict(rows=7, sr=2, sd=4, events=0, keys=BLOB, mimetype=HDF5_MIMETYPE,
                     internal=set(),
                     ranges={k: [((0, 3), (1, 4)), ((3, 7), (4, 8))] for k in BLOB}),
    "fly_two_dets": dict(
        rows=7, sr=4, sd=8, events=0, mimetype=HDF5_MIMETYPE, internal=set(),
        keys={**BLOB, "det2": BLOB["det"], "det2-sum": BLOB["det-sum"]},
        ranges={k: [((0, 2), (1, 3)), ((2, 7), (3, 8))]
                for k in ("det", "det-sum", "det2", "det2-sum")}),
    "fly_blob_multi": dict(rows=4, sr=2, sd=4, events=0, mimetype=HDF5_MIMETYPE,
                           internal=set(),
                           keys={"det": ([2, 240, 320], "|u1"), "det-sum": ([2], "<i8")},
                           ranges={k: [((0, 2), (1, 3)), ((2, 4), (3, 5))] for k in BLOB}),
    "tiff_directory": dict(rows=6, sr=1, sd=2, events=6, keys={"img": ([6, 8], "<u2")},
                           mimetype=TIFF_MIMETYPE, internal={"x"},
                           ranges={"img": [((0, 3), (1, 4)), ((3, 6), (4, 7))]}),
    "hdf5_handmade": dict(rows=7, sr=2, sd=3, events=7, keys=HANDMADE_IMG,
                          mimetype=HDF5_MIMETYPE, internal={"x"},
                          ranges={"img": [((0, 2), (1, 3)), ((2, 4), (3, 5)), ((0, 3), (5, 8))]}),
    "legacy_sr": dict(rows=7, sr=2, sd=3, events=7, keys=HANDMADE_IMG, mimetype=None,
                      internal={"x"},
                      ranges={"img": [((0, 2), (1, 3)), ((2, 4), (3, 5)), ((0, 3), (5, 8))]}),
}


def _ranges(rec):
    """STREAM key -> [(indices, seq_nums)] of its stream_datum, in emission order."""
    key_of = {sr["uid"]: sr["data_key"] for sr in rec.of("stream_resource")}
    out = {}
    for sd in rec.of("stream_datum"):
        out.setdefault(key_of[sd["stream_resource"]], []).append(
            ((sd["indices"]["start"], sd["indices"]["stop"]),
             (sd["seq_nums"]["start"], sd["seq_nums"]["stop"])))
    return out


def test_every_case_has_a_spec():
    assert set(CASES) == set(SPEC) == set(RUNENGINE_CASES) | set(HANDMADE_CASES)


def test_counts(streamdata_recording):
    rec, spec = streamdata_recording, SPEC[streamdata_recording.name]
    names = rec.names
    assert (names.count("start"), names.count("descriptor"), names.count("stop")) == (1, 1, 1)
    assert names.count("stream_resource") == spec["sr"]
    assert names.count("stream_datum") == spec["sd"]
    assert names.count("event") == spec["events"]
    assert not {"resource", "datum", "event_page", "datum_page"} & set(names)
    assert rec.rows == {"primary": spec["rows"]}
    assert rec.stop["exit_status"] == "success"
    assert rec.stop["num_events"] == {"primary": spec["rows"]}
    assert set(rec.stream_keys("primary")) == set(spec["keys"])
    data_keys = rec.descriptors["primary"]["data_keys"]
    assert set(data_keys) - set(spec["keys"]) == spec["internal"]
    for key, (shape, dtype_numpy) in spec["keys"].items():
        assert (data_keys[key]["shape"], data_keys[key]["dtype_numpy"]) == (shape, dtype_numpy)


def test_document_order(streamdata_recording):
    """start, descriptor first; each stream_resource before its first stream_datum; the
    stream_datum of every key covering a row before that row's event; stop last."""
    rec = streamdata_recording
    names = rec.names
    assert names[0] == "start" and names[1] == "descriptor" and names[-1] == "stop"
    desc = rec.descriptors["primary"]
    seen_sr: set[str] = set()
    covered: dict[str, set[int]] = {k: set() for k in rec.stream_keys("primary")}
    key_of = {}
    for name, doc in rec.docs[2:-1]:
        if name == "stream_resource":
            assert doc["uid"] not in seen_sr
            seen_sr.add(doc["uid"])
            key_of[doc["uid"]] = doc["data_key"]
            assert doc["run_start"] == rec.uid
        elif name == "stream_datum":
            assert doc["stream_resource"] in seen_sr, "stream_datum before its stream_resource"
            assert doc["descriptor"] == desc["uid"]
            assert doc["uid"].startswith(doc["stream_resource"] + "/")
            covered[key_of[doc["stream_resource"]]].update(
                range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"]))
        elif name == "event":
            assert doc["descriptor"] == desc["uid"]
            for key, seqs in covered.items():
                assert doc["seq_num"] in seqs, f"event {doc['seq_num']} before the datum of {key}"
        else:
            pytest.fail(f"unexpected {name} document inside the run")
    # every stream_resource is used
    assert {sd["stream_resource"] for sd in rec.of("stream_datum")} == seen_sr


def test_stream_datum_ranges(streamdata_recording):
    rec = streamdata_recording
    ranges = _ranges(rec)
    assert ranges == SPEC[rec.name]["ranges"]
    for key, blocks in ranges.items():
        # equal widths; seq_nums cover 1..rows once, in order
        assert all(i[1] - i[0] == s[1] - s[0] > 0 for i, s in blocks)
        assert [n for _, s in blocks for n in range(*s)] == list(range(1, rec.rows["primary"] + 1))


def test_stream_keys_are_never_in_events(streamdata_recording):
    rec = streamdata_recording
    stream_keys = set(rec.stream_keys("primary"))
    for ev in rec.of("event"):
        assert set(ev["data"]) == set(ev["timestamps"]) == SPEC[rec.name]["internal"]
        assert not stream_keys & set(ev["filled"])


def test_resource_form(streamdata_recording):
    rec = streamdata_recording
    mimetype = SPEC[rec.name]["mimetype"]
    for sr in rec.of("stream_resource"):
        if mimetype is None:  # event-model 1.20 form
            assert set(sr) == {"uid", "data_key", "spec", "root", "resource_path",
                               "resource_kwargs", "path_semantics", "run_start"}
            assert sr["spec"] == LEGACY_SPEC
            assert (rec.folder / sr["resource_path"]).is_file()
            assert sr["root"] == str(rec.folder)
        else:
            assert set(sr) == {"uid", "data_key", "mimetype", "uri", "parameters", "run_start"}
            assert sr["mimetype"] == mimetype
            assert sr["uri"].startswith("file://localhost/")
            assert "chunk_shape" in sr["parameters"]
            assert ("template" in sr["parameters"]) == (mimetype == TIFF_MIMETYPE)
            assert sr["uri"].endswith("/") == (mimetype == TIFF_MIMETYPE)


def test_files_exist_and_are_closed(streamdata_recording):
    rec = streamdata_recording
    assert rec.files and all(p.is_file() and rec.folder in p.parents for p in rec.files)
    for sr in rec.of("stream_resource"):
        if "uri" in sr:
            path = sr["uri"].removeprefix("file://localhost")
            assert any(str(p) == path or str(p).startswith(path) for p in rec.files)
    # Earlier tests read these files; dask_broker's readers stay in the process cache until
    # it is closed. What is checked here is that the recording left nothing open.
    close_shared_handlers()
    assert open_files_under(rec.folder) == []


def test_expected_arrays(streamdata_recording):
    rec = streamdata_recording
    for key, (shape, dtype_numpy) in SPEC[rec.name]["keys"].items():
        arr = rec.expected["primary"][key]
        assert arr.shape == (rec.rows["primary"], *shape)
        assert arr.dtype == np.dtype(dtype_numpy)
    # rebuilding again from the documents gives the same
    rows, expected, internal, times = expected_tables(rec.docs)
    assert rows == rec.rows and internal == rec.internal and times == rec.times
    for key, arr in rec.expected["primary"].items():
        np.testing.assert_array_equal(expected["primary"][key], arr)


@pytest.mark.parametrize("name", list(RUNENGINE_CASES))
def test_runengine_rows_are_the_frames_in_file_order(streamdata_recordings, name):
    """One file per detector, all of whose frames are covered, in order; every frame
    differs from the others (so a wrong row -> frame mapping shows)."""
    pytest.importorskip("ophyd_async.sim")
    rec = streamdata_recordings[name]
    by_key = {sr["data_key"]: sr for sr in rec.of("stream_resource")}
    for key, arr in rec.expected["primary"].items():
        sr = by_key[key]
        with h5py.File(sr["uri"].removeprefix("file://localhost"), "r") as f:
            frames = f[sr["parameters"]["dataset"]][()]
        assert frames.shape[0] == arr.shape[0] * arr.shape[1]
        np.testing.assert_array_equal(arr.reshape(frames.shape), frames)
        assert len(np.unique(frames.reshape(frames.shape[0], -1), axis=0)) == frames.shape[0]
        if key.endswith("-sum"):
            image = rec.expected["primary"][key.removesuffix("-sum")]
            np.testing.assert_array_equal(arr, image.sum(axis=(-2, -1), dtype=np.int64))


@pytest.mark.parametrize("name", list(HANDMADE_CASES))
def test_handmade_rows(streamdata_recordings, name):
    rec = streamdata_recordings[name]
    (key,) = rec.stream_keys("primary")
    arr = rec.expected["primary"][key]
    for s in range(1, rec.rows["primary"] + 1):
        np.testing.assert_array_equal(arr[s - 1], handmade_frame(s, arr.shape[1:], arr.dtype))
    assert rec.internal["primary"] == {s: {"x": 0.5 * s - 1.0}
                                       for s in range(1, rec.rows["primary"] + 1)}
    assert list(rec.times["primary"]) == list(range(1, rec.rows["primary"] + 1))


def test_internal_values(streamdata_recordings):
    pytest.importorskip("ophyd_async.sim")
    scan = streamdata_recordings["scan_blob_motor"]
    assert {s: v["motor"] for s, v in scan.internal["primary"].items()} == {
        1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}
    assert streamdata_recordings["count_blob"].internal["primary"] == {s: {} for s in range(1, 6)}
    point = streamdata_recordings["point_and_blob"].internal["primary"]
    assert sorted(point) == [1, 2, 3]
    assert all(isinstance(v, int) for row in point.values() for v in row.values())
    for name in ("fly_blob", "fly_two_dets", "fly_blob_multi"):
        rec = streamdata_recordings[name]
        assert rec.internal == {"primary": {}} and rec.times == {"primary": {}}


def test_cache_gives_copies(streamdata_recordings):
    a = streamdata_recordings["hdf5_handmade"]
    a.docs[0][1]["uid"] = "changed"
    a.expected["primary"]["img"][:] = 0
    b = streamdata_recordings["hdf5_handmade"]
    assert b.uid != "changed" and b.expected["primary"]["img"].any()


def test_record_refuses_a_used_folder_and_unknown_names(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(FileExistsError):
        record("hdf5_handmade", tmp_path / "x")
    with pytest.raises(KeyError, match="unknown streamdata case"):
        record("nope", tmp_path / "y")


def test_live_runengine_subscriber(sim_beamline):
    """A callback sees the same documents; the run succeeds."""
    import bluesky.plans as bp

    got = []
    sim_beamline.RE.subscribe(lambda name, doc: got.append((name, copy.deepcopy(doc))))
    (uid,) = sim_beamline.RE(bp.count([sim_beamline.det], num=3))
    assert got == sim_beamline.emitted
    stop = got[-1][1]
    assert got[-1][0] == "stop" and stop["run_start"] == uid
    assert stop["exit_status"] == "success" and stop["num_events"] == {"primary": 3}


def test_live_runengine_teardown(tmp_path):
    """Loop stopped and closed, its thread joined, no file left open, the previous
    bluesky loop restored -- also after a failing plan."""
    pytest.importorskip("ophyd_async.sim")
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.run_engine import get_bluesky_event_loop

    before = get_bluesky_event_loop()

    def failing(det):
        yield from bp.count([det], num=2)
        yield from bps.null()
        raise RuntimeError("plan failed on purpose")

    for plan in ("ok", "fail"):
        folder = tmp_path / plan
        with live_runengine(folder) as bl:
            if plan == "ok":
                bl.RE(bp.count([bl.det], num=2))
            else:
                with pytest.raises(RuntimeError, match="on purpose"):
                    bl.RE(failing(bl.det))
            assert bl.RE._th.is_alive()
        assert not bl.RE._th.is_alive()
        assert bl.RE.loop.is_closed()
        assert bl.RE._th not in threading.enumerate()
        assert open_files_under(folder) == []
        assert get_bluesky_event_loop() is before
        assert [n for n, _ in bl.emitted].count("stop") == 1


def test_live_runengine_closes_files_of_an_interrupted_run(tmp_path):
    """Leaving the context in the middle of a run (an exception in a callback) still
    closes the detector's file."""
    pytest.importorskip("ophyd_async.sim")
    import bluesky.plans as bp

    def explode(name, doc):
        if name == "stream_datum":
            raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        with live_runengine(tmp_path, explode) as bl:
            bl.RE(bp.count([bl.det], num=3))
    assert open_files_under(tmp_path) == []
    assert bl.RE.loop.is_closed()
