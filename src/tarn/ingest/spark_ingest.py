"""Ingest of one large CSV object on Apache Spark, with the DuckDB path's results (``ingest_engine: spark``).

The same contract as :class:`tarn.ingest.processor.Processor` (typing, quarantine, line numbers, exactly once),
computed by Spark: the raw copy is read as lines (``spark.read.text``), numbered as DuckDB numbers them (blank
lines skipped: ``_tarn_row`` is the record's ordinal plus the header), split into text fields with ``from_csv``,
typed with :mod:`tarn.engines.spark_typing` (DuckDB's cast semantics), checked against the dataset's
nullability and constraints (transpiled from DuckDB SQL), and split:

* good rows: Spark writes Parquet into the stage table's folder (``tarn-spark-<id>/``) and Tarn commits exactly
  those files (:func:`tarn.tables.delta.commit_files`) with the token ``tarn-ingest-<object id>``;
* bad rows (few): collected to the driver as Arrow, described by the processor's own code (same reasons and
  errors), appended to the quarantine table with the same token.

Correctness first: whatever this path cannot reproduce exactly goes to the DuckDB path (logged with the reason):
formats other than CSV, compressed files, a schema change (new columns, rescue), a primary key (upserts),
partitioned tables, types other than text, numbers, booleans, dates and timestamps, CSV options other than quote =
escape and the empty string among the null values, a cluster master (its executors cannot read the local raw copy),
a record DuckDB would read differently or reject (a line that is not a well-formed CSV record: quoted fields
spanning lines, stray quotes, ragged rows, invalid UTF-8), a file without data rows or good rows, or with more than
a million bad rows, and a redelivery whose stage commit already landed (DuckDB redoes the quarantine only).
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot.errors import ErrorLevel, SqlglotError

from tarn.config.engine import EngineSpec
from tarn.config.types import normalize_type
from tarn.engines.base import TypedField
from tarn.engines.spark_session import get_session, is_local
from tarn.engines.spark_typing import convert, slit, spark_type, sq
from tarn.errors import TarnError
from tarn.ingest.checks import Check, column_checks
from tarn.ingest.formats import compression_of, detect_format
from tarn.ingest.processor import IngestResult, Processor, token_for
from tarn.ingest.schema import LINEAGE, resolve_target
from tarn.ingest.sources import open_source
from tarn.tables import delta
from tarn.tables import files as data_files

log = logging.getLogger("tarn.ingest")

SPARK_TYPES = ("string", "json", "long", "integer", "short", "double", "float", "boolean", "date", "timestamp")
_GLOB_CHARS = re.compile(r"[*?\[\]{}\\]")
MAX_BAD_ROWS = 1_000_000  # quarantined rows are collected on the driver: more go to DuckDB (it spills them)
_ID_BITS = 33  # monotonically_increasing_id(): partition id in the upper bits, the row in the lower 33


class Unsupported(Exception):
    """This object cannot be ingested by Spark with DuckDB's exact results: the DuckDB path takes it."""


def spark_engine_spec(engine: EngineSpec) -> EngineSpec:
    """The Spark session settings for ingest: the project's engine section when it names Spark, else local[2]."""
    return engine if engine.name == "spark" else EngineSpec(name="spark", master="local[2]")


def run(
    proc: Processor,
    engine: EngineSpec,
    object_id: str,
    raw_path: str,
    name: str,
    *,
    first_attempt: bool = False,
) -> IngestResult:
    """Ingest one object on Spark; the DuckDB processor takes it when Spark cannot give the same result."""
    try:
        return _run(proc, spark_engine_spec(engine), object_id, raw_path, name, first_attempt=first_attempt)
    except Unsupported as e:
        log.info("object %s (%s): ingested by DuckDB, not Spark: %s", object_id, name, e)
    return proc.run(object_id, raw_path, name, first_attempt=first_attempt)


def _csv_line_regex(delim: str, quote: str) -> str:
    """A Java regular expression matching a line that is one complete, well-formed CSV record (fields unquoted
    without quotes, or quoted with doubled inner quotes)."""
    d, qc = re.escape(delim), re.escape(quote)
    field = f"(?:{qc}(?:[^{qc}]|{qc}{qc})*+{qc}|[^{qc}{d}\\r\\n]*+)"  # quoted first: possessive loops
    return f"^{field}(?:{d}{field})*+$"


def _run(
    proc: Processor, engine: EngineSpec, object_id: str, raw_path: str, name: str, *, first_attempt: bool
) -> IngestResult:
    ds = proc.ds
    token = token_for(object_id)
    stage_done = False if first_attempt else delta.committed(proc.stage_uri, token)
    if stage_done and delta.committed(proc.quarantine_uri, token):
        return proc._from_log(token)
    if stage_done:
        raise Unsupported("the stage commit landed before: the quarantine is redone on its own")
    if not is_local(engine.master):
        raise Unsupported(
            f"the Spark master {engine.master!r} is a cluster: its executors cannot read local raw copies"
        )
    if "://" in proc.stage_uri and not proc.stage_uri.startswith("file://"):
        raise Unsupported("the stage table is not on the local filesystem")
    if ds.primary_key:
        raise Unsupported("a primary key (upserts)")
    if ds.partition_by:
        raise Unsupported("a partitioned stage table")
    fmt = detect_format(raw_path, name, ds.format)
    if fmt != "csv":
        raise Unsupported(f"format {fmt}")
    if compression_of(raw_path):
        raise Unsupported("a compressed file")
    if _GLOB_CHARS.search(raw_path):
        raise Unsupported("glob characters in the raw path")
    opts = ds.csv
    if len(opts.delimiter) != 1 or not opts.quote or len(opts.quote) != 1 or opts.escape != opts.quote:
        raise Unsupported("CSV options other than a one-character delimiter and quote, with escape = quote")
    if opts.delimiter == opts.quote or "" not in opts.null_values:
        raise Unsupported("CSV null values without the empty string")

    declared_names = [c.name for c in proc.declared] if proc.declared else None
    source = open_source(raw_path, fmt, opts, declared_names)
    target = resolve_target(ds, source, proc.declared, proc.catalogued)
    if target.added or target.rescue_column:
        raise Unsupported("a schema change (new or rescued columns)")
    bad_types = [c.type for c in target.columns if normalize_type(c.type) not in SPARK_TYPES]
    if any(not t.startswith("decimal") for t in bad_types):
        raise Unsupported(f"column types {', '.join(sorted(set(bad_types)))}")
    schema = proc._stage_schema(target)
    table = delta.latest(proc.stage_uri)
    if table is not None and delta.same_schema(table, schema) is not None:
        raise Unsupported(f"the stage table's schema differs: {delta.same_schema(table, schema)}")
    if table is not None and list(table.metadata().partition_columns):
        raise Unsupported("a partitioned stage table")
    constraints: list[str] = []
    for k in ds.constraints:
        try:
            constraints.append(
                sqlglot.transpile(k.check, read="duckdb", write="spark", unsupported_level=ErrorLevel.RAISE)[0]
            )
        except SqlglotError as e:
            raise Unsupported(f"constraint {k.name!r} does not transpile to Spark SQL: {e}") from None

    try:
        spark: Any = get_session(engine.master, engine.conf).newSession()
    except TarnError as e:  # pyspark missing, no Java, another master in this process
        raise Unsupported(f"no Spark session: {e}") from None
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    from pyspark.sql import functions as F

    # Lines, blank ones skipped (as DuckDB's reader does), numbered in file order per partition.
    lines = (
        spark.read.text(raw_path)
        .where(F.col("value") != "")
        .select(F.spark_partition_id().alias("__p"), F.monotonically_increasing_id().alias("__m"), "value")
    )
    ok_line = F.col("value").rlike(_csv_line_regex(opts.delimiter, opts.quote))
    stats = (
        lines.groupBy("__p")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.when(ok_line, 0).otherwise(1)).alias("odd"),
            F.sum(F.when(F.col("value").contains("\ufffd"), 1).otherwise(0)).alias("bad_bytes"),
        )
        .collect()
    )
    if any(int(r["odd"]) for r in stats):
        raise Unsupported("a line that is not one well-formed CSV record (quoted line breaks, stray quotes)")
    if any(int(r["bad_bytes"]) for r in stats):
        raise Unsupported("invalid UTF-8 (or U+FFFD) in the file")
    counts = {int(r["__p"]): int(r["n"]) for r in stats}
    n_parts = max(counts, default=-1) + 1
    offsets: list[int] = []
    acc = 0
    for p in range(n_parts):
        offsets.append(acc)
        acc += counts.get(p, 0)
    header = 1 if opts.header else 0
    total = acc - header
    if total <= 0:
        raise Unsupported("no data rows")

    file_cols = list(source.columns)
    ddl = ", ".join(f"{sq(c)} STRING" for c in file_cols) + ", `__corrupt` STRING"
    csv_opts = {
        "sep": opts.delimiter,
        "quote": opts.quote,
        "escape": opts.escape or opts.quote,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": "__corrupt",
    }
    offset_arr = F.array(*[F.lit(o) for o in offsets]) if offsets else F.array(F.lit(0))
    row = (
        F.element_at(offset_arr, F.col("__p") + 1)
        + (F.col("__m") - F.shiftleft(F.col("__p").cast("long"), _ID_BITS))
        + 1
    )
    parsed = lines.select(row.alias("__row"), F.from_csv("value", ddl, csv_opts).alias("__f")).where(
        F.col("__row") > header
    )
    parsed.select("__row", "__f.*").createOrReplaceTempView("__tarn_ingest_raw")

    sql, checks = _typing_sql(proc, target, file_cols, constraints)
    typed = spark.sql(sql)

    # Bad rows first (few): a record DuckDB would have rejected as malformed sends the object to DuckDB.
    bad = typed.where(F.col("__bad")).drop(*[c.name for c in target.columns]).limit(MAX_BAD_ROWS + 1).toArrow()
    if bad.num_rows > MAX_BAD_ROWS:
        raise Unsupported(f"more than {MAX_BAD_ROWS} bad rows (collected on the driver; DuckDB spills them)")
    bad = bad.sort_by("__row")
    if bad.num_rows and pc.any(pc.is_valid(bad.column("__corrupt"))).as_py():
        raise Unsupported("ragged rows (DuckDB's tolerant reader quarantines them as malformed)")
    n_bad = bad.num_rows
    n_good = total - n_bad
    if n_good == 0:
        raise Unsupported("no good rows")

    out_cols = [f.name for f in schema][:-2]
    good = typed.where(~F.col("__bad")).select(
        *[F.col(sq(c)).cast(spark_type(t.type)).alias(c) for c, t in zip(out_cols, target.columns, strict=True)],
        F.lit(object_id).alias(LINEAGE[0]),
        F.col("__row").cast("long").alias(LINEAGE[1]),
    )
    opts_s3 = delta.options_for(proc.stage_uri)
    prefix = data_files.new_prefix()
    root = proc.stage_uri.removeprefix("file://").rstrip("/")
    try:
        good.write.mode("errorifexists").option("compression", "snappy").parquet(f"{root}/{prefix}")
        stats_schema = delta.arrow_schema(proc.stage_uri) if table is not None else schema
        written = data_files.describe(proc.stage_uri, prefix, stats_schema, [], opts_s3)
        if sum(f.num_records for f in written) != n_good:
            raise TarnError(f"Spark wrote {sum(f.num_records for f in written)} rows, expected {n_good}")
        version = delta.commit_files(
            proc.stage_uri,
            written,
            token=token,
            mode="append",
            schema=schema,
            metadata={"tarn.object_id": object_id, "tarn.dataset": ds.name, "tarn.writer": "spark"},
            prefix=prefix,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            if not delta.committed(proc.stage_uri, token):
                data_files.discard(proc.stage_uri, prefix, opts_s3)
        raise
    if version is None:
        info = delta.commit_info(proc.stage_uri, token)
        version = int(info["version"]) if info and info.get("version") is not None else None
    if n_bad and not delta.committed(proc.quarantine_uri, token):
        batch = bad.combine_chunks().to_batches()[0] if n_bad else None
        assert batch is not None
        rows = proc._quarantine_rows(
            batch, pa.array([True] * n_bad), batch.column("__row").cast(pa.int64()), checks, object_id, name
        )
        delta.append(proc.quarantine_uri, rows, token=token)
    return IngestResult("csv", total, n_good, n_bad, version, False, ())


def _typing_sql(proc: Processor, target: Any, file_cols: list[str], constraints: list[str]) -> tuple[str, list[Check]]:
    """The Spark twin of ``Processor._sql`` for text columns: typed columns, the same check flags, ``__bad``
    and the raw ``__record`` (JSON) of bad rows."""
    present = set(file_cols)
    pk = set(proc.ds.primary_key)
    inner: list[str] = []
    typed: list[str] = []
    checks: list[Check] = []
    for i, c in enumerate(target.columns):
        raw = sq(f"__r{i}")
        if c.name in present:
            v = sq(c.name)
            if c.trim:
                v = f"trim({v})"
            nulls = tuple(x for x in (*proc.ds.csv.null_values, *c.null_values) if x != "")
            if nulls:
                v = f"CASE WHEN {v} IN ({', '.join(slit(x) for x in nulls)}) THEN NULL ELSE {v} END"
        else:
            v = "CAST(NULL AS STRING)"
        inner.append(f"{v} AS {raw}")
        conv = convert(raw, TypedField(c.name, c.type), from_text=True)
        typed.append(f"{conv} AS {sq(c.name)}")
        column_checks(i, c, raw, conv, pk=pk, present=present, typed=typed, checks=checks)
    passthrough = [sq(f"__r{i}") for i in range(len(target.columns))]
    outer = [f"NOT coalesce(({k}), false) AS __k{j}" for j, k in enumerate(constraints)]
    checks += [Check(f"__k{j}", None, "constraint", k.name) for j, k in enumerate(proc.ds.constraints)]
    flags = [c.flag for c in checks]
    bad = " OR ".join([*flags, "__corrupt IS NOT NULL"])
    record = (
        "to_json(named_struct("
        + ", ".join(f"{slit(c.name)}, {p}" for c, p in zip(target.columns, passthrough, strict=True))
        + "))"
    )
    sql = (
        f"SELECT *, ({bad}) AS __bad, CASE WHEN {bad} THEN {record} END AS __record FROM ("
        f"SELECT *{', ' if outer else ''}{', '.join(outer)} FROM ("
        f"SELECT {', '.join([*typed, *passthrough, '__row', '__corrupt'])} FROM ("
        f"SELECT {', '.join([*inner, '__row', '__corrupt'])} FROM __tarn_ingest_raw)))"
    )
    return sql, checks
