"""Registering landed objects (:mod:`tarn.ingest.registration`) and processing their queue messages (the
light stage's contract): one delivery of one message → a terminal state, or a retry with backoff, or the DLQ.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy.exc import IntegrityError

from tarn.config.spec import DatasetSpec, ProjectSpec
from tarn.errors import (
    RejectedError,
    StateError,
    TarnError,
    storage_hint,
)
from tarn.events.retry import backoff_delay
from tarn.ingest.batching import BATCH_BYTES, Collected, Heartbeat, by_bytes
from tarn.ingest.formats import check_compressed
from tarn.ingest.processor import IngestResult, Processor, token_for
from tarn.ingest.registration import INGEST_QUEUE, Registered, Registrar
from tarn.ingest.schema import catalog_to_columns
from tarn.metastore import Metastore
from tarn.metastore import objects as st
from tarn.metastore.queue import Message
from tarn.storage.base import Storage
from tarn.tables import delta

log = logging.getLogger("tarn.ingest")
__all__ = ["INGEST_QUEUE", "IngestService", "Registered"]  # the registration names, re-exported


class IngestService(Registrar):
    def __init__(
        self,
        spec: ProjectSpec,
        project_dir: Path,
        storage: Storage,
        meta: Metastore,
        principal: str,
        declared: Callable[[DatasetSpec], object],
    ) -> None:
        super().__init__(spec, storage, meta, principal)
        self.project_dir = project_dir
        self._declared = declared
        # Called after each commit to a stage table, with (table, Delta version): the scheduler's on_commit events.
        self.on_commit: list[Callable[[str, int], None]] = []
        self._dataset_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -------------------------------------------------------------- processing
    def receive(self) -> Message | None:
        got = self.receive_batch(1)
        return got[0] if got else None

    def receive_batch(self, n: int | None = None) -> list[Message]:
        """Up to ``n`` (default ``ingest.batch_objects``) visible messages, in one metastore transaction."""
        cfg = self.spec.ingest
        msgs, dead = self.meta.queue.receive_many(
            INGEST_QUEUE, n or cfg.batch_objects, cfg.visibility_timeout_seconds, cfg.max_receives
        )
        for m in dead:
            if m.object_id:
                self.meta.objects.transition(
                    m.object_id, st.DEAD_LETTERED, m.last_error or "dead-lettered after repeated delivery failures"
                )
        return msgs

    # ------------------------------------------------------------- micro-batches
    def process_batch(self, msgs: list[Message]) -> list[tuple[Message, str]]:
        """Process received messages; returns each one's resulting state.

        First deliveries of small objects of one append-only dataset are read one by one but
        committed together: one Delta commit carrying every object's own app-transaction token (so
        each object is still committed exactly once, all of a batch or none), one quarantine commit,
        one metastore transaction for their states. Per-commit costs (the Delta log grows by one
        entry, not one per file) dominate small files. Everything else — redeliveries, large
        objects, datasets with a primary key (upserts apply one object at a time, in order) —
        goes through ``process`` as before."""
        if len(msgs) <= 1:
            return [(m, self.process(m)) for m in msgs]
        objs = self.meta.objects.get_many([m.object_id for m in msgs if m.object_id])
        groups: dict[str, list[tuple[Message, st.ObjectRecord]]] = {}
        singles: list[Message] = []
        for m in msgs:
            obj = objs.get(m.object_id or "")
            if obj is not None and self._batchable(obj):
                groups.setdefault(obj.dataset or "", []).append((m, obj))
            else:
                singles.append(m)
        out: list[tuple[Message, str]] = []
        heartbeat = Heartbeat(self, msgs)  # keeps the waiting ones hidden too
        heartbeat.start()
        try:
            for name, items in groups.items():
                for chunk in by_bytes(items, max(BATCH_BYTES, self.spec.ingest.batch_object_bytes)):
                    if len(chunk) == 1:
                        singles.append(chunk[0][0])
                    else:
                        out += self._process_group(self.dataset(name), chunk)
            out += [(m, self.process(m)) for m in singles]
        finally:
            heartbeat.stop()
        return out

    def _batchable(self, obj: st.ObjectRecord) -> bool:
        if obj.state != st.RECEIVED or obj.attempts != 0 or obj.raw_path is None:
            return False  # a redelivery: its commits may exist; process() checks the tokens
        if (obj.size or 0) > self.spec.ingest.batch_object_bytes:
            return False
        ds = next((d for d in self.spec.datasets if d.name == obj.dataset), None)
        if ds is not None and ds.ingests_with_spark(obj.size):
            return False  # ingested on its own, by Spark
        return ds is not None and not ds.primary_key

    def _process_group(
        self, ds: DatasetSpec, items: list[tuple[Message, st.ObjectRecord]]
    ) -> list[tuple[Message, str]]:
        with self.meta.db.tx() as conn:
            self.meta.objects.set_states(
                conn,
                [
                    (
                        obj.id,
                        st.PROCESSING,
                        f"attempt {m.receive_count} (batch of {len(items)})",
                        {"attempts": m.receive_count},
                    )
                    for m, obj in items
                ],
            )
        out: list[tuple[Message, str]] = []
        pending: list[Collected] = []
        ratio = float(self.spec.ingest.max_expansion_ratio)
        with self._lock_for(ds.name), contextlib.ExitStack() as spooled:
            proc = self._processor(ds)
            started = time.time()
            # Local paths for the readers (an object-store raw copy is spooled until the batch ends).
            raws: dict[str, str] = {}
            together: list[tuple[str, str, str]] = []
            for _, obj in items:
                name = Path(obj.landing_path).name
                # Files that pass the guards are read together (one DuckDB query per header); a
                # bomb or any other failure is reported when the object is read on its own below.
                with contextlib.suppress(Exception):
                    raws[obj.id] = spooled.enter_context(self.storage.local_path(str(obj.raw_path)))
                    check_compressed(raws[obj.id], name, ratio)
                    together.append((obj.id, raws[obj.id], name))
            try:
                read = proc.run_many(together) if len(together) > 1 else {}
            except Exception as e:  # never worse than one by one (which reports each file's own error)
                log.warning("reading %d files together failed (%s); reading them one by one", len(together), e)
                read = {}
            for m, obj in items:
                name = Path(obj.landing_path).name
                try:
                    r = read.get(obj.id) or self._read_one(proc, obj, raws.get(obj.id), name, ratio)
                    assert r.good is not None
                    if pending and (r.added_columns or r.good.schema != pending[0].schema):
                        # Its columns differ from the batch's: commit the batch, then type this
                        # object again against the table as it now is (the catalog moved on).
                        out += self._commit_group(ds, pending)
                        pending = []
                        proc = self._processor(ds)
                        r = self._read_one(proc, obj, raws.get(obj.id), name, ratio)
                        assert r.good is not None
                except RejectedError as e:
                    out.append((m, self._finish(m, st.REJECTED, str(e))))
                    continue
                except Exception as e:
                    out.append((m, self._fail(m, e)))
                    continue
                pending.append(Collected(m, obj, r, started))
                if r.added_columns or proc.catalogued is None:
                    # New columns (or the table's first commit): commit now, so the objects after
                    # it are typed against the columns it brings.
                    out += self._commit_group(ds, pending)
                    pending = []
                    proc = self._processor(ds)
            out += self._commit_group(ds, pending)
        return out

    def _read_one(
        self, proc: Processor, obj: st.ObjectRecord, raw: str | None, name: str, ratio: float
    ) -> IngestResult:
        with contextlib.ExitStack() as stack:
            if raw is None:  # not spooled with the batch (it failed then): try again, to report why
                raw = stack.enter_context(self.storage.local_path(str(obj.raw_path)))
            check_compressed(raw, name, ratio)
            return proc.run(obj.id, raw, name, first_attempt=True, collect=True)

    def _commit_group(self, ds: DatasetSpec, group: list[Collected]) -> list[tuple[Message, str]]:
        if not group:
            return []
        suri, quri = self._stage_uri(ds), self.storage.table_uri("quarantine", ds.name)
        meta = {"tarn.dataset": ds.name, "tarn.objects": str(len(group))}
        try:
            good = pa.concat_tables([c.result.good for c in group if c.result.good is not None])
            version = delta.append_batch(
                suri,
                good,
                {token_for(c.obj.id): c.result.rows_committed for c in group},
                partition_by=ds.partition_by,
                metadata=meta,
            )
            bad = [c for c in group if c.result.bad is not None and c.result.bad.num_rows]
            if bad:
                delta.append_batch(
                    quri,
                    pa.concat_tables([c.result.bad for c in bad if c.result.bad is not None]),
                    {token_for(c.obj.id): c.result.rows_quarantined for c in bad},
                    metadata=meta,
                )
            self._record_tables(ds, version, group[0].obj.id, bad[0].obj.id if bad else None)
        except Exception as e:  # each object retries on its own (its token tells whether it landed)
            return [(c.msg, self._fail(c.msg, e)) for c in group]
        out: list[tuple[Message, str]] = []
        changes: list[tuple[str, str, str | None, dict[str, Any]]] = []
        for c in group:
            r = c.result
            state = st.COMMITTED_WITH_QUARANTINE if r.rows_quarantined else st.COMMITTED
            note = (
                f"{r.rows_committed} rows committed, {r.rows_quarantined} quarantined "
                f"({r.format}, {time.time() - c.started:.2f}s, one commit with {len(group) - 1} other objects)"
            )
            if r.added_columns:
                note += f"; new columns: {', '.join(r.added_columns)}"
            values = {
                "rows_total": r.rows_total,
                "rows_committed": r.rows_committed,
                "rows_quarantined": r.rows_quarantined,
                "table_version": version,
                "format": r.format if r.format != "?" else None,
                "error": None,
            }
            changes.append((c.obj.id, state, note, values))
            out.append((c.msg, state))
        with self.meta.db.tx() as conn:
            stale = self.meta.queue.delete_many(conn, [(c.msg.id, c.msg.receipt or "") for c in group])
            self.meta.objects.set_states(conn, changes)
        for msg_id in stale:
            log.warning("message %s: receipt expired before the ack; the commit was idempotent", msg_id)
        self._notify_commit(ds.stage_table, version)
        return out

    def _notify_commit(self, table: str, version: int | None) -> None:
        if version is None:
            return
        for hook in list(self.on_commit):
            try:
                hook(table, version)
            except Exception:  # a listener must never fail an ingest
                log.exception("on_commit hook failed for %s", table)

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
        heartbeat = Heartbeat(self, [msg])
        heartbeat.start()
        started = time.time()
        try:
            ds = self.dataset(obj.dataset or "")
            # A decompression bomb is refused, and a truncated gzip/zstd fails, before any reader sees it.
            ratio = self.spec.ingest.max_expansion_ratio
            # One writer per dataset in this process: appends would not conflict, but schema
            # evolution and MERGE upserts must see the previous commit.
            with self._lock_for(ds.name):
                # A local path for the readers (an object-store raw copy is spooled meanwhile).
                with self.storage.local_path(str(obj.raw_path)) as raw:
                    check_compressed(raw, Path(obj.landing_path).name, float(ratio))
                    proc, name = self._processor(ds), Path(obj.landing_path).name
                    if ds.ingests_with_spark(obj.size):
                        from tarn.ingest import spark_ingest  # sqlglot, pyspark: only when used

                        result = spark_ingest.run(
                            proc, self.spec.engine, obj.id, raw, name, first_attempt=first_attempt
                        )
                    else:
                        result = proc.run(obj.id, raw, name, first_attempt=first_attempt)
                self._record_tables(ds, result.stage_version, obj.id, obj.id if result.rows_quarantined else None)
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
        self._notify_commit(ds.stage_table, result.stage_version)
        return done

    def _record_tables(self, ds: DatasetSpec, version: int | None, object_id: str, quarantined_by: str | None) -> None:
        """Catalog the stage table (and the quarantine table when ``quarantined_by`` wrote to it) after
        a commit: a new schema version if the columns changed. The worker's cached tables are current
        (it just wrote or checked them)."""
        quri = self.storage.table_uri("quarantine", ds.name)
        tables = [(ds.stage_table, "stage", self._stage_uri(ds), version, object_id)]
        if quarantined_by is not None:
            tables.append((ds.quarantine_table, "quarantine", quri, None, quarantined_by))
        for name, zone, uri, delta_version, by in tables:
            if delta.latest(uri, refresh=False) is not None:
                self._catalog_record(
                    name,
                    zone=zone,
                    location=uri,
                    columns=delta.columns(uri, refresh=False),
                    delta_version=delta_version,
                    dataset=ds.name,
                    object_id=by,
                )

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
        hint = storage_hint(err)
        if hint and "hint:" not in err:  # a full disk or a read-only root, in a library's words: say what to do
            err = f"{err}\n  hint: {hint}"
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
