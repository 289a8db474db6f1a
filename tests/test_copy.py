"""copy_runs / ``dask-broker copy``: runs copied between catalogs of any kinds, verified,
resumed after an interruption."""

from __future__ import annotations

import event_model
import pytest

from dask_broker import Broker, CopyVerificationError, copy_runs
from dask_broker.cli import main
from dask_broker.copy import run_digest

pytestmark = pytest.mark.postgres


class _StreamRun:
    """A run streaming a detector (ophyd-async style): stream_resource and stream_datum
    beside its events, a resource and datum too, a stop."""

    def __init__(self, time: float):
        run = event_model.compose_run(metadata={"scan_id": 9, "sample": {"b": 1, "a": 2}},
                                      time=time)
        keys = {"x": {"source": "m", "dtype": "number", "shape": []},
                "cam": {"source": "c", "dtype": "array", "shape": [2], "external": "STREAM:"}}
        desc = run.compose_descriptor(name="primary", data_keys=keys)
        res = run.compose_resource(spec="NPY", root="/nowhere", resource_path="a.npy",
                                   resource_kwargs={})
        sr = run.compose_stream_resource(mimetype="application/x-hdf5",
                                         uri="file://localhost/nowhere/cam.h5", data_key="cam",
                                         parameters={"dataset": "/d"})
        events = [desc.compose_event(data={"x": float(i)}, timestamps={"x": 1.0 + i},
                                     seq_num=i) for i in (1, 2, 3)]
        self.docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
                     ("resource", res.resource_doc),
                     ("datum", res.compose_datum(datum_kwargs={"i": 0})),
                     ("stream_resource", sr.stream_resource_doc)]
        for i, event in enumerate(events):
            self.docs.append(("stream_datum", sr.compose_stream_datum(
                indices={"start": i, "stop": i + 1}, seq_nums={"start": i + 1, "stop": i + 2},
                descriptor=desc.descriptor_doc)))
            self.docs.append(("event", event))
        self.docs.append(("stop", run.compose_stop()))
        self.start, self.uid = run.start_doc, run.start_doc["uid"]
        self.events = {"primary": events}


def _insert_paged(db, run):
    """Insert a run with its datum and each stream's events as pages (quicker)."""
    for name, doc in run.docs:
        if name not in ("event", "datum", "stop"):
            db.insert(name, doc)
    for res in run.resources:
        db.insert("datum_page", event_model.pack_datum_page(
            *[d for d in run.datum if d["resource"] == res["uid"]]))
    for events in run.events.values():
        db.insert("event_page", event_model.pack_event_page(*events))
    db.insert("stop", run.stop)
    return run


@pytest.fixture
def source(make_run, insert):
    """A SQLite catalog of three runs (one with stream data, one still running)."""
    db = Broker.temp()
    first = _insert_paged(db, make_run(metadata={"scan_id": 1, "plan_name": "count"},
                                       n_primary=3000))
    runs = [first, insert(db, _StreamRun(first.start["time"] + 500)),
            insert(db, make_run(metadata={"scan_id": 3}, stop=False))]
    return db, runs


def test_sqlite_to_postgres_to_sqlite_round_trip(source, postgres_uri, tmp_path, dump):
    db, runs = source
    report = copy_runs(db, postgres_uri)
    assert sorted(report.copied) == sorted(r.uid for r in runs) and report.skipped == []
    assert report.events == sum(len(evs) for r in runs for evs in r.events.values())
    pg = Broker.from_uri(postgres_uri)
    assert dump(pg) == dump(db)
    for run in runs:
        assert list(pg[run.uid].docs()) == list(db[run.uid].docs())
        assert report.copied[run.uid] == run_digest(db[run.uid].docs())
        assert report.copied[run.uid].counts["event"] == sum(len(e) for e in run.events.values())
    stream_datums = pg.store.stream_datums([d["uid"] for d in pg[runs[1].uid].descriptors])
    assert [d for n, d in runs[1].docs if n == "stream_datum"] == stream_datums

    back = f"sqlite:///{tmp_path / 'back.db'}"
    copy_runs(postgres_uri, back)
    assert dump(Broker.from_uri(back)) == dump(db)
    # the table of the big run reads the same from all three
    tables = [Broker.from_uri(u)[runs[0].uid].table().compute() for u in (postgres_uri, back)]
    want = db[runs[0].uid].table().compute()
    assert all(t.equals(want) for t in tables)


def test_present_runs_are_skipped_and_queries_choose_runs(source, postgres_uri, capsys):
    db, runs = source
    first = copy_runs(db, postgres_uri, {"scan_id": {"$lte": 1}}, progress=True)
    assert list(first.copied) == [runs[0].uid]
    bars = capsys.readouterr().err  # tqdm bars of runs and events
    assert "runs: 100%" in bars and "1/1" in bars and "3.00k/3.00k" in bars
    second = copy_runs(db, postgres_uri, until=runs[2].start["time"])
    assert second.skipped == [runs[0].uid] and list(second.copied) == [runs[1].uid]
    third = copy_runs(db, postgres_uri, since=runs[2].start["time"])
    assert list(third.copied) == [runs[2].uid]
    assert str(copy_runs(db, postgres_uri)).startswith("copied 0 runs (0 events), skipped 3")


def test_an_interrupted_copy_is_finished_by_running_it_again(source, postgres_uri, dump,
                                                             monkeypatch):
    from dask_broker.stores.postgres import PostgresStore

    db, runs = source
    calls = []
    original = PostgresStore.insert_event_pages

    def interrupted(self, pages):
        calls.append(len(pages))
        if len(calls) == 3:  # in the middle of the second run
            raise KeyboardInterrupt
        return original(self, pages)

    monkeypatch.setattr(PostgresStore, "insert_event_pages", interrupted)
    with pytest.raises(KeyboardInterrupt):
        copy_runs(db, postgres_uri)
    monkeypatch.undo()
    pg = Broker.from_uri(postgres_uri)
    assert [h.uid for h in pg] == [runs[0].uid]  # the half-copied run is not visible
    report = copy_runs(db, postgres_uri)
    assert report.skipped == [runs[0].uid] and len(report.copied) == 2
    assert dump(pg) == dump(db)


def test_a_copy_that_reads_back_different_is_an_error(source, postgres_uri, monkeypatch):
    from dask_broker.stores.postgres import PostgresStore

    db, runs = source
    original = PostgresStore.insert_event_pages

    def corrupting(self, pages):
        pages = [dict(p, data={**p["data"], "x": [v + 1 for v in p["data"]["x"]]})
                 if "x" in p["data"] else p for p in pages]
        return original(self, pages)

    monkeypatch.setattr(PostgresStore, "insert_event_pages", corrupting)
    with pytest.raises(CopyVerificationError, match=runs[0].uid) as info:
        copy_runs(db, postgres_uri)
    assert "the values differ" in str(info.value)
    assert len(Broker.from_uri(postgres_uri)) == 0  # its start was not written


def test_cli_copy(source, any_uri, capsys, dump):
    """``dask-broker copy`` from a SQLite catalog into each store."""
    db, runs = source
    dst = any_uri()
    assert main(["copy", db.uri, dst, "--query", '{"scan_id": 1}',
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "copied 1 run (3,002 events), skipped 0 already " \
        f"in {Broker.from_uri(dst).store.display_uri}"
    assert main(["copy", db.uri, dst, "--no-progress"]) == 0
    assert "copied 2 runs" in capsys.readouterr().out
    assert dump(Broker.from_uri(dst)) == dump(db)
    assert main(["copy", db.uri, dst, "--query", "[1]"]) == 1
    assert "--query must be a JSON object" in capsys.readouterr().err


@pytest.mark.mongo
def test_suitcase_mongo_database_copied_into_postgres(new_mongo_uri, mongo_server, make_run,
                                                      postgres_uri):
    """What suitcase-mongo wrote reads back from PostgreSQL as from MongoDB."""
    from suitcase.mongo_normalized import Serializer

    uri = new_mongo_uri()
    serializer = Serializer(uri, uri)
    runs = [make_run(metadata={"scan_id": i, "plan_name": "scan"}) for i in (1, 2)]
    for run in runs:
        for name, doc in run.docs:
            serializer(name, doc)
    mongo = Broker.from_uri(uri)
    report = copy_runs(uri, postgres_uri)
    assert sorted(report.copied) == sorted(r.uid for r in runs)
    pg = Broker.from_uri(postgres_uri)
    assert [h.uid for h in pg] == [h.uid for h in mongo]
    for run in runs:
        assert list(pg[run.uid].docs()) == list(mongo[run.uid].docs())
        assert pg[run.uid].table().compute().equals(mongo[run.uid].table().compute())
    again = copy_runs(uri, postgres_uri)
    assert again.copied == {} and sorted(again.skipped) == sorted(r.uid for r in runs)
