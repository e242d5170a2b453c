"""The storage protocol: zones of the lake and immutable raw objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

ZONES = ("landing", "raw", "stage", "analytics", "quarantine")
TABLE_ZONES = ("stage", "analytics", "quarantine")


@dataclass(frozen=True)
class LandedFile:
    """A file seen in the landing zone. ``path`` is relative to the landing zone, with '/'."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class RawCopy:
    """The immutable copy of an object in the raw zone (still in a temporary place until kept)."""

    temp_path: str
    sha256: str
    size: int


class Storage(Protocol):
    """A lake root: local folder or object store."""

    root: str

    def ensure_zones(self) -> None: ...

    def table_uri(self, zone: str, table: str) -> str: ...

    def landing_uri(self, rel: str) -> str: ...

    def list_landing(self) -> Iterator[LandedFile]: ...

    def stat_landing(self, rel: str) -> LandedFile | None: ...

    def copy_to_raw(self, source: str) -> RawCopy:
        """Copy ``source`` (a path or URI) into the raw zone's temporary area, hashing what was stored."""
        ...

    def keep_raw(self, copy: RawCopy, dataset: str, object_id: str, name: str) -> str:
        """Move a temporary raw copy to its final, read-only place; returns its path."""
        ...

    def discard_raw(self, copy: RawCopy) -> None: ...

    def local_path(self, uri: str) -> str:
        """A local file path that readers (DuckDB) can open for ``uri``."""
        ...
