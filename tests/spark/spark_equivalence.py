"""Run the same pipelines on DuckDB and on Spark, each in a project of its own, and compare what they leave behind:
every Delta table (schema and rows, ignoring order), every file a load wrote (its rows), and every step's
outcome (state, rows in and out, typing errors, expectation and quarantine counts, validation results, merge
metrics).

A case is a list of actions run in order in a fresh folder: write input files, seed a Delta table, run a Tarn
pipeline of the case's project by name, or run an Arc job with variables (``{root}`` in a variable is the case's
folder)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from deltalake import DeltaTable

from tarn.config.engine import EngineSpec
from tarn.lake import Lake
from tarn.pipelines.api import access
from tarn.pipelines.context import RunOptions, RunResult
from tarn.pipelines.from_arc import pipeline_from_arc_file
from tarn.pipelines.project import find_pipeline
from tarn.pipelines.runner import run_pipeline

MASTER = "local[2]"
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "768m",
    "spark.sql.adaptive.enabled": "false",
}
SPARK = EngineSpec(name="spark", master=MASTER, conf=SPARK_CONF)

# Columns whose values depend on the run (its id, its start time), not on the engine.
VOLATILE = {"_tarn_run_id", "quarantined_at"}
# Timestamps from this moment on were written by the runs (SCD2 change times, current_timestamp()): they differ
# between the two runs of a case by construction and are compared as "written at run time".
RUN_TIME = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Run:
    """Run a pipeline of the project (``ref`` a name) or an Arc job (``ref`` a path)."""

    ref: str
    env: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


Action = Run | Callable[[Path], None]


@dataclass
class Outcome:
    results: list[dict[str, Any]]
    tables: dict[str, dict[str, Any]]
    files: dict[str, list[Any]]
    seconds: float


def _project(root: Path, pipelines: Path | None) -> Path:
    proj = root / "proj"
    (proj / "pipelines").mkdir(parents=True)
    (proj / "tarn.yaml").write_text("name: equivalence\nlake: {root: lake}\ndatasets: []\n")
    if pipelines is not None:
        for p in sorted(pipelines.glob("*.yaml")):
            shutil.copy(p, proj / "pipelines" / p.name)
    return proj


def run_case(root: Path, engine: EngineSpec, actions: list[Action], pipelines: Path | None = None) -> Outcome:
    proj = _project(root, pipelines)
    lake = Lake(proj)
    acc = dataclasses.replace(access(lake), engine=engine)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        for action in actions:
            if not isinstance(action, Run):
                action(proj)
                continue
            if action.ref.endswith((".conf", ".json", ".ipynb")):
                variables = {k: _fill(v, proj) for k, v in action.variables.items()}
                spec = pipeline_from_arc_file(Path(action.ref), variables)
                opts = RunOptions(env=action.env, kind="arc")
            else:
                spec = find_pipeline(proj, action.ref)
                opts = RunOptions(env=action.env, params=action.params)
            results.append(_result(run_pipeline(acc, spec, opts)))
    finally:
        lake.close()
    seconds = time.perf_counter() - start
    return Outcome(results, _tables(proj), _files(proj), seconds)


def _fill(value: str, proj: Path) -> str:
    """``{root}``: the project folder; ``{between}``: the text of ``between.txt`` the inputs wrote."""
    value = value.replace("{root}", str(proj))
    if "{between}" in value:
        value = value.replace("{between}", (proj / "between.txt").read_text().strip())
    return value


# ------------------------------------------------------------------------------------------- normalising
def _value(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return float(f"{v:.12g}")
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, dt.datetime):
        aware = v if v.tzinfo else v.replace(tzinfo=dt.UTC)
        if aware >= RUN_TIME:
            return "<written at run time>"
        return aware.astimezone(dt.UTC).isoformat()
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_value(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


_TS_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def _json_value(v: Any) -> Any:
    """Timestamps in JSON text as instants: DuckDB prints ``…10:00:00.5+00``, Spark drops the fraction."""
    if v in ("Infinity", "-Infinity", "NaN"):  # DuckDB writes them bare (not JSON), Spark as strings
        return _value(float(v))
    if isinstance(v, str) and _TS_TEXT.match(v):
        text = v.replace("Z", "+00:00")
        if re.search(r"[+-]\d{2}$", text):
            text += ":00"
        return dt.datetime.fromisoformat(text).replace(microsecond=0).isoformat()
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return _value(v)


def _record(text: Any) -> Any:
    """A quarantined row's JSON text, as data (key order and number spelling are the engines' own)."""
    if isinstance(text, str):
        try:
            return _json_value(json.loads(text))
        except json.JSONDecodeError:
            return text
    return text


def rows(table: pa.Table) -> list[str]:
    out = []
    for r in table.to_pylist():
        norm = {k: (None if k in VOLATILE else _record(v) if k == "record" else _value(v)) for k, v in r.items()}
        out.append(json.dumps(norm, sort_keys=True, default=str))
    return sorted(out)


def _tables(proj: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for log in sorted(proj.rglob("_delta_log")):
        uri = log.parent
        t = DeltaTable(str(uri))
        schema = json.loads(t.schema().to_json())
        out[str(uri.relative_to(proj))] = {
            "schema": [(f["name"], f["type"]) for f in schema["fields"]],
            "partitions": list(t.metadata().partition_columns),
            "rows": rows(t.to_pyarrow_table()),
        }
    return out


def _files(proj: Path) -> dict[str, list[Any]]:
    """Files loads wrote (outside Delta tables and the project's inputs): their rows, per folder."""
    out: dict[str, list[Any]] = {}
    for path in sorted(proj.rglob("part-*")):
        if any((parent / "_delta_log").is_dir() for parent in path.parents if parent.is_relative_to(proj)):
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        elif path.suffix == ".csv":
            table = pacsv.read_csv(path)
        elif path.suffix == ".jsonl":
            table = pajson.read_json(path)
        else:
            continue
        key = str(path.parent.relative_to(proj))
        out.setdefault(key, []).extend(rows(table))
    return {k: sorted(v) for k, v in out.items()}


def _result(r: RunResult) -> dict[str, Any]:
    steps = []
    for s in r.steps:
        detail = s.get("detail") or {}
        kept = {}
        for k in ("rows_with_errors", "valid", "message", "quarantined", "values", "only_left", "only_right"):
            if k in detail:
                kept[k] = _value(detail[k])
        if s["type"] == "log" and "rows" in detail:
            kept["rows"] = sorted(json.dumps(_value(x), sort_keys=True) for x in detail["rows"])
        metrics = detail.get("metrics") or {}
        for k in ("num_target_rows_inserted", "num_target_rows_updated", "num_target_rows_deleted", "skipped"):
            if k in metrics:
                kept[k] = metrics[k]
        steps.append(
            {
                "name": s["name"],
                "state": s["state"],
                "rows_in": s.get("rows_in"),
                "rows_out": s.get("rows_out"),
                "expectations": s.get("expectations"),
                "detail": kept,
            }
        )
    return {"state": r.state, "error_stage": r.error_stage, "strategy": r.strategy, "steps": steps}


def compare(duck: Outcome, spark: Outcome) -> list[str]:
    """Every difference between the two outcomes (empty: equivalent)."""
    diffs: list[str] = []
    for i, (a, b) in enumerate(zip(duck.results, spark.results, strict=True)):
        for k in ("state", "error_stage", "strategy"):
            if a[k] != b[k]:
                diffs.append(f"run {i}: {k} {a[k]!r} (duckdb) vs {b[k]!r} (spark)")
        for sa, sb in zip(a["steps"], b["steps"], strict=True):
            if sa != sb:
                diffs.append(f"run {i}, step {sa['name']!r}: {sa} (duckdb) vs {sb} (spark)")
    if sorted(duck.tables) != sorted(spark.tables):
        diffs.append(f"tables: {sorted(duck.tables)} (duckdb) vs {sorted(spark.tables)} (spark)")
    for name in sorted(set(duck.tables) & set(spark.tables)):
        a, b = duck.tables[name], spark.tables[name]
        if a["schema"] != b["schema"]:
            diffs.append(f"{name}: schema {a['schema']} (duckdb) vs {b['schema']} (spark)")
        if a["partitions"] != b["partitions"]:
            diffs.append(f"{name}: partitions {a['partitions']} vs {b['partitions']}")
        if a["rows"] != b["rows"]:
            only_a = [r for r in a["rows"] if r not in b["rows"]][:3]
            only_b = [r for r in b["rows"] if r not in a["rows"]][:3]
            diffs.append(f"{name}: rows differ; only duckdb {only_a}; only spark {only_b}")
    if duck.files != spark.files:
        diffs.append(f"files differ: {duck.files} (duckdb) vs {spark.files} (spark)")
    return diffs


def env_without_etl() -> None:
    for name in list(os.environ):
        if name.startswith("ETL_CONF_"):
            del os.environ[name]
