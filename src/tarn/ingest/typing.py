"""SQL for typing text values strictly, and for inferring column types from a sample.

Casts are strict on purpose: DuckDB's TRY_CAST would round '1.5' to a BIGINT 2 and truncate a
timestamp to a DATE; Tarn treats both as typing errors (the row is quarantined with the reason).
"""

from __future__ import annotations

import duckdb

from tarn.config.types import duckdb_type, normalize_type


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_BOOL = ("true", "false", "t", "f", "yes", "no", "y", "n", "1", "0")


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
    return f"TRY_CAST({value} AS {sql_t})"


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
