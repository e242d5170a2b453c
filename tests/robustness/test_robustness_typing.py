"""Floating point text out of range: ``1e400`` in a double column (``1e39`` in a float column) is quarantined
as out of range, not stored as infinity; ``inf``, ``-Infinity`` and ``NaN`` spelled out are kept. Real files
through ``Lake.ingest``; the typing SQL itself on DuckDB."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from robust_helpers import write_project

from tarn.ingest.typing import cast_expr, conversion_error, lit
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED_WITH_QUARANTINE

MEASURES = {
    "name": "measures",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
    ],
}


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    lk = write_project(tmp_path / "project", [MEASURES], ingest={"max_receives": 1}).open()
    yield lk
    lk.close()


def _cast(text: str, type_name: str) -> float | None:
    [(v,)] = duckdb.sql(f"SELECT {cast_expr(lit(text), type_name, from_text=True)}").fetchall()
    return v  # type: ignore[no-any-return]


@pytest.mark.parametrize("text", ["1e400", "-1e400", "1E+999", "  2e308 "])
def test_a_double_out_of_range_does_not_convert(text: str) -> None:
    assert _cast(text, "double") is None
    assert "out of range for double" in conversion_error(text, "double")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("inf", math.inf), ("-inf", -math.inf), ("+Infinity", math.inf), (" -INFINITY ", -math.inf), ("1e308", 1e308)],
)
def test_spelled_out_infinities_and_large_finite_numbers_are_kept(text: str, expected: float) -> None:
    assert _cast(text, "double") == expected


def test_nan_spelled_out_is_kept_and_floats_have_their_own_range() -> None:
    nan = _cast("NaN", "double")
    assert nan is not None and math.isnan(nan)
    assert _cast("1e39", "float") is None  # beyond float32, though a double would hold it
    assert _cast("3e38", "float") is not None
    assert _cast("-inf", "float") == -math.inf
    assert conversion_error("abc", "double") == "cannot convert 'abc' to double"
    assert conversion_error("1_000", "double") == "cannot convert '1_000' to double"


def test_an_overflowing_value_is_quarantined_with_its_row_and_the_rest_commits(lake: Lake, tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text("id,d,f\n1,1.5,1.5\n2,1e400,1\n3,inf,-Infinity\n4,NaN,nan\n5,2.5,1e39\n6,-1e400,2\n")
    [(_, reg, state)] = lake.ingest([f], "measures")
    assert state == COMMITTED_WITH_QUARANTINE
    obj = lake.object(reg.object_id)
    assert (obj.rows_committed, obj.rows_quarantined) == (3, 3)
    rows = lake.query("SELECT id, d, f FROM stage.measures ORDER BY id").table.to_pylist()
    assert [r["id"] for r in rows] == [1, 3, 4]
    assert rows[1]["d"] == math.inf and rows[1]["f"] == -math.inf
    assert math.isnan(rows[2]["d"]) and math.isnan(rows[2]["f"])
    bad = lake.query("SELECT _tarn_row, reason, errors FROM quarantine.measures ORDER BY _tarn_row").table.to_pylist()
    assert [r["_tarn_row"] for r in bad] == [3, 6, 7]  # lines of the file (the header is line 1)
    text = " ".join(str(r["errors"]) for r in bad)
    assert "1e400" in text and "1e39" in text and "-1e400" in text
    assert "'1e400' is out of range for double" in bad[0]["reason"]  # not "cannot convert": the reason is the range
