"""The main job: ``run_demo`` / ``dask-broker demo`` on small sizes."""

from __future__ import annotations

import inspect
import subprocess
import sys

import h5py
import numpy as np
import pytest

from dask_broker import Broker
from dask_broker.demo import run_demo


def run_small(folder, **kw):
    lines: list[str] = []
    kw = {"num_events": 2_000, "num_frames": 30, "frame_shape": (16, 12), "frames_per_file": 10,
          "n_workers": 0, "progress": False, **kw}
    db = run_demo(folder, out=lines.append, **kw)
    return db, "\n".join(lines)


def frames_on_disk(folder) -> np.ndarray:
    files = sorted((folder / "frames").glob("*.h5"))
    arrays = []
    for path in files:
        with h5py.File(path, "r") as f:
            arrays.append(f["entry/data/data"][()])
    return np.concatenate(arrays)


def test_signature_backward_compatible():
    params = list(inspect.signature(run_demo).parameters.values())
    assert [p.name for p in params[:4]] == ["folder", "num_events", "progress", "out"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[4:])


def test_demo_threads(tmp_path):
    folder = tmp_path / "demo"
    db, text = run_small(folder)
    summary = text[text.index("== summary"):]
    for stream in ("primary", "baseline", "detector"):
        assert stream in summary
    assert "(16, 12)" in summary and "uint16" in summary
    assert "primary (2,000 events)" in summary and "detector (30 events)" in summary
    assert "timings" in summary and "total" in summary

    # the catalog is readable afterwards, from a new Broker, with the files next to it
    again = Broker.from_uri(f"sqlite:///{folder / 'catalog.db'}")
    assert len(again) == 1
    h = again[-1]
    assert h.stream_names == ["primary", "baseline", "detector"]
    assert h.stop["exit_status"] == "success"
    assert h.stop["num_events"] == {"primary": 2_000, "baseline": 2, "detector": 30}
    assert len(h.table("primary").compute()) == 2_000
    ds = h.to_xarray("detector")
    assert ds["img"].dims == ("time", "y", "x") and ds["img"].dtype == np.uint16
    np.testing.assert_array_equal(ds["img"].values, frames_on_disk(folder))
    assert len(list((folder / "frames").glob("*.h5"))) == 3
    assert all(r["spec"] == "AD_HDF5" and r["root"] == str(folder) for r in h.resources())


def test_demo_rewrites_folder_and_without_frames(tmp_path):
    folder = tmp_path / "demo"
    run_small(folder)
    db, text = run_small(folder, num_frames=0, num_events=500)
    assert len(Broker.from_uri(f"sqlite:///{folder / 'catalog.db'}")) == 1  # emptied first
    assert db[-1].stream_names == ["primary", "baseline"]
    assert not (folder / "frames").exists()
    assert "filled frames" not in text and "primary (500 events)" in text


@pytest.mark.slow
def test_demo_local_cluster(tmp_path):
    folder = tmp_path / "demo"
    db, text = run_small(folder, n_workers=2, progress=True)
    assert "LocalCluster of 2 worker processes" in text
    assert "start cluster" in text and "(16, 12)" in text
    ds = Broker.from_uri(f"sqlite:///{folder / 'catalog.db'}")[-1].to_xarray("detector")
    assert int(ds["img"].sum(dtype="u8")) == int(frames_on_disk(folder).sum(dtype="u8"))


def test_cli_demo_small(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dask_broker.cli", "demo", "--folder", str(tmp_path / "d"),
         "--events", "1000", "--frames", "20", "--frame-shape", "8x8", "--frames-per-file", "5",
         "--workers", "0", "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "filled frame shape (8, 8)" in proc.stdout
    assert proc.stderr == ""  # no progress bars, no warnings
    proc = subprocess.run([sys.executable, "-m", "dask_broker.cli", "demo", "--frame-shape", "x"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "frame shape" in proc.stderr
