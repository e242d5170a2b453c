"""HOCON jobs: leniencies, variables, and the errors a person writing a job will meet."""

from __future__ import annotations

from pathlib import Path

import pytest

from tarn.arc import load_arc_job, parse_hocon_job
from tarn.arc.stages import DelimitedExtract, SQLTransform, TypingTransform
from tarn.errors import ConfigError

EXTRACT = """
{{
  "stages": [
    {{
      "type": "DelimitedExtract",
      "name": "extract",
      {key}: {value},
      "outputView": "raw"
    }}
  ]
}}
"""


def _extract(key: str, value: str, variables: dict[str, str] | None = None) -> DelimitedExtract:
    job = parse_hocon_job(EXTRACT.format(key=key, value=value), variables)
    (stage,) = job.stages
    assert isinstance(stage, DelimitedExtract)
    return stage


def test_hocon_leniencies() -> None:
    text = '''
    # a hash comment
    // a slash comment
    base = "/data"
    stages = [
      {
        type = SQLTransform            # unquoted strings, '=' instead of ':'
        name: "lenient"
        sql: """SELECT 'a "quoted" word'
                FROM t"""
        outputView: v                  // no comma at the end of lines
        environments: [a, b,]          # a trailing comma
        params { dir: ${base}"/in" }   // an object without ':'; concatenation
      },
    ]
    '''
    (stage,) = parse_hocon_job(text).stages
    assert isinstance(stage, SQLTransform)
    assert stage.sql == "SELECT 'a \"quoted\" word'\n                FROM t"
    assert stage.environments == ("a", "b")
    assert stage.params == {"dir": "/data/in"}


def test_empty_strings_in_lists_survive() -> None:
    # pyhocon alone drops "" from lists (chimpler/pyhocon#232); Arc's nullableValues need it
    text = """{stages: [{
      type: TypingTransform, name: t, inputView: a, outputView: b,
      schema: [{name: x, type: string, nullableValues: ["", "null", ""], description: ""}]
    }]}"""
    (stage,) = parse_hocon_job(text).stages
    assert isinstance(stage, TypingTransform) and stage.schema_ is not None
    assert stage.schema_[0].nullable_values == ("", "null", "")
    assert stage.schema_[0].description == ""


def test_variables_from_the_command_line_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_CONF_DATA_URL", "/from/env")
    assert _extract('"inputURI"', '${ETL_CONF_DATA_URL}"/in.csv"').input_uri == "/from/env/in.csv"
    assert (
        _extract('"inputURI"', '${ETL_CONF_DATA_URL}"/in.csv"', {"ETL_CONF_DATA_URL": "s3a://bucket"}).input_uri
        == "s3a://bucket/in.csv"
    )


def test_concatenation_forms() -> None:
    variables = {"BUCKET": "lake", "DAY": "2024-01-02"}
    assert _extract('"inputURI"', '"s3a://"${BUCKET}"/in/"${DAY}".csv"', variables).input_uri == (
        "s3a://lake/in/2024-01-02.csv"
    )
    assert _extract('"inputURI"', "${BUCKET}", variables).input_uri == "lake"


def test_optional_substitution_may_be_unset() -> None:
    stage = _extract('"inputURI"', '"/in.csv", "description": ${?ETL_CONF_NOTE}', {})
    assert stage.description is None


def test_missing_variable_names_it_and_says_how_to_pass_it() -> None:
    with pytest.raises(ConfigError) as info:
        _extract('"inputURI"', '${ETL_CONF_DATA_URL}"/in.csv"', {"ETL_CONF_OTHER": "x"})
    error = info.value
    assert error.message == "stage 1 'extract' (DelimitedExtract): job variable ${ETL_CONF_DATA_URL} not set"
    assert error.hint is not None and "--ETL_CONF_DATA_URL=value" in error.hint


def test_all_missing_variables_of_a_stage_are_named() -> None:
    with pytest.raises(ConfigError, match=r"variables \$\{A\}, \$\{B\} not set") as info:
        _extract('"inputURI"', '${A}"/"${B}', {})
    assert info.value.hint is not None and "--A=value --B=value" in info.value.hint


def test_missing_variable_in_the_example_names_the_stage(examples: Path, variables: dict[str, str]) -> None:
    del variables["ETL_CONF_LAKE_URL"]
    with pytest.raises(ConfigError, match=r"stage 5 'load orders' \(DeltaLakeLoad\): job variable"):
        load_arc_job(examples / "orders_job.conf", variables)


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        _extract('"inputURI"', '"in.csv", "outputVeiw": "x"')
    error = info.value
    assert error.message == (
        "stage 1 'extract' (DelimitedExtract): unknown key 'outputVeiw' (did you mean 'outputView'?)"
    )
    assert error.hint is not None and error.hint.startswith("valid keys: type, name, description")
    assert "customDelimiter" in error.hint


def test_unknown_keys_inside_nested_objects_suggest_from_the_right_model() -> None:
    text = """{stages: [{type: TypingTransform, name: t, inputView: a, outputView: b,
                          schema: [{name: x, type: string, nullabel: true}]}]}"""
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    assert "unknown key 'nullabel' in 'schema[0]' (did you mean 'nullable'?)" in info.value.message

    text = """{stages: [{type: DeltaLakeMergeLoad, name: m, inputView: a, outputURI: b, condition: "x",
                          whenMatchedUpdate: {condtion: "y"}}]}"""
    with pytest.raises(ConfigError, match=r"'condtion' in 'whenMatchedUpdate' \(did you mean 'condition'\?\)"):
        parse_hocon_job(text)


def test_unknown_stage_type_suggests_the_right_one() -> None:
    text = '{"stages": [{"type": "SQLTransfrom", "name": "oops", "sql": "SELECT 1"}]}'
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    assert info.value.message == "stage 1 'oops': unknown stage type 'SQLTransfrom' (did you mean 'SQLTransform'?)"
    assert info.value.hint is not None and "DeltaLakeMergeLoad" in info.value.hint


def test_arc_stage_type_tarn_does_not_run() -> None:
    text = """{"stages": [{"type": "JSONLoad", "name": "j", "inputView": "a", "outputURI": "b"},
                          {"type": "KafkaExtract", "name": "k"}]}"""
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    assert info.value.message == "stage 2 'k': Arc stage type 'KafkaExtract' is not supported by Tarn"


def test_missing_type() -> None:
    with pytest.raises(ConfigError, match=r"stage 1 'x': missing 'type'"):
        parse_hocon_job('{"stages": [{"name": "x"}]}')


def test_bad_value_suggests_an_allowed_one() -> None:
    text = """{"stages": [{"type": "ParquetLoad", "name": "p", "inputView": "a", "outputURI": "b",
                             "saveMode": "overwrite"}]}"""
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    assert info.value.message == (
        "stage 1 'p' (ParquetLoad): 'saveMode' is 'overwrite', not one of "
        "'Append', 'ErrorIfExists', 'Ignore', 'Overwrite' (did you mean 'Overwrite'?)"
    )


def test_every_problem_of_a_stage_is_reported_at_once() -> None:
    text = '{"stages": [{"type": "JSONLoad", "name": "j", "inputVeiw": "a", "saveMode": "Apend"}]}'
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    message = info.value.message
    assert "missing required key 'inputView'" in message
    assert "missing required key 'outputURI'" in message
    assert "unknown key 'inputVeiw' (did you mean 'inputView'?)" in message
    assert "(did you mean 'Append'?)" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"stage": []}', "Arc job has no 'stages' (did you mean 'stage'?)"),
        ('{"stages": {"a": 1}}', "Arc job: 'stages' must be a list, not dict"),
        ('{"stages": ["SELECT 1"]}', "stage 1 must be an object ({...}), not str"),
        ('{"stages": [], "plugins": [1]}', "Arc job: 'plugins' must be an object, not list"),
        ("[1, 2]", "Arc job must be an object ({...}), not ConfigList"),
    ],
)
def test_job_shape_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    assert info.value.message == message


def test_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.conf"
    path.write_text('{\n  "stages": [\n    {"type": "SQLValidate", "name": "x"\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^Arc job '.*broken.conf' is not valid HOCON/JSON at line \d+"):
        load_arc_job(path)


def test_sql_params_are_checked_at_load() -> None:
    text = """{"stages": [{"type": "SQLValidate", "name": "v", "sql": "SELECT ${ok}",
                             "sqlParams": {"ok": "TRUE", "extra": 1}}]}"""
    with pytest.raises(ConfigError) as info:
        parse_hocon_job(text)
    assert info.value.message == "stage 1 'v' (SQLValidate): sqlParams 'extra' has no ${extra} placeholder in the SQL"


def test_job_variables_in_quoted_sql_are_resolved_but_params_win() -> None:
    text = """{stages: [{type: SQLTransform, name: s, outputView: o,
                sql: "SELECT '${ETL_CONF_DAY}' AS day, ${n} AS n", sqlParams: {n: 5}}]}"""
    (stage,) = parse_hocon_job(text, {"ETL_CONF_DAY": "2024-01-02", "n": "not used: n is a param"}).stages
    assert isinstance(stage, SQLTransform)
    assert stage.sql == "SELECT '2024-01-02' AS day, ${n} AS n"
    assert stage.sql_params == {"n": "5"}
