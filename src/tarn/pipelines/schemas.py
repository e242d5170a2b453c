"""Typing schemas for the ``typing`` stage: Tarn column lists and Arc schema files, normalized to
:class:`~tarn.engines.base.TypedField` (Java date patterns become strptime formats)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tarn.arc.schema import ArcField, load_arc_schema
from tarn.config.loader import load_schema_file
from tarn.config.spec import ColumnSpec
from tarn.engines.base import TypedField
from tarn.errors import ConfigError
from tarn.pipelines.spec import TypingStage

# Java DateTimeFormatter letters → strptime directives (longest first).
_JAVA = [
    ("yyyy", "%Y"),
    ("uuuu", "%Y"),
    ("yy", "%y"),
    ("MMMM", "%B"),
    ("MMM", "%b"),
    ("MM", "%m"),
    ("M", "%-m"),
    ("dd", "%d"),
    ("d", "%-d"),
    ("HH", "%H"),
    ("H", "%-H"),
    ("hh", "%I"),
    ("h", "%-I"),
    ("mm", "%M"),
    ("m", "%-M"),
    ("ss", "%S"),
    ("s", "%-S"),
    ("SSSSSSSSS", "%n"),
    ("SSSSSS", "%f"),
    ("SSS", "%g"),
    ("EEEE", "%A"),
    ("EEE", "%a"),
    ("a", "%p"),
    ("XXX", "%z"),
    ("XX", "%z"),
    ("X", "%z"),
    ("xxx", "%z"),
    ("Z", "%z"),
    ("z", "%Z"),
    ("VV", "%Z"),
]
_JAVA_TOKEN = re.compile("|".join(re.escape(j) for j, _ in _JAVA) + r"|'[^']*'|''|.", re.DOTALL)


def java_to_strptime(pattern: str) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss`` → ``%Y-%m-%dT%H:%M:%S``."""
    table = dict(_JAVA)
    out = []
    for tok in _JAVA_TOKEN.findall(pattern):
        if tok in table:
            out.append(table[tok])
        elif tok == "''":
            out.append("'")
        elif tok.startswith("'") and tok.endswith("'") and len(tok) >= 2:
            out.append(tok[1:-1].replace("%", "%%"))
        elif tok.isalpha():
            raise ConfigError(f"date pattern {pattern!r}: the letter {tok!r} is not supported")
        else:
            out.append(tok.replace("%", "%%"))
    return "".join(out)


def from_arc(f: ArcField) -> TypedField:
    t: str = f.type
    if t == "decimal":
        t = f"decimal({f.precision},{f.scale})"
    return TypedField(
        name=f.name,
        type=t,
        nullable=f.nullable,
        trim=f.trim,
        null_values=f.nullable_values,
        null_replacement=f.null_replacement_value,
        true_values=f.true_values,
        false_values=f.false_values,
        formats=tuple(java_to_strptime(p) for p in (f.formatters or ())),
        timezone=f.timezone_id,
        encoding=f.encoding,
    )


def from_column(c: ColumnSpec) -> TypedField:
    # As in ingest, an empty text is NULL for every non-string column.
    nulls = c.null_values if c.type == "string" else tuple(dict.fromkeys(("", *c.null_values)))
    return TypedField(name=c.name, type=c.type, nullable=c.nullable, trim=c.trim, null_values=nulls)


def _is_arc_file(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(data, list) or not data:
        return False
    try:
        for item in data:
            ArcField.model_validate(item)
    except ValueError:
        return False
    return True


def typing_fields(stage: TypingStage, base_dir: Path) -> list[TypedField]:
    """The stage's schema as typed fields."""
    if stage.columns is not None:
        return [from_column(c) for c in stage.columns]
    if stage.arc_fields is not None:
        return [from_arc(f) for f in stage.arc_fields]
    assert stage.schema_file is not None
    path = Path(stage.schema_file)
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"stage {stage.name!r}: schema_file {str(path)!r} does not exist", hint="fix 'schema_file'")
    if _is_arc_file(path):
        return [from_arc(f) for f in load_arc_schema(path)]
    try:
        return [from_column(c) for c in load_schema_file(path)]
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError(f"stage {stage.name!r}: schema_file {str(path)!r}: {e}") from None
