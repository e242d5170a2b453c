"""The catalog (tables and their schema versions) and the append-only audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.engine import Connection

from tarn.errors import NotFoundError, did_you_mean
from tarn.metastore.db import Database, now
from tarn.metastore.schema import audit_log, catalog_tables, schema_versions

Columns = list[dict[str, Any]]


class CatalogRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        name: str,
        *,
        zone: str,
        location: str,
        columns: Columns,
        delta_version: int | None,
        dataset: str | None = None,
        object_id: str | None = None,
    ) -> int:
        """Register the table (first time) and a new schema version if its columns changed.
        Returns the table's current schema version."""
        t = now()
        with self.db.tx() as conn:
            if not self.db.is_sqlite:
                # Serialise records of one table (SQLite's BEGIN IMMEDIATE already does): two first
                # records, or two schema changes, must not race to insert the same row.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": f"tarn.catalog.{name}"})
            row = conn.execute(select(catalog_tables).where(catalog_tables.c.name == name)).first()
            if row is None:
                conn.execute(
                    insert(catalog_tables).values(
                        name=name,
                        zone=zone,
                        location=location,
                        dataset=dataset,
                        created_at=t,
                        updated_at=t,
                        schema_version=1,
                        delta_version=delta_version,
                    )
                )
                conn.execute(
                    insert(schema_versions).values(
                        table_name=name,
                        version=1,
                        columns=columns,
                        created_at=t,
                        delta_version=delta_version,
                        object_id=object_id,
                        change="created",
                    )
                )
                return 1
            current = conn.execute(
                select(schema_versions.c.columns).where(
                    and_(schema_versions.c.table_name == name, schema_versions.c.version == row.schema_version)
                )
            ).scalar_one()
            version = int(row.schema_version)
            if current != columns:
                version += 1
                conn.execute(
                    insert(schema_versions).values(
                        table_name=name,
                        version=version,
                        columns=columns,
                        created_at=t,
                        delta_version=delta_version,
                        object_id=object_id,
                        change=describe_change(current, columns),
                    )
                )
            conn.execute(
                update(catalog_tables)
                .where(catalog_tables.c.name == name)
                .values(updated_at=t, schema_version=version, delta_version=delta_version)
            )
            return version

    def tables(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(catalog_tables).order_by(catalog_tables.c.name))]

    def get(self, name: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute(select(catalog_tables).where(catalog_tables.c.name == name)).first()
            if row is None:
                names = [r[0] for r in conn.execute(select(catalog_tables.c.name))]
                raise NotFoundError(
                    f"no table {name!r} in the catalog{did_you_mean(name, names)}",
                    hint="'tarn tables' lists the tables (names are zone.table)",
                )
            return dict(row._mapping)

    def versions(self, name: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(schema_versions).where(schema_versions.c.table_name == name).order_by(schema_versions.c.version)
            )
            return [dict(r._mapping) for r in rows]

    def current_columns(self, name: str) -> Columns | None:
        with self.db.read() as conn:
            row = conn.execute(select(catalog_tables.c.schema_version).where(catalog_tables.c.name == name)).first()
            if row is None:
                return None
            cols = conn.execute(
                select(schema_versions.c.columns).where(
                    and_(schema_versions.c.table_name == name, schema_versions.c.version == row[0])
                )
            ).scalar_one()
            return list(cols)


def describe_change(old: Columns, new: Columns) -> str:
    o = {c["name"]: c for c in old}
    n = {c["name"]: c for c in new}
    parts = [f"+{k} {n[k]['type']}" for k in n if k not in o]
    parts += [f"-{k}" for k in o if k not in n]
    parts += [f"~{k} {o[k]['type']}→{n[k]['type']}" for k in n if k in o and o[k]["type"] != n[k]["type"]]
    return ", ".join(parts) or "changed"


class AuditRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, principal: str, action: str, target: str | None = None, detail: Any = None) -> None:
        with self.db.tx() as conn:
            self.add(conn, principal, action, target, detail)

    def add(self, conn: Connection, principal: str, action: str, target: str | None = None, detail: Any = None) -> None:
        """:meth:`append` inside the caller's transaction."""
        row = {"at": now(), "principal": principal, "action": action, "target": target, "detail": detail}
        conn.execute(insert(audit_log).values(**row))

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())
