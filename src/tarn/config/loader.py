"""Loading ``tarn.yaml``: ``${VAR}`` / ``${VAR:-default}`` and ``${secret:NAME}`` substitution,
validation into :class:`ProjectSpec`, and schema files (Tarn column lists or Arc schema JSON).

Secrets come from the environment (``TARN_SECRET_<NAME>``) or the project's secrets file; their
values are collected in :class:`Secrets` so logs and errors can redact them. They are never printed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tarn.config.spec import ColumnSpec, DatasetSpec, ProjectSpec, literal_credentials
from tarn.errors import ConfigError, did_you_mean, redact_error

PROJECT_FILE = "tarn.yaml"
_VAR = re.compile(r"\$\{(secret:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Secrets:
    """Secret values seen while loading; used to redact them from any text shown to a user."""

    values: set[str] = field(default_factory=set)

    def redact(self, text: str) -> str:
        for v in sorted(self.values, key=len, reverse=True):
            if v:
                text = text.replace(v, "***")
        return text


def _load_secrets_file(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"secrets file {path} must be a mapping NAME: value")
    return {str(k): str(v) for k, v in data.items()}


def substitute(
    text: str,
    env: Mapping[str, str],
    secrets_file: Mapping[str, str],
    secrets: Secrets,
    where: str,
) -> str:
    """Replace ``${VAR}``, ``${VAR:-default}`` and ``${secret:NAME}`` in ``text``."""

    def repl(m: re.Match[str]) -> str:
        is_secret, name, default = m.group(1), m.group(2), m.group(3)
        if is_secret:
            value = env.get(f"TARN_SECRET_{name}", secrets_file.get(name))
            if value is None:
                raise ConfigError(
                    f"{where}: secret {name!r} is not set",
                    hint=f"export TARN_SECRET_{name}=… or add '{name}: …' to the project's secrets file",
                )
            secrets.values.add(value)
            return value
        value = env.get(name, default)
        if value is None:
            raise ConfigError(
                f"{where}: variable ${{{name}}} is not set",
                hint=f"export {name}=… or write ${{{name}:-default}}",
            )
        return value

    return _VAR.sub(repl, text)


def _format_validation(err: ValidationError, where: str, model: type[Any]) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            known = _known_keys(model, e["loc"][:-1])
            msg = f"unknown key {key!r}{did_you_mean(key, known)}"
        lines.append(f"  {loc}: {msg}")
    return ConfigError(f"{where} is invalid:\n" + "\n".join(lines), hint="fix the keys listed above")


def _known_keys(model: type[Any], path: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``path``, for "did you mean" suggestions."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        f = fields.get(part)
        if f is None:
            return []
        ann = f.annotation
        current = _model_in(ann)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def parse_project(
    text: str, *, where: str, env: Mapping[str, str] | None = None, secrets_file: Path | None = None
) -> tuple[ProjectSpec, Secrets]:
    env = os.environ if env is None else env
    secrets = Secrets()
    raw_data = yaml.safe_load(text) or {}
    if not isinstance(raw_data, dict):
        raise ConfigError(f"{where} must be a YAML mapping")
    literal = literal_credentials(raw_data)
    if literal:
        raise ConfigError(
            f"{where}: lake.s3.{literal[0]} holds a credential written into the file; Tarn never reads AWS "
            "credentials from tarn.yaml literals",
            hint="remove it and use the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
            "lake.s3.profile, an instance or container role), or write it as ${secret:NAME}",
        )
    # The secrets file may itself be named in the YAML (before substitution).
    sf = secrets_file
    if sf is None and isinstance(raw_data.get("secrets_file"), str):
        sf = Path(where).parent / raw_data["secrets_file"]
    file_secrets = _load_secrets_file(sf)
    resolved = substitute(text, env, file_secrets, secrets, where)
    data = yaml.safe_load(resolved) or {}
    try:
        return ProjectSpec.model_validate(data), secrets
    except ValidationError as e:
        raise redact_error(_format_validation(e, where, ProjectSpec), secrets.redact) from None


def load_project(project_dir: Path, env: Mapping[str, str] | None = None) -> tuple[ProjectSpec, Secrets]:
    path = project_dir / PROJECT_FILE
    if not path.exists():
        raise ConfigError(
            f"no {PROJECT_FILE} in {project_dir}",
            hint="run 'tarn init DIR' to create a project, or pass --project DIR",
        )
    default_secrets = project_dir / ".tarn" / "secrets.yaml"
    return parse_project(
        path.read_text(),
        where=str(path),
        env=env,
        secrets_file=default_secrets if default_secrets.exists() else None,
    )


def find_project_dir(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding tarn.yaml."""
    for d in [start, *start.parents]:
        if (d / PROJECT_FILE).exists():
            return d
    raise ConfigError(
        f"no {PROJECT_FILE} found in {start} or its parents",
        hint="run 'tarn init DIR' first, or pass --project DIR (or set TARN_PROJECT)",
    )


_ARC_TYPES = {
    "string",
    "integer",
    "long",
    "double",
    "decimal",
    "boolean",
    "date",
    "timestamp",
    "time",
    "binary",
}


def load_schema_file(path: Path) -> tuple[ColumnSpec, ...]:
    """A schema file: Tarn's list of columns (YAML/JSON) or an Arc schema (JSON array of fields)."""
    if not path.exists():
        raise ConfigError(f"schema file {path} does not exist")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"schema file {path} cannot be parsed: {e}") from None
    if isinstance(data, dict) and "columns" in data:
        data = data["columns"]
    if not isinstance(data, list):
        raise ConfigError(f"schema file {path} must hold a list of fields")
    cols: list[ColumnSpec] = []
    for i, f in enumerate(data):
        if not isinstance(f, dict) or "name" not in f:
            raise ConfigError(f"schema file {path}: field #{i + 1} must be a mapping with a 'name'")
        try:
            cols.append(_column_from_field(f))
        except (ValidationError, ConfigError) as e:
            raise ConfigError(f"schema file {path}: field {f.get('name')!r}: {e}") from None
    return tuple(cols)


def _column_from_field(f: dict[str, Any]) -> ColumnSpec:
    t = str(f.get("type", "string"))
    is_arc = any(k in f for k in ("nullableValues", "formatters", "timezoneId", "precision", "trueValues"))
    if t == "decimal":
        t = f"decimal({f.get('precision', 38)},{f.get('scale', 0)})"
    if is_arc or t in _ARC_TYPES:
        return ColumnSpec(
            name=f["name"],
            type=t,
            nullable=bool(f.get("nullable", True)),
            description=f.get("description"),
            null_values=tuple(f.get("nullableValues", ())),
            trim=bool(f.get("trim", False)),
        )
    return ColumnSpec.model_validate({**f, "type": t})


def dataset_columns(ds: DatasetSpec, project_dir: Path) -> tuple[ColumnSpec, ...] | None:
    """The declared columns of a dataset, or None if its schema is inferred."""
    if ds.columns is not None:
        return ds.columns
    if ds.schema_file is not None:
        return load_schema_file(project_dir / ds.schema_file)
    return None
