"""Resolving the target schema of one landed file: declared, catalogued or inferred columns, and
the dataset's evolution policy (evolve | freeze | rescue)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tarn.config.spec import ColumnSpec, DatasetSpec
from tarn.config.types import from_duckdb_type
from tarn.engines.duckdb import connect
from tarn.errors import ConfigError, RejectedError
from tarn.ingest.sources import ParquetSource, Source
from tarn.ingest.typing import infer_text_types

LINEAGE = ("_tarn_object_id", "_tarn_row")
RESCUED = "_rescued"
INFER_SAMPLE_ROWS = 20000


@dataclass(frozen=True)
class Target:
    columns: tuple[ColumnSpec, ...]  # the dataset's columns, in table order
    rescued: tuple[str, ...]  # file columns that go into _rescued (rescue policy)
    missing: tuple[str, ...]  # target columns the file lacks (NULL)
    added: tuple[str, ...]  # columns this file adds (evolve policy)
    rescue_column: bool


def catalog_to_columns(cols: list[dict[str, Any]]) -> tuple[ColumnSpec, ...]:
    return tuple(
        ColumnSpec(name=c["name"], type=c["type"], nullable=bool(c.get("nullable", True)))
        for c in cols
        if c["name"] not in LINEAGE and c["name"] != RESCUED
    )


def infer_columns(source: Source, names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    if isinstance(source, ParquetSource):
        return {n: from_duckdb_type(source.types[n]) for n in names}
    con = connect()
    try:
        source.tolerant = source.fmt in ("csv", "jsonl")  # a malformed row must not stop inference
        try:
            rel = source.relation(con)
            sample = f"SELECT {', '.join(_q(n) for n in names)} FROM {rel} LIMIT {INFER_SAMPLE_ROWS}"
            return infer_text_types(con, sample, names)
        finally:
            source.tolerant = False
            source.rejects.clear()
    finally:
        con.close()


def _q(n: str) -> str:
    return '"' + n.replace('"', '""') + '"'


def resolve_target(
    ds: DatasetSpec,
    source: Source,
    declared: tuple[ColumnSpec, ...] | None,
    catalogued: tuple[ColumnSpec, ...] | None,
) -> Target:
    file_cols = list(source.columns)
    if not file_cols:
        raise RejectedError("the file has no columns (empty, or no fields in any record)")
    base = declared if declared is not None else catalogued
    if base is None:
        # First file of a dataset without a declared schema: infer every column.
        types = infer_columns(source, file_cols)
        base = tuple(ColumnSpec(name=c, type=types[c]) for c in file_cols)
        target = Target(base, (), (), (), ds.evolution == "rescue")
        _check_keys(ds, target)
        return target
    base_names = [c.name for c in base]
    new = [c for c in file_cols if c not in base_names and c != RESCUED]
    missing = [c for c in base_names if c not in file_cols]
    if ds.evolution == "freeze" and (new or missing):
        parts = []
        if new:
            parts.append(f"new column(s) {', '.join(new)}")
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        raise RejectedError(
            f"dataset {ds.name!r} has a frozen schema and the file has {' and '.join(parts)}",
            hint="fix the file and land it again, or change the dataset's evolution policy to 'evolve' or 'rescue'",
        )
    if ds.evolution == "rescue":
        target = Target(tuple(base), tuple(new), tuple(missing), (), True)
    else:
        types = infer_columns(source, new)
        added = tuple(ColumnSpec(name=c, type=types[c]) for c in new)
        target = Target((*base, *added), (), tuple(missing), tuple(new), False)
    _check_keys(ds, target)
    return target


def _check_keys(ds: DatasetSpec, target: Target) -> None:
    names = {c.name for c in target.columns}
    for k in (*ds.primary_key, *ds.partition_by):
        if k not in names:
            raise ConfigError(
                f"dataset {ds.name!r}: key column {k!r} (primary_key / partition_by) is not among its columns "
                f"({', '.join(sorted(names))})",
                hint="fix primary_key / partition_by in tarn.yaml, then redrive the object",
            )
