"""Reading a record-batch stream ahead on a thread."""

from __future__ import annotations

import queue
import threading

import pyarrow as pa


class Prefetch:
    """Reads DuckDB's batches on a thread, a few ahead, so DuckDB types the next batches while
    delta-rs encodes this one (otherwise they take turns). Memory: at most ``depth`` batches."""

    _END = object()

    def __init__(self, reader: pa.RecordBatchReader, depth: int = 3) -> None:
        self._reader = reader
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tarn-ingest-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item: object = self._reader.read_next_batch()
                except StopIteration:
                    item = self._END
                self._put(item)
                if item is self._END:
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read_next_batch(self) -> pa.RecordBatch:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pa.RecordBatch)
        return item

    def close(self) -> None:
        """Stop reading (the consumer finished or gave up) and wait for the thread."""
        self._stop.set()
        self._thread.join()
