"""The two example Arc jobs (copies of shared/arc/examples in arc_jobs/examples) give exactly the results their
README expects, through the API and through ``tarn run JOB --env test --ETL_CONF_…=…`` (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable

from tarn.pipelines.api import access
from tarn.pipelines.context import RunOptions
from tarn.pipelines.from_arc import pipeline_from_arc_file
from tarn.pipelines.runner import run_pipeline
from tarn.pipelines.spec import LogStage

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project

EXAMPLES = Path(__file__).parent / "arc_jobs" / "examples"


@pytest.fixture(autouse=True)
def _no_etl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Job variables come only from the test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("ETL_CONF_"):
            monkeypatch.delenv(name)


def _variables(lake_dir: Path) -> dict[str, str]:
    return {
        "ETL_CONF_DATA_URL": str(EXAMPLES / "data"),
        "ETL_CONF_JOB_URL": str(EXAMPLES),
        "ETL_CONF_LAKE_URL": str(lake_dir),
        "ETL_CONF_CHANGED": "32",
    }


def _steps(result_steps: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(s["name"]): s for s in result_steps}


def test_orders_job(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = project.run(str(EXAMPLES / "orders_job.conf"), env="test", variables=_variables(out))
    assert r.ok, r.error
    assert r.strategy == "deferred"
    steps = _steps(r.steps)
    typed = steps["type orders"]
    assert typed["rows_in"] == 500 and typed["rows_out"] == 500
    assert typed["detail"] == {"rows_with_errors": 4}
    assert steps["good orders"]["rows_out"] == 496
    validation = steps["at most one percent bad rows"]
    assert validation["state"] == "succeeded"
    assert validation["detail"] == {"valid": True, "message": {"bad": 4, "total": 500}}  # JSON message, parsed
    load = steps["load orders"]
    assert load["rows_in"] == 496 and load["rows_out"] == 496
    table = DeltaTable(str(out / "orders"))
    assert table.metadata().partition_columns == ["status"]
    rows = table.to_pyarrow_table()
    assert rows.num_rows == 496
    assert rows.column_names == ["order_id", "customer_id", "ordered_at", "amount", "status"]
    assert str(rows.schema.field("amount").type) == "decimal128(10, 2)"
    assert str(rows.schema.field("ordered_at").type).startswith("timestamp")
    # a Hive-style folder per status (DuckDB's at the table's root, Spark's under the folder its write made)
    assert sorted(set(rows.column("status").to_pylist())) == sorted(
        p.name.split("=")[1] for p in (out / "orders").rglob("status=*") if p.is_dir()
    )
    detail = project.lake.meta.runs.detail(r.run_id)
    assert detail["kind"] == "arc" and detail["env"] == "test"
    assert detail["source"] == str((EXAMPLES / "orders_job.conf").resolve())


def test_orders_typing_errors_are_the_expected_four(project: Project, tmp_path: Path) -> None:
    """amount 'n/a' three times and one unparseable timestamp (read through a log stage added to the job)."""
    spec = pipeline_from_arc_file(EXAMPLES / "orders_job.conf", _variables(tmp_path / "out"))
    errors = LogStage(
        type="log",
        name="typing errors",
        sql="SELECT e.field AS field, e.message AS message FROM orders_typed LATERAL VIEW EXPLODE(_errors) x AS e",
    )
    spec = spec.model_copy(update={"stages": (*spec.stages[:2], errors)})
    r = run_pipeline(access(project.lake), spec, RunOptions(env="test", kind="arc"))
    assert r.ok, r.error
    rows = _steps(r.steps)["typing errors"]["detail"]["rows"]  # type: ignore[index]
    assert Counter(row["field"] for row in rows) == {"amount": 3, "ordered_at": 1}
    assert all("'n/a'" in row["message"] for row in rows if row["field"] == "amount")


def test_customers_scd2_notebook(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = project.run(str(EXAMPLES / "customers_scd2.ipynb"), env="test", variables=_variables(out))
    assert r.ok, r.error
    # the notebook reads back the table it loaded, then merges into it: stages commit as they run
    assert r.strategy == "sequential"
    steps = _steps(r.steps)
    assert steps["initial load"]["rows_out"] == 300
    assert steps["extract changes"]["rows_out"] == 340
    assert steps["current customers"]["detail"]["version"] == 0  # type: ignore[index]
    merge = steps["scd2 merge"]
    assert merge["type"] == "execute"
    metrics = merge["detail"]["metrics"]  # type: ignore[index]
    assert (metrics["num_target_rows_updated"], metrics["num_target_rows_inserted"]) == (32, 72)
    assert steps["scd2 counts"]["detail"] == {"valid": True, "message": {"total": 372, "expired": 32}}
    table = DeltaTable(str(out / "customers"))
    assert table.version() == 1
    rows = table.to_pyarrow_table().to_pylist()
    assert len(rows) == 372
    expired = [row for row in rows if row["valid_to"] is not None]
    assert len(expired) == 32 and all(row["is_current"] == 0 for row in expired)
    current = [row for row in rows if row["is_current"] == 1]
    assert len(current) == 340 and len({row["customer_id"] for row in current}) == 340


def test_customers_notebook_in_production_skips_the_test_stages(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = project.run(str(EXAMPLES / "customers_scd2.ipynb"), env="production", variables=_variables(out))
    assert r.ok, r.error
    steps = _steps(r.steps)
    assert steps["read result"]["state"] == "skipped" and steps["scd2 counts"]["state"] == "skipped"
    assert DeltaTable(str(out / "customers")).to_pyarrow_table().num_rows == 372


def test_a_failing_merge_run_leaves_the_table_as_it_was(project: Project, tmp_path: Path) -> None:
    """With ETL_CONF_CHANGED wrong, the final validation fails: the load and the merge are undone."""
    out = tmp_path / "out"
    r = project.run(
        str(EXAMPLES / "customers_scd2.ipynb"), env="test", variables={**_variables(out), "ETL_CONF_CHANGED": "31"}
    )
    assert not r.ok and r.error_stage == "scd2 counts"
    assert "removed (created by this run)" in (r.error or "")
    assert not DeltaTable.is_deltatable(str(out / "customers"))


@pytest.mark.slow
def test_both_examples_through_the_cli(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    variables = [f"--{k}={v}" for k, v in _variables(out).items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_CONF_")}
    cli = [sys.executable, "-c", "from tarn.cli.main import main; main()", "--project", str(project.dir), "run"]
    for job in ("orders_job.conf", "customers_scd2.ipynb"):
        proc = subprocess.run(
            [*cli, str(EXAMPLES / job), "--env", "test", *variables, "-o", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["state"] == "succeeded"
    assert DeltaTable(str(out / "orders")).to_pyarrow_table().num_rows == 496
    assert DeltaTable(str(out / "customers")).to_pyarrow_table().num_rows == 372
