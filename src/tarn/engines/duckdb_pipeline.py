"""DuckDB as the pipeline engine: one database file per run (in a temporary folder, so persisted views and
spills stay on disk, not in memory), lake tables registered as ``zone.table`` views over delta-rs datasets,
files read with DuckDB's own readers, typing done by strict casts (see :mod:`tarn.ingest.typing`).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from tarn.config.types import duckdb_type, normalize_type
from tarn.engines.base import FileRead, TypedField, WriteFormat
from tarn.errors import QueryError
from tarn.ingest.typing import cast_expr, lit, q
from tarn.tables import delta

_ERRORS_TYPE = "STRUCT(field VARCHAR, message VARCHAR)[]"


def qualified(name: str) -> str:
    """``zone.table`` or ``view`` → a quoted DuckDB name."""
    return ".".join(q(p) for p in name.split(".", 1))


class DuckDBEngine:
    """The embedded engine (see :class:`tarn.engines.base.Engine`)."""

    name: ClassVar[str] = "duckdb"
    dialect: ClassVar[str] = "duckdb"
    supports_persist: ClassVar[bool] = True

    def __init__(self, *, threads: int | None = None, memory_limit: str | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="tarn-run-"))
        self.con = duckdb.connect(str(self._dir / "run.duckdb"))
        self.con.execute("SET TimeZone='UTC'")
        self.con.execute("SET autoinstall_known_extensions=false")
        self.con.execute(f"SET temp_directory={lit(str(self._dir / 'spill'))}")
        if threads:
            self.con.execute(f"SET threads={int(threads)}")
        if memory_limit:
            self.con.execute(f"SET memory_limit={lit(memory_limit)}")
        self._schemas: set[str] = set()
        self._registered: dict[str, object] = {}  # keep registered Arrow objects alive
        self._n = 0

    # ------------------------------------------------------------------ relations
    def _alias(self) -> str:
        self._n += 1
        return f"__tarn_src_{self._n}"

    def _schema_for(self, name: str) -> None:
        if "." in name:
            schema = name.split(".", 1)[0]
            if schema not in self._schemas:
                self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
                self._schemas.add(schema)

    def _drop(self, name: str) -> None:
        target = qualified(name)
        for kind in ("VIEW", "TABLE"):
            try:
                self.con.execute(f"DROP {kind} IF EXISTS {target}")
            except duckdb.CatalogException:
                continue  # it exists as the other kind

    def register_dataset(self, name: str, data: pads.Dataset | pa.Table) -> None:
        alias = self._alias()
        self.con.register(alias, data)
        self._registered[alias] = data
        self._schema_for(name)
        self._drop(name)
        self.con.execute(f"CREATE VIEW {qualified(name)} AS SELECT * FROM {q(alias)}")

    def register_delta(self, name: str, table: DeltaTable) -> None:
        self.register_dataset(name, delta.query_dataset(table))

    def register_files(self, name: str, read: FileRead) -> None:
        paths = "[" + ", ".join(lit(p) for p in read.paths) + "]"
        if read.format == "csv":
            opts = [f"header={'true' if read.header else 'false'}", f"delim={lit(read.delimiter)}"]
            opts.append(f"quote={lit(read.quote or '')}")
            if read.escape is not None:
                opts.append(f"escape={lit(read.escape)}")
            if read.all_varchar:
                opts.append("all_varchar=true")
            if read.null_values:
                opts.append("nullstr=[" + ", ".join(lit(v) for v in read.null_values) + "]")
            src = f"read_csv({paths}, {', '.join(opts)})"
            if not read.header:
                cols = self.con.sql(f"SELECT * FROM {src} LIMIT 0").columns
                names = list(read.columns) if read.columns else [f"_c{i}" for i in range(len(cols))]
                if len(names) != len(cols):
                    raise QueryError(
                        f"{len(names)} column names given for files with {len(cols)} columns ({read.paths[0]})"
                    )
                src = f"(SELECT {', '.join(f'{q(c)} AS {q(n)}' for c, n in zip(cols, names, strict=True))} FROM {src})"
        elif read.format in ("jsonl", "json"):
            fmt = "newline_delimited" if read.format == "jsonl" and not read.multi_line else "auto"
            src = f"read_json({paths}, format={lit(fmt)})"
        elif read.format == "parquet":
            src = f"read_parquet({paths})"
        else:  # text: one row per line (or per file with multi_line), one column 'value'
            if read.multi_line:
                src = f"(SELECT content AS value FROM read_text({paths}))"
            else:
                src = (
                    "(SELECT unnest(string_split(regexp_replace(content, '\\r?\\n$', ''), chr(10))) AS value "
                    f"FROM read_text({paths}))"
                )
        self.create_view(name, f"SELECT * FROM {src}")

    def create_view(self, name: str, sql: str, *, persist: bool = False) -> None:
        self._schema_for(name)
        self._drop(name)
        kind = "TABLE" if persist else "VIEW"
        self._run(f"CREATE {kind} {qualified(name)} AS {sql}")

    def exists(self, name: str) -> bool:
        parts = name.split(".", 1)
        schema, table = (parts[0], parts[1]) if len(parts) == 2 else ("main", parts[0])
        rows = self.con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ? AND NOT internal",
            [schema, table],
        ).fetchall()
        if rows[0][0]:
            return True
        rows = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [schema, table]
        ).fetchall()
        return bool(rows[0][0])

    # ------------------------------------------------------------------- queries
    def _run(self, sql: str) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.con.execute(sql)
        except duckdb.Error as e:
            raise QueryError(_first_line(e)) from None

    def query(self, sql: str) -> pa.Table:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rel = self.con.sql(sql)
                if rel is None:
                    return pa.table({})
                return rel.to_arrow_table()
        except duckdb.Error as e:
            raise QueryError(_first_line(e)) from None

    def stream(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        try:
            rel = self.con.sql(sql)
            if rel is None:
                raise QueryError("the statement returns no rows")
            reader: pa.RecordBatchReader = rel.to_arrow_reader(batch_rows)
            return _GuardedReader.wrap(reader)
        except duckdb.Error as e:
            raise QueryError(_first_line(e)) from None

    def execute(self, sql: str) -> None:
        self._run(sql)

    def schema(self, sql: str) -> pa.Schema:
        try:
            rel = self.con.sql(f"SELECT * FROM ({sql}) LIMIT 0")
            return rel.to_arrow_table().schema
        except duckdb.Error as e:
            raise QueryError(_first_line(e)) from None

    def count(self, relation: str) -> int:
        return int(self.query(f"SELECT count(*) AS n FROM {relation}").column(0)[0].as_py())

    def columns(self, relation: str) -> list[tuple[str, str]]:
        """(name, DuckDB type) of a relation's columns."""
        rows = self.con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def write_files(self, sql: str, path: str, fmt: WriteFormat) -> int:
        opts = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[fmt]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        n = self.query(f"SELECT count(*) FROM ({sql})").column(0)[0].as_py()
        self._run(f"COPY ({sql}) TO {lit(path)} ({opts})")
        return int(n)

    # -------------------------------------------------------------------- typing
    def typing_sql(self, relation: str, fields: list[TypedField], *, by_position: bool) -> str:
        cols = self.columns(relation)
        if by_position:
            if len(cols) < len(fields):
                raise QueryError(
                    f"the schema has {len(fields)} fields but the input has only {len(cols)} columns "
                    f"({', '.join(c for c, _ in cols)}); fields are matched by position"
                )
            source = [(c, t) for c, t in cols[: len(fields)]]
        else:
            by_name = dict(cols)
            missing = [f.name for f in fields if f.name not in by_name]
            if missing:
                raise QueryError(
                    f"the input has no column(s) {', '.join(missing)} (columns: {', '.join(c for c, _ in cols)})"
                )
            source = [(f.name, by_name[f.name]) for f in fields]
        inner: list[str] = []
        typed: list[str] = []
        errors: list[str] = []
        for i, (f, (col, col_type)) in enumerate(zip(fields, source, strict=True)):
            raw = f"__raw{i}"
            is_text = col_type.upper() == "VARCHAR"
            v = q(col)
            if is_text:
                if f.trim:
                    v = f"trim({v})"
                if f.null_values:
                    v = f"CASE WHEN {v} IN ({', '.join(lit(x) for x in f.null_values)}) THEN NULL ELSE {v} END"
            inner.append(f"{v} AS {q(raw)}")
            conv = _convert(q(raw), f, from_text=is_text)
            value = conv
            if f.null_replacement is not None:
                repl = _convert(lit(f.null_replacement), f, from_text=True)
                value = f"coalesce({conv}, {repl})"
            typed.append(f"{value} AS {q(f.name)}")
            label = _describe(f)
            msg = f"'unable to convert ''' || CAST({q(raw)} AS VARCHAR) || ''' to {label}'"
            if normalize_type(f.type) not in ("string", "json") or not is_text:  # text to text always converts
                errors.append(
                    f"CASE WHEN {q(raw)} IS NOT NULL AND ({conv}) IS NULL "
                    f"THEN {{'field': {lit(f.name)}, 'message': {msg}}} END"
                )
            if not f.nullable and f.null_replacement is None:
                errors.append(
                    f"CASE WHEN {q(raw)} IS NULL THEN {{'field': {lit(f.name)}, "
                    f"'message': 'non-nullable field is null'}} END"
                )
        err = (
            f"CAST(list_filter([{', '.join(errors)}], lambda x: x IS NOT NULL) AS {_ERRORS_TYPE})"
            if errors
            else f"CAST([] AS {_ERRORS_TYPE})"
        )
        return f"SELECT {', '.join([*typed, f'{err} AS _errors'])} FROM (SELECT {', '.join(inner)} FROM {relation})"

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._registered.clear()
            shutil.rmtree(self._dir, ignore_errors=True)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _describe(f: TypedField) -> str:
    t = f.type
    if f.formats:
        t += " using formats " + ", ".join(f.formats)
    return t.replace("'", "''")


def _convert(value: str, f: TypedField, *, from_text: bool) -> str:
    t = normalize_type(f.type)
    if not from_text:
        return cast_expr(value, t, from_text=False)
    if t == "boolean" and (f.true_values is not None or f.false_values is not None):
        trues = ", ".join(lit(x) for x in (f.true_values or ("true",)))
        falses = ", ".join(lit(x) for x in (f.false_values or ("false",)))
        return f"CASE WHEN {value} IN ({trues}) THEN true WHEN {value} IN ({falses}) THEN false END"
    if t in ("date", "timestamp", "time") and f.formats:
        fmts = "[" + ", ".join(lit(x) for x in f.formats) + "]"
        parsed = f"try_strptime({value}, {fmts})"
        if t == "date":
            return f"CAST({parsed} AS DATE)"
        if t == "time":
            return f"CAST({parsed} AS TIME)"
        if any("%z" in x or "%Z" in x for x in f.formats):
            return f"CAST({parsed} AS TIMESTAMPTZ)"
        return f"timezone({lit(f.timezone or 'UTC')}, CAST({parsed} AS TIMESTAMP))"
    if t == "timestamp" and f.timezone and f.timezone != "UTC":
        return f"timezone({lit(f.timezone)}, TRY_CAST({value} AS TIMESTAMP))"
    if t == "binary":
        if f.encoding == "base64":
            return f"TRY(from_base64({value}))"
        if f.encoding == "hexadecimal":
            return f"TRY(unhex({value}))"
        return f"CAST({value} AS BLOB)"
    if t in ("double", "float") or t.startswith("decimal"):
        return f"TRY_CAST({value} AS {duckdb_type(t)})"
    return cast_expr(value, t, from_text=True)


class _GuardedReader:
    """Turn DuckDB errors raised while a stream is read into QueryError (a TarnError)."""

    @staticmethod
    def wrap(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        schema = reader.schema

        def batches() -> Iterator[pa.RecordBatch]:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except duckdb.Error as e:
                    raise QueryError(_first_line(e)) from None
                yield batch

        return pa.RecordBatchReader.from_batches(schema, batches())
