"""Apache Spark as the pipeline engine (see :class:`tarn.engines.base.Engine`): the scale-out twin of
:mod:`tarn.engines.duckdb_pipeline`, giving the same results for the same pipeline.

* One SparkSession per process (:mod:`tarn.engines.spark_session`); each engine (one run) works in its own
  ``newSession()``, so temporary views of concurrent runs never meet.
* Lake tables ``zone.table`` are read from the Parquet files of the Delta version the run pins
  (``DeltaTable.file_uris()``), with the Delta schema passed to the reader: columns missing in older files read as
  NULL, partition values come from the paths. No delta-spark jars are needed. Spark cannot name a temporary view
  ``zone.table``, so such names are views ``__tarn_zone__table`` and the SQL is rewritten (sqlglot) to read them.
* Files are read by Spark with DuckDB's sniffed schema (names, order and types), so both engines see the same
  relation; globs are expanded by Tarn (DuckDB's ``**`` semantics).
* Results go back as Arrow: small ones with ``toArrow()``, streams (loads) through Parquet files Spark writes to
  the run's folder, read back batch by batch — Tarn's delta-rs code stays the only writer of the Delta log.
* Bulk appends and overwrites (:func:`tarn.pipelines.loads.write_table_files`): Spark writes the result's Parquet
  files straight into the table's folder (``tarn-spark-<id>/``, ``partitionBy`` folders) and Tarn commits
  exactly those files with add actions (:func:`tarn.tables.delta.commit_files`) — still the only log writer.
* Typing is :mod:`tarn.engines.spark_typing` (DuckDB's cast semantics, the same ``_errors``).
"""

from __future__ import annotations

import glob
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import sqlglot
from deltalake import DeltaTable
from sqlglot import exp

from tarn.config.types import from_duckdb_type
from tarn.engines import spark_typing
from tarn.engines.base import FileRead, TypedField, WriteFormat
from tarn.engines.spark_session import get_session, import_pyspark, is_local
from tarn.engines.spark_typing import slit, sq
from tarn.errors import QueryError
from tarn.ingest.typing import lit, q
from tarn.storage.s3 import s3a_uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_UNSUPPORTED_READER_FEATURES = ("deletionVectors", "columnMapping")


def view_name(name: str) -> str:
    """The Spark temporary view holding ``name`` (``zone.table`` → ``__tarn_zone__table``)."""
    if "." in name:
        zone, table = name.split(".", 1)
        return f"__tarn_{zone}__{table}"
    return name


def qualified(name: str) -> str:
    """``zone.table`` or ``view`` → a quoted Spark SQL name (rewritten to its view when run)."""
    return ".".join(sq(p) for p in name.split(".", 1))


class SparkEngine:
    """The scale-out engine (see the module docstring)."""

    name: ClassVar[str] = "spark"
    dialect: ClassVar[str] = "spark"
    supports_persist: ClassVar[bool] = True

    def __init__(
        self, session: SparkSession | None = None, *, master: str = "local[*]", conf: dict[str, str] | None = None
    ) -> None:
        base = session if session is not None else get_session(master, conf)
        self.spark: Any = base.newSession()
        self.spark.conf.set("spark.sql.session.timeZone", "UTC")
        # Tarn substitutes ${param}s itself; Spark's own substitution would blank what is left ('${x}' → '')
        self.spark.conf.set("spark.sql.variable.substitute", "false")
        self._local = is_local(str(base.conf.get("spark.master", "local")))
        self._dir = Path(tempfile.mkdtemp(prefix="tarn-spark-run-"))
        self._dotted: set[str] = set()  # zone.table names registered (rewritten in SQL)
        self._cached: list[Any] = []  # persisted DataFrames (unpersisted on close)
        self._types = import_pyspark().types

    # ------------------------------------------------------------------ SQL
    def _rewrite(self, sql: str) -> str:
        """Point ``zone.table`` references at their views."""
        if not self._dotted or not any(n.split(".")[1] in sql for n in self._dotted):
            return sql
        try:
            stmts = sqlglot.parse(sql, read="spark")
        except sqlglot.errors.ParseError:
            return sql  # Spark reports the error
        out: list[str] = []
        for stmt in stmts:
            if stmt is None:
                continue
            for t in list(stmt.find_all(exp.Table)):
                key = f"{t.db}.{t.name}" if t.db else ""
                if key in self._dotted and not t.catalog:
                    alias = t.alias or t.name
                    new = exp.Table(
                        this=exp.to_identifier(view_name(key), quoted=True),
                        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
                    )
                    t.replace(new)
            out.append(stmt.sql(dialect="spark"))
        return "; ".join(out)

    def _df(self, sql: str) -> DataFrame:
        try:
            df: DataFrame = self.spark.sql(self._rewrite(sql))
            return df
        except Exception as e:
            raise _query_error(e) from None

    def _register_df(self, name: str, df: DataFrame) -> None:
        if "." in name:
            self._dotted.add(name)
        df.createOrReplaceTempView(view_name(name))

    # ------------------------------------------------------------- relations
    def register_dataset(self, name: str, data: pads.Dataset | pa.Table) -> None:
        table = data if isinstance(data, pa.Table) else data.to_table()
        self._register_df(name, self._from_arrow(table))

    def register_delta(self, name: str, table: DeltaTable) -> None:
        """A view over one version of a Delta table, read from its Parquet files."""
        protocol = table.protocol()
        features = [f for f in (protocol.reader_features or []) if f in _UNSUPPORTED_READER_FEATURES]
        if features:
            raise QueryError(
                f"the Spark engine reads Delta tables through their Parquet files; {table.table_uri} uses "
                f"{', '.join(features)}, which that cannot honour",
                hint="run this pipeline on DuckDB (engine: duckdb), or rewrite the table without those features",
            )
        arrow_schema = pa.schema(table.schema().to_arrow())
        schema = self._spark_schema(arrow_schema)
        files = table.file_uris()
        if not files:
            df = self.spark.createDataFrame([], schema)
        else:
            cols = [sq(f.name) for f in arrow_schema]
            parts = list(table.metadata().partition_columns)
            if not parts:
                df = self.spark.read.schema(schema).parquet(*files).select(*cols)
            else:
                # Partition values come from the Hive-style folders. Files in one folder tree share a root —
                # the table's (delta-rs) or a bulk write's own prefix (``tarn-spark-<id>/``) — and Spark's
                # partition discovery needs one root per read: one read per root, unioned.
                df = None
                for base, group in _by_partition_root(files, len(parts)).items():
                    one = self.spark.read.schema(schema).option("basePath", base).parquet(*group).select(*cols)
                    df = one if df is None else df.unionByName(one)
        self._register_df(name, df)

    def register_files(self, name: str, read: FileRead) -> None:
        paths = _expand(read.paths)
        if read.format == "parquet":
            df = self.spark.read.parquet(*paths)
        elif read.format == "text":
            df = self.spark.read.text(paths, wholetext=read.multi_line)
            if not read.multi_line:
                df = df.selectExpr("value")
        elif read.format in ("jsonl", "json"):
            df = self._read_json(paths, read)
        else:
            df = self._read_csv(paths, read)
        self._register_df(name, df)

    def _sniff(self, sql: str) -> list[tuple[str, str]]:
        """(name, DuckDB type) of the columns DuckDB finds in files (the same relation on both engines)."""
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone='UTC'")
            return [(str(r[0]), str(r[1])) for r in con.sql(f"DESCRIBE {sql}").fetchall()]
        except duckdb.Error as e:
            raise QueryError(str(e).strip().splitlines()[0]) from None
        finally:
            con.close()

    def _read_csv(self, paths: list[str], read: FileRead) -> DataFrame:
        opts = [f"header={'true' if read.header else 'false'}", f"delim={lit(read.delimiter)}"]
        opts.append(f"quote={lit(read.quote or '')}")
        if read.escape is not None:
            opts.append(f"escape={lit(read.escape)}")
        if read.all_varchar:
            opts.append("all_varchar=true")
        if read.null_values:
            opts.append("nullstr=[" + ", ".join(lit(v) for v in read.null_values) + "]")
        src = "[" + ", ".join(lit(p) for p in paths) + "]"
        cols = self._sniff(f"SELECT * FROM read_csv({src}, {', '.join(opts)})")
        names = [c for c, _ in cols] if read.header else list(read.columns or [f"_c{i}" for i in range(len(cols))])
        if len(names) != len(cols):
            raise QueryError(f"{len(names)} column names given for files with {len(cols)} columns ({read.paths[0]})")
        T = self._types
        schema = T.StructType([T.StructField(f"__c{i}", T.StringType()) for i in range(len(cols))])
        reader = (
            self.spark.read.schema(schema)
            .option("header", read.header)
            .option("sep", read.delimiter)
            .option("quote", read.quote or "\u0000")
            .option("multiLine", True)
            .option("mode", "FAILFAST")
        )
        if read.escape is not None:
            reader = reader.option("escape", read.escape)
        df = reader.csv(paths)
        nulls = ("", *read.null_values) if read.null_values else ("",)
        exprs = []
        for i, (n, (_c, duck_type)) in enumerate(zip(names, cols, strict=True)):
            raw = sq(f"__c{i}")
            value = f"CASE WHEN {raw} IN ({', '.join(slit(v) for v in nulls)}) THEN NULL ELSE {raw} END"
            exprs.append(f"{self._cast_sniffed(value, duck_type)} AS {sq(n)}")
        out: DataFrame = df.selectExpr(*exprs)
        return out

    def _cast_sniffed(self, value: str, duck_type: str) -> str:
        if duck_type == "VARCHAR":
            return value
        tarn_type = from_duckdb_type(duck_type)
        if tarn_type == "time":
            return value  # Spark has no TIME type: kept as text
        field = TypedField(name="_", type=tarn_type)
        converted = spark_typing.convert(value, field, from_text=True)
        if duck_type == "TIMESTAMP":  # DuckDB sniffs a naive timestamp
            return f"CAST({converted} AS TIMESTAMP_NTZ)"
        return converted

    def _read_json(self, paths: list[str], read: FileRead) -> DataFrame:
        fmt = "newline_delimited" if read.format == "jsonl" and not read.multi_line else "auto"
        src = "[" + ", ".join(lit(p) for p in paths) + "]"
        cols = self._sniff(f"SELECT * FROM read_json({src}, format={lit(fmt)})")
        # DuckDB's types, expressed for Spark through a DuckDB-typed empty Arrow table
        con = duckdb.connect()
        try:
            empty = con.sql(f"SELECT * FROM read_json({src}, format={lit(fmt)}) LIMIT 0").to_arrow_table()
        finally:
            con.close()
        schema = self._spark_schema(empty.schema)
        reader = self.spark.read.schema(schema).option("mode", "FAILFAST")
        if fmt == "auto":
            reader = reader.option("multiLine", True)
        out: DataFrame = reader.json(paths).select(*[sq(c) for c, _ in cols])
        return out

    def create_view(self, name: str, sql: str, *, persist: bool = False) -> None:
        df = self._df(sql)
        if persist:
            try:
                df = df.localCheckpoint(eager=True)
            except Exception as e:
                raise _query_error(e) from None
            self._cached.append(df)
        self._register_df(name, df)

    def exists(self, name: str) -> bool:
        return bool(self.spark.catalog.tableExists(view_name(name)))

    # --------------------------------------------------------------- queries
    def query(self, sql: str) -> pa.Table:
        df = self._df(sql)
        try:
            table: pa.Table = df.toArrow()
        except Exception as e:
            raise _query_error(e) from None
        return _normalize(table)

    def stream(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        df = self._df(sql)
        schema = self._arrow_schema(df)
        if not self._local:  # a cluster cannot write to this machine's folder: stream rows to the driver
            return _row_stream(df, schema, batch_rows)
        out = self._dir / f"stream-{uuid.uuid4().hex}"
        try:
            df.write.parquet(str(out))
        except Exception as e:
            raise _query_error(e) from None
        files = sorted(str(p) for p in out.glob("*.parquet"))
        if not files:
            return pa.RecordBatchReader.from_batches(schema, iter(()))
        ds = pads.dataset(files, format="parquet")

        def batches() -> Iterator[pa.RecordBatch]:
            for b in ds.to_batches(batch_size=batch_rows):
                yield _cast_batch(b, schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def execute(self, sql: str) -> None:
        df = self._df(sql)
        try:
            df.collect()
        except Exception as e:
            raise _query_error(e) from None

    def schema(self, sql: str) -> pa.Schema:
        return self._arrow_schema(self._df(sql))

    def count(self, relation: str) -> int:
        return int(self.query(f"SELECT count(*) AS n FROM {relation}").column(0)[0].as_py())

    def columns(self, relation: str) -> list[tuple[str, str]]:
        """(name, Spark SQL type) of a relation's columns."""
        df = self._df(f"SELECT * FROM {relation}")
        return [(f.name, f.dataType.simpleString().upper()) for f in df.schema.fields]

    def write_files(self, sql: str, path: str, fmt: WriteFormat) -> int:
        """One file, written by DuckDB from the Arrow stream (byte for byte what the DuckDB engine writes)."""
        opts = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[fmt]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        reader = self.stream(sql, 131072)
        counted = _Counter(reader)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone='UTC'")
            con.register("__result", counted.reader())
            con.execute(f"COPY (SELECT * FROM __result) TO {lit(path)} ({opts})")
        except duckdb.Error as e:
            raise QueryError(str(e).strip().splitlines()[0]) from None
        finally:
            con.close()
        return counted.rows

    # ------------------------------------------------------- table files (bulk loads)
    def can_write_table_files(self, table_uri: str) -> bool:
        """Local masters write into local tables; a cluster only into an object store it is configured for
        (``s3://`` through s3a): its executors cannot see this machine's folders."""
        if "://" not in table_uri or table_uri.startswith("file://"):
            return self._local
        if table_uri.startswith("s3://"):
            try:
                return bool(self.spark.conf.get("spark.hadoop.fs.s3a.impl", None))
            except Exception:  # Spark Connect may refuse to show a setting: then do not rely on it
                return False
        return False

    def write_table_files(self, sql: str, table_uri: str, prefix: str, partition_by: Sequence[str]) -> None:
        df = self._df(sql)
        location = f"{s3a_uri(table_uri.removeprefix('file://')).rstrip('/')}/{prefix}"
        writer = df.write.mode("errorifexists").option("compression", "snappy")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        try:
            writer.parquet(location)
        except Exception as e:
            raise _query_error(e) from None

    # ---------------------------------------------------------------- typing
    def typing_sql(self, relation: str, fields: list[TypedField], *, by_position: bool) -> str:
        cols = self.columns(relation)
        if by_position:
            if len(cols) < len(fields):
                raise QueryError(
                    f"the schema has {len(fields)} fields but the input has only {len(cols)} columns "
                    f"({', '.join(c for c, _ in cols)}); fields are matched by position"
                )
            source = cols[: len(fields)]
        else:
            by_name = {c.lower(): (c, t) for c, t in cols}
            missing = [f.name for f in fields if f.name.lower() not in by_name]
            if missing:
                raise QueryError(
                    f"the input has no column(s) {', '.join(missing)} (columns: {', '.join(c for c, _ in cols)})"
                )
            source = [by_name[f.name.lower()] for f in fields]
        return spark_typing.typing_sql(relation, fields, source)

    def close(self) -> None:
        for df in self._cached:
            try:
                df.unpersist()
            except Exception:  # the session may be gone already; nothing else to free
                continue
        self._cached.clear()
        try:
            for v in self.spark.catalog.listTables():
                if v.isTemporary:
                    self.spark.catalog.dropTempView(v.name)
        except Exception:  # best effort: the views die with the session anyway
            pass
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---------------------------------------------------------------- arrow
    def _spark_schema(self, schema: pa.Schema) -> Any:
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(schema, prefer_timestamp_ntz=True)

    def _arrow_schema(self, df: DataFrame) -> pa.Schema:
        from pyspark.sql.pandas.types import to_arrow_schema

        return to_arrow_schema(df.schema, timestamp_utc=True)

    def _from_arrow(self, table: pa.Table) -> DataFrame:
        df: DataFrame = self.spark.createDataFrame(table)
        return df


class _Counter:
    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.rows = 0
        self._reader = reader

    def reader(self) -> pa.RecordBatchReader:
        def gen() -> Iterator[pa.RecordBatch]:
            for b in self._reader:
                self.rows += b.num_rows
                yield b

        return pa.RecordBatchReader.from_batches(self._reader.schema, gen())


def _by_partition_root(files: list[str], levels: int) -> dict[str, list[str]]:
    """Files grouped by the folder above their ``levels`` partition folders."""
    out: dict[str, list[str]] = {}
    for f in files:
        base = f.rstrip("/").rsplit("/", levels + 1)[0]
        out.setdefault(base, []).append(f)
    return out


def _expand(paths: tuple[str, ...]) -> list[str]:
    """Local globs expanded as DuckDB does (``**`` recursive, sorted); URIs are left to Spark."""
    out: list[str] = []
    for p in paths:
        if "://" in p or not any(c in p for c in "*?["):
            out.append(p)
            continue
        found = sorted(f for f in glob.glob(p, recursive=True) if Path(f).is_file())
        if not found:
            raise QueryError(f"no files found that match the pattern {p!r}")
        out.extend(found)
    return out


def _cast_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    return pa.RecordBatch.from_arrays(
        [batch.column(i).cast(f.type) for i, f in enumerate(schema)],
        schema=schema,
    )


def _normalize(table: pa.Table) -> pa.Table:
    """Spark's Arrow results with the types the Parquet path gives (large strings as strings)."""
    fields = []
    changed = False
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t):
            t, changed = pa.string(), True
        elif pa.types.is_large_binary(t):
            t, changed = pa.binary(), True
        fields.append(pa.field(f.name, t, f.nullable))
    return table.cast(pa.schema(fields)) if changed else table


def _row_stream(df: DataFrame, schema: pa.Schema, batch_rows: int) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        rows: list[dict[str, Any]] = []
        for row in df.toLocalIterator():
            rows.append(row.asDict(recursive=True))
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(rows, schema=schema)
                rows = []
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _query_error(e: Exception) -> QueryError:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return QueryError(first)


__all__ = ["SparkEngine", "q", "qualified", "view_name"]
