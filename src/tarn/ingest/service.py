"""Registering landed objects and processing their queue messages (the light stage's contract).

register: route to a dataset → copy into raw/ (checksummed, read-only) → one metastore
transaction records the object *and* enqueues its message (or records it as a duplicate).
process: one delivery of one message → a terminal state, or a retry with backoff, or the DLQ.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from tarn.config.spec import DatasetSpec, ProjectSpec
from tarn.errors import IngestError, NotFoundError, RejectedError, StateError, TarnError, did_you_mean
from tarn.events.retry import backoff_delay
from tarn.ingest.formats import check_compressed
from tarn.ingest.processor import Processor
from tarn.ingest.schema import catalog_to_columns
from tarn.metastore import Metastore
from tarn.metastore import objects as st
from tarn.metastore.queue import Message
from tarn.storage.local import LocalStorage
from tarn.tables import delta

log = logging.getLogger("tarn.ingest")
INGEST_QUEUE = "ingest"


@dataclass(frozen=True)
class Registered:
    object_id: str
    state: str
    dataset: str | None
    duplicate_of: str | None = None


class IngestService:
    def __init__(
        self,
        spec: ProjectSpec,
        project_dir: Path,
        storage: LocalStorage,
        meta: Metastore,
        principal: str,
        declared: Callable[[DatasetSpec], object],
    ) -> None:
        self.spec = spec
        self.project_dir = project_dir
        self.storage = storage
        self.meta = meta
        self.principal = principal
        self._declared = declared
        self.wake = threading.Event()  # set when a message is enqueued in this process
        # Called after each commit to a stage table, with (table, Delta version): the scheduler's on_commit events.
        self.on_commit: list[Callable[[str, int], None]] = []
        self._dataset_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---------------------------------------------------------------- routing
    def dataset(self, name: str) -> DatasetSpec:
        for d in self.spec.datasets:
            if d.name == name:
                return d
        names = [d.name for d in self.spec.datasets]
        raise NotFoundError(
            f"no dataset {name!r}{did_you_mean(name, names)}",
            hint=f"datasets in tarn.yaml: {', '.join(names) or '(none)'}",
        )

    def route(self, rel: str) -> DatasetSpec | None:
        for d in self.spec.datasets:
            if fnmatch.fnmatch(rel, d.landing_glob):
                return d
        return None

    # ----------------------------------------------------------- registration
    def register(
        self, source: Path, *, landing_rel: str | None, dataset: str | None, seen_at: float | None = None
    ) -> Registered:
        """Record one landed file. ``landing_rel`` is its path under landing (watcher, scan) or
        None for a file given on the command line."""
        path_key = landing_rel if landing_rel is not None else str(source.resolve())
        ds = self.dataset(dataset) if dataset else (self.route(landing_rel) if landing_rel else None)
        try:
            lst = source.lstat()
        except FileNotFoundError:
            raise NotFoundError(f"{source} does not exist", hint="check the path") from None
        mtime_ns = lst.st_mtime_ns
        base = {"landing_path": path_key, "mtime_ns": mtime_ns, "principal": self.principal}
        if seen_at is not None:
            base["closed_at"] = seen_at
        # Files Tarn must not read: recorded as rejected, with the reason, never followed.
        reason = self._refuse(source, lst.st_size, landing_rel)
        if reason is None and ds is None:
            reason = f"no dataset's landing pattern matches {path_key!r}; patterns: " + ", ".join(
                f"{d.name}: {d.landing_glob}" for d in self.spec.datasets
            )
        if reason is not None:
            oid = st.new_id()
            with self.meta.db.tx() as conn:
                if self.meta.objects.seen_landing(conn, path_key, max(lst.st_size, 0), mtime_ns):
                    return Registered("", "known", ds.name if ds else None)
                self.meta.objects.insert(
                    conn,
                    id=oid,
                    dataset=ds.name if ds else None,
                    size=max(lst.st_size, 0),
                    sha256="",
                    state=st.REJECTED,
                    error=reason,
                    **base,
                )
            log.warning("rejected %s: %s", path_key, reason)
            return Registered(oid, st.REJECTED, ds.name if ds else None)
        assert ds is not None
        with self.meta.db.read() as conn:
            if self.meta.objects.seen_landing(conn, path_key, lst.st_size, mtime_ns):
                return Registered("", "known", ds.name)
        try:
            copy = self.storage.copy_to_raw(str(source))
        except FileNotFoundError:
            raise NotFoundError(f"{path_key} disappeared before it could be copied into raw/") from None
        after = source.lstat() if source.exists() else None
        if after is None or (after.st_size, after.st_mtime_ns) != (lst.st_size, mtime_ns) or copy.size != lst.st_size:
            # Changed while being copied: not settled after all. The next sighting (event or
            # reconciliation scan) registers the final content.
            self.storage.discard_raw(copy)
            raise IngestError(f"{path_key} changed while it was being copied; it will be picked up once settled")
        oid = st.new_id()
        try:
            with self.meta.db.tx() as conn:
                if self.meta.objects.seen_landing(conn, path_key, lst.st_size, mtime_ns):
                    self.storage.discard_raw(copy)
                    return Registered("", "known", ds.name)
                first = self.meta.objects.find_by_content(conn, ds.name, copy.sha256)
                if first is not None:
                    self.storage.discard_raw(copy)
                    self.meta.objects.insert(
                        conn,
                        id=oid,
                        dataset=ds.name,
                        size=copy.size,
                        sha256=copy.sha256,
                        raw_path=first.raw_path,
                        state=st.DUPLICATE,
                        duplicate_of=first.id,
                        error=f"same content (sha256 {copy.sha256[:12]}…) as object {first.id}; not ingested again",
                        **base,
                    )
                    return Registered(oid, st.DUPLICATE, ds.name, first.id)
                raw_path = self.storage.keep_raw(copy, ds.name, oid, source.name)
                self.meta.objects.insert(
                    conn,
                    id=oid,
                    dataset=ds.name,
                    size=copy.size,
                    sha256=copy.sha256,
                    raw_path=raw_path,
                    state=st.RECEIVED,
                    **base,
                )
                # Upserts by primary key must apply in landing order; appends may run in parallel.
                group = ds.name if ds.primary_key else None
                self.meta.queue.send(
                    conn, INGEST_QUEUE, {"object_id": oid, "dataset": ds.name}, object_id=oid, group=group
                )
        except BaseException:
            self.storage.discard_raw(copy)  # no-op once kept
            raise
        self.wake.set()
        return Registered(oid, st.RECEIVED, ds.name)

    def _refuse(self, source: Path, size: int, landing_rel: str | None) -> str | None:
        if source.is_symlink():
            target = Path(os.path.realpath(source))
            landing = self.storage.zone("landing").resolve()
            if landing_rel is not None and not target.is_relative_to(landing):
                return f"symlink pointing outside the landing zone ({target}); not followed"
            if not target.is_file():
                return "symlink to something that is not a regular file; not followed"
            return "symlinks are not ingested; land the file itself"
        if not source.is_file():
            return "not a regular file"
        if size > self.spec.ingest.max_file_bytes:
            return (
                f"file of {size} bytes is over the limit of {self.spec.ingest.max_file_bytes} bytes "
                "(ingest.max_file_bytes)"
            )
        return None

    # -------------------------------------------------------------- processing
    def receive(self) -> Message | None:
        cfg = self.spec.ingest
        msg, dead = self.meta.queue.receive(INGEST_QUEUE, cfg.visibility_timeout_seconds, cfg.max_receives)
        for m in dead:
            if m.object_id:
                self.meta.objects.transition(
                    m.object_id, st.DEAD_LETTERED, m.last_error or "dead-lettered after repeated delivery failures"
                )
        return msg

    def _lock_for(self, dataset: str) -> threading.Lock:
        with self._locks_guard:
            return self._dataset_locks.setdefault(dataset, threading.Lock())

    def process(self, msg: Message) -> str:
        """One delivery of ``msg``; returns the object's resulting state."""
        assert msg.receipt is not None and msg.object_id is not None
        obj = self.meta.objects.get(msg.object_id)
        if obj.state in st.TERMINAL and obj.state != st.DEAD_LETTERED:
            self._ack(msg)  # already done (a duplicate delivery)
            return obj.state
        # Never delivered before (not a redelivery, not a redrive): no commit of it can exist yet.
        first_attempt = obj.state == st.RECEIVED and obj.attempts == 0
        self.meta.objects.transition(obj.id, st.PROCESSING, f"attempt {msg.receive_count}", attempts=msg.receive_count)
        heartbeat = _Heartbeat(self, msg)
        heartbeat.start()
        started = time.time()
        try:
            ds = self.dataset(obj.dataset or "")
            # A decompression bomb is refused, and a truncated gzip/zstd fails, before any reader sees it.
            ratio = self.spec.ingest.max_expansion_ratio
            check_compressed(str(obj.raw_path), Path(obj.landing_path).name, float(ratio))
            # One writer per dataset in this process: appends would not conflict, but schema
            # evolution and MERGE upserts must see the previous commit.
            with self._lock_for(ds.name):
                result = self._processor(ds).run(
                    obj.id, str(obj.raw_path), Path(obj.landing_path).name, first_attempt=first_attempt
                )
                # The worker's cached table is current: it just wrote (or checked) it.
                stage = delta.latest(self._stage_uri(ds), refresh=False)
                columns = delta.columns(self._stage_uri(ds), refresh=False) if stage is not None else None
                if columns is not None:
                    self._catalog_record(
                        ds.stage_table,
                        zone="stage",
                        location=self._stage_uri(ds),
                        columns=columns,
                        delta_version=result.stage_version,
                        dataset=ds.name,
                        object_id=obj.id,
                    )
                quri = self.storage.table_uri("quarantine", ds.name)
                if result.rows_quarantined and delta.latest(quri, refresh=False) is not None:
                    self._catalog_record(
                        ds.quarantine_table,
                        zone="quarantine",
                        location=quri,
                        columns=delta.columns(quri, refresh=False),
                        delta_version=None,
                        dataset=ds.name,
                        object_id=obj.id,
                    )
        except RejectedError as e:
            heartbeat.stop()
            return self._finish(msg, st.REJECTED, str(e))
        except Exception as e:  # anything else: retry with backoff, then the DLQ
            heartbeat.stop()
            return self._fail(msg, e)
        heartbeat.stop()
        state = st.COMMITTED_WITH_QUARANTINE if result.rows_quarantined else st.COMMITTED
        note = (
            f"{result.rows_committed} rows committed, {result.rows_quarantined} quarantined "
            f"({result.format}, {time.time() - started:.2f}s)"
        )
        if result.added_columns:
            note += f"; new columns: {', '.join(result.added_columns)}"
        done = self._finish(
            msg,
            state,
            note,
            rows_total=result.rows_total,
            rows_committed=result.rows_committed,
            rows_quarantined=result.rows_quarantined,
            table_version=result.stage_version,
            format=result.format if result.format != "?" else None,
            error=None,
        )
        for hook in list(self.on_commit):
            try:
                if result.stage_version is not None:
                    hook(ds.stage_table, result.stage_version)
            except Exception:  # a listener must never fail an ingest
                log.exception("on_commit hook failed for %s", ds.stage_table)
        return done

    def _catalog_record(self, name: str, **values: Any) -> None:
        """CatalogRepo.record, again if another worker recorded the same table at the same moment
        (on PostgreSQL two first records, or two schema changes, race to insert the same row)."""
        for attempt in range(5):
            try:
                self.meta.catalog.record(name, **values)
                return
            except IntegrityError:
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def _stage_uri(self, ds: DatasetSpec) -> str:
        return self.storage.table_uri("stage", ds.name)

    def _processor(self, ds: DatasetSpec) -> Processor:
        declared = self._declared(ds)
        cat = self.meta.catalog.current_columns(ds.stage_table)
        return Processor(
            ds,
            stage_uri=self._stage_uri(ds),
            quarantine_uri=self.storage.table_uri("quarantine", ds.name),
            declared=declared,  # type: ignore[arg-type]
            catalogued=catalog_to_columns(cat) if cat else None,
            batch_rows=self.spec.ingest.batch_rows,
        )

    def _finish(self, msg: Message, state: str, note: str, **values: object) -> str:
        assert msg.receipt is not None and msg.object_id is not None
        with self.meta.db.tx() as conn:
            try:
                self.meta.queue.delete(conn, msg.id, msg.receipt)
            except StateError:
                log.warning("message %s: receipt expired before the ack; the commit was idempotent", msg.id)
            if state == st.REJECTED:
                values["error"] = note
            self.meta.objects.set_state(conn, msg.object_id, state, note, **values)
        return state

    def _ack(self, msg: Message) -> None:
        assert msg.receipt is not None
        with self.meta.db.tx() as conn, contextlib.suppress(StateError):
            self.meta.queue.delete(conn, msg.id, msg.receipt)

    def _fail(self, msg: Message, e: BaseException) -> str:
        assert msg.receipt is not None and msg.object_id is not None
        err = f"{type(e).__name__}: {e}" if not isinstance(e, TarnError) else str(e)
        retryable = getattr(e, "retryable", True) if isinstance(e, TarnError) else True
        cfg = self.spec.ingest
        with self.meta.db.tx() as conn:
            try:
                if not retryable or msg.receive_count >= cfg.max_receives:
                    why = "not retryable" if not retryable else f"failed {msg.receive_count} times"
                    self.meta.queue.dead_letter(conn, msg.id, msg.receipt, err)
                    self.meta.objects.set_state(conn, msg.object_id, st.DEAD_LETTERED, f"{why}: {err}", error=err)
                    log.error("object %s dead-lettered: %s", msg.object_id, err)
                    return st.DEAD_LETTERED
                delay = backoff_delay(msg.receive_count, cfg.backoff)
                self.meta.queue.change_visibility(conn, msg.id, msg.receipt, delay, error=err)
                self.meta.objects.set_state(
                    conn,
                    msg.object_id,
                    st.FAILED,
                    f"attempt {msg.receive_count}/{cfg.max_receives} failed, retry in {delay:.1f}s: {err}",
                    error=err,
                )
            except StateError:
                return st.FAILED
        log.warning("object %s attempt %d failed: %s", msg.object_id, msg.receive_count, err)
        return st.FAILED


class _Heartbeat:
    """Extends a message's visibility while it is being processed (a long file is not a crash)."""

    def __init__(self, svc: IngestService, msg: Message) -> None:
        self.svc, self.msg = svc, msg
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"tarn-heartbeat-{msg.id}")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        vt = self.svc.spec.ingest.visibility_timeout_seconds
        while not self._stop.wait(vt / 3):
            try:
                with self.svc.meta.db.tx() as conn:
                    assert self.msg.receipt is not None
                    self.svc.meta.queue.change_visibility(conn, self.msg.id, self.msg.receipt, vt)
            except Exception:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
