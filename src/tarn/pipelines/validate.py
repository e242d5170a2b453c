"""``tarn validate``: every pipeline checked without running anything, for CI.

Checked: YAML and keys (unknown keys with "did you mean"), stage types, SQL parses (in each stage's dialect) and
is the right kind of statement, views read by a stage are produced by an earlier stage (in every environment
the pipeline uses), lake tables read exist (in the catalog, as a dataset's table, or written by a pipeline),
params and placeholders match, SQL and schema files exist, ``MERGE INTO`` targets are Delta tables, and the DAG
between pipelines has no cycle. Missing input data files are warnings (data may arrive later).
"""

from __future__ import annotations

import contextlib
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlglot import exp

from tarn.config.spec import ProjectSpec
from tarn.engines.dialects import untranspilable
from tarn.errors import ConfigError, TarnError, did_you_mean
from tarn.pipelines import params as P
from tarn.pipelines.analysis import analyze, resolve_location, stage_dialect
from tarn.pipelines.dag import build_graph
from tarn.pipelines.project import load_pipeline_file, pipeline_files
from tarn.pipelines.schemas import typing_fields
from tarn.pipelines.spec import (
    ExecuteStage,
    ExtractStage,
    LogStage,
    PipelineSpec,
    SqlStage,
    TypingStage,
    ValidateStage,
)
from tarn.pipelines.sqltools import parse

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    file: str | None
    pipeline: str | None
    stage: str | None
    message: str
    hint: str | None = None
    severity: str = ERROR

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate_project(
    project_dir: Path, *, known_tables: list[str] | None = None, spec: ProjectSpec | None = None
) -> list[Problem]:
    problems: list[Problem] = []
    specs: dict[str, PipelineSpec] = {}
    for path in pipeline_files(project_dir):
        try:
            s = load_pipeline_file(path)
        except TarnError as e:
            problems.append(Problem(str(path), None, None, e.message, e.hint))
            continue
        if s.name in specs:
            problems.append(
                Problem(str(path), s.name, None, f"pipeline name {s.name!r} is also used by {specs[s.name].source}")
            )
            continue
        specs[s.name] = s
    tables = set(known_tables or [])
    if spec is not None:
        for d in spec.datasets:
            tables.update({d.stage_table, d.quarantine_table})
    written: set[str] = set()
    for s in specs.values():
        with contextlib.suppress(TarnError):
            written.update(analyze(s, project_dir, lenient=True).writes)
    engine = spec.engine.name if spec is not None else "duckdb"
    for s in specs.values():
        problems.extend(validate_pipeline(s, project_dir, tables | written, engine=engine))
    try:
        graph = build_graph(specs.values(), project_dir)
        cyc = graph.cycle()
        if cyc:
            problems.append(
                Problem(
                    None,
                    None,
                    None,
                    "pipelines depend on each other in a cycle: " + " → ".join(cyc),
                    "a pipeline must not read (directly or through others) a table it writes",
                )
            )
    except TarnError as e:
        problems.append(Problem(None, None, None, e.message, e.hint))
    return problems


def _environments(spec: PipelineSpec) -> list[str | None]:
    envs = sorted({e for s in spec.stages for e in (s.environments or ())})
    return [None, *envs]


def validate_pipeline(
    spec: PipelineSpec, project_dir: Path, tables: set[str], *, engine: str = "duckdb"
) -> list[Problem]:
    """``engine``: the project's engine (the pipeline's own ``engine`` wins); SQL in another dialect must
    transpile to it."""
    file = str(spec.source) if spec.source else None
    out: list[Problem] = []

    def add(stage: str | None, message: str, hint: str | None = None, severity: str = ERROR) -> None:
        p = Problem(file, spec.name, stage, message, hint, severity)
        if p not in out:
            out.append(p)

    for pp in P.check_placeholders(spec).problems:
        add(pp.stage, pp.message, pp.hint)
    for env in _environments(spec):
        try:
            io = analyze(spec, project_dir, env=env, lenient=True)
        except TarnError as e:
            add(None, e.message, e.hint)
            continue
        views: list[str] = []
        for _idx, stage, sio in io.stages:
            for v in sio.reads_views:
                if v not in views:
                    where = f" in environment {env!r}" if env else ""
                    add(
                        stage.name,
                        f"stage {stage.name!r} reads {v!r}, which no earlier stage produces{where}"
                        f"{did_you_mean(v, views)}",
                        "a stage reads the 'output' of an earlier stage, or a lake table as zone.table",
                    )
            for t in sio.reads_tables:
                if "." in t and "/" not in t and t not in tables:
                    add(
                        stage.name,
                        f"stage {stage.name!r} reads the table {t}, which does not exist and no pipeline writes"
                        f"{did_you_mean(t, tables)}",
                        "'tarn tables' lists the lake's tables",
                    )
            if sio.merge_target_view and sio.merge_target_view not in views:
                add(stage.name, f"MERGE INTO {sio.merge_target_view}: no such view", "extract the Delta table first")
            elif sio.merge_target_view and not sio.writes:
                add(
                    stage.name,
                    f"MERGE INTO {sio.merge_target_view}: the view was not extracted from a Delta table",
                    "MERGE INTO a zone.table, or a view made by an extract of a Delta table",
                )
            if sio.defines:
                views.append(sio.defines)
    target = spec.engine or engine
    for stage in spec.stages:
        out.extend(_stage_checks(spec, stage, project_dir, file, target))
    return out


def _stage_checks(
    spec: PipelineSpec, stage: Any, project_dir: Path, file: str | None, engine: str = "duckdb"
) -> list[Problem]:
    found: list[Problem] = []
    name = stage.name
    try:
        texts = P.stage_texts(stage, spec.base_dir)
    except TarnError as e:
        return [Problem(file, spec.name, name, e.message, e.hint)]
    if isinstance(stage, SqlStage | ValidateStage | ExecuteStage | LogStage):
        sql = texts["sql"]
        sql = P.substitute(sql, {n: "0" for n in P.placeholders(sql)}, "")
        try:
            stmts = parse(sql, stage_dialect(spec, stage), f"stage {name!r}")
            if isinstance(stage, SqlStage | ValidateStage | LogStage) and not isinstance(stmts[-1], exp.Query):
                found.append(
                    Problem(file, spec.name, name, f"stage {name!r} ({stage.type}) must be a query (SELECT …)")
                )
            if len(stmts) > 1:
                found.append(Problem(file, spec.name, name, f"stage {name!r} holds {len(stmts)} statements, not one"))
            dialect = stage_dialect(spec, stage)
            for construct in untranspilable(sql, dialect, engine):
                found.append(
                    Problem(
                        file,
                        spec.name,
                        name,
                        f"stage {name!r}: its {dialect} SQL cannot be transpiled to {engine} (the {engine} engine "
                        f"runs this pipeline): {construct}",
                        f"rewrite the construct, or run the pipeline on {dialect} (engine: {dialect})",
                    )
                )
        except ConfigError as e:
            found.append(Problem(file, spec.name, name, e.message, e.hint))
    if isinstance(stage, TypingStage):
        try:
            typing_fields(stage, spec.base_dir)
        except TarnError as e:
            found.append(Problem(file, spec.name, name, e.message, e.hint))
    if isinstance(stage, ExtractStage) and stage.path is not None and "${" not in stage.path:
        for p in stage.path.split(","):
            loc = resolve_location(p.strip(), project_dir)
            if "://" not in loc and not glob.glob(loc):
                found.append(
                    Problem(file, spec.name, name, f"stage {name!r}: no file matches {p.strip()!r}", None, WARNING)
                )
    return found


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]
