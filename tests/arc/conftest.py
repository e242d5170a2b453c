"""Fixtures for the Arc parsing tests: the job folders and a clean environment."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

JOBS = Path(__file__).parent / "jobs"
EXAMPLES = JOBS / "examples"

VARIABLES = {
    "ETL_CONF_DATA_URL": "/data",
    "ETL_CONF_JOB_URL": "/jobs",
    "ETL_CONF_LAKE_URL": "/lake",
    "ETL_CONF_CHANGED": "32",
    "ETL_CONF_SINCE": "2024-01-01",
}


@pytest.fixture(autouse=True)
def _no_etl_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Variables come only from what a test passes or sets: never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("ETL_CONF_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def jobs() -> Path:
    return JOBS


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def variables() -> dict[str, str]:
    return dict(VARIABLES)


@pytest.fixture
def write_notebook(tmp_path: Path) -> Callable[..., Path]:
    """Write an Arc notebook whose code cells hold the given sources; returns its path."""

    def write(*sources: str, kernel: str = "arc", name: str = "job.ipynb") -> Path:
        cells: list[dict[str, Any]] = [
            {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}
            for source in sources
        ]
        notebook = {
            "cells": cells,
            "metadata": {"kernelspec": {"display_name": kernel, "language": "javascript", "name": kernel}},
            "nbformat": 4,
            "nbformat_minor": 4,
        }
        path = tmp_path / name
        path.write_text(json.dumps(notebook), encoding="utf-8")
        return path

    return write
