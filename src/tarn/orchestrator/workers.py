"""Worker threads draining the ingest queue, and the foreground service behind ``tarn up``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tarn.ingest.service import IngestService

log = logging.getLogger("tarn.worker")


class WorkerPool:
    """``n`` threads, each: receive a message → process it → repeat; idle workers wait for a
    wake-up (a message enqueued in this process) or the poll interval (other processes)."""

    def __init__(self, svc: IngestService, n: int, on_done: Callable[[str, str], None] | None = None) -> None:
        self.svc = svc
        self.n = n
        self.on_done = on_done
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.processed = 0
        self._count_lock = threading.Lock()

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
            try:
                results = self.svc.process_batch(msgs)
            except Exception:  # process_batch() records failures itself; this is a last resort
                log.exception("processing messages %s failed", [m.id for m in msgs])
                continue
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

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages; in-flight ones finish (or, past ``timeout``, their visibility
        timeout hands them to another worker later)."""
        self._stop.set()
        self.svc.wake.set()
        for t in self._threads:
            t.join(timeout=timeout)
