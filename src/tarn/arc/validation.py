"""Turning pydantic validation errors on Arc models into one clear ConfigError."""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tarn.errors import ConfigError, did_you_mean


def stage_label(index: int, name: object, stage_type: object = None, cell: int | None = None) -> str:
    """``stage 2 'type orders' (TypingTransform)`` — 1-based position, as a person counts; ``cell`` too."""
    label = f"stage {index + 1}"
    if name:
        label += f" {str(name)!r}"
    if stage_type:
        label += f" ({stage_type})"
    if cell is not None:
        label += f" in notebook cell {cell}"
    return label


def model_keys(cls: type[BaseModel]) -> list[str]:
    """The keys a model accepts, as written in Arc files (aliases)."""
    return [info.alias or attr for attr, info in cls.model_fields.items()]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field annotation (``X | None``, ``tuple[X, ...]`` …)."""
    if isinstance(annotation, type) and not get_args(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _model_at(cls: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The (nested) model that owns the key at ``loc``, e.g. ArcField for ``("schema", 0)``."""
    current: type[BaseModel] | None = cls
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = next(
            (info for attr, info in current.model_fields.items() if part in (info.alias, attr)),
            None,
        )
        if field is None:
            return None
        nested = _models_in(field.annotation)
        current = nested[0] if nested else None
    return current


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(cls: type[BaseModel], err: ErrorDetails) -> tuple[str, str | None]:
    loc = tuple(err["loc"])
    kind = err["type"]
    where = _path(loc)
    if kind == "extra_forbidden":
        owner = _model_at(cls, loc[:-1]) or cls
        key = str(loc[-1])
        inside = f" in {_path(loc[:-1])!r}" if len(loc) > 1 else ""
        keys = model_keys(owner)
        return (
            f"unknown key {key!r}{inside}{did_you_mean(key, keys)}",
            f"valid keys{inside}: {', '.join(keys)}",
        )
    if kind == "missing":
        return f"missing required key {where!r}", None
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        value = str(err.get("input"))
        return (
            f"{where!r} is {err.get('input')!r}, not one of {', '.join(map(repr, expected))}"
            f"{did_you_mean(value, expected)}",
            None,
        )
    message = err["msg"].removeprefix("Value error, ")
    return (f"{where!r}: {message}" if where else message), None


def config_error(label: str, cls: type[BaseModel], exc: ValidationError) -> ConfigError:
    """One ConfigError for every problem pydantic found, prefixed with what was being read."""
    problems: list[str] = []
    hints: list[str] = []
    for err in exc.errors():
        problem, hint = _describe(cls, err)
        if problem not in problems:
            problems.append(problem)
        if hint and hint not in hints:
            hints.append(hint)
    return ConfigError(f"{label}: {'; '.join(problems)}", hint="; ".join(hints) or None)
