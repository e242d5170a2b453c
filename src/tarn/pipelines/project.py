"""Pipeline files: ``pipelines/*.yaml`` (and ``*.yml``, in subfolders too) in the project, loaded into
:class:`PipelineSpec` with errors that name the file, the stage and the key ("did you mean")."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tarn.errors import ConfigError, NotFoundError, did_you_mean
from tarn.pipelines.spec import STAGE_TYPES, PipelineSpec

PIPELINES_DIR = "pipelines"
SUFFIXES = (".yaml", ".yml")


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(ann):
        out.extend(_models_in(arg))
    return out


def _tag(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("type")
    if f is None:
        return None
    args = typing.get_args(f.annotation)
    return str(args[0]) if args else None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that holds the key at ``loc`` (``loc`` without its last part)."""
    candidates: list[type[BaseModel]] = [root]
    current: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [m for m in candidates if _tag(m) == part]
        if tagged and (current is None or part not in current.model_fields):
            current = tagged[0]
            candidates = [current]
            continue
        if current is None or part not in current.model_fields:
            return None
        candidates = _models_in(current.model_fields[part].annotation)
        current = candidates[0] if len(candidates) == 1 else None
    return current


def format_errors(err: ValidationError, where: str) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            model = _model_at(PipelineSpec, loc[:-1])
            known = list(model.model_fields) if model else []
            msg = f"unknown key {key!r}{did_you_mean(key, known)}"
        elif e["type"] == "union_tag_invalid":
            tag = str((e.get("ctx") or {}).get("tag", ""))
            msg = f"unknown type {tag!r}{did_you_mean(tag, STAGE_TYPES)}"
            if "triggers" not in loc:
                msg += f" (stage types: {', '.join(STAGE_TYPES)})"
        elif e["type"] == "union_tag_not_found":
            msg = "missing 'type'"
        lines.append(f"  {path}: {msg}")
    return ConfigError(f"{where} is invalid:\n" + "\n".join(lines), hint="fix the keys listed above")


def parse_pipeline(data: Any, *, where: str, source: Path | None = None) -> PipelineSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a YAML mapping (name, stages, …)")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as e:
        raise format_errors(e, where) from None
    return spec.model_copy(update={"source": source}) if source is not None else spec


def load_pipeline_file(path: Path) -> PipelineSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"no pipeline file {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return parse_pipeline(data, where=str(path), source=path.resolve())


def pipeline_files(project_dir: Path) -> list[Path]:
    base = project_dir / PIPELINES_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def load_pipelines(project_dir: Path) -> dict[str, PipelineSpec]:
    """Every pipeline of the project, by name (two files with one name are an error)."""
    out: dict[str, PipelineSpec] = {}
    for path in pipeline_files(project_dir):
        spec = load_pipeline_file(path)
        if spec.name in out:
            raise ConfigError(
                f"pipeline name {spec.name!r} is used by {out[spec.name].source} and {path}",
                hint="pipeline names must be unique in a project",
            )
        out[spec.name] = spec
    return out


def find_pipeline(project_dir: Path, ref: str) -> PipelineSpec:
    """A pipeline by name, or by the path of its YAML file."""
    p = Path(ref)
    if p.suffix in SUFFIXES:
        return load_pipeline_file(p if p.is_absolute() or p.exists() else project_dir / p)
    pipelines = load_pipelines(project_dir)
    if ref not in pipelines:
        raise NotFoundError(
            f"no pipeline {ref!r}{did_you_mean(ref, pipelines)}",
            hint=f"pipelines are YAML files in {project_dir / PIPELINES_DIR}; 'tarn validate' lists problems",
        )
    return pipelines[ref]
