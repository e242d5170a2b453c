"""Operational metrics in the Prometheus text format: ``tarn metrics`` prints them, ``tarn up --metrics-port N``
serves them over HTTP (``GET /metrics``) for Prometheus to scrape."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from tarn.errors import TarnError
from tarn.metastore import Metastore
from tarn.metastore import objects as st
from tarn.metastore.schema import object_events, objects, queue_messages


class LakeCollector(Collector):
    """Reads the metastore at scrape time: nothing is kept in process memory, so every worker
    process and host reports the same figures."""

    def __init__(self, meta: Metastore, queue: str) -> None:
        self.meta = meta
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        by_state = self.meta.objects.counts_by_state()
        g = GaugeMetricFamily("tarn_objects", "Landed objects by state", labels=["state"])
        for state in st.STATES:
            g.add_metric([state], by_state.get(state, 0))
        yield g
        depth = self.meta.queue.depth(self.queue)
        q = GaugeMetricFamily("tarn_queue_messages", "Queue messages by state (dead = DLQ)", labels=["state"])
        for state, n in depth.items():
            q.add_metric([state], n)
        yield q
        yield GaugeMetricFamily("tarn_dlq_size", "Messages in the dead-letter queue", value=depth["dead"])
        with self.meta.db.read() as conn:
            retries = conn.execute(
                select(func.count()).select_from(object_events).where(object_events.c.state == st.FAILED)
            ).scalar_one()
            oldest = conn.execute(
                select(func.min(queue_messages.c.enqueued_at)).where(
                    queue_messages.c.queue == self.queue, queue_messages.c.state.in_(["ready", "inflight"])
                )
            ).scalar_one()
            rows = conn.execute(
                select(
                    func.coalesce(func.sum(objects.c.rows_committed), 0),
                    func.coalesce(func.sum(objects.c.rows_quarantined), 0),
                )
            ).one()
        yield CounterMetricFamily("tarn_ingest_retries", "Failed ingest attempts that were retried", value=retries)
        yield GaugeMetricFamily(
            "tarn_ingest_lag_seconds",
            "Age of the oldest message not yet processed (0 when the queue is empty)",
            value=max(0.0, time.time() - oldest) if oldest else 0.0,
        )
        yield CounterMetricFamily("tarn_rows_committed", "Rows committed to stage tables", value=int(rows[0]))
        yield CounterMetricFamily("tarn_rows_quarantined", "Rows sent to quarantine tables", value=int(rows[1]))


def render(meta: Metastore, queue: str) -> str:
    registry = CollectorRegistry()
    registry.register(LakeCollector(meta, queue))
    return generate_latest(registry).decode()


class MetricsServer:
    """The metrics endpoint of one process: a daemon HTTP thread (prometheus_client's server)."""

    def __init__(self, meta: Metastore, queue: str, port: int, addr: str = "0.0.0.0") -> None:
        registry = CollectorRegistry()
        registry.register(LakeCollector(meta, queue))
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as e:
            raise TarnError(
                f"cannot serve metrics on {addr}:{port}: {e.strerror or e}",
                hint="choose a free port with --metrics-port (0 picks one)",
            ) from None
        self.addr = addr
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
