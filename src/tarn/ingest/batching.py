"""Pieces of the ingest service's processing: micro-batch chunking and the collected objects of a
batch, and the heartbeat that keeps received messages hidden while they are worked on."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from tarn.ingest.processor import IngestResult
from tarn.metastore import objects as st
from tarn.metastore.queue import Message

if TYPE_CHECKING:
    from tarn.ingest.service import IngestService


# A micro-batch's rows are held in memory until its commit: its objects' raw bytes are capped.
BATCH_BYTES = 64 * 1024**2


def by_bytes(items: list[tuple[Message, st.ObjectRecord]], limit: int) -> list[list[tuple[Message, st.ObjectRecord]]]:
    """Consecutive chunks of ``items`` whose objects hold at most ``limit`` bytes together."""
    chunks: list[list[tuple[Message, st.ObjectRecord]]] = [[]]
    size = 0
    for item in items:
        n = item[1].size or 0
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += n
    return chunks


@dataclass(frozen=True)
class Collected:
    """An object of a micro-batch, read and typed, waiting for the batch's commit."""

    msg: Message
    obj: st.ObjectRecord
    result: IngestResult
    started: float

    @property
    def schema(self) -> pa.Schema | None:
        return self.result.good.schema if self.result.good is not None else None


class Heartbeat:
    """Extends messages' visibility while they are being processed (a long file is not a crash)."""

    def __init__(self, svc: IngestService, msgs: list[Message]) -> None:
        self.svc, self.msgs = svc, list(msgs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"tarn-heartbeat-{msgs[0].id}")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        vt = self.svc.spec.ingest.visibility_timeout_seconds
        while self.msgs and not self._stop.wait(vt / 3):
            for msg in list(self.msgs):
                try:
                    with self.svc.meta.db.tx() as conn:
                        assert msg.receipt is not None
                        self.svc.meta.queue.change_visibility(conn, msg.id, msg.receipt, vt)
                except Exception:  # acked (or lost to another worker): nothing to extend any more
                    self.msgs.remove(msg)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
