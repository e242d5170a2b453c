"""Shared fixtures for Tarn's tests: hermetic projects, a running lake, polling, the real CLI.

Everything here uses real components: projects are real folders with a real ``tarn.yaml``, the
metastore is the real SQLite database, tables are real Delta tables, ``Lake.up`` runs the real
watchdog observer, and the CLI is the installed ``tarn`` console script run as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tarn.lake import Lake
from tarn.metastore.objects import ObjectRecord

# --------------------------------------------------------------------------------------------
# Process exit.
#
# DuckDB, delta-rs and Arrow each keep native thread pools. At interpreter exit their static
# destructors can race and abort the process ("terminate called without an active exception",
# exit status 134) *after* every test passed and the summary was printed, which would turn a
# green run red in CI. So once pytest has finished (terminal summary written, every other
# plugin's unconfigure done), we flush the streams and leave with os._exit, using pytest's own
# exit status. The CLI does the same in tarn.cli.main.main() for the same reason.
# Set TARN_TESTS_NO_HARD_EXIT=1 to get the normal interpreter shutdown (e.g. to debug it).
# --------------------------------------------------------------------------------------------
_session: pytest.Session | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session
    _session = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _session is None or os.environ.get("TARN_TESTS_NO_HARD_EXIT"):
        return
    status = int(_session.exitstatus)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# --------------------------------------------------------------------------------------------
# Project fixtures
# --------------------------------------------------------------------------------------------

# Fast timings for tests: files settle in 0.2 s, idle workers poll every 0.1 s, the
# reconciliation scan runs every second, retries back off briefly, two receives then the DLQ.
FAST_INGEST: dict[str, Any] = {
    "workers": 2,
    "settle_seconds": 0.2,
    "poll_interval_seconds": 0.1,
    "scan_interval_seconds": 1,
    "max_receives": 2,
    "backoff": {"base_seconds": 0.05, "max_seconds": 0.2, "jitter": 0},
}


# Variables that change what Tarn does; a test never inherits them from the developer's shell.
# (Test-infrastructure settings such as TARN_TEST_POSTGRES_URL are left alone.)
_TARN_BEHAVIOUR = ("TARN_PROJECT", "TARN_METASTORE_URL", "TARN_PRINCIPAL")
_TARN_BEHAVIOUR_PREFIXES = ("TARN_SECRET_", "TARN_PARAM_")


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name in _TARN_BEHAVIOUR or name.startswith(_TARN_BEHAVIOUR_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TARN_PRINCIPAL", "tester")
    yield


def write_project(
    directory: Path,
    datasets: list[dict[str, Any]],
    *,
    ingest: dict[str, Any] | None = None,
    name: str = "test_lake",
    **extra: Any,
) -> Path:
    """Write ``directory/tarn.yaml`` (fast ingest timings merged with ``ingest``)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "name": name,
        "lake": {"root": "lake"},
        "ingest": {**FAST_INGEST, **(ingest or {})},
        **extra,
        "datasets": datasets,
    }
    (directory / "tarn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a project folder with the given datasets; returns its path."""
    counter = iter(range(1000))

    def make(datasets: list[dict[str, Any]], *, ingest: dict[str, Any] | None = None, **extra: Any) -> Path:
        return write_project(tmp_path / f"project{next(counter)}", datasets, ingest=ingest, **extra)

    return make


@pytest.fixture
def open_lake() -> Iterator[Callable[[Path], Lake]]:
    """Open a Lake on a project folder; every lake opened is closed at teardown."""
    lakes: list[Lake] = []

    def open_(project: Path) -> Lake:
        lk = Lake(project)
        lakes.append(lk)
        return lk

    yield open_
    for lk in lakes:
        lk.close()


@pytest.fixture
def new_lake(make_project: Callable[..., Path], open_lake: Callable[[Path], Lake]) -> Callable[..., Lake]:
    """A Lake on a fresh project with the given datasets."""

    def make(datasets: list[dict[str, Any]], *, ingest: dict[str, Any] | None = None, **extra: Any) -> Lake:
        return open_lake(make_project(datasets, ingest=ingest, **extra))

    return make


@pytest.fixture
def ingest_file(tmp_path: Path) -> Callable[..., ObjectRecord]:
    """Write ``content`` to a file named ``name`` outside the lake and ``Lake.ingest`` it
    (synchronously); returns the object's record."""
    counter = iter(range(100_000))

    def ingest(lake: Lake, dataset: str, name: str, content: str | bytes) -> ObjectRecord:
        folder = tmp_path / "incoming" / str(next(counter))
        folder.mkdir(parents=True)
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        [(_, registered, _state)] = lake.ingest([path], dataset)
        return lake.object(registered.object_id)

    return ingest


def query_rows(lake: Lake, sql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = lake.query(sql).table.to_pylist()
    return result


@pytest.fixture(name="rows")
def rows_fixture() -> Callable[[Lake, str], list[dict[str, Any]]]:
    """``rows(lake, sql)``: the result of a query over the lake, as a list of dicts."""
    return query_rows


# --------------------------------------------------------------------------------------------
# Polling (asynchronous outcomes are awaited with a deadline, never with a bare sleep)
# --------------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


def settled(lake: Lake, n: int, *, states: tuple[str, ...] | None = None) -> Callable[[], bool]:
    """A predicate: ``n`` objects exist and each is in a terminal state (or one of ``states``)."""
    from tarn.metastore.objects import TERMINAL

    wanted = states or TERMINAL

    def check() -> bool:
        objs = lake.objects(limit=10_000)
        return len(objs) >= n and all(o.state in wanted for o in objs)

    return check


@pytest.fixture(name="settled")
def settled_fixture() -> Callable[..., Callable[[], bool]]:
    return settled


# --------------------------------------------------------------------------------------------
# A running lake: Lake.up (watcher + scan + workers) in a thread, stopped with an Event
# --------------------------------------------------------------------------------------------


@dataclass
class Running:
    lake: Lake
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException]


@contextmanager
def running(lake: Lake, *, workers: int | None = None) -> Iterator[Running]:
    """Run ``lake.up`` in a thread until the block ends; waits until the watcher is started."""
    stop = threading.Event()
    ready = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            lake.up(stop, workers=workers, ready=ready)
        except BaseException as e:  # reported to the test below
            errors.append(e)

    thread = threading.Thread(target=target, name="tarn-up-under-test", daemon=True)
    thread.start()
    try:
        # 'ready' is set once the watcher is watching and the start-up scan has run.
        wait_for(lambda: errors or ready.is_set(), timeout=30, what="Lake.up to start")
        if errors:
            raise errors[0]
        yield Running(lake, stop, thread, errors)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "Lake.up did not stop within 60 s of its stop event"
    if errors:
        raise errors[0]


@pytest.fixture(name="running")
def running_fixture() -> Callable[..., Any]:
    return running


# --------------------------------------------------------------------------------------------
# The real CLI, as a subprocess (its main() ends with os._exit, so it cannot run in-process)
# --------------------------------------------------------------------------------------------


def _tarn_executable() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "tarn"
    if script.exists():
        return [str(script)]
    found = shutil.which("tarn")
    if found:
        return [found]
    return [sys.executable, "-c", "from tarn.cli.main import main; main()"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def tarn() -> Callable[..., CliResult]:
    """Run the ``tarn`` command; returns its exit code and output."""
    exe = _tarn_executable()

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        full_env = {
            k: v
            for k, v in os.environ.items()
            if k not in _TARN_BEHAVIOUR and not k.startswith(_TARN_BEHAVIOUR_PREFIXES)
        }
        full_env.update({"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "TARN_PRINCIPAL": "tester"})
        full_env.update(env or {})
        proc = subprocess.run(
            [*exe, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
