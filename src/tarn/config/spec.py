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
    ingest_engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="spark: objects of at least spark_min_bytes are ingested by Apache Spark (same typing and "
        "quarantine results); smaller ones, and what Spark cannot reproduce exactly, by DuckDB",
    )
    spark_min_bytes: int = Field(
        default=256 * 1024**2, ge=0, description="with ingest_engine: spark, the smallest object Spark ingests"
    )

    def ingests_with_spark(self, size: int | None) -> bool:
        """Whether an object of ``size`` bytes goes to Spark (``ingest_engine: spark`` and big enough)."""
        return self.ingest_engine == "spark" and size is not None and size >= self.spark_min_bytes

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
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM/SIGINT, in-flight objects may finish for this long; what is still in hand "
        "is then released back to the queue (its receive count given back) and the process exits",
    )
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


# Keys that would put AWS credentials into tarn.yaml. Credentials come from the usual AWS chain
# (environment, profile, instance/container role); a ${secret:NAME} reference is the only other way.
CREDENTIAL_KEYS = ("access_key_id", "secret_access_key", "session_token")
SECRET_REF = re.compile(r"^\$\{secret:[A-Za-z_][A-Za-z0-9_]*\}$")


class S3Spec(Spec):
    """How to reach the object store of an ``s3://`` lake root (any S3 API)."""

    endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, Ceph, a local gateway…); default: AWS for the region"
    )
    region: str | None = Field(default=None, description="default: AWS_REGION / AWS_DEFAULT_REGION / the profile's")
    profile: str | None = Field(default=None, description="an AWS profile of ~/.aws/config; default: the AWS chain's")
    allow_http: bool = Field(default=False, description="allow a plain-http endpoint_url (local test servers)")
    path_style: bool | None = Field(
        default=None, description="path-style addressing (bucket in the path); default: on with an endpoint_url"
    )
    sse: Literal["none", "AES256", "aws:kms"] = Field(
        default="none", description="server-side encryption of every object Tarn writes: SSE-S3 or SSE-KMS"
    )
    sse_kms_key_id: str | None = Field(default=None, description="the KMS key (id, ARN or alias) for sse: aws:kms")
    delta_commit: Literal["conditional_put", "etag", "unsafe_rename"] = Field(
        default="conditional_put",
        description="how Delta commits stay safe with several writers: the store's conditional create "
        "(If-None-Match, AWS S3 and most S3 APIs), etag-conditional put, or (last resort, one writer only) "
        "unsafe rename",
    )
    listing_lookback_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="landing listing: objects this much older than the cursor are still checked (a multipart "
        "upload is dated by its start)",
    )
    sqs_queue_url: str | None = Field(
        default=None, description="optional SQS queue receiving the bucket's S3 event notifications for landing"
    )
    max_attempts: int = Field(default=5, ge=1, le=20, description="attempts per S3 request (with backoff)")
    access_key_id: str | None = Field(default=None, description="only as a ${secret:NAME} reference")
    secret_access_key: str | None = Field(default=None, description="only as a ${secret:NAME} reference")
    session_token: str | None = Field(default=None, description="only as a ${secret:NAME} reference")

    @model_validator(mode="after")
    def _consistent(self) -> S3Spec:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse: aws:kms")
        if self.endpoint_url and self.endpoint_url.startswith("http://") and not self.allow_http:
            raise ValueError(f"endpoint_url {self.endpoint_url} is plain http: set allow_http: true to use it")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key (as ${secret:…}), or neither")
        return self

    @property
    def use_path_style(self) -> bool:
        return self.path_style if self.path_style is not None else self.endpoint_url is not None


class LakeSpec(Spec):
    root: str = Field(default="lake", description="A folder (relative to the project) or s3://bucket/prefix")
    s3: S3Spec = Field(default=S3Spec(), description="object-store settings for an s3:// root")

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        if v.startswith(("s3a://", "s3n://")):
            rest = v.split("://", 1)[1]
            raise ValueError(f"lake root {v!r}: write it as s3://{rest} (Tarn maps it to s3a for Spark itself)")
        if v.startswith("s3://") and not v[5:].split("/")[0]:
            raise ValueError(f"lake root {v!r} names no bucket: s3://bucket/prefix")
        return v


def literal_credentials(raw: object) -> list[str]:
    """The keys of ``lake.s3`` in the unsubstituted YAML that hold AWS credentials as literals
    (anything but a lone ``${secret:NAME}`` reference)."""
    if not isinstance(raw, dict):
        return []
    s3 = (raw.get("lake") or {}).get("s3") if isinstance(raw.get("lake"), dict) else None
    if not isinstance(s3, dict):
        return []
    return [k for k in CREDENTIAL_KEYS if s3.get(k) is not None and not SECRET_REF.match(str(s3[k]).strip())]


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
