"""The metastore connection: SQLite (WAL) by default, PostgreSQL by URL.

SQLite write transactions start with ``BEGIN IMMEDIATE`` so two writers never deadlock on a
lock upgrade, and ``busy_timeout`` makes waiting writers queue instead of failing with
"database is locked".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import OperationalError

from tarn.errors import MissingExtraError, StorageError

_MIGRATIONS = str(Path(__file__).parent / "migrations")


# The newest migration. Checked against the migration scripts by a test, so that opening an
# up-to-date metastore needs one query and no Alembic import (≈0.4 s of every CLI command).
HEAD_REVISION = "0004"


def alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(_MIGRATIONS).get_current_head()


def _upgrade(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", _MIGRATIONS)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def now() -> float:
    return time.time()


class Database:
    """Owns the SQLAlchemy engine; ``tx()`` is a write transaction, ``read()`` a read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            if self.is_sqlite:
                # Pooled: opening a SQLite connection (and its PRAGMAs) per transaction cost
                # more than the transaction. Connections are used by one thread at a time.
                self.engine: Engine = create_engine(
                    url,
                    pool_size=8,
                    max_overflow=16,
                    connect_args={"timeout": 60, "check_same_thread": False},
                )
                self._sqlite_setup(self.engine)
            else:
                self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except ModuleNotFoundError as e:
            raise MissingExtraError("a PostgreSQL metastore", "postgres", e.name or "psycopg") from None
        self._ensure_schema()

    @staticmethod
    def sqlite_url(path: Path) -> str:
        return f"sqlite:///{path}"

    @staticmethod
    def _sqlite_setup(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

    def _ensure_schema(self) -> None:
        """Bring the schema to the latest Alembic revision (both backends). Serialised between
        processes: BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL."""
        if self._revision() == HEAD_REVISION:
            return
        for attempt in range(20):
            try:
                with self.tx() as conn:
                    if not self.is_sqlite:
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(724250)")
                    _upgrade(conn)
                return
            except OperationalError as e:
                if attempt == 19 or "locked" not in str(e.orig):
                    raise StorageError(
                        f"cannot migrate the metastore schema at {self.url}: {str(e.orig).splitlines()[0]}",
                        hint="a metastore created by another Tarn version? 'alembic_version' must match",
                    ) from None
                time.sleep(0.05 * (attempt + 1))

    def _revision(self) -> str | None:
        # A fresh SQLite file opened by several processes at once: switching it to WAL (the first
        # connection's PRAGMA) can meet "database is locked" without SQLite's busy wait; try again.
        for attempt in range(20):
            try:
                with self.engine.connect() as conn:
                    if not inspect(conn).has_table("alembic_version"):
                        return None
                    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
                    return str(row[0]) if row else None
            except OperationalError as e:
                if attempt < 19 and self.is_sqlite and "locked" in str(e.orig):
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise StorageError(
                    f"cannot open the metastore at {self.url}: {e.orig}",
                    hint="check metastore.url / TARN_METASTORE_URL and that the database is reachable",
                ) from None
        raise AssertionError("unreachable")

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info["write"] = False

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
