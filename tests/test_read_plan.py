"""One ReadPlan per read: what it reads once on the client, what it ships, how it sizes."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest

from dask_broker import Broker
from dask_broker.handlers import close_shared_handlers
from dask_broker.handlers.testing import make_external_run
from dask_broker.read import FrameSpec, ReadPlan, plan_read


def _external_run(db, tmp_path):
    ext = make_external_run(tmp_path, n_files=3, points_per_file=4, npy=False)
    for name, doc in ext.documents:
        db.insert(name, doc)
    return db, db[-1], ext


@pytest.fixture
def run(any_db, tmp_path):
    """``(db, header, ext)``: 12 AD_HDF5 frames in 3 files, on each store."""
    yield _external_run(any_db, tmp_path)
    close_shared_handlers()


@pytest.fixture
def sqlite_run(tmp_path):
    """The same run in an embedded SQLite catalog."""
    yield _external_run(Broker.temp(), tmp_path)
    close_shared_handlers()


class Calls:
    """Counts calls of store methods (client and tasks alike: threads share the store)."""

    def __init__(self, monkeypatch, store, names):
        self.counts = dict.fromkeys(names, 0)
        cls = type(store)
        for name in names:
            original = getattr(cls, name)

            def counting(self_, *args, _name=name, _original=original, **kwargs):
                self.counts[_name] += 1
                return _original(self_, *args, **kwargs)

            monkeypatch.setattr(cls, name, counting)


READ_ONCE = ["descriptors", "resources", "get_resource", "get_stop", "event_counts"]


@pytest.mark.parametrize("how", ["table", "chunks", "chunk", "xarray"])
def test_descriptors_and_resources_are_read_once(run, monkeypatch, how):
    db, h, ext = run
    calls = Calls(monkeypatch, db.store, READ_ONCE)
    with dask.config.set(scheduler="threads"):
        if how == "table":
            got = h.table(fill=True, fields=["img"], chunk_size=4).compute()["img"]
        elif how == "chunks":
            got = [f for c in h.table_chunks(fields=["img"], chunk_size=4) for f in c["img"]]
        elif how == "chunk":
            got = h.table_chunk("primary", 1, chunk_size=4, fields=["img"])["img"]
        else:
            got = h.to_xarray(fields=["img"], chunk_size=4)["img"].values
    assert len(got) == (4 if how == "chunk" else 12)
    assert calls.counts["descriptors"] == 1
    assert calls.counts["event_counts"] == 1 and calls.counts["get_stop"] == 1
    # resources: once when filling (the plan's recipe), never looked up one by one
    assert calls.counts["resources"] == (1 if how in ("table", "xarray") else 0)
    assert calls.counts["get_resource"] == 0


def test_plan_is_small_picklable_and_sized_from_the_file(run):
    db, h, ext = run
    plan = h.event_source.plan(h, fields=["img"], fill=True)
    assert isinstance(plan, ReadPlan) and "ReadPlan(" in repr(plan)
    # no dtype_numpy in the descriptor: the frame's shape and dtype come from the first file
    assert plan.frame("img") == FrameSpec((1, 4, 5), "<u2", "resource")
    restored = pickle.loads(pickle.dumps(plan))
    assert restored.specs == plan.specs and restored.columns == plan.columns
    graph = h.table(fill=True, fields=["img"]).__dask_graph__()
    pickle.dumps(dict(graph))
    pickle.dumps(dict(h.to_xarray(fields=["img"])["img"].data.__dask_graph__()))


def test_partitions_sized_by_known_frame_bytes(run):
    db, h, ext = run
    frame = 1 * 4 * 5 * 2
    with dask.config.set({"dask_broker.frame-partition-bytes": 3 * (frame + 16),
                          "dask_broker.partition-bytes": 5 * 16}):
        plan = h.event_source.plan(h, fields=["img"], fill=True)
        # 3 frames a partition at most; partitions follow the files (3 files of 4 frames:
        # each cut into two slices of 2), see test_frame_partitions_follow_files
        assert plan.chunk_size == 3 and plan.npartitions == 6
        ds = h.to_xarray(fields=["img"])
        # without frames (unfilled, or scalars only): dask_broker.partition-bytes
        assert h.event_source.plan(h, fields=["img"]).chunk_size == 1
        assert h.event_source.plan(h, fields=["motor"], fill=True).chunk_size == 3
    assert ds["img"].data.chunks[0] == (2, 2, 2, 2, 2, 2)
    assert h.event_source.plan(h, fields=["img"], fill=True,
                               chunk_size=f"{6 * (frame + 16)}B").chunk_size == 6


def test_unreadable_first_file_leaves_the_plan_lazy(tmp_path):
    ext = make_external_run(tmp_path, n_files=2, points_per_file=2, npy=False)
    db = Broker.temp()
    for name, doc in ext.documents:
        db.insert(name, doc)
    h = db[-1]
    db.set_root_map({str(tmp_path): str(tmp_path / "elsewhere")})
    plan = plan_read(db.event_source, h, fields=["img"], fill=True)
    assert plan.frame("img").source == "unknown"
    assert h.table(fill=True).npartitions == 1  # planning does not fail


def test_xarray_blocks_come_straight_from_the_reader(run):
    db, h, ext = run
    ds = h.to_xarray(fields=["img", "motor"], chunk_size=5)
    assert ds["img"].data.chunks[0] == (5, 5, 2)
    table = h.table(fill=True, chunk_size=5).compute()
    np.testing.assert_array_equal(ds["img"].values, np.stack(table["img"].to_list()))
    np.testing.assert_array_equal(ds["img"][[0, 6, 11]].values,
                                  np.stack(table["img"].to_list())[[0, 6, 11]])
    np.testing.assert_array_equal(ds["motor"].values, table["motor"].to_numpy())


def test_values_of_filled_frames_read_straight_into_one_array(run, monkeypatch):
    """np.asarray / .values of to_xarray's frames: every partition read into the result,
    no chunk computed and concatenated; the array is a plain dask array, and any other
    operation is plain dask."""
    import dask.array as da
    import xarray as xr

    db, h, ext = run
    ds = h.to_xarray(fields=["img", "motor"], chunk_size=5)
    data = ds["img"].data
    assert type(data) is da.Array
    expected = data.compute(scheduler="sync")
    monkeypatch.setattr(da.Array, "compute", lambda *a, **k: pytest.fail("computed"))
    with dask.config.set(scheduler="threads"):
        values = ds["img"].values
    np.testing.assert_array_equal(values, expected)
    assert values.dtype == np.uint16 and values.flags.c_contiguous
    monkeypatch.undo()
    assert "__array__" not in ds["img"][2:4].data.__dict__
    assert "__array__" not in pickle.loads(pickle.dumps(data)).__dict__
    np.testing.assert_array_equal(ds["img"][2:4].values, expected[2:4])
    np.testing.assert_array_equal(np.asarray(data, dtype="f8"), expected.astype("f8"))
    # mixes with other dask arrays in xarray operations
    derived = ds.assign(total=ds["img"].sum(("img_dim_0", "img_dim_1", "img_dim_2")))
    computed = derived.compute()
    np.testing.assert_array_equal(computed["img"].values, expected)
    assert isinstance(xr.merge([ds, derived[["total"]]]), xr.Dataset)


def test_frames_partitions_use_frame_partition_bytes(run):
    db, h, ext = run
    with dask.config.set({"dask_broker.frame-partition-bytes": "56B"}):  # one frame + 16
        assert h.table(fill=True, fields=["img"]).npartitions == 12
        assert h.table(fill=True, fields=["motor"]).npartitions == 1
        assert h.table(fields=["img"]).npartitions == 1


def test_table_cells_are_views_of_one_block_per_partition(run):
    db, h, ext = run
    part = h.table(fill=True, fields=["img"], chunk_size=6).partitions[0].compute()
    cells = part["img"].to_list()
    assert all(c.shape == (1, 4, 5) for c in cells)
    assert len({id(c.base) for c in cells}) == 1  # rows of one block


def test_sqlite_datum_kwargs_decoded_in_bulk(sqlite_run):
    db, h, ext = sqlite_run
    ids = [e["data"]["img"] for e in ext.events]
    got = db.store.datum(ids)
    assert {i: d["datum_kwargs"] for i, d in got.items()} == \
        {i: ext.datum[i]["datum_kwargs"] for i in ids}
    from dask_broker.errors import CatalogCorruptError

    assert db.store._loads_many(['{"a": 1}', "[2]", "null"]) == [{"a": 1}, [2], None]
    with pytest.raises(CatalogCorruptError, match="not JSON"):
        db.store._loads_many(['{"a": 1}', "{"])


def _files_of_partitions(h, ext, **kw):
    """The file of each row of each partition of the filled table (by its datum id)."""
    plan = h.event_source.plan(h, fields=["img"], fill=True, **kw)
    reader = plan.reader()
    return [[ext.locations[i][0] for i in
             reader.read_columns(spec, plan.columns[1:], fill=False)[1]["img"]]
            for spec in plan.specs]


def _run_of_files(db, tmp_path, n_files, points_per_file, uuid_datum_ids=False):
    """``(db, header, ext)``: AD_HDF5 frames in ``n_files`` files."""
    ext = make_external_run(tmp_path, n_files=n_files, points_per_file=points_per_file,
                            npy=False)
    documents = ext.documents
    if uuid_datum_ids:  # datum ids not of the form "<resource uid>/<n>" (older ophyd)
        import uuid

        new = {i: str(uuid.uuid4()) for i in ext.datum}
        ext.locations = {new[i]: where for i, where in ext.locations.items()}
        documents = []
        for name, doc in ext.documents:
            if name == "datum":
                doc = {**doc, "datum_id": new[doc["datum_id"]]}
            elif name == "event":
                doc = {**doc, "data": {**doc["data"], "img": new[doc["data"]["img"]]}}
            documents.append((name, doc))
    for name, doc in documents:
        db.insert(name, doc)
    return db, db[-1], ext


@pytest.mark.parametrize("uuid_datum_ids", [False, True])
def test_frame_partitions_follow_files(any_db, tmp_path, uuid_datum_ids):
    """Frames from several files: a partition is a whole number of files within the byte
    budget (a row-count chunk_size cuts where it falls)."""
    db, h, ext = _run_of_files(any_db, tmp_path, 5, 4, uuid_datum_ids)
    budget = 9 * (1 * 4 * 5 * 2 + 16)  # 9 frames and their seq_num and time
    with dask.config.set({"dask_broker.frame-partition-bytes": budget}):
        plan = h.event_source.plan(h, fields=["img"], fill=True)
        files = _files_of_partitions(h, ext, chunk_size=f"{budget}B")
        filled = h.table(fill=True, fields=["img"]).compute()
    assert plan.chunk_size == 9
    assert [s.seq_range for s in plan.specs] == [(1, 9), (9, 17), (17, 21)]
    assert [len(f) for f in files] == [8, 8, 4]
    for i, part in enumerate(files):  # each file read by one partition only
        assert not set(part) & {f for other in files[:i] + files[i + 1:] for f in other}
    straddling = _files_of_partitions(h, ext, chunk_size=9)
    assert [len(f) for f in straddling] == [9, 9, 2] and set(straddling[0]) & set(straddling[1])
    expected = h.table(fill=True, fields=["img"], chunk_size=9).compute()
    assert filled.index.tolist() == list(range(1, 21))
    for a, b in zip(filled["img"], expected["img"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_file_larger_than_a_partition_is_cut_into_equal_slices(any_db, tmp_path):
    db, h, ext = _run_of_files(any_db, tmp_path, 2, 7)
    with dask.config.set({"dask_broker.frame-partition-bytes": 3 * (1 * 4 * 5 * 2 + 16)}):
        files = _files_of_partitions(h, ext, chunk_size=f"{3 * 56}B")
        ds = h.to_xarray(fields=["img"])
    assert [len(f) for f in files] == [2, 2, 3, 2, 2, 3]
    assert all(len(set(f)) == 1 for f in files)  # a slice of one file each
    assert ds["img"].data.chunks[0] == (2, 2, 3, 2, 2, 3)
    table = h.table(fill=True, fields=["img"], chunk_size=3).compute()
    np.testing.assert_array_equal(ds["img"].values, np.stack(table["img"].to_list()))


def test_files_of_about_one_row_are_not_read_when_planning(tmp_path, monkeypatch):
    """A file per event (NPY): every cut is at a file's end anyway, so planning does not
    read the datum ids to follow the files."""
    from dask_broker.read import plan as plan_module

    ext = make_external_run(tmp_path, n_files=1, points_per_file=4, npy=True)
    db = Broker.temp()
    for name, doc in ext.documents:
        db.insert(name, doc)
    h = db[-1]
    monkeypatch.setattr(plan_module, "_file_parts",
                        lambda *a: pytest.fail("datum ids read to follow the files"))
    with dask.config.set({"dask_broker.frame-partition-bytes": 2 * (6 * 8 + 16)}):
        plan = h.event_source.plan(h, fields=["spectrum"], fill=True)
    assert [s.rows for s in plan.specs] == [2, 2]


def test_meta_is_built_once_one_block_per_dtype_and_each_copy_is_its_own(sqlite_run):
    db, h, ext = sqlite_run
    plan = plan_read(db.event_source, h, "primary", fields=["motor"], timestamps=True)
    first, second = plan.meta(), plan.meta()
    assert len(first) == 0 and list(first.columns) == ["time", "motor", "ts_motor"]
    assert first.dtypes.tolist() == plan.reader()(plan.specs[0]).dtypes.tolist()
    assert len(first._mgr.blocks) == first.dtypes.nunique()  # dask copies it per collection
    first["extra"] = np.empty(0)                              # the caller's own frame
    del first["motor"]
    assert list(plan.meta().columns) == list(second.columns) == ["time", "motor", "ts_motor"]


def test_each_page_is_released_before_the_next_is_read(sqlite_run):
    import dataclasses
    import weakref

    db, h, ext = sqlite_run
    plan = plan_read(db.event_source, h, "primary", fields=["motor"])
    reader = plan.reader()
    spec = plan.specs[0]
    pages = list(db.store.iter_event_pages(spec.descriptors, fields=["motor"]))
    pages = [dataclasses.replace(p) for p in pages for _ in range(2)]  # several pages
    released = []

    def stream():
        previous = None
        while pages:
            released.append(previous is None or previous() is None)
            page = pages.pop(0)
            previous = weakref.ref(page)
            yield page
            del page

    rows = sum(len(p) for p in pages)
    seq, values = reader.assemble(stream(), [c for c in plan.columns if c.name == "motor"],
                                  capacity=rows)
    assert len(released) > 1 and all(released)
    assert 2 * len(seq) == rows  # each seq_num twice: the last stored is kept
