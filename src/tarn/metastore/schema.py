"""Metastore tables (SQLAlchemy Core). Times are UTC epoch seconds (float)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Every landed object and the one state it is in.
objects = Table(
    "objects",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dataset", String(128), nullable=True),
    Column("landing_path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("raw_path", Text, nullable=True),
    Column("state", String(32), nullable=False),
    Column("arrived_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("rows_total", BigInteger, nullable=True),
    Column("rows_committed", BigInteger, nullable=True),
    Column("rows_quarantined", BigInteger, nullable=True),
    Column("table_version", BigInteger, nullable=True),
    Column("format", String(16), nullable=True),
    Column("error", Text, nullable=True),
    Column("duplicate_of", String(32), nullable=True),
    Column("principal", String(128), nullable=False),
    Index("ix_objects_dataset_sha", "dataset", "sha256"),
    Index("ix_objects_landing", "landing_path", "size", "mtime_ns"),
    Index("ix_objects_state", "state"),
)

# The error trail: every state change of an object, with its message.
object_events = Table(
    "object_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("object_id", String(32), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("state", String(32), nullable=False),
    Column("message", Text, nullable=True),
)

# SQS-like queue: visibility timeout, receive count, dead-letter after max receives.
queue_messages = Table(
    "queue_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("queue", String(64), nullable=False),
    Column("object_id", String(32), nullable=True),
    # FIFO group: a message is delivered only after every earlier message of its group is done
    # (acked or dead-lettered), as in an SQS FIFO queue. NULL: no ordering.
    Column("group_id", String(128), nullable=True),
    Column("body", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # ready | inflight | dead
    Column("visible_at", Float, nullable=False),
    Column("receive_count", Integer, nullable=False, default=0),
    Column("receipt", String(32), nullable=True),
    Column("enqueued_at", Float, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("dead_at", Float, nullable=True),
    Index("ix_queue_ready", "queue", "state", "visible_at"),
)

# Catalog: every table of the lake and its schema versions.
catalog_tables = Table(
    "catalog_tables",
    metadata,
    Column("name", String(256), primary_key=True),  # zone.table
    Column("zone", String(32), nullable=False),
    Column("location", Text, nullable=False),
    Column("dataset", String(128), nullable=True),
    Column("description", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("delta_version", BigInteger, nullable=True),
)

schema_versions = Table(
    "schema_versions",
    metadata,
    Column("table_name", String(256), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("columns", JSON, nullable=False),  # [{name, type, nullable}]
    Column("created_at", Float, nullable=False),
    Column("delta_version", BigInteger, nullable=True),
    Column("object_id", String(32), nullable=True),
    Column("change", Text, nullable=True),
)

# Append-only audit log: who did what to which thing.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("principal", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=True),
    Column("detail", JSON, nullable=True),
)

# Object-store landing: a listing cursor per landing prefix, and a claim per object version seen
# (several workers on several hosts list the same prefix; each object is registered once).
landing_cursors = Table(
    "landing_cursors",
    metadata,
    Column("source", String(512), primary_key=True),  # s3://bucket/prefix/landing/
    # Every object last modified before this is registered (the listing looks back from it).
    Column("high_water", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

landing_claims = Table(
    "landing_claims",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of source, key and ETag
    Column("source", String(512), nullable=False),
    Column("key", Text, nullable=False),
    Column("etag", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("last_modified", Float, nullable=False),
    Column("holder", String(160), nullable=False),
    Column("lease_until", Float, nullable=False),  # a claim not done by then may be taken over
    Column("done_at", Float, nullable=True),
    Column("object_id", String(32), nullable=True),
    Index("ix_landing_claims_source", "source", "last_modified"),
)
