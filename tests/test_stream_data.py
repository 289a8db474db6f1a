"""stream_resource / stream_datum (ophyd-async detectors) on hand-made runs: insert, rows
of a stream, references, filling, xarray, replay.  Recorded RunEngine cases are in
test_stream_runengine.py."""

from __future__ import annotations

import copy
import os

import event_model
import h5py
import numpy as np
import pandas as pd
import pytest

from dask_broker import Broker
from dask_broker.errors import (
    DataKeysMismatchError,
    DocumentValidationError,
    DuplicateUidError,
    UnknownReferenceError,
)

H, W = 4, 5


def _write_h5(path, n_frames, offset=0, dtype="u2", dataset="/entry/data/data", frame=(H, W)):
    data = (np.arange(n_frames * int(np.prod(frame)), dtype="i8").reshape(n_frames, *frame)
            + offset).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data)
    return data


class StreamRun:
    """A run whose ``img`` key (and optionally ``tot``, a scalar per row) is streamed."""

    def __init__(self, folder, *, blocks=((0, 3), (3, 7)), events=True, per_row=1,
                 two_files=False, legacy=False, with_scalar=False, dtype_numpy=True):
        self.folder = str(folder)
        run = event_model.compose_run(metadata={"plan_name": "handmade"})
        self.docs = [("start", run.start_doc)]
        img_shape = [per_row, H, W] if per_row > 1 else [H, W]
        keys = {"img": {"source": "sim", "dtype": "array", "shape": img_shape,
                        "external": "STREAM:"},
                "x": {"source": "motor", "dtype": "number", "shape": []}}
        if dtype_numpy:
            keys["img"]["dtype_numpy"] = "<u2"
        if with_scalar:
            keys["tot"] = {"source": "sim", "dtype": "number", "shape": [1],
                           "external": "STREAM:", "dtype_numpy": "<f8"}
        desc = run.compose_descriptor(name="primary", data_keys=keys,
                                      object_keys={"det": ["img"], "m": ["x"]})
        self.descriptor = desc.descriptor_doc
        self.docs.append(("descriptor", self.descriptor))
        self.expected: list[np.ndarray] = []
        self.expected_tot: list[float] = []
        files = [(0, blocks)] if not two_files else [(0, blocks[:1]), (1, blocks[1:])]
        seq = 1
        self.resources = []
        for number, file_blocks in files:
            rows = max(b for _, b in file_blocks) - min(a for a, _ in file_blocks)
            path = os.path.join(self.folder, f"img_{number}.h5")
            frames = _write_h5(path, rows * per_row, offset=1000 * number)
            sr = self._stream_resource(run, "img", path, legacy, per_row)
            self.resources.append(sr.stream_resource_doc)
            self.docs.append(("stream_resource", sr.stream_resource_doc))
            tot_sr = None
            if with_scalar:
                tpath = os.path.join(self.folder, f"tot_{number}.h5")
                tot = np.arange(rows, dtype="f8") * 0.5 + number
                with h5py.File(tpath, "w") as f:
                    f.create_dataset("/entry/sum", data=tot)
                tot_sr = run.compose_stream_resource(
                    mimetype="application/x-hdf5", uri="file://localhost" + tpath,
                    data_key="tot", parameters={"dataset": "/entry/sum", "chunk_shape": [1024]})
                self.docs.append(("stream_resource", tot_sr.stream_resource_doc))
            base = min(a for a, _ in file_blocks)
            for a, b in file_blocks:
                a, b = a - base, b - base
                width = b - a
                sd = sr.compose_stream_datum(indices={"start": a, "stop": b},
                                             seq_nums={"start": seq, "stop": seq + width},
                                             descriptor=self.descriptor)
                self.docs.append(("stream_datum", sd))
                if tot_sr is not None:
                    self.docs.append(("stream_datum", tot_sr.compose_stream_datum(
                        indices={"start": a, "stop": b},
                        seq_nums={"start": seq, "stop": seq + width},
                        descriptor=self.descriptor)))
                for i in range(a, b):
                    block = frames[i * per_row:(i + 1) * per_row]
                    self.expected.append(block.reshape(img_shape))
                    self.expected_tot.append(i * 0.5 + number)
                    if events:
                        self.docs.append(("event", desc.compose_event(
                            data={"x": float(seq)}, timestamps={"x": 1.0}, seq_num=seq)))
                    seq += 1
        self.rows = seq - 1
        self.docs.append(("stop", run.compose_stop()))
        self.uid = run.start_doc["uid"]

    @staticmethod
    def _stream_resource(run, key, path, legacy, per_row):
        params = {"dataset": "/entry/data/data",
                  "chunk_shape": [1, H, W]}
        sr = run.compose_stream_resource(mimetype="application/x-hdf5",
                                         uri="file://localhost" + path, data_key=key,
                                         parameters=params)
        if legacy:  # the event-model 1.19-1.20 form
            doc = sr.stream_resource_doc
            for k in ("mimetype", "uri", "parameters"):
                del doc[k]
            doc.update(spec="AD_HDF5_SWMR_STREAM", root=os.path.dirname(path),
                       resource_path=os.path.basename(path),
                       resource_kwargs={"dataset": "/entry/data/data"})
        return sr

    def of(self, name):
        return [d for n, d in self.docs if n == name]


def _insert(db, docs):
    for name, doc in docs:
        db.insert(name, copy.deepcopy(doc))


def _stored(db):
    store = db.store
    runs = list(store.iter_starts())
    out = []
    for start in runs:
        descs = store.descriptors(start["uid"])
        out.append((start["uid"], len(descs), store.stream_resources(start["uid"]),
                    store.stream_datums([d["uid"] for d in descs]),
                    store.event_counts([d["uid"] for d in descs])))
    return out


# ----------------------------------------------------------------- insert
def test_insert_accepts_stream_documents_and_events_without_stream_keys(any_db, tmp_path):
    run = StreamRun(tmp_path)
    _insert(any_db, run.docs)
    store = any_db.store
    assert store.stream_resources(run.uid) == run.of("stream_resource")
    assert store.stream_datums([run.descriptor["uid"]]) == run.of("stream_datum")
    assert store.event_counts([run.descriptor["uid"]])[run.descriptor["uid"]][0] == run.rows


def _bad_cases(run):
    sr = run.of("stream_resource")[0]
    sd = run.of("stream_datum")[0]
    event = run.of("event")[0]
    cases = {
        "sr without data_key": ("stream_resource", {k: v for k, v in sr.items()
                                                    if k != "data_key"},
                                DocumentValidationError, "data_key"),
        "sd to unknown sr": ("stream_datum", {**sd, "stream_resource": "nope", "uid": "nope/0"},
                             UnknownReferenceError, "'nope'"),
        "sd to unknown descriptor": ("stream_datum", {**sd, "descriptor": "nodesc", "uid": "x/1"},
                                     UnknownReferenceError, "'nodesc'"),
        "overlapping seq_nums": ("stream_datum", {**sd, "uid": "x/2",
                                                  "indices": {"start": 50, "stop": 51},
                                                  "seq_nums": {"start": 2, "stop": 3}},
                                 DocumentValidationError, "overlap"),
        "overlapping indices": ("stream_datum", {**sd, "uid": "x/3",
                                                 "indices": {"start": 1, "stop": 2},
                                                 "seq_nums": {"start": 90, "stop": 91}},
                                DocumentValidationError, "indices [1, 2) overlap"),
        "unequal widths": ("stream_datum", {**sd, "uid": "x/4",
                                            "indices": {"start": 60, "stop": 62},
                                            "seq_nums": {"start": 80, "stop": 81}},
                           DocumentValidationError, "equal width"),
        "seq_num zero": ("stream_datum", {**sd, "uid": "x/5",
                                          "indices": {"start": 70, "stop": 71},
                                          "seq_nums": {"start": 0, "stop": 1}},
                         DocumentValidationError, "counting from 1"),
        "repeated sd": ("stream_datum", sd, DuplicateUidError, sd["uid"]),
        "event carrying a stream key": ("event", {**event, "uid": "e-new",
                                                  "data": {**event["data"], "img": "x"},
                                                  "timestamps": {**event["timestamps"],
                                                                 "img": 1.0}},
                                        DataKeysMismatchError, "STREAM:"),
    }
    return cases


BAD_CASES = ["sr without data_key", "sd to unknown sr", "sd to unknown descriptor",
             "overlapping seq_nums", "overlapping indices", "unequal widths", "seq_num zero",
             "repeated sd", "event carrying a stream key"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_stream_documents_are_refused_and_nothing_changes(any_db, tmp_path, case):
    run = StreamRun(tmp_path)
    _insert(any_db, run.docs)
    before = _stored(any_db)
    name, doc, error, text = _bad_cases(run)[case]
    with pytest.raises(error) as info:
        any_db.insert(name, doc)
    assert text in str(info.value)
    assert _stored(any_db) == before
    # A fresh inserter (another process) sees what is stored and refuses the same way.
    fresh = Broker(any_db.store)
    with pytest.raises(error):
        fresh.insert(name, doc)
    assert _stored(any_db) == before


def test_sd_key_must_be_a_stream_key_of_its_descriptor(any_db, tmp_path):
    run = StreamRun(tmp_path)
    docs = [(n, d) for n, d in run.docs if n not in ("stream_datum", "event", "stop")]
    _insert(any_db, docs)
    bad_sr = {**run.of("stream_resource")[0], "uid": "sr-x", "data_key": "x"}
    any_db.insert("stream_resource", bad_sr)
    sd = {**run.of("stream_datum")[0], "uid": "sr-x/0", "stream_resource": "sr-x"}
    with pytest.raises(DataKeysMismatchError, match="does not stream"):
        any_db.insert("stream_datum", sd)


def test_indices_past_the_declared_shape_are_refused(any_db, tmp_path):
    run = StreamRun(tmp_path)
    start, desc = run.of("start")[0], run.of("descriptor")[0]
    _insert(any_db, [("start", start), ("descriptor", desc)])
    sr = {**run.of("stream_resource")[0], "uid": "sr-shape"}
    sr["parameters"] = {**sr["parameters"], "shape": [3, H, W]}
    any_db.insert("stream_resource", sr)
    sd = {"uid": "sr-shape/0", "stream_resource": "sr-shape", "descriptor": desc["uid"],
          "indices": {"start": 0, "stop": 4}, "seq_nums": {"start": 1, "stop": 5}}
    with pytest.raises(DocumentValidationError, match="past the 3 rows"):
        any_db.insert("stream_datum", sd)


def test_legacy_stream_resource_form_is_accepted(any_db, tmp_path):
    run = StreamRun(tmp_path, legacy=True)
    _insert(any_db, run.docs)
    assert any_db.store.stream_resources(run.uid) == run.of("stream_resource")


# ----------------------------------------------------------------- rows
@pytest.mark.parametrize("events", [True, False], ids=["step", "fly"])
def test_rows_are_events_and_stream_datum_unfilled_cells_are_references(any_db, tmp_path,
                                                                         events):
    run = StreamRun(tmp_path, events=events)
    _insert(any_db, run.docs)
    lazy = any_db[run.uid].table()
    df = lazy.compute()
    assert df.dtypes.to_dict() == lazy.dtypes.to_dict()  # as dask's meta promised
    assert list(df.index) == list(range(1, run.rows + 1))
    sr = run.of("stream_resource")[0]["uid"]
    assert list(df["img"]) == [f"{sr}/{i}" for i in range(run.rows)]
    if events:
        assert list(df["x"]) == [float(s) for s in range(1, run.rows + 1)]
        assert df["time"].notna().all()
    else:
        assert df["time"].isna().all() and df["x"].isna().all()  # no invented time


def test_layout_references_name_resource_and_row_and_none_where_uncovered():
    """Cells of an unfilled STREAM: key, made in bulk, equal stream_reference per row."""
    from dask_broker.stream_data import StreamLayout, stream_reference

    def datum(resource, seq, index):
        return {"stream_resource": resource, "seq_nums": {"start": seq[0], "stop": seq[1]},
                "indices": {"start": index[0], "stop": index[1]}}

    layout = StreamLayout.build(
        [{"data_keys": {"img": {"external": "STREAM:"}}}],
        # two consecutive blocks of "a" (merged), a gap at 6..7, then "b" from its row 10
        [datum("a", (1, 3), (0, 2)), datum("a", (3, 6), (2, 5)), datum("b", (8, 10), (10, 12))],
        [{"uid": "a", "data_key": "img"}, {"uid": "b", "data_key": "img"}])
    seq = np.array([0, 1, 2, 5, 6, 7, 8, 9, 12, 3])
    want = {1: ("a", 0), 2: ("a", 1), 5: ("a", 4), 8: ("b", 10), 9: ("b", 11), 3: ("a", 2)}
    got = layout.references("img", seq)
    assert got.dtype == object
    assert got.tolist() == [stream_reference(*want[s]) if s in want else None
                            for s in seq.tolist()]
    assert layout.references("img", np.empty(0, dtype="i8")).tolist() == []
    assert layout.references("img", np.array([6, 7])).tolist() == [None, None]


def test_fly_rows_beyond_the_events(any_db, tmp_path):
    """Events for the first rows only: later rows come from stream_datum alone."""
    run = StreamRun(tmp_path)
    docs = [(n, d) for n, d in run.docs if not (n == "event" and d["seq_num"] > 3)]
    _insert(any_db, docs)
    df = any_db[run.uid].table(fields=["x"]).compute()
    assert len(df) == run.rows
    assert df["x"].iloc[:3].tolist() == [1.0, 2.0, 3.0]
    assert df["x"].iloc[3:].isna().all()
    assert df["time"].iloc[3:].isna().all()


@pytest.mark.parametrize("chunk_size", [None, 2, 3])
@pytest.mark.parametrize("kwargs", [{}, {"two_files": True}, {"per_row": 2},
                                    {"legacy": True}, {"dtype_numpy": False}],
                         ids=["one-file", "two-files", "two-frames-per-row", "legacy", "no-dtype"])
def test_filled_rows_equal_the_files(any_db, tmp_path, kwargs, chunk_size):
    run = StreamRun(tmp_path, **kwargs)
    _insert(any_db, run.docs)
    h = any_db[run.uid]
    df = h.table(fill=True, chunk_size=chunk_size).compute()
    assert len(df) == run.rows
    for got, want in zip(df["img"], run.expected, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.dtype("u2")
    ds = h.to_xarray(chunk_size=chunk_size)
    img = ds["img"]
    assert img.shape == (run.rows, *run.expected[0].shape)
    np.testing.assert_array_equal(img.values, np.stack(run.expected))
    np.testing.assert_array_equal(img[2:4].values, np.stack(run.expected[2:4]))
    np.testing.assert_array_equal(ds["x"].values, np.arange(1, run.rows + 1, dtype=float))


def test_scalar_per_row_key_is_a_number_column(any_db, tmp_path):
    run = StreamRun(tmp_path, with_scalar=True, two_files=True)
    _insert(any_db, run.docs)
    h = any_db[run.uid]
    df = h.table(fill=True, fields=["tot"]).compute()
    assert df["tot"].dtype == np.float64
    np.testing.assert_array_equal(df["tot"].to_numpy(), run.expected_tot)
    tot = h.to_xarray()["tot"]
    assert tot.shape == (run.rows,)
    np.testing.assert_array_equal(tot.values, run.expected_tot)


def test_table_chunks_and_chunk(any_db, tmp_path):
    run = StreamRun(tmp_path, events=False)
    _insert(any_db, run.docs)
    h = any_db[run.uid]
    chunks = list(h.table_chunks(chunk_size=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert pd.concat(chunks).index.tolist() == list(range(1, run.rows + 1))
    assert h.table_chunk("primary", 1, chunk_size=3).index.tolist() == [4, 5, 6]


def test_projection_of_stream_columns(any_db, tmp_path):
    run = StreamRun(tmp_path)
    _insert(any_db, run.docs)
    df = any_db[run.uid].table(fill=True)
    only_x = df[["x"]].compute()
    assert list(only_x.columns) == ["x"] and len(only_x) == run.rows
    np.testing.assert_array_equal(df["img"].compute().iloc[5], run.expected[5])


# ----------------------------------------------------------------- replay
def _check_order(docs):
    seen_sr, seen_sd_seq, names = set(), {}, [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    descs = set()
    for name, doc in docs:
        if name == "descriptor":
            descs.add(doc["uid"])
        elif name == "stream_resource":
            seen_sr.add(doc["uid"])
        elif name == "stream_datum":
            assert doc["stream_resource"] in seen_sr
            assert doc["descriptor"] in descs
            for s in range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"]):
                seen_sd_seq[s] = True
        elif name == "event":
            assert doc["descriptor"] in descs
            assert doc["seq_num"] in seen_sd_seq  # its stream_datum came first


@pytest.mark.parametrize("events", [True, False], ids=["step", "fly"])
def test_docs_replay_in_a_valid_order_and_round_trip(any_db, tmp_path, events):
    run = StreamRun(tmp_path, events=events, with_scalar=True)
    _insert(any_db, run.docs)
    replay = list(any_db[run.uid].docs())
    _check_order(replay)
    key = lambda nd: (nd[0], nd[1].get("uid"))  # noqa: E731
    assert sorted(map(key, replay)) == sorted(map(key, run.docs))
    # What is replayed inserts into another catalog, and reads back the same.
    other = Broker.temp()
    _insert(other, replay)
    a = any_db[run.uid].table(fill=True).compute()
    b = other[run.uid].table(fill=True).compute()
    pd.testing.assert_frame_equal(a.drop(columns=["img"]), b.drop(columns=["img"]))
    for x, y in zip(a["img"], b["img"], strict=True):
        np.testing.assert_array_equal(x, y)


def test_docs_of_selected_fields(any_db, tmp_path):
    run = StreamRun(tmp_path, with_scalar=True)
    _insert(any_db, run.docs)
    names = [(n, d.get("data_key")) for n, d in any_db[run.uid].docs(fields=["tot"])
             if n == "stream_resource"]
    assert names == [("stream_resource", "tot")]
    only_x = [n for n, _ in any_db[run.uid].docs(fields=["x"])]
    assert "stream_resource" not in only_x and "stream_datum" not in only_x


def test_fill_context_fills_references(any_db, tmp_path):
    run = StreamRun(tmp_path, with_scalar=True, two_files=True)
    _insert(any_db, run.docs)
    h = any_db[run.uid]
    with h.fill_context() as fc:
        filled = fc.fill_table(h.table().compute())  # pandas in, pandas out
        lazy = fc.fill_table(h.table())               # dask in, dask out
        assert not isinstance(lazy, pd.DataFrame)
        later = lazy.compute()
    for df in (filled, later):
        assert df["x"].tolist() == [float(s) for s in range(1, run.rows + 1)]
        for got, want in zip(df["img"], run.expected, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(df["tot"].to_numpy(dtype=float), run.expected_tot)


def test_export_with_new_root_copies_stream_files(any_db, tmp_path):
    (tmp_path / "src").mkdir()
    run = StreamRun(tmp_path / "src", two_files=True)
    _insert(any_db, run.docs)
    other = Broker.temp()
    pairs = any_db.export(any_db[run.uid], other, new_root=str(tmp_path / "archive"))
    assert sorted(new for _, new in pairs) == [str(tmp_path / "archive" / f"img_{i}.h5")
                                               for i in (0, 1)]
    uris = [r["uri"] for r in other.store.stream_resources(run.uid)]
    assert all(u.startswith(f"file://localhost{tmp_path}/archive/") for u in uris)
    assert [r["uri"] for r in any_db.store.stream_resources(run.uid)] == \
        [r["uri"] for r in run.resources]  # the source catalog is unchanged
    import shutil

    shutil.rmtree(tmp_path / "src")  # the archive reads its own copies
    np.testing.assert_array_equal(other[run.uid].to_xarray()["img"].values,
                                  np.stack(run.expected))
