"""Row-level expectations: one pass flags every row, one aggregate counts the failures of each expectation,
and the kept rows / quarantined rows are two views over the flags.

A row fails an expectation when its check is false *or NULL*. Actions: ``warn`` keeps the row, ``drop`` removes
it, ``quarantine`` removes it into the quarantine table (with the names of the expectations it failed), ``fail``
fails the run. A row failing both a drop and a quarantine expectation is quarantined (nothing is lost silently).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tarn.ingest.typing import lit, q
from tarn.pipelines.spec import Expectation

QUARANTINE_SCHEMA = pa.schema(
    [
        ("_tarn_run_id", pa.string()),
        ("pipeline", pa.string()),
        ("stage", pa.string()),
        ("expectations", pa.list_(pa.string())),
        ("record", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def flag(i: int) -> str:
    return f"__exp{i}"


@dataclass(frozen=True)
class ExpectationCount:
    name: str
    action: str
    failed: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "failed": self.failed, "total": self.total}


@dataclass(frozen=True)
class ExpectationSql:
    """The SQL of one expect stage over ``relation`` (the flags view is named ``flagged``)."""

    flagged: str  # SELECT *, flags FROM relation
    counts: str  # one row: total, failed per expectation
    kept: str  # SELECT columns FROM flagged: the rows that go on
    quarantined: str | None  # rows for the quarantine table, if any expectation quarantines


def build(
    relation: str,
    flagged_name: str,
    columns: Sequence[str],
    expectations: Sequence[Expectation],
    *,
    run_id: str,
    pipeline: str,
    stage: str,
    at: float,
) -> ExpectationSql:
    flags = [f"NOT coalesce(({e.check}), false) AS {flag(i)}" for i, e in enumerate(expectations)]
    flagged = f"SELECT *, {', '.join(flags)} FROM {relation}"
    counts = "SELECT count(*) AS total, " + ", ".join(
        f"count(*) FILTER (WHERE {flag(i)}) AS {flag(i)}" for i in range(len(expectations))
    )
    counts += f" FROM {flagged_name}"
    removing = [flag(i) for i, e in enumerate(expectations) if e.action in ("drop", "quarantine", "fail")]
    cols = ", ".join(q(c) for c in columns)
    kept = f"SELECT {cols} FROM {flagged_name}"
    if removing:
        kept += f" WHERE NOT ({' OR '.join(removing)})"
    qi = [i for i, e in enumerate(expectations) if e.action == "quarantine"]
    quarantined = None
    if qi:
        names = (
            "list_filter(["
            + ", ".join(f"CASE WHEN {flag(i)} THEN {lit(expectations[i].name)} END" for i in qi)
            + "], lambda x: x IS NOT NULL)"
        )
        record = "CAST(to_json(struct_pack(" + ", ".join(f"{q(c)} := {q(c)}" for c in columns) + ")) AS VARCHAR)"
        when = dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat()
        quarantined = (
            f"SELECT {lit(run_id)} AS _tarn_run_id, {lit(pipeline)} AS pipeline, {lit(stage)} AS stage, "
            f"{names} AS expectations, {record} AS record, TIMESTAMPTZ {lit(when)} AS quarantined_at "
            f"FROM {flagged_name} WHERE {' OR '.join(flag(i) for i in qi)}"
        )
    return ExpectationSql(flagged, counts, kept, quarantined)


def read_counts(row: dict[str, Any], expectations: Sequence[Expectation]) -> list[ExpectationCount]:
    total = int(row["total"])
    return [ExpectationCount(e.name, e.action, int(row[flag(i)]), total) for i, e in enumerate(expectations)]


def failing(counts: Sequence[ExpectationCount]) -> list[ExpectationCount]:
    """The ``fail`` expectations that some row broke."""
    return [c for c in counts if c.action == "fail" and c.failed > 0]
