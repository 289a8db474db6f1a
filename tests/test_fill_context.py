"""FillContext: filling events, datum and tables; root_map; the error cases."""

from __future__ import annotations

import copy
import os
import pickle
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from dask_broker.errors import (
    HandlerError,
    HandlerNotFoundError,
    MissingFileError,
    UnknownDatumError,
    UnknownFieldError,
    UnknownReferenceError,
)
from dask_broker.fill import FillContext, resource_full_path
from dask_broker.handlers import AreaDetectorHDF5Handler, HandlerRegistry, NpyHandler
from dask_broker.handlers.testing import make_external_run


def expected_value(run, datum_id):
    """Read what a datum points to straight from the file, with h5py or numpy."""
    path, point, fpp = run.locations[datum_id]
    if point is None:
        return np.load(path)
    with h5py.File(path, "r") as f:
        frames = f["/entry/data/data"][point * fpp:(point + 1) * fpp]
    return frames  # (fpp, H, W), as area-detector-handlers returns it


def ctx_for(run, **kwargs):
    return FillContext([run.descriptor], run.resources, run.datum, **kwargs)


@pytest.fixture(params=[1, 3], ids=["fpp1", "fpp3"])
def run(request, tmp_path):
    return make_external_run(tmp_path, n_files=3, points_per_file=4,
                             frame_per_point=request.param)


# ---------------------------------------------------------------- fill(event)
def test_fill_event_equals_direct_reads(run):
    with ctx_for(run) as ctx:
        for event in run.events:
            before = copy.deepcopy(event)
            filled = ctx.fill(event)
            assert event == before  # input untouched
            assert filled["filled"] == {"img": True, "spectrum": True}
            assert filled["data"]["motor"] == event["data"]["motor"]
            assert filled["uid"] == event["uid"] and filled["seq_num"] == event["seq_num"]
            for key in ("img", "spectrum"):
                assert isinstance(filled["data"][key], np.ndarray)
                np.testing.assert_array_equal(filled["data"][key],
                                              expected_value(run, event["data"][key]))
    fpp = run.resources[next(iter(run.resources))]["resource_kwargs"]["frame_per_point"]
    assert filled["data"]["img"].shape == (fpp, 4, 5)


def test_fill_event_fields_and_already_filled(run):
    event = run.events[0]
    with ctx_for(run) as ctx:
        only_img = ctx.fill(event, fields=["img", "motor"])
        assert only_img["filled"] == {"img": True, "spectrum": False}
        assert only_img["data"]["spectrum"] == event["data"]["spectrum"]
        again = ctx.fill(only_img)  # img already filled: kept, spectrum filled now
        assert again["data"]["img"] is not only_img["data"]["img"]  # still a deep copy
        np.testing.assert_array_equal(again["data"]["img"], only_img["data"]["img"])
        assert again["filled"] == {"img": True, "spectrum": True}
        assert ctx.fill(event, fields=[])["filled"] == {"img": False, "spectrum": False}
        with pytest.raises(UnknownFieldError, match="nope"):
            ctx.fill(event, fields=["nope"])


def test_fill_event_without_filled_key(run):
    event = {k: v for k, v in run.events[0].items() if k != "filled"}  # as mongo stores it
    with ctx_for(run) as ctx:
        filled = ctx.fill(event)
    assert filled["filled"] == {"img": True, "spectrum": True}


def test_fill_event_of_unknown_descriptor(run):
    with ctx_for(run) as ctx, pytest.raises(UnknownReferenceError, match="descriptor"):
        ctx.fill({**run.events[0], "descriptor": "not-a-descriptor"})


def test_store_backed_lookups(run, any_db):
    db = any_db
    for name, doc in run.documents:
        db.insert(name, doc)
    store = db.store
    with FillContext.from_store(store, store.descriptors(run.start["uid"])) as ctx:
        for event in run.events:
            filled = ctx.fill(event)
            for key in ("img", "spectrum"):
                np.testing.assert_array_equal(filled["data"][key],
                                              expected_value(run, event["data"][key]))


# ---------------------------------------------------------------- fill_datum
def test_fill_datum_order_and_duplicates(run):
    ids = [e["data"]["img"] for e in run.events][::-1]
    ids = ids + ids[:2] + [run.events[0]["data"]["spectrum"]]
    with ctx_for(run) as ctx:
        values = ctx.fill_datum(ids)
    assert len(values) == len(ids)
    for datum_id, value in zip(ids, values, strict=True):
        np.testing.assert_array_equal(value, expected_value(run, datum_id))
    assert ctx.fill_datum([]) == []


def _counting(base):
    class Counting(base):
        bulk_calls: list = []
        single_calls: list = []

        def read_many(self, kwargs_list):
            type(self).bulk_calls.append(len(kwargs_list))
            return super().read_many(kwargs_list)

        def __call__(self, **kwargs):
            type(self).single_calls.append(kwargs)
            return super().__call__(**kwargs)

    return Counting


def test_fill_datum_groups_by_resource_and_uses_read_many(run):
    counting = _counting(AreaDetectorHDF5Handler)
    registry = {"AD_HDF5": counting, "NPY": NpyHandler}
    ids = [e["data"]["img"] for e in run.events]
    with ctx_for(run, registry=registry) as ctx:
        values = ctx.fill_datum(ids)
    assert counting.bulk_calls == [4, 4, 4]  # one bulk read per file, all points at once
    assert counting.single_calls == []
    for datum_id, value in zip(ids, values, strict=True):
        np.testing.assert_array_equal(value, expected_value(run, datum_id))


def test_plain_handler_is_called_one_datum_at_a_time(run):
    class Plain:  # only __call__: no read_many, no close
        calls = 0

        def __init__(self, path, frame_per_point=1):
            self.path, self.fpp = path, frame_per_point

        def __call__(self, point_number):
            type(self).calls += 1
            with h5py.File(self.path, "r") as f:
                start = point_number * self.fpp
                frames = f["/entry/data/data"][start:start + self.fpp]
            return frames

    ids = [e["data"]["img"] for e in run.events]
    with ctx_for(run, registry={"AD_HDF5": Plain, "NPY": NpyHandler}) as ctx:
        values = ctx.fill_datum(ids)
    assert Plain.calls == len(ids)
    for datum_id, value in zip(ids, values, strict=True):
        np.testing.assert_array_equal(value, expected_value(run, datum_id))


def test_lazy_results_are_materialized_while_the_handler_is_open(run):
    adh = pytest.importorskip("area_detector_handlers.handlers")
    ids = [e["data"]["img"] for e in run.events]
    registry = HandlerRegistry()
    registry.register("AD_HDF5", adh.AreaDetectorHDF5Handler)  # returns dask arrays
    with ctx_for(run, registry=registry) as ctx:
        values = ctx.fill_datum(ids)
    for datum_id, value in zip(ids, values, strict=True):  # usable after every file is closed
        assert isinstance(value, np.ndarray)
        expected = expected_value(run, datum_id)
        np.testing.assert_array_equal(value.reshape(expected.shape), expected)


# ---------------------------------------------------------------- fill_table
def test_fill_table(run):
    df = pd.DataFrame([e["data"] for e in run.events],
                      index=pd.Index([e["seq_num"] for e in run.events], name="seq_num"))
    original = df.copy()
    with ctx_for(run) as ctx:
        filled = ctx.fill_table(df)
        only = ctx.fill_table(df, fields=["spectrum", "motor"])
        with pytest.raises(UnknownFieldError, match="nope"):
            ctx.fill_table(df, fields=["nope"])
    pd.testing.assert_frame_equal(df, original)  # input untouched
    pd.testing.assert_series_equal(filled["motor"], df["motor"])
    assert list(filled.index) == list(df.index)
    for key in ("img", "spectrum"):
        assert filled[key].dtype == object
        for datum_id, value in zip(df[key], filled[key], strict=True):
            assert isinstance(value, np.ndarray)
            np.testing.assert_array_equal(value, expected_value(run, datum_id))
    assert list(only["img"]) == list(df["img"])
    assert isinstance(only["spectrum"].iloc[0], np.ndarray)


def test_fill_table_keeps_missing_cells(run):
    df = pd.DataFrame({"img": [run.events[0]["data"]["img"], None],
                       "motor": [1.0, 2.0]}, dtype=object)
    with ctx_for(run) as ctx:
        filled = ctx.fill_table(df)
    assert isinstance(filled["img"].iloc[0], np.ndarray)
    assert filled["img"].iloc[1] is None


# ---------------------------------------------------------------- root_map
def test_resource_full_path():
    res = {"root": "/old", "resource_path": "a/b.h5"}
    assert resource_full_path(res) == "/old/a/b.h5"
    assert resource_full_path(res, {"/old": "/new/place"}) == "/new/place/a/b.h5"
    assert resource_full_path(res, {"/other": "/x"}) == "/old/a/b.h5"
    assert resource_full_path({"root": "", "resource_path": "/abs/b.h5"}) == "/abs/b.h5"
    assert resource_full_path({"root": "", "resource_path": "rel/b.h5"}) == "rel/b.h5"
    assert resource_full_path({"root": None, "resource_path": "b.h5"}) == "b.h5"
    assert resource_full_path({"root": "", "resource_path": "b.h5"}, {"": "/mnt"}) == "/mnt/b.h5"


def test_root_map_after_files_moved(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    run = make_external_run(old)
    new = tmp_path / "new"
    shutil.move(old, new)
    with ctx_for(run) as ctx, pytest.raises(MissingFileError) as info:
        ctx.fill(run.events[0])
    msg = str(info.value)
    res = run.resources[run.datum[run.events[0]["data"]["img"]]["resource"]]
    assert res["uid"] in msg and os.path.join(str(old), "det_000.h5") in msg
    assert "root_map {}" in msg and "root_map={old_root: new_root}" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    root_map = {str(old): str(new)}
    with ctx_for(run, root_map=root_map) as ctx:
        filled = ctx.fill(run.events[0])
    path, point, _ = run.locations[run.events[0]["data"]["img"]]
    with h5py.File(path.replace(str(old), str(new)), "r") as f:
        np.testing.assert_array_equal(filled["data"]["img"], f["/entry/data/data"][point:point + 1])
    with ctx_for(run, root_map={str(old): str(tmp_path / "wrong")}) as ctx:
        with pytest.raises(MissingFileError, match="wrong.*root_map"):
            ctx.fill(run.events[0])


def test_empty_root(tmp_path):
    run = make_external_run(tmp_path, root="")
    assert all(r["root"] == "" and os.path.isabs(r["resource_path"])
               for r in run.resources.values())
    with ctx_for(run) as ctx:
        filled = ctx.fill(run.events[1])
    np.testing.assert_array_equal(filled["data"]["img"],
                                  expected_value(run, run.events[1]["data"]["img"]))


# ---------------------------------------------------------------- errors
def test_no_handler_for_spec(run):
    with ctx_for(run, registry=HandlerRegistry(builtins={}, entry_point_groups=())) as ctx:
        with pytest.raises(HandlerNotFoundError) as info:
            ctx.fill(run.events[0])
    msg = str(info.value)
    assert "'AD_HDF5'" in msg and "register('AD_HDF5', HandlerClass)" in msg
    assert run.datum[run.events[0]["data"]["img"]]["resource"] in msg
    with ctx_for(run, registry={"NPY": NpyHandler}) as ctx:
        with pytest.raises(HandlerNotFoundError, match="'AD_HDF5'.*known: \\['NPY'\\]"):
            ctx.fill(run.events[0])


def test_unknown_datum_id(run):
    with ctx_for(run) as ctx:
        with pytest.raises(UnknownDatumError, match="'nope/0'"):
            ctx.fill_datum([run.events[0]["data"]["img"], "nope/0"])
        event = copy.deepcopy(run.events[0])
        event["data"]["img"] = "gone/7"
        with pytest.raises(UnknownDatumError, match="'gone/7'.*field 'img'"):
            ctx.fill(event)
        event["data"]["img"] = 3.5
        with pytest.raises(UnknownDatumError, match="not a datum id"):
            ctx.fill(event)


def test_datum_of_unknown_resource(run):
    datum = dict(run.datum)
    datum["orphan/0"] = {"datum_id": "orphan/0", "resource": "no-such-resource",
                         "datum_kwargs": {}}
    with FillContext([run.descriptor], run.resources, datum) as ctx:
        with pytest.raises(UnknownReferenceError, match="no-such-resource"):
            ctx.fill_datum(["orphan/0"])


def test_handler_that_raises(run):
    class Failing(AreaDetectorHDF5Handler):
        def read_many(self, kwargs_list):
            raise RuntimeError("bulk broke")

        def __call__(self, point_number):
            if point_number == 2:
                raise ValueError("corrupt frame")
            return AreaDetectorHDF5Handler.read_many(self, [{"point_number": point_number}])[0]

    ids = [e["data"]["img"] for e in run.events[:4]]  # points 0..3 of the first file
    with ctx_for(run, registry={"AD_HDF5": Failing, "NPY": NpyHandler}) as ctx:
        with pytest.raises(HandlerError) as info:
            ctx.fill_datum(ids)
    msg = str(info.value)
    assert ids[2] in msg and run.datum[ids[2]]["resource"] in msg
    assert "ValueError: corrupt frame" in msg and "Failing" in msg
    assert isinstance(info.value.__cause__, ValueError)


def test_handler_that_fails_to_open(run):
    class NoOpen:
        def __init__(self, path, **kwargs):
            raise PermissionError("not allowed")

    datum_id = run.events[0]["data"]["img"]
    with ctx_for(run, registry={"AD_HDF5": NoOpen}) as ctx:
        with pytest.raises(HandlerError, match="while opening resource .* for datum") as info:
            ctx.fill_datum([datum_id])
    assert run.datum[datum_id]["resource"] in str(info.value)
    assert isinstance(info.value.__cause__, PermissionError)


def test_missing_npy_file(tmp_path):
    run = make_external_run(tmp_path)
    datum_id = run.events[0]["data"]["spectrum"]
    os.remove(run.locations[datum_id][0])
    with ctx_for(run) as ctx, pytest.raises(MissingFileError, match="spectrum_0001.npy"):
        ctx.fill_datum([datum_id])


def test_fill_context_refuses_pickling(run):
    with ctx_for(run) as ctx:
        with pytest.raises(TypeError, match="cannot be pickled.*inside the task"):
            pickle.dumps(ctx)


def test_recipe_pickles(run):
    """What a Dask task ships instead of a FillContext: plain documents and a registry."""
    registry = HandlerRegistry()
    recipe = pickle.loads(pickle.dumps(([run.descriptor], run.resources, run.datum, registry)))
    descriptors, resources, datum, registry = recipe
    with FillContext(descriptors, resources, datum, registry=registry) as ctx:
        value = ctx.fill_datum([run.events[0]["data"]["img"]])[0]
    np.testing.assert_array_equal(value, expected_value(run, run.events[0]["data"]["img"]))


# ---------------------------------------------------------------- the one fill path
def test_datum_reader_read_into_equals_read(run):
    """DatumReader (what tables, xarray, docs and FillContext use) writes frames straight
    into an output array; rows of several resources, out of order, repeated."""
    from dask_broker.fill import DatumReader
    from dask_broker.handlers import HandlerCache

    img = [e["data"]["img"] for e in run.events]
    ids = [img[5], img[6], img[0], img[11], img[1], img[6]]
    reader = DatumReader(run.datum, run.resources, {"AD_HDF5": AreaDetectorHDF5Handler},
                         cache=HandlerCache(2))
    values = reader.read(ids)
    out = np.zeros((len(ids), *values[0].shape), dtype=values[0].dtype)
    reader.read_into(ids, out)
    for row, datum_id in zip(out, ids, strict=True):
        np.testing.assert_array_equal(row, expected_value(run, datum_id))
    assert reader.describe(ids[0]) == (values[0].shape, values[0].dtype)
    assert reader.cache.close_all() == 2
