"""The Lake facade: creating a project, opening it, its errors, and what it records."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tarn.errors import ConfigError, NotFoundError, QueryError, StateError
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, REJECTED

ZONES = ("landing", "raw", "stage", "analytics", "quarantine")


def test_init_writes_the_project_zones_and_a_wal_metastore(tmp_path: Path) -> None:
    project = tmp_path / "my-lake"
    lake = Lake.init(project)
    try:
        doc = yaml.safe_load((project / "tarn.yaml").read_text())
        assert doc["name"] == "my_lake"
        assert doc["lake"] == {"root": "lake"}
        assert [d["name"] for d in doc["datasets"]] == ["events"]
        for zone in ZONES:
            assert (project / "lake" / zone).is_dir(), zone
        assert (project / "lake" / "landing" / "events").is_dir()
        db = project / ".tarn" / "metastore.db"
        assert db.is_file()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"objects", "queue_messages", "catalog_tables", "schema_versions", "audit_log"} <= tables
        assert [(a["principal"], a["action"]) for a in lake.meta.audit.list()] == [("tester", "init")]
        assert lake.status().to_dict() == {
            "objects": {},
            "queue": {"ready": 0, "inflight": 0, "dead": 0},
            "dlq": 0,
            "tables": 0,
        }
    finally:
        lake.close()
    with pytest.raises(StateError, match="already exists"):
        Lake.init(project)


def test_opening_a_folder_without_a_project_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tarn init"):
        Lake(tmp_path)


def test_unknown_names_are_errors_with_suggestions(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], tmp_path: Path
) -> None:
    lake = new_lake([{"name": "orders"}])
    f = tmp_path / "x.csv"
    f.write_text("a\n1\n")
    with pytest.raises(NotFoundError, match=r"no dataset 'ordres' \(did you mean 'orders'\?\)"):
        lake.ingest([f], "ordres")
    with pytest.raises(NotFoundError, match="does not exist"):
        lake.ingest([tmp_path / "missing.csv"], "orders")
    obj = ingest_file(lake, "orders", "o.csv", "id\n1\n")
    with pytest.raises(QueryError, match=r"no table stage.order \(did you mean 'stage.orders'\?\)"):
        lake.query("SELECT * FROM stage.order")
    with pytest.raises(NotFoundError, match=r"no table 'stage\.ordrs'"):
        lake.table("stage.ordrs")
    with pytest.raises(NotFoundError, match="no object"):
        lake.object("0" * 20)
    with pytest.raises(ConfigError, match="unknown state 'done'"):
        lake.objects(state="done")
    assert lake.object(obj.id[:8]).id == obj.id  # unambiguous prefixes work, as for git commits


def test_query_errors_are_query_errors(new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]) -> None:
    lake = new_lake([{"name": "t"}])
    ingest_file(lake, "t", "t.csv", "a\n1\n")
    with pytest.raises(QueryError, match="does not parse"):
        lake.query("SELEC FROM WHERE (")
    with pytest.raises(QueryError, match="query failed"):
        lake.query("SELECT no_such_column FROM stage.t")


def test_query_joins_stage_and_quarantine_and_ctes_are_not_tables(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([{"name": "t", "columns": [{"name": "a", "type": "long"}]}])
    obj = ingest_file(lake, "t", "t.csv", "a\n1\nx\n3\n")
    result = lake.query(
        "WITH good AS (SELECT _tarn_object_id AS o, count(*) AS n FROM stage.t GROUP BY 1) "
        "SELECT good.o, good.n, count(q._tarn_row) AS bad FROM good "
        "JOIN quarantine.t AS q ON q._tarn_object_id = good.o GROUP BY 1, 2"
    )
    assert result.table.to_pylist() == [{"o": obj.id, "n": 2, "bad": 1}]
    assert set(result.tables_read) == {"stage.t", "quarantine.t"}
    assert lake.query("SELECT a FROM stage.t ORDER BY a", limit=1).table.to_pylist() == [{"a": 1}]


def test_ingest_refuses_symlinks_and_oversized_files_with_reasons(
    new_lake: Callable[..., Lake], tmp_path: Path
) -> None:
    lake = new_lake([{"name": "t"}], ingest={"max_file_bytes": 32})
    real = tmp_path / "real.csv"
    real.write_text("a\n1\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    big = tmp_path / "big.csv"
    big.write_text("a\n" + "1\n" * 40)
    results = {f.name: (reg, state) for f, reg, state in lake.ingest([link, big, real], "t")}
    assert results["link.csv"][1] == REJECTED
    assert "symlinks are not ingested" in str(lake.object(results["link.csv"][0].object_id).error)
    assert results["big.csv"][1] == REJECTED
    assert "max_file_bytes" in str(lake.object(results["big.csv"][0].object_id).error)
    assert results["real.csv"][1] == COMMITTED


def test_every_operation_is_audited_with_its_principal(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([{"name": "t"}])
    ingest_file(lake, "t", "t.csv", "a\n1\n")
    lake.query("SELECT count(*) FROM stage.t")
    entries = lake.meta.audit.list()
    actions = [a["action"] for a in entries]
    assert "ingest" in actions and "query" in actions
    assert {a["principal"] for a in entries} == {"tester"}
    [q] = [a for a in entries if a["action"] == "query"]
    assert q["target"] == "stage.t"
    assert q["detail"]["sql"] == "SELECT count(*) FROM stage.t"


def test_table_detail_has_columns_versions_and_delta_history(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([{"name": "t"}])
    first = ingest_file(lake, "t", "1.csv", "a\n1\n")
    second = ingest_file(lake, "t", "2.csv", "a,b\n2,x\n")
    info = lake.table("stage.t")
    assert info["rows"] == 2
    assert info["zone"] == "stage" and info["dataset"] == "t"
    assert info["location"] == lake.storage.table_uri("stage", "t")
    assert [c["name"] for c in info["columns"]] == ["a", "_tarn_object_id", "_tarn_row", "b"]
    assert [v["object_id"] for v in info["schema_versions"]] == [first.id, second.id]
    assert [h["tarn.object_id"] for h in info["history"]] == [second.id, first.id]
    assert info["delta_version"] == second.table_version == 1
