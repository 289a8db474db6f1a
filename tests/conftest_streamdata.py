"""Fixtures of the stream_resource / stream_datum recordings (see ``streamdata.py``).

Registered by ``pytest_plugins`` in ``conftest.py``.  The recordings are made once per
session, on first use, into a session folder; each test gets a deep copy of the
documents, but the files are shared: copy the folder before moving or changing them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from streamdata import CASES, RUNENGINE_CASES, Recording, SimBeamline, live_runengine, record


def _needs_runengine() -> None:
    pytest.importorskip("bluesky")
    pytest.importorskip("ophyd_async.sim")


class RecordingCache(Mapping):
    """Case name -> :class:`~streamdata.Recording`, recorded on first access into
    ``folder/<name>``; every access returns a deep copy."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._recorded: dict[str, Recording] = {}

    def __getitem__(self, name: str) -> Recording:
        if name not in CASES:
            raise KeyError(name)
        if name not in self._recorded:
            self._recorded[name] = record(name, self.folder / name)
        return copy.deepcopy(self._recorded[name])

    def __iter__(self) -> Iterator[str]:
        return iter(CASES)

    def __len__(self) -> int:
        return len(CASES)


@pytest.fixture(scope="session")
def streamdata_recordings(tmp_path_factory) -> RecordingCache:
    """Every case, by name: ``streamdata_recordings["fly_blob"]``."""
    return RecordingCache(tmp_path_factory.mktemp("streamdata"))


@pytest.fixture(params=CASES)
def streamdata_recording(request, streamdata_recordings) -> Recording:
    """Each case in turn (the test runs once per case)."""
    if request.param in RUNENGINE_CASES:
        _needs_runengine()
    return streamdata_recordings[request.param]


@pytest.fixture
def sim_beamline(tmp_path) -> Iterator[SimBeamline]:
    """A live RunEngine with sim devices writing into ``tmp_path / "sim"``; subscribe
    with ``sim_beamline.RE.subscribe(cb)``; torn down (loop closed, files closed) after."""
    _needs_runengine()
    with live_runengine(tmp_path / "sim") as beamline:
        yield beamline
