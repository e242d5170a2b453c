"""``tarn export argo``: manifests for the example pipelines, validated against Argo's and Kubernetes' schemas
(see conftest), with DAG edges, schedules, params and secrets checked against the project."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
import yaml
from cronsim import CronSim
from tests.deploy.conftest import chain, validate_all, validate_argo

from tarn.config.loader import parse_project
from tarn.deploy import ArgoOptions, export_argo
from tarn.deploy.argo import SECRET_ENV
from tarn.errors import ConfigError, NotFoundError
from tarn.pipelines.dag import build_graph
from tarn.pipelines.project import load_pipelines

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project


def _tasks(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    wt = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    main = next(t for t in wt["spec"]["templates"] if t["name"] == wt["spec"]["entrypoint"])
    return {t["name"]: t.get("dependencies", []) for t in main["dag"]["tasks"]}


def _template(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    wt = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    return next(t for t in wt["spec"]["templates"] if t["name"] == name)


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def test_dag_of_the_example_pipelines_is_valid_and_follows_dependencies(project: Project, docs_of: Any) -> None:
    chain(project)
    result = export_argo(project.dir, ["report", "weekly", "daily"], ArgoOptions(image="registry.example/tarn:1.0"))
    docs = docs_of(result)
    assert [d["kind"] for d in docs] == ["ConfigMap", "WorkflowTemplate"]  # no schedule: no CronWorkflow
    validate_all(docs)
    # the DAG's edges are exactly the pipelines' dependencies (the tables each reads / writes)
    graph = build_graph(load_pipelines(project.dir).values(), project.dir)
    assert result.pipelines == graph.order() == ["daily", "weekly", "report"]
    tasks = _tasks(docs)
    assert {t: set(deps) for t, deps in tasks.items()} == {n: graph.upstream[n] for n in graph.order()}
    assert tasks == {"daily": [], "weekly": ["daily"], "report": ["daily", "weekly"]}
    # each step runs `tarn run PIPELINE` in the image, on the project mounted from the ConfigMap
    for name in ("daily", "weekly", "report"):
        c = _template(docs, f"run-{name}")["container"]
        assert c["image"] == "registry.example/tarn:1.0"
        assert c["args"][:4] == ["--project", "/project", "run", name]
        assert c["volumeMounts"] == [{"name": "project", "mountPath": "/project", "readOnly": True}]
        assert {"name": "TARN_PRINCIPAL", "value": "argo:{{workflow.name}}"} in c["env"]  # the audit log's principal
    wt = _kind(docs, "WorkflowTemplate")
    assert wt["metadata"]["name"] == result.name == "tarn-test-lake"
    assert wt["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_mounted_configmap_is_the_same_project(project: Project, docs_of: Any, tmp_path: Path) -> None:
    """Lay the ConfigMap's items out as the kubelet would: the pipelines, their DAG and SQL files load there."""
    chain(project)
    project.file("pipelines/sql/top.sql", "SELECT * FROM analytics.daily ORDER BY n DESC LIMIT ${k}\n")
    project.file("schemas/orders.yaml", "- {name: id, type: int64}\n")
    project.pipeline(
        {
            "name": "top",
            "params": {"k": 3},
            "stages": [
                {"type": "sql", "name": "t", "sql_file": "sql/top.sql", "output": "t"},
                {"type": "typing", "name": "ty", "input": "t", "schema_file": "../schemas/orders.yaml", "output": "u"},
                {"type": "load", "name": "save", "input": "u", "table": "analytics.top", "mode": "overwrite"},
            ],
        }
    )
    result = export_argo(project.dir, ["top", "daily"], ArgoOptions(spark_master="spark://master:7077"))
    docs = docs_of(result)
    validate_all(docs)
    cm = _kind(docs, "ConfigMap")
    volume = _kind(docs, "WorkflowTemplate")["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    mounted = tmp_path / "mounted"
    for item in volume["configMap"]["items"]:
        (mounted / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (mounted / item["path"]).write_text(cm["data"][item["key"]])
    paths = sorted(i["path"] for i in volume["configMap"]["items"])
    assert "schemas/orders.yaml" in paths and "pipelines/sql/top.sql" in paths and "tarn.yaml" in paths
    assert not any(p.startswith(("lake/", ".tarn/")) for p in paths)  # state and data stay out
    shipped = load_pipelines(mounted)
    assert set(shipped) == set(load_pipelines(project.dir))
    g = build_graph(shipped.values(), mounted)
    assert g.upstream["top"] == {"daily"} and _tasks(docs) == {"daily": [], "top": ["daily"]}
    # tarn.yaml carries the engine settings of the export
    doc = yaml.safe_load((mounted / "tarn.yaml").read_text())
    assert doc["engine"] == {"name": "spark", "master": "spark://master:7077"}
    assert doc["name"] == "test_lake" and doc["lake"] == {"root": "lake"}
    spec, _ = parse_project((mounted / "tarn.yaml").read_text(), where="tarn.yaml", env={})
    assert spec.engine.name == "spark" and spec.engine.master == "spark://master:7077"
    # the local lake root and nothing read by relative path: one warning, for the lake root
    assert [w for w in result.warnings if "lake.root" in w]


def test_subset_waits_through_pipelines_not_exported_and_downstream(project: Project, docs_of: Any) -> None:
    chain(project)
    docs = docs_of(export_argo(project.dir, ["report", "daily"]))
    validate_all(docs)
    assert _tasks(docs) == {"daily": [], "report": ["daily"]}  # report → weekly → daily: waits for daily
    result = export_argo(project.dir, ["weekly"], ArgoOptions(downstream=True))
    assert result.pipelines == ["weekly", "report"] and result.dependencies == {"weekly": [], "report": ["weekly"]}
    assert result.name == "tarn-test-lake"
    assert export_argo(project.dir, ["weekly"]).name == "tarn-test-lake-weekly"
    assert export_argo(project.dir, [], ArgoOptions(all_pipelines=True)).pipelines == ["daily", "weekly", "report"]


def _cron_pipeline(project: Project, name: str, schedule: str, tz: str = "UTC", **params: Any) -> None:
    project.pipeline(
        {
            "name": name,
            "params": params,
            "triggers": [{"type": "cron", "schedule": schedule, "timezone": tz}],
            "stages": [
                {"type": "log", "name": "l", "sql": "SELECT 1 AS one" + "".join(f", '${{{p}}}'" for p in params)}
            ],
        }
    )


def test_cron_workflow_from_the_pipelines_trigger_or_the_option(project: Project, docs_of: Any) -> None:
    chain(project)
    _cron_pipeline(project, "nightly", "30 2 * * *", "Europe/Amsterdam")
    result = export_argo(project.dir, ["nightly", "daily"], ArgoOptions(namespace="data"))
    docs = docs_of(result)
    assert [d["kind"] for d in docs] == ["ConfigMap", "WorkflowTemplate", "CronWorkflow"]
    validate_all(docs)
    cron = _kind(docs, "CronWorkflow")
    assert cron["spec"]["schedules"] == ["30 2 * * *"] and cron["spec"]["timezone"] == "Europe/Amsterdam"
    assert cron["spec"]["workflowSpec"] == {"workflowTemplateRef": {"name": result.name}}
    assert all(d["metadata"]["namespace"] == "data" for d in docs)
    for s in cron["spec"]["schedules"]:  # a real cron expression: it has a next firing
        assert next(CronSim(s, datetime(2024, 1, 1, tzinfo=UTC))) == datetime(2024, 1, 1, 2, 30, tzinfo=UTC)
    # --schedule wins over the trigger; descriptors pass through
    docs = docs_of(export_argo(project.dir, ["daily"], ArgoOptions(schedule="*/15 6-18 * * MON-FRI")))
    validate_all(docs)
    assert _kind(docs, "CronWorkflow")["spec"]["schedules"] == ["*/15 6-18 * * MON-FRI"]
    assert _kind(docs, "CronWorkflow")["spec"]["timezone"] == "UTC"
    assert export_argo(project.dir, ["daily"], ArgoOptions(schedule="@daily")).schedule == "@daily"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 2 * *", "must have 5 fields"),
        ("61 * * * *", "is not valid"),
        ("0 2 L * *", "not supported by Argo"),
        ("@dayly", "did you mean '@daily'"),
    ],
)
def test_bad_schedule_is_a_clear_error(project: Project, schedule: str, message: str) -> None:
    chain(project)
    with pytest.raises(ConfigError, match=message) as e:
        export_argo(project.dir, ["daily"], ArgoOptions(schedule=schedule))
    assert e.value.hint


def test_schedule_conflicts_and_missing_params_are_errors(project: Project) -> None:
    chain(project)
    _cron_pipeline(project, "a", "0 1 * * *")
    _cron_pipeline(project, "b", "0 3 * * *")
    with pytest.raises(ConfigError, match="cron triggers differ") as e:
        export_argo(project.dir, ["a", "b"])
    assert "--schedule" in (e.value.hint or "")
    assert export_argo(project.dir, ["a", "b"], ArgoOptions(schedule="0 4 * * *")).schedule == "0 4 * * *"
    with pytest.raises(ConfigError, match="unknown time zone"):
        export_argo(project.dir, ["a"], ArgoOptions(timezone="Mars/Olympus"))
    # a required param: fine for a template (given at submit time), an error for a schedule
    _cron_pipeline(project, "needs", "0 5 * * *", region=None)
    with pytest.raises(ConfigError, match="needs param 'region'") as e:
        export_argo(project.dir, ["needs"])
    assert e.value.hint == "pass --param needs.region=VALUE"
    result = export_argo(project.dir, ["needs"], ArgoOptions(params={"needs.region": "eu"}))
    assert result.schedule == "0 5 * * *"


def test_pipeline_params_become_workflow_parameters(project: Project, docs_of: Any) -> None:
    _cron_pipeline(project, "p1", "0 1 * * *", region=None, limit=10, strict=True)
    _cron_pipeline(project, "p2", "0 1 * * *", region="us")
    docs = docs_of(export_argo(project.dir, ["p1", "p2"], ArgoOptions(params={"region": "eu", "p2.region": "ap"})))
    validate_all(docs)
    params = {p["name"]: p.get("value") for p in _kind(docs, "WorkflowTemplate")["spec"]["arguments"]["parameters"]}
    assert params == {"p1-region": "eu", "p1-limit": "10", "p1-strict": "true", "p2-region": "ap"}
    args = _template(docs, "run-p1")["container"]["args"]
    assert "region={{workflow.parameters.p1-region}}" in args and "limit={{workflow.parameters.p1-limit}}" in args
    with pytest.raises(NotFoundError, match="no param 'regoin' \\(did you mean 'region'\\?\\)"):
        export_argo(project.dir, ["p1"], ArgoOptions(params={"p1.regoin": "x"}))
    with pytest.raises(NotFoundError, match="no exported pipeline has a param 'zone'"):
        export_argo(project.dir, ["p1"], ArgoOptions(params={"zone": "x"}))
    with pytest.raises(NotFoundError, match="pipeline 'p3' is not exported"):
        export_argo(project.dir, ["p1"], ArgoOptions(params={"p3.region": "x"}))


def test_secrets_are_references_never_values(project: Project, docs_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    chain(project)
    secret_values = ["postgresql+psycopg://tarn:hunter2@db/tarn", "AKIAEXAMPLEKEY", "s3cr3t-v4lue"]
    (project.dir / "tarn.yaml").write_text(
        "name: test_lake\nlake: {root: 's3://bucket/lake'}\nmetastore: {url: '${secret:METASTORE_URL}'}\ndatasets: []\n"
    )
    monkeypatch.setenv("TARN_SECRET_METASTORE_URL", secret_values[0])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", secret_values[1])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_values[2])
    result = export_argo(
        project.dir,
        ["daily", "weekly"],
        ArgoOptions(secret="lake-credentials", env_vars={"AWS_REGION": "eu-west-1"}),
    )
    text = result.to_yaml()
    assert not any(v in text for v in secret_values)
    docs = docs_of(result)
    validate_all(docs)
    assert not result.warnings  # an s3:// root and no relative paths: nothing local
    for name in ("run-daily", "run-weekly"):
        env = {e["name"]: e for e in _template(docs, name)["container"]["env"]}
        for key, var, optional in SECRET_ENV:
            assert env[var] == {
                "name": var,
                "valueFrom": {
                    "secretKeyRef": {"name": "lake-credentials", "key": key, **({"optional": True} if optional else {})}
                },
            }
        assert env["TARN_SECRET_METASTORE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "lake-credentials",
            "key": "METASTORE_URL",
        }
        for var, e in env.items():  # anything that looks like a credential is a reference
            if any(w in var for w in ("SECRET", "KEY", "TOKEN", "PASSWORD", "METASTORE")):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], var
        assert env["AWS_REGION"] == {"name": "AWS_REGION", "value": "eu-west-1"}
    # the shipped tarn.yaml keeps the reference, not the value
    assert "${secret:METASTORE_URL}" in _kind(docs, "ConfigMap")["data"]["tarn.yaml"]
    for var in ("AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "TARN_METASTORE_URL"):
        with pytest.raises(ConfigError, match="secrets are not written into manifests") as e:
            export_argo(project.dir, ["daily"], ArgoOptions(env_vars={var: "x"}))
        assert "Kubernetes Secret 'tarn'" in (e.value.hint or "")


def test_spark_on_kubernetes_and_project_volume(project: Project, docs_of: Any) -> None:
    chain(project)
    opts = ArgoOptions(
        spark_master="k8s://https://kubernetes.default.svc",
        spark_conf={"spark.executor.instances": "4"},
        service_account="tarn-spark",
        image="tarn:2",
        cpu="2",
        memory="8Gi",
        retries=0,
        env="prod",
    )
    docs = docs_of(export_argo(project.dir, ["daily"], opts))
    validate_all(docs)
    conf = yaml.safe_load(_kind(docs, "ConfigMap")["data"]["tarn.yaml"])["engine"]["conf"]
    assert conf["spark.executor.instances"] == "4"
    assert conf["spark.kubernetes.container.image"] == "tarn:2"
    assert conf["spark.driver.host"] == "${POD_IP}"  # substituted by Tarn from the pod's env
    assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == "tarn-spark"
    # what Tarn reads in the pod: the placeholders filled from the pod's environment
    pod_env = {"POD_IP": "10.1.2.3", "POD_NAMESPACE": "data"}
    spec, _ = parse_project(_kind(docs, "ConfigMap")["data"]["tarn.yaml"], where="tarn.yaml", env=pod_env)
    assert spec.engine.master == "k8s://https://kubernetes.default.svc"
    assert spec.engine.conf["spark.driver.host"] == "10.1.2.3"
    assert spec.engine.conf["spark.kubernetes.namespace"] == "data"
    t = _template(docs, "run-daily")
    env = {e["name"]: e for e in t["container"]["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert t["container"]["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert t["container"]["args"][-2:] == ["--env", "prod"] and "retryStrategy" not in t
    assert _kind(docs, "WorkflowTemplate")["spec"]["serviceAccountName"] == "tarn-spark"
    # the project from a PersistentVolumeClaim: no ConfigMap, mounted read-write
    docs = docs_of(export_argo(project.dir, ["daily"], ArgoOptions(project_pvc="lake-project")))
    validate_all(docs)
    assert [d["kind"] for d in docs] == ["WorkflowTemplate"]
    wt = docs[0]["spec"]
    assert wt["volumes"] == [{"name": "project", "persistentVolumeClaim": {"claimName": "lake-project"}}]
    assert _template(docs, "run-daily")["container"]["volumeMounts"][0]["readOnly"] is False


def test_bad_input_is_a_clear_error(project: Project) -> None:
    chain(project)
    with pytest.raises(NotFoundError, match="no pipeline 'dialy' \\(did you mean 'daily'\\?\\)") as e:
        export_argo(project.dir, ["dialy"])
    assert "tarn pipelines" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="is not a Spark master URL") as e:
        export_argo(project.dir, ["daily"], ArgoOptions(spark_master="yarn-cluster://x"))
    assert "--spark-master" in str(e.value)
    with pytest.raises(ConfigError, match="name the pipelines to export"):
        export_argo(project.dir, [])
    with pytest.raises(ConfigError, match="not a valid Argo resource name"):
        export_argo(project.dir, ["daily"], ArgoOptions(name="Daily_Run"))
    with pytest.raises(ConfigError, match="not a valid Argo resource name"):
        export_argo(project.dir, ["daily"], ArgoOptions(namespace="x" * 80))
    (project.dir / "pipelines/blob.sql").write_bytes(b"\xff\xfe\x00")  # not UTF-8 text
    with pytest.raises(ConfigError, match="is not UTF-8 text") as e:
        export_argo(project.dir, ["daily"])
    assert "--project-pvc" in (e.value.hint or "")
    (project.dir / "pipelines/blob.sql").write_bytes(b"-- " + b"x" * (1024 * 1024) + b"\n")
    with pytest.raises(ConfigError, match="more than a ConfigMap holds"):
        export_argo(project.dir, ["daily"])


def test_the_schema_check_catches_mistakes(project: Project, docs_of: Any) -> None:
    """The validator is not vacuous: a misspelt key, a wrong type and a misplaced field all fail."""
    chain(project)
    docs = docs_of(export_argo(project.dir, ["daily", "weekly"], ArgoOptions(schedule="0 1 * * *")))
    wt, cron = _kind(docs, "WorkflowTemplate"), _kind(docs, "CronWorkflow")
    validate_argo(wt)
    validate_argo(cron)
    bad = yaml.safe_load(yaml.safe_dump(wt))
    bad["spec"]["templates"][1]["container"]["envv"] = []
    with pytest.raises(AssertionError, match="envv"):
        validate_argo(bad)
    bad = yaml.safe_load(yaml.safe_dump(wt))
    bad["spec"]["templates"][0]["dag"]["tasks"][1]["dependencies"] = {"daily": True}
    with pytest.raises(pydantic.ValidationError):
        validate_argo(bad)
    bad = yaml.safe_load(yaml.safe_dump(cron))
    bad["spec"]["schedule"] = bad["spec"].pop("schedules")[0]  # pre-3.6 spelling: not in the schema hera 7 has
    with pytest.raises(pydantic.ValidationError, match="schedules"):
        validate_argo(bad)
