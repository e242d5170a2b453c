"""Two schedulers (as two ``tarn up`` processes have) on one metastore: each cron tick of a pipeline runs once,
not once per scheduler. Both schedulers tick at the same moments, in parallel threads, each with its own Lake
(its own metastore connections), on SQLite and on PostgreSQL; the clock is moved by hand so that five minutes of
cron fires take a few seconds."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake
from robust_helpers import Project, write_project

from tarn.lake import Lake
from tarn.orchestrator.scheduler import Fired, Scheduler, cron_claim_name
from tarn.pipelines import api
from tarn.tables import delta

PIPELINE = {
    "name": "every_minute",
    "triggers": [{"type": "cron", "schedule": "* * * * *"}],
    "stages": [
        {"type": "extract", "name": "read", "table": "stage.src", "output": "src"},
        {"type": "load", "name": "append", "input": "src", "table": "analytics.ticks", "mode": "append"},
    ],
}
TICKS = 5


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_schedulers_run_each_cron_tick_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, lake_of: Callable[[Project], Lake]
) -> None:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    project = write_project(tmp_path / "project", [], metastore_url=url)
    (project.dir / "pipelines").mkdir()
    (project.dir / "pipelines" / "every_minute.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    lakes = [lake_of(project), lake_of(project)]
    uri = lakes[0].storage.table_uri("stage", "src")
    write_deltalake(uri, pa.table({"id": [1, 2, 3]}))
    lakes[0].meta.catalog.record("stage.src", zone="stage", location=uri, columns=delta.columns(uri), delta_version=0)

    now = [dt.datetime(2030, 1, 1, 12, 0, 30, tzinfo=dt.UTC).timestamp()]
    schedulers = []
    for lake in lakes:
        s = Scheduler.for_lake(lake)
        s.clock = lambda: now[0]
        s.refresh()
        schedulers.append(s)

    fired: list[list[Fired]] = [[], []]
    errors: list[BaseException] = []
    for _ in range(TICKS):
        now[0] += 60  # the next minute: every scheduler sees the fire
        barrier = threading.Barrier(len(schedulers))

        def tick(i: int, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=30)
                fired[i] += schedulers[i].tick()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(schedulers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert errors == []

    runs = [f for per in fired for f in per]
    assert len(runs) == TICKS, [(f.pipeline, f.at) for f in runs]
    assert all(f.result is not None and f.result.ok and f.trigger == "cron" for f in runs)
    records = lakes[0].meta.runs.list(pipeline="every_minute", limit=100)
    assert len(records) == TICKS and {r.trigger for r in records} == {"cron"}
    assert DeltaTable(lakes[0].storage.table_uri("analytics", "ticks")).count() == 3 * TICKS
    # Each fire was claimed once, by one of the two; the other was told no.
    start = dt.datetime(2030, 1, 1, 12, 1, tzinfo=dt.UTC).timestamp()
    holders = [lakes[0].meta.claims.holder(cron_claim_name("every_minute", 0, start + 60 * k)) for k in range(TICKS)]
    assert all(h in (lakes[0].meta.runs.owner, lakes[1].meta.runs.owner) for h in holders), holders
    print(f"\n{backend}: ticks run by scheduler 1: {len(fired[0])}, by scheduler 2: {len(fired[1])}")


def test_a_scheduler_without_claims_runs_every_fire_itself(tmp_path: Path, lake_of: Callable[[Project], Lake]) -> None:
    """The claim is the only thing between two schedulers: without it (no claim function), both run the fire."""
    project = write_project(tmp_path / "project", [])
    (project.dir / "pipelines").mkdir()
    (project.dir / "pipelines" / "every_minute.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    lake = lake_of(project)
    uri = lake.storage.table_uri("stage", "src")
    write_deltalake(uri, pa.table({"id": [1, 2, 3]}))
    lake.meta.catalog.record("stage.src", zone="stage", location=uri, columns=delta.columns(uri), delta_version=0)
    now = [dt.datetime(2030, 1, 1, 12, 0, 30, tzinfo=dt.UTC).timestamp()]
    pair = [
        Scheduler(project.dir, lambda name, trigger: api.run(lake, name, trigger=trigger), clock=lambda: now[0])
        for _ in range(2)
    ]
    for s in pair:
        s.refresh()
    now[0] += 60
    ran = [f for s in pair for f in s.tick()]
    assert [f.pipeline for f in ran] == ["every_minute", "every_minute"]
    assert lake.meta.claims.claim("x", "a") and not lake.meta.claims.claim("x", "b")
    assert lake.meta.claims.holder("x") == "a"
    assert lake.meta.claims.forget_older_than(-1) == 1 and lake.meta.claims.holder("x") is None
