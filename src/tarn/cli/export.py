"""``tarn export argo``: Argo Workflows manifests for the project's pipelines (see :mod:`tarn.deploy.argo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from tarn.cli.output import console, err_console
from tarn.config.loader import find_project_dir
from tarn.errors import ConfigError

export_app = typer.Typer(help="Export the project's pipelines for other schedulers.", no_args_is_help=True)


def _pairs(items: list[str], option: str, example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r} must be NAME=VALUE", hint=f"e.g. {option} {example}")
        out[key.strip()] = value
    return out


@export_app.command("argo")
def argo(
    ctx: typer.Context,
    pipelines: list[str] = typer.Argument(None, help="pipelines to run (by name), in one DAG"),
    all_: bool = typer.Option(False, "--all", help="every pipeline of the project"),
    downstream: bool = typer.Option(False, "--downstream", help="also every pipeline downstream of those named"),
    schedule: str | None = typer.Option(
        None, "--schedule", help="cron schedule of a CronWorkflow (default: the pipelines' cron trigger, if any)"
    ),
    timezone: str | None = typer.Option(None, "--timezone", help="time zone of the schedule (default: UTC)"),
    image: str = typer.Option("tarn:latest", "--image", help="the Tarn image (see the Dockerfile)"),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Kubernetes namespace of the objects"),
    name: str | None = typer.Option(
        None, "--name", help="WorkflowTemplate / CronWorkflow name (default: tarn-PROJECT[-PIPELINE])"
    ),
    engine: str = typer.Option("spark", "--engine", help="spark or duckdb"),
    spark_master: str = typer.Option(
        "local[*]", "--spark-master", help="local[N] (in the step's pod), spark://…, sc://… or k8s://https://…"
    ),
    spark_conf: list[str] = typer.Option([], "--spark-conf", help="Spark setting KEY=VALUE (repeatable)"),
    env: str | None = typer.Option(None, "--env", "-e", help="Tarn environment for every run (tarn run --env)"),
    param: list[str] = typer.Option([], "--param", "-P", help="NAME=VALUE or PIPELINE.NAME=VALUE (repeatable)"),
    env_var: list[str] = typer.Option([], "--env-var", help="plain environment variable NAME=VALUE (not a secret)"),
    secret: str = typer.Option("tarn", "--secret", help="Kubernetes Secret holding metastore-url, AWS keys, …"),
    project_pvc: str | None = typer.Option(
        None, "--project-pvc", help="mount the project from this PersistentVolumeClaim instead of a ConfigMap"
    ),
    service_account: str | None = typer.Option(None, "--service-account", help="service account of the pods"),
    retries: int = typer.Option(2, "--retries", help="retries of a failed pipeline step (with backoff)"),
    cpu: str | None = typer.Option(None, "--cpu", help="CPU request of each step, e.g. 2"),
    memory: str | None = typer.Option(None, "--memory", help="memory request and limit of each step, e.g. 8Gi"),
    out: str = typer.Option("-", "--out", "-o", help="folder to write the manifests to, or - for stdout"),
) -> None:
    """Argo WorkflowTemplate (+ CronWorkflow, + ConfigMap with the project) running pipelines with Spark."""
    from tarn.deploy.argo import ArgoOptions, export_argo

    if engine not in ("spark", "duckdb"):
        raise ConfigError(f"--engine {engine!r} is not an engine", hint="use spark or duckdb")
    root = ctx.find_root().params.get("project")
    project = Path(root) if root else find_project_dir(Path.cwd())
    opts = ArgoOptions(
        image=image,
        namespace=namespace,
        name=name,
        schedule=schedule,
        timezone=timezone,
        engine="spark" if engine == "spark" else "duckdb",
        spark_master=spark_master,
        spark_conf=_pairs(spark_conf, "--spark-conf", "spark.executor.memory=4g"),
        env=env,
        params=_pairs(param, "--param", "daily.region=eu"),
        env_vars=_pairs(env_var, "--env-var", "AWS_REGION=eu-west-1"),
        secret=secret,
        project_pvc=project_pvc,
        service_account=service_account,
        retries=retries,
        cpu=cpu,
        memory=memory,
        downstream=downstream,
        all_pipelines=all_,
    )
    result = export_argo(project, list(pipelines or []), opts)
    for w in result.warnings:
        err_console.print(f"warning: {w}", highlight=False)
    if out == "-":
        typer.echo(result.to_yaml(), nl=False)
        return
    for path in result.write(Path(out)):
        console.print(f"wrote {path}")
    console.print(f"apply with: kubectl apply -f {out}" + (f" -n {namespace}" if namespace else ""))
