"""Arc schema files: the JSON array of fields a TypingTransform applies, by position."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from tarn.arc.validation import config_error
from tarn.errors import ConfigError

__all__ = ["ARC_FIELD_TYPES", "ArcField", "load_arc_schema"]

ArcFieldType = Literal[
    "string", "integer", "long", "double", "decimal", "boolean", "date", "timestamp", "time", "binary"
]
ARC_FIELD_TYPES: tuple[str, ...] = get_args(ArcFieldType)


class ArcField(BaseModel):
    """One field of an Arc schema.

    A value that does not convert becomes NULL and adds an ``_errors`` entry; values listed in
    ``nullableValues`` (after ``trim``) are NULL without error; ``nullReplacementValue`` replaces NULLs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(min_length=1)
    type: ArcFieldType
    nullable: bool = True
    trim: bool = False
    nullable_values: tuple[str, ...] = ()
    null_replacement_value: str | None = None
    true_values: tuple[str, ...] | None = None
    false_values: tuple[str, ...] | None = None
    formatters: tuple[str, ...] | None = None
    """Java date/time patterns (``yyyy-MM-dd HH:mm:ss``), tried in order, for date/timestamp/time."""
    timezone_id: str | None = None
    precision: int | None = Field(default=None, ge=1, le=38)
    scale: int | None = Field(default=None, ge=0)
    encoding: Literal["base64", "hexadecimal"] | None = None
    """How a ``binary`` value is written in the text."""
    description: str | None = None
    primary_key: bool = False
    id: str | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _type_options(self) -> ArcField:
        if self.type == "decimal":
            if self.precision is None or self.scale is None:
                raise ValueError("a 'decimal' field needs 'precision' and 'scale'")
            if self.scale > self.precision:
                raise ValueError(f"'scale' ({self.scale}) is larger than 'precision' ({self.precision})")
        elif self.precision is not None or self.scale is not None:
            raise ValueError(f"'precision'/'scale' are only used with type 'decimal', not {self.type!r}")
        if (self.true_values is not None or self.false_values is not None) and self.type != "boolean":
            raise ValueError(f"'trueValues'/'falseValues' are only used with type 'boolean', not {self.type!r}")
        return self


def _read(source: str | Path) -> tuple[Any, str]:
    """The parsed JSON of a schema given as a path or as JSON text, and a name for messages."""
    if isinstance(source, str) and source.lstrip()[:1] in ("[", "{"):
        text, where = source, "inline schema"
    else:
        path = Path(source)
        where = f"schema file {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where} does not exist", hint="check schemaURI and the variables in it") from None
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read: {exc}") from None
    try:
        return json.loads(text), where
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint="an Arc schema is a JSON array of field objects",
        ) from None


def load_arc_schema(source: str | Path | Sequence[Mapping[str, Any]]) -> list[ArcField]:
    """Read an Arc schema: a path to a JSON file, JSON text (``[...]``), or already-parsed field objects."""
    if isinstance(source, str | Path):
        data, where = _read(source)
    else:
        data, where = list(source), "inline schema"
    if not isinstance(data, list):
        raise ConfigError(
            f"{where} must be a JSON array of fields, not {type(data).__name__}",
            hint='write [{"name": "id", "type": "integer", "nullable": false}, ...]',
        )
    fields: list[ArcField] = []
    seen: set[str] = set()
    for position, raw in enumerate(data):
        label = f"{where}, field {position + 1}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{label} must be an object, not {type(raw).__name__}")
        if raw.get("name"):
            label += f" {str(raw['name'])!r}"
        try:
            field = ArcField.model_validate(dict(raw))
        except ValidationError as exc:
            raise config_error(label, ArcField, exc) from None
        if field.name in seen:
            raise ConfigError(f"{label}: the name {field.name!r} is used twice", hint="field names must be unique")
        seen.add(field.name)
        fields.append(field)
    return fields
