"""databroker v1's Header calls on dask_broker Headers, on every store.

Expected values are computed here from the composed documents, never with
dask_broker's own helpers.
"""

from __future__ import annotations

import copy
import html
import re
import types

import event_model
import numpy as np
import pandas as pd
import pytest

from dask_broker import Broker, TimeStruct
from dask_broker.errors import NoEventDescriptors, UnknownFieldError
from dask_broker.handlers.testing import make_external_run

T0 = 1_600_000_000.0
SCRIPT = "<script>alert('x')</script>"


class ConfigRun:
    """A run whose devices carry configuration.

    ``primary`` has two descriptors (the detector's exposure changed between
    them, as a RunEngine records it): events seq_num 1-3 under the first, 4-5
    under the second.  ``baseline`` has one descriptor and two events.  The start
    document also holds ``det_mode`` (configuration wins) and ``exit_status``
    (start wins over stop).
    """

    def __init__(self, *, metadata: dict | None = None, stop: bool = True):
        md = {"scan_id": 3, "plan_name": "count", "sample": "Si", "det_mode": "start-mode",
              "exit_status": "from-start", "operator": "alice"}
        md.update(metadata or {})
        bundle = event_model.compose_run(time=T0, metadata=md)
        self.start = bundle.start_doc
        self.docs = [("start", self.start)]
        keys = {"det": {"source": "sim:det", "dtype": "number", "shape": []},
                "motor": {"source": "sim:motor", "dtype": "number", "shape": []}}
        objects = {"det": ["det"], "motor": ["motor"]}

        def config(exposure: float, t: float) -> dict:
            return {
                "det": {"data": {"det_exposure": exposure, "det_mode": "fast"},
                        "timestamps": {"det_exposure": t, "det_mode": t + 0.5},
                        "data_keys": {"det_exposure": {"source": "c", "dtype": "number",
                                                       "shape": []},
                                      "det_mode": {"source": "c", "dtype": "string",
                                                   "shape": []}}},
                "motor": {"data": {"motor_velocity": 2}, "timestamps": {"motor_velocity": t},
                          "data_keys": {"motor_velocity": {"source": "c", "dtype": "integer",
                                                           "shape": []}}},
            }

        self.events: list[dict] = []
        first = bundle.compose_descriptor(name="primary", data_keys=keys, object_keys=objects,
                                          configuration=config(1.0, T0 - 5), time=T0 + 1)
        second = bundle.compose_descriptor(name="primary", data_keys=keys, object_keys=objects,
                                           configuration=config(2.0, T0 - 4), time=T0 + 10)
        baseline = bundle.compose_descriptor(
            name="baseline", data_keys={"temp": {"source": "sim:t", "dtype": "number", "shape": []}},
            object_keys={"temp_ctrl": ["temp"]}, time=T0 + 0.5,
            configuration={"temp_ctrl": {"data": {"setpoint": 300.0},
                                         "timestamps": {"setpoint": T0 - 1},
                                         "data_keys": {"setpoint": {"source": "c",
                                                                    "dtype": "number",
                                                                    "shape": []}}}})
        self.descriptors = [first.descriptor_doc, baseline.descriptor_doc, second.descriptor_doc]
        self.docs += [("descriptor", first.descriptor_doc), ("descriptor", baseline.descriptor_doc)]
        self._event(baseline, {"temp": 290.0}, T0 + 0.6, 1)
        for seq in (1, 2, 3):
            self._event(first, {"det": 10.0 * seq, "motor": 0.1 * seq}, T0 + 1 + seq, seq)
        self.docs.append(("descriptor", second.descriptor_doc))
        for seq in (4, 5):
            self._event(second, {"det": 10.0 * seq, "motor": 0.1 * seq}, T0 + 10 + seq, seq)
        self._event(baseline, {"temp": 291.0}, T0 + 20, 2)
        self.stop = None
        if stop:
            self.stop = bundle.compose_stop(time=T0 + 30, exit_status="success", reason="done")
            self.docs.append(("stop", self.stop))

    def _event(self, desc, data, t, seq):
        ev = desc.compose_event(data=data, timestamps={k: t - 0.01 for k in data}, time=t,
                                seq_num=seq)
        self.docs.append(("event", ev))
        self.events.append(ev)

    @property
    def uid(self) -> str:
        return self.start["uid"]

    def descriptor_of(self, event: dict) -> dict:
        return next(d for d in self.descriptors if d["uid"] == event["descriptor"])

    def stream_events(self, stream: str) -> list[dict]:
        return sorted((e for e in self.events if self.descriptor_of(e)["name"] == stream),
                      key=lambda e: e["time"])

    def insert(self, db: Broker) -> "ConfigRun":
        for name, doc in self.docs:
            db.insert(name, copy.deepcopy(doc))
        return self


@pytest.fixture
def cfg(any_db):
    run = ConfigRun().insert(any_db)
    return any_db, any_db[run.uid], run


# ------------------------------------------------------------------ mapping
def test_item_access_keys_values_items_get(cfg):
    db, h, run = cfg
    assert h["start"] == run.start
    assert h["stop"] == run.stop
    assert h["descriptors"] == h.descriptors
    assert sorted(d["uid"] for d in h["descriptors"]) == sorted(d["uid"] for d in run.descriptors)
    assert h["ext"] == types.SimpleNamespace()
    for key in ("uid", "fields", "nope", "events"):
        with pytest.raises(KeyError):
            h[key]
    assert list(h.keys()) == ["start", "descriptors", "stop", "ext"]
    assert list(h) == list(h.keys())
    assert list(h.values()) == [run.start, h.descriptors, run.stop, types.SimpleNamespace()]
    assert dict(h.items()) == {"start": run.start, "descriptors": h.descriptors,
                               "stop": run.stop, "ext": types.SimpleNamespace()}
    assert dict(h) == dict(h.items())  # a mapping for dict()
    assert h.get("start") == run.start and h.get("uid") == run.uid
    assert h.get("nope") is None and h.get("nope", {}) == {}


def test_item_access_of_a_run_in_progress(any_db):
    run = ConfigRun(stop=False).insert(any_db)
    h = any_db[run.uid]
    assert h["stop"] is None and h.get("stop") is None


# ------------------------------------------------------------------ fields, devices, config
def test_fields_is_a_set(cfg):
    db, h, run = cfg
    first, baseline, _ = run.descriptors
    assert h.fields() == set(first["data_keys"]) | set(baseline["data_keys"])
    assert h.fields("primary") == {"det", "motor"}
    assert h.fields("baseline") == {"temp"}
    assert isinstance(h.fields(), set)
    assert db.get_fields(h) == h.fields()
    assert db.get_fields(h, "baseline") == {"temp"}
    assert db.get_fields(h, name="primary") == {"det", "motor"}
    assert Broker.get_fields(h, "primary") == {"det", "motor"}  # static, as databroker's
    # the EventSource keeps its list, in descriptor order
    assert db.event_source.fields(h, "primary") == list(first["data_keys"])
    with pytest.raises(NoEventDescriptors, match="nope"):
        h.fields("nope")


def test_devices(cfg):
    db, h, run = cfg
    expected = {name for d in run.descriptors for name in d["object_keys"]}
    assert h.devices() == expected == {"det", "motor", "temp_ctrl"}
    assert h.devices("primary") == {"det", "motor"}
    assert h.devices("baseline") == {"temp_ctrl"}
    with pytest.raises(NoEventDescriptors, match="nope"):
        h.devices("nope")


def test_config_data(cfg):
    db, h, run = cfg
    by_time = sorted(run.descriptors, key=lambda d: d["time"])
    expected: dict[str, list] = {}
    for d in by_time:
        if "det" in d["configuration"]:
            expected.setdefault(d["name"], []).append(d["configuration"]["det"]["data"])
    assert h.config_data("det") == expected == {
        "primary": [{"det_exposure": 1.0, "det_mode": "fast"},
                    {"det_exposure": 2.0, "det_mode": "fast"}]}
    assert h.config_data("temp_ctrl") == {"baseline": [{"setpoint": 300.0}]}
    assert h.config_data("motor") == {"primary": [{"motor_velocity": 2}] * 2}
    assert h.config_data("nope") == {}


# ------------------------------------------------------------------ events, documents, data
def test_events_documents_stream(cfg):
    db, h, run = cfg
    got = list(h.events())
    assert [e["uid"] for e in got] == [e["uid"] for e in run.stream_events("primary")]
    assert [e["data"] for e in got] == [e["data"] for e in run.stream_events("primary")]
    assert [e["uid"] for e in h.events("baseline")] == [
        e["uid"] for e in run.stream_events("baseline")]
    every = sorted(run.events, key=lambda e: e["time"])
    assert [e["uid"] for e in h.events(None)] == [e["uid"] for e in every]
    assert list(h.documents()) == list(h.docs())
    assert list(h.documents("baseline", fields=["temp"])) == list(h.docs("baseline",
                                                                          fields=["temp"]))
    with pytest.warns(FutureWarning, match="documents"):
        stream = h.stream()
    assert list(stream) == list(h.docs())
    with pytest.raises(NoEventDescriptors):
        list(h.events("nope"))


def test_data_yields_values_in_time_order(cfg):
    db, h, run = cfg
    assert list(h.data("det")) == [e["data"]["det"] for e in run.stream_events("primary")]
    assert list(h.data("temp", stream_name="baseline")) == [290.0, 291.0]
    assert list(h.data("temp", "baseline", fill=False)) == [290.0, 291.0]
    with pytest.raises(UnknownFieldError):
        list(h.data("d.t"))  # a name, not a regex


def test_data_fills_by_default(any_db, tmp_path):
    ext = make_external_run(tmp_path, n_files=2, points_per_file=2)
    for name, doc in ext.documents:
        any_db.insert(name, doc)
    h = any_db[ext.start["uid"]]
    ids = [e["data"]["img"] for e in ext.events]
    import h5py

    expected = []
    for datum_id in ids:
        path, point, fpp = ext.locations[datum_id]
        with h5py.File(path, "r") as f:
            expected.append(f["entry/data/data"][point:point + 1])  # (1, H, W)
    got = list(h.data("img"))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    spectra = list(h.data("spectrum"))
    for a, e in zip(spectra, ext.events, strict=True):
        np.testing.assert_array_equal(a, np.load(ext.locations[e["data"]["spectrum"]][0]))
    assert list(h.data("img", fill=False)) == ids


def test_data_of_a_streamed_key(any_db, tmp_path):
    from test_stream_data import StreamRun, _insert

    run = StreamRun(tmp_path, with_scalar=True)
    _insert(any_db, run.docs)
    h = any_db[run.uid]
    frames = list(h.data("img"))
    assert len(frames) == run.rows
    for a, b in zip(frames, run.expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(h.data("tot")) == pytest.approx(run.expected_tot)
    refs = list(h.data("img", fill=False))
    assert len(refs) == run.rows and all(isinstance(r, str) for r in refs)


# ------------------------------------------------------------------ fields=: regexes and merge
def test_fields_are_names_or_whole_key_regexes(cfg):
    db, h, run = cfg
    assert list(h.table(fields=["mo.or"]).columns) == ["time", "motor"]
    # a regex selects configuration keys as well (motor_velocity: the motor's)
    assert list(h.table(fields=["mot.*"]).columns) == ["time", "motor", "motor_velocity"]
    assert list(h.table(fields=["d.t", "motor"]).columns) == ["time", "det", "motor"]
    assert list(h.table(fields=["motor", "det"]).columns) == ["time", "motor", "det"]
    # whole keys only: "de" matches nothing, "det|motor" both
    with pytest.raises(UnknownFieldError, match="'de'"):
        h.table(fields=["de"])
    assert list(h.table(fields=["det|motor"]).columns) == ["time", "det", "motor"]
    # an invalid regex is a name
    with pytest.raises(UnknownFieldError, match=re.escape("det[")):
        h.table(fields=["det["])
    events = list(h.events(fields=["m.tor"]))
    assert [e["data"] for e in events] == [{"motor": e["data"]["motor"]}
                                           for e in run.stream_events("primary")]


def _expected_merge(run: ConfigRun, event: dict, keys: list[str]) -> tuple[dict, dict]:
    """databroker's merge, by hand: configuration, then start, then stop; first wins."""
    desc = run.descriptor_of(event)
    data, ts = {}, {}
    for key in keys:
        if key in desc["data_keys"]:
            data[key], ts[key] = event["data"][key], event["timestamps"][key]
            continue
        for device in desc["configuration"].values():
            if key in device["data"]:
                data[key], ts[key] = device["data"][key], device["timestamps"][key]
        if key in data:
            continue
        if key in run.start:
            data[key], ts[key] = run.start[key], run.start["time"]
        elif run.stop and key in run.stop:
            data[key], ts[key] = run.stop[key], run.stop["time"]
    return data, ts


MERGED = ["det", "det_exposure", "det_mode", "motor_velocity", "sample", "exit_status",
          "reason", "scan_id"]


def test_events_merge_configuration_start_and_stop(cfg):
    db, h, run = cfg
    got = list(h.events(fields=MERGED))
    expected = run.stream_events("primary")
    assert [e["uid"] for e in got] == [e["uid"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        data, ts = _expected_merge(run, e, MERGED)
        assert g["data"] == data and g["timestamps"] == ts
    assert [g["data"]["det_exposure"] for g in got] == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert {g["data"]["det_mode"] for g in got} == {"fast"}  # configuration over start
    assert {g["data"]["exit_status"] for g in got} == {"from-start"}  # start over stop
    assert {g["data"]["reason"] for g in got} == {"done"}  # from the stop document
    # docs() carries the same events; the descriptors keep only the data keys selected
    docs = list(h.docs("primary", fields=MERGED))
    assert [d for n, d in docs if n == "event"] == got
    assert [list(d["data_keys"]) for n, d in docs if n == "descriptor"] == [["det"], ["det"]]
    # regexes select configuration keys too
    assert {k for e in h.events(fields=["det_.*"]) for k in e["data"]} == {
        "det_exposure", "det_mode"}


def test_events_of_configuration_keys_only(cfg):
    db, h, run = cfg
    got = list(h.events(fields=["det_exposure"]))
    assert [e["data"] for e in got] == [{"det_exposure": v} for v in (1.0, 1.0, 1.0, 2.0, 2.0)]
    assert list(h.data("det_exposure")) == [1.0, 1.0, 1.0, 2.0, 2.0]
    # every stream's events get start values
    names = {run.descriptor_of(e)["name"] for e in h.events(None, fields=["sample"])}
    assert names == {"primary", "baseline"}


def test_table_merges_constant_columns(cfg):
    db, h, run = cfg
    raw = TimeStruct(convert_times=False)
    df = h.table(fields=MERGED, timestamps=True, time_struct=raw)
    got = df.compute()
    expected = sorted(run.stream_events("primary"), key=lambda e: e["seq_num"])
    assert list(got.index) == [e["seq_num"] for e in expected]
    assert list(got.columns[:len(MERGED) + 1]) == ["time", *MERGED]
    for (seq, row), e in zip(got.iterrows(), expected, strict=True):
        data, ts = _expected_merge(run, e, MERGED)
        assert {k: row[k] for k in MERGED} == data
        assert {k: row[f"ts_{k}"] for k in MERGED} == pytest.approx(ts)
        assert row["time"] == pytest.approx(e["time"])
    assert got["det_exposure"].dtype == np.dtype("f8")
    assert got["motor_velocity"].dtype == np.dtype("i8")
    assert got["scan_id"].dtype == np.dtype("i8")
    assert isinstance(got["sample"].dtype, pd.StringDtype)
    # projection reaches constant columns and works with only them
    only = df[["det_exposure"]].compute()
    assert list(only.columns) == ["det_exposure"]
    assert list(only["det_exposure"]) == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert list(df[["time", "reason"]].compute()["reason"]) == ["done"] * 5
    # a table of configuration keys only has the stream's rows
    cfg_only = h.table(fields=["det_exposure"]).compute()
    assert list(cfg_only.columns) == ["time", "det_exposure"] and len(cfg_only) == 5
    # chunked tables agree
    chunks = pd.concat(list(h.table_chunks(fields=MERGED, chunk_size=2, timestamps=True,
                                           time_struct=raw)))
    pd.testing.assert_frame_equal(chunks, got)


def test_start_values_of_any_type_and_a_run_in_progress(any_db):
    run = ConfigRun(stop=False, metadata={"tags": ["a", "b"], "flag": True}).insert(any_db)
    h = any_db[run.uid]
    got = h.table(fields=["det", "tags", "flag", "operator"]).compute()
    assert [list(v) for v in got["tags"]] == [["a", "b"]] * 5
    assert got["flag"].dtype == np.dtype("bool") and got["flag"].all()
    assert list(got["operator"]) == ["alice"] * 5
    with pytest.raises(UnknownFieldError, match="reason"):
        h.table(fields=["reason"])  # no stop document yet


def test_to_xarray_with_merged_values(cfg):
    db, h, run = cfg
    ds = h.to_xarray(fields=["det", "det_exposure", "sample"])
    assert list(ds["det_exposure"].values) == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert list(ds["sample"].values) == ["Si"] * 5
    assert list(ds["det"].values) == [10.0 * s for s in range(1, 6)]


def test_unknown_fields_stay_errors(cfg):
    db, h, run = cfg
    for fields in (["nope"], ["det", "nope"], ["time"], ["seq_num"], ["setpoint"]):
        with pytest.raises(UnknownFieldError):
            h.table(fields=fields)
        with pytest.raises(UnknownFieldError):
            list(h.events(fields=fields))
        with pytest.raises(UnknownFieldError):
            list(h.docs("primary", fields=fields))
    # the baseline's configuration belongs to the baseline
    assert list(h.data("setpoint", "baseline")) == [300.0, 300.0]


# ------------------------------------------------------------------ equality
def test_headers_of_one_run_are_equal_across_catalogs(any_db):
    run = ConfigRun().insert(any_db)
    other = Broker.temp()
    run.insert(other)
    a, b = any_db[run.uid], other[run.uid]
    assert a == b and not a != b
    assert hash(a) == hash(b) and len({a, b}) == 1
    assert a == any_db[-1] == other[-1]
    different = ConfigRun().insert(any_db)
    assert any_db[different.uid] != a
    assert len({a, b, any_db[different.uid]}) == 2
    assert a != run.start  # a Header is not its start document
    # same uid, different start document: not equal (hash may collide, as allowed)
    third = Broker.temp()
    for name, doc in run.docs:
        doc = dict(doc, sample="Ge") if name == "start" else doc
        third.insert(name, copy.deepcopy(doc))
    assert third[run.uid] != a


# ------------------------------------------------------------------ HTML
def test_header_html_summary_is_escaped(any_db):
    run = ConfigRun(metadata={"plan_name": SCRIPT, "sample": SCRIPT}).insert(any_db)
    h = any_db[run.uid]
    text = h._repr_html_()
    assert "<script>" not in text
    assert html.escape(SCRIPT) in text
    assert run.uid in text and ">3<" in text  # scan_id
    assert ">success<" in text
    # each stream with its event count: primary 5 events (2 descriptors), baseline 2
    rows = dict(re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td>", text))
    assert rows == {"primary": "5", "baseline": "2"}
    in_progress = ConfigRun(stop=False).insert(any_db)
    assert "in progress" in any_db[in_progress.uid]._repr_html_()


def test_header_html_counts_stream_rows(any_db, tmp_path):
    from test_stream_data import StreamRun, _insert

    run = StreamRun(tmp_path, events=False)
    _insert(any_db, run.docs)
    text = any_db[run.uid]._repr_html_()
    assert re.search(rf"<tr><td>primary</td><td>0</td><td>{run.rows}</td>", text)


def test_broker_html_summary(any_db):
    assert "<td>0</td>" in any_db._repr_html_() or ">0<" in any_db._repr_html_()
    runs = [ConfigRun(metadata={"scan_id": i, "plan_name": SCRIPT}).insert(any_db)
            for i in range(7)]
    text = any_db._repr_html_()
    assert "<script>" not in text and html.escape(SCRIPT) in text
    assert html.escape(any_db.uri) in text
    assert ">7<" in text  # the number of runs
    newest_first = [r.uid for r in reversed(runs)]
    shown = re.findall(r"<tr><td>([0-9a-f-]{36})</td>", text)
    assert shown == newest_first[:5]


def test_broker_html_masks_passwords(monkeypatch, any_db):
    store_cls = type(any_db.store)
    secret = ("mongodb://user:s3cret@host:27017/mds?asset_registry_uri="
              "mongodb%3A%2F%2Fuser%3As3cret%40host%3A27017%2Fassets")
    monkeypatch.setattr(store_cls, "uri", property(lambda self: secret))
    text = any_db._repr_html_()
    assert "s3cret" not in text
    assert "user:***@host:27017/mds" in text


def test_get_table_merges_configuration_values(cfg):
    """db.get_table (the eager, databroker one) sees the same merged columns as h.table."""
    db, h, run = cfg
    got = db.get_table(h, fields=["det", "det_exposure", "sample", "not_in_this_run"])
    lazy = h.table(fields=["det", "det_exposure", "sample"]).compute()
    assert list(got["det_exposure"]) == list(lazy["det_exposure"]) == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert list(got["sample"]) == list(lazy["sample"])
    # as databroker: no data key selected, no rows (configuration values alone add none)
    assert db.get_table(h, fields=["det_exposure"]).empty
