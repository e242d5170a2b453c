"""SQL dialects: the SQL Tarn writes itself (expectations, typing checks, SCD2 staging, …) is DuckDB SQL — the
*internal* dialect — and is transpiled with sqlglot to the engine's dialect; a pipeline's own SQL goes straight
from the pipeline's dialect to the engine's (see :func:`tarn.pipelines.sqltools.transpile`).

:func:`untranspilable` lists the constructs of a statement that sqlglot cannot express in another dialect
(``tarn validate`` reports them per stage).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from tarn.errors import QueryError

if TYPE_CHECKING:
    from tarn.engines.base import Engine

INTERNAL = "duckdb"
DIALECTS = ("duckdb", "spark")


@lru_cache(maxsize=2048)
def _transpile_internal(sql: str, dialect: str) -> str:
    try:
        trees = [t for t in sqlglot.parse(sql, read=INTERNAL) if t is not None]
    except ParseError as e:  # a bug in Tarn's own SQL, not the user's
        raise QueryError(f"internal SQL does not parse: {str(e).splitlines()[0]}") from None
    out = []
    for tree in trees:
        for cte in tree.find_all(exp.CTE):
            cte.set("materialized", None)  # a planner hint DuckDB has and Spark has not
        if dialect == "spark":
            _spark_json_like_duckdb(tree)
        try:
            out.append(tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE))
        except UnsupportedError as e:
            raise QueryError(f"internal SQL cannot run on {dialect}: {str(e).splitlines()[0]}") from None
    return "; ".join(out)


# DuckDB's JSON text of timestamps (whole seconds; DuckDB also prints non-zero fractions, trimmed)
_SPARK_JSON_OPTIONS = {
    "timestampFormat": "yyyy-MM-dd HH:mm:ssx",
    "timestampNTZFormat": "yyyy-MM-dd HH:mm:ss",
}


def _spark_json_like_duckdb(tree: exp.Expr) -> None:
    """``to_json(x)`` → ``to_json(x, map(…))`` writing timestamps as DuckDB does (quarantined records)."""
    for node in list(tree.find_all(exp.Anonymous)):
        if str(node.this).lower() == "to_json" and len(node.expressions) == 1:
            options = exp.Anonymous(
                this="map",
                expressions=[exp.Literal.string(x) for kv in _SPARK_JSON_OPTIONS.items() for x in kv],
            )
            node.set("expressions", [node.expressions[0], options])


def internal(engine: Engine, sql: str) -> str:
    """Tarn's own DuckDB SQL in ``engine``'s dialect (unchanged for DuckDB)."""
    if engine.dialect == INTERNAL:
        return sql
    return _transpile_internal(sql, engine.dialect)


def relation(engine: Engine, name: str) -> str:
    """``zone.table`` or ``view`` as a quoted name in ``engine``'s dialect."""
    parts = name.split(".", 1)
    table = exp.table_(parts[-1], db=parts[0] if len(parts) == 2 else None, quoted=True)
    return table.sql(dialect=engine.dialect)


def untranspilable(sql: str, read: str, write: str) -> list[str]:
    """The constructs of ``sql`` (in ``read``) that cannot be written in ``write``; empty when it transpiles."""
    if read == write:
        return []
    try:
        trees = [t for t in sqlglot.parse(sql, read=read) if t is not None]
    except ParseError:
        return []  # parse errors are reported on their own
    problems: list[str] = []
    for tree in trees:
        try:
            tree.sql(dialect=write, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError as e:
            for line in str(e).splitlines():
                line = line.strip()
                if line and line not in problems:
                    problems.append(line)
    return problems
