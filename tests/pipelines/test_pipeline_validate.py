"""``tarn validate`` catches each class of mistake without running anything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tarn.errors import ConfigError
from tarn.pipelines import api
from tarn.pipelines.validate import Problem, errors

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project

GOOD: dict[str, Any] = {
    "name": "good",
    "params": {"min": 0},
    "triggers": [{"type": "on_commit", "tables": ["stage.orders"], "min_events": 2, "max_wait": 30}],
    "stages": [
        {"type": "extract", "name": "read", "table": "stage.orders", "output": "orders"},
        {"type": "sql", "name": "big", "sql": "SELECT * FROM orders WHERE amount > ${min}", "output": "big"},
        {"type": "load", "name": "save", "input": "big", "table": "analytics.big_orders"},
    ],
}


def _messages(problems: list[Problem]) -> str:
    return "\n".join(p.message for p in errors(problems))


@pytest.fixture
def proj(project: Project) -> Project:
    project.seed("stage.orders", {"id": [1], "amount": [5]})
    project.pipeline(GOOD)
    return project


def _check(p: Project, doc: dict[str, Any] | None = None, *, raw: str | None = None) -> str:
    if raw is not None:
        (p.dir / "pipelines" / "bad.yaml").write_text(raw)
    elif doc is not None:
        p.pipeline(doc, file="bad.yaml")
    return _messages(api.validate(p.lake))


def _with_stage(stage: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "bad",
        "stages": [{"type": "extract", "name": "read", "table": "stage.orders", "output": "orders"}, stage],
        **extra,
    }


def test_a_good_project_has_no_problems(proj: Project) -> None:
    assert api.validate(proj.lake) == []


def test_unknown_keys_with_did_you_mean(proj: Project) -> None:
    msg = _check(proj, _with_stage({"type": "load", "name": "s", "inptu": "orders", "table": "analytics.x"}))
    assert "unknown key 'inptu' (did you mean 'input'?)" in msg
    msg = _check(proj, {"name": "bad", "stagse": []})
    assert "unknown key 'stagse' (did you mean 'stages'?)" in msg
    msg = _check(
        proj,
        _with_stage(
            {
                "type": "expect",
                "name": "e",
                "input": "orders",
                "output": "o",
                "expectations": [{"name": "x", "chek": "true"}],
            }
        ),
    )
    assert "unknown key 'chek' (did you mean 'check'?)" in msg


def test_unknown_stage_type(proj: Project) -> None:
    msg = _check(proj, _with_stage({"type": "sqll", "name": "s", "sql": "SELECT 1", "output": "x"}))
    assert "unknown type 'sqll' (did you mean 'sql'?)" in msg


def test_sql_that_does_not_parse(proj: Project) -> None:
    msg = _check(proj, _with_stage({"type": "sql", "name": "s", "sql": "SELEC * FROM orders", "output": "x"}))
    assert "stage 's'" in msg and "does not parse" in msg


def test_sql_stage_that_is_not_a_query(proj: Project) -> None:
    msg = _check(proj, _with_stage({"type": "sql", "name": "s", "sql": "DROP TABLE orders", "output": "x"}))
    assert "must be a query" in msg


def test_view_that_no_earlier_stage_produces(proj: Project) -> None:
    msg = _check(proj, _with_stage({"type": "sql", "name": "s", "sql": "SELECT * FROM ordrs", "output": "x"}))
    assert "reads 'ordrs', which no earlier stage produces (did you mean 'orders'?)" in msg
    msg = _check(proj, _with_stage({"type": "load", "name": "s", "input": "nothing", "table": "analytics.x"}))
    assert "reads 'nothing'" in msg


def test_view_produced_only_in_another_environment(proj: Project) -> None:
    doc = {
        "name": "bad",
        "stages": [
            {"type": "sql", "name": "a", "sql": "SELECT 1 AS n", "output": "a", "environments": ["test"]},
            {
                "type": "sql",
                "name": "b",
                "sql": "SELECT * FROM a",
                "output": "b",
                "environments": ["test", "production"],
            },
        ],
    }
    assert "in environment 'production'" in _check(proj, doc)


def test_params_and_placeholders_must_match(proj: Project) -> None:
    msg = _check(
        proj, _with_stage({"type": "sql", "name": "s", "sql": "SELECT ${limit}", "output": "x"}, params={"lmit": 1})
    )
    assert "placeholder ${limit} has no value (did you mean 'lmit'?)" in msg
    assert "param 'lmit' is not used by any stage" in msg
    msg = _check(proj, _with_stage({"type": "sql", "name": "s", "sql": "SELECT 1", "params": {"x": 1}, "output": "x"}))
    assert "param 'x' has no ${x} placeholder" in msg


def test_a_table_that_does_not_exist(proj: Project) -> None:
    msg = _check(proj, _with_stage({"type": "sql", "name": "s", "sql": "SELECT * FROM stage.ordres", "output": "x"}))
    assert (
        "reads the table stage.ordres, which does not exist and no pipeline writes (did you mean 'stage.orders'?)"
        in msg
    )


def test_tables_written_by_other_pipelines_are_known(proj: Project) -> None:
    doc = _with_stage({"type": "sql", "name": "s", "sql": "SELECT * FROM analytics.big_orders", "output": "x"})
    assert _check(proj, doc) == ""


def test_a_cycle_between_pipelines(proj: Project) -> None:
    proj.pipeline(
        {
            "name": "back",
            "stages": [
                {"type": "extract", "name": "r", "table": "analytics.big_orders", "output": "b"},
                {"type": "load", "name": "w", "input": "b", "table": "stage.orders"},
            ],
        }
    )
    msg = _messages(api.validate(proj.lake))
    assert "cycle" in msg and "good" in msg and "back" in msg
    with pytest.raises(ConfigError, match="cycle"):
        api.plan(proj.lake, ["good"])


def test_missing_sql_and_schema_files(proj: Project) -> None:
    assert "does not exist" in _check(
        proj, _with_stage({"type": "sql", "name": "s", "sql_file": "nope.sql", "output": "x"})
    )
    assert "does not exist" in _check(
        proj, _with_stage({"type": "typing", "name": "t", "input": "orders", "output": "x", "schema_file": "no.json"})
    )


def test_duplicate_stage_and_pipeline_names(proj: Project) -> None:
    doc = _with_stage({"type": "sql", "name": "read", "sql": "SELECT 1", "output": "x"})
    assert "duplicate stage names: ['read']" in _check(proj, doc)
    assert "is also used by" in _check(proj, {**GOOD})


def test_load_keys_that_do_not_belong_to_the_mode(proj: Project) -> None:
    msg = _check(
        proj,
        _with_stage(
            {
                "type": "load",
                "name": "s",
                "input": "orders",
                "table": "analytics.x",
                "mode": "merge",
                "keys": ["id"],
                "predicate": "x",
            }
        ),
    )
    assert "'predicate' only applies to mode 'replace_where'" in msg
    msg = _check(
        proj, _with_stage({"type": "load", "name": "s", "input": "orders", "table": "analytics.x", "mode": "scd2"})
    )
    assert "mode 'scd2' needs 'keys'" in msg


def test_merge_into_a_view_that_is_not_a_delta_table(proj: Project) -> None:
    doc = _with_stage(
        {
            "type": "execute",
            "name": "m",
            "sql": "MERGE INTO big USING orders ON big.id = orders.id WHEN MATCHED THEN DELETE",
        }
    )
    doc["stages"].insert(1, {"type": "sql", "name": "big", "sql": "SELECT * FROM orders", "output": "big"})
    assert "not extracted from a Delta table" in _check(proj, doc)


def test_bad_trigger(proj: Project) -> None:
    msg = _check(
        proj,
        {
            **_with_stage({"type": "log", "name": "l", "sql": "SELECT 1"}),
            "triggers": [{"type": "cron", "schedule": "every day"}],
        },
    )
    assert "must have 5 fields" in msg
    assert "unknown type 'crn'" in _check(
        proj, {**_with_stage({"type": "log", "name": "l", "sql": "SELECT 1"}), "triggers": [{"type": "crn"}]}
    )


def test_invalid_yaml(proj: Project) -> None:
    assert "not valid YAML" in _check(proj, raw="name: [unclosed\n")


def test_missing_data_files_are_only_warnings(proj: Project) -> None:
    proj.pipeline(
        _with_stage({"type": "extract", "name": "f", "path": "data/none.csv", "output": "f"}), file="bad.yaml"
    )
    problems = api.validate(proj.lake)
    assert errors(problems) == []
    assert [p.severity for p in problems] == ["warning"]


def test_running_a_pipeline_checks_params_first(proj: Project) -> None:
    proj.pipeline(
        _with_stage({"type": "sql", "name": "s", "sql": "SELECT ${x}", "output": "x"}, params={"x": None}),
        file="bad.yaml",
    )
    with pytest.raises(ConfigError, match="required param"):
        proj.run("bad")
    with pytest.raises(ConfigError, match="has no param 'y'"):
        proj.run("bad", params={"x": 1, "y": 2})
    assert api.runs(proj.lake) == []  # nothing ran, nothing recorded
