"""The real ``tarn`` command, run as a subprocess (its main() ends with os._exit)."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tarn.lake import Lake

ORDERS = {
    "name": "orders",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "amount", "type": "double"},
    ],
    "constraints": [{"name": "positive", "check": "amount > 0"}],
}
ORDERS_CSV = "id,amount\n1,10.5\n2,abc\n3,-1\n4,2.25\n"


def _write_yaml(project: Path, datasets: list[dict[str, Any]], **ingest: Any) -> None:
    doc = {
        "name": "cli_lake",
        "ingest": {
            "settle_seconds": 0.2,
            "poll_interval_seconds": 0.1,
            "scan_interval_seconds": 1,
            "max_receives": 2,
            "backoff": {"base_seconds": 0.05, "max_seconds": 0.2, "jitter": 0},
            **ingest,
        },
        "datasets": datasets,
    }
    project.mkdir(parents=True, exist_ok=True)
    (project / "tarn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tarn: Callable[..., Any]) -> Iterator[tuple[Path, str]]:
    """A project with one CSV ingested through ``tarn ingest``; yields (dir, object id)."""
    root = tmp_path_factory.mktemp("cli")
    proj = root / "shop"
    _write_yaml(proj, [ORDERS])
    data = root / "orders.csv"
    data.write_text(ORDERS_CSV)
    res = tarn("-p", str(proj), "ingest", str(data), "--dataset", "orders", "-o", "json")
    assert res.code == 0, res.stderr
    [row] = res.json()
    assert row["state"] == "committed_with_quarantine"
    assert (row["rows"], row["quarantined"]) == (2, 2)
    yield proj, row["object"]


@pytest.mark.slow
def test_init_creates_a_project_and_refuses_to_overwrite_it(tarn: Callable[..., Any], tmp_path: Path) -> None:
    res = tarn("init", "newlake", cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert "created project" in res.stdout
    proj = tmp_path / "newlake"
    assert (proj / "tarn.yaml").is_file()
    assert (proj / ".tarn" / "metastore.db").is_file()
    assert all((proj / "lake" / z).is_dir() for z in ("landing", "raw", "stage", "analytics", "quarantine"))
    status = tarn("status", "-o", "json", cwd=proj)  # found from the working directory
    assert status.code == 0, status.stderr
    assert status.json()["objects"] == {}

    again = tarn("init", "newlake", cwd=tmp_path)
    assert again.code == 1
    assert again.stderr.startswith("error:")
    assert "already exists" in again.stderr


def test_schema_prints_the_json_schema(tarn: Callable[..., Any], tmp_path: Path) -> None:
    res = tarn("schema", cwd=tmp_path)
    assert res.code == 0, res.stderr
    schema = res.json()
    assert "datasets" in schema["properties"]
    assert "DatasetSpec" in schema["$defs"]


def test_status_json(tarn: Callable[..., Any], project: tuple[Path, str]) -> None:
    proj, _ = project
    res = tarn("-p", str(proj), "status", "-o", "json")
    assert res.code == 0, res.stderr
    assert res.json() == {
        "objects": {"committed_with_quarantine": 1},
        "queue": {"ready": 0, "inflight": 0, "dead": 0},
        "dlq": 0,
        "tables": 2,
    }


@pytest.mark.slow
def test_objects_list_and_show(tarn: Callable[..., Any], project: tuple[Path, str]) -> None:
    proj, oid = project
    listed = tarn("-p", str(proj), "objects", "-o", "json")
    assert listed.code == 0, listed.stderr
    [obj] = listed.json()
    assert (obj["id"], obj["dataset"], obj["state"], obj["rows_committed"]) == (
        oid,
        "orders",
        "committed_with_quarantine",
        2,
    )
    assert len(obj["sha256"]) == 64

    shown = tarn("-p", str(proj), "objects", "show", oid[:10], "-o", "json")
    assert shown.code == 0, shown.stderr
    detail = shown.json()
    assert detail["id"] == oid
    assert [e["state"] for e in detail["events"]] == ["received", "processing", "committed_with_quarantine"]
    assert detail["message"] is None  # acknowledged

    table = tarn("-p", str(proj), "objects", "show", oid)
    assert table.code == 0, table.stderr
    assert oid in table.stdout and "committed_with_quarantine" in table.stdout


@pytest.mark.slow
def test_tables_list_and_show(tarn: Callable[..., Any], project: tuple[Path, str]) -> None:
    proj, oid = project
    listed = tarn("-p", str(proj), "tables", "-o", "json")
    assert listed.code == 0, listed.stderr
    assert {t["name"]: t["rows"] for t in listed.json()} == {"stage.orders": 2, "quarantine.orders": 2}

    shown = tarn("-p", str(proj), "tables", "show", "stage.orders", "-o", "json")
    assert shown.code == 0, shown.stderr
    t = shown.json()
    assert t["rows"] == 2
    assert [c["name"] for c in t["columns"]][:2] == ["id", "amount"]
    assert [(v["version"], v["object_id"]) for v in t["schema_versions"]] == [(1, oid)]
    assert t["history"][0]["tarn.object_id"] == oid

    text = tarn("-p", str(proj), "tables", "show", "stage.orders")
    assert text.code == 0, text.stderr
    for heading in ("columns", "schema versions", "Delta history"):
        assert heading in text.stdout


@pytest.mark.slow
def test_query_as_csv_and_json(tarn: Callable[..., Any], project: tuple[Path, str]) -> None:
    proj, _ = project
    sql = "SELECT id, amount FROM stage.orders ORDER BY id"
    as_csv = tarn("-p", str(proj), "query", sql, "-o", "csv")
    assert as_csv.code == 0, as_csv.stderr
    assert list(csv.DictReader(io.StringIO(as_csv.stdout))) == [
        {"id": "1", "amount": "10.5"},
        {"id": "4", "amount": "2.25"},
    ]
    as_json = tarn("-p", str(proj), "query", "SELECT _tarn_row, reason FROM quarantine.orders ORDER BY 1", "-o", "json")
    assert as_json.code == 0, as_json.stderr
    assert as_json.json() == [
        {"_tarn_row": 3, "reason": "amount: cannot convert 'abc' to double; constraint 'positive' failed"},
        {"_tarn_row": 4, "reason": "constraint 'positive' failed"},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("query", "SELECT * FROM stage.ordres"), "no table stage.ordres (did you mean 'stage.orders'?)"),
        (("tables", "show", "stage.nope"), "no table 'stage.nope'"),
        (("ingest", "{data}", "--dataset", "ordrs"), "no dataset 'ordrs' (did you mean 'orders'?)"),
        (("dlq", "redrive"), "name the messages to redrive"),
    ],
)
def test_errors_print_error_and_exit_1(
    tarn: Callable[..., Any], project: tuple[Path, str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    proj, _ = project
    data = tmp_path / "d.csv"
    data.write_text("id,amount\n1,1\n")
    res = tarn("-p", str(proj), *[a.format(data=data) for a in args])
    assert res.code == 1
    assert res.stderr.startswith("error: ")
    assert message in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr


def test_no_project_is_an_error_saying_what_to_do(tarn: Callable[..., Any], tmp_path: Path) -> None:
    res = tarn("status", cwd=tmp_path)
    assert res.code == 1
    assert res.stderr.startswith("error: no tarn.yaml found")
    assert "tarn init" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_key_in_tarn_yaml_is_reported_with_a_suggestion(tarn: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "tarn.yaml").write_text("name: x\ningest:\n  setle_seconds: 1\ndatasets:\n  - name: t\n")
    res = tarn("status", cwd=tmp_path)
    assert res.code == 1
    assert res.stderr.startswith("error: ")
    assert "ingest.setle_seconds: unknown key 'setle_seconds' (did you mean 'settle_seconds'?)" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ingest", "report [draft].csv", "--dataset", "orders"), "report [draft].csv"),
        (("ingest", "{data}", "--dataset", "[/x]"), "no dataset '[/x]'"),
    ],
)
def test_error_text_is_printed_verbatim(
    tarn: Callable[..., Any], project: tuple[Path, str], tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    proj, _ = project
    data = tmp_path / "d.csv"
    data.write_text("id,amount\n1,1\n")
    res = tarn("-p", str(proj), *[a.format(data=data) for a in args])
    assert res.code == 1
    assert res.stderr.startswith("error: ")
    assert expected in res.stderr


def test_ingest_exits_1_when_a_file_is_rejected(tarn: Callable[..., Any], tmp_path: Path) -> None:
    proj = tmp_path / "p"
    _write_yaml(proj, [{"name": "t"}])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    res = tarn("-p", str(proj), "ingest", str(empty), "-d", "t", "-o", "json")
    assert res.json()[0]["state"] == "rejected"
    assert res.code == 1


def test_object_listing_fits_a_100_column_terminal_with_errors_under_the_table(
    tarn: Callable[..., Any], tmp_path: Path
) -> None:
    proj = tmp_path / "p"
    _write_yaml(proj, [{"name": "t"}])
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n")
    ingested = tarn("-p", str(proj), "ingest", str(tmp_path / "empty.csv"), str(tmp_path / "ok.csv"), "-d", "t")
    assert ingested.code == 1  # one file was rejected
    objs = {Path(o["landing_path"]).name: o for o in tarn("-p", str(proj), "objects", "-o", "json").json()}
    bad, ok = objs["empty.csv"], objs["ok.csv"]
    res = tarn("-p", str(proj), "objects", env={"COLUMNS": "100"})
    assert res.code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines)
    # every row on one line, ids whole
    [ok_row] = [line for line in lines if line.startswith(f" {ok['id']} ")]
    assert "ok.csv" in ok_row and "committed" in ok_row
    # the error's first line below the table, keyed by the id, and where to read all of it
    at = lines.index("errors (each in full, with its trail: tarn objects show ID):")
    assert lines[at + 1] == f"  {bad['id']}  the file is empty (no header line) …"
    assert "hint:" in bad["error"]  # the rest, left out above, is there in full
    shown = tarn("-p", str(proj), "objects", "show", bad["id"], env={"COLUMNS": "100"})
    assert "hint: land a file with a header and rows" in shown.stdout
    # the ingest report lists errors the same way
    assert f"  {bad['id']}  the file is empty (no header line) …" in ingested.stdout


SECRET = "hunter2-Pa55word"


@pytest.mark.parametrize(
    "extra",
    [
        {"metastore": {"url": "sqlite:////nonexistent/${secret:DB_PASSWORD}/metastore.db"}},
        {"lake": {"root": "s3://lake-${secret:DB_PASSWORD}/prefix"}},
    ],
    ids=["metastore-url", "lake-root"],
)
def test_secret_never_appears_in_cli_errors(tarn: Callable[..., Any], tmp_path: Path, extra: dict[str, Any]) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "tarn.yaml").write_text(yaml.safe_dump({"name": "s", **extra, "datasets": [{"name": "t"}]}))
    res = tarn("-p", str(proj), "status", env={"TARN_SECRET_DB_PASSWORD": SECRET})
    assert res.code == 1
    assert res.stderr.startswith("error:")
    assert SECRET not in res.stdout + res.stderr


@pytest.mark.slow
def test_missing_secret_is_named_not_printed(tarn: Callable[..., Any], tmp_path: Path) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "tarn.yaml").write_text("name: s\ndatasets:\n  - name: t\n    description: '${secret:API_KEY}'\n")
    res = tarn("-p", str(proj), "status")
    assert res.code == 1
    assert "secret 'API_KEY' is not set" in res.stderr
    ok = tarn("-p", str(proj), "status", "-o", "json", env={"TARN_SECRET_API_KEY": SECRET})
    assert ok.code == 0, ok.stderr
    assert SECRET not in ok.stdout + ok.stderr


@pytest.mark.slow
def test_dlq_list_show_and_redrive_after_a_fix(tarn: Callable[..., Any], tmp_path: Path) -> None:
    proj = tmp_path / "dlq"
    _write_yaml(proj, [{"name": "orders", "format": "parquet"}])  # wrong: the files are CSV
    data = tmp_path / "orders.csv"
    data.write_text("id,amount\n1,1.5\n2,2.5\n")
    first = tarn("-p", str(proj), "ingest", str(data), "-d", "orders", "-o", "json")
    assert first.json()[0]["state"] == "failed"  # the attempt failed; it stays queued for a retry
    worked = tarn("-p", str(proj), "worker", "--until-idle")
    assert worked.code == 0, worked.stderr
    listed = tarn("-p", str(proj), "dlq", "list", "-o", "json")
    [entry] = listed.json()
    assert (entry["dataset"], entry["file"], entry["receives"]) == ("orders", "orders.csv", 2)
    assert "Parquet" in entry["error"]

    _write_yaml(proj, [{"name": "orders", "format": "csv"}])
    redriven = tarn("-p", str(proj), "dlq", "redrive", "--all")
    assert redriven.code == 0, redriven.stderr
    assert str(entry["message"]) in redriven.stdout
    assert tarn("-p", str(proj), "worker", "--until-idle").code == 0
    status = tarn("-p", str(proj), "status", "-o", "json").json()
    assert status["objects"] == {"committed": 1}
    assert status["dlq"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_processes_landed_files_and_stops_cleanly_on_a_signal(
    tmp_path: Path, wait_for: Callable[..., Any], settled: Callable[..., Any], sig: signal.Signals
) -> None:

    proj = tmp_path / "up"
    _write_yaml(proj, [ORDERS])
    lake = Lake(proj)  # creates the zones; used to observe the running 'tarn up'
    script = Path(sysconfig.get_path("scripts")) / "tarn"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from tarn.cli.main import main; main()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_")} | {"COLUMNS": "250", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [*cmd, "-p", str(proj), "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        wait_for(lambda: any(a["action"] == "up" for a in lake.meta.audit.list()), timeout=30, what="tarn up")
        (lake.storage.zone("landing") / "orders" / "o.csv").write_text(ORDERS_CSV)
        wait_for(settled(lake, 1), timeout=30, what="the landed file")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        lake.close()
    assert proc.returncode == 0, err
    assert "o.csv → committed_with_quarantine (2 rows, 2 quarantined)" in out
    assert out.rstrip().endswith("stopped")
