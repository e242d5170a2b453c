"""Helpers of the robustness tests: real ``tarn`` processes (started, SIGKILLed, restarted), real
projects on SQLite or on a fresh PostgreSQL database, and checks that every object was committed
exactly once.

The root conftest removes every ``TARN_*`` variable from the environment of each test, so the
PostgreSQL URL given by scripts/test.sh is read here, when this module is imported (at collection).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from deltalake import DeltaTable
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tarn.lake import Lake
from tarn.metastore.objects import TERMINAL
from tarn.tables import delta

PG_URL = os.environ.get("TARN_TEST_POSTGRES_URL")

# Compiled modules of the child processes go to a cache outside the repository: the test
# environment sets PYTHONDONTWRITEBYTECODE, and recompiling Tarn and its dependencies in every
# restarted worker would make each restart cost seconds.
_PYCACHE = Path(tempfile.gettempdir()) / "tarn-test-pycache"


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------ PostgreSQL
def create_pg_database() -> str:
    """A fresh, empty database on the test server; returns its SQLAlchemy URL."""
    assert PG_URL is not None
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    assert PG_URL is not None
    name = make_url(url).database
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --------------------------------------------------------------------------------------- projects
ROBUST_INGEST: dict[str, Any] = {
    "workers": 2,
    "settle_seconds": 0.1,
    "poll_interval_seconds": 0.1,
    "scan_interval_seconds": 0.5,
    "visibility_timeout_seconds": 2,
    "max_receives": 1000,  # a crash is not the file's fault: never dead-letter because of kills
    "backoff": {"base_seconds": 0.05, "max_seconds": 0.5, "jitter": 0},
}


@dataclass
class Project:
    dir: Path
    metastore_url: str | None

    @property
    def landing(self) -> Path:
        return self.dir / "lake" / "landing"

    def env(self) -> dict[str, str]:
        return {"TARN_METASTORE_URL": self.metastore_url} if self.metastore_url else {}

    def open(self) -> Lake:
        """A Lake on the project, in this process (the same metastore the children use)."""
        if self.metastore_url:
            os.environ["TARN_METASTORE_URL"] = self.metastore_url
        try:
            return Lake(self.dir)
        finally:
            os.environ.pop("TARN_METASTORE_URL", None)


# The dataset most robustness tests ingest, and the small files they feed it.
EVENTS = {
    "name": "events",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "v", "type": "double"},
        {"name": "s", "type": "string"},
    ],
}


def event_files(directory: Path, n: int, rows: int) -> list[Path]:
    """``n`` CSV files of ``rows`` events each, ids unique across files (file i holds i*100 + j)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        f = directory / f"f{i:04d}.csv"
        f.write_text("id,v,s\n" + "".join(f"{i * 100 + j},{j * 0.5},file {i}\n" for j in range(rows)))
        files.append(f)
    return files


def write_project(
    directory: Path,
    datasets: list[dict[str, Any]],
    *,
    ingest: dict[str, Any] | None = None,
    metastore_url: str | None = None,
) -> Project:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": "robust",
        "lake": {"root": "lake"},
        "ingest": {**ROBUST_INGEST, **(ingest or {})},
        "datasets": datasets,
    }
    (directory / "tarn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    project = Project(directory, metastore_url)
    project.open().close()  # creates the zones, the landing folders and the metastore schema
    return project


# ----------------------------------------------------------------------------- tarn subprocesses
def _tarn_command() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "tarn"
    if script.exists():
        return [str(script)]
    found = shutil.which("tarn")
    return [found] if found else [sys.executable, "-c", "from tarn.cli.main import main; main()"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "TARN_PRINCIPAL": "tester"})
    env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    env.update(extra or {})
    return env


@dataclass
class TarnProcess:
    """One ``tarn`` child process; its stdout and stderr go to files kept for the assertions."""

    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would: no handler, no cleanup."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")


class TarnProcesses:
    """Starts ``tarn`` children for a test and makes sure none outlives it."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started: list[TarnProcess] = []

    def start(self, project: Project, *args: str) -> TarnProcess:
        n = len(self.started)
        out_path = self.logs / f"{n:03d}-{args[0]}.out"
        err_path = self.logs / f"{n:03d}-{args[0]}.err"
        # the child keeps its own copies of the descriptors; the parent's are closed at once
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [*_tarn_command(), "--project", str(project.dir), *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=child_env(project.env()),
            )
        tp = TarnProcess(tuple(args), proc, out_path, err_path)
        self.started.append(tp)
        return tp

    def all_stderr(self) -> str:
        return "\n".join(p.stderr() for p in self.started)

    def stop_all(self) -> None:
        for p in self.started:
            if p.alive():
                p.kill()


# ------------------------------------------------------------------------------- exactly once
def settled_objects(lake: Lake, n: int) -> bool:
    """``n`` objects exist, each in a terminal state, and nothing is left in the queue to do."""
    objs = lake.objects(limit=1_000_000)
    if len(objs) < n or any(o.state not in TERMINAL for o in objs):
        return False
    depth = lake.meta.queue.depth("ingest")
    return depth["ready"] == 0 and depth["inflight"] == 0


def token_commits(table_uri: str) -> Counter[str]:
    """How many commits of the Delta table carry each ingest token."""
    dt = DeltaTable(table_uri)
    return Counter(t for h in dt.history() for t in delta.tokens_of(h))


def assert_exactly_once(lake: Lake, dataset: str, expected_rows: dict[str, int]) -> None:
    """``expected_rows``: object id → rows its file holds. Every object's rows are in the stage
    table once (by row count and by (object, row) pairs), each from exactly one commit."""
    uri = lake.storage.table_uri("stage", dataset)
    table = DeltaTable(uri)
    for f in table.file_uris():
        assert Path(f.removeprefix("file://")).exists(), f"the Delta log of {dataset} references a missing file {f}"
    data = table.to_pyarrow_table(columns=["_tarn_object_id", "_tarn_row"])
    per_object = Counter(data.column("_tarn_object_id").to_pylist())
    pairs = Counter(zip(data.column("_tarn_object_id").to_pylist(), data.column("_tarn_row").to_pylist(), strict=True))
    duplicated = [p for p, n in pairs.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} (object, row) pairs of {dataset} were committed twice: {duplicated[:5]}"
    wrong = {oid: (per_object.get(oid, 0), n) for oid, n in expected_rows.items() if per_object.get(oid, 0) != n}
    assert not wrong, f"{dataset}: objects whose committed row count differs from their file (got, want): {wrong}"
    unknown = set(per_object) - set(expected_rows)
    assert not unknown, f"{dataset}: rows from objects that should not be there: {sorted(unknown)[:5]}"
    commits = token_commits(uri)
    for oid in expected_rows:
        token = f"tarn-ingest-{oid}"
        assert commits.get(token, 0) == 1, f"{dataset}: object {oid} has {commits.get(token, 0)} stage commits"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
