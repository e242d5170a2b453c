"""The scheduler behind ``tarn up``: pipelines run on commits to the tables they read and on cron schedules.

Triggers (declared in each pipeline's ``triggers``; see :mod:`tarn.pipelines.spec`):

``on_commit``
    A commit to one of the trigger's ``tables`` (default: every lake table the pipeline reads) is an *event*.
    Events are batched: the pipeline runs once ``min_events`` are pending, or ``max_wait`` seconds after the
    first pending one, whichever comes first; one run consumes every pending event of the pipeline. Events
    come from the ingest service (a callback after each commit to a stage table), from the scheduler's own runs
    (every table a run wrote), and from a periodic check of the watched tables' Delta versions, which also sees
    commits made by other processes (``tarn ingest``, ``tarn run``, workers on other hosts). A commit is counted
    once whichever way it is seen, by its table version.
``cron``
    A five-field cron schedule in the trigger's ``timezone`` (parsed by ``cronsim``). A schedule missed while
    the scheduler was not running is not caught up; several missed fires coalesce into one run. Several
    ``tarn up`` processes on one metastore each see every fire; each fire is *claimed* in the metastore
    (``cron:<pipeline>:<trigger>:<fire time>``, a row with a unique name: :mod:`tarn.metastore.claims`) and only
    the process whose claim succeeds runs it, so each scheduled tick runs once across all processes.

Runs happen one at a time in the scheduler's thread, due pipelines in DAG order (upstream first), and each run's
writes are events for the pipelines downstream, so a commit to a stage table flows through the DAG to analytics
in order. A pipeline never triggers itself. The project's pipelines are re-read when their files change; while
they hold a cycle (which ``tarn validate`` rejects) or do not load, nothing is triggered and the problem is
logged.

When the thread starts, and every :data:`RECOVER_SECONDS` after, runs left ``running`` by a process that died
are resumed or abandoned (:mod:`tarn.pipelines.recovery`). Every :data:`MAINTAIN_SECONDS` the lake is swept of
what crashes leave behind (:mod:`tarn.orchestrator.maintenance`), by one process per hour (a claim).

The clock is injectable: tests drive :meth:`Scheduler.tick` with a fake clock instead of starting the thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cronsim import CronSim, CronSimError

from tarn.errors import ConfigError, TarnError
from tarn.pipelines.context import RunResult
from tarn.pipelines.dag import build_graph
from tarn.pipelines.project import load_pipelines, pipeline_files
from tarn.pipelines.spec import CronTrigger, OnCommitTrigger, PipelineSpec, split_table

if TYPE_CHECKING:
    from tarn.lake import Lake

__all__ = ["Fired", "Scheduler", "next_fire"]

log = logging.getLogger("tarn.scheduler")

RunFn = Callable[[str, str], RunResult]
"""(pipeline name, trigger) → the run's result."""

RECOVER_SECONDS = 60.0
MAINTAIN_SECONDS = 3600.0
CLAIMS_KEPT_SECONDS = 7 * 86400.0


def cron_claim_name(pipeline: str, index: int, fire: float) -> str:
    """The claim that makes one cron fire of one trigger run once across processes."""
    return f"cron:{pipeline}:{index}:{round(fire)}"


def next_fire(trigger: CronTrigger, after: float) -> float:
    """The first time (epoch seconds) strictly after ``after`` at which ``trigger`` fires."""
    try:
        tz = zoneinfo.ZoneInfo(trigger.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"cron trigger: unknown timezone {trigger.timezone!r}", hint="use an IANA name such as Europe/Paris"
        ) from None
    try:
        return next(CronSim(trigger.schedule, dt.datetime.fromtimestamp(after, tz))).timestamp()
    except CronSimError as e:
        raise ConfigError(f"cron schedule {trigger.schedule!r}: {e}") from None


def _on_commit(spec: PipelineSpec, index: int) -> bool:
    return isinstance(spec.triggers[index], OnCommitTrigger)


@dataclass
class _Pending:
    """Events waiting for one on_commit trigger of one pipeline."""

    first_at: float
    events: int = 0
    tables: dict[str, int | None] = field(default_factory=dict)  # table → latest version seen


@dataclass(frozen=True)
class _Watch:
    pipeline: str
    index: int  # the trigger's position in the pipeline's triggers
    trigger: OnCommitTrigger


@dataclass(frozen=True)
class Fired:
    """One run started by the scheduler (or a run that could not start: ``error``)."""

    pipeline: str
    trigger: str
    at: float
    result: RunResult | None
    error: str | None = None


class Scheduler:
    """Runs a project's pipelines on their ``on_commit`` and ``cron`` triggers (see the module docstring)."""

    def __init__(
        self,
        project_dir: Path,
        run: RunFn,
        *,
        table_version: Callable[[str], int | None] | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 5.0,
        load: Callable[[], Mapping[str, PipelineSpec]] | None = None,
        claim: Callable[[str], bool] | None = None,
        recover: Callable[[], object] | None = None,
        maintain: Callable[[], object] | None = None,
    ) -> None:
        """``run`` runs a pipeline by name; ``table_version`` gives a watched table's current Delta version (None:
        no such table; without it, commits are only seen through :meth:`notify`); ``poll_interval`` is how often
        the watched tables' versions are checked, and the longest the thread sleeps. ``claim(name)`` is True for
        the one process that may run a cron fire (default: always); ``recover()`` finishes stale runs."""
        self.project_dir = project_dir
        self._run = run
        self._table_version = table_version
        self.clock = clock
        self.poll_interval = poll_interval
        self._load = load or (lambda: load_pipelines(project_dir))
        self._claim = claim
        self._recover = recover
        self._next_recover = 0.0
        self._maintain = maintain
        self._next_maintain = time.monotonic() + 60.0  # not in the first minute: let the start settle
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self.specs: dict[str, PipelineSpec] = {}
        self.order: list[str] = []
        self.problem: str | None = None
        self._watch: dict[str, list[_Watch]] = {}  # table → triggers watching it
        self._crons: dict[tuple[str, int], tuple[CronTrigger, float]] = {}  # (pipeline, index) → (trigger, next)
        self._pending: dict[str, dict[int, _Pending]] = {}
        self._cron_due: set[str] = set()
        self._seen: dict[str, int] = {}  # table → latest version counted
        self._next_poll = 0.0
        self.fired: list[Fired] = []
        """Every run the scheduler started, oldest first (the last 1000)."""

    @classmethod
    def for_lake(cls, lake: Lake, *, poll_interval: float = 5.0) -> Scheduler:
        """A scheduler over a lake's project: runs through :func:`tarn.pipelines.api.run`."""
        from tarn.pipelines import api
        from tarn.pipelines.recovery import recover_stale_runs
        from tarn.tables import delta

        def run(name: str, trigger: str) -> RunResult:
            return api.run(lake, name, trigger=trigger)

        holder = lake.meta.runs.owner

        def claim(name: str) -> bool:
            return lake.meta.claims.claim(name, holder)

        def recover() -> object:
            lake.meta.claims.forget_older_than(CLAIMS_KEPT_SECONDS)
            return recover_stale_runs(lake)

        def maintain() -> object:
            from tarn.orchestrator.maintenance import maintain as sweep

            if not claim(f"maintain:{int(time.time() // MAINTAIN_SECONDS)}"):
                return None  # another process sweeps this hour
            return sweep(lake)

        def version(table: str) -> int | None:
            if "/" in table:
                uri = table
            else:
                zone, name = split_table(table, "stage")
                uri = lake.storage.table_uri(zone, name)
            return int(delta.open_table(uri).version()) if delta.exists(uri) else None

        return cls(lake.dir, run, table_version=version, poll_interval=poll_interval, claim=claim, recover=recover)

    # ------------------------------------------------------------------- events
    def notify(self, table: str, version: int | None = None, *, source: str | None = None) -> None:
        """A commit to ``table`` (its new Delta ``version``, if known). ``source``: the pipeline that wrote it
        (it is not triggered by its own write). Thread-safe; called by ingest workers."""
        with self._lock:
            self._event(table, version, source, self.clock())
        self._wake.set()

    def _event(self, table: str, version: int | None, source: str | None, now: float) -> None:
        last = self._seen.get(table)
        if version is not None:
            if last is not None and version <= last:
                return  # this commit was counted already (the hook and the version check both saw it)
            count = version - last if last is not None else 1
            self._seen[table] = version
        else:
            count = 1
        for w in self._watch.get(table, ()):
            if w.pipeline == source:
                continue
            p = self._pending.setdefault(w.pipeline, {}).setdefault(w.index, _Pending(first_at=now))
            p.events += count
            p.tables[table] = version

    def _versions(self, tables: list[str]) -> dict[str, int]:
        """The current version of each table that exists (read without holding the lock)."""
        out: dict[str, int] = {}
        get = self._table_version
        if get is None:
            return out
        for table in tables:
            try:
                version = get(table)
            except Exception as e:  # a table being rewritten, a storage hiccup: try again next time
                log.debug("scheduler: version of %s: %s", table, e)
                continue
            if version is not None:
                out[table] = version
        return out

    def _poll(self, now: float) -> None:
        """Commits made elsewhere: a watched table whose version moved on."""
        versions = self._versions(list(self._watch))
        with self._lock:
            for table, version in versions.items():
                if version > self._seen.get(table, -1):
                    if table not in self._seen:  # appeared since the last check: every version is new
                        self._seen[table] = -1
                    self._event(table, version, None, now)

    # -------------------------------------------------------------- the project
    def refresh(self) -> None:
        """Re-read the project's pipelines if their files changed (at start, and on every tick)."""
        files = pipeline_files(self.project_dir)
        signature = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
        if signature == self._signature:
            return
        self._signature = signature
        try:
            specs = dict(self._load())
            graph = build_graph(specs.values(), self.project_dir)
            cycle = graph.cycle()
            if cycle:
                raise ConfigError("pipelines depend on each other in a cycle: " + " → ".join(cycle))
            order = graph.order()
            watch: dict[str, list[_Watch]] = {}
            crons: dict[tuple[str, int], tuple[CronTrigger, float]] = {}
            now = self.clock()
            for name in order:
                for i, t in enumerate(specs[name].triggers):
                    if isinstance(t, OnCommitTrigger):
                        for table in t.tables or graph.nodes[name].reads:
                            watch.setdefault(table, []).append(_Watch(name, i, t))
                    elif isinstance(t, CronTrigger):
                        known = self._crons.get((name, i))
                        crons[(name, i)] = known if known and known[0] == t else (t, next_fire(t, now))
        except TarnError as e:
            self.problem = e.message
            log.error("scheduler: no pipeline is triggered until this is fixed: %s", e.message)
            with self._lock:
                self._watch, self._crons, self.order = {}, {}, []
            return
        baseline = self._versions(sorted(set(watch) - set(self._watch)))  # commits before now are not events
        with self._lock:
            self.specs, self.order, self._watch, self._crons, self.problem = specs, order, watch, crons, None
            self._pending = {
                n: {i: p for i, p in trigs.items() if i < len(specs[n].triggers) and _on_commit(specs[n], i)}
                for n, trigs in self._pending.items()
                if n in specs
            }
            self._cron_due &= set(specs)
            for table, version in baseline.items():
                self._seen[table] = max(version, self._seen.get(table, -1))
        log.info(
            "scheduler: %d pipeline(s); %d table(s) watched, %d cron schedule(s)", len(specs), len(watch), len(crons)
        )

    # -------------------------------------------------------------------- ticks
    def _due(self, now: float) -> dict[str, str]:
        """Pipelines due now → their trigger (``cron`` or ``on_commit``)."""
        due = {n: "cron" for n in self._cron_due}
        for name, trigs in self._pending.items():
            spec = self.specs.get(name)
            if spec is None or name in due:
                continue
            for i, p in trigs.items():
                t = spec.triggers[i]
                assert isinstance(t, OnCommitTrigger)
                if p.events >= t.min_events or now - p.first_at >= t.max_wait:
                    due[name] = "on_commit"
                    break
        return due

    def next_deadline(self) -> float:
        """When something may become due without a new event (a max_wait, a cron fire, the next version check)."""
        with self._lock:
            times = [self._next_poll] if self._table_version is not None else []
            times += [fire for _, fire in self._crons.values()]
            for name, trigs in self._pending.items():
                for i, p in trigs.items():
                    t = self.specs[name].triggers[i]
                    assert isinstance(t, OnCommitTrigger)
                    times.append(p.first_at + t.max_wait)
        return min(times) if times else self.clock() + self.poll_interval

    def tick(self) -> list[Fired]:
        """Do what is due now: check versions, fire crons, then run due pipelines one by one in DAG order (the
        writes of each run may make pipelines downstream due). Returns the runs started."""
        self.refresh()
        now = self.clock()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self._poll(now)
        with self._lock:
            fires = [(key, cron, fire) for key, (cron, fire) in self._crons.items() if fire <= now]
            for key, cron, _fire in fires:
                self._crons[key] = (cron, next_fire(cron, now))
        for (pipeline, index), _cron, fire in fires:
            if self._claimed(cron_claim_name(pipeline, index, fire)):
                with self._lock:
                    self._cron_due.add(pipeline)
        started: list[Fired] = []
        while not self._stop.is_set():
            with self._lock:
                due = self._due(self.clock())
                name = next((n for n in self.order if n in due), None)
                if name is None:
                    break
                trigger = due[name]
                pending = self._pending.pop(name, {})
                self._cron_due.discard(name)
            started.append(self._start(name, trigger, pending))
        return started

    def _claimed(self, name: str) -> bool:
        if self._claim is None:
            return True
        try:
            return self._claim(name)
        except Exception as e:  # the metastore is unreachable: do not run it twice; the next fire will come
            log.error("scheduler: cannot claim %s, skipped: %s", name, e)
            return False

    def _start(self, name: str, trigger: str, pending: dict[int, _Pending]) -> Fired:
        events = sum(p.events for p in pending.values())
        tables = sorted({t for p in pending.values() for t in p.tables})
        why = f"{events} commit(s) to {', '.join(tables)}" if trigger == "on_commit" else "its cron schedule"
        log.info("scheduler: running %s (%s)", name, why)
        at = self.clock()
        try:
            result = self._run(name, trigger)
        except TarnError as e:  # stopped before it ran (a param without a value, a pipeline file gone)
            log.error("scheduler: %s could not run: %s", name, e.message)
            fired = Fired(name, trigger, at, None, e.message)
        except Exception as e:  # a bug must not stop the scheduler
            log.exception("scheduler: running %s failed", name)
            fired = Fired(name, trigger, at, None, f"{type(e).__name__}: {e}")
        else:
            if result.ok:
                with self._lock:
                    for table, version in result.outputs.items():
                        self._event(table, int(version) if version is not None else None, name, self.clock())
            else:
                log.warning("scheduler: run %s of %s failed: %s", result.run_id, name, result.error)
            fired = Fired(name, trigger, at, result)
        self.fired.append(fired)
        del self.fired[:-1000]
        return fired

    # ------------------------------------------------------------------- thread
    def start(self) -> None:
        """Run in a daemon thread until :meth:`stop`."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tarn-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if self._recover is not None and time.monotonic() >= self._next_recover:
                self._next_recover = time.monotonic() + RECOVER_SECONDS
                try:
                    self._recover()
                except Exception:
                    log.exception("scheduler: recovering stale runs failed")
            if self._maintain is not None and time.monotonic() >= self._next_maintain:
                self._next_maintain = time.monotonic() + MAINTAIN_SECONDS
                try:
                    self._maintain()
                except Exception:
                    log.exception("scheduler: maintenance failed")
            try:
                self.tick()
            except Exception:
                log.exception("scheduler: tick failed")
            delay = self.next_deadline() - self.clock()
            self._wake.wait(min(max(delay, 0.01), self.poll_interval))

    def halt(self) -> None:
        """Start no new run (returns at once; :meth:`stop` waits for the run in progress)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the run in progress, if any, waiting for it up to ``timeout`` seconds (a run cut short
        by the process exiting is left ``running`` and recovered by the next start, see the module docstring)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
