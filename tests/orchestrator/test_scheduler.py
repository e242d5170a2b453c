"""The scheduler: on_commit triggers (batched by min_events / max_wait, downstream in DAG order), cron triggers
with an injectable clock, reloading, cycles, and the event trigger end to end through ``Lake.up`` (real
watchdog, ingest workers, Delta, DuckDB)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tarn.lake import Lake
from tarn.orchestrator.scheduler import Fired, Scheduler, next_fire
from tarn.pipelines import api
from tarn.pipelines.spec import CronTrigger

ORDERS = [{"name": "orders", "landing": "orders/*.csv"}]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: dt.datetime) -> None:
        self.now = when.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _pipeline(lake: Lake, doc: dict[str, Any]) -> None:
    path = lake.dir / "pipelines" / f"{doc['name']}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _copy(name: str, source: str, target: str, triggers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A pipeline: ``SELECT count(*) FROM source`` overwritten into ``target``."""
    return {
        "name": name,
        "triggers": triggers,
        "stages": [
            {"type": "sql", "name": "count", "sql": f"SELECT count(*) AS n FROM {source}", "output": "c"},
            {"type": "load", "name": "save", "input": "c", "table": target, "mode": "overwrite"},
        ],
        **extra,
    }


def _ingest(lake: Lake, tmp_path: Path, n: int, *, first: int = 0) -> None:
    for i in range(first, first + n):
        f = tmp_path / f"orders-{i}.csv"
        f.write_text(f"id,amount\n{i},{i * 1.5}\n")
        lake.ingest([f], "orders")


def _scheduler(lake: Lake, clock: Clock, **kw: Any) -> Scheduler:
    s = Scheduler.for_lake(lake)
    s.clock = clock
    for k, v in kw.items():
        setattr(s, k, v)
    s.refresh()
    return s


def project_rows(lake: Lake, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = lake.query(f"SELECT * FROM {table}").table.to_pylist()
    return rows


def _names(fired: list[Fired]) -> list[str]:
    return [f.pipeline for f in fired]


def test_next_fire_in_the_trigger_timezone() -> None:
    every5 = CronTrigger(type="cron", schedule="*/5 * * * *")
    assert next_fire(every5, _at("2024-01-01 00:03:10").timestamp()) == _at("2024-01-01 00:05:00").timestamp()
    assert next_fire(every5, _at("2024-01-01 00:05:00").timestamp()) == _at("2024-01-01 00:10:00").timestamp()
    paris = CronTrigger(type="cron", schedule="0 2 * * *", timezone="Europe/Paris")
    assert next_fire(paris, _at("2024-01-15 12:00").timestamp()) == _at("2024-01-16 01:00").timestamp()  # UTC+1
    assert next_fire(paris, _at("2024-07-15 12:00").timestamp()) == _at("2024-07-16 00:00").timestamp()  # UTC+2


def test_cron_trigger_with_an_injected_clock(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    _pipeline(lake, _copy("every5", "stage.orders", "analytics.every5", [{"type": "cron", "schedule": "*/5 * * * *"}]))
    clock = Clock(_at("2024-01-01 00:03:00"))
    s = _scheduler(lake, clock)

    assert s.tick() == []
    clock.set(_at("2024-01-01 00:04:59"))
    assert s.tick() == []
    clock.set(_at("2024-01-01 00:05:00"))
    fired = s.tick()
    assert _names(fired) == ["every5"] and fired[0].trigger == "cron"
    assert fired[0].result is not None and fired[0].result.ok
    clock.set(_at("2024-01-01 00:07:00"))
    assert s.tick() == []
    clock.set(_at("2024-01-01 00:31:00"))  # five fires missed: one run, not five
    assert _names(s.tick()) == ["every5"]
    assert s.tick() == []
    assert clock() < s.next_deadline() <= _at("2024-01-01 00:35:00").timestamp()
    runs = api.runs(lake, pipeline="every5")
    assert [r.trigger for r in runs] == ["cron", "cron"] and all(r.state == "succeeded" for r in runs)


def test_on_commit_batches_by_min_events_and_max_wait(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)  # the table exists before the scheduler starts: not an event
    trigger = {"type": "on_commit", "tables": ["stage.orders"], "min_events": 3, "max_wait": 60}
    _pipeline(lake, _copy("totals", "stage.orders", "analytics.totals", [trigger]))
    clock = Clock(_at("2024-01-01 00:00:00"))
    s = _scheduler(lake, clock)
    lake.ingest_service.on_commit.append(s.notify)

    assert s.tick() == []
    _ingest(lake, tmp_path, 2, first=1)
    clock.advance(10)
    assert s.tick() == []  # 2 of 3 events
    _ingest(lake, tmp_path, 1, first=3)
    fired = s.tick()
    assert _names(fired) == ["totals"] and fired[0].trigger == "on_commit"
    assert project_rows(lake, "analytics.totals") == [{"n": 4}]

    _ingest(lake, tmp_path, 1, first=4)  # one event: waits for max_wait
    s.notify("stage.orders", 4)  # the same commit again (a redelivery, or seen twice): counted once
    assert s.tick() == []
    clock.advance(59)
    assert s.tick() == []
    clock.advance(1.5)
    assert _names(s.tick()) == ["totals"]
    assert project_rows(lake, "analytics.totals") == [{"n": 5}]
    assert [r.trigger for r in api.runs(lake, pipeline="totals")] == ["on_commit", "on_commit"]


def _chain(lake: Lake) -> None:
    """stage.orders → daily → weekly; report reads weekly and stage.orders; all on_commit."""
    on_commit = [{"type": "on_commit"}]
    _pipeline(lake, _copy("weekly", "analytics.daily", "analytics.weekly", on_commit))
    _pipeline(lake, _copy("daily", "stage.orders", "analytics.daily", on_commit))
    _pipeline(
        lake,
        {
            "name": "report",
            "triggers": on_commit,
            "stages": [
                {
                    "type": "sql",
                    "name": "r",
                    "sql": "SELECT w.n AS weekly, (SELECT count(*) FROM stage.orders) AS orders "
                    "FROM analytics.weekly w",
                    "output": "r",
                },
                {"type": "load", "name": "save", "input": "r", "table": "analytics.report", "mode": "overwrite"},
            ],
        },
    )


def test_a_commit_flows_downstream_in_dag_order(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    _chain(lake)
    for name in ("daily", "weekly"):  # the downstream tables exist (their runs are events too)
        api.run(lake, name)
    clock = Clock(_at("2024-01-01 00:00:00"))
    s = _scheduler(lake, clock)
    assert s.order == ["daily", "weekly", "report"]
    lake.ingest_service.on_commit.append(s.notify)

    _ingest(lake, tmp_path, 1, first=1)
    fired = s.tick()

    # report reads stage.orders too, but runs once, after weekly: its two events are batched
    assert _names(fired) == ["daily", "weekly", "report"]
    assert all(f.trigger == "on_commit" and f.result is not None and f.result.ok for f in fired)
    assert project_rows(lake, "analytics.report") == [{"weekly": 1, "orders": 2}]
    runs = sorted(api.runs(lake, limit=20), key=lambda r: r.started_at)
    assert [(r.pipeline, r.trigger) for r in runs][-3:] == [
        ("daily", "on_commit"),
        ("weekly", "on_commit"),
        ("report", "on_commit"),
    ]
    assert s.tick() == []


def test_commits_made_elsewhere_are_seen_by_their_version(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    """No hook: another process (``tarn ingest``, a worker on another host) committed. Several versions since
    the last check count as several events."""
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    trigger = {"type": "on_commit", "min_events": 2, "max_wait": 3600}
    _pipeline(lake, _copy("totals", "stage.orders", "analytics.totals", [trigger]))
    clock = Clock(_at("2024-01-01 00:00:00"))
    s = _scheduler(lake, clock, poll_interval=5.0)
    assert s.tick() == []
    _ingest(lake, tmp_path, 2, first=1)  # the scheduler's hook is not attached: as if done by another process
    assert s.tick() == []  # not checked again yet
    clock.advance(5)
    assert _names(s.tick()) == ["totals"]
    assert project_rows(lake, "analytics.totals") == [{"n": 3}]


def test_a_pipeline_is_not_triggered_by_its_own_writes(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    doc = {
        "name": "tally",
        "triggers": [{"type": "on_commit", "tables": ["stage.orders", "analytics.tally"]}],
        "stages": [
            {"type": "sql", "name": "n", "sql": "SELECT count(*) AS n FROM stage.orders", "output": "n"},
            {"type": "load", "name": "save", "input": "n", "table": "analytics.tally"},
        ],
    }
    _pipeline(lake, doc)
    clock = Clock(_at("2024-01-01 00:00:00"))
    s = _scheduler(lake, clock)
    s.notify("stage.orders", 1)
    assert _names(s.tick()) == ["tally"]
    clock.advance(3600)
    assert s.tick() == []


def test_failed_runs_and_runs_that_cannot_start(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    on_commit = [{"type": "on_commit", "tables": ["stage.orders"]}]
    bad = _copy("bad", "stage.orders", "analytics.bad", on_commit)
    bad["stages"].insert(1, {"type": "validate", "name": "never", "sql": "SELECT false, 'no'"})
    _pipeline(lake, bad)
    needs = _copy("needs_param", "stage.orders", "analytics.p", on_commit, params={"min": None})
    needs["stages"][0]["sql"] = "SELECT count(*) AS n FROM stage.orders WHERE id > ${min}"
    _pipeline(lake, needs)
    s = _scheduler(lake, Clock(_at("2024-01-01 00:00:00")))

    s.notify("stage.orders", 1)
    fired = {f.pipeline: f for f in s.tick()}

    assert fired["bad"].result is not None and fired["bad"].result.state == "failed"
    assert fired["bad"].result.error_stage == "never"
    assert fired["needs_param"].result is None and "required param(s) min" in (fired["needs_param"].error or "")
    assert s.tick() == []  # the events were consumed: no retry loop


def test_pipeline_files_are_reread_when_they_change(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    _pipeline(lake, _copy("later", "stage.orders", "analytics.later", []))
    s = _scheduler(lake, Clock(_at("2024-01-01 00:00:00")))
    s.notify("stage.orders", 1)
    assert s.tick() == []  # no trigger
    _pipeline(lake, _copy("later", "stage.orders", "analytics.later", [{"type": "on_commit"}], description="now"))
    assert s.tick() == []  # reloaded: triggers apply to commits from now on
    s.notify("stage.orders", 2)
    assert _names(s.tick()) == ["later"]

    batched = [{"type": "on_commit", "min_events": 5, "max_wait": 3600}]
    _pipeline(lake, _copy("later", "stage.orders", "analytics.later", batched))
    assert s.tick() == []
    s.notify("stage.orders", 3)  # pending on trigger 0 …
    _pipeline(lake, _copy("later", "stage.orders", "analytics.later", [{"type": "cron", "schedule": "0 0 1 1 *"}]))
    assert s.tick() == []  # … which is a cron trigger now: the pending events are dropped


def test_a_cycle_is_rejected_by_validate_and_triggers_nothing(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake(ORDERS)
    _ingest(lake, tmp_path, 1)
    on_commit = [{"type": "on_commit"}]
    _pipeline(lake, _copy("a", "analytics.b", "analytics.a", on_commit))
    _pipeline(lake, _copy("b", "analytics.a", "analytics.b", on_commit))

    problems = api.validate(lake)
    assert any("cycle" in p.message and p.severity == "error" for p in problems)

    s = _scheduler(lake, Clock(_at("2024-01-01 00:00:00")))
    assert s.problem is not None and "cycle" in s.problem
    s.notify("analytics.a", 1)
    assert s.tick() == []


def test_lake_up_runs_pipelines_on_ingest_commits_in_dag_order(
    new_lake: Callable[..., Lake], running: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    """End to end: files land, the watcher and workers commit them, the scheduler inside ``Lake.up`` runs daily
    then weekly then report, and again for the next file."""
    lake = new_lake(ORDERS)
    _chain(lake)
    landing = lake.storage.zone("landing") / "orders"

    def runs(name: str) -> list[Any]:
        return [r for r in api.runs(lake, pipeline=name) if r.state != "running"]

    with running(lake):
        (landing / "a.csv").write_text("id,amount\n1,1.5\n2,3.0\n")
        wait_for(lambda: runs("report"), timeout=60, what="report to run")
        first = {n: runs(n) for n in ("daily", "weekly", "report")}
        assert all(len(v) == 1 and v[0].state == "succeeded" and v[0].trigger == "on_commit" for v in first.values())
        assert first["daily"][0].ended_at <= first["weekly"][0].started_at
        assert first["weekly"][0].ended_at <= first["report"][0].started_at
        assert project_rows(lake, "analytics.report") == [{"weekly": 1, "orders": 2}]

        (landing / "b.csv").write_text("id,amount\n3,4.5\n")
        wait_for(lambda: len(runs("report")) == 2, timeout=60, what="report to run again")
        assert project_rows(lake, "analytics.daily") == [{"n": 3}]
        assert project_rows(lake, "analytics.report") == [{"weekly": 1, "orders": 3}]
