"""The embedded engine: DuckDB over the lake's Delta tables, named zone.table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from tarn.engines.duckdb import connect, referenced_tables, run_query
from tarn.errors import QueryError
from tarn.tables import delta


def test_referenced_tables_finds_zone_tables_and_skips_ctes() -> None:
    sql = (
        "WITH recent AS (SELECT * FROM stage.orders) "
        "SELECT * FROM recent JOIN quarantine.orders q USING (id) "
        "JOIN analytics.daily d ON true, other.thing"
    )
    assert sorted(referenced_tables(sql)) == [("analytics", "daily"), ("quarantine", "orders"), ("stage", "orders")]
    assert referenced_tables("SELECT 1") == []
    with pytest.raises(QueryError, match="does not parse"):
        referenced_tables("SELECT FROM (")


def test_run_query_registers_only_the_tables_the_sql_names(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.append(uri, pa.table({"x": [1, 2, 3]}), token="t")
    asked: list[tuple[str, str]] = []

    def resolve(zone: str, table: str) -> pads.Dataset | None:
        asked.append((zone, table))
        return delta.open_table(uri).to_pyarrow_dataset() if (zone, table) == ("stage", "t") else None

    result = run_query("SELECT sum(x) AS s FROM stage.t", resolve, ["stage.t"])
    assert result.table.to_pylist() == [{"s": 6}]
    assert result.tables_read == ("stage.t",)
    assert asked == [("stage", "t")]
    with pytest.raises(QueryError, match=r"no table stage.u \(did you mean 'stage.t'\?\)") as exc:
        run_query("SELECT * FROM stage.u", resolve, ["stage.t"])
    assert exc.value.hint is not None and "tarn tables" in exc.value.hint


def test_connections_use_utc_and_never_download_extensions() -> None:
    con = connect()
    try:
        assert con.sql("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
        assert con.sql("SELECT current_setting('autoinstall_known_extensions')").fetchall() == [(False,)]
    finally:
        con.close()
