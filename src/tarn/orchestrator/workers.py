"""Worker threads draining the ingest queue, and the foreground service behind ``tarn up``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tarn.errors import StateError
from tarn.ingest.service import IngestService
from tarn.metastore import objects as st
from tarn.metastore.queue import Message

log = logging.getLogger("tarn.worker")


class WorkerPool:
    """``n`` threads, each: receive a message → process it → repeat; idle workers wait for a
    wake-up (a message enqueued in this process) or the poll interval (other processes).

    Graceful shutdown (:meth:`stop`, on SIGTERM/SIGINT): no new message is received; the messages in hand are
    finished for up to ``ingest.shutdown_grace_seconds``; whatever is still held after that is *released* —
    back on the queue at once, its receive count given back (a shutdown is not a failed attempt), its object
    back to ``received`` — and the process exits. A release never lets two holders commit one object: the
    object is not first-delivery any more, so whoever takes it next looks for its commit token first.
    """

    def __init__(self, svc: IngestService, n: int, on_done: Callable[[str, str], None] | None = None) -> None:
        self.svc = svc
        self.n = n
        self.on_done = on_done
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.processed = 0
        self.released = 0
        self._count_lock = threading.Lock()
        self._held: dict[str, list[Message]] = {}  # worker thread → the messages it holds now

    def start(self) -> None:
        for i in range(self.n):
            t = threading.Thread(target=self._loop, name=f"tarn-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self) -> None:
        poll = self.svc.spec.ingest.poll_interval_seconds
        while not self._stop.is_set():
            try:
                # Several at once: small objects of one dataset then share one commit (micro-batch).
                msgs = self.svc.receive_batch()
            except Exception:
                log.exception("receiving from the queue failed; retrying")
                self._stop.wait(poll)
                continue
            if not msgs:
                self.svc.wake.wait(poll)
                self.svc.wake.clear()
                continue
            me = threading.current_thread().name
            with self._count_lock:
                self._held[me] = msgs
            try:
                results = self.svc.process_batch(msgs)
            except Exception:  # process_batch() records failures itself; this is a last resort
                log.exception("processing messages %s failed", [m.id for m in msgs])
                continue
            finally:
                with self._count_lock:
                    self._held.pop(me, None)
            with self._count_lock:
                self.processed += len(results)
            for msg, state in results:
                if self.on_done is not None and msg.object_id:
                    try:
                        self.on_done(msg.object_id, state)
                    except Exception:  # a reporting hook must never stop a worker
                        log.exception("on_done hook failed for object %s", msg.object_id)

    def drain(self, idle: Callable[[], bool]) -> None:
        """Process in the calling thread until ``idle()`` says there is nothing left to do now."""
        while not idle():
            msgs = self.svc.receive_batch()
            if not msgs:
                return
            self.svc.process_batch(msgs)

    def stop(self, timeout: float | None = None) -> int:
        """Stop taking messages; the messages in hand finish within ``timeout`` seconds (default
        ``ingest.shutdown_grace_seconds``), and those still held then are released (see the class
        docstring). Returns how many were released."""
        grace = self.svc.spec.ingest.shutdown_grace_seconds if timeout is None else timeout
        deadline = time.monotonic() + grace
        self._stop.set()
        self.svc.wake.set()
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._count_lock:
            held = [m for t in self._threads if t.is_alive() for m in self._held.get(t.name, [])]
        released = self._release(held)
        if released:
            log.warning(
                "shutdown: %d message(s) still in hand after %.0fs (ingest.shutdown_grace_seconds) were released "
                "back to the queue",
                released,
                grace,
            )
        self.released += released
        return released

    def _release(self, msgs: list[Message]) -> int:
        n = 0
        for m in msgs:
            if m.receipt is None:
                continue
            try:
                with self.svc.meta.db.tx() as conn:
                    self.svc.meta.queue.release(conn, m.id, m.receipt)
                    obj = self.svc.meta.objects.get(m.object_id) if m.object_id else None
                    if obj is not None and obj.state == st.PROCESSING:
                        self.svc.meta.objects.set_state(
                            conn, obj.id, st.RECEIVED, "released at shutdown (not a failed attempt)"
                        )
                n += 1
            except StateError:
                continue  # acknowledged (done) or retried meanwhile: not ours to release
            except Exception:  # the metastore is unreachable: the visibility timeout brings it back
                log.exception("shutdown: could not release message %s", m.id)
        return n
