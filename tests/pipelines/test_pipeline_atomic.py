"""A run is atomic from the outside: a failing gate leaves every target as it was; a failing write undoes the
run's earlier commits; a crashed run resumes without writing twice (tokens), reading the same input versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from deltalake import DeltaTable

from tarn.errors import StateError
from tarn.pipelines import loads

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project


def _two_loads_then(gate: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "atomic",
        "stages": [
            {"type": "extract", "name": "in", "table": "stage.src", "output": "src"},
            {"type": "load", "name": "load a", "input": "src", "table": "analytics.a", "mode": "merge", "keys": ["id"]},
            {"type": "load", "name": "load b", "input": "src", "table": "analytics.b"},
            gate,
        ],
    }


@pytest.fixture
def seeded(project: Project) -> Project:
    project.seed("stage.src", {"id": [1, 2, 3], "v": ["x", "y", "z"]})
    project.seed("analytics.a", {"id": [1], "v": ["old"]})
    return project


@pytest.mark.parametrize(
    "gate",
    [
        {"type": "validate", "name": "gate", "sql": "SELECT count(*) > 100, 'too few rows' FROM src"},
        {
            "type": "expect",
            "name": "gate",
            "input": "src",
            "output": "checked",
            "expectations": [
                {"name": "small ids", "check": "id < 3", "action": "fail"},
                {"name": "q", "check": "id <> 2", "action": "quarantine"},
            ],
        },
        {"type": "equal", "name": "gate", "left": "src", "right": "src_other"},
    ],
    ids=["validate", "expect-fail", "equal"],
)
def test_a_failing_gate_leaves_every_target_unchanged(seeded: Project, gate: dict[str, Any]) -> None:
    p = seeded
    doc = _two_loads_then(gate)
    if gate["type"] == "equal":
        doc["stages"].insert(
            1, {"type": "sql", "name": "other", "sql": "SELECT * FROM src LIMIT 1", "output": "src_other"}
        )
    p.pipeline(doc)
    before_a = (p.version("analytics.a"), p.rows("analytics.a"))
    r = p.run("atomic")
    assert not r.ok and r.error_stage == "gate" and r.strategy == "deferred"
    assert (p.version("analytics.a"), p.rows("analytics.a")) == before_a
    assert p.version("analytics.b") is None
    assert p.version("quarantine.atomic") is None
    for name in ("load a", "load b"):
        step = p.step(r, name)
        assert step["state"] == "skipped" and "not committed" in step["error"]
    assert p.step(r, "gate")["state"] == "failed"


def test_a_failing_write_undoes_the_runs_earlier_commits(seeded: Project) -> None:
    p = seeded
    p.seed("analytics.c", {"day": ["d1"], "n": [1]})
    doc = _two_loads_then(
        {
            "type": "load",
            "name": "load c",
            "input": "src",
            "table": "analytics.c",
            "mode": "replace_where",
            "predicate": "day = 'd1'",  # src has no 'day': the write fails
        }
    )
    p.pipeline(doc)
    before_a = p.rows("analytics.a")
    r = p.run("atomic")
    assert not r.ok and r.error_stage == "load c"
    assert "undone" in (r.error or "")
    assert p.rows("analytics.a") == before_a  # merged, then restored
    assert p.version("analytics.b") is None  # created by the run, then removed
    assert p.step(r, "load a")["state"] == "rolled_back"


def test_sequential_run_is_undone_when_a_later_gate_fails(project: Project) -> None:
    project.seed("analytics.t", {"id": [1, 2]})
    project.pipeline(
        {
            "name": "seq",
            "stages": [
                {"type": "sql", "name": "new", "sql": "SELECT 3::BIGINT AS id", "output": "new"},
                {"type": "load", "name": "append", "input": "new", "table": "analytics.t"},
                {"type": "extract", "name": "back", "table": "analytics.t", "output": "back"},
                {"type": "validate", "name": "gate", "sql": "SELECT count(*) = 99, 'want 99' FROM back"},
            ],
        }
    )
    r = project.run("seq")
    assert r.strategy == "sequential" and not r.ok and r.error_stage == "gate"
    assert "want 99" in (r.error or "")
    assert sorted(x["id"] for x in project.rows("analytics.t")) == [1, 2]
    assert project.step(r, "back")["rows_out"] == 3  # the stage did see the run's own write


class Crash(BaseException):
    """Stands for the process dying (not caught by the runner)."""


def test_a_crashed_run_resumes_without_writing_twice(seeded: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = seeded
    p.pipeline(_two_loads_then({"type": "log", "name": "done", "sql": "SELECT count(*) FROM src"}))
    # an append starts with write_table_files on every engine (Spark writes the files itself; DuckDB declines and
    # streams through loads.write)
    real_write = loads.write_table_files

    def crash_on_b(engine: Any, sql: str, target: loads.Target, **kw: Any) -> loads.WriteResult | None:
        if target.key == "analytics.b":
            raise Crash()
        return real_write(engine, sql, target, **kw)

    monkeypatch.setattr(loads, "write_table_files", crash_on_b)
    with pytest.raises(Crash):
        p.run("atomic")
    from tarn.pipelines.api import run_repo

    [crashed] = run_repo(p.lake).list(state="running")
    assert p.version("analytics.a") == 1 and p.version("analytics.b") is None
    # meanwhile the input changes; the resumed run still reads the version it pinned
    p.seed("stage.src", {"id": [4], "v": ["w"]})
    monkeypatch.setattr(loads, "write_table_files", real_write)
    r = p.run("atomic", resume=crashed.id)
    assert r.ok, r.error
    assert r.run_id == crashed.id
    assert p.version("analytics.a") == 1  # not merged again
    assert sorted(x["id"] for x in p.rows("analytics.b")) == [1, 2, 3]  # pinned input: no id 4
    assert p.step(r, "load a")["detail"]["already_committed"] is True
    assert run_repo(p.lake).get(r.run_id).attempts == 2
    # resuming a finished run does nothing
    again = p.run("atomic", resume=crashed.id)
    assert again.ok and p.version("analytics.b") == 0


def test_a_failed_run_cannot_be_resumed(seeded: Project) -> None:
    seeded.pipeline(_two_loads_then({"type": "validate", "name": "gate", "sql": "SELECT false, 'no'"}))
    r = seeded.run("atomic")
    assert not r.ok
    with pytest.raises(StateError, match="cannot be resumed"):
        seeded.run("atomic", resume=r.run_id)


def test_retried_commit_is_recognised_by_its_token(seeded: Project) -> None:
    seeded.pipeline(_two_loads_then({"type": "log", "name": "done", "sql": "SELECT 1"}))
    r = seeded.run("atomic")
    assert r.ok
    dt = DeltaTable(seeded.uri("analytics.b"))
    assert dt.transaction_version(f"tarn-run-{r.run_id}-load b") == 1
    assert loads.already_committed(
        seeded.uri("analytics.b"), loads.CommitTag(f"tarn-run-{r.run_id}-load b", r.run_id, "atomic", "load b")
    )
