"""The pipeline spec (frozen, unknown keys rejected, tagged on ``type``), params and placeholders, Java date
patterns, and the sqlglot helpers (references, MERGE parsing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlglot
from pydantic import ValidationError

from tarn.errors import ConfigError
from tarn.pipelines import params as P
from tarn.pipelines.project import parse_pipeline
from tarn.pipelines.schemas import java_to_strptime
from tarn.pipelines.spec import (
    CronTrigger,
    ExtractStage,
    LoadStage,
    OnCommitTrigger,
    PipelineSpec,
    SqlStage,
    split_table,
)
from tarn.pipelines.sqltools import parse_merge, references


def _spec(stages: list[dict[str, Any]], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"name": "p", "stages": stages, **extra})


def test_stages_are_tagged_frozen_and_strict() -> None:
    spec = _spec(
        [
            {"type": "extract", "name": "e", "table": "stage.orders", "output": "o", "version": 3},
            {"type": "sql", "name": "s", "sql": "SELECT 1", "output": "x"},
            {"type": "load", "name": "l", "input": "x", "table": "t", "mode": "merge", "keys": ["id"]},
        ],
        triggers=[{"type": "manual"}, {"type": "on_commit"}, {"type": "cron", "schedule": "*/5 0-6 * * MON-FRI"}],
    )
    assert [type(s) for s in spec.stages] == [ExtractStage, SqlStage, LoadStage]
    assert isinstance(spec.triggers[1], OnCommitTrigger) and spec.triggers[1].min_events == 1
    assert isinstance(spec.triggers[2], CronTrigger)
    with pytest.raises(ValidationError):
        spec.stages[0].name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        _spec([{"type": "sql", "name": "s", "sql": "SELECT 1", "output": "x", "outptu": "y"}])


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"type": "extract", "name": "e", "output": "o"}, "exactly one of 'table', 'path' or 'uri'"),
        ({"type": "extract", "name": "e", "path": "a.csv", "version": 1, "output": "o"}, "needs a Delta table"),
        ({"type": "extract", "name": "e", "table": "t", "version": 1, "timestamp": "x", "output": "o"}, "at most one"),
        ({"type": "extract", "name": "e", "table": "lake.t", "output": "o"}, "zone.table"),
        ({"type": "sql", "name": "s", "output": "o"}, "exactly one of 'sql' or 'sql_file'"),
        ({"type": "sql", "name": "s", "sql": "SELECT 1", "output": "bad name"}, "must be an identifier"),
        ({"type": "typing", "name": "t", "input": "i", "output": "o"}, "exactly one of 'schema_file'"),
        ({"type": "expect", "name": "x", "input": "i", "output": "o", "expectations": []}, "at least 1"),
        ({"type": "load", "name": "l", "input": "i", "table": "t", "mode": "replace_where"}, "needs 'predicate'"),
        ({"type": "load", "name": "l", "input": "i", "table": "t", "mode": "merge"}, "exactly one of 'keys' or 'on'"),
        ({"type": "load", "name": "l", "input": "i", "table": "t", "keys": ["id"]}, "only applies to mode"),
        (
            {"type": "load", "name": "l", "input": "i", "table": "t", "mode": "merge", "keys": ["k"],
             "when_not_matched": [{"action": "delete"}]},
            "not one of insert",
        ),
        ({"type": "load", "name": "l", "input": "i", "path": "p", "format": "csv", "mode": "merge", "keys": ["k"]},
         "needs a Delta table"),
        ({"type": "load", "name": "l", "input": "i", "table": "t", "mode": "scd2", "keys": ["k"],
          "track": ["valid_to"]}, "cannot also be keys or tracked"),
    ],
)  # fmt: skip
def test_stage_rules(stage: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec([stage])


def test_pipeline_rules() -> None:
    with pytest.raises(ValidationError, match="lower_snake_case"):
        PipelineSpec.model_validate({"name": "Bad-Name", "stages": [{"type": "log", "name": "l", "sql": "SELECT 1"}]})
    with pytest.raises(ValidationError, match="5 fields"):
        _spec([{"type": "log", "name": "l", "sql": "SELECT 1"}], triggers=[{"type": "cron", "schedule": "* *"}])
    with pytest.raises(ValidationError, match=r"zone\.table"):
        _spec([{"type": "log", "name": "l", "sql": "SELECT 1"}], triggers=[{"type": "on_commit", "tables": ["x"]}])


def test_project_loader_errors_name_the_place_and_suggest() -> None:
    with pytest.raises(ConfigError) as e:
        parse_pipeline(
            {"name": "p", "stages": [{"type": "load", "name": "l", "input": "i", "table": "t", "moed": "append"}]},
            where="p.yaml",
        )
    assert "stages.0.load.moed: unknown key 'moed' (did you mean 'mode'?)" in str(e.value)


def test_split_table() -> None:
    assert split_table("orders") == ("analytics", "orders")
    assert split_table("stage.orders", "analytics") == ("stage", "orders")
    with pytest.raises(ValueError, match=r"zone\.table"):
        split_table("raw.orders")


def test_placeholders_and_substitution() -> None:
    assert P.placeholders("SELECT ${a}, ${b}, ${a}, $${c}") == ["a", "b"]
    assert P.substitute("x ${a} $${a}", {"a": "1"}, "w") == "x 1 ${a}"
    with pytest.raises(ConfigError, match="placeholder \\$\\{b\\} has no value"):
        P.substitute("${b}", {"a": "1"}, "w")
    assert P.render(True) == "true" and P.render(2.5) == "2.5"
    assert P.parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError):
        P.parse_assignments(["novalue"])


def test_placeholder_check_finds_every_kind_of_mismatch(tmp_path: Path) -> None:
    spec = _spec(
        [
            {"type": "sql", "name": "a", "sql": "SELECT ${used}, ${missing}", "output": "a"},
            {"type": "sql", "name": "b", "sql": "SELECT 1", "params": {"orphan": 1}, "output": "b"},
            {"type": "load", "name": "c", "input": "a", "table": "${used}_t"},
            {"type": "config", "name": "cfg", "sql": "SELECT 1 AS late", "provides": ["late"]},
            {"type": "sql", "name": "d", "sql": "SELECT ${late}", "output": "d"},
        ],
        params={"used": "x", "unused": 1},
    )
    messages = [p.message for p in P.check_placeholders(spec, tmp_path).problems]
    assert any("${missing} has no value" in m for m in messages)
    assert any("param 'orphan' has no ${orphan}" in m for m in messages)
    assert any("param 'unused' is not used" in m for m in messages)
    assert not any("late" in m for m in messages)


def test_resolve_values_precedence() -> None:
    spec = _spec(
        [{"type": "sql", "name": "s", "sql": "SELECT ${a}, ${b}, ${c}", "output": "s"}],
        params={"a": 1, "b": 2, "c": None},
    )
    assert P.resolve_values(spec, {"c": 3}, env={"TARN_PARAM_B": "env"}) == {"a": "1", "b": "env", "c": "3"}
    with pytest.raises(ConfigError, match="required"):
        P.resolve_values(spec, {}, env={})


@pytest.mark.parametrize(
    ("java", "strptime"),
    [
        ("yyyy-MM-dd HH:mm:ss", "%Y-%m-%d %H:%M:%S"),
        ("dd/MM/yyyy", "%d/%m/%Y"),
        ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "%Y-%m-%dT%H:%M:%S.%g%z"),
        ("d MMM yyyy", "%-d %b %Y"),
        ("h:mm a", "%-I:%M %p"),
    ],
)
def test_java_date_patterns(java: str, strptime: str) -> None:
    assert java_to_strptime(java) == strptime


def test_references_and_merge_parsing() -> None:
    stmts = sqlglot.parse(
        "WITH c AS (SELECT * FROM stage.orders) SELECT * FROM c JOIN customers USING (id), read_csv('x.csv')",
        read="duckdb",
    )
    refs = references([s for s in stmts if s is not None])
    assert refs.tables == ("stage.orders",) and refs.names == ("customers",)
    merge = sqlglot.parse_one(
        "MERGE INTO current t USING (SELECT * FROM staged) s ON t.id = s.mk "
        "WHEN MATCHED AND t.Flag = 1 THEN UPDATE SET valid_to = s.valid_from "
        "WHEN MATCHED THEN DELETE "
        "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v) "
        "WHEN NOT MATCHED BY SOURCE THEN DELETE",
        read="spark",
    )
    m = parse_merge(merge, dialect="spark", engine_dialect="duckdb", where="w")  # type: ignore[arg-type]
    assert m.target == "current" and m.plan.source_alias == "s" and m.plan.target_alias == "t"
    assert m.source_sql == "SELECT * FROM staged"
    assert m.plan.predicate == "t.id = s.mk"
    assert m.plan.matched[0].condition == 't."Flag" = 1' and m.plan.matched[0].set == {"valid_to": "s.valid_from"}
    assert m.plan.matched[1].action == "delete"
    assert m.plan.not_matched[0].set == {"id": "s.id", "v": "s.v"}
    assert m.plan.not_matched_by_source[0].action == "delete"
