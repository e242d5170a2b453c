"""Registering landed objects (the first half of the light stage's contract): route to a dataset → refuse
what must not be read → copy into raw/ (checksummed, read-only) → one metastore transaction records the
object *and* enqueues its message (or records it as a duplicate). Files given by name are recorded many
to a transaction."""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from tarn.config.spec import DatasetSpec, ProjectSpec
from tarn.errors import IngestError, NotFoundError, did_you_mean
from tarn.metastore import Metastore
from tarn.metastore import objects as st
from tarn.storage.base import FileChangedError, LandedFile, RawCopy, Storage
from tarn.storage.local import LocalStorage

log = logging.getLogger("tarn.ingest")

INGEST_QUEUE = "ingest"


@dataclass(frozen=True)
class Registered:
    object_id: str
    state: str
    dataset: str | None
    duplicate_of: str | None = None


# Files recorded per transaction by IngestService.register_files.
REGISTER_CHUNK = 200


@dataclass(frozen=True)
class _Pending:
    """A checked, copied file waiting to be recorded."""

    ds: DatasetSpec
    path_key: str
    size: int
    base: dict[str, Any]
    copy: RawCopy
    name: str
    # Known by content too: an object-store version. S3 dates objects to the second, so an object overwritten
    # within that second by content of the same size keeps its path, size and "mtime".
    by_content: bool = False


class Registrar:
    """Routing and registration; :class:`tarn.ingest.service.IngestService` adds the processing."""

    def __init__(self, spec: ProjectSpec, storage: Storage, meta: Metastore, principal: str) -> None:
        self.spec = spec
        self.storage = storage
        self.meta = meta
        self.principal = principal
        self.wake = threading.Event()  # set when a message is enqueued in this process

    # ---------------------------------------------------------------- routing
    def dataset(self, name: str) -> DatasetSpec:
        for d in self.spec.datasets:
            if d.name == name:
                return d
        names = [d.name for d in self.spec.datasets]
        raise NotFoundError(
            f"no dataset {name!r}{did_you_mean(name, names)}",
            hint=f"datasets in tarn.yaml: {', '.join(names) or '(none)'}",
        )

    def route(self, rel: str) -> DatasetSpec | None:
        for d in self.spec.datasets:
            if fnmatch.fnmatch(rel, d.landing_glob):
                return d
        return None

    # ----------------------------------------------------------- registration
    def register(
        self, source: Path, *, landing_rel: str | None, dataset: str | None, seen_at: float | None = None
    ) -> Registered:
        """Record one landed file. ``landing_rel`` is its path under landing (watcher, scan) or
        None for a file given on the command line."""
        prepared = self._prepare(source, landing_rel=landing_rel, dataset=dataset, seen_at=seen_at)
        if isinstance(prepared, Registered):
            return prepared
        return self._record(prepared)

    def register_files(
        self,
        files: list[Path],
        dataset: str,
        *,
        audit: Callable[[Connection, Path, Registered], None] | None = None,
    ) -> list[Registered]:
        """Register files given by name (``tarn ingest``, :meth:`Lake.ingest`), many to a transaction (see
        :meth:`_register_many`). ``audit(conn, file, registered)`` runs for each inside that transaction. An
        error (a file gone or changing while copied) is raised after the files before it are recorded."""
        out = self._register_many([(f, None, dataset, None) for f in files], audit=audit, collect=False)
        return [r for r in out if isinstance(r, Registered)]

    def register_landed(self, items: list[tuple[str, float]]) -> list[Registered | Exception]:
        """Register files the landing watcher found settled at once, ``(path under landing, seen_at)``, many
        to a transaction. One file's error (it changed while copied, say) is returned in its place and the
        others are registered; a file not registered is seen again by the next reconciliation scan."""
        files = [(Path(self.storage.landing_uri(rel)), rel, None, seen) for rel, seen in items]
        return self._register_many(files, collect=True)

    def _register_many(
        self,
        items: Sequence[tuple[Path, str | None, str | None, float | None]],
        *,
        audit: Callable[[Connection, Path, Registered], None] | None = None,
        collect: bool,
    ) -> list[Registered | Exception]:
        """Each file ``(source, landing_rel, dataset, seen_at)`` is checked and copied into raw/ on its own;
        the records and queue messages are written together, up to ``REGISTER_CHUNK`` files a transaction
        (on PostgreSQL and SQLite far cheaper than a transaction a file). ``collect``: an error is returned
        in the file's place (a failed transaction: in the place of each of its files); otherwise it is
        raised once the files before it are recorded."""
        out: list[Registered | Exception | None] = []
        pending: list[tuple[int, Path, _Pending]] = []

        def flush() -> None:
            if not pending:
                return
            kept: list[RawCopy] = []
            try:
                with self.meta.db.tx() as conn:
                    self.meta.objects.lock_landing(
                        conn,
                        [p.path_key for _, _, p in pending],
                        [f"{p.ds.name}:{p.copy.sha256}" for _, _, p in pending],
                    )
                    done = [(i, f, self._record_in(conn, p, kept)) for i, f, p in pending]
                    if audit is not None:
                        for _, f, reg in done:
                            audit(conn, f, reg)
            except Exception as e:
                self._unkeep([p.copy for _, _, p in pending], kept)
                if not collect:
                    raise
                for i, _, _ in pending:
                    out[i] = e
                return
            except BaseException:
                self._unkeep([p.copy for _, _, p in pending], kept)
                raise
            finally:
                pending.clear()
            for i, _, reg in done:
                out[i] = reg
            self.wake.set()

        try:
            for source, rel, dataset, seen_at in items:
                try:
                    prepared = self._prepare(source, landing_rel=rel, dataset=dataset, seen_at=seen_at)
                except Exception as e:
                    if not collect:
                        raise
                    out.append(e)
                    continue
                out.append(None)
                if isinstance(prepared, Registered):  # rejected or already known: nothing to record
                    out[-1] = prepared
                    if audit is not None:
                        with self.meta.db.tx() as conn:
                            audit(conn, source, prepared)
                    continue
                pending.append((len(out) - 1, source, prepared))
                if len(pending) >= REGISTER_CHUNK:
                    flush()
        finally:
            flush()
        return [r for r in out if r is not None]

    def _prepare(
        self, source: Path, *, landing_rel: str | None, dataset: str | None, seen_at: float | None
    ) -> Registered | _Pending:
        """Checks and the raw copy of one landed file: what to record, or its registration when
        there is nothing more to do (rejected, already known)."""
        path_key = landing_rel if landing_rel is not None else str(source.resolve())
        ds = self.dataset(dataset) if dataset else (self.route(landing_rel) if landing_rel else None)
        try:
            lst = source.lstat()
        except FileNotFoundError:
            raise NotFoundError(f"{source} does not exist", hint="check the path") from None
        mtime_ns = lst.st_mtime_ns
        base: dict[str, Any] = {"landing_path": path_key, "mtime_ns": mtime_ns, "principal": self.principal}
        if seen_at is not None:
            base["closed_at"] = seen_at
        # Files Tarn must not read: recorded as rejected, with the reason, never followed.
        reason = self._refuse(source, lst.st_size, landing_rel)
        if reason is None and ds is None:
            reason = f"no dataset's landing pattern matches {path_key!r}; patterns: " + ", ".join(
                f"{d.name}: {d.landing_glob}" for d in self.spec.datasets
            )
        if reason is not None:
            return self._reject(ds, path_key, max(lst.st_size, 0), base, reason)
        assert ds is not None
        with self.meta.db.read() as conn:
            if self.meta.objects.seen_landing(conn, path_key, lst.st_size, mtime_ns):
                return Registered("", "known", ds.name)
        # Changed while being copied: not settled after all. The next sighting (event or reconciliation
        # scan) registers the final content.
        changed = f"{path_key} changed while it was being copied; " + (
            "it will be picked up once settled"
            if landing_rel is not None
            else "ingest it again once whatever writes it has finished"
        )
        try:
            copy = self.storage.copy_to_raw(str(source))
        except FileNotFoundError:
            raise NotFoundError(f"{path_key} disappeared before it could be copied into raw/") from None
        except FileChangedError:
            raise IngestError(changed) from None
        after = source.lstat() if source.exists() else None
        if after is None or (after.st_size, after.st_mtime_ns) != (lst.st_size, mtime_ns) or copy.size != lst.st_size:
            self.storage.discard_raw(copy)
            raise IngestError(changed)
        return _Pending(ds, path_key, lst.st_size, base, copy, source.name)

    def register_object(self, landed: LandedFile, *, seen_at: float | None = None) -> Registered:
        """Record one object of an object-store landing zone (found by listing or by an event)."""
        path_key = landed.path
        ds = self.route(path_key)
        base: dict[str, Any] = {"landing_path": path_key, "mtime_ns": landed.mtime_ns, "principal": self.principal}
        if seen_at is not None:
            base["closed_at"] = seen_at
        reason = None
        if landed.size > self.spec.ingest.max_file_bytes:
            reason = (
                f"object of {landed.size} bytes is over the limit of {self.spec.ingest.max_file_bytes} bytes "
                "(ingest.max_file_bytes)"
            )
        elif ds is None:
            reason = f"no dataset's landing pattern matches {path_key!r}; patterns: " + ", ".join(
                f"{d.name}: {d.landing_glob}" for d in self.spec.datasets
            )
        if reason is not None:
            return self._reject(ds, path_key, landed.size, base, reason)
        assert ds is not None
        # No "seen" check before the copy: (path, size, mtime) cannot tell two versions apart here (see
        # _Pending.by_content), and the claims already keep a version from being registered twice; the
        # record is checked with the content's sha256 (a version re-registered after a crash is "known").
        try:
            copy = self.storage.copy_to_raw(self.storage.landing_uri(path_key), etag=landed.etag)
        except FileNotFoundError:
            raise NotFoundError(f"{path_key} disappeared before it could be copied into raw/") from None
        if copy.size != landed.size:
            self.storage.discard_raw(copy)
            raise IngestError(f"{path_key} changed while it was being copied; it is read again on the next listing")
        name = path_key.rsplit("/", 1)[-1]
        return self._record(_Pending(ds, path_key, landed.size, base, copy, name, by_content=True))

    def _reject(
        self, ds: DatasetSpec | None, path_key: str, size: int, base: dict[str, Any], reason: str
    ) -> Registered:
        """Record an object Tarn must not read as rejected, with the reason."""
        oid = st.new_id()
        with self.meta.db.tx() as conn:
            self.meta.objects.lock_landing(conn, [path_key])
            if self.meta.objects.seen_landing(conn, path_key, size, base["mtime_ns"]):
                return Registered("", "known", ds.name if ds else None)
            self.meta.objects.insert(
                conn,
                id=oid,
                dataset=ds.name if ds else None,
                size=size,
                sha256="",
                state=st.REJECTED,
                error=reason,
                **base,
            )
        log.warning("rejected %s: %s", path_key, reason)
        return Registered(oid, st.REJECTED, ds.name if ds else None)

    def _record(self, p: _Pending) -> Registered:
        """Keep a raw copy and record its object and queue message (or record it as a duplicate)."""
        kept: list[RawCopy] = []
        try:
            with self.meta.db.tx() as conn:
                self.meta.objects.lock_landing(conn, [p.path_key], [f"{p.ds.name}:{p.copy.sha256}"])
                reg = self._record_in(conn, p, kept)
        except BaseException:
            self._unkeep([p.copy], kept)
            raise
        self.wake.set()
        return reg

    def _unkeep(self, copies: list[RawCopy], kept: list[RawCopy]) -> None:
        """After a failed transaction: remove the temporary copies, and the raw copies kept for records
        that were rolled back (nothing refers to them; the file is registered again on its next sighting)."""
        for c in [*copies, *kept]:
            try:
                self.storage.discard_raw(c)
            except Exception:  # the transaction's own error matters more; `tarn maintain` reports leftovers
                log.warning("could not remove %s after a failed registration", c.temp_path, exc_info=True)

    def _record_in(self, conn: Connection, p: _Pending, kept: list[RawCopy]) -> Registered:
        """:meth:`_record` inside the caller's transaction; a raw copy it keeps is added to ``kept``."""
        ds, path_key, copy, base = p.ds, p.path_key, p.copy, p.base
        oid = st.new_id()
        if self.meta.objects.seen_landing(
            conn, path_key, p.size, base["mtime_ns"], copy.sha256 if p.by_content else None
        ):
            self.storage.discard_raw(copy)
            return Registered("", "known", ds.name)
        first = self.meta.objects.find_by_content(conn, ds.name, copy.sha256)
        row: dict[str, Any] = {"id": oid, "dataset": ds.name, "size": copy.size, "sha256": copy.sha256, **base}
        if first is not None:
            self.storage.discard_raw(copy)
            self.meta.objects.insert(
                conn,
                **row,
                raw_path=first.raw_path,
                state=st.DUPLICATE,
                duplicate_of=first.id,
                error=f"same content (sha256 {copy.sha256[:12]}…) as object {first.id}; not ingested again",
            )
            return Registered(oid, st.DUPLICATE, ds.name, first.id)
        raw_path = self.storage.keep_raw(copy, ds.name, oid, p.name)
        kept.append(RawCopy(raw_path, copy.sha256, copy.size))  # to remove if the transaction fails
        self.meta.objects.insert(conn, **row, raw_path=raw_path, state=st.RECEIVED)
        # Upserts by primary key must apply in landing order; appends may run in parallel.
        group = ds.name if ds.primary_key else None
        self.meta.queue.send(conn, INGEST_QUEUE, {"object_id": oid, "dataset": ds.name}, object_id=oid, group=group)
        return Registered(oid, st.RECEIVED, ds.name)

    def _refuse(self, source: Path, size: int, landing_rel: str | None) -> str | None:
        if source.is_symlink():
            target = Path(os.path.realpath(source))
            if landing_rel is not None and isinstance(self.storage, LocalStorage):
                landing = self.storage.zone("landing").resolve()
                if not target.is_relative_to(landing):
                    return f"symlink pointing outside the landing zone ({target}); not followed"
            if not target.is_file():
                return "symlink to something that is not a regular file; not followed"
            return "symlinks are not ingested; land the file itself"
        if not source.is_file():
            return "not a regular file"
        if size > self.spec.ingest.max_file_bytes:
            return (
                f"file of {size} bytes is over the limit of {self.spec.ingest.max_file_bytes} bytes "
                "(ingest.max_file_bytes)"
            )
        return None
