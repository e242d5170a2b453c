"""The pipeline specification: frozen pydantic models, unknown keys rejected, stages tagged on ``type``.

A pipeline is a YAML file in the project (``pipelines/*.yaml``)::

    name: daily_orders
    description: Orders of the day, cleaned and merged into analytics.orders
    params: {min_amount: 0, region: null}        # null: required, must be given at run time
    triggers:
      - {type: on_commit, tables: [stage.orders], min_events: 5, max_wait: 300}
      - {type: cron, schedule: "0 2 * * *"}
    stages:
      - {type: extract, name: orders, table: stage.orders, output: orders}
      - type: sql
        name: recent
        sql: SELECT * FROM orders WHERE amount > ${min_amount}
        output: recent
      - type: expect
        name: quality
        input: recent
        output: clean
        expectations:
          - {name: has_customer, check: customer_id IS NOT NULL, action: quarantine}
      - {type: load, name: save, input: clean, table: analytics.orders, mode: merge, keys: [order_id]}

Every stage has a unique ``name`` (it names the stage in errors, in the run record and in the idempotency
token of its commit, ``tarn-run-<run_id>-<stage name>``) and optional ``environments`` (the stage runs only
when the run's environment is one of them; with no environment given, every stage runs).

Stages that produce a relation name it with ``output``; later stages refer to it by that name (a DuckDB view,
or a table when ``persist: true``). Lake tables are named ``zone.table`` (``stage.orders``,
``analytics.daily``); a bare name in a load means the analytics zone.

SQL is written in the pipeline's ``dialect`` (``duckdb`` by default; ``spark`` for Arc jobs: transpiled with
sqlglot) and may hold ``${param}`` placeholders (``$${x}`` is a literal ``${x}``). Pipeline ``params`` apply to
every stage; a stage's own ``params`` (Arc's ``sqlParams``) apply to that stage only. A declared param that no
stage uses, or a placeholder that no param provides, is an error before anything runs.

Other modules: :mod:`tarn.pipelines.params` resolves placeholders, :mod:`tarn.pipelines.runner` runs the
stages, :mod:`tarn.pipelines.validate` checks a project without running it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tarn.arc.schema import ArcField
from tarn.config.spec import ColumnSpec

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PIPELINE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_TABLE = re.compile(r"^(?:(stage|analytics|quarantine)\.)?([a-z_][a-z0-9_]*)$")
TABLE_ZONES = ("stage", "analytics", "quarantine")

ParamValue = str | int | float | bool | None
Dialect = Literal["duckdb", "spark"]


class Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _ident(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{what} {value!r} must be an identifier (letters, digits, underscores; not a digit first)")
    return value


def _check_table(name: str, default_zone: str) -> None:
    """Validate a table name now, unless it holds a ${param} (checked once resolved)."""
    if "${" not in name:
        split_table(name, default_zone)


def split_table(name: str, default_zone: str = "analytics") -> tuple[str, str]:
    """``zone.table`` (or a bare ``table`` in ``default_zone``) → (zone, table)."""
    m = _TABLE.match(name)
    if not m:
        raise ValueError(
            f"table {name!r} must be 'zone.table' (zones: {', '.join(TABLE_ZONES)}) with a lower_snake_case name"
        )
    return m.group(1) or default_zone, m.group(2)


# --------------------------------------------------------------------------------------------- stages
class _Stage(Spec):
    """Keys every stage accepts."""

    name: str = Field(min_length=1, description="Unique in the pipeline; names the stage in errors and run records")
    description: str | None = None
    environments: tuple[str, ...] | None = Field(
        default=None, description="Run only in these environments (--env); absent: every environment"
    )

    def runs_in(self, env: str | None) -> bool:
        return env is None or self.environments is None or env in self.environments


class _SqlText(Spec):
    """Mixin: SQL inline (``sql``) or in a file (``sql_file``, relative to the pipeline file)."""

    sql: str | None = None
    sql_file: str | None = None
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="Stage-only ${name} values (Arc's sqlParams); win over pipeline params"
    )
    dialect: Dialect | None = Field(default=None, description="SQL dialect; default: the pipeline's")

    @model_validator(mode="after")
    def _one_sql(self) -> Any:
        if (self.sql is None) == (self.sql_file is None):
            raise ValueError("give exactly one of 'sql' or 'sql_file'")
        return self


class _Output(Spec):
    output: str = Field(description="Name of the view this stage produces")
    persist: bool = Field(
        default=False, description="Materialize the result once (in the run's DuckDB file) instead of a lazy view"
    )

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return _ident(v, "output view")


FileFormat = Literal["csv", "jsonl", "json", "parquet", "delta", "text"]


class CsvReadOptions(Spec):
    """How ``extract`` reads delimited text."""

    delimiter: str = ","
    header: bool = True
    quote: str | None = '"'
    escape: str | None = None
    all_varchar: bool = Field(default=False, description="Every column as text (Arc's DelimitedExtract)")
    columns: tuple[str, ...] | None = Field(default=None, description="Column names for files without a header")
    null_values: tuple[str, ...] = ()


class ExtractStage(_Output, _Stage):
    """A lake table (with time travel) or files → ``output``.

    Exactly one of ``table`` (``zone.table``), ``path`` (files; globs allowed; relative to the project) or
    ``uri`` (a Delta table location outside the catalog, e.g. Arc's ``inputURI``)."""

    type: Literal["extract"]
    table: str | None = None
    path: str | None = None
    uri: str | None = None
    format: FileFormat | None = Field(default=None, description="File format; default: from the path's suffix")
    version: int | None = Field(default=None, ge=0, description="Time travel: read this Delta version")
    timestamp: str | None = Field(default=None, description="Time travel: the version current at this ISO instant")
    relative_version: int | None = Field(default=None, le=0, description="Time travel: -1 is the previous version")
    csv: CsvReadOptions = CsvReadOptions()
    multi_line: bool = Field(default=False, description="json/text: one record (value) per file, not per line")

    @model_validator(mode="after")
    def _source(self) -> ExtractStage:
        given = [k for k in ("table", "path", "uri") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'table', 'path' or 'uri'")
        if self.table is not None:
            _check_table(self.table, "stage")
        travel = [k for k in ("version", "timestamp", "relative_version") if getattr(self, k) is not None]
        if len(travel) > 1:
            raise ValueError(f"give at most one of 'version', 'timestamp', 'relative_version' (got {travel})")
        is_delta = self.table is not None or self.uri is not None or self.format == "delta"
        if travel and not is_delta:
            raise ValueError(f"{travel[0]!r} (time travel) needs a Delta table: 'table', 'uri' or format 'delta'")
        if self.format is not None and self.path is None:
            raise ValueError("'format' is only used with 'path'")
        return self


class SqlStage(_Output, _SqlText, _Stage):
    """A SELECT → ``output``."""

    type: Literal["sql"]


class TypingStage(_Output, _Stage):
    """Apply a schema to text columns: typed columns plus ``_errors`` (list of {field, message}) per row.

    The schema is a file (``schema_file``: Tarn's column list in YAML/JSON, or an Arc schema JSON), Tarn
    ``columns`` or Arc ``arc_fields`` inline. Columns are matched by name, or by position (Arc's rule)."""

    type: Literal["typing"]
    input: str
    schema_file: str | None = None
    columns: tuple[ColumnSpec, ...] | None = None
    arc_fields: tuple[ArcField, ...] | None = None
    by_position: bool = False
    fail_mode: Literal["permissive", "failfast"] = Field(
        default="permissive", description="failfast: a row with a typing error fails the run"
    )

    @model_validator(mode="after")
    def _one_schema(self) -> TypingStage:
        given = [k for k in ("schema_file", "columns", "arc_fields") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'schema_file', 'columns' or 'arc_fields'")
        return self


class ValidateStage(_SqlText, _Stage):
    """SQL returning one row ``(boolean, message)``; false or NULL fails the run with the message.
    A JSON message is stored as structured data in the run record."""

    type: Literal["validate"]


Action = Literal["warn", "drop", "quarantine", "fail"]


class Expectation(Spec):
    """A row-level rule. Rows where ``check`` is false or NULL are counted, then: ``warn`` keeps them,
    ``drop`` removes them, ``quarantine`` removes them into the quarantine table, ``fail`` fails the run."""

    name: str = Field(min_length=1)
    check: str = Field(description="SQL boolean over the input's columns")
    action: Action = "warn"


class ExpectStage(_Output, _Stage):
    """Row-level expectations on ``input`` → ``output`` (the rows kept). Counts are recorded on every run."""

    type: Literal["expect"]
    input: str
    expectations: tuple[Expectation, ...] = Field(min_length=1)
    quarantine_table: str | None = Field(
        default=None, description="Where 'quarantine' rows go; default quarantine.<pipeline name>"
    )
    dialect: Dialect | None = None

    @model_validator(mode="after")
    def _unique(self) -> ExpectStage:
        names = [e.name for e in self.expectations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate expectation names: {dup}")
        q = self.quarantine_table
        if q is not None and "${" not in q and split_table(q, "quarantine")[0] != "quarantine":
            raise ValueError("'quarantine_table' must be in the quarantine zone")
        return self


class EqualStage(_Stage):
    """``left`` and ``right`` must hold the same rows (as multisets)."""

    type: Literal["equal"]
    left: str
    right: str


class MergeClause(Spec):
    """One WHEN clause of a merge. Conditions and expressions are SQL over ``source.`` and ``target.`` columns.

    - ``when_matched``: ``update`` (``set``: column → expression; absent: every column) or ``delete``.
    - ``when_not_matched``: ``insert`` (``set``: column → expression; absent: every column).
    - ``when_not_matched_by_source``: ``delete`` or ``update`` (``set`` required)."""

    action: Literal["update", "delete", "insert"]
    condition: str | None = None
    set: dict[str, str] | None = None


LoadMode = Literal["append", "overwrite", "replace_where", "merge", "scd2"]
_MODE_KEYS: dict[str, tuple[str, ...]] = {
    "replace_where": ("predicate",),
    "merge": ("keys", "on", "when_matched", "when_not_matched", "when_not_matched_by_source"),
    "scd2": ("keys", "track", "valid_from", "valid_to", "is_current", "effective_at", "close_missing"),
}


class LoadStage(_Stage):
    """``input`` → a lake table (``table``: ``zone.table``, default zone analytics) or a Delta table / files at
    ``path`` (outside the catalog; Arc's ``outputURI``). One Delta commit per load.

    Modes: ``append``; ``overwrite``; ``replace_where`` (``predicate``: rows matching it are replaced);
    ``merge`` (``keys`` or ``on``; clauses default to update-all when matched, insert-all when not matched);
    ``scd2`` (``keys``; ``track``ed columns — default all others — close the current version and open a new one;
    ``valid_from`` / ``valid_to`` / ``is_current`` are maintained by Tarn; ``close_missing`` also closes
    current rows whose key is missing from the input, for full snapshots)."""

    type: Literal["load"]
    input: str
    table: str | None = None
    path: str | None = None
    format: Literal["delta", "parquet", "csv", "jsonl"] = Field(
        default="delta", description="Only with 'path': non-Delta formats write files (append or overwrite)"
    )
    mode: LoadMode = "append"
    partition_by: tuple[str, ...] = ()
    predicate: str | None = None
    keys: tuple[str, ...] = ()
    on: str | None = Field(default=None, description="merge: a condition instead of keys (source./target. aliases)")
    when_matched: tuple[MergeClause, ...] | None = None
    when_not_matched: tuple[MergeClause, ...] | None = None
    when_not_matched_by_source: tuple[MergeClause, ...] = ()
    track: tuple[str, ...] | None = None
    valid_from: str = "valid_from"
    valid_to: str = "valid_to"
    is_current: str = "is_current"
    effective_at: str | None = Field(
        default=None, description="scd2: SQL over the input giving a version's start; default: the run's start time"
    )
    close_missing: bool = False
    create_if_missing: bool = Field(default=True, description="merge/scd2: the first load creates the table")
    if_exists: Literal["write", "error", "ignore"] = Field(
        default="write",
        description="append/overwrite, when the target already exists: write, fail the run (error), or leave it "
        "untouched (ignore) — Arc's saveMode ErrorIfExists / Ignore",
    )

    @model_validator(mode="after")
    def _mode(self) -> LoadStage:
        if (self.table is None) == (self.path is None):
            raise ValueError("give exactly one of 'table' or 'path'")
        if self.table is not None:
            _check_table(self.table, "analytics")
            if self.format != "delta":
                raise ValueError("'format' is only used with 'path'")
        if self.format != "delta" and self.mode not in ("append", "overwrite"):
            raise ValueError(f"mode {self.mode!r} needs a Delta table (format 'delta')")
        own = _MODE_KEYS.get(self.mode, ())
        for key in sorted({k for keys in _MODE_KEYS.values() for k in keys} - set(own)):
            if getattr(self, key) != LoadStage.model_fields[key].get_default():
                modes = [m for m, keys in _MODE_KEYS.items() if key in keys]
                raise ValueError(f"{key!r} only applies to mode {' or '.join(repr(m) for m in modes)}")
        if self.if_exists != "write" and self.mode not in ("append", "overwrite"):
            raise ValueError(f"'if_exists' only applies to mode 'append' or 'overwrite', not {self.mode!r}")
        if self.mode == "replace_where" and not self.predicate:
            raise ValueError("mode 'replace_where' needs 'predicate'")
        if self.mode == "merge":
            if bool(self.keys) == bool(self.on):
                raise ValueError("mode 'merge' needs exactly one of 'keys' or 'on'")
            for where, clauses, allowed in (
                ("when_matched", self.when_matched or (), ("update", "delete")),
                ("when_not_matched", self.when_not_matched or (), ("insert",)),
                ("when_not_matched_by_source", self.when_not_matched_by_source, ("update", "delete")),
            ):
                for c in clauses:
                    if c.action not in allowed:
                        raise ValueError(f"{where}: action {c.action!r} is not one of {', '.join(allowed)}")
                    if c.action == "delete" and c.set is not None:
                        raise ValueError(f"{where}: a 'delete' has no 'set'")
                    if where == "when_not_matched_by_source" and c.action == "update" and not c.set:
                        raise ValueError("when_not_matched_by_source: 'update' needs 'set'")
        if self.mode == "scd2":
            if not self.keys:
                raise ValueError("mode 'scd2' needs 'keys'")
            for col in (self.valid_from, self.valid_to, self.is_current):
                _ident(col, "scd2 column")
            clash = {self.valid_from, self.valid_to, self.is_current} & {*self.keys, *(self.track or ())}
            if clash:
                raise ValueError(f"scd2 columns {sorted(clash)} cannot also be keys or tracked columns")
        return self

    def target_table(self) -> tuple[str, str] | None:
        """(zone, table) of a lake-table target, else None."""
        return split_table(self.table) if self.table is not None else None


class ExecuteStage(_SqlText, _Stage):
    """A SQL statement. ``MERGE INTO <zone.table, or a view extracted from a Delta table> USING … WHEN …`` is
    carried out as a Delta merge on that table (one commit); any other statement runs on the engine."""

    type: Literal["execute"]


class LogStage(_SqlText, _Stage):
    """A SQL result (at most ``limit`` rows) into the run's log."""

    type: Literal["log"]
    limit: int = Field(default=100, ge=1, le=10000)


class ConfigStage(_SqlText, _Stage):
    """SQL returning one row (its columns) or one JSON object (one column): new params for later stages
    (Arc's ConfigExecute). ``provides`` lists the names, so placeholders can be checked before the run."""

    type: Literal["config"]
    provides: tuple[str, ...] | None = None


Stage = Annotated[
    ExtractStage
    | SqlStage
    | TypingStage
    | ValidateStage
    | ExpectStage
    | EqualStage
    | LoadStage
    | ExecuteStage
    | LogStage
    | ConfigStage,
    Field(discriminator="type"),
]
"""Any stage, tagged on ``type``."""

STAGE_TYPES: dict[str, type[BaseModel]] = {
    "extract": ExtractStage,
    "sql": SqlStage,
    "typing": TypingStage,
    "validate": ValidateStage,
    "expect": ExpectStage,
    "equal": EqualStage,
    "load": LoadStage,
    "execute": ExecuteStage,
    "log": LogStage,
    "config": ConfigStage,
}
GATE_TYPES = ("validate", "expect", "equal", "typing")  # stages that can fail a run on the data


# ------------------------------------------------------------------------------------------- triggers
class ManualTrigger(Spec):
    """Runs only when asked (``tarn run PIPELINE``). Every pipeline can be run by hand; this is explicit."""

    type: Literal["manual"]


class OnCommitTrigger(Spec):
    """Run after commits to input tables, batching them: a run starts once ``min_events`` commits are
    pending, or ``max_wait`` seconds after the first pending commit, whichever comes first."""

    type: Literal["on_commit"]
    tables: tuple[str, ...] | None = Field(
        default=None, description="zone.table names; default: every lake table the pipeline reads"
    )
    min_events: int = Field(default=1, ge=1)
    max_wait: float = Field(default=60.0, gt=0, description="seconds")

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for t in v or ():
            if "." not in t:
                raise ValueError(f"trigger table {t!r} must be 'zone.table'")
            split_table(t)
        return v


_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_CRON_NAMES = re.compile(r"^[A-Za-z]{3}(-[A-Za-z]{3})?(,[A-Za-z]{3}(-[A-Za-z]{3})?)*$")


class CronTrigger(Spec):
    """Run on a five-field cron schedule (minute hour day-of-month month day-of-week), in ``timezone``."""

    type: Literal["cron"]
    schedule: str
    timezone: str = "UTC"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(f"cron schedule {v!r} must have 5 fields (minute hour day month weekday)")
        for f in fields:
            if not (_CRON_FIELD.match(f) or _CRON_NAMES.match(f)):
                raise ValueError(f"cron schedule {v!r}: field {f!r} is not valid")
        return v


Trigger = Annotated[ManualTrigger | OnCommitTrigger | CronTrigger, Field(discriminator="type")]


# ------------------------------------------------------------------------------------------- pipeline
class PipelineSpec(Spec):
    """A pipeline: ordered stages, params with defaults, triggers."""

    name: str
    description: str | None = None
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="name → default; null means required at run time"
    )
    dialect: Dialect = "duckdb"
    engine: Literal["duckdb", "spark"] | None = Field(default=None, description="default: the project's engine")
    triggers: tuple[Trigger, ...] = ()
    stages: tuple[Stage, ...] = Field(min_length=1)
    source: Path | None = Field(default=None, exclude=True, description="The file it was loaded from (set by Tarn)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PIPELINE_NAME.match(v):
            raise ValueError(f"pipeline name {v!r} must be lower_snake_case")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, ParamValue]) -> dict[str, ParamValue]:
        for k in v:
            _ident(k, "param")
        return v

    @model_validator(mode="after")
    def _unique(self) -> PipelineSpec:
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate stage names: {dup} (a stage name must be unique in its pipeline)")
        return self

    @property
    def base_dir(self) -> Path:
        """Where relative ``sql_file`` / ``schema_file`` paths start: the pipeline file's folder."""
        return self.source.parent if self.source is not None else Path.cwd()

    def quarantine_table(self, stage: ExpectStage) -> str:
        return stage.quarantine_table or f"quarantine.{self.name}"
