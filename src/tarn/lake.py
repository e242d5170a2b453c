"""The facade: one ``Lake`` that the CLI, the HTTP API and the notebook magics all call."""

from __future__ import annotations

import getpass
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import yaml
from sqlalchemy.engine import Connection

from tarn.config.loader import PROJECT_FILE, dataset_columns, load_project
from tarn.config.spec import ColumnSpec, DatasetSpec, ProjectSpec
from tarn.errors import ConfigError, NotFoundError, StateError, TarnError, redact_error
from tarn.events.landing import LandingMonitor
from tarn.ingest.service import INGEST_QUEUE, IngestService, Registered
from tarn.metastore import Metastore
from tarn.metastore import objects as st
from tarn.metastore.db import Database
from tarn.metastore.objects import ObjectRecord
from tarn.metastore.queue import DEAD, Message
from tarn.orchestrator.workers import WorkerPool
from tarn.storage import open_storage
from tarn.storage.base import Storage
from tarn.storage.local import LocalStorage
from tarn.storage.s3 import S3Storage
from tarn.tables import delta

if TYPE_CHECKING:  # imported where used: 'tarn ingest', 'tarn status' and the like start without them
    import pyarrow.dataset as pads

    from tarn.engines.duckdb import QueryResult
    from tarn.events.object_landing import ObjectLanding

STATE_DIR = ".tarn"
# Temporary raw copies older than this are leftovers of a crash (no copy takes this long).
TMP_SWEEP_AGE_SECONDS = 6 * 3600.0
log = logging.getLogger("tarn.lake")


def default_principal() -> str:
    return os.environ.get("TARN_PRINCIPAL") or getpass.getuser()


@dataclass(frozen=True)
class Status:
    objects: dict[str, int]
    queue: dict[str, int]
    tables: int

    def to_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "queue": self.queue, "dlq": self.queue.get(DEAD, 0), "tables": self.tables}


class Lake:
    """A Tarn project: its spec, storage, metastore and services."""

    def __init__(self, project_dir: Path, *, principal: str | None = None) -> None:
        self.dir = project_dir.resolve()
        self.spec, self.secrets = load_project(self.dir)
        try:
            self._open(principal)
        except TarnError as e:  # the spec may hold secrets (a metastore URL, a bucket name)
            raise redact_error(e, self.secrets.redact) from None

    def _open(self, principal: str | None) -> None:
        self.principal = principal or default_principal()
        self.storage: Storage = open_storage(self.spec.lake, self.dir)
        options = self.storage.delta_options()
        if options:  # an object store: every Delta table under the root is opened with them
            delta.register_storage_options(self.storage.root, options)
        self.storage.ensure_zones()
        for d in self.spec.datasets:  # a folder per dataset whose landing pattern is 'prefix/…'
            prefix = d.landing_glob.split("/")[0]
            if (
                isinstance(self.storage, LocalStorage)
                and "/" in d.landing_glob
                and not any(ch in prefix for ch in "*?[")
            ):
                (self.storage.zone("landing") / prefix).mkdir(exist_ok=True)
        url = os.environ.get("TARN_METASTORE_URL") or self.spec.metastore.url
        if not url:
            (self.dir / STATE_DIR).mkdir(exist_ok=True)
            url = Database.sqlite_url(self.dir / STATE_DIR / "metastore.db")
        self.meta = Metastore(url)
        self._declared: dict[str, tuple[ColumnSpec, ...] | None] = {}
        self.ingest_service = IngestService(
            self.spec, self.dir, self.storage, self.meta, self.principal, self.declared_columns
        )

    # --------------------------------------------------------------- project
    @staticmethod
    def init(directory: Path, *, name: str | None = None, datasets: Iterable[dict[str, Any]] = ()) -> Lake:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PROJECT_FILE
        if path.exists():
            raise StateError(f"{path} already exists", hint="use the existing project, or choose another DIR")
        ds = list(datasets) or [
            {
                "name": "events",
                "landing": "events/**",
                "format": "auto",
                "evolution": "evolve",
                "description": "example dataset: drop CSV or JSON Lines files into lake/landing/events/",
            }
        ]
        doc = {
            "name": name or directory.resolve().name.replace("-", "_"),
            "lake": {"root": "lake"},
            "ingest": {"workers": 2, "settle_seconds": 1.0, "max_receives": 3},
            "datasets": ds,
        }
        header = "# Tarn project. Schema: `tarn schema > tarn.schema.json`; docs in the README.\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        (directory / ".gitignore").write_text(".tarn/\nlake/\n")
        lake = Lake(directory)
        lake.meta.audit.append(lake.principal, "init", str(directory))
        return lake

    def close(self) -> None:
        self.meta.close()

    def declared_columns(self, ds: DatasetSpec) -> tuple[ColumnSpec, ...] | None:
        if ds.name not in self._declared:
            self._declared[ds.name] = dataset_columns(ds, self.dir)
        return self._declared[ds.name]

    @staticmethod
    def json_schema() -> dict[str, Any]:
        return ProjectSpec.model_json_schema()

    # ---------------------------------------------------------------- ingest
    def ingest(
        self,
        files: list[Path],
        dataset: str,
        *,
        process: bool = True,
        progress: Callable[[Path, Registered], None] | None = None,
    ) -> list[tuple[Path, Registered, str]]:
        """Register files for ``dataset`` and (by default) process them once, now, in this process —
        in micro-batches, as workers do (small files share commits). Failures stay queued for retry
        by a worker (``tarn worker`` / ``tarn up``). ``progress`` is called as each file is done."""
        self.ingest_service.dataset(dataset)  # fail early on an unknown dataset

        def audit(conn: Connection, f: Path, reg: Registered) -> None:
            self.meta.audit.add(conn, self.principal, "ingest", f"{dataset}:{f}", {"object_id": reg.object_id})

        # Recorded in transactions of many files (the raw copies are made one by one first).
        regs = list(zip(files, self.ingest_service.register_files(files, dataset, audit=audit), strict=True))
        for f, reg in regs:
            if progress and not (process and reg.state == st.RECEIVED):
                progress(f, reg)
        states = {reg.object_id: reg.state for _, reg in regs}
        if process:
            waiting = {reg.object_id: (f, reg) for f, reg in regs if reg.state == st.RECEIVED}
            # Older work waiting in the queue is done too (it may hold up a FIFO group), but at most
            # a bounded number of rounds, so that a busy queue cannot keep this call going.
            for _ in range(2 * len(waiting) + 10):
                if not waiting:
                    break
                msgs = self.ingest_service.receive_batch()
                if not msgs:
                    break  # the rest is in a retry's backoff: a worker picks it up
                for msg, state in self.ingest_service.process_batch(msgs):
                    done = waiting.pop(msg.object_id or "", None)
                    if done is not None:
                        states[done[1].object_id] = state
                        if progress:
                            progress(*done)
            for oid, (f, reg) in waiting.items():
                states[oid] = self.object(oid).state
                if progress:
                    progress(f, reg)
        return [(f, reg, states[reg.object_id]) for f, reg in regs]

    def run_worker(self, stop: threading.Event, *, workers: int | None = None, until_idle: bool = False) -> int:
        pool = WorkerPool(self.ingest_service, workers or self.spec.ingest.workers)
        pool.start()
        try:
            while not stop.wait(0.2):
                if until_idle and self._idle():
                    break
        finally:
            pool.stop()
        return pool.processed

    def _idle(self) -> bool:
        q = self.meta.queue.depth(INGEST_QUEUE)
        if q["inflight"]:
            return False
        ready = self.meta.queue.list(INGEST_QUEUE, state="ready", limit=1)
        return not ready or ready[0].visible_at > time.time() + 0.5

    def up(
        self,
        stop: threading.Event,
        *,
        workers: int | None = None,
        on_done: Callable[[str, str], None] | None = None,
        ready: threading.Event | None = None,
    ) -> None:
        """Watcher + reconciliation scan + workers, until ``stop`` is set. ``ready`` is set once
        the watcher is watching."""
        svc = self.ingest_service
        cfg = self.spec.ingest

        def on_ready(settled: list[tuple[str, float]]) -> list[Registered | Exception]:
            return svc.register_landed(settled)  # files that settled together: many to a transaction

        known = self.meta.objects.seen_landing_keys()
        known_lock = threading.Lock()

        def is_known(rel: str, size: int, mtime_ns: int) -> bool:
            with known_lock:
                if (rel, size, mtime_ns) in known:
                    return True
            with self.meta.db.read() as conn:
                hit = self.meta.objects.seen_landing(conn, rel, max(size, 0), mtime_ns)
            if hit:
                with known_lock:
                    known.add((rel, size, mtime_ns))
            return hit

        monitor: LandingMonitor | ObjectLanding
        if isinstance(self.storage, LocalStorage):
            monitor = LandingMonitor(
                self.storage.zone("landing"),
                on_ready,
                settle_seconds=cfg.settle_seconds,
                scan_interval=cfg.scan_interval_seconds,
                is_known=is_known,
                open_timeout=cfg.open_file_timeout_seconds,
            )
        else:  # an object store: listing with a persisted cursor (+ S3 notifications on SQS)
            monitor = self.object_landing()
        self._sweep_tmp()
        from tarn.orchestrator.scheduler import Scheduler

        pool = WorkerPool(svc, workers or cfg.workers, on_done=on_done)
        scheduler = Scheduler.for_lake(self)  # pipelines on commits and cron schedules
        svc.on_commit.append(scheduler.notify)
        scheduler.start()
        pool.start()
        monitor.start()
        self.meta.audit.append(self.principal, "up", str(self.dir))
        if ready is not None:
            ready.set()
        try:
            # Wake up now and then: a SIGTERM the kernel delivers to another thread (DuckDB's, delta-rs') only
            # flags the signal, and Python runs its handler in the main thread once that thread runs
            # bytecode again; a bare stop.wait() could sleep through it forever.
            while not stop.wait(0.25):
                pass
        finally:
            # Graceful shutdown, bounded by ingest.shutdown_grace_seconds in all (see WorkerPool.stop).
            deadline = time.monotonic() + cfg.shutdown_grace_seconds
            scheduler.halt()
            monitor.stop()
            pool.stop()
            scheduler.stop(timeout=max(0.0, deadline - time.monotonic()))
            svc.on_commit.remove(scheduler.notify)

    def object_landing(self) -> ObjectLanding:
        """Discovery of new objects in an object-store landing zone (used by ``up``)."""
        from tarn.events.object_landing import ObjectLanding

        if not isinstance(self.storage, S3Storage):
            raise ConfigError(f"lake root {self.storage.root} is not an object store", hint="use 'tarn up'")
        svc = self.ingest_service
        s3 = self.spec.lake.s3
        return ObjectLanding(
            self.storage,
            self.meta.landing,
            lambda f: svc.register_object(f, seen_at=time.time()).object_id,
            interval=self.spec.ingest.scan_interval_seconds,
            lookback=s3.listing_lookback_seconds,
            lease_seconds=self.spec.ingest.visibility_timeout_seconds,
            sqs_queue_url=s3.sqs_queue_url,
        )

    def _sweep_tmp(self) -> None:
        """Remove temporary raw copies a crash left behind (old enough that no copy is still running)."""
        try:
            removed = self.storage.sweep_tmp(TMP_SWEEP_AGE_SECONDS)
        except TarnError as e:
            log.warning("sweeping leftover temporary copies failed: %s", e)
            return
        if removed:
            log.info("removed %d leftover temporary raw copies", removed)

    # ---------------------------------------------------------------- status
    def status(self) -> Status:
        return Status(
            self.meta.objects.counts_by_state(), self.meta.queue.depth(INGEST_QUEUE), len(self.meta.catalog.tables())
        )

    def objects(self, *, state: str | None = None, dataset: str | None = None, limit: int = 100) -> list[ObjectRecord]:
        if state and state not in st.STATES:
            raise ConfigError(f"unknown state {state!r}", hint="states: " + ", ".join(st.STATES))
        return self.meta.objects.list(state=state, dataset=dataset, limit=limit)

    def object(self, object_id: str) -> ObjectRecord:
        return self.meta.objects.get(object_id)

    def object_detail(self, object_id: str) -> dict[str, Any]:
        obj = self.object(object_id)
        msg = self.meta.queue.for_object(obj.id)
        return {
            **obj.to_dict(),
            "events": self.meta.objects.events(obj.id),
            "message": msg.to_dict() if msg else None,
        }

    # ---------------------------------------------------------------- tables
    def tables(self) -> list[dict[str, Any]]:
        out = []
        for t in self.meta.catalog.tables():
            rows = delta.row_count(t["location"]) if delta.exists(t["location"]) else 0
            out.append({**t, "rows": rows})
        return out

    def table(self, name: str) -> dict[str, Any]:
        t = self.meta.catalog.get(name)
        return {
            **t,
            "rows": delta.row_count(t["location"]) if delta.exists(t["location"]) else 0,
            "columns": self.meta.catalog.current_columns(name),
            "schema_versions": self.meta.catalog.versions(name),
            "history": delta.history(t["location"], 20) if delta.exists(t["location"]) else [],
        }

    def _resolve_table(self, zone: str, table: str) -> pads.Dataset | None:
        uri = self.storage.table_uri(zone, table)
        if not delta.exists(uri):
            return None
        return delta.query_dataset(delta.open_table(uri))

    def query(self, sql: str, *, limit: int | None = None) -> QueryResult:
        from tarn.engines.duckdb import run_query

        known = [t["name"] for t in self.meta.catalog.tables()]
        result = run_query(sql, self._resolve_table, known, limit=limit)
        self.meta.audit.append(self.principal, "query", ",".join(result.tables_read), {"sql": sql[:2000]})
        return result

    def metrics(self) -> str:
        """Queue depth, DLQ size, retries, ingest lag and row counters, Prometheus text format."""
        from tarn.orchestrator.metrics import render

        return render(self.meta, INGEST_QUEUE)

    # ------------------------------------------------------------------- DLQ
    def dlq(self, limit: int = 100) -> list[Message]:
        return self.meta.queue.list(INGEST_QUEUE, state=DEAD, limit=limit)

    def dlq_show(self, msg_id: int) -> dict[str, Any]:
        m = self.meta.queue.get(msg_id)
        detail: dict[str, Any] = {"message": m.to_dict()}
        if m.object_id:
            detail["object"] = self.object_detail(m.object_id)
        return detail

    def dlq_select(self, *, dataset: str | None = None, error_contains: str | None = None) -> list[Message]:
        """Dead-lettered messages matching a filter (dataset, text in the error)."""
        out = []
        for m in self.dlq(limit=1_000_000):
            if dataset is not None:
                obj = self.object(m.object_id) if m.object_id else None
                if obj is None or obj.dataset != dataset:
                    continue
            if error_contains is not None and error_contains.lower() not in (m.last_error or "").lower():
                continue
            out.append(m)
        return out

    def redrive(
        self, msg_ids: list[int] | None = None, *, dataset: str | None = None, error_contains: str | None = None
    ) -> list[int]:
        """Move dead-lettered messages back to the queue: the given ids, or all matching the filter."""
        if msg_ids is None:
            ids = [m.id for m in self.dlq_select(dataset=dataset, error_contains=error_contains)]
        else:
            ids = msg_ids
        if not ids:
            raise NotFoundError("no dead-lettered message matches", hint="'tarn dlq list' shows the DLQ")
        for i in ids:
            with self.meta.db.tx() as conn:
                m = self.meta.queue.redrive(conn, i)
                if m.object_id:
                    self.meta.objects.set_state(conn, m.object_id, st.RECEIVED, f"redriven by {self.principal}")
            self.meta.audit.append(self.principal, "dlq.redrive", str(i))
        self.ingest_service.wake.set()
        return ids

    def purge(self, msg_ids: list[int]) -> list[int]:
        """Delete dead-lettered messages for good; their objects stay dead_lettered, with a note."""
        for i in msg_ids:
            m = self.meta.queue.get(i)
            if m.state != DEAD:
                raise StateError(f"message {i} is not in the dead-letter queue (state {m.state})")
            with self.meta.db.tx() as conn:
                self.meta.queue.purge_dead(conn, i)
                if m.object_id:
                    self.meta.objects.add_event(
                        conn, m.object_id, st.DEAD_LETTERED, f"purged from the DLQ by {self.principal}"
                    )
            self.meta.audit.append(self.principal, "dlq.purge", str(i))
        return msg_ids


def arrow_to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """JSON-friendly rows (timestamps and decimals as text)."""
    rows = table.to_pylist()
    out: list[dict[str, Any]] = json.loads(json.dumps(rows, default=str))
    return out
