"""Column types: Tarn's names, their DuckDB SQL types and their Arrow types.

One vocabulary is used everywhere (dataset schemas, Arc schema files, the catalog):
``string, integer, long, double, float, decimal(p,s), boolean, date, timestamp, time, binary``.
Timestamps are stored as UTC instants (Delta ``timestamp``), so every reader agrees.
"""

from __future__ import annotations

import re

import pyarrow as pa

from tarn.errors import ConfigError, did_you_mean

SIMPLE_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "string": ("VARCHAR", pa.string()),
    "integer": ("INTEGER", pa.int32()),
    "long": ("BIGINT", pa.int64()),
    "short": ("SMALLINT", pa.int16()),
    "double": ("DOUBLE", pa.float64()),
    "float": ("FLOAT", pa.float32()),
    "boolean": ("BOOLEAN", pa.bool_()),
    "date": ("DATE", pa.date32()),
    "timestamp": ("TIMESTAMPTZ", pa.timestamp("us", tz="UTC")),
    "time": ("TIME", pa.time64("us")),
    "binary": ("BLOB", pa.binary()),
    "json": ("VARCHAR", pa.string()),
}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")

# DuckDB's inferred types → Tarn names (schema inference on the first file).
_FROM_DUCKDB: dict[str, str] = {
    "VARCHAR": "string",
    "BIGINT": "long",
    "INTEGER": "long",
    "SMALLINT": "long",
    "TINYINT": "long",
    "UBIGINT": "double",
    "UINTEGER": "long",
    "HUGEINT": "double",
    "DOUBLE": "double",
    "FLOAT": "double",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIME": "time",
    "BLOB": "binary",
    "JSON": "json",
}


def normalize_type(name: str) -> str:
    """Validate a Tarn type name and return its canonical spelling."""
    t = name.strip().lower()
    if t in SIMPLE_TYPES:
        return t
    m = _DECIMAL.match(t)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not (1 <= p <= 38 and 0 <= s <= p):
            raise ConfigError(f"decimal({p},{s}) is out of range", hint="precision 1..38, scale 0..precision")
        return f"decimal({p},{s})"
    raise ConfigError(
        f"unknown column type {name!r}{did_you_mean(t, [*SIMPLE_TYPES, 'decimal(p,s)'])}",
        hint="types: " + ", ".join([*SIMPLE_TYPES, "decimal(p,s)"]),
    )


def duckdb_type(name: str) -> str:
    t = normalize_type(name)
    m = _DECIMAL.match(t)
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    return SIMPLE_TYPES[t][0]


def arrow_type(name: str) -> pa.DataType:
    t = normalize_type(name)
    m = _DECIMAL.match(t)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return SIMPLE_TYPES[t][1]


def from_duckdb_type(sql_type: str) -> str:
    """Map a type DuckDB inferred to a Tarn type; anything nested or unusual becomes JSON text."""
    t = sql_type.upper()
    if t.startswith("DECIMAL"):
        m = re.match(r"DECIMAL\((\d+),\s*(\d+)\)", t)
        return f"decimal({m.group(1)},{m.group(2)})" if m else "double"
    return _FROM_DUCKDB.get(t, "json")


def from_arrow_type(dt: pa.DataType) -> str:
    """Map an Arrow type (a Delta table's schema) back to a Tarn type."""
    if pa.types.is_string(dt) or pa.types.is_large_string(dt) or pa.types.is_string_view(dt):
        return "string"
    if pa.types.is_int8(dt) or pa.types.is_int16(dt):
        return "short"
    if pa.types.is_int32(dt):
        return "integer"
    if pa.types.is_integer(dt):
        return "long"
    if pa.types.is_float32(dt):
        return "float"
    if pa.types.is_floating(dt):
        return "double"
    if pa.types.is_boolean(dt):
        return "boolean"
    if pa.types.is_date(dt):
        return "date"
    if pa.types.is_timestamp(dt):
        return "timestamp"
    if pa.types.is_time(dt):
        return "time"
    if pa.types.is_decimal(dt):
        return f"decimal({dt.precision},{dt.scale})"
    if pa.types.is_binary(dt) or pa.types.is_large_binary(dt):
        return "binary"
    return "json"
