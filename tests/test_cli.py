"""The ``dask-broker`` command line: ingest, ls, export, bench, named catalogs, errors, --help.

Commands about a catalog's contents run against every store by its URI (``any_uri``:
sqlite:///..., mongodb://..., postgresql://...); what is about a SQLite file (its
path as CATALOG, schema versions, damage, ``check``) and about the entry points runs
on SQLite files only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import event_model
import numpy as np
import pandas as pd
import pytest

from catalog_files import damage_events_of_run, stored_version, tables, write_runs, write_v1_catalog
from dask_broker import Broker
from dask_broker.cli import build_parser, main
from dask_broker.config import CatalogNotFoundError, ConfigError, list_catalogs, lookup
from dask_broker.stores.sqlite import SCHEMA_VERSION

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "dask-broker"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *words: str) -> None:
    """A failure: non-zero exit, one ``dask-broker: error:`` line, no traceback."""
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("dask-broker: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    """No user config: named catalogs come only from what a test writes."""
    monkeypatch.delenv("DASK_BROKER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    # nor databroker's YAML files or intake catalogs of this machine
    monkeypatch.setenv("DASK_BROKER_DATABROKER_CONFIG_PATH", str(tmp_path / "databroker"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("INTAKE_PATH", raising=False)


def array_run(scan_id: int = 7) -> list[tuple[str, dict]]:
    """A run with numpy values: an array field and numpy scalars (msgpack-numpy encodes both)."""
    run = event_model.compose_run(metadata={"plan_name": "count", "scan_id": scan_id})
    desc = run.compose_descriptor(name="primary", data_keys={
        "x": {"source": "s:x", "dtype": "number", "shape": []},
        "n": {"source": "s:n", "dtype": "integer", "shape": []},
        "spectrum": {"source": "s:spec", "dtype": "array", "shape": [4]},
    })
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    for i in range(1, 6):
        docs.append(("event", desc.compose_event(
            data={"x": np.float64(i / 4), "n": np.int64(i), "spectrum": np.arange(4.0) * i},
            timestamps={"x": 1.0 + i, "n": 1.0 + i, "spectrum": 1.0 + i}, time=1.0 + i,
            seq_num=i)))
    docs.append(("stop", run.compose_stop()))
    return docs


def serialize(fmt: str, docs, folder: Path) -> Path:
    """Write ``docs`` with the suitcase serializer of ``fmt``; the file written."""
    if fmt == "msgpack":
        serializer_class = pytest.importorskip("suitcase.msgpack").Serializer
    else:
        serializer_class = pytest.importorskip("suitcase.jsonl").Serializer
    folder.mkdir(parents=True, exist_ok=True)
    with serializer_class(str(folder)) as serializer:
        for name, doc in docs:
            serializer(name, doc)
    (path,) = serializer.artifacts["all"]
    return Path(path)


def uri_of(path: Path) -> str:
    return f"sqlite:///{path}"


def catalog_created(uri: str) -> bool:
    """Whether a command left a catalog at ``uri``: the SQLite file, the MongoDB database,
    tables in the PostgreSQL schema (found without opening a catalog, which creates one)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).exists()
    if uri.startswith("mongodb"):
        from pymongo import MongoClient, uri_parser

        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            return uri_parser.parse_uri(uri)["database"] in client.list_database_names()
    import psycopg

    with psycopg.connect(uri) as conn:
        (tables,) = conn.execute("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_schema = current_schema()").fetchone()
    return tables > 0


# ------------------------------------------------------------------ ingest
@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_ingest_matches_direct_insert(fmt, any_uri, tmp_path, capsys, make_run, dump):
    runs = [make_run(n_primary=6, metadata={"scan_id": 1, "plan_name": "scan"}),
            make_run(n_primary=3, external=False, metadata={"scan_id": 2})]
    files = [serialize(fmt, run.docs, tmp_path / "saved") for run in runs]
    assert all(f.suffix == f".{fmt}" for f in files)

    cat = any_uri()
    code, out, err = run_cli(capsys, "ingest", cat, *files, "--no-progress")
    assert code == 0, err
    assert "ingested 2 run(s)" in out

    reference = Broker.temp()
    for run in runs:
        for name, doc in run.docs:
            reference.insert(name, doc)
    ingested = Broker.from_uri(cat)
    assert dump(ingested) == dump(reference)
    for run in runs:
        h = ingested[run.uid]
        assert h.start == run.start and h.stop == run.stop
        assert {d["uid"]: d for d in h.descriptors} == {d["uid"]: d for d in
                                                        run.descriptors.values()}
        assert h.resources() == run.resources


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_ingest_numpy_values(fmt, any_uri, tmp_path, capsys):
    docs = array_run()
    path = serialize(fmt, docs, tmp_path / "saved")
    cat = any_uri()
    code, _, err = run_cli(capsys, "ingest", cat, path, "--no-progress")
    assert code == 0, err
    reference = Broker.temp()
    for name, doc in docs:
        reference.insert(name, doc)
    got = Broker.from_uri(cat)[-1].table().compute()
    want = reference[-1].table().compute()
    pd.testing.assert_frame_equal(got.drop(columns="spectrum"), want.drop(columns="spectrum"))
    for a, b in zip(got["spectrum"], want["spectrum"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_ingest_folder_skip_existing_and_duplicates(any_uri, tmp_path, capsys, make_run):
    runs = [make_run(external=False), make_run(external=False)]
    serialize("msgpack", runs[0].docs, tmp_path / "saved")
    serialize("jsonl", runs[1].docs, tmp_path / "saved")
    cat = any_uri()
    code, out, _ = run_cli(capsys, "ingest", cat, tmp_path / "saved", "--no-progress")
    assert code == 0 and "ingested 2 run(s)" in out
    code, _, err = run_cli(capsys, "ingest", cat, tmp_path / "saved", "--no-progress")
    assert_clean_error(code, err, "already stored", "--skip-existing")
    code, out, _ = run_cli(capsys, "ingest", cat, tmp_path / "saved", "--no-progress",
                           "--skip-existing")
    assert code == 0 and "skipped 2 run(s)" in out
    assert len(Broker.from_uri(cat)) == 2


def test_ingest_bad_files(any_uri, tmp_path, capsys):
    cat = any_uri()
    code, _, err = run_cli(capsys, "ingest", cat, tmp_path / "missing.jsonl")
    assert_clean_error(code, err, "missing.jsonl", "no such file")
    assert not catalog_created(cat)  # nothing created for a bad command line

    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "ingest", cat, tmp_path / "notes.txt")
    assert_clean_error(code, err, "notes.txt", ".msgpack", ".jsonl")

    (tmp_path / "bad.jsonl").write_text('["start", {"uid": "x"}]\nnot json\n')
    code, _, err = run_cli(capsys, "ingest", cat, tmp_path / "bad.jsonl", "--no-progress")
    assert_clean_error(code, err, "bad.jsonl")

    (tmp_path / "bad.msgpack").write_bytes(b"\x01\x02\x03")
    code, _, err = run_cli(capsys, "ingest", cat, tmp_path / "bad.msgpack", "--no-progress")
    assert_clean_error(code, err, "bad.msgpack", "(name, document) pair")

    good = serialize("msgpack", array_run(), tmp_path / "saved")
    truncated = tmp_path / "truncated.msgpack"
    truncated.write_bytes(good.read_bytes()[:-20])
    code, _, err = run_cli(capsys, "ingest", any_uri(), truncated, "--no-progress")
    assert_clean_error(code, err, "truncated.msgpack")
    assert len(Broker.from_uri(cat)) == 0  # no bad file stored a run


# ------------------------------------------------------------------ ls
def insert_three_runs(db, make_run, insert):
    """Three runs (scan_id 1..3, the last still running)."""
    return [insert(db, make_run(n_primary=4, n_baseline=2,
                                metadata={"scan_id": 1, "plan_name": "scan"})),
            insert(db, make_run(n_primary=5, n_baseline=0, external=False,
                                metadata={"scan_id": 2, "plan_name": "count"})),
            insert(db, make_run(n_primary=2, stop=False,
                                metadata={"scan_id": 3, "plan_name": "scan"}))]


@pytest.fixture
def catalog(any_uri, make_run, insert):
    """``(uri, db, runs)``: a catalog with three runs (see :func:`insert_three_runs`), on
    each store."""
    uri = any_uri()
    db = Broker.from_uri(uri)
    return uri, db, insert_three_runs(db, make_run, insert)


@pytest.fixture
def sqlite_catalog(tmp_path, make_run, insert):
    """``(path, db, runs)``: the same three runs in a SQLite catalog file."""
    path = tmp_path / "catalog.db"
    db = Broker.from_uri(uri_of(path))
    return path, db, insert_three_runs(db, make_run, insert)


def test_ls(catalog, capsys):
    uri, db, runs = catalog
    code, out, err = run_cli(capsys, "ls", uri)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["uid", "scan_id", "plan_name", "start", "time", "events",
                                "exit_status"]
    assert [line.split()[0] for line in lines[1:]] == [r.uid[:8] for r in reversed(runs)]
    newest, middle, oldest = lines[1:]
    assert "(running)" in newest and "primary=2" in newest
    assert middle.split()[1:3] == ["2", "count"] and "primary=5" in middle and "success" in middle
    assert "primary=4 baseline=2" in oldest


def test_ls_query_and_limit(catalog, capsys):
    uri, db, runs = catalog
    code, out, _ = run_cli(capsys, "ls", uri, "--query", '{"plan_name": "scan"}')
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == [runs[2].uid[:8], runs[0].uid[:8]]
    code, out, _ = run_cli(capsys, "ls", uri, "--limit", "1")
    assert code == 0
    assert out.splitlines()[1].startswith(runs[2].uid[:8]) and "more runs" in out
    code, out, _ = run_cli(capsys, "ls", uri, "--query", '{"scan_id": {"$gt": 10}}')
    assert code == 0 and "no runs match" in out
    code, _, err = run_cli(capsys, "ls", uri, "--query", "{plan_name: scan}")
    assert_clean_error(code, err, "--query", "JSON")
    code, _, err = run_cli(capsys, "ls", uri, "--query", '{"scan_id": {"$size": 1}}')
    assert_clean_error(code, err)
    code, _, err = run_cli(capsys, "ls", uri, "--query", '{"$or": []}')
    assert_clean_error(code, err, "$or")


def test_ls_text(catalog, capsys):
    uri, db, runs = catalog
    code, out, _ = run_cli(capsys, "ls", uri, "--text", "SCAN")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == [runs[2].uid[:8], runs[0].uid[:8]]
    code, out, _ = run_cli(capsys, "ls", uri, "--text", "scan", "--query", '{"scan_id": 1}')
    assert [line.split()[0] for line in out.splitlines()[1:]] == [runs[0].uid[:8]]
    code, out, _ = run_cli(capsys, "ls", uri, "--text", "germanium")
    assert code == 0 and "no runs match" in out
    code, _, err = run_cli(capsys, "ls", uri, "--text", "!?")
    assert_clean_error(code, err, "no word")


# ------------------------------------------------------------------ export
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_roundtrip(fmt, catalog, tmp_path, capsys):
    uri, db, runs = catalog
    out_file = tmp_path / f"table.{fmt}"
    h = db[runs[1].uid]
    code, out, err = run_cli(capsys, "export", uri, runs[1].uid[:8], out_file, "--no-progress")
    assert code == 0, err
    assert "wrote 5 row(s)" in out
    want = h.table().compute()
    if fmt == "parquet":
        got = pd.read_parquet(out_file)
    else:
        got = pd.read_csv(out_file, index_col="seq_num", parse_dates=["time"])
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # and against the documents that went in, not only against another read path
    events = runs[1].events["primary"]
    assert list(got.index) == [e["seq_num"] for e in events]
    for field in events[0]["data"]:
        assert list(got[field]) == [e["data"][field] for e in events], field


def test_export_options(catalog, tmp_path, capsys):
    uri, db, runs = catalog
    h = db[runs[0].uid]
    out_file = tmp_path / "base.data"
    code, _, err = run_cli(capsys, "export", uri, "1", out_file, "--stream", "baseline",
                           "--format", "csv", "--fields", "temp", "--no-progress")
    assert code == 0, err
    got = pd.read_csv(out_file, index_col="seq_num", parse_dates=["time"])
    pd.testing.assert_frame_equal(got, h.table("baseline", fields=["temp"]).compute(),
                                  check_dtype=False)
    # many partitions: still one file, every row in order
    many = tmp_path / "many.parquet"
    db2 = Broker.from_uri(uri)
    from dask_broker import export_table

    df = db2[runs[0].uid].table(chunk_size=1)
    assert df.npartitions == 4
    assert export_table(df, many, "parquet", progress=False) == 4
    # Parquet gives the datum-id column back as pandas' "str", the table holds it as object
    pd.testing.assert_frame_equal(pd.read_parquet(many), df.compute(), check_dtype=False)

    code, _, err = run_cli(capsys, "export", uri, "1", out_file, "--format", "csv")
    assert_clean_error(code, err, "exists", "--overwrite")
    code, _, err = run_cli(capsys, "export", uri, "1", out_file, "--format", "csv",
                           "--overwrite", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "export", uri, "1", tmp_path / "x.txt")
    assert_clean_error(code, err, "--format")
    code, _, err = run_cli(capsys, "export", uri, "1", tmp_path / "x.csv", "--stream", "nope")
    assert_clean_error(code, err, "nope")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.csv.partial").exists()


# ------------------------------------------------------------------ errors
def test_bad_catalog_uri(tmp_path, capsys):
    code, _, err = run_cli(capsys, "ls", "nosuchscheme://host/db")
    assert_clean_error(code, err, "nosuchscheme")
    code, _, err = run_cli(capsys, "ls", uri_of(tmp_path / "absent.db"))
    assert_clean_error(code, err, "absent.db", "does not exist")
    assert not (tmp_path / "absent.db").exists()  # ls does not create a catalog
    code, _, err = run_cli(capsys, "ls", "sqlite:///")
    assert_clean_error(code, err)
    code, _, err = run_cli(capsys, "ls", "no_such_name")
    assert_clean_error(code, err, "no_such_name")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    code, _, err = run_cli(capsys, "ls", tmp_path / "junk.db")
    assert_clean_error(code, err, "junk.db")


def test_unknown_run(catalog, tmp_path, capsys):
    uri, db, runs = catalog
    code, _, err = run_cli(capsys, "export", uri, "ffffffffff", tmp_path / "o.csv")
    assert_clean_error(code, err, "ffffffffff")
    code, _, err = run_cli(capsys, "export", uri, "99", tmp_path / "o.csv")
    assert_clean_error(code, err, "99")
    code, _, err = run_cli(capsys, "files", "list", uri, "ffffffffff")
    assert_clean_error(code, err, "ffffffffff")
    assert not (tmp_path / "o.csv").exists()


def test_help_for_every_command(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo", "ingest", "ls", "export", "bench"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: dask-broker {command}" in out, command
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in commands)


def test_usage_errors_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ls"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    capsys.readouterr()


# ------------------------------------------------------------------ named catalogs
def test_named_catalogs_toml(catalog, tmp_path, monkeypatch, capsys):
    uri, db, runs = catalog
    config = tmp_path / "conf" / "catalogs.toml"
    config.parent.mkdir()
    config.write_text(f"""
[catalogs.beamline]
uri = "{uri}"
root_map = {{ "/old/root" = "/new/root" }}

[catalogs]
relative = "sqlite:///data/rel.db"
""")
    monkeypatch.setenv("DASK_BROKER_CONFIG", str(config))
    named = Broker.named("beamline")
    assert named.uri == db.uri and named.root_map == {"/old/root": "/new/root"}
    assert [h.uid for h in named] == [h.uid for h in db]
    assert lookup("relative").uri == f"sqlite:///{config.parent / 'data' / 'rel.db'}"
    assert set(list_catalogs()) == {"beamline", "relative"}

    code, out, err = run_cli(capsys, "ls", "beamline")
    assert code == 0, err
    assert runs[0].uid[:8] in out
    code, out, err = run_cli(capsys, "export", "beamline", "-1", tmp_path / "o.csv",
                             "--no-progress")
    assert code == 0, err

    with pytest.raises(CatalogNotFoundError, match="beamline"):  # known names are listed
        Broker.named("other")
    code, _, err = run_cli(capsys, "ls", "other")
    assert_clean_error(code, err, "'other'", "beamline")


def test_named_catalogs_json_and_default_location(sqlite_catalog, tmp_path, monkeypatch,
                                                 capsys):
    path, db, runs = sqlite_catalog
    xdg = tmp_path / "xdg" / "dask_broker"
    xdg.mkdir(parents=True)
    (xdg / "catalogs.json").write_text(json.dumps({"catalogs": {"js": {"uri": uri_of(path)}}}))
    assert len(Broker.named("js")) == 3
    # $DASK_BROKER_CONFIG is searched first, then the default location
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"catalogs": {"js": "sqlite:////elsewhere/x.db", "e": uri_of(path)}}))
    monkeypatch.setenv("DASK_BROKER_CONFIG", str(env))
    assert lookup("js").uri == "sqlite:////elsewhere/x.db"
    assert lookup("e").uri == uri_of(path)


def test_named_catalogs_bad_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DASK_BROKER_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml"):
        Broker.named("x")
    code, _, err = run_cli(capsys, "ls", "x")
    assert_clean_error(code, err, "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[catalogs.x]\nuri = 3\n")
    monkeypatch.setenv("DASK_BROKER_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="uri"):
        Broker.named("x")
    bad.write_text("[catalogs\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        Broker.named("x")


# ------------------------------------------------------------------ real processes
def test_console_script(sqlite_catalog, tmp_path):
    """The installed script, in a process of its own (SQLite only: the commands' work on
    each store is tested in-process above; here the catalog is a file path)."""
    path, db, runs = sqlite_catalog
    if CONSOLE_SCRIPT.exists():
        cmd = [str(CONSOLE_SCRIPT)]
    else:  # pragma: no cover - not installed as a script
        cmd = [sys.executable, "-m", "dask_broker.cli"]
    proc = subprocess.run([*cmd, "ls", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert runs[1].uid[:8] in proc.stdout
    proc = subprocess.run([*cmd, "export", str(path), "no-such-uid", str(tmp_path / "o.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("dask-broker: error:") and "Traceback" not in proc.stderr


def test_module_invocation_ingest(tmp_path):
    saved = serialize("jsonl", array_run(), tmp_path / "saved")
    proc = subprocess.run([sys.executable, "-m", "dask_broker.cli", "ingest",
                           str(tmp_path / "cat.db"), str(saved)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 1 run(s)" in proc.stdout
    assert len(Broker.from_uri(uri_of(tmp_path / "cat.db"))) == 1


def test_bench_forwards_or_explains(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dask_broker.cli", "bench", "--only", "tables"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no benchmarks package" in proc.stderr and "Traceback" not in proc.stderr
    if not (REPO / "benchmarks" / "__main__.py").exists():  # pragma: no cover
        pytest.skip("no benchmarks/ in this checkout")
    proc = subprocess.run([sys.executable, "-m", "dask_broker.cli", "bench", "--", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "python -m benchmarks" in proc.stdout


def test_ingest_resumes_a_partial_ingest(any_uri, tmp_path, capsys, make_run):
    """An ingest interrupted half-way is finished by running it again with --skip-existing;
    the catalog then holds exactly the saved documents."""
    run = make_run(external=False)
    serialize("jsonl", run.docs, tmp_path / "saved")
    cat = any_uri()
    db = Broker.from_uri(cat)
    half = len(run.docs) // 2
    for name, doc in run.docs[:half]:  # what an interrupted ingest left behind
        db.insert(name, doc)
    code, out, _ = run_cli(capsys, "ingest", cat, tmp_path / "saved", "--no-progress",
                           "--skip-existing")
    assert code == 0, out
    again = Broker.from_uri(cat)
    h = again[run.docs[0][1]["uid"]]
    stored = [(n, d["uid"] if "uid" in d else d["datum_id"]) for n, d in h.docs()]
    saved = [(n, d.get("uid", d.get("datum_id"))) for n, d in run.docs]
    assert sorted(stored) == sorted(saved)


# ------------------------------------------------------------------ read-only opens
def test_reading_commands_open_read_only(tmp_path, capsys):
    """ls, export and files list never write: a version-1 catalog stays as it is."""
    path = tmp_path / "v1.db"
    v1 = write_v1_catalog(path)
    before = tables(path)
    code, out, err = run_cli(capsys, "ls", path)
    assert code == 0 and v1["start"]["uid"][:8] in out, err
    code, out, err = run_cli(capsys, "export", path, "-1", tmp_path / "o.csv", "--no-progress")
    assert code == 0 and "wrote 3 row(s)" in out, err
    code, out, err = run_cli(capsys, "files", "list", path, "-1")
    assert code == 0 and out == "", err
    assert stored_version(path) == "1" and tables(path) == before
    # a command that writes migrates it
    saved = serialize("jsonl", array_run(), tmp_path / "saved")
    code, _, err = run_cli(capsys, "ingest", path, saved, "--no-progress")
    assert code == 0, err
    assert stored_version(path) == str(SCHEMA_VERSION)
    assert {"stream_resource", "stream_datum", "run_start_text", "event_uid_hash"} <= tables(path)


# ------------------------------------------------------------------ check, damaged catalogs
def test_check_command(tmp_path, capsys):
    path = tmp_path / "catalog.db"
    uids = write_runs(path, 3)
    code, out, err = run_cli(capsys, "check", path)
    assert code == 0, err
    assert "integrity check: ok" in out and "3 run(s) readable, 0 damaged" in out
    for uid in uids:
        assert f"ok       {uid[:8]}  scan_id" in out

    damage_events_of_run(path, 1)
    code, out, err = run_cli(capsys, "check", path)
    assert code == 1 and err == ""
    lines = out.splitlines()
    run_lines = {uid: next(line for line in lines if uid[:8] in line) for uid in uids}
    assert run_lines[uids[1]].startswith("DAMAGED") and "scan_id 2" in run_lines[uids[1]]
    assert run_lines[uids[0]].startswith("ok") and run_lines[uids[2]].startswith("ok")
    assert any("events of descriptor" in line for line in lines)
    assert "integrity check: ok" not in out and "2 run(s) readable, 1 damaged" in out
    assert ".recover" in out


@pytest.mark.parametrize("store", [pytest.param("mongo", marks=pytest.mark.mongo),
                                   pytest.param("postgres", marks=pytest.mark.postgres)])
def test_check_names_the_store_it_does_not_read(store, request, make_run, insert, capsys):
    """``check`` reads SQLite files; on a server's catalog it says so and touches nothing."""
    uri = request.getfixturevalue(f"{store}_uri")
    db = Broker.from_uri(uri)
    run = insert(db, make_run(n_primary=2))
    code, out, err = run_cli(capsys, "check", uri)
    assert_clean_error(code, err, "check reads SQLite catalogs", "Store")
    assert out == ""
    assert [h.uid for h in Broker.from_uri(uri)] == [run.uid]


def test_damaged_catalog_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "catalog.db"
    uids = write_runs(path, 3)
    damage_events_of_run(path, 1)
    code, _, err = run_cli(capsys, "export", path, uids[1][:8], tmp_path / "o.csv",
                           "--no-progress")
    assert code == 1
    assert_clean_error(code, err, str(path), "is damaged", ".recover", "dask-broker check")
    code, _, err = run_cli(capsys, "export", path, uids[0][:8], tmp_path / "o.csv",
                           "--no-progress")
    assert code == 0, err

    with open(path, "r+b") as f:  # now the schema on page 1 too: nothing opens
        f.seek(100)
        f.write(b"\xff" * 2000)
    saved = serialize("jsonl", array_run(), tmp_path / "saved")
    for argv in (["ls", path], ["export", path, "-1", tmp_path / "p.csv"],
                 ["files", "list", path, "-1"], ["ingest", path, saved, "--no-progress"],
                 ["check", path]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 1, argv
        assert_clean_error(code, err, str(path), "damaged", ".recover")


# ------------------------------------------------------------------ no tracebacks
def test_ls_queries_that_raised(catalog, capsys):
    uri, db, runs = catalog
    code, out, err = run_cli(capsys, "ls", uri, "--query", '{"scan_id": 99999999999999999999999}')
    assert_clean_error(code, err, "64 bits")  # a QueryError in one line, as from every store
    deep = '{"$and": [' * 5000 + "{}" + "]}" * 5000
    code, _, err = run_cli(capsys, "ls", uri, "--query", deep)
    assert code == 1
    assert_clean_error(code, err, "--query", "nested too deeply")


@pytest.mark.parametrize("where", ["start", "event"])
def test_ingest_msgpack_holding_bytes(where, any_uri, tmp_path, capsys):
    msgpack = pytest.importorskip("msgpack")
    docs = array_run()
    if where == "start":
        docs[0] = ("start", {**docs[0][1], "blob": b"\x00raw"})
    else:
        docs[2] = ("event", {**docs[2][1], "data": {**docs[2][1]["data"], "x": b"\x00raw"}})
    saved = tmp_path / "bytes.msgpack"
    saved.write_bytes(b"".join(msgpack.packb([name, {k: (v.tolist() if isinstance(v, np.ndarray)
                                                         else v) for k, v in doc.items()}],
                                             default=lambda o: o.tolist(), use_bin_type=True)
                               for name, doc in docs))
    code, _, err = run_cli(capsys, "ingest", any_uri(), saved, "--no-progress")
    assert code == 1
    assert_clean_error(code, err, "bytes.msgpack", where, "bytes", "JSON")


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--debug", "ls", tmp_path / "absent.db")
    assert code == 1 and "Traceback" in err
    assert err.splitlines()[-1].startswith("dask-broker: error:") and "absent.db" in err
    code, _, err = run_cli(capsys, "ls", tmp_path / "absent.db")
    assert_clean_error(code, err, "absent.db")


def test_unexpected_error_is_one_line(tmp_path, capsys, monkeypatch):
    import dask_broker.cli.ls

    path = tmp_path / "catalog.db"
    write_runs(path, 1)

    def broken(*args, **kwargs):
        raise RuntimeError("boom\non two lines")

    monkeypatch.setattr(dask_broker.cli.ls, "run_rows", broken)
    code, _, err = run_cli(capsys, "ls", path)
    assert code == 1
    assert_clean_error(code, err, "RuntimeError: boom on two lines", "--debug")
    assert len(err.splitlines()) == 1
