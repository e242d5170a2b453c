"""Every load mode on real Delta tables: append, overwrite, replace_where, merge (keys, clauses, by-source delete,
a condition), scd2 (exact counts), partition_by, file outputs, and exactly-once tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project


def _ids(n: int) -> str:
    """A relation of ``id`` 0..n-1 (BIGINT) that reads the same on both engines. Not DuckDB's ``FROM range(n)``:
    sqlglot writes it for Spark without its column (see test_sql_duckdb_range_table_function); and ``::BIGINT``
    since Spark's ``SEQUENCE`` of INT literals is of INT where DuckDB's ``range`` is BIGINT."""
    return f"(SELECT unnest(range({n}::BIGINT)) AS id) AS ids"


def _load_pipeline(name: str, sql: str, load: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        **extra,
        "stages": [
            {"type": "sql", "name": "src", "sql": sql, "output": "src"},
            {"type": "load", "name": "save", "input": "src", **load},
        ],
    }


def test_append_creates_then_appends_and_catalogues(project: Project) -> None:
    project.pipeline(_load_pipeline("app", f"SELECT id, 'x' || id AS v FROM {_ids(5)}", {"table": "analytics.things"}))
    r1 = project.run("app")
    assert r1.ok, r1.error
    r2 = project.run("app")
    assert r2.ok, r2.error
    assert len(project.rows("analytics.things")) == 10
    step = project.step(r2, "save")
    assert step["rows_in"] == 5 and step["rows_out"] == 5 and step["delta_version"] == 1
    assert step["detail"]["token"] == f"tarn-run-{r2.run_id}-save"
    # catalogued: tarn tables / tarn query see it
    assert project.lake.table("analytics.things")["rows"] == 10
    assert project.lake.query("SELECT count(*) AS n FROM analytics.things").table.to_pylist() == [{"n": 10}]
    # the commit carries the token as an app transaction
    assert DeltaTable(project.uri("analytics.things")).transaction_version(f"tarn-run-{r2.run_id}-save") == 1


def test_bare_table_name_goes_to_analytics(project: Project) -> None:
    project.pipeline(_load_pipeline("bare", "SELECT 1 AS id", {"table": "plain"}))
    assert project.run("bare").ok
    assert project.rows("analytics.plain") == [{"id": 1}]


def test_overwrite_replaces_rows_and_schema(project: Project) -> None:
    project.seed("analytics.t", {"id": [1, 2, 3], "old": ["a", "b", "c"]})
    project.pipeline(_load_pipeline("ow", "SELECT 10 AS id, 'new' AS v", {"table": "analytics.t", "mode": "overwrite"}))
    assert project.run("ow").ok
    assert project.rows("analytics.t") == [{"id": 10, "v": "new"}]


def test_replace_where_replaces_only_matching_rows(project: Project) -> None:
    project.seed("analytics.daily", {"day": ["d1", "d1", "d2"], "n": [1, 2, 3]})
    project.pipeline(
        _load_pipeline(
            "rw",
            "SELECT 'd1' AS day, 100::BIGINT AS n",
            {"table": "analytics.daily", "mode": "replace_where", "predicate": "day = '${day}'"},
            params={"day": "d1"},
        )
    )
    assert project.run("rw").ok
    assert project.rows("analytics.daily", "day,n") == [{"day": "d1", "n": 100}, {"day": "d2", "n": 3}]


def test_replace_where_rejects_rows_outside_the_predicate(project: Project) -> None:
    project.seed("analytics.daily", {"day": ["d1"], "n": [1]})
    project.pipeline(
        _load_pipeline(
            "rw",
            "SELECT 'd9' AS day, 1::BIGINT AS n",
            {"table": "analytics.daily", "mode": "replace_where", "predicate": "day = 'd1'"},
        )
    )
    r = project.run("rw")
    assert not r.ok and r.error_stage == "save"
    assert project.rows("analytics.daily") == [{"day": "d1", "n": 1}]


def test_merge_by_keys_updates_and_inserts(project: Project) -> None:
    project.seed("analytics.c", {"id": [1, 2, 3], "v": ["a", "b", "c"]})
    project.pipeline(
        _load_pipeline(
            "m",
            "SELECT * FROM (VALUES (2, 'B'), (4, 'D')) t(id, v)",
            {"table": "analytics.c", "mode": "merge", "keys": ["id"]},
        )
    )
    r = project.run("m")
    assert r.ok, r.error
    assert project.rows("analytics.c", "id") == [
        {"id": 1, "v": "a"},
        {"id": 2, "v": "B"},
        {"id": 3, "v": "c"},
        {"id": 4, "v": "D"},
    ]
    metrics = project.step(r, "save")["detail"]["metrics"]
    assert metrics["num_target_rows_updated"] == 1 and metrics["num_target_rows_inserted"] == 1


def test_merge_clauses_conditions_and_not_matched_by_source_delete(project: Project) -> None:
    project.seed("analytics.c", {"id": [1, 2, 3, 4], "v": [10, 20, 30, 40], "keep": [True, True, False, True]})
    project.pipeline(
        _load_pipeline(
            "m",
            "SELECT * FROM (VALUES (1, 11, true, 'U'), (2, 0, true, 'D'), (5, 50, true, 'U'), (6, 60, true, 'X'))"
            " t(id, v, keep, op)",
            {
                "table": "analytics.c",
                "mode": "merge",
                "keys": ["id"],
                "when_matched": [
                    {"action": "delete", "condition": "source.op = 'D'"},
                    {"action": "update", "condition": "source.v > target.v", "set": {"v": "source.v"}},
                ],
                "when_not_matched": [
                    {"action": "insert", "condition": "source.op <> 'X'", "set": {"id": "source.id", "v": "source.v"}}
                ],
                "when_not_matched_by_source": [{"action": "delete", "condition": "target.keep = false"}],
            },
        )
    )
    r = project.run("m")
    assert r.ok, r.error
    rows = [(x["id"], x["v"]) for x in project.rows("analytics.c", "id")]
    # 1 updated (11 > 10); 2 deleted; 3 deleted by source (keep false); 4 untouched; 5 inserted; 6 not (op X)
    assert rows == [(1, 11), (4, 40), (5, 50)]


def test_merge_with_a_condition_instead_of_keys(project: Project) -> None:
    project.seed("analytics.c", {"id": [1, 2], "v": ["a", "b"]})
    project.pipeline(
        _load_pipeline(
            "m",
            "SELECT 2 AS key, 'B' AS v",
            {
                "table": "analytics.c",
                "mode": "merge",
                "on": "target.id = source.key",
                "when_matched": [{"action": "update", "set": {"v": "source.v"}}],
                "when_not_matched": [],
            },
        )
    )
    assert project.run("m").ok
    assert project.rows("analytics.c", "id") == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}]


def test_merge_creates_a_missing_table_and_rejects_duplicate_keys(project: Project) -> None:
    project.pipeline(
        _load_pipeline("m", f"SELECT id FROM {_ids(3)}", {"table": "analytics.n", "mode": "merge", "keys": ["id"]})
    )
    assert project.run("m").ok
    assert len(project.rows("analytics.n")) == 3
    project.pipeline(
        _load_pipeline(
            "dup", "SELECT 1 AS id UNION ALL SELECT 1", {"table": "analytics.n", "mode": "merge", "keys": ["id"]}
        )
    )
    r = project.run("dup")
    assert not r.ok and "more than once" in (r.error or "")
    assert len(project.rows("analytics.n")) == 3


SCD2 = {"table": "analytics.customers", "mode": "scd2", "keys": ["id"], "track": ["name", "state"]}


def _customers(project: Project, rows: list[tuple[int, str, str, str]]) -> None:
    body = "\n".join(f"{i},{n},{s},{note}" for i, n, s, note in rows)
    project.file("data/customers.csv", "id,name,state,note\n" + body + "\n")


def test_scd2_counts_exact(project: Project) -> None:
    """300 customers; then 340 rows: 32 changed (tracked), 8 changed only in an untracked column, 40 new."""
    initial = [(i, f"name{i}", "CA", "n") for i in range(1, 301)]
    _customers(project, initial)
    project.pipeline(
        {
            "name": "scd",
            "stages": [
                {"type": "extract", "name": "read", "path": "data/customers.csv", "output": "c"},
                {"type": "load", "name": "save", "input": "c", **SCD2},
            ],
        }
    )
    r1 = project.run("scd")
    assert r1.ok, r1.error
    rows = project.rows("analytics.customers")
    assert len(rows) == 300 and all(r["is_current"] and r["valid_to"] is None for r in rows)

    update = []
    for i in range(1, 301):
        if i <= 32:
            update.append((i, f"name{i}", "TX", "n"))  # tracked change
        elif i <= 40:
            update.append((i, f"name{i}", "CA", "changed note"))  # untracked change: no new version
        elif i <= 300 - 0:
            update.append((i, f"name{i}", "CA", "n"))
    update += [(i, f"name{i}", "NY", "n") for i in range(301, 341)]
    assert len(update) == 340
    _customers(project, update)
    r2 = project.run("scd")
    assert r2.ok, r2.error
    rows = project.rows("analytics.customers")
    assert len(rows) == 372
    expired = [r for r in rows if not r["is_current"]]
    assert len(expired) == 32
    assert all(r["valid_to"] is not None and r["state"] == "CA" for r in expired)
    current = [r for r in rows if r["is_current"]]
    assert len(current) == 340 and len({r["id"] for r in current}) == 340
    assert all(r["valid_to"] is None for r in current)
    # the closed version ends exactly where the new one starts
    new_versions = {r["id"]: r for r in current if r["id"] <= 32}
    for r in expired:
        assert r["valid_to"] == new_versions[r["id"]]["valid_from"]
    # running the same input again changes nothing
    r3 = project.run("scd")
    assert r3.ok and len(project.rows("analytics.customers")) == 372


def test_scd2_close_missing_and_effective_at(project: Project) -> None:
    project.pipeline(
        _load_pipeline(
            "s",
            "SELECT * FROM (VALUES (1, 'a', DATE '2024-01-01'), (2, 'b', DATE '2024-01-01')) t(id, name, day)",
            {**SCD2, "track": ["name"], "effective_at": "CAST(day AS TIMESTAMPTZ)", "close_missing": True},
        )
    )
    assert project.run("s").ok
    project.pipeline(
        _load_pipeline(
            "s",
            "SELECT * FROM (VALUES (1, 'A', DATE '2024-02-01')) t(id, name, day)",
            {**SCD2, "track": ["name"], "effective_at": "CAST(day AS TIMESTAMPTZ)", "close_missing": True},
        )
    )
    r = project.run("s")
    assert r.ok, r.error
    rows = project.rows("analytics.customers", "id,valid_from")
    assert [(x["id"], x["name"], x["is_current"]) for x in rows] == [(1, "a", False), (1, "A", True), (2, "b", False)]
    assert str(rows[1]["valid_from"])[:10] == "2024-02-01"
    assert rows[0]["valid_to"] == rows[1]["valid_from"]
    assert rows[2]["valid_to"] is not None  # closed: missing from the snapshot


def test_partition_by(project: Project) -> None:
    project.pipeline(
        _load_pipeline(
            "p",
            f"SELECT id, CASE WHEN id % 2 = 0 THEN 'even' ELSE 'odd' END AS kind FROM {_ids(6)}",
            {"table": "analytics.parts", "partition_by": ["kind"]},
        )
    )
    assert project.run("p").ok
    assert DeltaTable(project.uri("analytics.parts")).metadata().partition_columns == ["kind"]


def test_load_to_a_path_as_delta_and_as_files(project: Project) -> None:
    project.pipeline(
        {
            "name": "paths",
            "stages": [
                {"type": "sql", "name": "src", "sql": f"SELECT id FROM {_ids(4)}", "output": "src"},
                {"type": "load", "name": "d", "input": "src", "path": "out/delta_t", "mode": "overwrite"},
                {
                    "type": "load",
                    "name": "pq",
                    "input": "src",
                    "path": "out/pq",
                    "format": "parquet",
                    "mode": "overwrite",
                },
                {"type": "load", "name": "csv", "input": "src", "path": "out/csv", "format": "csv"},
                {"type": "load", "name": "js", "input": "src", "path": "out/js", "format": "jsonl"},
            ],
        }
    )
    r = project.run("paths")
    assert r.ok, r.error
    assert len(project.rows(str(project.dir / "out/delta_t"))) == 4
    import pyarrow.parquet as pq

    assert pq.read_table(next((project.dir / "out/pq").glob("*.parquet"))).num_rows == 4
    assert len(next((project.dir / "out/csv").glob("*.csv")).read_text().splitlines()) == 5
    assert len(next((project.dir / "out/js").glob("*.jsonl")).read_text().splitlines()) == 4


def test_streams_many_batches(project: Project) -> None:
    project.pipeline(_load_pipeline("big", f"SELECT id FROM {_ids(300000)}", {"table": "analytics.big"}))
    r = project.run("big")
    assert r.ok and project.step(r, "save")["rows_out"] == 300000
    assert DeltaTable(project.uri("analytics.big")).to_pyarrow_dataset().count_rows() == 300000
    assert pa.schema(DeltaTable(project.uri("analytics.big")).schema().to_arrow()).field("id").type == pa.int64()


def test_scd2_streams_a_large_change_set(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from tarn.pipelines import loads

    monkeypatch.setattr(loads, "SOURCE_IN_MEMORY_ROWS", 0)  # always stream the staged rows
    doc = _load_pipeline("s", f"SELECT id, 'a' AS name FROM {_ids(10)}", {**SCD2, "track": ["name"]})
    project.pipeline(doc)
    assert project.run("s").ok
    doc["stages"][0]["sql"] = f"SELECT id, CASE WHEN id < 3 THEN 'b' ELSE 'a' END AS name FROM {_ids(12)}"
    project.pipeline(doc)
    assert project.run("s").ok
    rows = project.rows("analytics.customers")
    assert len(rows) == 15 and sum(not r["is_current"] for r in rows) == 3


def test_runs_merging_into_one_table_at_once_all_succeed(project: Project) -> None:
    """Two runs (threads) merging into one table at the same moment: a commit conflict is retried with the
    run's pinned source, so every run succeeds and the table holds each key once."""
    from concurrent.futures import ThreadPoolExecutor

    sql = f"SELECT id, id * 2 AS v FROM {_ids(20000)}"
    project.pipeline(
        _load_pipeline("m1", sql, {"table": "analytics.shared", "mode": "merge", "keys": ["id"]}),
    )
    project.pipeline(
        _load_pipeline("m2", sql, {"table": "analytics.shared", "mode": "merge", "keys": ["id"]}),
    )
    assert project.run("m1").ok  # the table exists: every later run is a real merge
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(project.run, ["m1", "m2"] * 4))
    assert [r.error for r in results if not r.ok] == []
    rows = project.lake.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM analytics.shared").table
    assert rows.to_pylist() == [{"n": 20000, "d": 20000}]
