"""``tarn export argo`` as a user runs it: the real ``tarn`` command (a subprocess), writing to stdout and to a
folder, and failing with ``error: …`` plus a hint on bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from tests.deploy.conftest import chain, validate_all

if TYPE_CHECKING:
    from tests.conftest import CliResult
    from tests.pipelines.conftest import Project


def test_export_to_stdout_and_to_a_folder(project: Project, tarn: Callable[..., CliResult], tmp_path: Path) -> None:
    chain(project)
    r = tarn(
        "export", "argo", "daily", "weekly", "report",
        "--schedule", "0 3 * * *", "--image", "tarn:1.2", "-n", "data", "--spark-master", "spark://spark:7077",
        "--spark-conf", "spark.executor.memory=4g", "--env-var", "AWS_REGION=eu-west-1",
        cwd=project.dir,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "WorkflowTemplate", "CronWorkflow"]
    validate_all(docs)
    assert docs[2]["spec"]["schedules"] == ["0 3 * * *"]
    engine = yaml.safe_load(docs[0]["data"]["tarn.yaml"])["engine"]
    assert engine == {"name": "spark", "master": "spark://spark:7077", "conf": {"spark.executor.memory": "4g"}}
    assert "warning: lake.root 'lake' is a local folder" in r.stderr  # the test project's lake is local

    out = tmp_path / "manifests"
    r = tarn("--project", str(project.dir), "export", "argo", "weekly", "--downstream", "-o", str(out))
    assert r.code == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "tarn-test-lake-project.configmap.yaml",
        "tarn-test-lake.workflowtemplate.yaml",
    ]
    docs = [yaml.safe_load(p.read_text()) for p in sorted(out.iterdir())]
    validate_all(docs)
    assert f"wrote {out / files[1]}" in r.stdout


def test_bad_input_exits_1_with_a_hint(project: Project, tarn: Callable[..., CliResult]) -> None:
    chain(project)
    r = tarn("export", "argo", "dialy", cwd=project.dir)
    assert r.code == 1 and r.stdout == ""
    assert "error: no pipeline 'dialy' (did you mean 'daily'?)" in r.stderr
    assert "hint: 'tarn pipelines' lists" in r.stderr
    r = tarn("export", "argo", "daily", "--schedule", "0 25 * * *", cwd=project.dir)
    assert r.code == 1 and "error: cron schedule '0 25 * * *' is not valid" in r.stderr and "hint:" in r.stderr
    r = tarn("export", "argo", "daily", "--param", "region", cwd=project.dir)
    assert r.code == 1 and "error: --param 'region' must be NAME=VALUE" in r.stderr
    r = tarn("export", "argo", "daily", "--engine", "flink", cwd=project.dir)
    assert r.code == 1 and "error: --engine 'flink' is not an engine" in r.stderr
