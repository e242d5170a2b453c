"""Alembic environment for the metastore: run programmatically by tarn.metastore.db."""

from __future__ import annotations

from alembic import context

import tarn.metastore.claims  # registers the claims table on the metadata
import tarn.metastore.runs  # noqa: F401  (registers the runs/steps tables on the metadata)
from tarn.metastore.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
