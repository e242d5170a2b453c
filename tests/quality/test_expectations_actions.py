"""Expectations: the four actions (warn, drop, quarantine, fail), counts recorded per expectation on every run
(passing or failing), quarantined rows in the quarantine table with the expectation's name."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tarn.pipelines.api import run_repo

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project

# 20 rows: id 1..20; amount = id * 10 except NULL for id % 5 == 0; country 'XX' for id % 4 == 0
SOURCE = (
    "SELECT range AS id, CASE WHEN range % 5 = 0 THEN NULL ELSE range * 10 END AS amount, "
    "CASE WHEN range % 4 = 0 THEN 'XX' ELSE 'FR' END AS country FROM range(1, 21)"
)


def _pipeline(expectations: list[dict[str, Any]], **expect: Any) -> dict[str, Any]:
    return {
        "name": "quality",
        "stages": [
            {"type": "sql", "name": "src", "sql": SOURCE, "output": "src"},
            {
                "type": "expect",
                "name": "checks",
                "input": "src",
                "output": "clean",
                "expectations": expectations,
                **expect,
            },
            {"type": "load", "name": "save", "input": "clean", "table": "analytics.clean", "mode": "overwrite"},
        ],
    }


def _counts(step: dict[str, Any]) -> dict[str, tuple[str, int, int]]:
    return {e["name"]: (e["action"], e["failed"], e["total"]) for e in step["expectations"]}


def test_warn_keeps_rows_and_counts(project: Project) -> None:
    project.pipeline(_pipeline([{"name": "has amount", "check": "amount IS NOT NULL", "action": "warn"}]))
    r = project.run("quality")
    assert r.ok, r.error
    step = project.step(r, "checks")
    assert _counts(step) == {"has amount": ("warn", 4, 20)}
    assert step["rows_in"] == 20 and step["rows_out"] == 20
    assert len(project.rows("analytics.clean")) == 20


def test_drop_removes_rows_and_counts_null_as_failure(project: Project) -> None:
    project.pipeline(_pipeline([{"name": "big", "check": "amount > 50", "action": "drop"}]))
    r = project.run("quality")
    assert r.ok, r.error
    # fails: ids 1..5 (amount <= 50, or NULL for 5) and 10, 15, 20 (NULL)
    assert _counts(project.step(r, "checks")) == {"big": ("drop", 8, 20)}
    ids = sorted(x["id"] for x in project.rows("analytics.clean"))
    assert ids == [6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19]
    assert project.version("quarantine.quality") is None


def test_quarantine_moves_rows_with_the_expectation_names(project: Project) -> None:
    project.pipeline(
        _pipeline(
            [
                {"name": "known country", "check": "country <> 'XX'", "action": "quarantine"},
                {"name": "has amount", "check": "amount IS NOT NULL", "action": "quarantine"},
                {"name": "small", "check": "amount < 150", "action": "warn"},
            ]
        )
    )
    r = project.run("quality")
    assert r.ok, r.error
    step = project.step(r, "checks")
    assert _counts(step) == {
        "known country": ("quarantine", 5, 20),
        "has amount": ("quarantine", 4, 20),
        "small": ("warn", 8, 20),  # 160..190 (ids 16-19) and the 4 NULL amounts
    }
    # 4, 8, 12, 16, 20 (XX) ∪ 5, 10, 15, 20 (NULL) = 8 rows out
    assert step["rows_out"] == 12
    assert step["detail"] == {"quarantined": 8, "quarantine": "quarantine.quality"}
    q = project.rows("quarantine.quality")
    assert len(q) == 8
    by_id = {json.loads(x["record"])["id"]: x for x in q}
    assert by_id[20]["expectations"] == ["known country", "has amount"]
    assert by_id[4]["expectations"] == ["known country"]
    assert by_id[5]["expectations"] == ["has amount"]
    assert {x["_tarn_run_id"] for x in q} == {r.run_id} and {x["stage"] for x in q} == {"checks"}
    assert project.lake.table("quarantine.quality")["rows"] == 8  # catalogued


def test_quarantine_into_a_named_table(project: Project) -> None:
    project.pipeline(
        _pipeline(
            [{"name": "known country", "check": "country <> 'XX'", "action": "quarantine"}],
            quarantine_table="quarantine.clean_rejects",
        )
    )
    assert project.run("quality").ok
    assert len(project.rows("quarantine.clean_rejects")) == 5


def test_fail_fails_the_run_and_still_records_counts(project: Project) -> None:
    project.pipeline(
        _pipeline(
            [
                {"name": "has amount", "check": "amount IS NOT NULL", "action": "fail"},
                {"name": "known country", "check": "country <> 'XX'", "action": "warn"},
            ]
        )
    )
    r = project.run("quality")
    assert not r.ok and r.error_stage == "checks"
    assert "has amount (4 of 20 rows)" in (r.error or "")
    step = project.step(r, "checks")
    assert step["state"] == "failed"
    assert _counts(step) == {"has amount": ("fail", 4, 20), "known country": ("warn", 5, 20)}
    assert project.version("analytics.clean") is None
    # and in the stored record, as `tarn runs show` reads it
    stored = run_repo(project.lake).detail(r.run_id)
    assert next(s for s in stored["steps"] if s["name"] == "checks")["expectations"][0]["failed"] == 4


def test_fail_passes_when_no_row_breaks_it(project: Project) -> None:
    project.pipeline(_pipeline([{"name": "positive ids", "check": "id > 0", "action": "fail"}]))
    r = project.run("quality")
    assert r.ok
    assert _counts(project.step(r, "checks")) == {"positive ids": ("fail", 0, 20)}


def test_drop_and_quarantine_on_one_row_quarantines_it(project: Project) -> None:
    project.pipeline(
        _pipeline(
            [
                {"name": "not four", "check": "id % 4 <> 0", "action": "drop"},
                {"name": "known country", "check": "country <> 'XX'", "action": "quarantine"},
            ]
        )
    )
    r = project.run("quality")
    assert r.ok
    assert len(project.rows("quarantine.quality")) == 5
    assert project.step(r, "checks")["rows_out"] == 15
