"""Disk-full and permission errors on the lake root are reported, not swallowed.

The tests run as root here, where ``chmod`` stops nothing, so the faults are made with the kernel: a small
``tmpfs`` mounted over a zone is a genuinely full disk (ENOSPC), and a read-only bind mount is a zone Tarn may not
write (EROFS). A real ``tarn worker`` / ``tarn up`` meets them; the object ends dead-lettered (or, for the raw
zone, not registered) with the reason visible in ``tarn objects show`` / the process's log; the process keeps
running; once space is freed (the tmpfs grown) or the mount made writable again, a redrive (or the
reconciliation scan) commits the object exactly once. Skipped, with the reason, where mounting is not allowed.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from robust_helpers import (
    Project,
    TarnProcesses,
    assert_exactly_once,
    settled_objects,
    wait_until,
    write_project,
)

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, DEAD_LETTERED

EVENTS = {
    "name": "events",
    "columns": [{"name": "id", "type": "long"}, {"name": "s", "type": "string"}],
}
ROWS = 100_000  # ~3.5 MB of incompressible text: more than the 1 MB disk holds


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


class Mounts:
    """Mounts made by a test, all undone at teardown."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def tmpfs(self, where: Path, size: str) -> None:
        r = _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): disk-full is not testable in this sandbox")
        self.points.append(where)

    def resize(self, where: Path, size: str) -> None:
        r = _sh("mount", "-o", f"remount,size={size}", str(where))
        assert r.returncode == 0, r.stderr

    def read_only(self, where: Path) -> None:
        r = _sh("mount", "--bind", str(where), str(where))
        if r.returncode != 0:
            pytest.skip(f"cannot bind-mount here ({r.stderr.strip()}): read-only zones are not testable here")
        self.points.append(where)
        r = _sh("mount", "-o", "remount,ro,bind", str(where))
        assert r.returncode == 0, r.stderr

    def writable(self, where: Path) -> None:
        r = _sh("mount", "-o", "remount,rw,bind", str(where))
        assert r.returncode == 0, r.stderr

    def undo(self) -> None:
        for p in reversed(self.points):
            _sh("umount", "-l", str(p))


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    m = Mounts()
    try:
        yield m
    finally:
        m.undo()


def _big_csv(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,s\n" + "".join(f"{i},{uuid.uuid4().hex}{uuid.uuid4().hex}\n" for i in range(ROWS)))
    return path


def _project(tmp_path: Path) -> Project:
    return write_project(
        tmp_path / "project",
        [EVENTS],
        ingest={"max_receives": 2, "backoff": {"base_seconds": 0.2, "max_seconds": 0.5, "jitter": 0}},
    )


def _show(tarn_processes: TarnProcesses, project: Project, object_id: str) -> str:
    p = tarn_processes.start(project, "objects", "show", object_id)
    assert p.proc.wait(timeout=60) == 0, p.stderr()
    return p.stdout()


def _fails_then_redrives(
    project: Project,
    lake: Lake,
    tarn_processes: TarnProcesses,
    tmp_path: Path,
    fix: Callable[[], None],
    reason: str,
) -> None:
    [(_, reg, _)] = lake.ingest([_big_csv(tmp_path / "in" / "big.csv")], "events", process=False)
    worker = tarn_processes.start(project, "worker", "--workers", "1")
    wait_until(
        lambda: lake.object(reg.object_id).state == DEAD_LETTERED, timeout=120, what="the object to be dead-lettered"
    )
    obj = lake.object(reg.object_id)
    assert reason in (obj.error or "").lower(), obj.error
    assert "hint:" in (obj.error or "") and "tarn dlq redrive" in (obj.error or ""), obj.error  # what to do next
    shown = _show(tarn_processes, project, reg.object_id)
    assert reason in shown.lower() and "dead_lettered" in shown, shown
    [dead] = lake.dlq()
    assert reason in (dead.last_error or "").lower()
    assert worker.alive(), worker.stderr()[-2000:]  # the worker kept running
    print(f"\nreported: {obj.error}")

    fix()
    redrive = tarn_processes.start(project, "dlq", "redrive", "--all")
    assert redrive.proc.wait(timeout=60) == 0, redrive.stderr()
    wait_until(lambda: settled_objects(lake, 1) and not lake.dlq(), timeout=120, what="the redriven object")
    assert lake.object(reg.object_id).state == COMMITTED, lake.object(reg.object_id).error
    assert_exactly_once(lake, "events", {reg.object_id: ROWS})
    assert worker.terminate(timeout=60) == 0, worker.stderr()[-2000:]
    assert "Traceback" not in worker.stderr()


@pytest.mark.slow
def test_a_full_stage_disk_dead_letters_with_the_reason_and_a_redrive_after_freeing_space_commits(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake], mounts: Mounts
) -> None:
    project = _project(tmp_path)
    stage = project.dir / "lake" / "stage"
    mounts.tmpfs(stage, "1m")
    lake = lake_of(project)
    _fails_then_redrives(
        project, lake, tarn_processes, tmp_path, lambda: mounts.resize(stage, "256m"), "no space left on device"
    )


@pytest.mark.slow
def test_a_read_only_stage_zone_dead_letters_with_the_reason_and_a_redrive_after_the_fix_commits(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake], mounts: Mounts
) -> None:
    project = _project(tmp_path)
    stage = project.dir / "lake" / "stage"
    mounts.read_only(stage)
    lake = lake_of(project)
    _fails_then_redrives(
        project, lake, tarn_processes, tmp_path, lambda: mounts.writable(stage), "read-only file system"
    )


@pytest.mark.slow
def test_a_full_raw_zone_is_reported_by_tarn_up_and_the_file_is_registered_once_space_is_freed(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake], mounts: Mounts
) -> None:
    project = _project(tmp_path)
    raw = project.dir / "lake" / "raw"
    mounts.tmpfs(raw, "1m")
    lake = lake_of(project)
    up = tarn_processes.start(project, "up", "--workers", "1")
    wait_until(lambda: "watching" in up.stdout(), timeout=60, what="tarn up to watch")
    _big_csv(project.landing / "events" / "big.csv")
    wait_until(
        lambda: "no space left on device" in up.stderr().lower() or not up.alive(),
        timeout=60,
        what="tarn up to report the full raw zone",
    )
    assert up.alive(), up.stderr()[-2000:]
    assert lake.objects() == []  # nothing half-registered
    assert "big.csv" in up.stderr()  # the report names the file
    print("\nreported: " + next(line for line in up.stderr().splitlines() if "space" in line.lower()))
    mounts.resize(raw, "256m")
    wait_until(lambda: settled_objects(lake, 1), timeout=120, what="the file to be registered and committed")
    [obj] = lake.objects()
    assert obj.state == COMMITTED, obj.error
    assert_exactly_once(lake, "events", {obj.id: ROWS})
    assert up.terminate(timeout=60) == 0, up.stderr()[-2000:]
