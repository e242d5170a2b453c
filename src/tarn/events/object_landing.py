"""Discovering landed objects on an object store (``s3://…/landing/``).

Two sources feed the same registration:

* **listing** (always): every ``interval`` seconds the landing prefix is listed; objects last
  modified before the persisted cursor minus ``lookback`` are skipped outright, the others are
  claimed one by one (a unique row per key and ETag in the metastore), registered, and the claim
  finished; then the cursor moves up to the oldest object still unfinished. Restarts resume from
  the cursor, and several workers on several hosts never register one object version twice.
* **S3 event notifications** on an SQS queue (optional, ``lake.s3.sqs_queue_url``): each
  ``ObjectCreated`` record is claimed and registered at once; the listing still runs, as the
  reconciliation scan that catches whatever a notification missed.

An object store writes an object whole and atomically, so there is no settling to wait for (unlike
a local folder's half-written files).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from tarn.metastore.landing import LandingRepo, claim_id
from tarn.storage.base import LandedFile, is_partial_name
from tarn.storage.s3 import S3Storage

log = logging.getLogger("tarn.landing")

# Registers one landed object; returns its object id ('' / None when nothing new was recorded).
Register = Callable[[LandedFile], str | None]


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class ObjectLanding:
    """Listing (with a persisted cursor) and, optionally, SQS notifications → ``register``."""

    def __init__(
        self,
        storage: S3Storage,
        repo: LandingRepo,
        register: Register,
        *,
        interval: float,
        lookback: float,
        lease_seconds: float = 600.0,
        holder: str | None = None,
        sqs_queue_url: str | None = None,
    ) -> None:
        self.storage = storage
        self.repo = repo
        self.register = register
        self.interval = interval
        self.lookback = lookback
        self.lease = lease_seconds
        self.holder = holder or default_holder()
        self.source = storage.landing_uri("").rstrip("/") + "/"
        self.sqs_queue_url = sqs_queue_url
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ listing
    def scan(self) -> int:
        """One listing pass; returns how many objects this pass registered."""
        cursor = self.repo.cursor(self.source)
        floor = cursor - self.lookback
        done = self.repo.done_since(self.source, floor)
        registered = 0
        unfinished: list[float] = []  # last-modified times of objects not (yet) registered
        newest = cursor
        for f in self.storage.list_landing():
            t = f.mtime_ns / 1e9
            if t < floor:
                continue  # below the cursor: registered by an earlier pass
            newest = max(newest, t)
            outcome = self._take(f, done)
            if outcome is None:
                unfinished.append(t)
            elif outcome:
                registered += 1
        high = min(unfinished) if unfinished else newest
        if high > cursor:
            self.repo.advance(self.source, high)
            self.repo.forget_before(self.source, high - self.lookback)
        return registered

    def _take(self, f: LandedFile, done: set[str] | None = None) -> bool | None:
        """Claim and register one object: True if registered here, False if it was already done,
        None if it is unfinished (leased by another worker, or its registration failed)."""
        etag = f.etag or f"{f.size}-{f.mtime_ns}"
        if done is not None and claim_id(self.source, f.path, etag) in done:
            return False
        cid = self.repo.claim(
            self.source,
            f.path,
            etag,
            size=f.size,
            last_modified=f.mtime_ns / 1e9,
            holder=self.holder,
            lease_seconds=self.lease,
        )
        if cid is None:
            return None
        try:
            object_id = self.register(f)
        except Exception as e:  # one bad object must not stop discovery
            log.warning("registering landed object %s failed (retried on the next listing): %s", f.path, e)
            self.repo.release(cid, self.holder)
            return None
        self.repo.finish(cid, object_id or None)
        return True

    # ------------------------------------------------------------------ SQS
    def poll_notifications(self, wait_seconds: int = 10) -> int:
        """Receive one batch of S3 event notifications and register the objects they name."""
        assert self.sqs_queue_url is not None
        sqs = self._sqs()
        resp = sqs.receive_message(QueueUrl=self.sqs_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds)
        registered = 0
        for m in resp.get("Messages", ()):
            ok = True
            for f in self._records(m.get("Body", "")):
                outcome = self._take(f)
                ok = ok and outcome is not None
                registered += bool(outcome)
            if ok:  # a failed one stays in the queue and comes back after its visibility timeout
                sqs.delete_message(QueueUrl=self.sqs_queue_url, ReceiptHandle=m["ReceiptHandle"])
        return registered

    def _records(self, body: str) -> list[LandedFile]:
        """The landing objects an S3 event notification names (other keys and events ignored)."""
        try:
            doc = json.loads(body)
        except ValueError:
            log.warning("an SQS message that is not an S3 event notification was dropped: %.200s", body)
            return []
        if isinstance(doc, dict) and "Message" in doc and "Records" not in doc:  # wrapped by SNS
            try:
                doc = json.loads(doc["Message"])
            except (TypeError, ValueError):
                return []
        out: list[LandedFile] = []
        base = self.storage.key("landing") + "/"
        for r in doc.get("Records", ()) if isinstance(doc, dict) else ():
            if not str(r.get("eventName", "")).startswith("ObjectCreated"):
                continue
            s3 = r.get("s3", {})
            key = unquote_plus(str(s3.get("object", {}).get("key", "")))
            if s3.get("bucket", {}).get("name") != self.storage.bucket or not key.startswith(base):
                continue
            rel = key[len(base) :]
            if not rel or rel.endswith("/") or any(p.startswith(".") for p in rel.split("/")):
                continue
            if is_partial_name(rel.rsplit("/", 1)[-1]):
                continue
            # The notification may be older than the object now there: ask the store.
            landed = self.storage.stat_landing(rel)
            if landed is not None:
                out.append(landed)
        return out

    def _sqs(self) -> Any:
        client = getattr(self, "_sqs_client", None)
        if client is None:
            from tarn.storage.s3 import make_session

            s3 = self.storage.s3
            client = make_session(s3).client("sqs", endpoint_url=s3.endpoint_url)
            self._sqs_client = client
        return client

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        loops: list[tuple[str, Callable[[], None]]] = [("tarn-object-listing", self._list_loop)]
        if self.sqs_queue_url:
            loops.append(("tarn-object-events", self._sqs_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _list_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:
                log.exception("listing the landing zone %s failed; retrying", self.source)
            self._stop.wait(self.interval)

    def _sqs_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_notifications(wait_seconds=2)
            except Exception:
                log.exception("receiving S3 notifications from %s failed; retrying", self.sqs_queue_url)
                self._stop.wait(min(self.interval, 5.0))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        self._threads.clear()
