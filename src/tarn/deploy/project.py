"""What a project brings to the cluster: the files a ``tarn run`` needs (shipped in a ConfigMap), the
``${secret:NAME}`` and ``${VAR}`` references of its tarn.yaml (to be filled from Kubernetes Secrets and env), and
the places where it still points at the local machine (a local lake root, files read by relative path).

tarn.yaml is read as raw YAML, not loaded: its secrets are not (and need not be) available where manifests are
generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tarn.config.loader import PROJECT_FILE
from tarn.errors import ConfigError
from tarn.pipelines.project import PIPELINES_DIR
from tarn.pipelines.spec import PipelineSpec

# Kubernetes stores a ConfigMap in etcd: 1 MiB at most, metadata included.
CONFIGMAP_MAX_BYTES = 1024 * 1024 - 16 * 1024
_KEY = re.compile(r"[^-._a-zA-Z0-9]")
_VAR = re.compile(r"\$\{(secret:)?([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


@dataclass
class ProjectInfo:
    dir: Path
    doc: dict[str, Any]  # tarn.yaml, raw (placeholders not substituted)
    text: str
    secret_refs: list[str] = field(default_factory=list)  # ${secret:NAME}
    required_vars: list[str] = field(default_factory=list)  # ${VAR} without a default

    @property
    def name(self) -> str:
        return str(self.doc.get("name") or self.dir.name)

    @property
    def lake_root(self) -> str:
        lake = self.doc.get("lake")
        root = lake.get("root") if isinstance(lake, dict) else None
        return str(root) if root is not None else "lake"


def read_project(project_dir: Path) -> ProjectInfo:
    path = project_dir / PROJECT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no {PROJECT_FILE} in {project_dir}", hint="run the export in a project folder, or pass --project DIR"
        ) from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must be a YAML mapping")
    secrets: list[str] = []
    required: list[str] = []
    for m in _VAR.finditer(text):
        is_secret, name, default = m.group(1), m.group(2), m.group(3)
        target = secrets if is_secret else required
        if (is_secret or default is None) and name not in target:
            target.append(name)
    return ProjectInfo(project_dir, doc, text, secrets, required)


def configmap_key(rel: str) -> str:
    """A ConfigMap key for a project-relative path (keys may hold only ``-._`` and alphanumerics)."""
    return _KEY.sub("_", rel.replace("/", "__"))


def _rel(path: Path, project_dir: Path) -> str | None:
    full = path.resolve()
    base = project_dir.resolve()
    return full.relative_to(base).as_posix() if full.is_relative_to(base) else None


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.split("/"))


def project_files(info: ProjectInfo, specs: list[PipelineSpec]) -> tuple[dict[str, Path], list[str]]:
    """Project-relative path → file, for every file a run of ``specs`` reads from the project folder: tarn.yaml,
    everything under ``pipelines/``, SQL and schema files the stages name, and the datasets' schema files.
    Also returns warnings for files that are referenced but cannot be shipped."""
    d = info.dir
    files: dict[str, Path] = {PROJECT_FILE: d / PROJECT_FILE}
    warnings: list[str] = []
    base = d / PIPELINES_DIR
    if base.is_dir():
        for p in sorted(base.rglob("*")):
            rel = _rel(p, d)
            if p.is_file() and rel is not None and not _hidden(rel):
                files[rel] = p
    referenced: list[tuple[str, Path]] = []
    for spec in specs:
        for st in spec.stages:
            for attr in ("sql_file", "schema_file"):
                ref = getattr(st, attr, None)
                if ref:
                    referenced.append((f"pipeline {spec.name!r}, stage {st.name!r}", spec.base_dir / ref))
    for ds in info.doc.get("datasets") or ():
        if isinstance(ds, dict) and isinstance(ds.get("schema_file"), str):
            referenced.append((f"dataset {ds.get('name')!r}", d / ds["schema_file"]))
    for where, path in referenced:
        rel = _rel(path, d)
        if rel is None:
            warnings.append(f"{where} reads {path}, outside the project folder: it is not shipped to the cluster")
        elif not path.is_file():
            warnings.append(f"{where} reads {rel}, which does not exist")
        else:
            files.setdefault(rel, path)
    return files, warnings


def configmap_data(files: dict[str, Path], *, engine: dict[str, Any] | None, info: ProjectInfo) -> dict[str, str]:
    """ConfigMap ``data``: key → file text. tarn.yaml gets the export's ``engine`` settings (when given)."""
    data: dict[str, str] = {}
    seen: dict[str, str] = {}
    total = 0
    for rel, path in sorted(files.items()):
        key = configmap_key(rel)
        if key in seen:
            raise ConfigError(
                f"project files {seen[key]!r} and {rel!r} map to one ConfigMap key {key!r}",
                hint="rename one of them, or mount the project from a volume with --project-pvc",
            )
        seen[key] = rel
        if rel == PROJECT_FILE:
            text = with_engine(info, engine) if engine is not None else info.text
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError(
                    f"project file {rel} is not UTF-8 text and cannot go into a ConfigMap",
                    hint="move it out of pipelines/ (data belongs in the lake), or use --project-pvc",
                ) from None
        total += len(key) + len(text.encode())
        data[key] = text
    if total > CONFIGMAP_MAX_BYTES:
        raise ConfigError(
            f"the project's files take {total} bytes, more than a ConfigMap holds (1 MiB)",
            hint="keep data files out of pipelines/, or mount the project from a volume with --project-pvc",
        )
    return data


def with_engine(info: ProjectInfo, engine: dict[str, Any]) -> str:
    """tarn.yaml with its ``engine`` mapping updated from ``engine`` (``conf`` entries merged)."""
    doc = dict(info.doc)
    current = doc.get("engine")
    merged: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    conf = {**(merged.get("conf") or {}), **(engine.get("conf") or {})}
    merged.update({k: v for k, v in engine.items() if k != "conf"})
    if conf:
        merged["conf"] = conf
    doc["engine"] = merged
    header = f"# {PROJECT_FILE} of project {info.name}, engine settings from 'tarn export argo'\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def local_paths(info: ProjectInfo, specs: list[PipelineSpec]) -> list[str]:
    """Warnings for what only exists on this machine: a local lake root, extracts of relative file paths."""
    out = []
    root = info.lake_root
    if "://" not in root and "${" not in root:
        out.append(
            f"lake.root {root!r} is a local folder: each step's pod would have a lake of its own; "
            "use an s3:// root for the cluster, or a shared volume with --project-pvc"
        )
    for spec in specs:
        for st in spec.stages:
            path = getattr(st, "path", None)
            if isinstance(path, str) and "://" not in path and "${" not in path:
                out.append(
                    f"pipeline {spec.name!r}, stage {st.name!r} reads files at {path!r} in the project folder: "
                    "they are not shipped; read them from s3:// or use --project-pvc"
                )
    return out
