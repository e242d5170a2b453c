"""The storage protocol: zones of the lake and immutable raw objects.

A lake root is a local folder (:mod:`tarn.storage.local`) or an object-store prefix
(:mod:`tarn.storage.s3`); the zones are its sub-folders / sub-prefixes. Delta tables live under the
table zones and are read and written by delta-rs with :meth:`Storage.delta_options`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

ZONES = ("landing", "raw", "stage", "analytics", "quarantine")
TABLE_ZONES = ("stage", "analytics", "quarantine")
# Names of files still being written, by convention: never picked up from landing.
PARTIAL_SUFFIXES = (".tmp", ".part", ".crdownload")


def is_partial_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIXES)


@dataclass(frozen=True)
class LandedFile:
    """A file seen in the landing zone. ``path`` is relative to the landing zone, with '/'.
    ``etag``: the object store's version tag of the content (None on a local filesystem)."""

    path: str
    size: int
    mtime_ns: int
    etag: str | None = None


class FileChangedError(OSError):
    """The source changed while it was copied into the raw zone (read and stored lengths differ)."""


@dataclass(frozen=True)
class RawCopy:
    """The immutable copy of an object in the raw zone (still in a temporary place until kept)."""

    temp_path: str
    sha256: str
    size: int


class Storage(Protocol):
    """A lake root: local folder or object store."""

    root: str

    def ensure_zones(self) -> None:
        """Create the zones (a folder) or check that the root is reachable (a bucket)."""
        ...

    def table_uri(self, zone: str, table: str) -> str: ...

    def landing_uri(self, rel: str) -> str: ...

    def list_landing(self) -> Iterator[LandedFile]: ...

    def stat_landing(self, rel: str) -> LandedFile | None: ...

    def copy_to_raw(self, source: str, *, etag: str | None = None) -> RawCopy:
        """Copy ``source`` (a local path, or a URI under this root) into the raw zone's temporary
        area, streaming, with the sha256 of what was stored computed on the way. With ``etag`` (an
        object store), the copy fails if the object is no longer that version."""
        ...

    def keep_raw(self, copy: RawCopy, dataset: str, object_id: str, name: str) -> str:
        """Move a temporary raw copy to its final, read-only place; returns its path or URI."""
        ...

    def discard_raw(self, copy: RawCopy) -> None: ...

    def local_path(self, uri: str) -> AbstractContextManager[str]:
        """A local file path that readers (DuckDB) can open for ``uri`` while the context is open:
        the file itself on a local root, a temporary spooled copy (removed on exit) on an object store."""
        ...

    def sweep_tmp(self, older_than_seconds: float) -> int:
        """Remove temporary raw copies older than this (left by a crash between copy and keep);
        returns how many were removed."""
        ...

    def delta_options(self) -> dict[str, str]:
        """delta-rs storage options for the tables under this root ({} on a local root)."""
        ...

    # Plain files and folders at a location (a pipeline's file outputs, a Delta table's whole prefix). ``uri`` is
    # a path on a local root, an ``s3://bucket/key`` on an object store (any bucket the lake's settings reach).

    def put_file(self, local_path: str, uri: str) -> None:
        """Store the local file ``local_path`` at ``uri`` (replacing what is there; server-side encryption as
        configured on an object store)."""
        ...

    def remove_prefix(self, uri: str, *, keep: str | None = None) -> int:
        """Delete the object (file) at ``uri`` and every object under ``uri/`` — except ``keep``, a location
        under it; returns how many were deleted. The lake root and its zones are refused."""
        ...

    def has_objects(self, uri: str) -> bool:
        """Is there an object (file) at ``uri`` or any object under ``uri/``?"""
        ...
