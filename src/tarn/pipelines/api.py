"""Pipeline-facing functions over a :class:`~tarn.lake.Lake` (what the CLI, the HTTP API and the notebook call).

``run(lake, "daily_orders")`` runs a pipeline of the project by name (or a pipeline YAML file, or an Arc job:
``.json`` / ``.conf`` / ``.ipynb``); ``runs`` / ``run_detail`` read the run records; ``validate`` checks the
project without running anything; ``plan`` tells which pipelines and tables a change affects.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tarn.errors import ConfigError
from tarn.metastore.runs import RunRecord, RunRepo
from tarn.pipelines.context import LakeAccess, RunOptions, RunResult
from tarn.pipelines.project import find_pipeline, load_pipelines
from tarn.pipelines.runner import run_pipeline
from tarn.pipelines.spec import ParamValue, PipelineSpec

if TYPE_CHECKING:
    from tarn.lake import Lake
    from tarn.pipelines.dag import Plan
    from tarn.pipelines.validate import Problem

ARC_SUFFIXES = (".json", ".conf", ".ipynb")


def run_repo(lake: Lake) -> RunRepo:
    return lake.meta.runs


def access(lake: Lake) -> LakeAccess:
    return LakeAccess(
        project_dir=lake.dir,
        table_uri=lake.storage.table_uri,
        runs=run_repo(lake),
        principal=lake.principal,
        catalog=lake.meta.catalog,
        audit=lake.meta.audit,
        engine=lake.spec.engine,
        storage=lake.storage,
    )


def pipelines(lake: Lake) -> dict[str, PipelineSpec]:
    return load_pipelines(lake.dir)


def load(lake: Lake, ref: str, *, variables: Mapping[str, str] | None = None) -> PipelineSpec:
    """A pipeline by name or YAML path, or an Arc job mapped to a pipeline."""
    if Path(ref).suffix.lower() in ARC_SUFFIXES:
        try:
            from tarn.pipelines import from_arc  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            raise ConfigError(
                f"{ref}: running Arc jobs is not available in this version", hint="write the job as a Tarn pipeline"
            ) from None
        path = Path(ref) if Path(ref).is_absolute() else Path.cwd() / ref
        spec: PipelineSpec = from_arc.pipeline_from_arc_file(path, variables=dict(variables or {}))
        return spec
    if variables:
        raise ConfigError(
            f"--NAME=value variables are for Arc jobs; pipeline {ref!r} takes --param NAME=value",
            hint="pass pipeline params with --param",
        )
    return find_pipeline(lake.dir, ref)


def run(
    lake: Lake,
    ref: str,
    *,
    env: str | None = None,
    params: Mapping[str, ParamValue] | None = None,
    variables: Mapping[str, str] | None = None,
    trigger: str = "manual",
    resume: str | None = None,
    count_rows: bool = True,
) -> RunResult:
    spec = load(lake, ref, variables=variables)
    kind = "arc" if Path(ref).suffix.lower() in ARC_SUFFIXES else "pipeline"
    if resume is None:  # an earlier run of this pipeline left running by a dead process is finished first
        from tarn.pipelines.recovery import recover_stale_runs

        recover_stale_runs(lake, spec.name)
    opts = RunOptions(
        env=env, params=dict(params or {}), trigger=trigger, run_id=resume, kind=kind, count_rows=count_rows
    )
    return run_pipeline(access(lake), spec, opts)


def runs(lake: Lake, *, pipeline: str | None = None, state: str | None = None, limit: int = 50) -> list[RunRecord]:
    return run_repo(lake).list(pipeline=pipeline, state=state, limit=limit)


def run_detail(lake: Lake, run_id: str) -> dict[str, Any]:
    return run_repo(lake).detail(run_id)


def validate(lake: Lake) -> list[Problem]:
    from tarn.pipelines.validate import validate_project

    return validate_project(lake.dir, known_tables=[t["name"] for t in lake.meta.catalog.tables()], spec=lake.spec)


def plan(lake: Lake, changed: list[str] | None = None) -> Plan:
    from tarn.pipelines.dag import plan_changes

    repo = run_repo(lake)
    return plan_changes(lake.dir, changed=changed, last_hash=lambda name: _last_hash(repo, name))


def _last_hash(repo: RunRepo, name: str) -> str | None:
    last = repo.last(name)
    return last.spec_hash if last else None


def pipelines_safe(lake: Lake) -> list[str]:
    """Names of the pipeline files that load (for messages; problems are reported by ``validate``)."""
    from tarn.pipelines.project import load_pipeline_file, pipeline_files

    names = []
    for path in pipeline_files(lake.dir):
        try:
            names.append(load_pipeline_file(path).name)
        except ConfigError:
            continue
    return names


def describe(lake: Lake) -> list[dict[str, Any]]:
    """One row per pipeline, in DAG order."""
    from tarn.pipelines.dag import build_graph

    specs = load_pipelines(lake.dir)
    graph = build_graph(specs.values(), lake.dir)
    rows = []
    for name in graph.order():
        s, n = specs[name], graph.nodes[name]
        rows.append(
            {
                "pipeline": name,
                "stages": len(s.stages),
                "reads": ", ".join(n.reads),
                "writes": ", ".join(n.writes),
                "triggers": ", ".join(t.type for t in s.triggers) or "manual",
                "file": str(s.source.relative_to(lake.dir)) if s.source and s.source.is_relative_to(lake.dir) else None,
            }
        )
    return rows
