"""Queries and pipeline runs while ingest runs: two ``tarn worker`` processes ingest a stream of files that the
test keeps queueing, while the test runs ``lake.query``, pipeline runs (in this process and as ``tarn run``
processes) and ``tarn query`` processes, over and over. No error reaches the user — no "database is locked", no
failed run, no failed query — each query and each run sees a consistent snapshot made of whole files, and in
the end every file is in the stage table exactly once and the pipeline's output matches it exactly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable
from robust_helpers import (
    EVENTS,
    Project,
    TarnProcess,
    TarnProcesses,
    assert_exactly_once,
    event_files,
    settled_objects,
    wait_until,
    write_project,
)

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED
from tarn.pipelines import api

N_FILES, ROWS, WAVE = 240, 20, 20
PIPELINE = {
    "name": "summarize",
    "stages": [
        {"type": "extract", "name": "read", "table": "stage.events", "output": "ev"},
        {
            "type": "sql",
            "name": "per file",
            "sql": "SELECT _tarn_object_id AS object_id, count(*) AS n, sum(id) AS ids FROM ev GROUP BY 1",
            "output": "per_file",
        },
        {
            "type": "validate",
            "name": "whole files",
            "sql": f"SELECT count(*) = 0, 'a file is in stage.events partly' FROM per_file WHERE n <> {ROWS}",
        },
        {"type": "load", "name": "files", "input": "per_file", "table": "analytics.files", "mode": "merge",
         "keys": ["object_id"]},
        {"type": "sql", "name": "total", "sql": "SELECT count(*) AS files, sum(n) AS n FROM per_file",
         "output": "total"},
        {"type": "load", "name": "totals", "input": "total", "table": "analytics.totals", "mode": "overwrite"},
    ],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_queries_and_pipeline_runs_while_workers_ingest(
    backend: str,
    tmp_path: Path,
    tarn_processes: TarnProcesses,
    request: pytest.FixtureRequest,
    lake_of: Callable[[Project], Lake],
) -> None:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    project = write_project(tmp_path / "project", [EVENTS], ingest={"workers": 1}, metastore_url=url)
    (project.dir / "pipelines").mkdir()
    (project.dir / "pipelines" / "summarize.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    lake = lake_of(project)
    feeder_lake = lake_of(project)  # the feeder thread has its own connections, as another user would
    files = event_files(tmp_path / "incoming", N_FILES, ROWS)
    started = time.monotonic()
    workers = [tarn_processes.start(project, "worker", "--workers", "1") for _ in range(2)]
    expected: dict[str, int] = {}
    feeder_errors: list[BaseException] = []

    def feed() -> None:  # files keep arriving while everything else runs
        try:
            for start in range(0, N_FILES, WAVE):
                for _, reg, _ in feeder_lake.ingest(files[start : start + WAVE], "events", process=False):
                    expected[reg.object_id] = ROWS
                time.sleep(1.0)
        except BaseException as e:
            feeder_errors.append(e)

    feeder = threading.Thread(target=feed, name="feeder")
    feeder.start()

    seen: list[int] = []
    runs_ok = queries = cli_runs = cli_queries = 0
    cli: list[tuple[str, TarnProcess]] = []  # (kind, process) started and not yet checked

    def check_cli() -> None:
        nonlocal cli_runs, cli_queries
        for kind, p in list(cli):
            if p.alive():
                continue
            cli.remove((kind, p))
            code = p.proc.wait()
            assert code == 0, f"tarn {kind} failed while ingest ran: {p.stderr()[-2000:]}"
            if kind == "query":
                [row] = json.loads(p.stdout())
                assert row["n"] == row["f"] * ROWS, row
                cli_queries += 1
            else:
                cli_runs += 1

    while feeder.is_alive() or not settled_objects(lake, N_FILES):
        assert time.monotonic() - started < 240, f"not done after 240 s: {lake.status().to_dict()}"
        if lake.tables():
            # A consistent snapshot, never shrinking, made of whole files only.
            [row] = lake.query(
                "SELECT count(*) AS n, count(DISTINCT _tarn_object_id) AS f FROM stage.events"
            ).table.to_pylist()
            assert row["n"] == row["f"] * ROWS, row
            assert not seen or row["n"] >= seen[-1], (seen[-1], row)
            seen.append(row["n"])
            queries += 1
            # A pipeline run reads the table pinned at one version; its gate checks that files are whole.
            result = api.run(lake, "summarize")
            assert result.ok, f"run {result.run_id} failed while ingest ran: {result.error}"
            # What it wrote is exactly what the pinned version of stage.events holds.
            pinned = int((lake.meta.runs.get(result.run_id).inputs or {})["stage.events"])
            written = int(result.outputs["analytics.totals"])
            totals = DeltaTable(lake.storage.table_uri("analytics", "totals"), version=written)
            [total] = totals.to_pyarrow_table().to_pylist()
            assert total["n"] == DeltaTable(lake.storage.table_uri("stage", "events"), version=pinned).count()
            runs_ok += 1
            check_cli()
            if not cli:  # one CLI query and one CLI run at a time, as other users would
                cli.append(("query", tarn_processes.start(
                    project, "query", "-o", "json",
                    "SELECT count(*) AS n, count(DISTINCT _tarn_object_id) AS f FROM stage.events",
                )))  # fmt: skip
                cli.append(("run", tarn_processes.start(project, "run", "summarize")))
        time.sleep(0.1)
    feeder.join(timeout=60)
    assert not feeder_errors, feeder_errors
    wait_until(lambda: (check_cli(), not cli)[1], timeout=120, what="the last CLI commands")
    codes = [w.terminate(timeout=60) for w in workers]
    assert codes == [0, 0], tarn_processes.all_stderr()[-3000:]

    # Exactly once: every file in the stage table once; the pipeline's last run matches it exactly.
    objs = lake.objects(limit=10_000)
    assert len(objs) == N_FILES and {o.state for o in objs} == {COMMITTED}, lake.status().to_dict()
    assert_exactly_once(lake, "events", expected)
    final = api.run(lake, "summarize")
    assert final.ok, final.error
    [total] = lake.query("SELECT files, n FROM analytics.totals").table.to_pylist()
    assert total == {"files": N_FILES, "n": N_FILES * ROWS}
    per_file = lake.query("SELECT object_id, n FROM analytics.files").table.to_pylist()
    assert {r["object_id"]: r["n"] for r in per_file} == expected
    # Nothing failed on the way, and no lock error reached anyone.
    assert not [r for r in api.runs(lake, pipeline="summarize", limit=10_000) if r.state != "succeeded"]
    log = tarn_processes.all_stderr()
    assert "database is locked" not in log.lower()
    assert "Traceback" not in log, log[-3000:]
    assert queries >= 5 and runs_ok >= 5 and cli_runs >= 2 and cli_queries >= 2, (queries, runs_ok, cli_runs)
    print(
        f"\n{backend}: {N_FILES} files in {time.monotonic() - started:.0f}s with {queries} queries, {runs_ok} runs "
        f"in-process and {cli_runs} runs + {cli_queries} queries as processes"
    )
