"""Pipeline runs and their steps (one per stage), on the metastore's shared ``metadata``.

A run is ``running`` → ``succeeded`` | ``failed``. A step is ``running`` → ``succeeded`` | ``failed`` |
``skipped`` (not in the run's environment, or never reached) | ``rolled_back`` (a commit undone because a later
gate failed). Times are UTC epoch seconds.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    insert,
    select,
    update,
)

from tarn.errors import NotFoundError, did_you_mean
from tarn.metastore.db import Database, now
from tarn.metastore.schema import metadata

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
ROLLED_BACK = "rolled_back"
RUN_STATES = (RUNNING, SUCCEEDED, FAILED)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # pipeline | arc
    Column("source", Text, nullable=True),  # the pipeline / job file
    Column("spec_hash", String(64), nullable=True),  # fingerprint of the resolved spec (tarn plan)
    Column("state", String(16), nullable=False),
    Column("trigger", String(32), nullable=False),  # manual | on_commit | cron | …
    Column("env", String(64), nullable=True),
    Column("params", JSON, nullable=True),
    Column("principal", String(128), nullable=False),
    Column("strategy", String(16), nullable=True),  # deferred | sequential (see tarn.pipelines.runner)
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=1),
    Column("inputs", JSON, nullable=True),  # {zone.table or uri: pinned Delta version}
    Column("outputs", JSON, nullable=True),  # {zone.table or uri: Delta version after the run}
    Column("error", Text, nullable=True),
    Column("error_stage", String(256), nullable=True),
    Index("ix_runs_pipeline", "pipeline", "started_at"),
    Index("ix_runs_state", "state"),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("idx", Integer, primary_key=True),  # the stage's position in the pipeline
    Column("name", String(256), nullable=False),
    Column("type", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("rows_in", BigInteger, nullable=True),
    Column("rows_out", BigInteger, nullable=True),
    Column("output", String(256), nullable=True),  # view name, or target table of a load
    Column("sql", Text, nullable=True),  # the resolved SQL the engine ran
    Column("expectations", JSON, nullable=True),  # [{name, action, failed, total}]
    Column("detail", JSON, nullable=True),  # validation result, log rows, merge metrics, …
    Column("delta_version", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class RunRecord:
    id: str
    pipeline: str
    kind: str
    source: str | None
    spec_hash: str | None
    state: str
    trigger: str
    env: str | None
    params: dict[str, Any] | None
    principal: str
    strategy: str | None
    started_at: float
    ended_at: float | None
    duration_s: float | None
    attempts: int
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None
    error: str | None
    error_stage: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RunRepo:
    """Runs and steps (tables created by migration 0002)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ runs
    def start(
        self,
        run_id: str,
        *,
        pipeline: str,
        kind: str = "pipeline",
        source: str | None = None,
        spec_hash: str | None = None,
        trigger: str = "manual",
        env: str | None = None,
        params: dict[str, Any] | None = None,
        principal: str,
        strategy: str | None = None,
    ) -> None:
        with self.db.tx() as conn:
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    pipeline=pipeline,
                    kind=kind,
                    source=source,
                    spec_hash=spec_hash,
                    state=RUNNING,
                    trigger=trigger,
                    env=env,
                    params=params,
                    principal=principal,
                    strategy=strategy,
                    started_at=now(),
                    attempts=1,
                )
            )

    def restart(self, run_id: str) -> None:
        """A resumed run: running again, one more attempt, its error cleared."""
        with self.db.tx() as conn:
            row = conn.execute(select(runs.c.attempts).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r}")
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(state=RUNNING, attempts=int(row[0]) + 1, error=None, error_stage=None, ended_at=None)
            )

    def set_inputs(self, run_id: str, inputs: dict[str, Any]) -> None:
        with self.db.tx() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(inputs=inputs))

    def finish(
        self,
        run_id: str,
        state: str,
        *,
        error: str | None = None,
        error_stage: str | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        t = now()
        with self.db.tx() as conn:
            started = conn.execute(select(runs.c.started_at).where(runs.c.id == run_id)).scalar_one()
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    state=state,
                    ended_at=t,
                    duration_s=round(t - float(started), 6),
                    error=error,
                    error_stage=error_stage,
                    outputs=outputs,
                )
            )

    def get(self, run_id: str) -> RunRecord:
        with self.db.read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                rows = conn.execute(select(runs).where(runs.c.id.like(f"{run_id}%")).limit(2)).all()
                if len(rows) == 1:
                    return RunRecord(**dict(rows[0]._mapping))
                recent = [r[0] for r in conn.execute(select(runs.c.id).order_by(runs.c.started_at.desc()).limit(200))]
                raise NotFoundError(f"no run {run_id!r}{did_you_mean(run_id, recent)}", hint="'tarn runs' lists runs")
            return RunRecord(**dict(row._mapping))

    def find(self, run_id: str) -> RunRecord | None:
        with self.db.read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        return RunRecord(**dict(row._mapping)) if row else None

    def list(
        self, *, pipeline: str | None = None, state: str | None = None, limit: int = 50
    ) -> builtins.list[RunRecord]:
        q = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
        if pipeline:
            q = q.where(runs.c.pipeline == pipeline)
        if state:
            q = q.where(runs.c.state == state)
        with self.db.read() as conn:
            return [RunRecord(**dict(r._mapping)) for r in conn.execute(q)]

    def last(self, pipeline: str, *, state: str | None = SUCCEEDED) -> RunRecord | None:
        found = self.list(pipeline=pipeline, state=state, limit=1)
        return found[0] if found else None

    # ----------------------------------------------------------------- steps
    def step(self, run_id: str, idx: int, **values: Any) -> None:
        """Insert or update the step ``idx`` of a run with ``values`` (any ``steps`` column)."""
        with self.db.tx() as conn:
            exists = conn.execute(select(steps.c.idx).where(and_(steps.c.run_id == run_id, steps.c.idx == idx))).first()
            if exists is None:
                conn.execute(insert(steps).values(run_id=run_id, idx=idx, **values))
            else:
                conn.execute(update(steps).where(and_(steps.c.run_id == run_id, steps.c.idx == idx)).values(**values))

    def steps(self, run_id: str) -> builtins.list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(select(steps).where(steps.c.run_id == run_id).order_by(steps.c.idx))
            return [dict(r._mapping) for r in rows]

    def detail(self, run_id: str) -> dict[str, Any]:
        run = self.get(run_id)
        return {**run.to_dict(), "steps": self.steps(run.id)}
