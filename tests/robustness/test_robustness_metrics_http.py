"""``tarn up --metrics-port N``: a real ``tarn up`` process serves the Prometheus text over HTTP; a real GET
reads the queue, DLQ and object figures, and they move as a landed file is committed. A port already taken is
a clear error."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

from robust_helpers import Project, TarnProcesses, settled_objects, wait_until, write_project

from tarn.lake import Lake

EVENTS = {"name": "events", "columns": [{"name": "id", "type": "long"}, {"name": "s", "type": "string"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers.get("Content-Type", ""), r.read().decode()


def _value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert m, f"{sample} not in the metrics:\n{text}"
    return float(m.group(1))


def test_tarn_up_serves_metrics_over_http(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake]
) -> None:
    project = write_project(tmp_path / "project", [EVENTS])
    lake = lake_of(project)
    port = _free_port()
    up = tarn_processes.start(project, "up", "--metrics-port", str(port), "--metrics-addr", "127.0.0.1")
    wait_until(lambda: "metrics at" in up.stdout() or not up.alive(), timeout=60, what="the metrics endpoint")
    assert up.alive(), up.stderr()[-2000:]
    url = f"http://127.0.0.1:{port}/metrics"
    assert url in up.stdout()
    kind, text = _get(url)
    assert kind.startswith("text/plain")
    assert _value(text, 'tarn_objects{state="committed"}') == 0
    assert _value(text, 'tarn_queue_messages{state="ready"}') == 0
    assert _value(text, "tarn_dlq_size") == 0

    (project.landing / "events" / "a.csv").write_text("id,s\n1,x\n2,y\n3,z\n")
    wait_until(lambda: settled_objects(lake, 1), timeout=60, what="the file to be committed")
    _, text = _get(url)
    assert _value(text, 'tarn_objects{state="committed"}') == 1
    assert _value(text, "tarn_rows_committed_total") == 3
    assert _value(text, "tarn_ingest_lag_seconds") == 0
    assert up.terminate(timeout=60) == 0, up.stderr()[-2000:]


def test_a_taken_metrics_port_is_a_clear_error(tmp_path: Path, tarn_processes: TarnProcesses) -> None:
    project = write_project(tmp_path / "project", [EVENTS])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = tarn_processes.start(project, "up", "--metrics-port", str(port), "--metrics-addr", "127.0.0.1")
        assert up.proc.wait(timeout=60) == 1
    err = up.stderr()
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in err and "--metrics-port" in err
    assert "Traceback" not in err
