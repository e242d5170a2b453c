"""Stale runs: a run left ``running`` by a process that died (SIGKILL, OOM, a lost host) is finished by the next
process that looks — ``tarn run`` of the same pipeline, or ``tarn up`` at start.

A stale run is found and claimed through its owner and heartbeat (:meth:`tarn.metastore.runs.RunRepo.stale`,
:meth:`~tarn.metastore.runs.RunRepo.take_over`: exactly one process wins). Then it is

* **resumed** (rolled forward) when the pipeline is unchanged (same spec fingerprint): the runner reads the same
  pinned input versions, re-checks every gate and commits only the writes whose token is not in their table yet,
  so every target ends fully committed; if the resumed run fails, the runner undoes its commits;
* **abandoned** (rolled back) when it cannot be resumed — the pipeline changed, was removed, or is an Arc job
  whose variables are not recorded: every table the run's steps name that holds one of the run's commit tokens
  is restored to its version before the run's first commit (a table the run created is removed), and the run is
  recorded ``failed`` with the reason.

Either way every target is unchanged or fully committed, never half, and no run stays ``running`` for ever.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tarn.errors import TarnError
from tarn.metastore import runs as R
from tarn.pipelines import loads as L
from tarn.pipelines.context import RunOptions, RunResult
from tarn.pipelines.runner import run_pipeline, spec_hash
from tarn.pipelines.spec import split_table
from tarn.tables import delta

if TYPE_CHECKING:
    from tarn.lake import Lake

log = logging.getLogger("tarn.pipelines")

__all__ = ["recover_stale_runs"]


def recover_stale_runs(lake: Lake, pipeline: str | None = None) -> list[RunResult]:
    """Resume or abandon every stale run (of ``pipeline``, or of any pipeline); returns what became of each."""
    repo = lake.meta.runs
    out: list[RunResult] = []
    for rec in repo.stale(pipeline=pipeline):
        if not repo.take_over(rec.id, rec.owner):
            continue  # another process claimed it first
        log.warning("run %s of %s was left running by %s, now gone: recovering it", rec.id, rec.pipeline, rec.owner)
        out.append(_recover(lake, rec))
    return out


def _recover(lake: Lake, rec: R.RunRecord) -> RunResult:
    from tarn.pipelines import api

    why: str
    if rec.kind != "pipeline":
        why = f"a {rec.kind} run cannot be resumed (its job variables are not recorded)"
    else:
        try:
            spec = api.load(lake, rec.pipeline)
        except TarnError as e:
            why = f"the pipeline can no longer be loaded: {e.message}"
        else:
            if rec.spec_hash is not None and spec_hash(spec) != rec.spec_hash:
                why = "the pipeline changed since the run started"
            else:
                opts = RunOptions(
                    env=rec.env, params=dict(rec.params or {}), trigger=rec.trigger, run_id=rec.id, kind=rec.kind
                )
                try:
                    return run_pipeline(api.access(lake), spec, opts)
                except TarnError as e:
                    why = f"it could not be resumed: {e.message}"
    return _abandon(lake, rec, why)


def _abandon(lake: Lake, rec: R.RunRecord, why: str) -> RunResult:
    repo = lake.meta.runs
    steps = repo.steps(rec.id)
    keys: set[str] = {f"quarantine.{rec.pipeline}"}
    for s in steps:
        detail: dict[str, Any] = s.get("detail") or {}
        for k in (s.get("output"), detail.get("target"), detail.get("quarantine")):
            if isinstance(k, str) and k:
                keys.add(k)
    prefix = L.run_token(rec.id, "")
    undone: dict[str, str] = {}
    for key in sorted(keys):
        target = _target(lake, key)
        if target is None or not delta.exists(target.uri):
            continue
        versions = [
            int(h["version"])
            for h in delta.open_table(target.uri).history(100_000)
            if str(h.get("tarn.token", "")).startswith(prefix) and h.get("version") is not None
        ]
        if not versions:
            continue
        first = min(versions)
        try:
            undone[key] = L.rollback(target, first - 1 if first > 0 else None, rec.id, lake.storage)
        except Exception as e:  # report it; keep undoing the others
            undone[key] = f"could not undo: {e}"
    message = f"the process running it ({rec.owner or 'unknown'}) died and {why}; its commits were undone"
    if undone:
        message += " (" + "; ".join(f"{k}: {v}" for k, v in undone.items()) + ")"
    log.warning("run %s of %s abandoned: %s", rec.id, rec.pipeline, message)
    repo.finish(rec.id, R.FAILED, error=message)
    if lake.meta.audit is not None:
        lake.meta.audit.append(lake.principal, "pipeline.run", rec.pipeline, {"run_id": rec.id, "state": R.FAILED})
    after = repo.get(rec.id)
    return RunResult(
        run_id=after.id,
        pipeline=after.pipeline,
        state=after.state,
        strategy=after.strategy or "",
        error=after.error,
        outputs=dict(after.outputs or {}),
        steps=repo.steps(after.id),
    )


def _target(lake: Lake, key: str) -> L.Target | None:
    if "/" in key:
        return L.Target(key, key)
    if "." not in key:
        return None  # a view name: not a table
    zone, table = split_table(key, "analytics")
    try:
        return L.Target(f"{zone}.{table}", lake.storage.table_uri(zone, table), zone, table)
    except TarnError:
        return None
