"""The metastore: objects, queue, catalog and audit on SQLite (default) or PostgreSQL."""

from __future__ import annotations

from tarn.metastore.catalog import AuditRepo, CatalogRepo
from tarn.metastore.claims import ClaimRepo
from tarn.metastore.db import Database
from tarn.metastore.landing import LandingRepo
from tarn.metastore.objects import ObjectRepo
from tarn.metastore.queue import QueueRepo
from tarn.metastore.runs import RunRepo


class Metastore:
    """All repositories over one database."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.objects = ObjectRepo(self.db)
        self.queue = QueueRepo(self.db)
        self.catalog = CatalogRepo(self.db)
        self.audit = AuditRepo(self.db)
        self.runs = RunRepo(self.db)
        self.claims = ClaimRepo(self.db)
        self.landing = LandingRepo(self.db)

    def close(self) -> None:
        self.db.dispose()


__all__ = ["Metastore"]
