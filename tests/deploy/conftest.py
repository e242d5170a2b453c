"""Fixtures and schema checks for the deployment artefacts.

Manifests are validated with no cluster:

- Argo objects (WorkflowTemplate, CronWorkflow) against the models that ``hera`` generates from Argo Workflows'
  OpenAPI schema: a manifest must parse, and parsing and dumping it again must give back exactly the same
  document, so a misspelt or misplaced key (which pydantic would drop) fails like a wrong type does.
- Kubernetes core objects (the ConfigMap) against the Kubernetes JSON schemas that ``kubernetes-validate``
  ships, in strict mode (no unknown properties).
- What neither schema says but Argo's controller checks: the entrypoint, every template a task names, every task
  a dependency names, every workflow parameter an argument uses, every volume a mount uses, and every ConfigMap
  key a volume item uses exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.pipelines.conftest import Project, project

__all__ = ["Project", "chain", "docs_of", "engine", "project", "validate_all", "validate_argo", "validate_k8s"]


@pytest.fixture
def engine() -> str:
    """The pipeline tests' project on DuckDB only: exporting manifests runs no pipeline."""
    return "duckdb"


_PARAM_REF = re.compile(r"\{\{workflow\.parameters\.([^}]+)\}\}")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def chain(proj: Project) -> None:
    """The DAG example of tests/pipelines (test_pipeline_runs_dag_cli): stage.orders → daily → weekly → report
    (report reads weekly and daily)."""
    from tests.pipelines.test_pipeline_runs_dag_cli import _chain

    _chain(proj)


def _paths(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Where two JSON-like documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                yield f"{path}.{k} (not in the schema: dropped)"
            elif k not in a:
                yield f"{path}.{k} (added by the schema)"
            else:
                yield from _paths(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _paths(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {json.dumps(a)} became {json.dumps(b)}"


def validate_argo(doc: dict[str, Any]) -> None:
    """``doc`` is a valid Argo object of its kind (see the module docstring)."""
    from hera.workflows import models

    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    model = {"WorkflowTemplate": models.WorkflowTemplate, "CronWorkflow": models.CronWorkflow}[doc["kind"]]
    parsed = model.model_validate(doc)  # raises pydantic.ValidationError on a wrong type or a missing field
    again = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    diff = list(_paths(doc, again))
    assert not diff, f"{doc['kind']} does not match Argo's schema: {diff}"


def validate_k8s(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    if doc["kind"] == "ConfigMap":
        bad = [k for k in doc.get("data", {}) if not _CONFIGMAP_KEY.match(k)]
        assert not bad, f"ConfigMap keys Kubernetes rejects: {bad}"
        assert len(json.dumps(doc)) < 1024 * 1024


def lint_workflow_spec(spec: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> None:
    """References inside a workflow spec resolve (what ``argo lint`` checks beyond the schema)."""
    templates = {t["name"]: t for t in spec["templates"]}
    assert len(templates) == len(spec["templates"]), "template names are unique"
    assert spec["entrypoint"] in templates
    params = {p["name"] for p in spec.get("arguments", {}).get("parameters", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for t in spec["templates"]:
        for task in (t.get("dag") or {}).get("tasks", []):
            assert task["template"] in templates, task
            tasks = {x["name"] for x in t["dag"]["tasks"]}
            assert set(task.get("dependencies", [])) <= tasks, task
        container = t.get("container")
        if container:
            for arg in container.get("args", []):
                for ref in _PARAM_REF.findall(arg):
                    assert ref in params, f"{t['name']}: {arg} names no workflow parameter"
            for m in container.get("volumeMounts", []):
                assert m["name"] in volumes, m
    for v in volumes.values():
        if "configMap" in v:
            cm = configmaps[v["configMap"]["name"]]
            for item in v["configMap"].get("items", []):
                assert item["key"] in cm["data"], item


def validate_all(docs: list[dict[str, Any]]) -> None:
    """Every object valid by its schema; the WorkflowTemplate's references resolve; a CronWorkflow points at it."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    templates = {d["metadata"]["name"] for d in docs if d["kind"] == "WorkflowTemplate"}
    for d in docs:
        if d["kind"] in ("WorkflowTemplate", "CronWorkflow"):
            validate_argo(d)
        else:
            validate_k8s(d)
        if d["kind"] == "WorkflowTemplate":
            lint_workflow_spec(d["spec"], configmaps)
        if d["kind"] == "CronWorkflow":
            assert d["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] in templates


@pytest.fixture
def docs_of() -> Any:
    """``docs_of(export)`` → the manifests as a YAML round trip (what kubectl would read)."""
    import yaml

    def load(result: Any) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(result.to_yaml()) if d is not None]

    return load
