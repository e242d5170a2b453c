"""Sweeping what crashes leave behind: ``tarn maintain``, and hourly in ``tarn up``.

* **Temporary raw copies** under ``raw/.tmp`` older than ``tmp_older_than`` (default an hour): a process killed
  between copying a landed file and keeping it leaves one (the storage backend's ``sweep_tmp``).
* **Orphaned Delta data files**: a writer killed after writing a data file but before committing it leaves a
  file that no version of the table references. They are found with delta-rs' vacuum in dry-run mode — *full*
  mode (every file the log does not mention) minus *lite* mode at zero retention (every file the log removed,
  whatever its age) — so files that time travel still needs are never candidates; an orphan is removed once it
  is older than ``orphan_older_than`` (default an hour: no writer takes that long between writing a data file
  and committing it). A writer killed *while* writing a data file leaves the local file store's staged upload
  (``part-….parquet#1``), which delta-rs' vacuum does not list: those are swept by name and age (local roots; on
  S3 an unfinished multipart upload is the bucket's lifecycle rule ``AbortIncompleteMultipartUpload``).
* **Expired files** (optional, ``vacuum=True``): files removed from the table longer ago than the table's
  retention (``delta.deletedFileRetentionDuration``, default a week) — delta-rs' ordinary vacuum; time travel
  to versions older than that retention then stops working, as Delta intends.

Dry-run first: every candidate is listed before anything is deleted, and ``dry_run=True`` stops there.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from tarn.tables import delta

if TYPE_CHECKING:
    from tarn.lake import Lake

log = logging.getLogger("tarn.maintenance")

HOUR = 3600.0
_STAGED = re.compile(r"#\d+$")  # object_store's local staged upload: '<final name>#<n>'


@dataclass
class TableSweep:
    table: str
    orphans: list[str] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Sweep:
    dry_run: bool
    tmp_removed: int = 0
    tables: list[TableSweep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "tmp_removed": self.tmp_removed,
            "tables": [t.__dict__ for t in self.tables],
        }


def orphaned_files(uri: str, older_than_seconds: float) -> list[str]:
    """Data files of the Delta table at ``uri`` that no version references, older than this (paths relative
    to the table). Nothing is deleted."""
    dt = delta.open_table(uri)
    hours = max(0, int(older_than_seconds // HOUR))
    unmentioned_or_removed = dt.vacuum(retention_hours=hours, dry_run=True, full=True, enforce_retention_duration=False)
    removed = dt.vacuum(retention_hours=0, dry_run=True, full=False, enforce_retention_duration=False)
    return sorted(set(unmentioned_or_removed) - set(removed))


def staged_uploads(uri: str, older_than_seconds: float) -> list[str]:
    """Unfinished data file writes (``part-….parquet#1``) under a local Delta table, older than this (paths
    relative to the table); [] for a table on an object store."""
    if "://" in uri and not uri.startswith("file://"):
        return []
    root = Path(uri.removeprefix("file://"))
    cutoff = time.time() - older_than_seconds
    out = []
    for p in root.rglob("*#*"):
        rel = p.relative_to(root)
        if rel.parts[0] == "_delta_log" or not _STAGED.search(p.name):
            continue
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                out.append(rel.as_posix())
        except FileNotFoundError:
            continue  # finished (renamed) meanwhile
    return sorted(out)


def _delete(uri: str, rel_paths: list[str]) -> None:
    fs, base = pafs.FileSystem.from_uri(uri)
    for rel in rel_paths:
        try:
            fs.delete_file(f"{base.rstrip('/')}/{rel}")
        except FileNotFoundError:
            continue


def maintain(
    lake: Lake,
    *,
    dry_run: bool = False,
    tmp_older_than: float = HOUR,
    orphan_older_than: float = HOUR,
    vacuum: bool = False,
) -> Sweep:
    """Sweep the lake (see the module docstring). A table that cannot be swept is reported, not fatal."""
    out = Sweep(dry_run)
    sweep_tmp = getattr(lake.storage, "sweep_tmp", None)
    if sweep_tmp is not None and not dry_run:
        out.tmp_removed = int(sweep_tmp(tmp_older_than))
    for t in lake.meta.catalog.tables():
        uri = str(t["location"])
        one = TableSweep(str(t["name"]))
        out.tables.append(one)
        try:
            if not delta.exists(uri):
                continue
            one.orphans = orphaned_files(uri, orphan_older_than)
            one.staged = staged_uploads(uri, orphan_older_than)
            if vacuum:
                one.expired = list(delta.open_table(uri).vacuum(dry_run=True, full=False))
            if dry_run:
                continue
            if one.orphans or one.staged:
                gone = one.orphans + one.staged
                log.warning("%s: removing %d orphaned data file(s): %s", one.table, len(gone), gone[:5])
                _delete(uri, gone)
            if one.expired:
                delta.open_table(uri).vacuum(dry_run=False, full=False)
        except Exception as e:  # one table's problem must not stop the others
            one.error = f"{type(e).__name__}: {e}"
            log.error("maintenance of %s failed: %s", one.table, one.error)
    if not dry_run:
        lake.meta.audit.append(
            lake.principal,
            "maintain",
            str(lake.dir),
            {"tmp_removed": out.tmp_removed, "orphans": sum(len(t.orphans) + len(t.staged) for t in out.tables)},
        )
    return out
