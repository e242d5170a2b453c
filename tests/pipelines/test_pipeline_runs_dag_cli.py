"""Run records, the DAG between pipelines, ``tarn plan``, and the CLI commands (as a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tarn.pipelines import api
from tarn.pipelines.dag import build_graph
from tarn.pipelines.project import load_pipelines

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project


def _chain(project: Project) -> None:
    """stage.orders → daily (analytics.daily) → weekly (analytics.weekly); report reads both."""
    project.seed("stage.orders", {"id": [1, 2, 3], "day": ["d1", "d1", "d2"]})
    project.pipeline(
        {
            "name": "weekly",
            "stages": [
                {"type": "sql", "name": "w", "sql": "SELECT count(*) AS n FROM analytics.daily", "output": "w"},
                {"type": "load", "name": "save", "input": "w", "table": "analytics.weekly", "mode": "overwrite"},
            ],
        }
    )
    project.pipeline(
        {
            "name": "daily",
            "stages": [
                {"type": "extract", "name": "o", "table": "stage.orders", "output": "o"},
                {"type": "sql", "name": "d", "sql": "SELECT day, count(*) AS n FROM o GROUP BY day", "output": "d"},
                {"type": "load", "name": "save", "input": "d", "table": "analytics.daily", "mode": "overwrite"},
            ],
        }
    )
    project.pipeline(
        {
            "name": "report",
            "stages": [
                {
                    "type": "sql",
                    "name": "r",
                    "sql": "SELECT * FROM analytics.weekly CROSS JOIN (SELECT count(*) AS days FROM analytics.daily)",
                    "output": "r",
                },
                {"type": "log", "name": "show", "sql": "SELECT * FROM r"},
            ],
        }
    )


def test_run_record_has_everything(project: Project) -> None:
    project.seed("stage.orders", {"id": [1, 2, 3]})
    project.pipeline(
        {
            "name": "rec",
            "params": {"n": 1},
            "stages": [
                {"type": "extract", "name": "o", "table": "stage.orders", "output": "o"},
                {"type": "sql", "name": "f", "sql": "SELECT * FROM o WHERE id > ${n}", "output": "f"},
                {"type": "load", "name": "save", "input": "f", "table": "analytics.rec"},
            ],
        }
    )
    r = project.run("rec", params={"n": 2})
    assert r.ok
    d = api.run_detail(project.lake, r.run_id[:6])  # a unique prefix is enough
    assert d["state"] == "succeeded" and d["pipeline"] == "rec" and d["params"] == {"n": "2"}
    assert d["started_at"] <= d["ended_at"] and d["duration_s"] >= 0
    assert d["inputs"] == {"stage.orders": 0} and d["outputs"] == {"analytics.rec": 0}
    assert d["strategy"] == "deferred" and d["trigger"] == "manual" and d["principal"] == "tester"
    steps = {s["name"]: s for s in d["steps"]}
    assert steps["f"]["sql"] == "SELECT * FROM o WHERE id > 2" and steps["f"]["rows_out"] == 1
    assert steps["o"]["rows_out"] == 3 and steps["save"]["rows_in"] == 1 and steps["save"]["rows_out"] == 1
    assert all(s["state"] == "succeeded" and s["duration_s"] is not None for s in d["steps"])
    assert [x.id for x in api.runs(project.lake, pipeline="rec")] == [r.run_id]
    assert any(a["action"] == "pipeline.run" for a in project.lake.meta.audit.list())


def test_dag_orders_pipelines_by_the_tables_they_read(project: Project) -> None:
    _chain(project)
    graph = build_graph(load_pipelines(project.dir).values(), project.dir)
    assert graph.order() == ["daily", "weekly", "report"]
    assert graph.upstream["report"] == {"daily", "weekly"}
    assert graph.consumers("stage.orders") == ["daily"]
    assert graph.consumers("analytics.daily") == ["weekly", "report"]
    assert graph.downstream(["weekly"]) == ["weekly", "report"]
    for name in graph.order():  # runs in DAG order succeed
        assert project.run(name).ok


def test_plan_shows_affected_pipelines_and_tables(project: Project) -> None:
    _chain(project)
    plan = api.plan(project.lake)
    assert plan.pipelines == ["daily", "weekly", "report"] and plan.changed["daily"] == "never ran"
    for name in ("daily", "weekly", "report"):
        project.run(name)
    assert api.plan(project.lake).pipelines == []
    # change the weekly pipeline's SQL: weekly and report are affected
    doc = {
        "name": "weekly",
        "stages": [
            {"type": "sql", "name": "w", "sql": "SELECT count(*) * 2 AS n FROM analytics.daily", "output": "w"},
            {"type": "load", "name": "save", "input": "w", "table": "analytics.weekly", "mode": "overwrite"},
        ],
    }
    project.pipeline(doc)
    plan = api.plan(project.lake)
    assert plan.pipelines == ["weekly", "report"] and plan.tables == ["analytics.weekly"]
    assert plan.changed == {"weekly": "changed since its last successful run", "report": "downstream"}
    # explicit: a table, a pipeline file
    assert api.plan(project.lake, ["stage.orders"]).pipelines == ["daily", "weekly", "report"]
    assert api.plan(project.lake, ["pipelines/report.yaml"]).pipelines == ["report"]


# ------------------------------------------------------------------------------------------------ CLI
_CLI = (
    "import sys\n"
    "from tarn.cli.main import app, lake, main\n"
    "from tarn.cli.pipelines import register\n"
    "if not any(c.name == 'run' for c in app.registered_commands):\n"
    "    register(app, lake)\n"
    "main()\n"
)


def _tarn(project: Project, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_")}
    env.update({"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "TARN_PRINCIPAL": "tester"})
    proc = subprocess.run(
        [sys.executable, "-c", _CLI, "--project", str(project.dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_run_runs_show_validate_plan(project: Project) -> None:
    project.seed("stage.orders", {"id": [1, 2, 3]})
    project.pipeline(
        {
            "name": "cli",
            "params": {"n": 0},
            "stages": [
                {"type": "extract", "name": "o", "table": "stage.orders", "output": "o"},
                {
                    "type": "expect",
                    "name": "q",
                    "input": "o",
                    "output": "c",
                    "expectations": [{"name": "big", "check": "id > ${n}", "action": "drop"}],
                },
                {"type": "load", "name": "save", "input": "c", "table": "analytics.cli"},
            ],
        }
    )
    code, out, err = _tarn(project, "run", "cli", "--param", "n=1", "-o", "json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    assert result["state"] == "succeeded"
    code, out, _ = _tarn(project, "runs", "-o", "json")
    assert code == 0 and json.loads(out)[0]["id"] == result["run_id"]
    code, out, _ = _tarn(project, "runs", "show", result["run_id"])
    assert code == 0 and "big" in out and "expectations" in out
    code, out, _ = _tarn(project, "validate")
    assert code == 0 and "ok" in out
    code, out, _ = _tarn(project, "plan", "-o", "json")
    assert code == 0 and json.loads(out)["pipelines"] == []
    code, out, _ = _tarn(project, "pipelines")
    assert code == 0 and "analytics.cli" in out
    # a failing run exits 1 with the stage in the message
    code, out, err = _tarn(project, "run", "cli", "--param", "n=oops")
    assert code == 1 and "error:" in err and "'q'" in err
    # validate: non-zero exit on a problem
    (project.dir / "pipelines" / "bad.yaml").write_text("name: bad\nstages: [{type: sql, name: s, sql: 'SELECT 1'}]\n")
    code, out, err = _tarn(project, "validate")
    assert code == 1 and "output" in out
    code, _, err = _tarn(project, "run", "nope")
    assert code == 1 and "error:" in err


def test_cli_runs_an_arc_job_only_when_supported(project: Project, tmp_path: Path) -> None:
    job = tmp_path / "job.conf"
    job.write_text('{"stages": []}')
    code, _, err = _tarn(project, "run", str(job), "--ETL_CONF_X=1")
    assert code == 1 and "error:" in err
