"""Fixtures for pipeline tests: a real project folder, a real Lake (SQLite metastore, Delta tables under
tmp_path), pipeline YAML written into ``pipelines/``, and helpers to run pipelines and read tables.

Every test using ``project`` runs twice: on DuckDB and on Spark (``engine: {name: spark, master: local[2]}`` in the
project's ``tarn.yaml``; marked ``spark`` and ``slow``), with the same assertions — the inline test pipelines'
share of the equivalence suite (issue #5; tests/spark/test_equivalence.py compares the other pipelines table by
table). Both variants share the process's one Spark session, started with the settings of tests/spark.

What is engine-specific by nature is written per engine (e.g. the statement that defines a function); a known
engine difference not fixed yet is ``@pytest.mark.spark_xfail("what differs")``: a strict xfail of the Spark
variant."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from tarn.engines import spark_session
from tarn.lake import Lake
from tarn.pipelines import api
from tarn.pipelines.context import RunResult

# The Spark settings of tests/spark (one process has one Spark session: whichever test starts it, it is the same).
sys.path.insert(0, str(Path(__file__).parent.parent / "spark"))
from spark_equivalence import MASTER, SPARK_CONF

ENGINES = [
    pytest.param("duckdb", id="duckdb"),
    pytest.param(
        "spark",
        id="spark",
        marks=[
            pytest.mark.spark,
            pytest.mark.slow,
            # pyspark leaves the sockets of its result transfers to the garbage collector
            pytest.mark.filterwarnings("ignore::ResourceWarning"),
            pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
        ],
    ),
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spark_xfail(reason): the test's Spark variant is a strict xfail")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        callspec = getattr(item, "callspec", None)
        if not item.path.is_relative_to(here) or callspec is None or callspec.params.get("engine") != "spark":
            continue
        if (m := item.get_closest_marker("spark_xfail")) is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"Spark differs: {m.args[0]}"))


@dataclass
class Project:
    """A project with a lake; write pipelines and data, run them, read the results."""

    dir: Path
    lake: Lake
    engine: str

    def pipeline(self, doc: dict[str, Any], *, file: str | None = None) -> Path:
        path = self.dir / "pipelines" / (file or f"{doc['name']}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def file(self, rel: str, text: str) -> Path:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def run(self, name: str, **kw: Any) -> RunResult:
        return api.run(self.lake, name, **kw)

    def uri(self, table: str) -> str:
        zone, name = table.split(".")
        return self.lake.storage.table_uri(zone, name)

    def seed(self, table: str, data: pa.Table | dict[str, list[Any]], *, mode: str = "append") -> int:
        """Write rows to a lake table directly (not through a pipeline) and catalogue it."""
        t = data if isinstance(data, pa.Table) else pa.table(data)
        uri = self.uri(table)
        write_deltalake(uri, t, mode=mode)  # type: ignore[call-overload]
        version = int(DeltaTable(uri).version())
        from tarn.tables import delta

        self.lake.meta.catalog.record(
            table, zone=table.split(".")[0], location=uri, columns=delta.columns(uri), delta_version=version
        )
        return version

    def rows(self, table: str, order_by: str | None = None) -> list[dict[str, Any]]:
        t = DeltaTable(self.uri(table) if "/" not in table else table).to_pyarrow_table()
        rows = t.to_pylist()
        if order_by:
            rows.sort(key=lambda r: tuple((r[k] is None, r[k]) for k in order_by.split(",")))
        return rows

    def version(self, table: str) -> int | None:
        uri = self.uri(table) if "/" not in table else table
        return int(DeltaTable(uri).version()) if DeltaTable.is_deltatable(uri) else None

    def step(self, result: RunResult, name: str) -> dict[str, Any]:
        for s in result.steps:
            if s["name"] == name:
                return s
        raise AssertionError(f"no step {name!r} in {[s['name'] for s in result.steps]}")


@pytest.fixture(scope="session")
def spark_started() -> Iterator[None]:
    """The process's Spark session, started once (tests/spark's ``spark`` fixture gets the same one)."""
    pytest.importorskip("pyspark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark_session.get_session(MASTER, SPARK_CONF)
    yield
    spark_session.stop_session()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine the project's pipelines run on."""
    if request.param == "spark":
        request.getfixturevalue("spark_started")
    return str(request.param)


@pytest.fixture
def project(tmp_path: Path, engine: str) -> Iterator[Project]:
    d = tmp_path / "proj"
    (d / "pipelines").mkdir(parents=True)
    config: dict[str, Any] = {"name": "test_lake", "lake": {"root": "lake"}, "datasets": []}
    if engine == "spark":
        config["engine"] = {"name": "spark", "master": MASTER, "conf": SPARK_CONF}
    (d / "tarn.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lake = Lake(d)
    try:
        yield Project(d, lake, engine)
    finally:
        lake.close()


@pytest.fixture
def orders_csv(project: Project) -> Callable[[int], Path]:
    """``data/orders.csv`` with ``n`` rows: order_id, customer_id, amount, status (every 25th amount is 'n/a')."""

    def make(n: int = 100) -> Path:
        lines = ["order_id,customer_id,amount,status"]
        for i in range(1, n + 1):
            amount = "n/a" if i % 25 == 0 else f"{i * 1.5:.2f}"
            lines.append(f"{i},{i % 7},{amount},{'placed' if i % 2 else 'shipped'}")
        return project.file("data/orders.csv", "\n".join(lines) + "\n")

    return make
