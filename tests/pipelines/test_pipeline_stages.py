"""Each stage type on real DuckDB and Spark (conftest.py) and real Delta tables: extract (lake tables with time
travel, files of every format, globs), sql (params, persist, spark dialect), typing (Tarn and Arc schemas,
failfast), validate (JSON message stored as data), equal, execute (MERGE INTO a table and a view, other
statements), log, config, environments."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project


def _collect(view: str, name: str = "collect") -> dict[str, Any]:
    """A load of ``view`` into analytics.<name> (to look at what a view held)."""
    return {"type": "load", "name": f"save {view}", "input": view, "table": f"analytics.{name}", "mode": "overwrite"}


# ------------------------------------------------------------------------------------------------ extract
def test_extract_lake_table_with_time_travel(project: Project) -> None:
    project.seed("stage.orders", {"id": [1]})  # v0
    project.seed("stage.orders", {"id": [2]})  # v1
    time.sleep(0.6)
    project.seed("stage.orders", {"id": [3]})  # v2
    from deltalake import DeltaTable

    history = DeltaTable(project.uri("stage.orders")).history()  # newest first: [v2, v1, v0]
    between = (history[0]["timestamp"] + history[1]["timestamp"]) // 2  # ms, after v1 and before v2
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(between / 1000)) + f".{between % 1000:03d}Z"
    project.pipeline(
        {
            "name": "tt",
            "stages": [
                {"type": "extract", "name": "now", "table": "stage.orders", "output": "now"},
                {"type": "extract", "name": "v0", "table": "stage.orders", "version": 0, "output": "v0"},
                {"type": "extract", "name": "prev", "table": "stage.orders", "relative_version": -1, "output": "prev"},
                {"type": "extract", "name": "at", "table": "stage.orders", "timestamp": stamp, "output": "at_ts"},
                {
                    "type": "sql",
                    "name": "all",
                    "sql": "SELECT 'now' AS v, count(*) AS n FROM now UNION ALL SELECT 'v0', count(*) FROM v0 "
                    "UNION ALL SELECT 'prev', count(*) FROM prev UNION ALL SELECT 'at', count(*) FROM at_ts",
                    "output": "all_",
                },
                _collect("all_"),
            ],
        }
    )
    r = project.run("tt")
    assert r.ok, r.error
    counts = {x["v"]: x["n"] for x in project.rows("analytics.collect")}
    assert counts == {"now": 3, "v0": 1, "prev": 2, "at": 2}
    assert project.step(r, "v0")["detail"] == {"source": "stage.orders", "version": 0}
    assert project.step(r, "now")["rows_out"] == 3


def test_extract_missing_table_says_did_you_mean(project: Project) -> None:
    project.seed("stage.orders", {"id": [1]})
    project.pipeline({"name": "x", "stages": [{"type": "extract", "name": "e", "table": "stage.ordrs", "output": "o"}]})
    r = project.run("x")
    assert not r.ok and r.error_stage == "e"
    assert "stage.ordrs" in (r.error or "") and "did you mean 'stage.orders'" in (r.error or "")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet", "delta"])
def test_extract_files_of_every_format_with_globs(project: Project, fmt: str) -> None:
    data = project.dir / "data"
    data.mkdir()
    if fmt == "csv":
        (data / "a.csv").write_text("id,v\n1,x\n2,y\n")
        (data / "b.csv").write_text("id,v\n3,z\n")
        path = "data/*.csv"
    elif fmt == "jsonl":
        (data / "a.jsonl").write_text('{"id": 1, "v": "x"}\n{"id": 2, "v": "y"}\n')
        (data / "b.jsonl").write_text('{"id": 3, "v": "z"}\n')
        path = "data/*.jsonl"
    elif fmt == "json":
        (data / "a.json").write_text('[{"id": 1, "v": "x"}, {"id": 2, "v": "y"}]')
        (data / "b.json").write_text('[{"id": 3, "v": "z"}]')
        path = "data/*.json"
    elif fmt == "parquet":
        pq.write_table(pa.table({"id": [1, 2], "v": ["x", "y"]}), data / "a.parquet")
        pq.write_table(pa.table({"id": [3], "v": ["z"]}), data / "b.parquet")
        path = "data/*.parquet"
    else:
        write_deltalake(str(data / "t"), pa.table({"id": [1, 2, 3], "v": ["x", "y", "z"]}))
        path = "data/t"
    stage: dict[str, Any] = {"type": "extract", "name": "e", "path": path, "output": "e"}
    if fmt == "delta":
        stage["format"] = "delta"
    project.pipeline({"name": "files", "stages": [stage, _collect("e")]})
    r = project.run("files")
    assert r.ok, r.error
    assert sorted((int(x["id"]), x["v"]) for x in project.rows("analytics.collect")) == [(1, "x"), (2, "y"), (3, "z")]
    assert project.step(r, "e")["rows_out"] == 3


def test_extract_csv_without_header_names_columns_like_spark(project: Project) -> None:
    project.file("data/x.csv", "1,a\n2,b\n")
    project.pipeline(
        {
            "name": "nh",
            "stages": [
                {
                    "type": "extract",
                    "name": "e",
                    "path": "data/x.csv",
                    "output": "e",
                    "csv": {"header": False, "all_varchar": True},
                },
                _collect("e"),
            ],
        }
    )
    assert project.run("nh").ok
    assert project.rows("analytics.collect", "_c0") == [{"_c0": "1", "_c1": "a"}, {"_c0": "2", "_c1": "b"}]


# ---------------------------------------------------------------------------------------------- sql
def test_sql_params_from_defaults_cli_and_environment(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.pipeline(
        {
            "name": "p",
            "params": {"a": 1, "b": "x", "flag": True},
            "stages": [
                {
                    "type": "sql",
                    "name": "s",
                    "sql": "SELECT ${a} AS a, '${b}' AS b, ${flag} AS flag, '$${literal}' AS lit, '${c}' AS c",
                    "params": {"c": "stage-only"},
                    "output": "s",
                    "persist": True,
                },
                _collect("s"),
            ],
        }
    )
    r = project.run("p")
    assert r.ok, r.error
    assert project.rows("analytics.collect") == [
        {"a": 1, "b": "x", "flag": True, "lit": "${literal}", "c": "stage-only"}
    ]
    # the SQL as the engine ran it (Spark's: transpiled, keywords in upper case)
    assert project.step(r, "s")["sql"].lower().startswith("select 1 as a, 'x' as b, true as flag")
    monkeypatch.setenv("TARN_PARAM_B", "from-env")
    assert project.run("p", params={"a": 7}).ok
    assert project.rows("analytics.collect")[0]["a"] == 7
    assert project.rows("analytics.collect")[0]["b"] == "from-env"


def test_sql_from_file_in_spark_dialect(project: Project) -> None:
    project.file("pipelines/sql/q.sql", "SELECT SIZE(ARRAY(1, 2, 3)) AS n, NAMED_STRUCT('a', ${x}) AS s")
    project.pipeline(
        {
            "name": "sp",
            "dialect": "spark",
            "params": {"x": 5},
            "stages": [{"type": "sql", "name": "s", "sql_file": "sql/q.sql", "output": "s"}, _collect("s")],
        }
    )
    r = project.run("sp")
    assert r.ok, r.error
    assert project.rows("analytics.collect") == [{"n": 3, "s": {"a": 5}}]


def _sql_rows(project: Project, sql: str, *cols: str) -> list[tuple[Any, ...]]:
    """Run one SQL stage collected into analytics.collect; its rows as sorted tuples of ``cols``."""
    stage = {"type": "sql", "name": "s", "sql": sql, "output": "s"}
    project.pipeline({"name": "q", "stages": [stage, _collect("s")]})
    r = project.run("q")
    assert r.ok, r.error
    return sorted(tuple(x[c] for c in cols) for x in project.rows("analytics.collect"))


def test_sql_duckdb_range_table_function(project: Project) -> None:
    sql = (
        "SELECT range AS id, 'plain' AS form FROM range(3) "
        "UNION ALL SELECT id, 'aliased' FROM range(3) t(id) "
        "UNION ALL SELECT generate_series, 'series' FROM generate_series(5, 1, -2) "
        "UNION ALL SELECT s.range, 'stepped' FROM range(1, 10, 4) s"
    )
    assert _sql_rows(project, sql, "form", "id") == [
        *[("aliased", i) for i in range(3)],
        *[("plain", i) for i in range(3)],
        ("series", 1), ("series", 3), ("series", 5),
        ("stepped", 1), ("stepped", 5), ("stepped", 9),
    ]  # fmt: skip


def test_sql_duckdb_range_lists(project: Project) -> None:
    # range()/generate_series() as lists: BIGINT elements, a stepped range's last element, empty ranges
    sql = (
        "SELECT 'a' AS k, unnest(range(1, 10, 4)) AS v "
        "UNION ALL SELECT 'b', unnest(range(10, 0, -3)) "
        "UNION ALL SELECT 'c', unnest(generate_series(1, 3)) "
        "UNION ALL SELECT 'd', unnest(range(5, 2)) "
        "UNION ALL SELECT 'e', unnest(range(n)) FROM (SELECT 2 AS n)"
    )
    assert _sql_rows(project, sql, "k", "v") == [
        ("a", 1), ("a", 5), ("a", 9),
        ("b", 1), ("b", 4), ("b", 7), ("b", 10),
        ("c", 1), ("c", 2), ("c", 3),
        ("e", 0), ("e", 1),
    ]  # fmt: skip
    assert pa.schema(DeltaTable(project.uri("analytics.collect")).schema().to_arrow()).field("v").type == pa.int64()


def test_sql_stage_must_be_a_query(project: Project) -> None:
    project.pipeline(
        {"name": "q", "stages": [{"type": "sql", "name": "s", "sql": "CREATE TABLE x (a INT)", "output": "s"}]}
    )
    r = project.run("q")
    assert not r.ok and "must be a query" in (r.error or "")


def test_sql_reads_lake_tables_by_zone_name(project: Project) -> None:
    project.seed("stage.orders", {"id": [1, 2, 3]})
    project.pipeline(
        {
            "name": "z",
            "stages": [
                {"type": "sql", "name": "s", "sql": "SELECT count(*) AS n FROM stage.orders", "output": "s"},
                _collect("s"),
            ],
        }
    )
    r = project.run("z")
    assert r.ok, r.error
    assert project.rows("analytics.collect") == [{"n": 3}]
    from tarn.pipelines.api import run_repo

    assert run_repo(project.lake).get(r.run_id).inputs == {"stage.orders": 0}


# ------------------------------------------------------------------------------------------- typing
def test_typing_with_tarn_columns(project: Project, orders_csv: Callable[[int], Path]) -> None:
    orders_csv(100)
    project.pipeline(
        {
            "name": "ty",
            "stages": [
                {
                    "type": "extract",
                    "name": "raw",
                    "path": "data/orders.csv",
                    "output": "raw",
                    "csv": {"all_varchar": True},
                },
                {
                    "type": "typing",
                    "name": "typed",
                    "input": "raw",
                    "output": "typed",
                    "columns": [
                        {"name": "order_id", "type": "long", "nullable": False},
                        {"name": "amount", "type": "decimal(10,2)"},
                    ],
                },
                _collect("typed"),
            ],
        }
    )
    r = project.run("ty")
    assert r.ok, r.error
    rows = project.rows("analytics.collect", "order_id")
    assert list(rows[0]) == ["order_id", "amount", "_errors"]
    bad = [x for x in rows if x["_errors"]]
    assert len(bad) == 4
    assert bad[0]["_errors"] == [{"field": "amount", "message": "unable to convert 'n/a' to decimal(10,2)"}]
    assert bad[0]["amount"] is None
    assert project.step(r, "typed")["detail"] == {"rows_with_errors": 4}


def test_typing_with_an_arc_schema_by_position(project: Project) -> None:
    project.file("data/o.csv", "1, 269 ,2026-01-10 15:41:00,105.01,placed\nx,2,10/01/2026,n/a,\n3,4,,,\n")
    project.file(
        "pipelines/schema.json",
        json.dumps(
            [
                {"name": "order_id", "type": "long", "nullable": False, "trim": True},
                {"name": "customer_id", "type": "integer", "nullable": False, "trim": True},
                {
                    "name": "ordered_at",
                    "type": "timestamp",
                    "nullable": True,
                    "formatters": ["yyyy-MM-dd HH:mm:ss", "dd/MM/yyyy"],
                    "timezoneId": "UTC",
                    "nullableValues": [""],
                },
                {"name": "amount", "type": "decimal", "precision": 10, "scale": 2, "nullableValues": [""]},
                {"name": "status", "type": "string", "nullable": False, "nullableValues": [""]},
            ]
        ),
    )
    project.pipeline(
        {
            "name": "arc_typing",
            "stages": [
                {
                    "type": "extract",
                    "name": "raw",
                    "path": "data/o.csv",
                    "output": "raw",
                    "csv": {"header": False, "all_varchar": True},
                },
                {
                    "type": "typing",
                    "name": "typed",
                    "input": "raw",
                    "output": "typed",
                    "schema_file": "schema.json",
                    "by_position": True,
                },
                _collect("typed"),
            ],
        }
    )
    r = project.run("arc_typing")
    assert r.ok, r.error
    rows = project.rows("analytics.collect")
    good = next(x for x in rows if x["order_id"] == 1)
    assert (
        good["customer_id"] == 269 and good["_errors"] == [] and str(good["ordered_at"]).startswith("2026-01-10 15:41")
    )
    bad = next(x for x in rows if x["customer_id"] == 2)
    fields = [e["field"] for e in bad["_errors"]]
    assert fields == ["order_id", "amount", "status"]
    assert str(bad["ordered_at"]).startswith("2026-01-10")  # the second formatter
    third = next(x for x in rows if x["order_id"] == 3)
    assert [e["field"] for e in third["_errors"]] == ["status"]
    assert third["_errors"][0]["message"] == "non-nullable field is null"


def test_typing_failfast_fails_the_run(project: Project, orders_csv: Callable[[int], Path]) -> None:
    orders_csv(30)
    project.pipeline(
        {
            "name": "ff",
            "stages": [
                {
                    "type": "extract",
                    "name": "raw",
                    "path": "data/orders.csv",
                    "output": "raw",
                    "csv": {"all_varchar": True},
                },
                {
                    "type": "typing",
                    "name": "typed",
                    "input": "raw",
                    "output": "typed",
                    "fail_mode": "failfast",
                    "columns": [{"name": "amount", "type": "double"}],
                },
            ],
        }
    )
    r = project.run("ff")
    assert not r.ok and r.error_stage == "typed" and "failfast" in (r.error or "")
    assert "n/a" in (r.error or "")


# ------------------------------------------------------------------------------------- gates and more
def test_validate_stores_a_json_message_as_data(project: Project) -> None:
    ok = "SELECT true AS valid, to_json({'bad': 0, 'total': 10}) AS message"
    project.pipeline({"name": "v", "stages": [{"type": "validate", "name": "check", "sql": ok}]})
    r = project.run("v")
    assert r.ok
    assert project.step(r, "check")["detail"] == {"valid": True, "message": {"bad": 0, "total": 10}}
    project.pipeline(
        {"name": "v", "stages": [{"type": "validate", "name": "check", "sql": "SELECT NULL::BOOLEAN, 'no data'"}]}
    )
    r = project.run("v")
    assert not r.ok and r.error_stage == "check" and "no data" in (r.error or "")
    assert project.step(r, "check")["detail"] == {"valid": None, "message": "no data"}


def test_validate_needs_exactly_one_row(project: Project) -> None:
    project.pipeline({"name": "v", "stages": [{"type": "validate", "name": "c", "sql": "SELECT true FROM range(2)"}]})
    r = project.run("v")
    assert not r.ok and "exactly one row" in (r.error or "")


def test_equal(project: Project) -> None:
    same = {
        "name": "eq",
        "stages": [
            {
                "type": "sql",
                "name": "a",
                "sql": "SELECT * FROM (VALUES (1, 'x'), (1, 'x'), (2, 'y')) t(id, v)",
                "output": "a",
            },
            {
                "type": "sql",
                "name": "b",
                "sql": "SELECT v, id FROM (VALUES (2, 'y'), (1, 'x'), (1, 'x')) t(id, v)",
                "output": "b",
            },
            {"type": "equal", "name": "same", "left": "a", "right": "b"},
        ],
    }
    project.pipeline(same)
    assert project.run("eq").ok
    same["stages"][1]["sql"] = "SELECT * FROM (VALUES (2, 'y'), (1, 'x')) t(id, v)"
    project.pipeline(same)
    r = project.run("eq")
    assert not r.ok and r.error_stage == "same"
    detail = project.step(r, "same")["detail"]
    assert detail["only_left"] == 1 and detail["only_right"] == 0 and detail["sample_left"] == [{"id": 1, "v": "x"}]


def test_execute_merge_into_a_lake_table(project: Project) -> None:
    project.seed("analytics.c", {"id": [1, 2], "v": ["a", "b"]})
    project.pipeline(
        {
            "name": "ex",
            "stages": [
                {
                    "type": "sql",
                    "name": "chg",
                    "sql": "SELECT * FROM (VALUES (2, 'B'), (3, 'C')) t(id, v)",
                    "output": "chg",
                },
                {
                    "type": "execute",
                    "name": "merge",
                    "sql": "MERGE INTO analytics.c AS t USING chg AS s ON t.id = s.id "
                    "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT *",
                },
            ],
        }
    )
    r = project.run("ex")
    assert r.ok, r.error
    assert r.strategy == "deferred"
    assert project.rows("analytics.c", "id") == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "C"}]
    step = project.step(r, "merge")
    assert step["rows_in"] == 2 and step["detail"]["token"] == f"tarn-run-{r.run_id}-merge"


def test_execute_merge_into_a_view_of_a_delta_table_reads_back_in_order(project: Project) -> None:
    """Arc's pattern: load, extract the table, MERGE INTO the view, read the result, validate (sequential)."""
    project.pipeline(
        {
            "name": "arcish",
            "dialect": "spark",
            "stages": [
                {
                    "type": "sql",
                    "name": "initial",
                    "sql": "SELECT id, 'a' AS v, 1 AS is_current FROM range(3) r(id)",
                    "output": "i",
                },
                {"type": "load", "name": "load initial", "input": "i", "path": "out/t", "mode": "overwrite"},
                {"type": "extract", "name": "current", "uri": "out/t", "output": "current"},
                {"type": "sql", "name": "chg", "sql": "SELECT CAST(1 AS BIGINT) AS id, 'b' AS v", "output": "chg"},
                {
                    "type": "execute",
                    "name": "merge",
                    "sql": "MERGE INTO current t USING (SELECT * FROM chg) s ON t.id = s.id "
                    "WHEN MATCHED AND t.v <> s.v THEN UPDATE SET is_current = 0",
                },
                {"type": "extract", "name": "result", "uri": "out/t", "output": "result"},
                {
                    "type": "validate",
                    "name": "check",
                    "sql": "SELECT SUM(is_current) = 2, TO_JSON(NAMED_STRUCT('current', SUM(is_current))) FROM result",
                },
            ],
        }
    )
    r = project.run("arcish")
    assert r.ok, r.error
    assert r.strategy == "sequential"
    assert project.step(r, "check")["detail"]["message"] == {"current": 2}


# A function the run defines, in each engine's own SQL (neither has the other's statement)
_DEFINE_TWICE = {
    "duckdb": "CREATE MACRO twice(x) AS x * 2",
    "spark": "CREATE TEMPORARY FUNCTION twice(x BIGINT) RETURNS BIGINT RETURN x * 2",
}


def test_execute_other_statements_run_on_the_engine(project: Project) -> None:
    project.pipeline(
        {
            "name": "ddl",
            "dialect": project.engine,
            "stages": [
                {"type": "execute", "name": "macro", "sql": _DEFINE_TWICE[project.engine]},
                {"type": "sql", "name": "s", "sql": "SELECT twice(21) AS n", "output": "s"},
                _collect("s"),
            ],
        }
    )
    assert project.run("ddl").ok
    assert project.rows("analytics.collect") == [{"n": 42}]
    project.pipeline(
        {"name": "bad", "stages": [{"type": "execute", "name": "ins", "sql": "INSERT INTO analytics.x VALUES (1)"}]}
    )
    r = project.run("bad")
    assert not r.ok and "load" in (r.error or "")


def test_log_and_config_stages(project: Project) -> None:
    project.pipeline(
        {
            "name": "lc",
            "stages": [
                {
                    "type": "config",
                    "name": "cfg",
                    "sql": "SELECT to_json({'limit_n': 2, 'label': 'hi'})",
                    "provides": ["limit_n", "label"],
                },
                {
                    "type": "sql",
                    "name": "s",
                    "sql": "SELECT unnest(range(${limit_n}::BIGINT)) AS id, '${label}' AS l",
                    "output": "s",
                },
                {"type": "log", "name": "show", "sql": "SELECT * FROM s ORDER BY id"},
            ],
        }
    )
    r = project.run("lc")
    assert r.ok, r.error
    assert project.step(r, "show")["detail"]["rows"] == [{"id": 0, "l": "hi"}, {"id": 1, "l": "hi"}]
    assert project.step(r, "cfg")["detail"]["values"] == {"limit_n": "2", "label": "hi"}


def test_environments_filter_stages(project: Project) -> None:
    project.pipeline(
        {
            "name": "envs",
            "stages": [
                {"type": "sql", "name": "s", "sql": "SELECT 1 AS n", "output": "s"},
                {
                    "type": "load",
                    "name": "prod",
                    "input": "s",
                    "table": "analytics.prod_only",
                    "environments": ["production"],
                },
                {
                    "type": "load",
                    "name": "test",
                    "input": "s",
                    "table": "analytics.test_only",
                    "environments": ["test"],
                },
            ],
        }
    )
    r = project.run("envs", env="test")
    assert r.ok
    assert project.version("analytics.prod_only") is None and project.version("analytics.test_only") == 0
    assert project.step(r, "prod")["state"] == "skipped"
