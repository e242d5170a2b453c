"""The Engine protocol: what the pipeline runner needs from a SQL engine (DuckDB embedded, Spark scale-out).

An engine holds the relations of one run: lake tables registered as ``zone.table``, files and stage outputs as
views. SQL handed to it is already in its own ``dialect``: a pipeline's SQL is transpiled from the pipeline's
dialect, Tarn's own SQL from DuckDB's (:mod:`tarn.engines.dialects`). Results come
back as Arrow — a table for small results, a record-batch stream for loads (bounded memory).

Capabilities are class constants, as in sqlmesh's engine adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

FileFormat = Literal["csv", "jsonl", "json", "parquet", "text"]
WriteFormat = Literal["parquet", "csv", "jsonl"]


@dataclass(frozen=True)
class FileRead:
    """Files to read as one relation (globs allowed)."""

    paths: tuple[str, ...]
    format: FileFormat
    delimiter: str = ","
    header: bool = True
    quote: str | None = '"'
    escape: str | None = None
    all_varchar: bool = False
    columns: tuple[str, ...] | None = None  # names for header-less CSV; default _c0, _c1, … (Spark's)
    null_values: tuple[str, ...] = ()
    multi_line: bool = False  # json: one document per file; text: one value per file


@dataclass(frozen=True)
class TypedField:
    """One field of a typing schema (a Tarn column or an Arc field, normalized)."""

    name: str
    type: str  # a Tarn type name: string, integer, long, double, decimal(p,s), boolean, date, timestamp, …
    nullable: bool = True
    trim: bool = False
    null_values: tuple[str, ...] = ()
    null_replacement: str | None = None
    true_values: tuple[str, ...] | None = None
    false_values: tuple[str, ...] | None = None
    formats: tuple[str, ...] = ()  # strptime formats (converted from Java patterns) for date/timestamp/time
    timezone: str | None = None
    encoding: str | None = None  # binary: base64 | hexadecimal
    extras: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """A SQL engine for one pipeline run."""

    name: ClassVar[str]
    dialect: ClassVar[str]  # sqlglot dialect of the SQL it runs
    supports_persist: ClassVar[bool]

    def register_dataset(self, name: str, data: pads.Dataset | pa.Table) -> None:
        """Make ``name`` (``zone.table`` or a bare view name) read ``data``; replaces an earlier registration."""
        ...

    def register_delta(self, name: str, table: DeltaTable) -> None:
        """Make ``name`` read the version of the Delta table ``table`` is loaded at."""
        ...

    def register_files(self, name: str, read: FileRead) -> None:
        """A view ``name`` over files."""
        ...

    def create_view(self, name: str, sql: str, *, persist: bool = False) -> None:
        """A view ``name`` over a SELECT (materialized once with ``persist``)."""
        ...

    def exists(self, name: str) -> bool: ...

    def query(self, sql: str) -> pa.Table:
        """A (small) result, whole."""
        ...

    def stream(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        """A result as a stream of record batches."""
        ...

    def execute(self, sql: str) -> None:
        """A statement without a result."""
        ...

    def schema(self, sql: str) -> pa.Schema:
        """The Arrow schema of a query's result, without running it."""
        ...

    def count(self, relation: str) -> int: ...

    def typing_sql(self, relation: str, fields: list[TypedField], *, by_position: bool) -> str:
        """A SELECT over ``relation`` giving each field typed, plus ``_errors`` (list of {field, message})."""
        ...

    def write_files(self, sql: str, path: str, fmt: WriteFormat) -> int:
        """Write a query's result to one file; returns the row count."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TableFileWriter(Protocol):
    """An engine that writes a result's Parquet files into a Delta table's folder itself (Spark), for Tarn to
    commit with add actions (:func:`tarn.tables.delta.commit_files`) instead of streaming the rows through
    Tarn's process."""

    def can_write_table_files(self, table_uri: str) -> bool:
        """Can this engine's workers write into ``table_uri`` (and Tarn read the footers back)?"""
        ...

    def write_table_files(self, sql: str, table_uri: str, prefix: str, partition_by: Sequence[str]) -> None:
        """Write the result of ``sql`` as Parquet under ``<table_uri>/<prefix>``, in Hive-style partition folders
        for ``partition_by`` (their columns left out of the files), microsecond timestamps."""
        ...
