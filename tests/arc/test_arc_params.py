"""sqlParams and job-variable substitution."""

from __future__ import annotations

import pytest

from tarn.arc.params import apply_sql_params, lookup_variable, sql_placeholders, substitute_variables
from tarn.errors import ConfigError


def test_apply_replaces_every_placeholder() -> None:
    sql = "SELECT ${col}, '${ day }' FROM ${table} WHERE x = ${col}"
    params = {"col": "a", "day": "2024-01-01", "table": "t"}
    assert apply_sql_params(sql, params, "stage 1") == "SELECT a, '2024-01-01' FROM t WHERE x = a"
    assert sql_placeholders(sql) == ["col", "day", "table"]


def test_values_are_inserted_literally() -> None:
    assert apply_sql_params("SELECT ${v}", {"v": r"'\1 ${x}'"}, "s") == r"SELECT '\1 ${x}'"


def test_hive_style_placeholders_are_left_alone() -> None:
    assert apply_sql_params("SELECT ${hiveconf:x}", {}, "s") == "SELECT ${hiveconf:x}"


def test_param_without_placeholder_names_the_stage() -> None:
    with pytest.raises(ConfigError) as info:
        apply_sql_params("SELECT 1", {"unused": "x"}, "stage 3 'good orders' (SQLTransform)")
    assert info.value.message == (
        "stage 3 'good orders' (SQLTransform): sqlParams 'unused' has no ${unused} placeholder in the SQL"
    )
    assert info.value.hint == "use ${unused} in the SQL or remove 'unused' from sqlParams"


def test_placeholder_without_param_names_the_stage() -> None:
    with pytest.raises(ConfigError) as info:
        apply_sql_params("SELECT * FROM ${typed}", {}, "stage 3 'good orders' (SQLTransform)")
    assert info.value.message == (
        "stage 3 'good orders' (SQLTransform): the SQL uses ${typed} but sqlParams has no 'typed'"
    )
    assert info.value.hint is not None and "--typed=value" in info.value.hint


def test_a_typo_is_reported_both_ways_with_suggestions() -> None:
    with pytest.raises(ConfigError) as info:
        apply_sql_params("SELECT * FROM ${source}", {"sourse": "t"}, "s")
    assert "sqlParams has no 'source' (did you mean 'sourse'?)" in info.value.message
    assert "sqlParams 'sourse' has no ${sourse} placeholder in the SQL (did you mean 'source'?)" in info.value.message


def test_substitute_variables_skips_params_and_reports_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_CONF_ENV", "from env")
    text = "${ETL_CONF_A} ${ETL_CONF_ENV} ${p} ${ETL_CONF_UNSET} ${ETL_CONF_UNSET}"
    result, unset = substitute_variables(text, [{"ETL_CONF_A": "a", "p": "variable"}], skip=["p"])
    assert result == "a from env ${p} ${ETL_CONF_UNSET} ${ETL_CONF_UNSET}"
    assert unset == ["ETL_CONF_UNSET"]


def test_lookup_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_CONF_V", "environment")
    assert lookup_variable("ETL_CONF_V", [{"ETL_CONF_V": "command line"}, {"ETL_CONF_V": "%env"}]) == "command line"
    assert lookup_variable("ETL_CONF_V", [{}, {"ETL_CONF_V": "%env"}]) == "%env"
    assert lookup_variable("ETL_CONF_V", [{}, {}]) == "environment"
    assert lookup_variable("ETL_CONF_NONE", []) is None
