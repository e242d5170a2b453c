"""Fixtures for the robustness tests (helpers in robust_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from robust_helpers import PG_URL, Project, TarnProcesses, create_pg_database, drop_pg_database

from tarn.lake import Lake


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards (skips without a server)."""
    if not PG_URL:
        pytest.skip("TARN_TEST_POSTGRES_URL is not set (bash scripts/postgres.sh starts a server)")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def tarn_processes(tmp_path: Path) -> Iterator[TarnProcesses]:
    """Starts ``tarn`` children; any still alive at the end of the test is SIGKILLed."""
    procs = TarnProcesses(tmp_path / "process-logs")
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def lake_of() -> Iterator[Callable[[Project], Lake]]:
    """Open a Lake on a project, in the test process; every one is closed at teardown, even when the
    test fails (an engine left to the garbage collector would warn inside a later test)."""
    opened: list[Lake] = []

    def open_(project: Project) -> Lake:
        lake = project.open()
        opened.append(lake)
        return lake

    yield open_
    for lake in opened:
        lake.close()
