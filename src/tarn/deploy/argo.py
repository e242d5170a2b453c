"""``tarn export argo``: Argo Workflows manifests that run a project's pipelines on Kubernetes.

Emitted objects (plain dicts, ready for ``kubectl apply -f`` / ``argo template create``):

- a **ConfigMap** ``NAME-project`` with the project's files (tarn.yaml, ``pipelines/``, the SQL and schema files
  the stages name), mounted read-only at ``/project`` in every step. tarn.yaml carries the export's engine
  settings (``engine: {name: spark, master: …}``). With ``--project-pvc CLAIM`` the project comes from that
  PersistentVolumeClaim instead (mounted read-write; no ConfigMap).
- a **WorkflowTemplate** ``NAME``: entrypoint ``main``, a DAG with one task per pipeline whose dependencies are the
  pipelines it reads tables from (Tarn's DAG, :mod:`tarn.pipelines.dag`); each task runs the Tarn image with
  ``tarn --project /project run PIPELINE --output json``. Pipeline params are workflow parameters
  (``PIPELINE-PARAM``), so ``argo submit --from workflowtemplate/NAME -p daily-region=eu`` overrides them.
- a **CronWorkflow** ``NAME`` referencing the template (``workflowTemplateRef``), when a schedule is given or the
  pipelines' own cron triggers agree on one.

Secrets are never values: the metastore URL (``TARN_METASTORE_URL``), AWS credentials and every
``${secret:NAME}`` of tarn.yaml (``TARN_SECRET_NAME``) come from keys of one Kubernetes Secret via
``secretKeyRef``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from tarn.config.engine import EngineSpec
from tarn.deploy import kube
from tarn.deploy.project import configmap_data, configmap_key, local_paths, project_files, read_project
from tarn.errors import ConfigError, NotFoundError, did_you_mean
from tarn.pipelines.dag import Graph, build_graph
from tarn.pipelines.params import render
from tarn.pipelines.project import PIPELINES_DIR, load_pipelines
from tarn.pipelines.spec import CronTrigger, PipelineSpec

API_VERSION = "argoproj.io/v1alpha1"
PROJECT_MOUNT = "/project"
PROJECT_VOLUME = "project"
TARN_UID = 10001  # the Dockerfile's user
# Kubernetes Secret keys → environment variables of every step (key, variable, optional).
SECRET_ENV: tuple[tuple[str, str, bool], ...] = (
    ("metastore-url", "TARN_METASTORE_URL", False),
    ("aws-access-key-id", "AWS_ACCESS_KEY_ID", True),
    ("aws-secret-access-key", "AWS_SECRET_ACCESS_KEY", True),
    ("aws-session-token", "AWS_SESSION_TOKEN", True),
)
_SECRETISH = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
Engine = Literal["spark", "duckdb"]


@dataclass(frozen=True)
class ArgoOptions:
    """What ``tarn export argo`` takes besides the pipelines (see ``tarn export argo --help``)."""

    image: str = "tarn:latest"
    namespace: str | None = None
    name: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    engine: Engine = "spark"
    spark_master: str = "local[*]"
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    env: str | None = None  # Tarn environment (tarn run --env)
    params: Mapping[str, str] = field(default_factory=dict)  # NAME or PIPELINE.NAME → value
    env_vars: Mapping[str, str] = field(default_factory=dict)  # plain (non-secret) environment variables
    secret: str = "tarn"
    project_pvc: str | None = None
    service_account: str | None = None
    retries: int = 2
    cpu: str | None = None
    memory: str | None = None
    downstream: bool = False
    all_pipelines: bool = False


@dataclass
class ArgoExport:
    """The generated manifests and what they were built from."""

    name: str
    pipelines: list[str]  # in DAG order
    dependencies: dict[str, list[str]]  # pipeline → exported pipelines it waits for
    schedule: str | None
    timezone: str | None
    manifests: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def manifest(self, kind: str) -> dict[str, Any] | None:
        return next((m for m in self.manifests if m["kind"] == kind), None)

    def to_yaml(self) -> str:
        return kube.to_yaml_documents(self.manifests)

    def write(self, directory: Path) -> list[Path]:
        """One file per object: ``NAME.configmap.yaml``, ``NAME.workflowtemplate.yaml``, ``NAME.cronworkflow.yaml``."""
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for m in self.manifests:
            path = directory / f"{m['metadata']['name']}.{m['kind'].lower()}.yaml"
            path.write_text(kube.to_yaml(m), encoding="utf-8")
            out.append(path)
        return out


def export_argo(project_dir: Path, pipelines: Sequence[str], opts: ArgoOptions | None = None) -> ArgoExport:
    """Argo manifests running ``pipelines`` of the project in ``project_dir`` (see the module docstring)."""
    opts = opts or ArgoOptions()
    info = read_project(project_dir)
    specs = load_pipelines(project_dir)
    graph = build_graph(specs.values(), project_dir)
    order = graph.order()  # raises on a cycle
    selected = _select(pipelines, specs, graph, opts)
    names = [p for p in order if p in selected]
    deps = dependencies(graph, names)
    schedule, tz = _schedule([specs[n] for n in names], opts)
    name = kube.check_name(opts.name, "--name") if opts.name else _default_name(info.name, names)
    if opts.namespace is not None:
        kube.check_name(opts.namespace, "--namespace")
    kube.check_name(opts.secret, "--secret")
    if opts.retries < 0:
        raise ConfigError("--retries must be 0 or more", hint="0 turns retries off")
    warnings: list[str] = []
    chosen = [specs[n] for n in names]
    params = _params(chosen, opts.params, cron=schedule is not None)
    env = _env(info.secret_refs, info.required_vars, opts, warnings)

    manifests: list[dict[str, Any]] = []
    if opts.project_pvc is None:
        files, file_warnings = project_files(info, chosen)
        warnings += file_warnings + local_paths(info, chosen)
        data = configmap_data(files, engine=_engine_settings(opts, name), info=info)
        cm_name = f"{name}-project"
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _metadata(cm_name, opts, info.name),
                "data": data,
            }
        )
        volume: dict[str, Any] = {
            "name": PROJECT_VOLUME,
            "configMap": {"name": cm_name, "items": [{"key": configmap_key(r), "path": r} for r in sorted(files)]},
        }
        read_only = True
    else:
        kube.check_name(opts.project_pvc, "--project-pvc")
        volume = {"name": PROJECT_VOLUME, "persistentVolumeClaim": {"claimName": opts.project_pvc}}
        read_only = False
        if opts.engine == "spark" and "engine" not in info.doc:
            warnings.append(
                "with --project-pvc the project's own tarn.yaml sets the engine, and it has no 'engine' mapping: "
                "add 'engine: {name: spark, master: …}' to run on Spark"
            )

    templates = [_dag_template(names, deps)]
    templates += [_run_template(specs[n], opts, env, params.get(n, {}), read_only, name) for n in names]
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "arguments": {"parameters": [p for n in names for p in params.get(n, {}).values()]},
        "volumes": [volume],
        "securityContext": {"runAsNonRoot": True, "runAsUser": TARN_UID, "runAsGroup": TARN_UID, "fsGroup": TARN_UID},
        "templates": templates,
    }
    if not spec["arguments"]["parameters"]:
        del spec["arguments"]
    if opts.service_account:
        spec["serviceAccountName"] = kube.check_name(opts.service_account, "--service-account")
    manifests.append(
        {
            "apiVersion": API_VERSION,
            "kind": "WorkflowTemplate",
            "metadata": _metadata(name, opts, info.name),
            "spec": spec,
        }
    )
    if schedule is not None:
        cron: dict[str, Any] = {
            "schedules": [schedule],
            "timezone": tz or "UTC",
            "concurrencyPolicy": "Forbid",  # a run still going when the next is due: skip the next
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "workflowSpec": {"workflowTemplateRef": {"name": name}},
        }
        manifests.append(
            {
                "apiVersion": API_VERSION,
                "kind": "CronWorkflow",
                "metadata": _metadata(name, opts, info.name),
                "spec": cron,
            }
        )
    return ArgoExport(name, names, deps, schedule, (tz or "UTC") if schedule else None, manifests, warnings)


# ------------------------------------------------------------------------------------------ selection, DAG
def _select(pipelines: Sequence[str], specs: dict[str, PipelineSpec], graph: Graph, opts: ArgoOptions) -> set[str]:
    if opts.all_pipelines:
        if not specs:
            raise NotFoundError("the project has no pipelines", hint=f"pipelines are YAML files in {PIPELINES_DIR}/")
        return set(specs)
    if not pipelines:
        raise ConfigError("name the pipelines to export, or pass --all", hint="'tarn pipelines' lists them")
    for p in pipelines:
        if p not in specs:
            raise NotFoundError(
                f"no pipeline {p!r}{did_you_mean(p, specs)}",
                hint="'tarn pipelines' lists the project's pipelines (by name, not by file)",
            )
    return set(graph.downstream(pipelines)) if opts.downstream else set(pipelines)


def dependencies(graph: Graph, names: Sequence[str]) -> dict[str, list[str]]:
    """For each of ``names``: the exported pipelines it depends on, directly or through pipelines not exported
    (A → B → C with only A and C exported: C waits for A)."""
    chosen = set(names)
    out: dict[str, list[str]] = {}
    for n in names:
        found: set[str] = set()
        seen: set[str] = set()
        stack = list(graph.upstream.get(n, ()))
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u in chosen:
                found.add(u)
            else:
                stack.extend(graph.upstream.get(u, ()))
        out[n] = [p for p in names if p in found]
    return out


def _schedule(specs: list[PipelineSpec], opts: ArgoOptions) -> tuple[str | None, str | None]:
    tz = kube.check_timezone(opts.timezone) if opts.timezone else None
    if opts.schedule is not None:
        return kube.check_cron(opts.schedule), tz
    crons = {(t.schedule, t.timezone): s.name for s in specs for t in s.triggers if isinstance(t, CronTrigger)}
    if not crons:
        return None, None
    if len(crons) > 1:
        listed = ", ".join(f"{p}: '{c}' {z}" for (c, z), p in sorted(crons.items(), key=lambda kv: kv[1]))
        raise ConfigError(
            f"the pipelines' cron triggers differ ({listed}); one CronWorkflow runs them all on one schedule",
            hint="pass --schedule CRON, or export the pipelines separately",
        )
    (cron, trigger_tz), _ = next(iter(crons.items()))
    return kube.check_cron(cron), tz or kube.check_timezone(trigger_tz)


def _default_name(project: str, names: list[str]) -> str:
    return kube.default_name(["tarn", project, *(names if len(names) == 1 else [])])


# ---------------------------------------------------------------------------------------------- templates
def task_name(pipeline: str) -> str:
    """The DAG task (and, prefixed with ``run-``, template) name of a pipeline: ``daily_orders`` → ``daily-orders``."""
    return kube.dns_name(pipeline)


def parameter_name(pipeline: str, param: str) -> str:
    return f"{task_name(pipeline)}-{param}"


def _dag_template(names: list[str], deps: dict[str, list[str]]) -> dict[str, Any]:
    tasks = []
    for n in names:
        task: dict[str, Any] = {"name": task_name(n), "template": f"run-{task_name(n)}"}
        if deps[n]:
            task["dependencies"] = [task_name(d) for d in deps[n]]
        tasks.append(task)
    return {"name": "main", "dag": {"tasks": tasks}}


def _run_template(
    spec: PipelineSpec,
    opts: ArgoOptions,
    env: list[dict[str, Any]],
    params: dict[str, dict[str, Any]],
    read_only: bool,
    workflow: str,
) -> dict[str, Any]:
    args = ["--project", PROJECT_MOUNT, "run", spec.name, "--output", "json"]
    if opts.env:
        args += ["--env", opts.env]
    for param, p in params.items():
        args += ["--param", f"{param}={{{{workflow.parameters.{p['name']}}}}}"]
    container: dict[str, Any] = {
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "workingDir": "/tmp",  # engines write scratch files in the working directory; the project may be read-only
        "env": [
            {"name": "TARN_PIPELINE", "value": spec.name},
            # who ran it, in the audit log and run records: the Argo workflow (Argo fills in its name)
            {"name": "TARN_PRINCIPAL", "value": "argo:{{workflow.name}}"},
            *copy.deepcopy(env),
        ],
        "volumeMounts": [{"name": PROJECT_VOLUME, "mountPath": PROJECT_MOUNT, "readOnly": read_only}],
    }
    resources = _resources(opts)
    if resources:
        container["resources"] = resources
    template: dict[str, Any] = {
        "name": f"run-{task_name(spec.name)}",
        "metadata": {"labels": {"app.kubernetes.io/name": "tarn", "tarn/pipeline": task_name(spec.name)}},
        "container": container,
    }
    if opts.retries:
        # A failed run leaves its target tables unchanged (one commit per run), so a retry is safe.
        template["retryStrategy"] = {
            "limit": str(opts.retries),
            "retryPolicy": "OnFailure",
            "backoff": {"duration": "30s", "factor": "2", "maxDuration": "30m"},
        }
    if spec.description:
        template["metadata"]["annotations"] = {"tarn/description": spec.description}
    return template


def _resources(opts: ArgoOptions) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", opts.cpu), ("memory", opts.memory)) if v}
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if opts.memory:
        out["limits"] = {"memory": opts.memory}
    return out


def _metadata(name: str, opts: ArgoOptions, project: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": "tarn", "app.kubernetes.io/part-of": kube.dns_name(project)},
    }
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


# ------------------------------------------------------------------------------------------ params, env
def _params(specs: list[PipelineSpec], given: Mapping[str, str], *, cron: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """pipeline → param → Argo workflow parameter (``value`` from ``given`` or the pipeline's default)."""
    by_name = {s.name: s for s in specs}
    for key in given:
        pipeline, _, param = key.rpartition(".")
        if pipeline:
            if pipeline not in by_name:
                raise NotFoundError(
                    f"--param {key}: pipeline {pipeline!r} is not exported{did_you_mean(pipeline, by_name)}",
                    hint="write --param NAME=value (every exported pipeline with that param) or PIPELINE.NAME=value",
                )
            if param not in by_name[pipeline].params:
                own = list(by_name[pipeline].params)
                raise NotFoundError(
                    f"--param {key}: pipeline {pipeline!r} has no param {param!r}{did_you_mean(param, own)}",
                    hint=f"its params: {', '.join(own) or 'none'}",
                )
        elif not any(param in s.params for s in specs):
            known = sorted({k for s in specs for k in s.params})
            raise NotFoundError(
                f"--param {key}: no exported pipeline has a param {param!r}{did_you_mean(param, known)}",
                hint=f"their params: {', '.join(known) or 'none'}",
            )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s in specs:
        for param, default in s.params.items():
            value = given.get(f"{s.name}.{param}", given.get(param))
            if value is None and default is not None:
                value = render(default)
            p: dict[str, Any] = {"name": parameter_name(s.name, param)}
            if value is not None:
                p["value"] = value
            elif cron:
                raise ConfigError(
                    f"pipeline {s.name!r} needs param {param!r} (it has no default) and a scheduled run has no one "
                    "to ask",
                    hint=f"pass --param {s.name}.{param}=VALUE",
                )
            p["description"] = f"param {param} of pipeline {s.name}"
            out.setdefault(s.name, {})[param] = p
    return out


def _engine_settings(opts: ArgoOptions, workflow: str) -> dict[str, Any]:
    """The ``engine`` mapping written into the shipped tarn.yaml."""
    if opts.engine == "duckdb":
        return {"name": "duckdb"}
    conf = dict(opts.spark_conf)
    if opts.spark_master.startswith("k8s://"):
        # Client mode: the driver is the step's pod; executors are pods of the same image. POD_IP and
        # POD_NAMESPACE come from the downward API (see _env) and are substituted when Tarn loads tarn.yaml.
        conf.setdefault("spark.kubernetes.container.image", opts.image)
        conf.setdefault("spark.kubernetes.namespace", "${POD_NAMESPACE}")
        conf.setdefault("spark.driver.host", "${POD_IP}")
        conf.setdefault("spark.kubernetes.executor.podNamePrefix", workflow)
        if opts.service_account:
            conf.setdefault("spark.kubernetes.authenticate.driver.serviceAccountName", opts.service_account)
    out: dict[str, Any] = {"name": "spark", "master": opts.spark_master}
    if conf:
        out["conf"] = conf
    try:  # what the pod will load: fail here, not in the cluster
        EngineSpec.model_validate(out)
    except ValidationError as e:
        msg = "; ".join(str(err["msg"]) for err in e.errors())
        raise ConfigError(
            f"--spark-master / --spark-conf: {msg}", hint="e.g. --spark-master 'local[4]' or spark://host:7077"
        ) from None
    return out


def _env(
    secret_refs: list[str], required_vars: list[str], opts: ArgoOptions, warnings: list[str]
) -> list[dict[str, Any]]:
    def secret(var: str, key: str, optional: bool) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": opts.secret, "key": key}
        if optional:
            ref["optional"] = True
        return {"name": var, "valueFrom": {"secretKeyRef": ref}}

    env = [secret(var, key, optional) for key, var, optional in SECRET_ENV]
    managed = {var for _, var, _ in SECRET_ENV}
    for name in secret_refs:
        env.append(secret(f"TARN_SECRET_{name}", name, False))
        managed.add(f"TARN_SECRET_{name}")
    env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    env.append({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    for var, value in opts.env_vars.items():
        kube.check_env_name(var)
        if var in managed or _SECRETISH.search(var):
            raise ConfigError(
                f"--env-var {var}: secrets are not written into manifests",
                hint=f"put it in the Kubernetes Secret {opts.secret!r}; steps read it with a secretKeyRef",
            )
        env.append({"name": var, "value": value})
    for var in required_vars:
        if var not in opts.env_vars and var not in ("POD_IP", "POD_NAMESPACE"):
            warnings.append(
                f"tarn.yaml uses ${{{var}}} without a default: pass --env-var {var}=VALUE, or give it a default"
            )
    return env
