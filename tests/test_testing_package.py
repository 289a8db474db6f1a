"""dask_broker.testing: the conformance suite a third-party store subclasses, the run builder,
the files of handler tests -- and the old import paths of each."""

from __future__ import annotations

import pytest

import dask_broker.testing as testing
from dask_broker.stores.sqlite import SQLiteStore
from dask_broker.testing import RunBuilder, StoreConformance


class ThirdPartyStore(SQLiteStore):
    """A store from another package: here a subclass, as a backend would be written."""


class TestThirdPartyStorePassesTheSuite(StoreConformance):
    """How a third-party package proves its store: subclass the suite, give ``make_store``."""

    @pytest.fixture
    def make_store(self, tmp_path):
        return ThirdPartyStore(tmp_path / "catalog.db")


def test_old_import_paths_are_the_same_objects():
    from dask_broker.handlers import testing as handler_testing
    from dask_broker.synthetic import scalar_scan_documents

    assert scalar_scan_documents is testing.scalar_scan_documents
    for name in ("write_ad_hdf5", "write_npy", "make_external_run", "ExternalRun"):
        assert getattr(handler_testing, name) is getattr(testing, name)
    assert set(testing.__all__) <= set(dir(testing)) | {
        "StoreConformance", "QueryConformance", "TextSearchConformance"}


def test_run_builder_clock_and_documents():
    run = RunBuilder(time=100.0, metadata={"scan_id": 3}, step=0.5)
    desc = run.descriptor()
    assert desc.descriptor_doc["time"] == 100.5 and run.start["scan_id"] == 3
    page = run.page(desc, [1, 2])
    assert page["seq_num"] == [1, 2] and page["data"]["label"] == ["point-1", "point-2"]
    event = run.event(desc, 3)
    assert event["seq_num"] == 3 and event["data"]["x"] == 0.5 * 3 - 3.25
    assert run.single(desc, 4)["seq_num"] == [4]
    assert run.stop()["run_start"] == run.uid


def test_external_run_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    run = testing.make_external_run(tmp_path, n_files=1, points_per_file=2, npy=False)
    with h5py.File(run.files[0]) as f:
        assert f["entry/data/data"].shape[0] == 2
    assert [name for name, _ in run.documents][:2] == ["start", "descriptor"]
