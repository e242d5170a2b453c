"""Fixtures for the quality tests: the pipeline tests' project fixture, on both engines (the expectation
actions' counts and quarantines must be the same on DuckDB and on Spark)."""

from __future__ import annotations

from tests.pipelines.conftest import ENGINES, Project, engine, project, spark_started

__all__ = ["ENGINES", "Project", "engine", "project", "spark_started"]
