"""DuckDB, the embedded engine: connections, and SQL over the lake's Delta tables.

Nothing is downloaded at run time: only DuckDB's built-in extensions (json, parquet, icu) are
used; Delta tables are read through delta-rs' ``to_pyarrow_dataset()`` (projection and filter
push-down), registered as ``zone.table`` views.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from tarn.errors import QueryError, did_you_mean
from tarn.storage.base import TABLE_ZONES


def connect(threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection with Tarn's settings: UTC, results in insertion order,
    no extension auto-install (offline)."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET autoinstall_known_extensions=false")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit='{memory_limit}'")
    return con


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    tables_read: tuple[str, ...]


def referenced_tables(sql: str) -> list[tuple[str, str]]:
    """(zone, table) pairs the SQL reads, from its parse tree (CTE names excluded)."""
    import sqlglot  # here: the ingest path imports this module for connect() only
    from sqlglot import exp

    try:
        tree = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise QueryError(f"the SQL does not parse: {str(e).splitlines()[0]}") from None
    out: list[tuple[str, str]] = []
    for stmt in tree:
        if stmt is None:
            continue
        ctes = {c.alias_or_name for c in stmt.find_all(exp.CTE)}
        for t in stmt.find_all(exp.Table):
            if t.db and t.db in TABLE_ZONES and t.name not in ctes and (t.db, t.name) not in out:
                out.append((t.db, t.name))
    return out


_SAFE = re.compile(r"^[a-z0-9_]+$")


def run_query(
    sql: str,
    resolve: Callable[[str, str], pa.dataset.Dataset | None],
    known: list[str],
    limit: int | None = None,
) -> QueryResult:
    """Run ``sql`` with every ``zone.table`` it names registered as a view over its Delta table."""
    con = connect()
    try:
        read: list[str] = []
        for zone, table in referenced_tables(sql):
            if not _SAFE.match(table):
                continue
            ds = resolve(zone, table)
            if ds is None:
                name = f"{zone}.{table}"
                raise QueryError(
                    f"no table {name}{did_you_mean(name, known)}",
                    hint="'tarn tables' lists the tables",
                )
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {zone}")
            alias = f"__{zone}__{table}"
            con.register(alias, ds)
            con.execute(f'CREATE VIEW {zone}."{table}" AS SELECT * FROM "{alias}"')
            read.append(f"{zone}.{table}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rel = con.sql(sql)
                if rel is None:
                    return QueryResult(pa.table({}), tuple(read))
                if limit is not None:
                    rel = rel.limit(limit)
                table = rel.to_arrow_table()
        except duckdb.Error as e:
            raise QueryError(f"query failed: {str(e).strip().splitlines()[0]}") from None
        return QueryResult(table, tuple(read))
    finally:
        con.close()
