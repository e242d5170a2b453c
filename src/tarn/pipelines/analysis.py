"""Static analysis of a pipeline: what each stage reads and writes, without running anything.

Used by the runner (to choose how to keep a run atomic), by ``tarn validate`` (views exist, SQL parses) and by
the DAG between pipelines (a pipeline depends on the pipelines that write the tables it reads).

Table keys: a lake table is ``zone.table``; a Delta table outside the catalog is its absolute location.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from tarn.errors import ConfigError
from tarn.pipelines import params as P
from tarn.pipelines.spec import (
    ConfigStage,
    EqualStage,
    ExecuteStage,
    ExpectStage,
    ExtractStage,
    LoadStage,
    LogStage,
    PipelineSpec,
    SqlStage,
    Stage,
    TypingStage,
    ValidateStage,
    split_table,
)
from tarn.pipelines.sqltools import parse, references

ENGINE_DIALECT = "duckdb"


def table_key(name: str, default_zone: str) -> str:
    zone, table = split_table(name, default_zone)
    return f"{zone}.{table}"


def resolve_location(path: str, base: Path) -> str:
    """A path relative to ``base`` made absolute (URIs with a scheme are left alone)."""
    if "://" in path:
        return path
    p = Path(path)
    return str(p if p.is_absolute() else (base / p).resolve())


@dataclass
class StageIO:
    """What one stage reads and writes."""

    reads_tables: list[str] = field(default_factory=list)  # table keys (zone.table or location)
    reads_views: list[str] = field(default_factory=list)  # bare names: views of the run (or unknown)
    writes: list[str] = field(default_factory=list)  # table keys
    defines: str | None = None  # the view it produces
    delta_source: str | None = None  # extract of a Delta table: its key (MERGE INTO <view> targets it)
    merge_target_view: str | None = None  # execute: MERGE INTO <view>


def stage_dialect(spec: PipelineSpec, stage: Stage) -> str:
    d = getattr(stage, "dialect", None)
    return str(d or spec.dialect)


def stage_io(
    spec: PipelineSpec, stage: Stage, project_dir: Path, view_sources: Mapping[str, str | None] | None = None
) -> StageIO:
    """The reads and writes of a stage whose placeholders are resolved. ``view_sources`` maps the views defined
    so far to the Delta table they were extracted from (for ``MERGE INTO <view>``)."""
    io = StageIO()
    views = view_sources or {}
    where = P.stage_label(spec, stage)
    if isinstance(stage, ExtractStage):
        io.defines = stage.output
        if stage.table is not None:
            key = table_key(stage.table, "stage")
            io.reads_tables.append(key)
            io.delta_source = key
        elif stage.uri is not None:
            key = resolve_location(stage.uri, project_dir)
            io.reads_tables.append(key)
            io.delta_source = key
        elif stage.format == "delta" and stage.path is not None:
            key = resolve_location(stage.path, project_dir)
            io.reads_tables.append(key)
            io.delta_source = key
    elif isinstance(stage, SqlStage | ValidateStage | LogStage | ConfigStage | ExecuteStage):
        assert stage.sql is not None, "stage_io needs a resolved stage"
        stmts = parse(stage.sql, stage_dialect(spec, stage), where)
        refs = references(stmts)
        io.reads_tables.extend(refs.tables)
        io.reads_views.extend(refs.names)
        if isinstance(stage, SqlStage):
            io.defines = stage.output
        if isinstance(stage, ExecuteStage) and isinstance(stmts[0], exp.Merge):
            target = stmts[0].this
            if isinstance(target, exp.Table):
                if target.db:
                    io.writes.append(table_key(f"{target.db}.{target.name}", "analytics"))
                else:
                    io.merge_target_view = target.name
                    src = views.get(target.name)
                    if src is not None:
                        io.writes.append(src)
    elif isinstance(stage, TypingStage | ExpectStage):
        io.reads_views.append(stage.input)
        io.defines = stage.output
        if isinstance(stage, ExpectStage) and any(e.action == "quarantine" for e in stage.expectations):
            io.writes.append(table_key(spec.quarantine_table(stage), "quarantine"))
    elif isinstance(stage, EqualStage):
        io.reads_views.extend([stage.left, stage.right])
    elif isinstance(stage, LoadStage):
        io.reads_views.append(stage.input)
        if stage.table is not None:
            io.writes.append(table_key(stage.table, "analytics"))
        elif stage.path is not None and stage.format == "delta":
            io.writes.append(resolve_location(stage.path, project_dir))
    return io


@dataclass
class PipelineIO:
    """Per active stage (index, resolved stage, io) and the pipeline's lake-level inputs and outputs."""

    stages: list[tuple[int, Stage, StageIO]]
    reads: list[str]  # tables read that the pipeline did not write earlier in the run
    writes: list[str]
    read_after_write: tuple[str, str, str] | None  # (reading stage, table, writing stage), if any


def analyze(
    spec: PipelineSpec,
    project_dir: Path,
    *,
    values: Mapping[str, str] | None = None,
    env: str | None = None,
    lenient: bool = False,
) -> PipelineIO:
    """Resolve and analyze the stages that run in ``env``. ``lenient``: unresolved placeholders get a dummy
    value and stages that cannot be analyzed are skipped (for the DAG and ``tarn plan``)."""
    vals: dict[str, str] = dict(values or {})
    if lenient:
        for k, v in spec.params.items():
            vals.setdefault(k, P.render(v) if v is not None else "0")
    out: list[tuple[int, Stage, StageIO]] = []
    view_sources: dict[str, str | None] = {}
    written: dict[str, str] = {}
    reads: list[str] = []
    raw: tuple[str, str, str] | None = None
    for i, stage in enumerate(spec.stages):
        if not stage.runs_in(env):
            continue
        try:
            stage_vals = vals
            if lenient:
                texts = P.stage_texts(stage, spec.base_dir)
                stage_vals = {**{n: "0" for t in texts.values() for n in P.placeholders(t)}, **vals}
            resolved = P.resolve_stage(spec, stage, stage_vals, spec.base_dir)
            io = stage_io(spec, resolved, project_dir, view_sources)
        except ConfigError:
            if lenient:
                continue
            raise
        for t in io.reads_tables:
            if t in written:
                raw = raw or (stage.name, t, written[t])
            elif t not in reads:
                reads.append(t)
        for t in io.writes:
            written.setdefault(t, stage.name)
        if io.defines:
            view_sources[io.defines] = io.delta_source
        out.append((i, resolved, io))
    return PipelineIO(out, reads, list(written), raw)
