"""Spark tests: one real local Spark session for the whole test session (local[2], no UI, two shuffle
partitions, a small driver), reused by every test through the engine's ``newSession()``; real projects and
lakes as in the pipeline tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pyspark = pytest.importorskip("pyspark")

from spark_equivalence import MASTER, SPARK_CONF  # noqa: E402

from tarn.engines import spark_session  # noqa: E402
from tarn.lake import Lake  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.spark)
            # pyspark leaves the sockets of its result transfers to the garbage collector
            item.add_marker(pytest.mark.filterwarnings("ignore::ResourceWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"))


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)  # type: ignore[attr-defined]
    session = spark_session.get_session(MASTER, SPARK_CONF)
    yield session
    spark_session.stop_session()


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    (d / "pipelines").mkdir(parents=True)
    (d / "tarn.yaml").write_text("name: test_lake\nlake: {root: lake}\ndatasets: []\n")
    return d


@pytest.fixture
def lake(lake_dir: Path) -> Iterator[Lake]:
    lk = Lake(lake_dir)
    try:
        yield lk
    finally:
        lk.close()
