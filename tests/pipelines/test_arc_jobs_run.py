"""Tarn's own Arc jobs (tests/pipelines/arc_jobs), run end to end on real files and Delta tables, on DuckDB and
Spark: every stage type of FORMAT.md, every magic, every saveMode, and the failures (gates, failfast typing,
unsupported stages and magics)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from tarn.errors import ConfigError
from tarn.pipelines.context import RunResult

if TYPE_CHECKING:
    from tests.pipelines.conftest import Project

JOBS = Path(__file__).parent / "arc_jobs"
DATA = JOBS / "data"


@pytest.fixture(autouse=True)
def _no_etl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ETL_CONF_"):
            monkeypatch.delenv(name)


def _steps(r: RunResult) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in r.steps}


def _rows(uri: Path, key: str = "id") -> list[dict[str, Any]]:
    return sorted(DeltaTable(str(uri)).to_pyarrow_table().to_pylist(), key=lambda r: r[key])


def test_every_extract(project: Project, tmp_path: Path) -> None:
    """Delimited (pipe, custom, Hive; header or _c0 names), JSON (documents, lines), Parquet, text (lines,
    whole files) and Delta (latest, versionAsOf, relativeVersion, timestampAsOf): each checked inside the job."""
    (tmp_path / "facts").mkdir()
    pq.write_table(pa.table({"k": [1, 2, 3], "amount": [1.0, 2.0, 3.0]}), tmp_path / "facts" / "a.parquet")
    pq.write_table(pa.table({"k": [4, 5, 6], "amount": [4.0, 5.0, 6.0]}), tmp_path / "facts" / "b.parquet")
    versions = str(tmp_path / "versions")
    write_deltalake(versions, pa.table({"n": [1]}))
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    time.sleep(0.05)
    write_deltalake(versions, pa.table({"n": [2]}), mode="append")
    write_deltalake(versions, pa.table({"n": [3]}), mode="append")
    variables = {"ETL_CONF_DATA_URL": str(DATA), "ETL_CONF_TMP": str(tmp_path), "ETL_CONF_TS": between}

    r = project.run(str(JOBS / "extracts.conf"), env="test", variables=variables)

    assert r.ok, r.error
    steps = _steps(r)
    assert steps["only in production"]["state"] == "skipped"
    ran = [s for s in r.steps if s["state"] != "skipped"]
    assert all(s["state"] == "succeeded" for s in ran)
    assert {s["type"] for s in ran} == {"extract", "validate", "sql", "equal"}
    assert steps["people are text"]["detail"]["message"] == {"rows": 4}
    assert steps["as of a time"]["detail"]["version"] == 0
    assert steps["one version back"]["detail"]["version"] == 1
    assert steps["time travel"]["detail"]["message"] == {"latest": 3, "then": 1}


def test_typing_sql_validate_log_config(project: Project) -> None:
    variables = {"ETL_CONF_DATA_URL": str(DATA), "ETL_CONF_JOB_URL": str(JOBS), "ETL_CONF_SINCE": "2024-01-01"}

    r = project.run(str(JOBS / "transforms.conf"), variables=variables)

    assert r.ok, r.error
    steps = _steps(r)
    assert [s["type"] for s in r.steps] == [
        "extract", "typing", "typing", "validate", "validate", "sql", "sql", "sql", "equal", "log", "config", "sql",
        "validate",
    ]  # fmt: skip
    assert "people (2)" in steps  # two Arc stages named "people": names are made unique
    assert steps["type people (schema file)"]["detail"] == {"rows_with_errors": 1}
    assert steps["typing errors"]["detail"]["message"] == {"errors": 1}
    file_sql = steps["by country (SQL file)"]["sql"]
    assert "FROM people" in file_sql and "2024-01-01" in file_sql and "${" not in file_sql
    assert steps["log the countries"]["detail"]["rows"] == [
        {"country": "AU", "people": 1},
        {"country": "NZ", "people": 2},
    ]
    assert steps["largest id"]["detail"]["values"] == {"ETL_CONF_MAX_ID": "1", "ETL_CONF_COUNTRY": "NZ"}
    assert "id <= 1" in steps["lazy: ids below the largest"]["sql"]
    assert steps["lazy"]["detail"]["message"] == {"rows": 1}


def _seed_customers(out: Path) -> None:
    write_deltalake(
        str(out / "customers"),
        pa.table(
            {
                "id": [1, 2, 3, 4],
                "name": ["a", "b", "c", "d"],
                "active": [True, True, True, False],
                "deleted": [False] * 4,
            }
        ),
    )


def test_every_load(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _seed_customers(out)

    r = project.run(str(JOBS / "loads.conf"), env="test", variables={"ETL_CONF_OUT": str(out)})

    assert r.ok, r.error
    assert r.strategy == "deferred"
    # Overwrite (partitioned by country), then replaceWhere country = 'NZ'
    assert _rows(out / "people") == [
        {"id": 1, "name": "A2", "country": "NZ"},
        {"id": 2, "name": "b", "country": "AU"},
    ]
    assert DeltaTable(str(out / "people")).metadata().partition_columns == ["country"]
    assert [row["id"] for row in _rows(out / "people_log")] == [1, 2, 3]  # Append
    # merge: 2 deleted (matched, source.deleted), 1 updated, 4 deleted (not matched by source, inactive), 5 inserted
    assert _rows(out / "customers") == [
        {"id": 1, "name": "Ann", "active": True, "deleted": False},
        {"id": 3, "name": "c", "active": True, "deleted": False},
        {"id": 5, "name": "Eve", "active": True, "deleted": False},
    ]
    metrics = _steps(r)["merge customers"]["detail"]["metrics"]
    assert (metrics["num_target_rows_deleted"], metrics["num_target_rows_updated"]) == (2, 1)
    export = out / "export"
    parquet = pq.read_table(next((export / "people.parquet").glob("*.parquet")))
    assert sorted(parquet.column("id").to_pylist()) == [1, 2, 3]
    csv_lines = next((export / "people.csv").glob("*.csv")).read_text().splitlines()
    assert csv_lines[0] == "id,name,country" and len(csv_lines) == 4
    json_lines = next((export / "people.json").glob("*.jsonl")).read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in json_lines) == [1, 2, 3]

    # Again with Append: the log doubles, the JSON folder gets a second file
    again = project.run(str(JOBS / "loads.conf"), env="test", variables={"ETL_CONF_OUT": str(out)})
    assert again.ok, again.error
    assert len(_rows(out / "people_log")) == 6
    assert len(list((export / "people.json").glob("*.jsonl"))) == 2
    assert len(list((export / "people.parquet").glob("*.parquet"))) == 1  # Overwrite


def test_a_failing_validation_writes_nothing(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _seed_customers(out)
    assert project.run(str(JOBS / "loads.conf"), env="test", variables={"ETL_CONF_OUT": str(out)}).ok
    before = {t: DeltaTable(str(out / t)).version() for t in ("people", "people_log", "customers")}

    r = project.run(str(JOBS / "loads.conf"), env="gate", variables={"ETL_CONF_OUT": str(out)})

    assert not r.ok and r.error_stage == "the gate"
    gate = _steps(r)["the gate"]
    assert gate["detail"] == {"valid": False, "message": {"rows": 3, "needed": 100}}
    assert {t: DeltaTable(str(out / t)).version() for t in before} == before
    assert all(s["state"] == "skipped" for s in r.steps if s["type"] == "load")


def test_save_modes_error_if_exists_and_ignore(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = str(JOBS / "save_modes.conf")

    def run(number: int, env: str) -> RunResult:
        return project.run(job, env=env, variables={"ETL_CONF_OUT": str(out), "ETL_CONF_RUN": str(number)})

    first = run(1, "strict")
    assert first.ok, first.error
    files = {d: sorted(os.listdir(out / d)) for d in ("ignored_files", "once_files")}

    second = run(2, "strict")
    assert not second.ok
    assert second.error_stage == "files, ErrorIfExists" and "already exists" in (second.error or "")

    third = run(3, "lenient")
    assert third.ok, third.error
    assert _steps(third)["delta, Ignore"]["detail"]["metrics"] == {"skipped": "the target exists (if_exists: ignore)"}
    for table in ("ignored", "once"):
        assert DeltaTable(str(out / table)).version() == 0
        assert DeltaTable(str(out / table)).to_pyarrow_table().to_pylist() == [{"run": 1}]
    assert {d: sorted(os.listdir(out / d)) for d in files} == files


def test_every_magic(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = project.run(
        str(JOBS / "magics.ipynb"), env="test", variables={"ETL_CONF_DATA_URL": str(DATA), "ETL_CONF_OUT": str(out)}
    )

    assert r.ok, r.error
    assert [(s["name"], s["type"]) for s in r.steps] == [
        ("pairs", "extract"),
        ("with greeting", "sql"),
        ("two rows", "validate"),
        ("log greeted", "log"),
        ("largest id", "config"),
        ("lazy check", "validate"),
        ("save", "load"),
    ]
    assert _rows(out / "greeted") == [
        {"id": 1, "letter": "a", "greeting": "hello world"},
        {"id": 2, "letter": "b", "greeting": "hello world"},
    ]


def test_failfast_typing_fails_the_run(project: Project, tmp_path: Path) -> None:
    job = tmp_path / "failfast.conf"
    job.write_text(
        """{stages: [
          {type: DelimitedExtract, name: raw, inputURI: ${ETL_CONF_DATA_URL}"/people.psv", outputView: raw,
           delimiter: Pipe, quote: SingleQuote, header: true}
          {type: TypingTransform, name: typed, inputView: raw, outputView: typed, failMode: failfast,
           schemaURI: ${ETL_CONF_JOB_URL}"/schema_people.json"}
          {type: DeltaLakeLoad, name: save, inputView: typed, outputURI: ${ETL_CONF_OUT}"/typed"}
        ]}"""
    )
    variables = {"ETL_CONF_DATA_URL": str(DATA), "ETL_CONF_JOB_URL": str(JOBS), "ETL_CONF_OUT": str(tmp_path / "o")}
    r = project.run(str(job), variables=variables)
    assert not r.ok and r.error_stage == "typed"
    assert "failfast" in (r.error or "") and "joined" in (r.error or "")
    assert not (tmp_path / "o" / "typed").exists()


def test_equality_validate_failure_names_both_views(project: Project, tmp_path: Path) -> None:
    job = tmp_path / "equal.json"
    job.write_text(
        json.dumps(
            {
                "stages": [
                    {"type": "SQLTransform", "name": "l", "sql": "SELECT 1 AS a UNION ALL SELECT 2", "outputView": "l"},
                    {"type": "SQLTransform", "name": "r", "sql": "SELECT 1 AS a UNION ALL SELECT 3", "outputView": "r"},
                    {"type": "EqualityValidate", "name": "same", "leftView": "l", "rightView": "r"},
                ]
            }
        )
    )
    r = project.run(str(job))
    assert not r.ok and r.error_stage == "same"
    assert "1 row(s) only in 'l', 1 only in 'r'" in (r.error or "")
    assert _steps(r)["same"]["detail"]["sample_left"] == [{"a": 2}]


def test_unsupported_stage_type_is_an_error_naming_it(project: Project, tmp_path: Path) -> None:
    job = tmp_path / "jdbc.json"
    job.write_text(json.dumps({"stages": [{"type": "JDBCExtract", "name": "db", "outputView": "x"}]}))
    with pytest.raises(ConfigError, match="'JDBCExtract' is not supported by Tarn"):
        project.run(str(job))


def test_unknown_magic_is_an_error_with_did_you_mean(project: Project, tmp_path: Path) -> None:
    nb = tmp_path / "typo.ipynb"
    nb.write_text(
        json.dumps(
            {
                "cells": [{"cell_type": "code", "metadata": {}, "source": "%sqlvalidat\nSELECT true, 'x'"}],
                "metadata": {"kernelspec": {"name": "arc"}},
                "nbformat": 4,
                "nbformat_minor": 4,
            }
        )
    )
    with pytest.raises(ConfigError, match=r"unknown magic %sqlvalidat.*did you mean.*sqlvalidate"):
        project.run(str(nb))
