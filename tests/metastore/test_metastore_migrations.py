"""Migrations: the fast-path head revision matches the scripts; a new database is migrated once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from tarn.metastore.db import HEAD_REVISION, Database, alembic_head


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert alembic_head() == HEAD_REVISION


def test_a_new_metastore_is_migrated_to_head_and_reopened_without_change(tmp_path: Path) -> None:
    url = Database.sqlite_url(tmp_path / "m.db")
    db = Database(url)
    with db.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    assert {"objects", "queue_messages", "catalog_tables", "schema_versions", "audit_log", "runs", "steps"} <= tables
    assert version == HEAD_REVISION
    db.dispose()
    again = Database(url)  # the fast path: already at head
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1
    again.dispose()
