"""The light stage for one object: read → type → split good/bad → commit exactly once.

One streaming DuckDB query reads the raw copy and types every column; each Arrow batch is split
into good rows (streamed straight into the stage table's Delta writer) and bad rows (spilled to
a temporary Parquet file, then committed to the quarantine table). Memory is bounded by the
batch size, whatever the file size.

Exactly once: both commits carry the token ``tarn-ingest-<object id>``. If the stage commit
landed but the process died before the quarantine commit, the next delivery re-reads the file in
quarantine-only mode. A redelivery after both commits writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tarn.config.spec import ColumnSpec, DatasetSpec
from tarn.config.types import arrow_type
from tarn.engines.duckdb import connect
from tarn.errors import IngestError, TarnError
from tarn.ingest.checks import Check, column_checks, int64_array, repeat_string
from tarn.ingest.formats import detect_format
from tarn.ingest.prefetch import Prefetch
from tarn.ingest.quarantine import QUARANTINE_SCHEMA, fmt_error, loads_record, now_us, reject_row
from tarn.ingest.schema import LINEAGE, RESCUED, Target, resolve_target
from tarn.ingest.sources import MALFORMED_COL, CsvSource, JsonLinesSource, Source, open_source
from tarn.ingest.typing import cast_expr, conversion_error, lit, q
from tarn.tables import delta

log = logging.getLogger("tarn.ingest")

# Bounded memory: DuckDB's share of an ingest (reading, typing, ordering) is capped; the rest is
# one record batch in flight plus the Delta writer's row-group buffer.
DUCKDB_MEMORY_LIMIT = "768MB"


@dataclass(frozen=True)
class IngestResult:
    format: str
    rows_total: int
    rows_committed: int
    rows_quarantined: int
    stage_version: int | None
    already_committed: bool
    added_columns: tuple[str, ...]
    # With ``collect``: the rows to commit, for the caller to write with other objects' rows.
    good: pa.Table | None = None
    bad: pa.Table | None = None


def token_for(object_id: str) -> str:
    return f"tarn-ingest-{object_id}"


class Processor:
    def __init__(
        self,
        dataset: DatasetSpec,
        *,
        stage_uri: str,
        quarantine_uri: str,
        declared: tuple[ColumnSpec, ...] | None,
        catalogued: tuple[ColumnSpec, ...] | None,
        batch_rows: int = 131072,
    ) -> None:
        self.ds = dataset
        self.stage_uri = stage_uri
        self.quarantine_uri = quarantine_uri
        self.declared = declared
        self.catalogued = catalogued
        self.batch_rows = batch_rows
        self._dups: pa.Array | None = None  # duplicate-key flags of the batch being split

    # ------------------------------------------------------------------ public
    def run(
        self, object_id: str, raw_path: str, name: str, *, first_attempt: bool = False, collect: bool = False
    ) -> IngestResult:
        """Ingest one object. ``first_attempt``: no delivery of it ever started before, so no
        commit of it can exist and the Delta logs need not be searched for its token.
        ``collect`` (first attempts of small objects only): read and type, but commit nothing;
        the result carries the good and quarantined rows for one commit of a whole batch."""
        assert first_attempt or not collect, "only a first attempt can be collected"
        token = token_for(object_id)
        stage_done = False if first_attempt else delta.committed(self.stage_uri, token)
        if stage_done and delta.committed(self.quarantine_uri, token):
            return self._from_log(token)
        fmt = detect_format(raw_path, name, self.ds.format)
        declared_names = [c.name for c in self.declared] if self.declared else None
        source = open_source(raw_path, fmt, self.ds.csv, declared_names)
        target = resolve_target(self.ds, source, self.declared, self.catalogued)
        try:
            return self._pass(object_id, token, source, target, write_stage=not stage_done, name=name, collect=collect)
        except _ReadError as e:
            if not isinstance(source, CsvSource | JsonLinesSource) or source.tolerant:
                raise IngestError(f"cannot read {name} as {fmt}: {e.message}") from None
        # A structural error (ragged row, bad quote, bad bytes): read again, skipping and
        # recording the malformed records, which go to quarantine with their line numbers.
        source.tolerant = True
        try:
            return self._pass(object_id, token, source, target, write_stage=not stage_done, name=name, collect=collect)
        except _ReadError as e:
            raise IngestError(f"cannot read {name} as {fmt}: {e.message}") from None

    def run_many(self, items: list[tuple[str, str, str]]) -> dict[str, IngestResult]:
        """First attempts of several small CSV objects (object id, raw path, name), read by ONE DuckDB
        query per group of files with the same header and options (collect mode, as ``run``).

        One query costs what one file's does (parsing and binding the typing SQL, starting the scan),
        so a batch of small files reads several times faster. Objects it does not take — another
        format, a header of their own, a file that needs the tolerant reader, a schema change — are
        left out of the result, for ``run(collect=True)`` one by one, which reports their errors."""
        if self.declared is None and self.catalogued is None:
            return {}  # the table's first file defines its columns: one by one
        declared_names = [c.name for c in self.declared] if self.declared else None
        groups: dict[tuple[Any, ...], list[tuple[str, str, str, Source]]] = {}
        for object_id, path, name in items:
            try:
                if detect_format(path, name, self.ds.format) != "csv":
                    continue
                src = open_source(path, "csv", self.ds.csv, declared_names)
            except Exception:  # the one-by-one path reports it
                continue
            groups.setdefault((tuple(src.columns), src._csv_opts), []).append((object_id, path, name, src))
        out: dict[str, IngestResult] = {}
        for members in groups.values():
            if len(members) < 2:
                continue
            try:
                target = resolve_target(self.ds, members[0][3], self.declared, self.catalogued)
                if target.added:
                    continue  # a schema change: the one-by-one path commits it before the files after it
                out.update(self._pass_many(members, target))
            except Exception as e:
                # A malformed file among them (the tolerant reader is per file), a failed inference, …
                log.info("%d files read one by one instead of together: %s", len(members), _first_line(e))
                continue
        return out

    def _pass_many(self, members: list[tuple[str, str, str, Source]], target: Target) -> dict[str, IngestResult]:
        first = members[0][3]
        paths = [m[1] for m in members]
        ids = pa.array([m[0] for m in members], pa.string())
        names = pa.array([m[2] for m in members], pa.string())
        source = _ManyCsv(
            path=first.path,
            fmt="csv",
            columns=list(first.columns),
            from_text=True,
            header_lines=first.header_lines,
            _csv_opts=first._csv_opts,
            paths=tuple(paths),
        )
        con = _connection()
        schema = self._stage_schema(target)
        out_cols = [f.name for f in schema][:-2]
        n = len(members)
        seen = np.zeros(n, dtype=np.int64)  # rows read so far, per file
        bad_n = np.zeros(n, dtype=np.int64)
        good_parts: list[pa.RecordBatch] = []
        good_codes: list[np.ndarray] = []
        bad_parts: list[pa.Table] = []
        try:
            sql, checks = self._sql(source, target, con, carry=(_FILE_COL,))
            reader = con.sql(sql).to_arrow_reader(self.batch_rows)
        except duckdb.Error as e:
            raise _classify(e) from None
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except duckdb.Error as e:
                    raise _classify(e) from None
                found = pc.index_in(batch.column(_FILE_COL), value_set=pa.array(paths))
                if found.null_count:
                    raise _ReadError("DuckDB named a file that was not asked for")
                codes = found.to_numpy(zero_copy_only=False)
                lines = np.empty(batch.num_rows, dtype=np.int64)
                # Rows of one file come in order (DuckDB preserves insertion order): number them per file.
                edges = np.flatnonzero(np.diff(codes)) + 1
                for lo, hi in zip(np.r_[0, edges], np.r_[edges, batch.num_rows], strict=True):
                    k = int(codes[lo])
                    lines[lo:hi] = np.arange(seen[k] + 1, seen[k] + 1 + (hi - lo)) + source.header_lines
                    seen[k] += hi - lo
                line_arr = pa.array(lines)
                bad_mask = batch.column("__bad")
                if pc.any(bad_mask).as_py():
                    self._dups = None
                    bad_codes = codes[np.asarray(bad_mask.to_numpy(zero_copy_only=False), dtype=bool)]
                    bad_n += np.bincount(bad_codes, minlength=n)
                    bad_parts.append(
                        self._quarantine_rows(
                            batch, bad_mask, line_arr, checks, ids.take(pa.array(codes)), names.take(pa.array(codes))
                        )
                    )
                    keep = pc.invert(bad_mask)
                    batch, line_arr = batch.filter(keep), pc.filter(line_arr, keep)
                    codes = codes[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
                if batch.num_rows == 0:
                    continue
                cols = [batch.column(c) for c in out_cols]
                cols += [ids.take(pa.array(codes)), line_arr]
                good_parts.append(pa.RecordBatch.from_arrays(cols, names=[f.name for f in schema]).cast(schema))
                good_codes.append(codes)
        finally:
            reader.close()
        # Each object's good rows, in file order (a stable sort keeps each file's own order).
        all_codes = np.concatenate(good_codes) if good_codes else np.zeros(0, dtype=np.int64)
        good = pa.Table.from_batches(good_parts, schema=schema)
        order = np.argsort(all_codes, kind="stable")
        good = good.take(pa.array(order)) if len(order) else good
        counts = np.bincount(all_codes, minlength=n)
        offsets = np.r_[0, np.cumsum(counts)]
        bad = pa.concat_tables(bad_parts) if bad_parts else None
        out: dict[str, IngestResult] = {}
        for k, (object_id, _, _, _) in enumerate(members):
            mine = None
            if bad is not None and bad_n[k]:
                mine = bad.filter(pc.equal(bad.column("_tarn_object_id"), object_id))
            out[object_id] = IngestResult(
                "csv",
                int(seen[k]),
                int(counts[k]),
                int(bad_n[k]),
                None,
                False,
                (),
                good=good.slice(int(offsets[k]), int(counts[k])),
                bad=mine,
            )
        return out

    # --------------------------------------------------------------- internals
    def _from_log(self, token: str) -> IngestResult:
        info = delta.commit_info(self.stage_uri, token) or {}
        metrics = info.get("operationMetrics", {})
        added = int(metrics.get("num_added_rows", metrics.get("num_source_rows", 0)) or 0)
        qinfo = delta.commit_info(self.quarantine_uri, token) or {}
        bad = int(qinfo.get("operationMetrics", {}).get("num_added_rows", 0) or 0)
        return IngestResult("?", added + bad, added, bad, info.get("version"), True, ())

    def _sql(
        self, source: Source, target: Target, con: duckdb.DuckDBPyConnection, carry: tuple[str, ...] = ()
    ) -> tuple[str, list[Check]]:
        """The typing query; ``carry``: relation columns passed through unchanged (e.g. the file name)."""
        rel = source.relation(con)
        present = set(source.columns)
        pk = set(self.ds.primary_key)
        inner: list[str] = []
        typed: list[str] = []
        checks: list[Check] = []
        for i, c in enumerate(target.columns):
            raw = f"__r{i}"
            if c.name in present:
                v = q(c.name)
                if c.trim:
                    v = f"trim({v})"
                if c.null_values:
                    v = f"CASE WHEN {v} IN ({', '.join(lit(x) for x in c.null_values)}) THEN NULL ELSE {v} END"
            else:
                v = "NULL"
            inner.append(f"{v} AS {q(raw)}")
            cast = cast_expr(q(raw), c.type, from_text=source.from_text)
            typed.append(f"{cast} AS {q(c.name)}")
            column_checks(i, c, q(raw), cast, pk=pk, present=present, typed=typed, checks=checks)
        passthrough = [q(f"__r{i}") for i in range(len(target.columns))]
        inner += [q(c) for c in carry]
        typed += [q(c) for c in carry]
        if target.rescue_column:
            if target.rescued:
                pairs = ", ".join(f"{q(r)} := {q(r)}" for r in target.rescued)
                cond = " OR ".join(f"{q(r)} IS NOT NULL" for r in target.rescued)
                typed.append(f"CASE WHEN {cond} THEN CAST(to_json(struct_pack({pairs})) AS VARCHAR) END AS {RESCUED}")
                inner.extend(q(r) for r in target.rescued)
            else:
                typed.append(f"CAST(NULL AS VARCHAR) AS {RESCUED}")
        if source.has_malformed_column():
            inner += [MALFORMED_COL, "__text"]
            typed += [f"({MALFORMED_COL} IS NOT NULL) AS __m", MALFORMED_COL, "__text"]
            checks.append(Check("__m", None, "malformed", ""))
        outer = [f"NOT coalesce(({k.check}), false) AS __k{j}" for j, k in enumerate(self.ds.constraints)]
        checks += [Check(f"__k{j}", None, "constraint", k.name) for j, k in enumerate(self.ds.constraints)]
        flags = [c.flag for c in checks]
        bad = " OR ".join(flags) if flags else "false"
        raw_names = [c.name for c in target.columns]
        record = (
            "to_json(struct_pack("
            + ", ".join(f"{q(n)} := {p}" for n, p in zip(raw_names, passthrough, strict=True))
            + "))"
        )
        if source.has_malformed_column():
            record = f"CASE WHEN __m THEN to_json(__text) ELSE {record} END"
        sql = (
            f"SELECT * EXCLUDE ({', '.join(passthrough)}), ({bad}) AS __bad, "
            f"CASE WHEN {bad} THEN CAST({record} AS VARCHAR) END AS __record FROM ("
            f"SELECT *{', ' if outer else ''}{', '.join(outer)} FROM ("
            f"SELECT {', '.join([*typed, *passthrough])} FROM (SELECT {', '.join(inner)} FROM {rel})))"
        )
        return sql, checks

    def _stage_schema(self, target: Target) -> pa.Schema:
        fields = [pa.field(c.name, arrow_type(c.type)) for c in target.columns]
        if target.rescue_column:
            fields.append(pa.field(RESCUED, pa.string()))
        fields += [pa.field(LINEAGE[0], pa.string()), pa.field(LINEAGE[1], pa.int64())]
        return pa.schema(fields)

    def _pass(
        self,
        object_id: str,
        token: str,
        source: Source,
        target: Target,
        *,
        write_stage: bool,
        name: str,
        collect: bool = False,
    ) -> IngestResult:
        con = _connection()
        schema = self._stage_schema(target)
        out_cols = [f.name for f in schema][:-2]
        counts = {"good": 0, "bad": 0, "total": 0}
        error: list[BaseException] = []
        collected: list[pa.Table] = []  # collect mode: the good rows, then the bad ones
        bad_parts: list[pa.Table] = []
        # Collect mode reads small objects: rows stay in memory, no spill file, no read-ahead thread.
        with contextlib.nullcontext("") if collect else tempfile.TemporaryDirectory(prefix="tarn-q-") as tmp:
            qpath = Path(tmp) / "quarantine.parquet"
            qwriter: list[pq.ParquetWriter] = []

            def write_bad(rows: pa.Table) -> None:
                counts["bad"] += rows.num_rows
                if collect:
                    bad_parts.append(rows)
                    return
                if not qwriter:
                    qwriter.append(pq.ParquetWriter(qpath, QUARANTINE_SCHEMA))
                qwriter[0].write_table(rows)

            try:
                sql, checks = self._sql(source, target, con)
                arrow = con.sql(sql).to_arrow_reader(self.batch_rows)
                reader: Prefetch | pa.RecordBatchReader = arrow if collect else Prefetch(arrow)
            except duckdb.Error as e:
                _release(con, source.tolerant)
                raise _classify(e) from None
            seen_keys: set[tuple[Any, ...]] = set()

            def good_batches() -> Iterator[pa.RecordBatch]:
                offset = 0
                try:
                    while True:
                        try:
                            batch = reader.read_next_batch()
                        except StopIteration:
                            return
                        except duckdb.Error as e:
                            raise _classify(e) from None
                        n = batch.num_rows
                        counts["total"] += n
                        lines = int64_array(source.line_numbers(offset, n))
                        offset += n
                        bad_mask = batch.column("__bad")
                        self._dups = None
                        if self.ds.primary_key:
                            bad_mask = self._dedup_keys(batch, bad_mask, lines, seen_keys, checks)
                        if pc.any(bad_mask).as_py():
                            write_bad(self._quarantine_rows(batch, bad_mask, lines, checks, object_id, name))
                            keep = pc.invert(bad_mask)
                            batch, lines = batch.filter(keep), pc.filter(lines, keep)
                        if batch.num_rows == 0:
                            continue
                        counts["good"] += batch.num_rows
                        cols = [batch.column(c) for c in out_cols]
                        cols += [repeat_string(object_id, batch.num_rows), lines]
                        yield pa.RecordBatch.from_arrays(cols, names=[f.name for f in schema]).cast(schema)
                except BaseException as e:  # surfaced again after the Delta writer unwinds
                    error.append(e)
                    raise

            try:
                stream = pa.RecordBatchReader.from_batches(schema, good_batches())
                version: int | None = None
                if write_stage and collect:
                    collected.append(stream.read_all())
                elif write_stage:
                    version = self._write_stage(stream, token, object_id)
                else:  # the stage commit landed before a crash: only the quarantine is redone
                    for _ in good_batches():
                        pass
                    info = delta.commit_info(self.stage_uri, token)
                    version = int(info["version"]) if info and info.get("version") is not None else None
                for r in source.rejects:  # malformed CSV records found by the tolerant reader
                    write_bad(reject_row(object_id, name, r.line, r.text, r.message))
            except Exception as e:
                if error:
                    raise error[0] from None
                raise IngestError(f"writing {self.stage_uri} failed: {e}") from None
            finally:
                reader.close()
                _release(con, source.tolerant)
                if qwriter:
                    qwriter[0].close()
            if counts["bad"] and not collect and not delta.committed(self.quarantine_uri, token):
                delta.append(self.quarantine_uri, pq.read_table(qpath), token=token)
        total = counts["total"] + len(source.rejects)
        return IngestResult(
            source.fmt,
            total,
            counts["good"],
            counts["bad"],
            version,
            not write_stage,
            tuple(target.added),
            good=collected[0] if collected else None,
            bad=pa.concat_tables(bad_parts) if bad_parts else None,
        )

    def _write_stage(self, stream: pa.RecordBatchReader, token: str, object_id: str) -> int:
        meta = {"tarn.object_id": object_id, "tarn.dataset": self.ds.name}
        if self.ds.primary_key:
            return delta.upsert(
                self.stage_uri,
                stream,
                keys=self.ds.primary_key,
                token=token,
                partition_by=self.ds.partition_by,
                metadata=meta,
            )
        return delta.append(self.stage_uri, stream, token=token, partition_by=self.ds.partition_by, metadata=meta)

    def _dedup_keys(
        self,
        batch: pa.RecordBatch,
        bad: pa.Array,
        lines: pa.Array,
        seen: dict[tuple[Any, ...], int] | set[tuple[Any, ...]],
        checks: list[Check],
    ) -> pa.Array:
        """Mark the second and later rows of a primary key within one file as bad (a MERGE source
        must not hold one key twice). Keeps the first occurrence."""
        keys = list(zip(*(batch.column(k).to_pylist() for k in self.ds.primary_key), strict=True))
        bad_list = bad.to_pylist()
        dup = [False] * len(keys)
        assert isinstance(seen, set)
        for i, k in enumerate(keys):
            if bad_list[i]:
                continue
            if k in seen:
                dup[i] = True
            else:
                seen.add(k)
        if not any(dup):
            return bad
        self._dups = pa.array(dup)
        if not any(c.kind == "dup" for c in checks):
            checks.append(Check("__dup", None, "dup", ", ".join(self.ds.primary_key)))
        return pc.or_(bad, self._dups)

    def _quarantine_rows(
        self,
        batch: pa.RecordBatch,
        mask: pa.Array,
        lines: pa.Array,
        checks: list[Check],
        object_id: str | pa.Array,
        name: str | pa.Array,
    ) -> pa.Table:
        """The quarantine rows of ``batch`` where ``mask``; ``object_id`` / ``name``: one for all rows
        or an array of one per row (several files read together)."""
        sub = batch.filter(mask)
        sub_lines = pc.filter(lines, mask).to_pylist()
        flag_values: dict[str, list[Any]] = {}
        for c in checks:
            if c.kind == "dup":
                if self._dups is not None:
                    flag_values[c.flag] = pc.filter(self._dups, mask).to_pylist()
            elif c.flag in sub.schema.names:
                flag_values[c.flag] = sub.column(c.flag).to_pylist()
        records = sub.column("__record").to_pylist()
        reasons_col = sub.column(MALFORMED_COL).to_pylist() if MALFORMED_COL in sub.schema.names else None
        errors_out: list[list[dict[str, str | None]]] = []
        for i in range(sub.num_rows):
            errs: list[dict[str, str | None]] = []
            raw = loads_record(records[i])
            malformed = reasons_col is not None and reasons_col[i] is not None
            for c in checks:
                if malformed and c.kind != "malformed":
                    continue  # a record that did not parse has no fields to judge
                if not flag_values.get(c.flag, [False] * sub.num_rows)[i]:
                    continue
                if c.kind == "type":
                    value = raw.get(c.field) if isinstance(raw, dict) and c.field else None
                    errs.append({"field": c.field, "message": conversion_error(value, c.detail)})
                elif c.kind == "null":
                    errs.append({"field": c.field, "message": c.detail})
                elif c.kind == "constraint":
                    errs.append({"field": None, "message": f"constraint {c.detail!r} failed"})
                elif c.kind == "dup":
                    errs.append({"field": c.detail, "message": "duplicate primary key within the file"})
                elif c.kind == "malformed" and reasons_col is not None:
                    errs.append({"field": None, "message": f"malformed record: {reasons_col[i]}"})
            errors_out.append(errs)
        n = sub.num_rows
        return pa.table(
            {
                "_tarn_object_id": pa.repeat(object_id, n) if isinstance(object_id, str) else object_id.filter(mask),
                "_tarn_row": pa.array(sub_lines, pa.int64()),
                "source_file": pa.repeat(name, n) if isinstance(name, str) else name.filter(mask),
                "reason": pa.array(["; ".join(fmt_error(e) for e in errs) for errs in errors_out], pa.string()),
                "errors": pa.array(errors_out, QUARANTINE_SCHEMA.field("errors").type),
                "record": pa.array(records, pa.string()),
                "quarantined_at": pa.array(np.full(n, now_us(), dtype="int64"), pa.int64()).cast(
                    QUARANTINE_SCHEMA.field("quarantined_at").type
                ),
            },
            schema=QUARANTINE_SCHEMA,
        )


_FILE_COL = "__tarn_file"


@dataclass
class _ManyCsv(Source):
    """Several CSV files with the same header and options, as one relation with a file-name column."""

    paths: tuple[str, ...] = ()

    def relation(self, con: duckdb.DuckDBPyConnection) -> str:
        files = "[" + ", ".join(lit(p) for p in self.paths) + "]"
        return f"read_csv({files}, {self._csv_opts}, filename={lit(_FILE_COL)})"


_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    """One DuckDB connection per worker thread, reused across objects (a new in-memory database
    per object costs ~15 ms, more than reading a small file)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = _local.con = connect(memory_limit=DUCKDB_MEMORY_LIMIT)
    return con


def _release(con: duckdb.DuckDBPyConnection, tolerant: bool) -> None:
    """Drop what a pass left behind (the CSV reader's reject tables), keeping the connection."""
    if not tolerant:
        return
    try:
        temp = con.sql("SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE 'rej%'").fetchall()
        for (name,) in temp:
            con.execute(f'DROP TABLE IF EXISTS temp."{name}"')
    except duckdb.Error:
        con.close()
        _local.con = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


class _ReadError(TarnError):
    """The reader failed on the file's structure or bytes."""

    retryable = True


def _classify(e: duckdb.Error) -> TarnError:
    msg = str(e).strip()
    first = msg.splitlines()[0] if msg else type(e).__name__
    if isinstance(e, duckdb.BinderException | duckdb.ParserException | duckdb.CatalogException):
        err = IngestError(
            f"the dataset's SQL (a constraint?) is invalid: {first}",
            hint="fix the constraint in tarn.yaml, then 'tarn dlq redrive' the object",
        )
        err.retryable = False  # retrying cannot help until the project is fixed: straight to the DLQ
        return err
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()][:3]
    return _ReadError(" | ".join(lines))
