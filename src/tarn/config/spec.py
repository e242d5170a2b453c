"""The project specification (``tarn.yaml``): frozen pydantic models, unknown keys rejected."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tarn.config.engine import EngineSpec
from tarn.config.types import normalize_type

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be lower_snake_case (letters, digits, underscores)")
    return value


class ColumnSpec(Spec):
    """One column of a declared schema."""

    name: str
    type: str = "string"
    nullable: bool = True
    description: str | None = None
    # Text that means NULL for this column, besides the empty string (Arc's nullableValues).
    null_values: tuple[str, ...] = ()
    trim: bool = False

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return normalize_type(v)


class ConstraintSpec(Spec):
    """A row-level rule: rows where ``check`` is false or NULL are quarantined with ``name``."""

    name: str
    check: str = Field(description="A SQL boolean expression over the dataset's typed columns")


class CsvOptions(Spec):
    delimiter: str = ","
    header: bool = True
    quote: str | None = '"'
    escape: str | None = '"'
    null_values: tuple[str, ...] = ("",)
    # Column names for files without a header (mapped by position); defaults to the schema's.
    column_names: tuple[str, ...] | None = None


Format = Literal["auto", "csv", "jsonl", "json", "parquet"]
Evolution = Literal["evolve", "freeze", "rescue"]


class DatasetSpec(Spec):
    """A dataset: where its files land, how to read them, and the contract its rows must meet."""

    name: str
    landing: str = Field(
        default="",
        description="Glob (fnmatch) under the landing zone that routes files to this dataset; default '<name>/**'",
    )
    format: Format = "auto"
    csv: CsvOptions = CsvOptions()
    columns: tuple[ColumnSpec, ...] | None = Field(
        default=None, description="Declared schema; omit it (and schema_file) to infer it from the first file"
    )
    schema_file: str | None = Field(
        default=None, description="A schema file: Tarn's column list (YAML/JSON) or an Arc schema JSON"
    )
    primary_key: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    evolution: Evolution = "evolve"
    constraints: tuple[ConstraintSpec, ...] = ()
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "dataset name")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.columns is not None and self.schema_file is not None:
            raise ValueError("give either 'columns' or 'schema_file', not both")
        if self.columns is not None:
            names = [c.name for c in self.columns]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate column names: {sorted(dup)}")
            for key in (*self.primary_key, *self.partition_by):
                if key not in names:
                    raise ValueError(f"column {key!r} (primary key / partition) is not in the declared columns")
        return self

    @property
    def landing_glob(self) -> str:
        return self.landing or f"{self.name}/**"

    @property
    def stage_table(self) -> str:
        return f"stage.{self.name}"

    @property
    def quarantine_table(self) -> str:
        return f"quarantine.{self.name}"


class BackoffSpec(Spec):
    base_seconds: float = 1.0
    max_seconds: float = 300.0
    jitter: float = Field(default=0.5, ge=0, le=1, description="fraction of the delay randomised")


class IngestSpec(Spec):
    workers: int = Field(default=2, ge=1, le=64)
    settle_seconds: float = Field(
        default=1.0,
        ge=0,
        description="a file must keep the same size and mtime this long before it is picked up",
    )
    open_file_timeout_seconds: float = Field(
        default=600.0, gt=0, description="a file written to and never closed is taken after this long"
    )
    scan_interval_seconds: float = Field(default=30.0, gt=0, description="reconciliation scan period")
    poll_interval_seconds: float = Field(default=0.5, gt=0, description="how often idle workers poll the queue")
    visibility_timeout_seconds: float = Field(default=300.0, gt=0)
    max_receives: int = Field(default=5, ge=1)
    backoff: BackoffSpec = BackoffSpec()
    max_file_bytes: int = Field(default=50 * 1024**3, gt=0)
    max_expansion_ratio: float = Field(
        default=100.0, gt=1, description="a compressed file expanding more than this is refused (decompression bomb)"
    )
    batch_rows: int = Field(default=131072, ge=1024)
    batch_objects: int = Field(
        default=100,
        ge=1,
        description="small objects of one dataset received together are committed together: one Delta commit "
        "(with each object's own exactly-once token) for up to this many objects; 1 turns batching off",
    )
    batch_object_bytes: int = Field(
        default=8 * 1024**2,
        ge=0,
        description="objects up to this size may share a commit; larger ones stream through on their own",
    )


class LakeSpec(Spec):
    root: str = Field(default="lake", description="A folder (relative to the project) or s3://bucket/prefix")


class MetastoreSpec(Spec):
    url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite under the project's .tarn/ folder"
    )


class ProjectSpec(Spec):
    """``tarn.yaml``."""

    name: str = "lake"
    lake: LakeSpec = LakeSpec()
    metastore: MetastoreSpec = MetastoreSpec()
    ingest: IngestSpec = IngestSpec()
    engine: EngineSpec = EngineSpec()
    secrets_file: str | None = Field(default=None, description="YAML file of NAME: value for ${secret:NAME}")
    datasets: tuple[DatasetSpec, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> ProjectSpec:
        names = [d.name for d in self.datasets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate dataset names: {sorted(dup)}")
        return self
