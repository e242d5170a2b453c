"""Arc stages → Tarn pipeline stages (``tarn.pipelines.from_arc``), without running anything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tarn.arc import STAGE_TYPES as ARC_STAGE_TYPES
from tarn.arc import parse_hocon_job
from tarn.errors import ConfigError
from tarn.pipelines.from_arc import ARC_TO_TARN, pipeline_from_arc, pipeline_from_arc_file, pipeline_name
from tarn.pipelines.params import check_placeholders
from tarn.pipelines.spec import (
    ConfigStage,
    EqualStage,
    ExecuteStage,
    ExtractStage,
    LoadStage,
    LogStage,
    PipelineSpec,
    SqlStage,
    TypingStage,
    ValidateStage,
)

JOBS = Path(__file__).parent / "arc_jobs"


@pytest.fixture(autouse=True)
def _no_etl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ETL_CONF_"):
            monkeypatch.delenv(name)


def _map(*stages: dict[str, Any], cwd: Path = Path("/work"), variables: dict[str, str] | None = None) -> PipelineSpec:
    job = parse_hocon_job(json.dumps({"stages": list(stages)}), variables, source=Path("/jobs/My Job-1.conf"))
    return pipeline_from_arc(job, cwd=cwd)


def _one(stage: dict[str, Any], **kw: Any) -> Any:
    return _map({"name": "s", **stage}, **kw).stages[0]


def test_every_arc_stage_type_has_a_mapping() -> None:
    assert set(ARC_TO_TARN) == set(ARC_STAGE_TYPES)


def test_pipeline_name_source_dialect_and_unique_stage_names() -> None:
    spec = _map(
        {"type": "SQLTransform", "name": "x", "sql": "SELECT 1 AS a", "outputView": "a", "environments": ["test"]},
        {"type": "SQLTransform", "name": "x", "sql": "SELECT 2 AS a", "outputView": "b", "description": "again"},
        {"type": "SQLTransform", "name": "x (2)", "sql": "SELECT 3 AS a", "outputView": "c"},
    )
    assert spec.name == "my_job_1" and spec.dialect == "spark"
    assert spec.source == Path("/jobs/My Job-1.conf").resolve()
    assert [s.name for s in spec.stages] == ["x", "x (2)", "x (2) (2)"]
    assert spec.stages[0].environments == ("test",) and spec.stages[1].environments is None
    assert spec.stages[1].description == "again"
    assert pipeline_name(Path("2024 orders.ipynb")) == "job_2024_orders"
    assert pipeline_name(Path("---.conf")) == "arc_job"


@pytest.mark.parametrize(
    ("arc", "csv"),
    [
        ({}, {"delimiter": ",", "quote": '"', "header": False}),
        (
            {"delimiter": "Pipe", "quote": "SingleQuote", "header": True},
            {"delimiter": "|", "quote": "'", "header": True},
        ),
        ({"delimiter": "DefaultHive", "quote": "None"}, {"delimiter": "\x01", "quote": None}),
        ({"delimiter": "Custom", "customDelimiter": ";", "escape": "\\"}, {"delimiter": ";", "escape": "\\"}),
    ],
)
def test_delimited_extract(arc: dict[str, Any], csv: dict[str, Any]) -> None:
    s = _one({"type": "DelimitedExtract", "inputURI": "in/*.csv", "outputView": "raw", "persist": True, **arc})
    assert isinstance(s, ExtractStage)
    assert (s.path, s.format, s.output, s.persist) == ("/work/in/*.csv", "csv", "raw", True)
    assert s.csv.all_varchar is True and s.csv.columns is None  # no header: _c0, _c1 … as in Spark
    assert {k: getattr(s.csv, k) for k in csv} == csv


def test_file_extracts() -> None:
    json_doc = _one({"type": "JSONExtract", "inputURI": "file:///d/*.json", "outputView": "j"})
    json_lines = _one({"type": "JSONExtract", "inputURI": "/d/a.json,/d/b.json", "outputView": "j", "multiLine": False})
    parquet = _one({"type": "ParquetExtract", "inputURI": "s3a://bucket/facts/*.parquet", "outputView": "p"})
    text = _one({"type": "TextExtract", "inputURI": "/d/*.txt", "outputView": "t", "multiLine": True})
    assert (json_doc.path, json_doc.format, json_doc.multi_line) == ("/d/*.json", "json", True)
    assert (json_lines.path, json_lines.format) == ("/d/a.json,/d/b.json", "jsonl")
    assert (parquet.path, parquet.format) == ("s3a://bucket/facts/*.parquet", "parquet")
    assert (text.format, text.multi_line) == ("text", True)


@pytest.mark.parametrize(
    ("options", "travel"),
    [
        (None, {}),
        ({"versionAsOf": 3}, {"version": 3}),
        ({"relativeVersion": -2}, {"relative_version": -2}),
        ({"timestampAsOf": "2024-01-01 00:00:00", "canReturnLastCommit": True}, {"timestamp": "2024-01-01 00:00:00"}),
    ],
)
def test_delta_extract(options: dict[str, Any] | None, travel: dict[str, Any]) -> None:
    arc: dict[str, Any] = {"type": "DeltaLakeExtract", "inputURI": "lake/orders", "outputView": "o"}
    if options is not None:
        arc["options"] = options
    s = _one(arc)
    assert isinstance(s, ExtractStage) and s.uri == "/work/lake/orders" and s.path is None
    given = {k: getattr(s, k) for k in ("version", "relative_version", "timestamp") if getattr(s, k) is not None}
    assert given == travel


def test_typing(tmp_path: Path) -> None:
    schema = [{"name": "id", "type": "integer", "nullable": False}, {"name": "n", "type": "string"}]
    (tmp_path / "s.json").write_text(json.dumps(schema))
    (tmp_path / "s.schema").write_text(json.dumps(schema))
    base = {"type": "TypingTransform", "inputView": "raw", "outputView": "typed"}
    by_file = _one({**base, "schemaURI": str(tmp_path / "s.json"), "failMode": "failfast"})
    other_suffix = _one({**base, "schemaURI": "s.schema"}, cwd=tmp_path)
    inline = _one({**base, "schema": schema})
    assert isinstance(by_file, TypingStage)
    assert (by_file.schema_file, by_file.by_position, by_file.fail_mode) == (str(tmp_path / "s.json"), True, "failfast")
    assert other_suffix.schema_file is None and [f.name for f in other_suffix.arc_fields] == ["id", "n"]
    assert inline.arc_fields[0].nullable is False and inline.by_position and inline.fail_mode == "permissive"
    with pytest.raises(ConfigError, match=r"schema file '.*missing.json' does not exist"):
        _one({**base, "schemaURI": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="'schemaView' is not supported by Tarn"):
        _one({**base, "schemaView": "v"})


def test_sql_stages_keep_sql_params_as_stage_params() -> None:
    spec = _map(
        {
            "type": "SQLTransform",
            "name": "t",
            "sql": "SELECT * FROM ${ view } WHERE n > ${n}",
            "sqlParams": {"view": "v", "n": 3},
            "outputView": "o",
            "persist": True,
        },
        {"type": "SQLValidate", "name": "v", "sql": "SELECT true, 'ok'"},
        {"type": "LogExecute", "name": "l", "sql": "SELECT * FROM o"},
        {"type": "ConfigExecute", "name": "c", "sql": "SELECT TO_JSON(NAMED_STRUCT('a', 1))"},
    )
    t, v, lg, c = spec.stages
    assert isinstance(t, SqlStage) and t.sql == "SELECT * FROM ${view} WHERE n > ${n}"
    assert (t.params, t.output, t.persist) == ({"view": "v", "n": "3"}, "o", True)
    assert isinstance(v, ValidateStage) and isinstance(lg, LogStage) and isinstance(c, ConfigStage)
    assert c.provides is None  # Arc's ConfigExecute may set any variable
    assert check_placeholders(spec).problems == []


def test_sql_param_names_tarn_cannot_hold_are_applied_while_mapping() -> None:
    s = _one({"type": "SQLTransform", "sql": "SELECT ${a.b} AS x", "sqlParams": {"a.b": "1"}, "outputView": "o"})
    assert (s.sql, s.params) == ("SELECT 1 AS x", {})


@pytest.mark.parametrize(
    "sql",
    [
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET *",
        "-- a comment\n/* and another */\n  merge into t using s on t.id = s.id when matched then delete",
    ],
)
def test_merge_into_becomes_an_execute_stage(sql: str) -> None:
    s = _one({"type": "SQLTransform", "sql": sql})
    assert isinstance(s, ExecuteStage) and s.sql == sql


def test_sql_transform_errors() -> None:
    with pytest.raises(ConfigError, match="needs 'outputView'"):
        _one({"type": "SQLTransform", "sql": "SELECT 1"})
    with pytest.raises(ConfigError, match="MERGE INTO statement produces no view"):
        _one(
            {"type": "SQLTransform", "sql": "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "outputView": "o"}
        )
    with pytest.raises(ConfigError, match="'my view'"):
        _one({"type": "SQLTransform", "sql": "SELECT 1", "outputView": "my view"})


def test_sql_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("SELECT * FROM ${t} WHERE d >= '${ETL_CONF_DAY}'")
    (tmp_path / "bad.sql").write_text("SELECT ${ETL_CONF_NOWHERE}")
    (tmp_path / "extra.sql").write_text("SELECT 1")
    base = {"type": "SQLTransform", "outputView": "o", "sqlParams": {"t": "v"}}
    s = _one({**base, "inputURI": "q.sql"}, cwd=tmp_path, variables={"ETL_CONF_DAY": "2024-05-01"})
    assert (s.sql, s.params) == ("SELECT * FROM ${t} WHERE d >= '2024-05-01'", {"t": "v"})
    with pytest.raises(ConfigError, match=r"job variable \$\{ETL_CONF_NOWHERE\} not set"):
        _one({"type": "SQLTransform", "outputView": "o", "inputURI": str(tmp_path / "bad.sql")})
    with pytest.raises(ConfigError, match=r"sqlParams 't' has no \$\{t\} placeholder"):
        _one({**base, "inputURI": str(tmp_path / "extra.sql")})
    with pytest.raises(ConfigError, match=r"the SQL file '.*nope.sql' does not exist"):
        _one({**base, "inputURI": str(tmp_path / "nope.sql")})
    lazy = _one(
        {"type": "SQLTransform", "outputView": "o", "resolution": "lazy", "inputURI": str(tmp_path / "bad.sql")}
    )
    assert lazy.sql == "SELECT ${ETL_CONF_NOWHERE}"  # resolved at run time, after a ConfigExecute
    with pytest.raises(ConfigError, match="holds a variable that is set only while the job runs"):
        _one({"type": "SQLTransform", "outputView": "o", "resolution": "lazy", "inputURI": "${ETL_CONF_X}/a.sql"})


@pytest.mark.parametrize(
    ("save_mode", "mode", "if_exists"),
    [
        ("Overwrite", "overwrite", "write"),
        ("Append", "append", "write"),
        ("ErrorIfExists", "append", "error"),
        ("Ignore", "append", "ignore"),
    ],
)
@pytest.mark.parametrize(
    ("arc_type", "fmt"), [("DeltaLakeLoad", "delta"), ("ParquetLoad", "parquet"), ("JSONLoad", "jsonl")]
)
def test_loads_and_save_modes(save_mode: str, mode: str, if_exists: str, arc_type: str, fmt: str) -> None:
    s = _one({"type": arc_type, "inputView": "v", "outputURI": "out/t", "saveMode": save_mode})
    assert isinstance(s, LoadStage)
    assert (s.input, s.path, s.table, s.format, s.mode, s.if_exists) == ("v", "/work/out/t", None, fmt, mode, if_exists)


def test_default_save_mode_is_overwrite_and_delta_options() -> None:
    s = _one({"type": "DeltaLakeLoad", "inputView": "v", "outputURI": "/t", "partitionBy": ["a"], "numPartitions": 3})
    assert (s.mode, s.partition_by) == ("overwrite", ("a",))
    rw = _one({"type": "DeltaLakeLoad", "inputView": "v", "outputURI": "/t", "replaceWhere": "d = '2024-01-01'"})
    assert (rw.mode, rw.predicate) == ("replace_where", "d = '2024-01-01'")
    with pytest.raises(ConfigError, match="'replaceWhere' needs saveMode Overwrite"):
        _one({"type": "DeltaLakeLoad", "inputView": "v", "outputURI": "/t", "replaceWhere": "x", "saveMode": "Append"})


def test_delimited_load() -> None:
    s = _one({"type": "DelimitedLoad", "inputView": "v", "outputURI": "/o", "header": True, "saveMode": "Append"})
    assert (s.format, s.mode) == ("csv", "append")
    with pytest.raises(ConfigError, match="writing CSV with delimiter Pipe, header false is not supported"):
        _one({"type": "DelimitedLoad", "inputView": "v", "outputURI": "/o", "delimiter": "Pipe"})
    with pytest.raises(ConfigError, match="'partitionBy' on a file load is not supported"):
        _one({"type": "ParquetLoad", "inputView": "v", "outputURI": "/o", "partitionBy": ["a"]})


def test_merge_load_clauses_in_arc_order() -> None:
    base = {
        "type": "DeltaLakeMergeLoad",
        "inputView": "changes",
        "outputURI": "/lake/c",
        "condition": "source.id = target.id",
        "whenMatchedUpdate": {"condition": "source.x <> target.x", "values": {"x": "source.x"}},
        "whenMatchedDelete": {"condition": "source.gone"},
        "whenNotMatchedByTargetInsert": {},
        "whenNotMatchedBySourceDelete": {},
        "partitionBy": ["p"],
    }
    s = _one(base)
    assert isinstance(s, LoadStage)
    assert (s.mode, s.on, s.path, s.create_if_missing, s.partition_by) == (
        "merge", "source.id = target.id", "/lake/c", False, ("p",),
    )  # fmt: skip
    assert [(c.action, c.condition, c.set) for c in s.when_matched or ()] == [
        ("delete", "source.gone", None),
        ("update", "source.x <> target.x", {"x": "source.x"}),
    ]
    assert [(c.action, c.condition, c.set) for c in s.when_not_matched or ()] == [("insert", None, None)]
    assert [(c.action, c.condition) for c in s.when_not_matched_by_source] == [("delete", None)]

    later = _one({**base, "whenMatchedDeleteFirst": False, "createTableIfNotExists": True})
    assert [c.action for c in later.when_matched or ()] == ["update", "delete"] and later.create_if_missing
    bare = _one({"type": "DeltaLakeMergeLoad", "inputView": "c", "outputURI": "/t", "condition": "source.a = target.a"})
    assert (bare.when_matched, bare.when_not_matched, bare.when_not_matched_by_source) == ((), (), ())


def test_equality_validate() -> None:
    s = _one({"type": "EqualityValidate", "leftView": "a", "rightView": "b"})
    assert isinstance(s, EqualStage) and (s.left, s.right) == ("a", "b")


def test_what_tarn_cannot_do_is_an_error_naming_stage_and_key() -> None:
    with pytest.raises(ConfigError, match=r"stage 1 's' \(DelimitedExtract\): reading from 'inputView'"):
        _one({"type": "DelimitedExtract", "inputView": "lines", "outputView": "o"})
    with pytest.raises(ConfigError, match="'schemaURI' on an extract is not supported"):
        _one({"type": "JSONExtract", "inputURI": "/a.json", "schemaURI": "/s.json", "outputView": "o"})
    with pytest.raises(ConfigError, match="'schemaView' on an extract"):
        _one({"type": "ParquetExtract", "inputURI": "/a.parquet", "schemaView": "s", "outputView": "o"})


def test_an_empty_job_is_an_error() -> None:
    with pytest.raises(ConfigError, match="has no stages"):
        _map()


def test_parse_level_jobs_name_what_tarn_cannot_run() -> None:
    """tests/arc/jobs' parse-level jobs use keys Tarn cannot honour; mapping names them."""
    arc_jobs = Path(__file__).parents[1] / "arc" / "jobs"
    variables = {"ETL_CONF_DATA_URL": "/data", "ETL_CONF_JOB_URL": str(JOBS), "ETL_CONF_LAKE_URL": "/lake"}
    with pytest.raises(ConfigError, match=r"'csv export' .*writing CSV with delimiter Custom, quote None"):
        pipeline_from_arc_file(arc_jobs / "loads.json", variables)
    with pytest.raises(ConfigError, match=r"'custom delimiter from a view' .*'inputView'"):
        pipeline_from_arc_file(arc_jobs / "extracts.conf", variables)


def test_relative_locations_start_at_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"stages": [{"type": "DeltaLakeLoad", "name": "l", "inputView": "v", "outputURI": "o/t"}]})
    )
    monkeypatch.chdir(tmp_path / "..")
    load = pipeline_from_arc_file(job).stages[0]
    assert isinstance(load, LoadStage) and load.path == str(tmp_path.parent / "o" / "t")


def test_if_exists_is_only_for_append_and_overwrite() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'if_exists' only applies to mode 'append' or 'overwrite'"):
        LoadStage(type="load", name="m", input="v", table="t", mode="merge", keys=("id",), if_exists="error")
    assert LoadStage(type="load", name="o", input="v", path="/x", format="parquet", if_exists="ignore").mode == "append"
