"""Pipeline runs and their steps (one per stage), on the metastore's shared ``metadata``.

A run is ``running`` → ``succeeded`` | ``failed``. A step is ``running`` → ``succeeded`` | ``failed`` |
``skipped`` (not in the run's environment, or never reached) | ``rolled_back`` (a commit undone because a later
gate failed). Times are UTC epoch seconds.

A running run has an *owner* (host, pid and start time of the process running it) and a *heartbeat* that this
process refreshes every :data:`HEARTBEAT_SECONDS` until the run finishes. A run still ``running`` whose owner
is dead (same host: the process is gone, a zombie, or its pid was reused; another host: no heartbeat for
:data:`LEASE_SECONDS`) is *stale*: :meth:`RunRepo.stale` finds it and :meth:`RunRepo.take_over` lets exactly one
process claim it, to resume or abandon it (:mod:`tarn.pipelines.recovery`).
"""

from __future__ import annotations

import builtins
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import psutil
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
HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 60.0

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
    Column("owner", String(160), nullable=True),  # host:pid:process start time (migration 0003)
    Column("heartbeat_at", Float, nullable=True),
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


def process_owner() -> str:
    """This process, as a run owner: ``host:pid:start time`` (the start time tells a reused pid apart)."""
    return f"{socket.gethostname()}:{psutil.Process().pid}:{psutil.Process().create_time():.2f}"


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process named by ``owner`` still runs: True / False on this host, None on another
    host (or an owner from before migration 0003) — then only the heartbeat tells."""
    if not owner or owner.count(":") < 2:
        return None
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(started)) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.Error:  # not ours to inspect: assume alive, let the heartbeat decide
        return None
    return True


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
    owner: str | None = None
    heartbeat_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RunRepo:
    """Runs and steps (tables created by migration 0002; owner and heartbeat by 0003)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = process_owner()
        self._active: set[str] = set()  # runs this process is running: their heartbeat is kept fresh
        self._beat_lock = threading.Lock()
        self._beat_wake = threading.Event()
        self._beat_thread: threading.Thread | None = None

    # ------------------------------------------------------------- heartbeat
    def _hold(self, run_id: str) -> None:
        with self._beat_lock:
            self._active.add(run_id)
            if self._beat_thread is None or not self._beat_thread.is_alive():
                self._beat_thread = threading.Thread(target=self._beat, name="tarn-run-heartbeat", daemon=True)
                self._beat_thread.start()

    def _let_go(self, run_id: str) -> None:
        with self._beat_lock:
            self._active.discard(run_id)
        self._beat_wake.set()

    def _beat(self) -> None:
        while True:
            self._beat_wake.wait(HEARTBEAT_SECONDS)
            self._beat_wake.clear()
            with self._beat_lock:
                ids = sorted(self._active)
                if not ids:
                    self._beat_thread = None
                    return
            try:
                with self.db.tx() as conn:
                    conn.execute(
                        update(runs)
                        .where(and_(runs.c.id.in_(ids), runs.c.state == RUNNING, runs.c.owner == self.owner))
                        .values(heartbeat_at=now())
                    )
            except Exception:  # the metastore is unreachable for a moment: beat again next time
                continue

    def stale(self, *, pipeline: str | None = None, lease_seconds: float = LEASE_SECONDS) -> builtins.list[RunRecord]:
        """Runs still ``running`` whose owner is dead (see the module docstring), oldest first."""
        q = select(runs).where(runs.c.state == RUNNING).order_by(runs.c.started_at)
        if pipeline is not None:
            q = q.where(runs.c.pipeline == pipeline)
        with self.db.read() as conn:
            found = [RunRecord(**dict(r._mapping)) for r in conn.execute(q)]
        out = []
        t = now()
        for r in found:
            if r.owner == self.owner:
                if r.id in self._active:
                    continue
                alive: bool | None = False  # this process, but not running it any more (an error escaped)
            else:
                alive = owner_alive(r.owner)
            beat = r.heartbeat_at if r.heartbeat_at is not None else r.started_at
            if alive is False or (alive is None and t - beat > lease_seconds):
                out.append(r)
        return out

    def take_over(self, run_id: str, previous_owner: str | None) -> bool:
        """Claim a stale run for this process; exactly one of several processes trying gets True."""
        with self.db.tx() as conn:
            owner_is = runs.c.owner.is_(None) if previous_owner is None else runs.c.owner == previous_owner
            res = conn.execute(
                update(runs)
                .where(and_(runs.c.id == run_id, runs.c.state == RUNNING, owner_is))
                .values(owner=self.owner, heartbeat_at=now())
            )
            taken = res.rowcount == 1
        if taken:
            self._hold(run_id)
        return taken

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
                    owner=self.owner,
                    heartbeat_at=now(),
                )
            )
        self._hold(run_id)

    def restart(self, run_id: str) -> None:
        """A resumed run: running again, one more attempt, its error cleared."""
        with self.db.tx() as conn:
            row = conn.execute(select(runs.c.attempts).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r}")
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    state=RUNNING,
                    attempts=int(row[0]) + 1,
                    error=None,
                    error_stage=None,
                    ended_at=None,
                    owner=self.owner,
                    heartbeat_at=now(),
                )
            )
        self._hold(run_id)

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
        self._let_go(run_id)

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
