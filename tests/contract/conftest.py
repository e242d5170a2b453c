"""The metastore contract is written once and run on every backend: SQLite (WAL) and PostgreSQL.

Each PostgreSQL test gets a database of its own (CREATE DATABASE t_<uuid>, dropped afterwards);
the server's URL comes from TARN_TEST_POSTGRES_URL (scripts/test.sh starts one). The root conftest
removes TARN_* variables from each test's environment, so the URL is read when this file loads.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tarn.metastore import Metastore
from tarn.metastore.db import Database

PG_URL = os.environ.get("TARN_TEST_POSTGRES_URL")


def _admin(sql: str) -> None:
    assert PG_URL is not None
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def metastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty metastore database on each backend."""
    if request.param == "sqlite":
        yield Database.sqlite_url(tmp_path / "metastore.db")
        return
    if not PG_URL:
        pytest.skip("TARN_TEST_POSTGRES_URL is not set (bash scripts/postgres.sh starts a server)")
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def open_metastore(metastore_url: str) -> Iterator[Callable[[], Metastore]]:
    """Open (more) Metastores on the test's database; all are closed at teardown."""
    opened: list[Metastore] = []

    def open_() -> Metastore:
        m = Metastore(metastore_url)
        opened.append(m)
        return m

    yield open_
    for m in opened:
        m.close()


@pytest.fixture
def meta(open_metastore: Callable[[], Metastore]) -> Metastore:
    return open_metastore()
