"""Micro-batches: small objects of one append-only dataset received together share one Delta commit
that carries each object's own exactly-once token; their outcomes stay per object."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tarn.ingest.processor import token_for
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, COMMITTED_WITH_QUARANTINE, DEAD_LETTERED, FAILED, REJECTED
from tarn.orchestrator.workers import WorkerPool
from tarn.tables import delta

COLUMNS = [{"name": "id", "type": "long", "nullable": False}, {"name": "v", "type": "double"}]


def _drain(lake: Lake) -> None:
    WorkerPool(lake.ingest_service, 1).drain(lambda: False)


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _truncated_gzip() -> bytes:
    whole = gzip.compress(("id,v\n" + "".join(f"{k},{k * 7 % 13}.{k}\n" for k in range(1000, 3000))).encode())
    return whole[: len(whole) // 2]


def _stage(lake: Lake, table: str) -> DeltaTable:
    return DeltaTable(lake.storage.table_uri("stage", table))


def _commits(dt: DeltaTable) -> list[dict[str, Any]]:
    return [h for h in dt.history() if delta.tokens_of(h)]


def test_small_files_share_commits_and_each_lands_exactly_once(
    new_lake: Callable[..., Lake], tmp_path: Path, rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "events", "columns": COLUMNS}])
    files = [_write(tmp_path, f"f{i:02}.csv", f"id,v\n{2 * i},{i}.5\n{2 * i + 1},{i}\n") for i in range(30)]
    files.append(_write(tmp_path, "bad.csv", "id,v\n100,1\n101,not-a-number\n,3\n"))
    files.append(_write(tmp_path, "garbage.csv", bytes(range(256)) * 20))
    files.append(_write(tmp_path, "cut.csv.gz", _truncated_gzip()))
    regs = {p.name: r.object_id for p, r, _ in lake.ingest(files, "events", process=False)}

    _drain(lake)

    states = {name: lake.object(oid).state for name, oid in regs.items()}
    assert all(states[f"f{i:02}.csv"] == COMMITTED for i in range(30)), states
    assert states["bad.csv"] == COMMITTED_WITH_QUARANTINE
    assert states["garbage.csv"] == REJECTED
    assert states["cut.csv.gz"] in (FAILED, DEAD_LETTERED)  # retried on its own, never blocks the batch
    # Far fewer commits than files, and every committed object's token in exactly one of them.
    stage = _stage(lake, "events")
    commits = _commits(stage)
    assert len(commits) <= 3, [c.get("tarn.objects") for c in commits]
    tokens = Counter(t for c in commits for t in delta.tokens_of(c))
    committed = [oid for name, oid in regs.items() if states[name] in (COMMITTED, COMMITTED_WITH_QUARANTINE)]
    assert tokens == Counter(token_for(oid) for oid in committed)
    assert all(stage.transaction_version(token_for(oid)) == 1 for oid in committed)
    # Rows: each file's rows once, attributed to their object; the bad rows in quarantine only.
    got = rows(lake, "SELECT _tarn_object_id AS o, count(*) AS n FROM stage.events GROUP BY 1")
    assert {r["o"]: r["n"] for r in got} == {oid: (1 if oid == regs["bad.csv"] else 2) for oid in committed}
    assert rows(lake, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM stage.events") == [{"n": 61, "d": 61}]
    bad = rows(lake, "SELECT _tarn_object_id AS o, _tarn_row AS line, reason FROM quarantine.events ORDER BY line")
    assert [(r["o"], r["line"]) for r in bad] == [(regs["bad.csv"], 3), (regs["bad.csv"], 4)]
    assert "cannot convert 'not-a-number' to double" in bad[0]["reason"]
    # Each object's own record: its counts and that it shared a commit.
    obj = lake.object(regs["f03.csv"])
    assert (obj.rows_total, obj.rows_committed, obj.rows_quarantined) == (2, 2, 0)
    assert obj.table_version == commits[-1]["version"] or obj.table_version in {c["version"] for c in commits}
    assert "one commit with" in lake.object_detail(regs["f03.csv"])["events"][-1]["message"]
    assert lake.status().queue["inflight"] == 0


def test_a_redelivery_after_a_batch_commit_reports_the_objects_rows_from_the_log(
    new_lake: Callable[..., Lake], tmp_path: Path
) -> None:
    lake = new_lake([{"name": "events", "columns": COLUMNS}])
    files = [
        _write(tmp_path, f"f{i}.csv", "id,v\n" + "".join(f"{10 * i + k},1\n" for k in range(i + 1))) for i in range(5)
    ]
    files.append(_write(tmp_path, "bad.csv", "id,v\n900,x\n901,2\n"))
    regs = [r.object_id for _, r, _ in lake.ingest(files, "events", process=False)]
    _drain(lake)
    version = _stage(lake, "events").version()
    for i, oid in enumerate(regs):
        obj = lake.object(oid)
        # A second delivery (the ack was lost): the log, not the file, answers; nothing is written.
        result = lake.ingest_service._processor(lake.ingest_service.dataset("events")).run(
            oid, str(obj.raw_path), Path(obj.landing_path).name
        )
        expected = (1, 1) if i == 5 else (i + 1, 0)
        assert (result.rows_committed, result.rows_quarantined) == expected
        assert result.stage_version == obj.table_version
    assert _stage(lake, "events").version() == version


def test_a_file_with_new_columns_ends_the_batch_and_later_files_are_typed_against_them(
    new_lake: Callable[..., Lake], tmp_path: Path, rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "events"}])  # schema inferred and evolving
    files = [_write(tmp_path, f"a{i}.csv", f"id,v\n{i},1.5\n") for i in range(4)]
    files.append(_write(tmp_path, "b0.csv", "id,v,extra\n10,2.5,7\n"))
    files += [_write(tmp_path, f"c{i}.csv", f"id,v,extra\n{20 + i},3.5,{i}\n") for i in range(3)]
    files.append(_write(tmp_path, "d0.csv", "id,v,extra\n30,1,oops\n"))  # not a long any more
    regs = {p.name: r.object_id for p, r, _ in lake.ingest(files, "events", process=False)}
    _drain(lake)
    assert lake.object(regs["d0.csv"]).state == COMMITTED_WITH_QUARANTINE
    assert all(lake.object(regs[n]).state == COMMITTED for n in regs if n != "d0.csv")
    assert rows(lake, "SELECT id, extra FROM stage.events WHERE extra IS NOT NULL ORDER BY id") == [
        {"id": 10, "extra": 7},
        {"id": 20, "extra": 0},
        {"id": 21, "extra": 1},
        {"id": 22, "extra": 2},
    ]
    assert "new columns: extra" in lake.object_detail(regs["b0.csv"])["events"][-1]["message"]


def test_datasets_with_a_primary_key_are_not_batched(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake([{"name": "accounts", "columns": COLUMNS, "primary_key": ["id"]}])
    files = [_write(tmp_path, f"a{i}.csv", f"id,v\n1,{i}\n") for i in range(4)]  # the same key, in order
    lake.ingest(files, "accounts", process=False)
    _drain(lake)
    stage = _stage(lake, "accounts")
    assert len(_commits(stage)) == 4  # one MERGE per object, in landing order
    assert stage.to_pyarrow_table().to_pylist()[0]["v"] == 3.0


@pytest.mark.parametrize("batch_objects", [1])
def test_batching_can_be_turned_off(new_lake: Callable[..., Lake], tmp_path: Path, batch_objects: int) -> None:
    lake = new_lake([{"name": "events", "columns": COLUMNS}], ingest={"batch_objects": batch_objects})
    files = [_write(tmp_path, f"f{i}.csv", f"id,v\n{i},1\n") for i in range(3)]
    lake.ingest(files, "events", process=False)
    _drain(lake)
    assert len(_commits(_stage(lake, "events"))) == 3


def test_tarn_ingest_of_many_files_batches_them_and_reports_each(new_lake: Callable[..., Lake], tmp_path: Path) -> None:
    lake = new_lake([{"name": "events", "columns": COLUMNS}])
    files = [_write(tmp_path, f"f{i}.csv", f"id,v\n{i},1\n") for i in range(20)]
    files.append(_write(tmp_path, "bad.csv", "id,v\nx,1\n"))
    done: list[str] = []
    results = lake.ingest(files, "events", progress=lambda f, r: done.append(f.name))
    assert sorted(done) == sorted(f.name for f in files)
    states = {f.name: state for f, _, state in results}
    assert states.pop("bad.csv") == COMMITTED_WITH_QUARANTINE
    assert set(states.values()) == {COMMITTED}
    assert len(_commits(_stage(lake, "events"))) <= 2  # the table's first commit, then one for the rest


def test_files_read_together_keep_their_own_lines_rows_and_malformed_records(
    new_lake: Callable[..., Lake], tmp_path: Path, rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "events", "columns": COLUMNS}])
    lake.ingest([_write(tmp_path, "first.csv", "id,v\n0,0\n")], "events")  # the table exists: reads can be shared
    files = [
        _write(tmp_path, "a.csv", "id,v\n1,1\n2,x\n3,3\n"),  # a bad value on line 3
        _write(tmp_path, "b.csv", "id,v\n4,4\n5,5\n6,y\n"),  # on line 4
        _write(tmp_path, "c.csv", "v,id\n7.5,7\n"),  # another header order: read on its own
        _write(tmp_path, "d.csv", "id,v\n8,8\n9,9,9\n10,10\n"),  # a ragged record: the tolerant reader
        _write(tmp_path, "e.csv.gz", gzip.compress(b"id,v\n11,11\n12,z\n")),  # compressed: a group of its own
        _write(tmp_path, "f.csv.gz", gzip.compress(b"id,v\n13,13\n")),
    ]
    regs = {p.name: r.object_id for p, r, _ in lake.ingest(files, "events", process=False)}
    _drain(lake)
    got = rows(lake, "SELECT _tarn_object_id AS o, id, _tarn_row AS line FROM stage.events WHERE id > 0 ORDER BY id")
    by_name = {v: k for k, v in regs.items()}
    assert [(by_name[r["o"]], r["id"], r["line"]) for r in got] == [
        ("a.csv", 1, 2),
        ("a.csv", 3, 4),
        ("b.csv", 4, 2),
        ("b.csv", 5, 3),
        ("c.csv", 7, 2),
        ("d.csv", 8, 2),
        ("d.csv", 10, 4),
        ("e.csv.gz", 11, 2),
        ("f.csv.gz", 13, 2),
    ]
    bad = rows(lake, "SELECT _tarn_object_id AS o, _tarn_row AS line, source_file FROM quarantine.events ORDER BY o")
    assert sorted((by_name[r["o"]], r["line"], r["source_file"]) for r in bad) == [
        ("a.csv", 3, "a.csv"),
        ("b.csv", 4, "b.csv"),
        ("d.csv", 3, "d.csv"),
        ("e.csv.gz", 3, "e.csv.gz"),
    ]
    counts = {n: (o.rows_total, o.rows_committed, o.rows_quarantined) for n in regs for o in [lake.object(regs[n])]}
    assert counts == {
        "a.csv": (3, 2, 1),
        "b.csv": (3, 2, 1),
        "c.csv": (1, 1, 0),
        "d.csv": (3, 2, 1),
        "e.csv.gz": (2, 1, 1),
        "f.csv.gz": (1, 1, 0),
    }


def test_a_batch_holds_a_bounded_number_of_bytes() -> None:
    from tarn.ingest.batching import by_bytes

    items: list[Any] = [(i, type("O", (), {"size": size})()) for i, size in enumerate([40, 30, 50, 10, 200, 5])]
    chunks = by_bytes(items, 100)
    assert [[i for i, _ in c] for c in chunks] == [[0, 1], [2, 3], [4], [5]]  # a big one stands alone
