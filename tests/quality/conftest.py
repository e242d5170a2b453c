"""Fixtures for the quality tests: the pipeline tests' project fixture."""

from __future__ import annotations

from tests.pipelines.conftest import Project, project

__all__ = ["Project", "project"]
