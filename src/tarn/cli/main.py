"""The ``tarn`` command: a thin layer over :class:`tarn.lake.Lake`."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from tarn.cli.output import Format, console, emit_json, emit_rows, err_console, kv, when
from tarn.config.loader import find_project_dir
from tarn.errors import TarnError
from tarn.lake import Lake, arrow_to_rows

app = typer.Typer(
    name="tarn",
    help="Tarn: an event-driven data lake with declarative, quality-aware SQL pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
objects_app = typer.Typer(help="Landed objects and their states.", invoke_without_command=True)
tables_app = typer.Typer(help="Tables of the lake, their schema versions and history.", invoke_without_command=True)
dlq_app = typer.Typer(help="The dead-letter queue: inspect and redrive.", no_args_is_help=True)
app.add_typer(objects_app, name="objects")
app.add_typer(tables_app, name="tables")
app.add_typer(dlq_app, name="dlq")

_state: dict[str, Any] = {"project": None, "debug": False}
T = TypeVar("T")

OutputOpt = typer.Option(Format.table, "--output", "-o", help="table, json or csv")


@app.callback()
def _main(
    project: Path | None = typer.Option(
        None, "--project", "-p", envvar="TARN_PROJECT", help="project folder (default: nearest with tarn.yaml)"
    ),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks and debug logs"),
) -> None:
    _state["project"] = project
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def lake() -> Lake:
    if "lake" not in _state:
        project = _state["project"] or find_project_dir(Path.cwd())
        lk = Lake(Path(project))
        _state["lake"] = lk
        if lk.secrets.values:
            for h in logging.getLogger().handlers:
                h.addFilter(_RedactSecrets(lk))
    result: Lake = _state["lake"]
    return result


class _RedactSecrets(logging.Filter):
    """Secret values never reach the logs."""

    def __init__(self, lk: Lake) -> None:
        super().__init__()
        self.lk = lk

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.lk.secrets.redact(record.getMessage())
        record.args = None
        return True


# After SIGTERM/SIGINT, the graceful stop is bounded by ingest.shutdown_grace_seconds; if the process is
# still alive this long after that, every thread's stack goes to stderr and the process exits (code 1).
# Nothing is lost by it: a message still held comes back when its visibility timeout expires.
HARD_EXIT_AFTER_GRACE_SECONDS = 30.0


def _stop_event(grace_seconds: float) -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        err_console.print(Text(f"{signal.Signals(signum).name}: finishing in-flight work…", style="yellow"))
        if not stop.is_set():
            faulthandler.dump_traceback_later(grace_seconds + HARD_EXIT_AFTER_GRACE_SECONDS, exit=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _exit_after_stop(code: int = 0) -> None:
    """End ``up``/``worker`` after a graceful stop. A worker thread still inside a file past the grace
    period (its message was released) is a daemon thread in native code (DuckDB, delta-rs); finalizing the
    interpreter around such a thread is unsafe (CPython's documentation warns of daemon threads at
    shutdown), so then the process exits at once, after flushing its output. Otherwise: a normal exit."""
    faulthandler.cancel_dump_traceback_later()
    if any(t.is_alive() and t.name.startswith("tarn-worker") for t in threading.enumerate()):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


# --------------------------------------------------------------------------- project
@app.command()
def init(directory: Path = typer.Argument(..., help="folder for the new project")) -> None:
    """Create a project: tarn.yaml, the lake's zones and the metastore."""
    lk = Lake.init(directory)
    console.print(f"created project {lk.spec.name} in {lk.dir}")
    console.print(f"  lake root: {lk.storage.root}  (zones: landing raw stage analytics quarantine)")
    console.print(f"  drop files into {lk.storage.landing_uri('events')}/ and run 'tarn up'")


@app.command()
def schema() -> None:
    """Print the JSON Schema of tarn.yaml (for editors and CI)."""
    emit_json(Lake.json_schema())


@app.command()
def demo(
    directory: Path | None = typer.Option(None, "--dir", help="where to create the demo project (default: temp)"),
    keep: bool = typer.Option(False, "--keep", help="keep the demo project afterwards"),
) -> None:
    """Run Tarn end to end on generated data: files land while 'up' runs; then show what happened."""
    from tarn.demo.run import run_demo

    run_demo(directory, keep=keep, console=console)


# ---------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    files: list[Path] = typer.Argument(..., help="files to ingest", exists=False),
    dataset: str = typer.Option(..., "--dataset", "-d", help="dataset the files belong to"),
    output: Format = OutputOpt,
) -> None:
    """Register files (copied into raw/) and process them now, in this process."""
    lk = lake()
    missing = [str(f) for f in files if not f.exists() and not f.is_symlink()]
    if missing:
        raise TarnError(f"no such file: {', '.join(missing)}", hint="check the paths")
    with Progress(
        TextColumn("ingest {task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=output != Format.table or not err_console.is_terminal,
    ) as progress:
        task = progress.add_task(dataset, total=len(files))
        results = lk.ingest(files, dataset, progress=lambda f, r: progress.advance(task))
    rows = []
    for f, reg, state in results:
        obj = lk.object(reg.object_id) if reg.object_id else None
        rows.append(
            {
                "file": str(f),
                "object": reg.object_id,
                "state": state,
                "rows": obj.rows_committed if obj else None,
                "quarantined": obj.rows_quarantined if obj else None,
                "error": obj.error if obj and state not in ("committed", "committed_with_quarantine") else None,
            }
        )
    emit_rows(
        rows,
        ["object", "file", "state", "rows", "quarantined", "error"],
        output,
        below="error",
        below_title=" (each in full: tarn objects show OBJECT)",
    )
    if any(r["state"] in ("failed", "dead_lettered", "rejected") for r in rows):
        raise typer.Exit(1)


@app.command()
def up(
    workers: int | None = typer.Option(None, "--workers", "-w", help="worker threads"),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="serve Prometheus metrics over HTTP on this port (GET /metrics; 0: any free port)"
    ),
    metrics_addr: str = typer.Option("0.0.0.0", "--metrics-addr", help="address the metrics endpoint listens on"),
) -> None:
    """Watch the landing zone and process files until SIGINT/SIGTERM."""
    lk = lake()
    stop = _stop_event(lk.spec.ingest.shutdown_grace_seconds)
    n = workers or lk.spec.ingest.workers
    if metrics_port is not None:
        from tarn.orchestrator.metrics import MetricsServer

        server = MetricsServer(lk.meta, "ingest", metrics_port, metrics_addr)
        console.print(f"metrics at {server.url}")

    def done(object_id: str, state: str) -> None:
        obj = lk.object(object_id)
        console.print(
            f"{when(obj.updated_at)} {obj.dataset}/{Path(obj.landing_path).name} → {state}"
            + (
                f" ({obj.rows_committed} rows, {obj.rows_quarantined} quarantined)"
                if obj.rows_committed is not None
                else ""
            )
        )

    console.print(f"watching {lk.storage.landing_uri('')} with {n} workers (Ctrl-C to stop)")
    lk.up(stop, workers=n, on_done=done)
    console.print("stopped")
    _exit_after_stop()


@app.command()
def worker(
    workers: int | None = typer.Option(None, "--workers", "-w", help="worker threads"),
    until_idle: bool = typer.Option(False, "--until-idle", help="exit when the queue has nothing visible"),
) -> None:
    """Process queued messages (no watcher) until SIGINT/SIGTERM."""
    lk = lake()
    stop = _stop_event(lk.spec.ingest.shutdown_grace_seconds)
    console.print(f"worker started: {workers or lk.spec.ingest.workers} threads on the ingest queue")
    n = lk.run_worker(stop, workers=workers, until_idle=until_idle)
    console.print(f"processed {n} messages")
    _exit_after_stop()


# ---------------------------------------------------------------------------- status
@app.command()
def status(output: Format = OutputOpt) -> None:
    """Objects by state, queue depth, DLQ size."""
    s = lake().status()
    if output == Format.json:
        emit_json(s.to_dict())
        return
    rows = [{"state": k, "objects": v} for k, v in sorted(s.objects.items())]
    emit_rows(rows, ["state", "objects"], output, title="objects")
    kv("queue", {"ready": s.queue["ready"], "in flight": s.queue["inflight"], "dead-letter (DLQ)": s.queue["dead"]})


@objects_app.callback()
def objects_list(
    ctx: typer.Context,
    state: str | None = typer.Option(None, "--state", help="only objects in this state"),
    dataset: str | None = typer.Option(None, "--dataset", "-d"),
    limit: int = typer.Option(100, "--limit"),
    output: Format = OutputOpt,
) -> None:
    """List objects, newest first."""
    if ctx.invoked_subcommand:
        return
    objs = lake().objects(state=state, dataset=dataset, limit=limit)
    rows = [
        {
            **o.to_dict(),
            "arrived": when(o.arrived_at),
            "file": Path(o.landing_path).name,
            # short headers in a table keep the id column whole in an 80-column terminal
            "rows": o.rows_committed,
            "quarantined": o.rows_quarantined,
        }
        for o in objs
    ]
    cols = ["id", "dataset", "file", "state", "rows", "quarantined", "arrived", "error"]
    if output == Format.csv:
        cols = ["id", "dataset", "file", "state", "rows_committed", "rows_quarantined", "arrived", "error"]
    emit_rows(
        rows if output != Format.json else [o.to_dict() for o in objs],
        cols if output != Format.json else list(objs[0].to_dict()) if objs else cols,
        output,
        below="error",
        below_title=" (each in full, with its trail: tarn objects show ID)",
    )


@objects_app.command("show")
def objects_show(object_id: str, output: Format = OutputOpt) -> None:
    """One object: its record, its state trail and its queue message."""
    d = lake().object_detail(object_id)
    if output == Format.json:
        emit_json(d)
        return
    events = d.pop("events")
    msg = d.pop("message")
    kv(f"object {d['id']}", {**d, "arrived_at": when(d["arrived_at"]), "updated_at": when(d["updated_at"])})
    emit_rows([{**e, "at": when(e["at"])} for e in events], ["at", "state", "message"], output, title="trail")
    if msg:
        kv("queue message", {k: msg[k] for k in ("id", "state", "receive_count", "last_error")})


@tables_app.callback()
def tables_list(ctx: typer.Context, output: Format = OutputOpt) -> None:
    """List tables with row counts and schema versions."""
    if ctx.invoked_subcommand:
        return
    rows = [{**t, "updated": when(t["updated_at"])} for t in lake().tables()]
    emit_rows(rows, ["name", "rows", "schema_version", "delta_version", "updated", "location"], output)


@tables_app.command("show")
def tables_show(name: str, output: Format = OutputOpt) -> None:
    """One table: columns, schema versions, Delta history."""
    t = lake().table(name)
    if output == Format.json:
        emit_json(t)
        return
    kv(t["name"], {"location": t["location"], "rows": t["rows"], "schema version": t["schema_version"]})
    emit_rows(t["columns"] or [], ["name", "type", "nullable"], output, title="columns")
    emit_rows(
        [{**v, "created": when(v["created_at"])} for v in t["schema_versions"]],
        ["version", "created", "change", "object_id", "delta_version"],
        output,
        title="schema versions",
    )
    emit_rows(
        [
            {
                "version": h.get("version"),
                "operation": h.get("operation"),
                "rows added": (h.get("operationMetrics") or {}).get(
                    "num_added_rows", (h.get("operationMetrics") or {}).get("num_target_rows_inserted")
                ),
                "object": h.get("tarn.object_id"),
            }
            for h in t["history"]
        ],
        ["version", "operation", "rows added", "object"],
        output,
        title="Delta history",
    )


@app.command()
def query(
    sql: str = typer.Argument(..., help="SQL over zone.table names, e.g. SELECT * FROM stage.orders"),
    output: Format = OutputOpt,
    limit: int | None = typer.Option(None, "--limit", help="at most this many rows"),
) -> None:
    """Run SQL (DuckDB) over every table of the lake."""
    res = lake().query(sql, limit=limit)
    rows = arrow_to_rows(res.table) if output == Format.json else res.table.to_pylist()
    emit_rows(rows, res.table.column_names, output)


@app.command()
def metrics() -> None:
    """Queue depth, DLQ size, retries, ingest lag and row counters (Prometheus text format)."""
    sys.stdout.write(lake().metrics())


# ------------------------------------------------------------------------------- DLQ
@dlq_app.command("list")
def dlq_list(output: Format = OutputOpt) -> None:
    """Messages in the dead-letter queue."""
    lk = lake()
    rows = []
    for m in lk.dlq():
        obj = lk.object(m.object_id) if m.object_id else None
        rows.append(
            {
                "message": m.id,
                "object": m.object_id,
                "dataset": obj.dataset if obj else None,
                "file": Path(obj.landing_path).name if obj else None,
                "receives": m.receive_count,
                "dead_at": when(m.dead_at),
                "error": m.last_error,
            }
        )
    emit_rows(
        rows,
        ["message", "object", "dataset", "file", "receives", "dead_at", "error"],
        output,
        below="error",
        below_title=" (each in full, with its trail: tarn dlq show MESSAGE)",
    )


@dlq_app.command("show")
def dlq_show(message_id: int, output: Format = OutputOpt) -> None:
    """A dead-lettered message with its object's full error trail."""
    d = lake().dlq_show(message_id)
    if output == Format.json:
        emit_json(d)
        return
    kv(f"message {message_id}", d["message"])
    obj = d.get("object")
    if obj:
        emit_rows(
            [{**e, "at": when(e["at"])} for e in obj["events"]], ["at", "state", "message"], output, title="trail"
        )


@dlq_app.command("redrive")
def dlq_redrive(
    message_ids: list[int] = typer.Argument(None, help="message ids (or use --all / a filter)"),
    all_: bool = typer.Option(False, "--all", help="redrive every dead-lettered message"),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="only this dataset's messages"),
    error: str | None = typer.Option(None, "--error", help="only messages whose error contains this text"),
) -> None:
    """Put dead-lettered messages back on the queue (after fixing the cause)."""
    if not message_ids and not all_ and dataset is None and error is None:
        raise TarnError(
            "name the messages to redrive, or pass --all, --dataset or --error", hint="'tarn dlq list' shows them"
        )
    ids = lake().redrive(list(message_ids) if message_ids else None, dataset=dataset, error_contains=error)
    console.print(f"redriven: {', '.join(map(str, ids))} — a running 'tarn up' / 'tarn worker' picks them up")


@dlq_app.command("purge")
def dlq_purge(message_ids: list[int] = typer.Argument(..., help="message ids to delete for good")) -> None:
    """Delete dead-lettered messages (their objects stay dead_lettered; the raw copy is kept)."""
    ids = lake().purge(list(message_ids))
    console.print(f"purged: {', '.join(map(str, ids))}")


from tarn.cli.export import export_app  # noqa: E402
from tarn.cli.maintain import register as register_maintain_command  # noqa: E402
from tarn.cli.pipelines import register as register_pipeline_commands  # noqa: E402

register_pipeline_commands(app, lake)
register_maintain_command(app, lake)
app.add_typer(export_app, name="export")


# ------------------------------------------------------------------------------ entry
def _run(fn: Callable[[], T]) -> int:
    try:
        result = fn()
        return result if isinstance(result, int) else 0
    except TarnError as e:
        if _state.get("debug"):
            traceback.print_exc()
        lk = _state.get("lake")
        text = lk.secrets.redact(str(e)) if lk else str(e)
        err_console.print(Text("error: ", style="red") + Text(text), highlight=False)
        return 1
    except typer.Exit as e:
        return int(e.exit_code)
    except KeyboardInterrupt:
        return 130


def main() -> None:
    def call() -> Any:
        # standalone_mode=False: click returns typer.Exit's code instead of raising it.
        return app(standalone_mode=False)

    try:
        code = _run(call)
    except SystemExit as e:  # click's own usage errors
        code = int(e.code or 0) if isinstance(e.code, int) else 1
    except Exception as e:  # click.UsageError and friends
        import click

        if isinstance(e, click.ClickException):
            e.show()
            code = e.exit_code
        else:
            raise
    finally:
        lk = _state.pop("lake", None)
        if lk is not None:
            lk.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without running native libraries' static destructors: DuckDB, delta-rs and Arrow
    # thread pools can race there and abort a process that did everything right.
    os._exit(code)
