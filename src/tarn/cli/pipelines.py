"""CLI commands for pipelines: ``tarn run``, ``tarn runs``, ``tarn runs show``, ``tarn validate``, ``tarn plan``,
``tarn pipelines``. Registered on the main app with :func:`register` (thin: each command calls
:mod:`tarn.pipelines.api` and prints through :mod:`tarn.cli.output`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from tarn.cli.output import Format, console, emit_json, emit_rows, kv, when
from tarn.errors import TarnError

if TYPE_CHECKING:
    from types import ModuleType

    from tarn.lake import Lake


def _api() -> ModuleType:
    """:mod:`tarn.pipelines.api`, imported by the pipeline commands only: it brings sqlglot, the Arc
    parser and the engines, which the other commands (ingest, status, …) start faster without."""
    from tarn.pipelines import api

    return api


OutputOpt = typer.Option(Format.table, "--output", "-o", help="table, json or csv")
STEP_COLUMNS = ["idx", "name", "type", "state", "rows_in", "rows_out", "duration_s", "output", "error"]


def parse_variables(args: list[str]) -> dict[str, str]:
    """Arc job variables from extra arguments: ``--NAME=value`` or ``--NAME value``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) < 3:
            raise TarnError(f"unexpected argument {a!r}", hint="Arc job variables are written --NAME=value")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        elif i + 1 < len(args):
            k, v = a[2:], args[i + 1]
            i += 1
        else:
            raise TarnError(f"variable {a} has no value", hint="write --NAME=value")
        out[k] = v
        i += 1
    return out


def _parse_assignments(args: list[str]) -> dict[str, str]:
    from tarn.pipelines.params import parse_assignments

    return parse_assignments(args)


def _steps_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "duration_s": None if s.get("duration_s") is None else round(s["duration_s"], 3)} for s in steps]


def _expectations(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"stage": s["name"], **e} for s in steps for e in (s.get("expectations") or [])]


def register(app: typer.Typer, lake: Callable[[], Lake]) -> None:
    """Add the pipeline commands to ``app``; ``lake()`` opens the project's lake (once)."""
    runs_app = typer.Typer(help="Pipeline runs and their stages.", invoke_without_command=True)
    app.add_typer(runs_app, name="runs")

    @app.command(
        "run",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def run_cmd(
        ctx: typer.Context,
        pipeline: str = typer.Argument(..., help="pipeline name, pipeline YAML file, or Arc job (.json/.conf/.ipynb)"),
        env: str | None = typer.Option(None, "--env", "-e", help="environment: stages outside it are skipped"),
        param: list[str] = typer.Option([], "--param", "-P", help="pipeline param NAME=value (repeatable)"),
        resume: str | None = typer.Option(None, "--resume", help="resume a run that crashed (its id)"),
        output: Format = OutputOpt,
    ) -> None:
        """Run a pipeline (or an Arc job) now. Extra --NAME=value arguments are Arc job variables."""
        result = _api().run(
            lake(),
            pipeline,
            env=env,
            params=_parse_assignments(param),
            variables=parse_variables(list(ctx.args)),
            resume=resume,
        )
        if output == Format.json:
            emit_json(result.to_dict())
        else:
            emit_rows(_steps_rows(result.steps), STEP_COLUMNS, output, title=f"run {result.run_id} of {pipeline}")
            exps = _expectations(result.steps)
            if exps and output == Format.table:
                emit_rows(exps, ["stage", "name", "action", "failed", "total"], output, title="expectations")
            if output == Format.table:
                colour = "green" if result.ok else "red"
                console.print(Text(result.state, style=colour) + Text(f" ({result.strategy})"))
        if not result.ok:
            # A TarnError (not typer.Exit): main()'s handler prints it and exits 1.
            raise TarnError(
                f"run {result.run_id} of {pipeline} failed at stage {result.error_stage!r}: {result.error}",
                hint=f"'tarn runs show {result.run_id}' has every stage's record",
            )

    @runs_app.callback()
    def runs_list(
        ctx: typer.Context,
        pipeline: str | None = typer.Option(None, "--pipeline", help="only runs of this pipeline"),
        state: str | None = typer.Option(None, "--state", help="running, succeeded or failed"),
        limit: int = typer.Option(50, "--limit"),
        output: Format = OutputOpt,
    ) -> None:
        """List runs, newest first."""
        if ctx.invoked_subcommand:
            return
        records = _api().runs(lake(), pipeline=pipeline, state=state, limit=limit)
        rows = [{**r.to_dict(), "started": when(r.started_at)} for r in records]
        cols = ["id", "pipeline", "state", "trigger", "env", "started", "duration_s", "error_stage", "error"]
        emit_rows(rows if output != Format.json else [r.to_dict() for r in records], cols, output)

    @runs_app.command("show")
    def runs_show(run_id: str, output: Format = OutputOpt) -> None:
        """One run: its record, every stage with rows, expectation counts, resolved SQL and errors."""
        d = _api().run_detail(lake(), run_id)
        if output == Format.json:
            emit_json(d)
            return
        steps = d.pop("steps")
        kv(f"run {d['id']}", {**d, "started_at": when(d["started_at"]), "ended_at": when(d["ended_at"])})
        emit_rows(_steps_rows(steps), STEP_COLUMNS, output, title="stages")
        exps = _expectations(steps)
        if exps:
            emit_rows(exps, ["stage", "name", "action", "failed", "total"], output, title="expectations")
        for s in steps:
            if s.get("detail") and s["type"] in ("validate", "log", "equal", "config"):
                kv(f"{s['type']} {s['name']}", s["detail"])

    @app.command("validate")
    def validate_cmd(output: Format = OutputOpt) -> None:
        """Check the project's pipelines without running anything (non-zero exit on any error)."""
        problems = _api().validate(lake())
        rows = [p.to_dict() for p in problems]
        if output == Format.json:
            emit_json(rows)
        elif rows:
            emit_rows(rows, ["severity", "pipeline", "stage", "message", "hint"], output)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise TarnError(f"{len(errors)} problem(s) in the project's pipelines", hint="fix the problems listed")
        if output == Format.table:
            checked = len(_api().pipelines_safe(lake()))
            console.print(Text("ok", style="green") + Text(f": {checked} pipeline(s) checked"))

    @app.command("plan")
    def plan_cmd(
        changed: list[str] = typer.Argument(None, help="pipelines, files or zone.table names (default: what changed)"),
        output: Format = OutputOpt,
    ) -> None:
        """Which pipelines and tables a change affects (default: pipelines changed since their last good run)."""
        p = _api().plan(lake(), list(changed) if changed else None)
        if output == Format.json:
            emit_json(p.to_dict())
            return
        rows = [{"order": i + 1, "pipeline": n, "why": p.changed.get(n)} for i, n in enumerate(p.pipelines)]
        emit_rows(rows, ["order", "pipeline", "why"], output, title="pipelines to run")
        emit_rows([{"table": t} for t in p.tables], ["table"], output, title="tables affected")

    @app.command("pipelines")
    def pipelines_cmd(output: Format = OutputOpt) -> None:
        """The project's pipelines: stages, inputs, outputs, triggers, in DAG order."""
        rows = _api().describe(lake())
        emit_rows(rows, ["pipeline", "stages", "reads", "writes", "triggers", "file"], output)
