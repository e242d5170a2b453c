"""Discovering landed files: a watchdog observer plus a periodic reconciliation scan.

Both feed one :class:`LandingMonitor`, which only hands a file on once it is settled:
* a ``closed`` (IN_CLOSE_WRITE) or ``moved into place`` event means the writer is done;
* a created/modified event without a close after it means a writer still holds the file: it
  waits for the close (or, past ``open_timeout``, for size stability);
* any other sighting (a scan: files present at start-up, or events the watcher missed) waits
  until the size and mtime have not changed for ``settle_seconds``.
"""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from tarn.errors import TarnError

log = logging.getLogger("tarn.landing")


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float
    seen_at: float  # when the file was first seen (for latency figures)
    writing: bool = False  # a write was seen and no close after it: a writer still holds it


class LandingMonitor:
    """Settles candidate files and calls ``on_ready([(rel_path, seen_at), …])`` with the files that settled
    together (once per file); it returns one result per file: anything, or the exception that file met."""

    def __init__(
        self,
        landing: Path,
        on_ready: Callable[[list[tuple[str, float]]], Sequence[object]],
        *,
        settle_seconds: float,
        scan_interval: float,
        is_known: Callable[[str, int, int], bool],
        open_timeout: float = 600.0,
    ) -> None:
        self.landing = landing
        self.on_ready = on_ready
        self.settle = settle_seconds
        self.scan_interval = scan_interval
        self.is_known = is_known
        self.open_timeout = open_timeout
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._threads: list[threading.Thread] = []

    # -- event intake -------------------------------------------------------
    def _rel(self, path: str | bytes) -> str | None:
        p = Path(path.decode() if isinstance(path, bytes) else path)
        try:
            rel = p.relative_to(self.landing).as_posix()
        except ValueError:
            return None
        name = p.name
        if name.startswith(".") or name.endswith((".tmp", ".part", ".crdownload")):
            return None
        return rel

    def saw(self, rel: str, *, settled: bool, writing: bool = False, created: bool = False) -> None:
        """A sighting of ``rel``; ``settled`` when the writer is known to be done, ``writing``
        when a write event was seen (the file stays pending until it is closed). ``created``: a
        creation event, which means a writer only while the file is still an empty regular file —
        a file renamed in from outside, a file in a folder that appeared before its watch (watchdog's
        synthetic events), a symlink or a FIFO get no close event after it, and settle by stability."""
        full = self.landing / rel
        try:
            st = full.lstat()
        except FileNotFoundError:
            return
        if created and stat.S_ISREG(st.st_mode) and st.st_size == 0:
            writing = True
        now = time.time()
        with self._lock:
            p = self._pending.get(rel)
            if p is None:
                p = _Pending(st.st_size, st.st_mtime_ns, now, now)
                self._pending[rel] = p
            elif (p.size, p.mtime_ns) != (st.st_size, st.st_mtime_ns):
                p.size, p.mtime_ns, p.since = st.st_size, st.st_mtime_ns, now
            if writing:
                p.writing = True
            if settled:
                p.writing = False
                p.since = now - self.settle  # ready at the next tick
        self._wake.set()

    def _tick(self) -> None:
        now = time.time()
        ready: list[tuple[str, float]] = []
        with self._lock:
            for rel, p in list(self._pending.items()):
                if now - p.since < self.settle:
                    continue
                if p.writing and now - p.since < self.open_timeout:
                    continue  # still open for writing (no close event yet)
                try:
                    st = (self.landing / rel).lstat()
                except FileNotFoundError:
                    del self._pending[rel]
                    continue
                if (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
                    p.size, p.mtime_ns, p.since = st.st_size, st.st_mtime_ns, now
                    continue
                del self._pending[rel]
                if not self.is_known(rel, st.st_size, st.st_mtime_ns):
                    ready.append((rel, p.seen_at))
        if not ready:
            return
        try:
            results = self.on_ready(ready)
        except Exception:  # the monitor must keep running; the next scan sees the files again
            log.exception("registering %d landed file(s) failed", len(ready))
            return
        for (rel, _), result in zip(ready, results, strict=True):
            if isinstance(result, TarnError):  # expected (e.g. the file changed while copied): said, not dumped
                log.warning("registering landed file %s: %s", rel, result)
            elif isinstance(result, Exception):  # logged with the file and its traceback
                log.error("registering landed file %s failed", rel, exc_info=result)

    def scan(self) -> int:
        """Reconciliation: every file in landing not yet registered becomes a candidate."""
        n = 0
        for full in sorted(self.landing.rglob("*")):
            if full.is_dir() and not full.is_symlink():
                continue
            rel = self._rel(str(full))
            if rel is None:
                continue
            try:
                st = full.lstat()
            except FileNotFoundError:
                continue
            if not self.is_known(rel, st.st_size, st.st_mtime_ns):
                self.saw(rel, settled=False)
                n += 1
        return n

    # -- threads --------------------------------------------------------------
    def start(self) -> None:
        handler = _Handler(self)
        obs = Observer()
        obs.schedule(handler, str(self.landing), recursive=True)
        obs.daemon = True
        obs.start()
        self._observer = obs
        self.scan()  # files present at start-up
        for target, name in ((self._settle_loop, "tarn-settle"), (self._scan_loop, "tarn-scan")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _settle_loop(self) -> None:
        while not self._stop.is_set():
            self._tick()
            with self._lock:
                waits = [p.since + self.settle - time.time() for p in self._pending.values()]
            timeout = max(0.02, min(waits)) if waits else 1.0
            self._wake.wait(timeout)
            self._wake.clear()

    def _scan_loop(self) -> None:
        while not self._stop.wait(self.scan_interval):
            try:
                self.scan()
            except Exception:
                log.exception("reconciliation scan failed")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)


class _Handler(FileSystemEventHandler):
    def __init__(self, monitor: LandingMonitor) -> None:
        self.m = monitor

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            rel = self.m._rel(event.dest_path)
            if rel:
                self.m.saw(rel, settled=True)  # renamed into place: complete
            return
        rel = self.m._rel(event.src_path)
        if rel is None:
            return
        if isinstance(event, FileClosedEvent):
            self.m.saw(rel, settled=True)
        elif isinstance(event, FileModifiedEvent):
            self.m.saw(rel, settled=False, writing=True)
        elif isinstance(event, FileCreatedEvent):
            self.m.saw(rel, settled=False, created=True)
