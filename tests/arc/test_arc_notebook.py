"""Arc notebooks: stage cells, magics, %env, arguments and their errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tarn.arc import load_arc_job, parse_notebook
from tarn.arc.stages import (
    ConfigExecute,
    DelimitedExtract,
    DeltaLakeLoad,
    LogExecute,
    SQLTransform,
    SQLValidate,
)
from tarn.errors import ConfigError

WriteNotebook = Callable[..., Path]


def test_every_magic(jobs: Path) -> None:
    job = load_arc_job(jobs / "all_magics.ipynb", {"ETL_CONF_DATA_URL": "/d", "ETL_CONF_LAKE_URL": "/l"})
    assert [stage.type for stage in job.stages] == [
        "DelimitedExtract",
        "SQLTransform",
        "SQLValidate",
        "LogExecute",
        "ConfigExecute",
        "DeltaLakeLoad",
        "SQLTransform",
    ]
    extract, select, validate, log, config, load, bare = job.stages

    assert isinstance(extract, DelimitedExtract)
    assert extract.input_uri == "/d/base/in.csv"  # %env value built from a command-line variable

    assert isinstance(select, SQLTransform)
    assert (select.name, select.description, select.output_view) == ("select everything", "all of it", "everything")
    assert select.environments == ("production", "test")
    assert (select.persist, select.num_partitions, select.partition_by) == (True, 3, ("a", "b"))
    assert select.sql_params == {"tbl": "raw", "greeting": "hello world"}  # ${VAR} in arguments resolved
    assert select.sql == "SELECT *, '${greeting}' AS greeting, 1 AS a\nFROM ${tbl}"  # ${ETL_CONF_A} resolved

    assert isinstance(validate, SQLValidate) and validate.environments == ("test",)
    assert isinstance(log, LogExecute) and log.sql == "SELECT COUNT(*) AS n FROM everything"
    assert isinstance(config, ConfigExecute) and config.sql_params == {"view": "everything"}

    assert isinstance(load, DeltaLakeLoad)  # %arc: the object, plus the arguments of its first line
    assert (load.output_uri, load.save_mode, load.environments) == ("/l/everything", "Append", ("production",))

    assert isinstance(bare, SQLTransform)  # no arguments: a default name, every environment
    assert (bare.name, bare.environments, bare.output_view) == ("sql cell 14", None, None)

    assert job.variables == {
        "ETL_CONF_BASE": "/d/base",
        "ETL_CONF_GREETING": "hello world",
        "ETL_CONF_A": "1",
        "ETL_CONF_B": "two",
        "ETL_CONF_DATA_URL": "/d",
        "ETL_CONF_LAKE_URL": "/l",
    }


def test_env_applies_only_to_later_cells(write_notebook: WriteNotebook) -> None:
    path = write_notebook(
        "%sql name=early\nSELECT '${ETL_CONF_X}' AS x",
        "%env\nETL_CONF_X=set",
        "%sql name=late\nSELECT '${ETL_CONF_X}' AS x",
    )
    with pytest.raises(ConfigError) as info:
        load_arc_job(path)
    # ${ETL_CONF_X} is neither a variable yet nor a sqlParam in the first cell
    assert info.value.message.startswith("stage 1 'early' (SQLTransform) in notebook cell 1: the SQL uses")


def test_env_later_cells_override_and_command_line_wins(
    write_notebook: WriteNotebook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_CONF_FROM_ENV", "environment")
    path = write_notebook(
        "%env ETL_CONF_X=first",
        "%env\nETL_CONF_X=second\nETL_CONF_Y='quoted value'\nETL_CONF_Z=${ETL_CONF_FROM_ENV}",
        "%sql name=s outputView=o sqlParams=x=${ETL_CONF_X},y=${ETL_CONF_Y},z=${ETL_CONF_Z}\n"
        "SELECT '${x}', '${y}', '${z}'",
    )
    (stage,) = load_arc_job(path).stages
    assert isinstance(stage, SQLTransform)
    assert stage.sql_params == {"x": "second", "y": "quoted value", "z": "environment"}

    (stage,) = load_arc_job(path, {"ETL_CONF_X": "command line"}).stages
    assert isinstance(stage, SQLTransform) and stage.sql_params["x"] == "command line"


def test_stage_cells_may_be_lists_of_lines_and_hocon(write_notebook: WriteNotebook) -> None:
    path = write_notebook(
        ["{\n", "  type: SQLValidate\n", "  name: lenient  # a comment\n", "  sql: \"SELECT TRUE, 'ok'\"\n", "}"],
        "# a cell of comments only",
        "%printschema\nanything",
    )
    (stage,) = load_arc_job(path).stages
    assert isinstance(stage, SQLValidate) and stage.name == "lenient"


def test_display_arguments_are_ignored(write_notebook: WriteNotebook) -> None:
    path = write_notebook(
        "%sql name=s outputView=o numRows=10 truncate=50 monospace=true leftAlign=true "
        "datasetLabels=true streamingDuration=5\nSELECT 1"
    )
    (stage,) = load_arc_job(path).stages
    assert isinstance(stage, SQLTransform) and stage.output_view == "o"


def test_unknown_magic_suggests_the_right_one(write_notebook: WriteNotebook) -> None:
    path = write_notebook("%sqll name=x\nSELECT 1")
    with pytest.raises(ConfigError) as info:
        load_arc_job(path)
    assert info.value.message == f"Arc notebook {str(path)!r}, cell 1: unknown magic %sqll (did you mean 'sql'?)"
    assert info.value.hint is not None and "%sqlvalidate" in info.value.hint


def test_unknown_magic_argument_suggests_the_right_key(write_notebook: WriteNotebook) -> None:
    path = write_notebook("%sql name=x outputVeiw=y\nSELECT 1")
    with pytest.raises(ConfigError) as info:
        load_arc_job(path)
    assert info.value.message == (
        "stage 1 'x' (SQLTransform) in notebook cell 1: unknown key 'outputVeiw' (did you mean 'outputView'?)"
    )


def test_missing_variable_in_magic_arguments(write_notebook: WriteNotebook) -> None:
    path = write_notebook('%sql name="scd columns" sqlParams=now=${ETL_CONF_NOW}\nSELECT ${now}')
    with pytest.raises(ConfigError) as info:
        load_arc_job(path)
    assert info.value.message == (
        "stage 1 'scd columns' (SQLTransform) in notebook cell 1: job variable ${ETL_CONF_NOW} not set"
    )
    assert info.value.hint is not None
    assert "--ETL_CONF_NOW=value" in info.value.hint and "%env" in info.value.hint


def test_lazy_magic_keeps_unset_variables(write_notebook: WriteNotebook) -> None:
    path = write_notebook(
        "%sql name=l resolution=lazy sqlParams=d=${ETL_CONF_DATES}\nSELECT * FROM t WHERE d IN (${d})"
    )
    (stage,) = load_arc_job(path).stages
    assert isinstance(stage, SQLTransform)
    assert (stage.resolution, stage.sql_params) == ("lazy", {"d": "${ETL_CONF_DATES}"})


def test_missing_variable_in_a_stage_cell(write_notebook: WriteNotebook) -> None:
    path = write_notebook(
        '{"type": "DelimitedExtract", "name": "e", "inputURI": ${ETL_CONF_DATA_URL}"/a.csv", "outputView": "r"}'
    )
    with pytest.raises(ConfigError, match=r"stage 1 'e' \(DelimitedExtract\) in notebook cell 1: job variable"):
        load_arc_job(path)


def test_missing_variable_in_env(write_notebook: WriteNotebook) -> None:
    path = write_notebook("%env\nETL_CONF_A=${ETL_CONF_NOPE}/x")
    with pytest.raises(ConfigError, match=r"cell 1 \(%env\): job variable \$\{ETL_CONF_NOPE\} not set"):
        load_arc_job(path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("%sql name=x\n   ", "stage 1 'x' (SQLTransform) in notebook cell 1: %sql has no SQL"),
        ('%sql name="unclosed\nSELECT 1', "cannot read the magic's arguments (No closing quotation)"),
        ("%sql persist\nSELECT 1", "'persist' is not key=value"),
        ("%sql sqlParams=a=1,b\nSELECT ${a}", "'b' is not key=value"),
        ("%sql name=a name=b\nSELECT 1", "argument 'name' is given twice"),
        ("%env\nnot an assignment", "'not an assignment' is not key=value"),
        ("%env\n1BAD=x", "'1BAD' is not a variable name"),
        ("SELECT * FROM t", "cell 1 is not valid HOCON/JSON at line 1"),
        ("%arc\n", "stage 1 in notebook cell 1: missing 'type'"),
    ],
)
def test_cell_errors(write_notebook: WriteNotebook, source: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_arc_job(write_notebook(source))
    assert message in info.value.message


def test_plain_sql_cell_hint(write_notebook: WriteNotebook) -> None:
    with pytest.raises(ConfigError) as info:
        load_arc_job(write_notebook("SELECT * FROM t"))
    assert info.value.hint is not None and "%sql" in info.value.hint


def test_sql_params_checked_for_magics(write_notebook: WriteNotebook) -> None:
    path = write_notebook("%sqlvalidate name=v sqlParams=inputVeiw=t\nSELECT TRUE, 'ok' FROM ${inputView}")
    with pytest.raises(ConfigError) as info:
        load_arc_job(path)
    assert info.value.message == (
        "stage 1 'v' (SQLValidate) in notebook cell 1: "
        "the SQL uses ${inputView} but sqlParams has no 'inputView' (did you mean 'inputVeiw'?); "
        "sqlParams 'inputVeiw' has no ${inputVeiw} placeholder in the SQL (did you mean 'inputView'?)"
    )


def test_not_an_arc_notebook(write_notebook: WriteNotebook) -> None:
    with pytest.raises(ConfigError, match=r"is not an Arc notebook \(kernelspec 'python3'\)"):
        load_arc_job(write_notebook("print(1)", kernel="python3"))


def test_notebook_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_arc_job(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_arc_job(tmp_path / "missing.ipynb")
    with pytest.raises(ConfigError, match="has no 'cells'"):
        parse_notebook({"worksheets": []})


def test_markdown_and_raw_cells_are_skipped() -> None:
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "%notamagic"},
            {"cell_type": "raw", "source": "{not hocon"},
            {"cell_type": "code", "source": "%log name=l\nSELECT 1"},
        ],
        "metadata": {},
    }
    (stage,) = parse_notebook(notebook).stages
    assert isinstance(stage, LogExecute)
