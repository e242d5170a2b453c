"""Arc stage models: one frozen pydantic model per Arc stage type, tagged on ``type``.

Keys are Arc's camelCase names (``inputView``, ``outputURI``, ``sqlParams`` …); the Python attributes are
snake_case. Stages are built with :func:`parse_stage`, which turns every validation failure into a
:class:`~tarn.errors.ConfigError` naming the stage and suggesting the key or value that was probably meant.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from tarn.arc.schema import ArcField
from tarn.arc.validation import config_error, stage_label
from tarn.errors import ConfigError, did_you_mean


def _stringify_values(value: Any) -> Any:
    """Arc reads ``params``/``sqlParams``/``authentication`` as string maps: ``10`` → ``"10"``."""
    if not isinstance(value, Mapping):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, int | float):
            out[key] = str(item)
        else:
            out[key] = item
    return out


StrMap = Annotated[dict[str, str], BeforeValidator(_stringify_values)]
Names = tuple[str, ...]
SaveMode = Literal["Append", "ErrorIfExists", "Ignore", "Overwrite"]
Delimiter = Literal["Comma", "Pipe", "DefaultHive", "Custom"]
Quote = Literal["DoubleQuote", "SingleQuote", "None"]


class _ArcModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel)


class _Stage(_ArcModel):
    """Keys every Arc stage accepts."""

    type: str
    """The stage type; each stage model narrows it to its own ``Literal``."""
    name: str
    description: str | None = None
    id: str | None = None
    environments: Names | None = None
    """The environments the stage runs in; ``None`` (key absent) means every environment."""
    params: StrMap = Field(default_factory=dict)
    authentication: StrMap | None = None
    resolution: Literal["strict", "lazy"] = "strict"
    """``lazy``: ``${VAR}`` left unresolved at load are resolved when the stage runs (after ConfigExecute)."""


class _ViewOutput(_Stage):
    output_view: str
    persist: bool = False
    num_partitions: int | None = Field(default=None, ge=1)
    partition_by: Names = ()


class _FileExtract(_ViewOutput):
    input_uri: str = Field(alias="inputURI")
    schema_uri: str | None = Field(default=None, alias="schemaURI")
    schema_view: str | None = None
    base_path: str | None = None
    contiguous_index: bool = True


def _exactly_one(model: BaseModel, *keys: str) -> None:
    """Raise if not exactly one of the given (alias) keys is set."""
    given = [key for key in keys if getattr(model, _attr(type(model), key)) is not None]
    if len(given) != 1:
        listed = " or ".join(repr(k) for k in keys)
        found = f" (found {', '.join(repr(k) for k in given)})" if given else ""
        raise ValueError(f"give exactly one of {listed}{found}")


def _attr(cls: type[BaseModel], alias: str) -> str:
    for attr, info in cls.model_fields.items():
        if info.alias == alias:
            return attr
    return alias


class _ViewOrFileInput(_FileExtract):
    input_uri: str | None = Field(default=None, alias="inputURI")  # type: ignore[assignment]
    input_view: str | None = None
    input_field: str | None = None

    @model_validator(mode="after")
    def _one_input(self) -> _ViewOrFileInput:
        _exactly_one(self, "inputURI", "inputView")
        return self


class DelimitedExtract(_ViewOrFileInput):
    """CSV/delimited file(s) or a view of text lines → view; every column a string."""

    type: Literal["DelimitedExtract"]
    delimiter: Delimiter = "Comma"
    custom_delimiter: str | None = None
    quote: Quote = "DoubleQuote"
    header: bool = False
    escape: str | None = None
    multi_line: bool = False

    @model_validator(mode="after")
    def _custom(self) -> DelimitedExtract:
        _check_custom_delimiter(self.delimiter, self.custom_delimiter)
        return self


def _check_custom_delimiter(delimiter: str, custom: str | None) -> None:
    if delimiter == "Custom" and not custom:
        raise ValueError("delimiter 'Custom' needs 'customDelimiter'")
    if delimiter != "Custom" and custom is not None:
        raise ValueError(f"'customDelimiter' is only used with delimiter 'Custom' (delimiter is {delimiter!r})")


class JSONExtract(_ViewOrFileInput):
    """JSON file(s) (globs allowed) or a view of JSON strings → view."""

    type: Literal["JSONExtract"]
    multi_line: bool = True


class ParquetExtract(_FileExtract):
    """Parquet file(s) → view."""

    type: Literal["ParquetExtract"]


class TextExtract(_FileExtract):
    """Text file(s) → view with one ``value`` column (a line, or the whole file with ``multiLine``)."""

    type: Literal["TextExtract"]
    multi_line: bool = False


class DeltaTimeTravel(_ArcModel):
    """``options`` of a DeltaLakeExtract: at most one of relativeVersion, timestampAsOf, versionAsOf."""

    relative_version: int | None = Field(default=None, le=0)
    timestamp_as_of: str | None = None
    version_as_of: int | None = Field(default=None, ge=0)
    can_return_last_commit: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> DeltaTimeTravel:
        given = [v for v in (self.relative_version, self.timestamp_as_of, self.version_as_of) if v is not None]
        if len(given) > 1:
            raise ValueError("give only one of 'relativeVersion', 'timestampAsOf', 'versionAsOf'")
        if self.can_return_last_commit is not None and self.timestamp_as_of is None:
            raise ValueError("'canReturnLastCommit' is only used with 'timestampAsOf'")
        return self


class DeltaLakeExtract(_ViewOutput):
    """Delta table → view, optionally at an earlier version (time travel)."""

    type: Literal["DeltaLakeExtract"]
    input_uri: str = Field(alias="inputURI")
    options: DeltaTimeTravel | None = None


class TypingTransform(_ViewOutput):
    """Apply an Arc schema to a view of strings, by column position; adds ``_errors``."""

    type: Literal["TypingTransform"]
    input_view: str
    schema_uri: str | None = Field(default=None, alias="schemaURI")
    schema_: tuple[ArcField, ...] | None = Field(default=None, alias="schema")
    schema_view: str | None = None
    fail_mode: Literal["permissive", "failfast"] = "permissive"

    @model_validator(mode="after")
    def _one_schema(self) -> TypingTransform:
        _exactly_one(self, "schemaURI", "schema", "schemaView")
        return self


class _SQLStage(_Stage):
    sql: str | None = None
    input_uri: str | None = Field(default=None, alias="inputURI")
    sql_params: StrMap = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> _SQLStage:
        _exactly_one(self, "sql", "inputURI")
        return self


class SQLTransform(_SQLStage):
    """SQL (inline or a file) → ``outputView``. ``MERGE INTO <delta view> …`` has no outputView."""

    type: Literal["SQLTransform"]
    output_view: str | None = None
    persist: bool = False
    num_partitions: int | None = Field(default=None, ge=1)
    partition_by: Names = ()


class SQLValidate(_SQLStage):
    """SQL returning one row ``(boolean, message)``; false or NULL fails the job."""

    type: Literal["SQLValidate"]


class LogExecute(_SQLStage):
    """SQL result → the run's log."""

    type: Literal["LogExecute"]


class ConfigExecute(_SQLStage):
    """SQL returning one JSON object → variables for later (``resolution: lazy``) stages."""

    type: Literal["ConfigExecute"]


class EqualityValidate(_Stage):
    """``leftView`` and ``rightView`` must hold the same rows."""

    type: Literal["EqualityValidate"]
    left_view: str
    right_view: str


class _Load(_Stage):
    input_view: str
    output_uri: str = Field(alias="outputURI")
    save_mode: SaveMode = "Overwrite"
    partition_by: Names = ()
    num_partitions: int | None = Field(default=None, ge=1)


class DeltaLakeLoad(_Load):
    """View → Delta table at ``outputURI``."""

    type: Literal["DeltaLakeLoad"]
    replace_where: str | None = None
    merge_schema: bool = False
    overwrite_schema: bool = False
    generate_symlink_manifest: bool | None = None


class MergeUpdate(_ArcModel):
    """``whenMatchedUpdate``: no ``values`` means update every column."""

    condition: str | None = None
    values: StrMap | None = None


class MergeInsert(_ArcModel):
    """``whenNotMatchedByTargetInsert``: no ``values`` means insert every column."""

    condition: str | None = None
    values: StrMap | None = None


class MergeDelete(_ArcModel):
    """``whenMatchedDelete`` / ``whenNotMatchedBySourceDelete``."""

    condition: str | None = None


class DeltaLakeMergeLoad(_Stage):
    """MERGE a view (``source``) into a Delta table (``target``) on ``condition``."""

    type: Literal["DeltaLakeMergeLoad"]
    input_view: str
    output_uri: str = Field(alias="outputURI")
    condition: str
    when_matched_update: MergeUpdate | None = None
    when_matched_delete: MergeDelete | None = None
    when_matched_delete_first: bool = True
    when_not_matched_by_target_insert: MergeInsert | None = None
    when_not_matched_by_source_delete: MergeDelete | None = None
    create_table_if_not_exists: bool = False
    partition_by: Names = ()
    num_partitions: int | None = Field(default=None, ge=1)
    generate_symlink_manifest: bool | None = None


class ParquetLoad(_Load):
    """View → Parquet files."""

    type: Literal["ParquetLoad"]


class DelimitedLoad(_Load):
    """View → delimited (CSV) files."""

    type: Literal["DelimitedLoad"]
    delimiter: Delimiter = "Comma"
    custom_delimiter: str | None = None
    quote: Quote = "DoubleQuote"
    header: bool = False

    @model_validator(mode="after")
    def _custom(self) -> DelimitedLoad:
        _check_custom_delimiter(self.delimiter, self.custom_delimiter)
        return self


class JSONLoad(_Load):
    """View → JSON-lines files."""

    type: Literal["JSONLoad"]


ArcStage = Annotated[
    DelimitedExtract
    | JSONExtract
    | ParquetExtract
    | TextExtract
    | DeltaLakeExtract
    | TypingTransform
    | SQLTransform
    | SQLValidate
    | EqualityValidate
    | DeltaLakeLoad
    | DeltaLakeMergeLoad
    | ParquetLoad
    | DelimitedLoad
    | JSONLoad
    | LogExecute
    | ConfigExecute,
    Field(discriminator="type"),
]
"""Any Arc stage, tagged on ``type``."""

_STAGE_CLASSES: tuple[type[_Stage], ...] = (
    DelimitedExtract,
    JSONExtract,
    ParquetExtract,
    TextExtract,
    DeltaLakeExtract,
    TypingTransform,
    SQLTransform,
    SQLValidate,
    EqualityValidate,
    DeltaLakeLoad,
    DeltaLakeMergeLoad,
    ParquetLoad,
    DelimitedLoad,
    JSONLoad,
    LogExecute,
    ConfigExecute,
)
STAGE_TYPES: dict[str, type[_Stage]] = {cls.__name__: cls for cls in _STAGE_CLASSES}
"""Arc stage type name → model class."""

_OTHER_ARC_TYPES = frozenset(
    {
        "AvroExtract", "BytesExtract", "ElasticsearchExtract", "HTTPExtract", "ImageExtract", "JDBCExtract",
        "KafkaExtract", "MetadataExtract", "ORCExtract", "RateExtract", "StatisticsExtract", "XMLExtract",
        "DiffTransform", "HTTPTransform", "JSONTransform", "MetadataFilterTransform", "MetadataTransform",
        "MLTransform", "SimilarityJoinTransform", "TensorFlowServingTransform", "AvroLoad", "ConsoleLoad",
        "ElasticsearchLoad", "HTTPLoad", "JDBCLoad", "KafkaLoad", "ORCLoad", "TextLoad", "XMLLoad",
        "ControlFlowExecute", "HTTPExecute", "JDBCExecute", "KafkaCommitExecute", "PipelineExecute",
        "MetadataValidate",
    }
)  # fmt: skip
"""Arc's other stage types: known, but not run by Tarn (a clearer error than a "did you mean")."""


class ArcJob(BaseModel):
    """A parsed Arc job: its stages in order, its plugins, where it came from and the variables it set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stages: tuple[ArcStage, ...]
    plugins: dict[str, Any] = Field(default_factory=dict)
    source: Path | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    """Job variables known at load: command-line ``--VAR=value`` and, in notebooks, ``%env`` cells."""


def parse_stage(raw: Mapping[str, Any], index: int, *, cell: int | None = None) -> ArcStage:
    """Validate one stage object (``index`` is its 0-based position in the job; ``cell`` its notebook cell).

    Raises ConfigError naming the stage for an unknown type, an unknown key, a missing key or a bad value.
    """
    name = raw.get("name")
    stage_type = raw.get("type")
    if stage_type is None:
        raise ConfigError(
            f"{stage_label(index, name, None, cell)}: missing 'type'",
            hint=f'set "type" to one of: {", ".join(STAGE_TYPES)}',
        )
    cls = STAGE_TYPES.get(str(stage_type))
    if cls is None and stage_type in _OTHER_ARC_TYPES:
        raise ConfigError(
            f"{stage_label(index, name, None, cell)}: Arc stage type {stage_type!r} is not supported by Tarn",
            hint=f"Tarn runs these Arc stage types: {', '.join(STAGE_TYPES)}",
        )
    if cls is None:
        raise ConfigError(
            f"{stage_label(index, name, None, cell)}: unknown stage type {stage_type!r}"
            f"{did_you_mean(str(stage_type), STAGE_TYPES)}",
            hint=f"Tarn runs these Arc stage types: {', '.join(STAGE_TYPES)}",
        )
    try:
        stage = cls.model_validate(dict(raw))
    except ValidationError as exc:
        raise config_error(stage_label(index, name, stage_type, cell), cls, exc) from None
    return cast(ArcStage, stage)
