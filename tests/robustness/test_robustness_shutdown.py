"""Graceful shutdown: SIGTERM to a real ``tarn worker`` / ``tarn up`` while it ingests a large file.

* Within ``ingest.shutdown_grace_seconds`` the in-flight object is finished: committed once, acked, exit 0.
* With a grace too short for the file, the process exits within the bound and the message is *released*:
  back on the queue at once (no visibility timeout to wait for), its receive count given back, the object
  back to ``received``; after a restart the object is committed exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from robust_helpers import (
    EVENTS,
    Project,
    TarnProcesses,
    assert_exactly_once,
    settled_objects,
    wait_until,
    write_project,
)

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, PROCESSING, RECEIVED


def _big_csv(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("id,v,s\n")
        for start in range(0, rows, 50_000):
            f.write("".join(f"{j},{j * 0.25},some text for row {j}\n" for j in range(start, start + 50_000)))
    return path


def _processing(lake: Lake) -> bool:
    return bool(lake.objects(state=PROCESSING, limit=1))


@pytest.mark.slow
def test_sigterm_lets_the_in_flight_object_finish_within_the_grace_period(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake]
) -> None:
    grace = 60.0
    project = write_project(
        tmp_path / "project", [EVENTS], ingest={"shutdown_grace_seconds": grace, "visibility_timeout_seconds": 30}
    )
    lake = lake_of(project)
    big = _big_csv(tmp_path / "in" / "big.csv", 600_000)
    [(_, reg, _)] = lake.ingest([big], "events", process=False)
    worker = tarn_processes.start(project, "worker", "--workers", "1")
    wait_until(lambda: "worker started" in worker.stdout(), timeout=60, what="the worker to start")
    wait_until(lambda: _processing(lake), timeout=60, what="the object to be processing", interval=0.01)
    t0 = time.monotonic()
    assert worker.terminate(timeout=grace + 30) == 0, worker.stderr()[-2000:]
    took = time.monotonic() - t0
    assert took < grace + 10, f"exit took {took:.1f}s"
    obj = lake.object(reg.object_id)
    assert obj.state == COMMITTED, (obj.state, obj.error)
    assert lake.meta.queue.depth("ingest") == {"ready": 0, "inflight": 0, "dead": 0}
    assert obj.attempts == 1  # one delivery, not a retry
    assert_exactly_once(lake, "events", {reg.object_id: 600_000})
    assert "released" not in worker.stderr()
    print(f"\nSIGTERM → exit in {took:.1f}s, the object finished")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        "up",
        "worker",
    ],
)
def test_sigterm_past_the_grace_period_releases_the_message_and_a_restart_commits_once(
    command: str, tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake]
) -> None:
    grace = 0.2
    # ~300 MB: seconds of processing even on a quiet machine (ingest runs at ~130 MB/s), far beyond the
    # grace period plus the pause below (2M rows finished inside it once ingest got faster).
    rows = 8_000_000
    project = write_project(
        tmp_path / "project",
        [EVENTS],
        # a visibility timeout far longer than the test: only a release can hand the message back in time
        ingest={"shutdown_grace_seconds": grace, "visibility_timeout_seconds": 3600},
    )
    lake = lake_of(project)
    if command == "up":  # landed in the landing zone: the watcher registers it
        _big_csv(project.landing / "events" / "big.csv", rows)
        proc = tarn_processes.start(project, "up", "--workers", "1")
    else:
        lake.ingest([_big_csv(tmp_path / "in" / "big.csv", rows)], "events", process=False)
        proc = tarn_processes.start(project, "worker", "--workers", "1")
    wait_until(lambda: _processing(lake), timeout=120, what="the object to be processing", interval=0.01)
    [obj] = lake.objects()
    time.sleep(0.1)
    t0 = time.monotonic()
    code = proc.terminate(timeout=60)
    assert code == 0, proc.stderr()[-2000:]
    took = time.monotonic() - t0
    assert took < grace + 8, f"exit took {took:.1f}s for a grace of {grace}s"
    # Released: visible now, the receive count given back, the object back to 'received' with the reason.
    after = lake.object(obj.id)
    assert after.state == RECEIVED, (after.state, after.error)
    msg = lake.meta.queue.for_object(obj.id)
    assert msg is not None and msg.state == "ready" and msg.receive_count == 0, msg
    assert msg.visible_at <= time.time()
    assert "released at shutdown" in lake.meta.objects.events(obj.id)[-1]["message"]
    assert "released back to the queue" in proc.stderr()
    # A restart takes it at once and commits it exactly once.
    again = tarn_processes.start(project, "worker", "--workers", "1", "--until-idle")
    wait_until(lambda: settled_objects(lake, 1), timeout=180, what="the released object to be committed")
    assert again.proc.wait(timeout=60) == 0, again.stderr()[-2000:]
    final = lake.object(obj.id)
    assert final.state == COMMITTED, (final.state, final.error)
    assert_exactly_once(lake, "events", {obj.id: rows})
    print(f"\n{command}: SIGTERM → exit in {took:.1f}s, message released")
