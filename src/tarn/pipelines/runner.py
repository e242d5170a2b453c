"""Running a pipeline: stages in order on one engine, every run and stage recorded in the metastore.

Atomic from the outside
-----------------------
Delta has no multi-table transactions, so a run is made atomic in two ways, chosen per pipeline from what its
stages read and write (:func:`tarn.pipelines.analysis.analyze`):

``deferred`` (the normal case: no stage reads a table that an earlier stage of the same run writes)
    Phase 1 evaluates every stage that does not write — extracts, views, typing, validations, expectations,
    equalities, logs — in order, with every lake table it reads pinned at the version current when first read.
    Loads, ``MERGE`` statements and quarantined rows are only *planned*. Phase 2 runs only when every gate passed:
    each planned write becomes exactly one Delta commit carrying the token ``tarn-run-<run_id>-<stage>``,
    streamed from the engine. So a failing gate leaves every target untouched (nothing was written), and a write
    that fails in phase 2 undoes the commits this run already made (restore to the version before the run; a
    table the run created is removed). A *crash* in phase 2 leaves the run ``running``; resuming it
    (``run_id=`` / ``tarn run --resume``) reads the same pinned input versions, re-checks every gate, and commits
    only the writes whose token is not in their table yet — a retried run never writes twice.

``sequential`` (a stage reads back a table written earlier in the run, as Arc jobs do: load, then read the
table, then MERGE into it)
    Stages run in order and each write is committed when its stage runs (same token), so later stages see it.
    If a later stage fails, the run's commits are undone as above, in reverse order.

Why not always sequential: deferring the writes means the common case never has to undo anything (no restore
commits in the tables' history, no window in which readers see a half-done run). Why not always deferred: reading
back one's own writes is part of Arc's semantics, and those jobs must run as written.

Undo is by ``restore``: a concurrent writer committing to the same table between the run's commit and its undo
would be rolled back too; pipelines should be the only writers of their targets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import traceback
from typing import Any

import pyarrow as pa

from tarn.engines.base import Engine
from tarn.engines.duckdb_pipeline import DuckDBEngine, qualified
from tarn.errors import ConfigError, StateError, TarnError
from tarn.metastore import runs as R
from tarn.pipelines import loads as L
from tarn.pipelines import params as P
from tarn.pipelines.analysis import analyze
from tarn.pipelines.context import LakeAccess, RunOptions, RunResult, StageFailed
from tarn.pipelines.spec import ConfigStage, ExtractStage, LoadStage, PipelineSpec, Stage
from tarn.pipelines.stages import PendingWrite, StageExecutor, StepOutcome
from tarn.quality.expectations import QUARANTINE_SCHEMA
from tarn.storage.base import Storage
from tarn.tables import delta

_CONFLICT_ATTEMPTS = 6
log = logging.getLogger("tarn.pipelines")

DEFERRED = "deferred"
SEQUENTIAL = "sequential"


def spec_hash(spec: PipelineSpec) -> str:
    """A fingerprint of the pipeline as it would run (SQL files included)."""
    data = spec.model_dump(mode="json")
    texts = [P.stage_texts(s, spec.base_dir).get("sql", "") for s in spec.stages]
    blob = json.dumps({"spec": data, "sql": texts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_params(spec: PipelineSpec) -> None:
    problems = P.check_placeholders(spec).problems
    if problems:
        lines = "\n".join(f"  {p.message}" for p in problems)
        raise ConfigError(f"pipeline {spec.name!r} has param problems:\n{lines}", hint=problems[0].hint)


def _cast_reader(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    def gen() -> Any:
        for b in reader:
            yield pa.RecordBatch.from_arrays(
                [b.column(n).cast(f.type) for n, f in zip(schema.names, schema, strict=True)], schema=schema
            )

    return pa.RecordBatchReader.from_batches(schema, gen())


def engine_name(lake: LakeAccess, spec: PipelineSpec) -> str:
    """The engine a pipeline runs on: its own choice, else the project's."""
    return spec.engine or lake.engine.name


def make_engine(lake: LakeAccess, spec: PipelineSpec) -> Engine:
    """A fresh engine for one run (Spark: a new session on the process's one SparkContext)."""
    if engine_name(lake, spec) == "spark":
        from tarn.engines.spark import SparkEngine

        return SparkEngine(master=lake.engine.master, conf=dict(lake.engine.conf))
    return DuckDBEngine(threads=lake.engine_threads, memory_limit=lake.engine_memory_limit)


def _target_exists(target: L.Target, fmt: str, storage: Storage | None) -> bool:
    """A Delta table at the target, or (files) a file or a non-empty folder / object-store prefix."""
    if fmt == "delta":
        return delta.exists(target.uri)
    return L.files_exist(target, storage)


def check_file_reads(stage: Stage, engine: str) -> None:
    """DuckDB reads files from local paths only (its httpfs extension cannot be installed offline): an extract of
    plain files at an object-store location stops the run with a clear error, before DuckDB tries to download."""
    if engine == "spark" or not isinstance(stage, ExtractStage) or stage.path is None or stage.format == "delta":
        return
    remote = [p.strip() for p in stage.path.split(",") if "://" in p and not p.strip().startswith("file://")]
    if remote:
        raise ConfigError(
            f"stage {stage.name!r}: reading files from {remote[0]} is not supported on "
            "the DuckDB engine (it reads local files only; its httpfs extension cannot be installed offline)",
            hint="load the data into a Delta table (format: delta, or a lake table) and extract that, which works "
            "on s3://; or run the pipeline on Spark with s3a configured (engine: spark)",
        )


class PipelineRun:
    """One run of one pipeline (see the module docstring)."""

    def __init__(self, lake: LakeAccess, spec: PipelineSpec, options: RunOptions | None = None) -> None:
        self.lake = lake
        self.spec = spec
        self.opts = options or RunOptions()
        self.runs = lake.runs
        self.engine_kind = engine_name(lake, spec)
        # --- everything that can be checked before anything runs
        check_params(spec)
        self.values = P.resolve_values(spec, self.opts.params, self.opts.param_env)
        self.active = [(i, s) for i, s in enumerate(spec.stages) if s.runs_in(self.opts.env)]
        self.skipped = [(i, s) for i, s in enumerate(spec.stages) if not s.runs_in(self.opts.env)]
        if not self.active:
            raise ConfigError(
                f"pipeline {spec.name!r}: no stage runs in environment {self.opts.env!r}",
                hint="check the stages' 'environments' and --env",
            )
        provided = self._preresolve()
        io = analyze(spec, lake.project_dir, values=provided, env=self.opts.env, lenient=self._has_open_config)
        self.strategy = SEQUENTIAL if io.read_after_write else DEFERRED
        self.strategy_reason = (
            f"stage {io.read_after_write[0]!r} reads {io.read_after_write[1]}, written earlier by stage "
            f"{io.read_after_write[2]!r}"
            if io.read_after_write
            else "no stage reads what an earlier stage writes"
        )

    @property
    def _has_open_config(self) -> bool:
        return any(isinstance(s, ConfigStage) and s.provides is None for _, s in self.active)

    def _preresolve(self) -> dict[str, str]:
        """Resolve every stage's placeholders now (values from config stages: declared names get a stand-in),
        so a missing value stops the run before anything runs. Returns the values used."""
        vals = dict(self.values)
        for _, s in self.active:
            if isinstance(s, ConfigStage):
                if s.provides is None:
                    return vals  # later placeholders are known only at run time
                vals.update({p: "0" for p in s.provides})
            check_file_reads(P.resolve_stage(self.spec, s, vals, self.spec.base_dir), self.engine_kind)
        return vals

    # ----------------------------------------------------------------- the run
    def execute(self) -> RunResult:
        run_id, resumed = self._open_record()
        if resumed == R.SUCCEEDED:
            return self._result(run_id)
        engine = make_engine(self.lake, self.spec)
        pins: dict[str, int] = {}
        if resumed == R.RUNNING:
            pins = {k: int(v) for k, v in (self.runs.get(run_id).inputs or {}).items()}
        ex = StageExecutor(
            self.spec,
            self.lake,
            engine,
            run_id,
            self.runs.get(run_id).started_at,  # a resumed run keeps its start (scd2 change times, quarantine)
            dict(self.values),
            count_rows=self.opts.count_rows,
            pins=pins,
        )
        ex.on_pin = lambda: self.runs.set_inputs(run_id, dict(ex.pins))
        self.before: dict[str, tuple[L.Target, int | None]] = {}
        self.file_outputs: dict[str, None] = {}  # file outputs written: no Delta version, nothing to undo
        self.committed: list[int] = []
        pending: list[PendingWrite] = []
        current: Stage | None = None
        try:
            for i, s in self.skipped:
                self.runs.step(
                    run_id, i, name=s.name, type=s.type, state=R.SKIPPED,
                    detail={"reason": f"not in environment {self.opts.env!r}"},
                )  # fmt: skip
            for i, s in self.active:
                current = s
                resolved = P.resolve_stage(self.spec, s, ex.values, self.spec.base_dir)
                check_file_reads(resolved, self.engine_kind)
                started = time.time()
                self.runs.step(
                    run_id, i, name=s.name, type=s.type, state=R.RUNNING, started_at=started,
                    sql=getattr(resolved, "sql", None),
                )  # fmt: skip
                new: list[PendingWrite] = []
                outcome = ex.run(i, resolved, new)
                loads = [w for w in new if w.kind != "quarantine"]
                if not loads:
                    self._step_done(run_id, i, started, outcome, state=R.SUCCEEDED)
                elif self.strategy == DEFERRED:
                    self._step_done(run_id, i, started, outcome, state="pending")
                if self.strategy == SEQUENTIAL:
                    for w in new:
                        self._commit(run_id, ex, w, outcome=outcome, started=started)
                else:
                    pending.extend(new)
            current = None
            self.runs.set_inputs(run_id, dict(ex.pins))
            for w in pending:
                current = w.stage
                self._commit(run_id, ex, w, outcome=None, started=time.time())
            current = None
            outputs = self._register_outputs(ex)
            self.runs.finish(run_id, R.SUCCEEDED, outputs=outputs)
            self._audit(run_id, R.SUCCEEDED)
            return self._result(run_id)
        except Exception as e:  # every failure is recorded; the caller gets a failed RunResult
            stage = current.name if current is not None else None
            message = str(e) if isinstance(e, TarnError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, TarnError):
                log.debug("pipeline %s failed:\n%s", self.spec.name, traceback.format_exc())
            self._fail_steps(run_id, current, e, pending)
            undone = self._undo(run_id)
            if undone:
                message += " (undone: " + "; ".join(f"{k}: {v}" for k, v in undone.items()) + ")"
            self.runs.finish(run_id, R.FAILED, error=message, error_stage=stage)
            self._audit(run_id, R.FAILED)
            return self._result(run_id)
        finally:
            engine.close()

    def _open_record(self) -> tuple[str, str | None]:
        """(run id, state of the run being resumed or None for a new run)."""
        rid = self.opts.run_id
        if rid is not None:
            old = self.runs.find(rid)
            if old is not None:
                if old.pipeline != self.spec.name:
                    raise StateError(f"run {rid} is a run of pipeline {old.pipeline!r}, not {self.spec.name!r}")
                if old.state == R.FAILED:
                    raise StateError(
                        f"run {rid} failed and its commits were undone; it cannot be resumed",
                        hint="start a new run",
                    )
                if old.state == R.RUNNING:
                    self.runs.restart(rid)
                return rid, old.state
        run_id = rid or R.new_run_id()
        self.runs.start(
            run_id,
            pipeline=self.spec.name,
            kind=self.opts.kind,
            source=str(self.spec.source) if self.spec.source else None,
            spec_hash=spec_hash(self.spec),
            trigger=self.opts.trigger,
            env=self.opts.env,
            params=self.values,
            principal=self.lake.principal,
            strategy=self.strategy,
        )
        return run_id, None

    # ------------------------------------------------------------------ writes
    def _commit(
        self, run_id: str, ex: StageExecutor, w: PendingWrite, *, outcome: StepOutcome | None, started: float
    ) -> None:
        tag = L.CommitTag(L.run_token(run_id, w.stage.name), run_id, self.spec.name, w.stage.name)
        if w.kind != "quarantine":  # a quarantine write belongs to its expect stage, already timed
            self.runs.step(run_id, w.idx, state=R.RUNNING, started_at=started)
        target = w.target
        files = isinstance(w.stage, LoadStage) and w.stage.format != "delta"
        result = None if files else L.already_committed(target.uri, tag)  # files: no Delta log to ask
        if files:
            self.file_outputs[target.key] = None
        elif target.key not in self.before:
            if result is not None and result.version is not None:  # resumed: before = just before that commit
                self.before[target.key] = (target, result.version - 1 if result.version > 0 else None)
            else:
                self.before[target.key] = (target, L.current_version(target.uri))
        if result is None:
            result = self._write_retrying(run_id, ex, w, tag)
        if result.version is not None:
            ex.written[target.key] = result.version
        self.committed.append(w.idx)
        detail: dict[str, Any] = {"target": target.key, "token": tag.token, "metrics": result.metrics}
        if result.already_committed:
            detail["already_committed"] = True
        if outcome is not None and outcome.detail:
            detail = {**outcome.detail, **detail}
        if w.kind == "quarantine":
            self.runs.step(run_id, w.idx, state=R.SUCCEEDED)
            prev = {k: v for k, v in (self._step(run_id, w.idx).get("detail") or {}).items()}
            self.runs.step(run_id, w.idx, detail={**prev, "quarantined": result.rows_written, "quarantine": target.key})
            return
        self._step_done(
            run_id,
            w.idx,
            started,
            outcome or StepOutcome(rows_in=w.rows_in, output=target.key),
            state=R.SUCCEEDED,
            rows_out=result.rows_written,
            delta_version=result.version,
            detail=detail,
            sql=getattr(w.stage, "sql", None) if w.kind == "merge_sql" else w.source_sql,
        )

    def _write_retrying(self, run_id: str, ex: StageExecutor, w: PendingWrite, tag: L.CommitTag) -> L.WriteResult:
        """``_write``, again when another writer committed to the same table first (two runs of a pipeline,
        or another pipeline, writing one table at once). The source is pinned, so each attempt streams the
        same rows afresh; the commit tag keeps it exactly once."""
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return self._write(run_id, ex, w, tag)
            except L.WriteConflict as e:
                if attempt == _CONFLICT_ATTEMPTS - 1:
                    raise
                delay = min(5.0, 0.1 * 2**attempt) * (1 + random.random())
                log.info("%s; writing again in %.1fs (attempt %d)", e, delay, attempt + 2)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _write(self, run_id: str, ex: StageExecutor, w: PendingWrite, tag: L.CommitTag) -> L.WriteResult:
        engine, rows = ex.engine, self.opts.batch_rows
        if w.kind == "quarantine":
            reader = _cast_reader(engine.stream(w.source_sql, rows), QUARANTINE_SCHEMA)
            return L.write(w.target, reader, mode="append", tag=tag)
        if w.kind == "merge_sql":
            assert w.plan is not None
            return L.merge(w.target, engine.stream(w.source_sql, rows), w.plan, tag=tag, create_if_missing=False)
        s = w.stage
        assert isinstance(s, LoadStage)
        if s.if_exists != "write" and _target_exists(w.target, s.format, self.lake.storage):
            if s.if_exists == "error":
                raise StageFailed(
                    s.name, f"{w.target.key} already exists (if_exists: error, Arc's saveMode ErrorIfExists)"
                )
            return L.WriteResult(None, 0, {"skipped": "the target exists (if_exists: ignore)"})
        if s.format != "delta":
            return L.write_files(
                engine, w.source_sql, w.target, s.format, mode=s.mode, run_id=run_id, storage=self.lake.storage
            )
        if s.mode == "scd2":
            return L.scd2(engine, w.target, s, qualified(s.input), tag=tag, started_at=ex.started_at, batch_rows=rows)
        if s.mode == "merge":
            assert w.plan is not None
            if s.keys:
                dups = L.duplicate_keys(engine, qualified(s.input), s.keys)
                if dups:
                    raise StageFailed(
                        s.name,
                        f"merge: {dups} key(s) appear more than once in {s.input!r}; a merge needs one row per key",
                    )
            return L.merge(
                w.target,
                engine.stream(w.source_sql, rows),
                w.plan,
                tag=tag,
                partition_by=s.partition_by,
                create_if_missing=s.create_if_missing,
            )
        bulk = L.write_table_files(engine, w.source_sql, w.target, mode=s.mode, tag=tag, partition_by=s.partition_by)
        if bulk is not None:
            return bulk
        return L.write(
            w.target, engine.stream(w.source_sql, rows), mode=s.mode, tag=tag, partition_by=s.partition_by,
            predicate=s.predicate,
        )  # fmt: skip

    def _undo(self, run_id: str) -> dict[str, str]:
        done: dict[str, str] = {}
        for key, (target, before) in reversed(list(self.before.items())):
            try:
                outcome = L.rollback(target, before, run_id, self.lake.storage)
            except Exception as e:  # keep undoing the others; report this one
                outcome = f"could not undo: {e}"
            if outcome not in ("unchanged", "nothing to undo"):
                done[key] = outcome
        for idx in self.committed:
            self.runs.step(run_id, idx, state=R.ROLLED_BACK)
        return done

    def _register_outputs(self, ex: StageExecutor) -> dict[str, Any]:
        outputs: dict[str, Any] = dict(self.file_outputs)
        for key, (target, _before) in self.before.items():
            version = L.current_version(target.uri)
            outputs[key] = version
            if target.catalogued and self.lake.catalog is not None and version is not None:
                assert target.zone is not None
                self.lake.catalog.record(
                    key, zone=target.zone, location=target.uri, columns=delta.columns(target.uri), delta_version=version
                )
        return outputs

    # ----------------------------------------------------------------- records
    def _step(self, run_id: str, idx: int) -> dict[str, Any]:
        for s in self.runs.steps(run_id):
            if s["idx"] == idx:
                return s
        return {}

    def _step_done(self, run_id: str, idx: int, started: float, o: StepOutcome, *, state: str, **extra: Any) -> None:
        t = time.time()
        values: dict[str, Any] = {
            "state": state,
            "ended_at": t,
            "duration_s": round(t - started, 6),
            "rows_in": o.rows_in,
            "rows_out": o.rows_out,
            "output": o.output,
            "sql": o.sql,
            "expectations": o.expectations,
            "detail": o.detail,
        }
        values.update({k: v for k, v in extra.items() if v is not None})
        self.runs.step(run_id, idx, **values)

    def _fail_steps(self, run_id: str, current: Stage | None, e: Exception, pending: list[PendingWrite]) -> None:
        t = time.time()
        failed_idx = None
        if current is not None:
            failed_idx = next(i for i, s in enumerate(self.spec.stages) if s is current or s.name == current.name)
            row = self._step(run_id, failed_idx)
            detail = e.detail if isinstance(e, StageFailed) else None
            msg = str(e) if isinstance(e, TarnError) else f"{type(e).__name__}: {e}"
            values: dict[str, Any] = {"state": R.FAILED, "ended_at": t, "error": msg}
            if row.get("started_at"):
                values["duration_s"] = round(t - float(row["started_at"]), 6)
            if detail is not None:
                if isinstance(detail, dict) and "expectations" in detail:
                    values["expectations"] = detail["expectations"]
                values["detail"] = detail
            self.runs.step(run_id, failed_idx, name=current.name, type=current.type, **values)
        reason = f"not committed: the run failed at stage {current.name!r}" if current else "not committed"
        for w in pending:
            if w.idx != failed_idx and w.idx not in self.committed:
                self.runs.step(run_id, w.idx, state=R.SKIPPED, error=reason)
        started = {row["idx"] for row in self.runs.steps(run_id)}
        for i, s in self.active:
            if i not in started:
                self.runs.step(run_id, i, name=s.name, type=s.type, state=R.SKIPPED, error="not reached")

    def _audit(self, run_id: str, state: str) -> None:
        if self.lake.audit is not None:
            self.lake.audit.append(
                self.lake.principal, "pipeline.run", self.spec.name, {"run_id": run_id, "state": state}
            )

    def _result(self, run_id: str) -> RunResult:
        rec = self.runs.get(run_id)
        return RunResult(
            run_id=rec.id,
            pipeline=rec.pipeline,
            state=rec.state,
            strategy=rec.strategy or self.strategy,
            error=rec.error,
            error_stage=rec.error_stage,
            outputs=dict(rec.outputs or {}),
            steps=self.runs.steps(rec.id),
        )


def run_pipeline(lake: LakeAccess, spec: PipelineSpec, options: RunOptions | None = None) -> RunResult:
    """Run ``spec`` (see :class:`PipelineRun`). Problems found before anything runs raise ConfigError; a failure
    while running is recorded and returned as a failed :class:`RunResult`."""
    return PipelineRun(lake, spec, options).execute()
