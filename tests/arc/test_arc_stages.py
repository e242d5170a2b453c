"""Every Arc stage type, from the small jobs in tests/arc/jobs, and the stage models' own rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from tarn.arc import STAGE_TYPES, ArcStage, load_arc_job, parse_stage
from tarn.arc.stages import (
    ConfigExecute,
    DelimitedExtract,
    DelimitedLoad,
    DeltaLakeExtract,
    DeltaLakeLoad,
    DeltaLakeMergeLoad,
    EqualityValidate,
    JSONExtract,
    JSONLoad,
    LogExecute,
    MergeDelete,
    MergeInsert,
    MergeUpdate,
    ParquetExtract,
    ParquetLoad,
    SQLTransform,
    SQLValidate,
    TextExtract,
    TypingTransform,
)
from tarn.errors import ConfigError

ALL_TYPES = {
    "DelimitedExtract",
    "JSONExtract",
    "ParquetExtract",
    "TextExtract",
    "DeltaLakeExtract",
    "TypingTransform",
    "SQLTransform",
    "SQLValidate",
    "EqualityValidate",
    "DeltaLakeLoad",
    "DeltaLakeMergeLoad",
    "ParquetLoad",
    "DelimitedLoad",
    "JSONLoad",
    "LogExecute",
    "ConfigExecute",
}


def test_registry_has_every_stage_type() -> None:
    assert set(STAGE_TYPES) == ALL_TYPES
    assert all(cls.__name__ == name for name, cls in STAGE_TYPES.items())


def test_the_test_jobs_cover_every_stage_type(jobs: Path, variables: dict[str, str]) -> None:
    seen = {
        stage.type
        for name in ("extracts.conf", "transforms.conf", "loads.json", "executes.conf", "all_magics.ipynb")
        for stage in load_arc_job(jobs / name, variables).stages
    }
    assert seen == ALL_TYPES


def test_extracts(jobs: Path, variables: dict[str, str]) -> None:
    stages = load_arc_job(jobs / "extracts.conf", variables).stages
    pipe, custom, json_files, parquet, text, delta_back, delta_then = stages

    assert isinstance(pipe, DelimitedExtract)
    assert pipe.input_uri == "/data/people.psv"  # via the job's own top-level key "data"
    assert (pipe.delimiter, pipe.quote, pipe.header, pipe.escape, pipe.multi_line) == (
        "Pipe",
        "SingleQuote",
        True,
        "\\",
        True,
    )
    assert (pipe.id, pipe.description) == ("0001", "a pipe file with a header")
    assert (pipe.contiguous_index, pipe.num_partitions, pipe.partition_by, pipe.persist) == (
        False,
        4,
        ("country",),
        True,
    )
    # string maps: numbers and booleans become Arc's strings; ${?VAR} unset is left out
    assert pipe.params == {"owner": "data-team", "retries": "3", "strict": "true"}
    assert pipe.authentication == {"method": "AmazonAccessKey", "accessKeyID": "abc", "secretAccessKey": "xyz"}

    assert isinstance(custom, DelimitedExtract)
    assert (custom.input_uri, custom.input_view, custom.input_field) == (None, "lines", "value")
    assert (custom.delimiter, custom.custom_delimiter) == ("Custom", "#")
    assert custom.quote == "DoubleQuote" and custom.header is False  # Arc's defaults

    assert isinstance(json_files, JSONExtract)
    assert json_files.input_uri == "/data/events/*.json"
    assert json_files.schema_uri == "/jobs/events.schema.json"
    assert (json_files.base_path, json_files.multi_line) == ("/data/events", False)

    assert isinstance(parquet, ParquetExtract)
    assert (parquet.input_uri, parquet.schema_view) == ("/data/facts/*.parquet", "facts_schema")

    assert isinstance(text, TextExtract) and text.multi_line is True

    assert isinstance(delta_back, DeltaLakeExtract) and delta_back.options is not None
    assert (delta_back.input_uri, delta_back.options.relative_version) == ("/lake/orders", -1)
    assert isinstance(delta_then, DeltaLakeExtract) and delta_then.options is not None
    assert delta_then.options.timestamp_as_of == "2024-01-01 00:00:00"
    assert delta_then.options.can_return_last_commit is True


def test_transforms_and_validations(jobs: Path, variables: dict[str, str]) -> None:
    inline, from_file, sql_file, inline_sql, validate, equality = load_arc_job(
        jobs / "transforms.conf", variables
    ).stages

    assert isinstance(inline, TypingTransform) and inline.schema_ is not None
    assert inline.fail_mode == "failfast"
    assert [(f.name, f.type) for f in inline.schema_] == [
        ("id", "long"),
        ("joined", "date"),
        ("active", "boolean"),
        ("balance", "decimal"),
    ]
    assert inline.schema_[1].formatters == ("yyyy-MM-dd", "dd/MM/yyyy")
    assert inline.schema_[2].true_values == ("Y",)
    assert inline.schema_[3].nullable_values == ("", "n/a")

    assert isinstance(from_file, TypingTransform)
    assert (from_file.schema_uri, from_file.schema_, from_file.schema_view) == ("/jobs/types_schema.json", None, None)

    assert isinstance(sql_file, SQLTransform)
    assert (sql_file.sql, sql_file.input_uri) == (None, "/jobs/active.sql")
    assert sql_file.sql_params == {"status": "active", "limit": "10"}
    assert (sql_file.num_partitions, sql_file.partition_by) == (2, ("country",))

    assert isinstance(inline_sql, SQLTransform) and inline_sql.sql is not None
    # the job variable in the quoted SQL is resolved; the sqlParams placeholder is not
    assert "joined >= '2024-01-01'" in inline_sql.sql and "country = '${country}'" in inline_sql.sql

    assert isinstance(validate, SQLValidate)
    assert isinstance(equality, EqualityValidate)
    assert (equality.left_view, equality.right_view, equality.environments) == (
        "people",
        "people_expected",
        ("test",),
    )


def test_loads(jobs: Path) -> None:
    job = load_arc_job(jobs / "loads.json")  # needs no variables
    delta, merge, parquet, delimited, json_load = job.stages

    assert isinstance(delta, DeltaLakeLoad)
    assert (delta.save_mode, delta.partition_by, delta.num_partitions, delta.merge_schema) == (
        "Append",
        ("country",),
        8,
        True,
    )

    assert isinstance(merge, DeltaLakeMergeLoad)
    assert merge.condition == "source.id = target.id"
    assert merge.when_matched_update == MergeUpdate(
        condition="source.checksum <> target.checksum", values={"name": "source.name"}
    )
    assert merge.when_matched_delete == MergeDelete(condition="source.deleted = true")
    assert merge.when_not_matched_by_target_insert == MergeInsert()  # {}: insert every column
    assert merge.when_not_matched_by_source_delete == MergeDelete(condition="target.active = false")
    assert (merge.when_matched_delete_first, merge.create_table_if_not_exists) == (False, True)

    assert isinstance(parquet, ParquetLoad) and parquet.save_mode == "ErrorIfExists"
    assert isinstance(delimited, DelimitedLoad)
    assert (delimited.delimiter, delimited.custom_delimiter, delimited.quote, delimited.header) == (
        "Custom",
        ";",
        "None",
        True,
    )
    assert delimited.save_mode == "Ignore"
    assert isinstance(json_load, JSONLoad)
    assert (json_load.save_mode, json_load.environments) == ("Overwrite", None)  # defaults

    assert job.plugins == {"lifecycle": [{"type": "DataFramePrinter", "name": "print", "numRows": 5}]}


def test_executes_and_lazy_resolution(jobs: Path, variables: dict[str, str]) -> None:
    config, log, lazy = load_arc_job(jobs / "executes.conf", variables).stages

    assert isinstance(config, ConfigExecute) and config.sql_params == {"view": "dates"}
    assert isinstance(log, LogExecute) and log.input_uri == "sql/log_counts.sql"
    assert isinstance(lazy, SQLTransform) and lazy.resolution == "lazy"
    # ETL_CONF_DATES is set by the ConfigExecute at run time: kept as ${...} for the runner
    assert lazy.input_uri == "/jobs/${ETL_CONF_DATES}.sql"


def test_tagged_union_and_aliases() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(ArcStage)
    stage = adapter.validate_python(
        {"type": "DeltaLakeLoad", "name": "x", "inputView": "v", "outputURI": "lake/t", "saveMode": "Append"}
    )
    assert isinstance(stage, DeltaLakeLoad)
    assert stage.model_dump(by_alias=True, exclude_defaults=True) == {
        "type": "DeltaLakeLoad",
        "name": "x",
        "inputView": "v",
        "outputURI": "lake/t",
        "saveMode": "Append",
    }
    # populate_by_name: the Python names work too
    same = DeltaLakeLoad.model_validate(
        {"type": "DeltaLakeLoad", "name": "x", "input_view": "v", "output_uri": "lake/t", "save_mode": "Append"}
    )
    assert same == stage


def test_stages_are_frozen() -> None:
    stage = parse_stage({"type": "SQLValidate", "name": "v", "sql": "SELECT TRUE, 'ok'"}, 0)
    with pytest.raises(ValidationError):
        stage.name = "other"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"type": "DelimitedExtract", "name": "s", "outputView": "o"},
            "give exactly one of 'inputURI' or 'inputView'",
        ),
        (
            {"type": "JSONExtract", "name": "s", "outputView": "o", "inputURI": "a", "inputView": "b"},
            "give exactly one of 'inputURI' or 'inputView' (found 'inputURI', 'inputView')",
        ),
        (
            {"type": "DelimitedExtract", "name": "s", "outputView": "o", "inputURI": "a", "delimiter": "Custom"},
            "delimiter 'Custom' needs 'customDelimiter'",
        ),
        (
            {"type": "DelimitedLoad", "name": "s", "inputView": "i", "outputURI": "o", "customDelimiter": ";"},
            "'customDelimiter' is only used with delimiter 'Custom'",
        ),
        (
            {"type": "TypingTransform", "name": "s", "inputView": "i", "outputView": "o"},
            "give exactly one of 'schemaURI' or 'schema' or 'schemaView'",
        ),
        (
            {"type": "SQLTransform", "name": "s", "outputView": "o"},
            "give exactly one of 'sql' or 'inputURI'",
        ),
        (
            {"type": "SQLValidate", "name": "s", "sql": "SELECT 1", "inputURI": "a.sql"},
            "give exactly one of 'sql' or 'inputURI'",
        ),
        (
            {
                "type": "DeltaLakeExtract",
                "name": "s",
                "inputURI": "t",
                "outputView": "o",
                "options": {"versionAsOf": 1, "relativeVersion": -1},
            },
            "give only one of 'relativeVersion', 'timestampAsOf', 'versionAsOf'",
        ),
        (
            {
                "type": "DeltaLakeExtract",
                "name": "s",
                "inputURI": "t",
                "outputView": "o",
                "options": {"relativeVersion": 2},
            },
            "'options.relativeVersion': Input should be less than or equal to 0",
        ),
        (
            {"type": "SQLTransform", "name": "s", "sql": "SELECT 1", "outputView": "o", "numPartitions": 0},
            "'numPartitions': Input should be greater than or equal to 1",
        ),
        (
            {"type": "EqualityValidate", "name": "s", "leftView": "a"},
            "missing required key 'rightView'",
        ),
        (
            {"type": "ParquetLoad", "name": "s", "inputView": "a", "outputURI": "o", "partitionBy": "status"},
            "'partitionBy': Input should be a valid tuple",
        ),
    ],
)
def test_stage_rules(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_stage(raw, 2)
    assert info.value.message.startswith(f"stage 3 's' ({raw['type']}): ")
    assert message in info.value.message
