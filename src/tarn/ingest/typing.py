"""SQL for typing text values strictly, and for inferring column types from a sample.

Casts are strict on purpose: DuckDB's TRY_CAST would round '1.5' to a BIGINT 2 and truncate a
timestamp to a DATE; Tarn treats both as typing errors (the row is quarantined with the reason).

Floating point text: a number too large for the column's type (``1e400`` for a double, ``1e39`` for a float)
is out of range, not infinity — DuckDB's cast would make it ±inf silently; Tarn quarantines the row. Infinity
and NaN are kept only when the text spells them out (:data:`SPELLED_SPECIALS`: ``inf``, ``-Infinity``,
``NaN``…, any case, surrounding blanks ignored), since a producer that writes ``inf`` means it. Integers and
decimals out of range already fail to cast.
"""

from __future__ import annotations

import re

import duckdb

from tarn.config.types import duckdb_type, normalize_type


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_BOOL = ("true", "false", "t", "f", "yes", "no", "y", "n", "1", "0")
SPELLED_SPECIALS = ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan")
"""Text that is kept as ±infinity / NaN in a double or float column (compared lower-cased and trimmed)."""
_DECIMAL_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def cast_expr(value: str, type_name: str, *, from_text: bool) -> str:
    """The typed value of ``value`` (a SQL expression), NULL where it does not convert."""
    t = normalize_type(type_name)
    sql_t = duckdb_type(t)
    if t == "string" or t == "json":
        return f"CAST({value} AS VARCHAR)"
    if not from_text:
        return f"TRY_CAST({value} AS {sql_t})"
    # Cheap guards (a regular expression per value costs more than the whole cast):
    # no '.' in an integer (DuckDB would round), no ':' in a date (it would truncate a time).
    if t in ("long", "integer", "short"):
        return f"CASE WHEN NOT contains({value}, '.') THEN TRY_CAST({value} AS {sql_t}) END"
    if t == "date":
        return f"CASE WHEN NOT contains({value}, ':') THEN TRY_CAST({value} AS DATE) END"
    if t == "boolean":
        values = ", ".join(lit(b) for b in _BOOL)
        return f"CASE WHEN lower(trim({value})) IN ({values}) THEN TRY_CAST(trim({value}) AS BOOLEAN) END"
    if t in ("double", "float"):
        cast = f"TRY_CAST({value} AS {sql_t})"
        specials = ", ".join(lit(x) for x in SPELLED_SPECIALS)
        # Only an infinite result needs a second look (the common case costs one isinf).
        spelled = f"lower(trim({value})) IN ({specials})"
        return f"CASE WHEN isinf({cast}) THEN CASE WHEN {spelled} THEN {cast} END ELSE {cast} END"
    return f"TRY_CAST({value} AS {sql_t})"


def conversion_error(value: object, type_name: str) -> str:
    """Why a text value did not convert to ``type_name``, for the quarantine record."""
    t = normalize_type(type_name)
    if t in ("double", "float") and isinstance(value, str) and _DECIMAL_NUMBER.match(value):
        return f"{value!r} is out of range for {t} (write 'inf' or '-inf' to mean infinity)"
    return f"cannot convert {value!r} to {type_name}"


def infer_text_types(con: duckdb.DuckDBPyConnection, relation_sql: str, columns: list[str]) -> dict[str, str]:
    """Infer a Tarn type for each text column of ``relation_sql`` (a sample): the narrowest of
    long, double, boolean, date, timestamp that every non-null value converts to, else string."""
    if not columns:
        return {}
    candidates = ["long", "double", "boolean", "date", "timestamp"]
    parts = []
    for i, c in enumerate(columns):
        parts.append(f"count({q(c)}) AS n{i}")
        for j, t in enumerate(candidates):
            parts.append(f"count({cast_expr(q(c), t, from_text=True)}) AS c{i}_{j}")
    row = con.sql(f"SELECT {', '.join(parts)} FROM ({relation_sql})").fetchall()[0]
    k = 1 + len(candidates)
    out: dict[str, str] = {}
    for i, c in enumerate(columns):
        n = row[i * k]
        out[c] = "string"
        if n:
            for j, t in enumerate(candidates):
                if row[i * k + 1 + j] == n:
                    out[c] = t
                    break
    return out
