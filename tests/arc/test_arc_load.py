"""load_arc_job dispatch and filter_environment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tarn.arc import filter_environment, load_arc_job
from tarn.errors import ConfigError


def test_dispatch_on_suffix(examples: Path, tmp_path: Path, variables: dict[str, str]) -> None:
    conf = load_arc_job(examples / "orders_job.conf", variables)
    as_json = tmp_path / "ORDERS.JSON"  # the suffix is matched case-insensitively
    shutil.copy(examples / "orders_job.conf", as_json)
    assert load_arc_job(as_json, variables).stages == conf.stages
    assert load_arc_job(str(examples / "customers_scd2.ipynb"), variables).source == (examples / "customers_scd2.ipynb")


def test_unknown_suffix_suggests_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_arc_job(tmp_path / "job.jsn")
    assert info.value.message.endswith("unknown suffix '.jsn' (did you mean '.json'?)")
    assert info.value.hint == "Arc jobs are .conf or .json (HOCON) files, or .ipynb notebooks"


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Arc job '.*nope.conf' does not exist"):
        load_arc_job(tmp_path / "nope.conf")


def test_filter_environment(jobs: Path, variables: dict[str, str]) -> None:
    job = load_arc_job(jobs / "loads.json", variables)
    assert [stage.name for stage in filter_environment(job, "test").stages] == [
        "append people",
        "merge customers",
        "json export",  # no "environments": runs everywhere
    ]
    assert len(filter_environment(job, "production").stages) == 5
    assert job.stages[0] is filter_environment(job, "test").stages[0]
    assert len(job.stages) == 5  # the job itself is unchanged (frozen)
