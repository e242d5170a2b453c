"""Sweeping leftovers of kills with ``tarn maintain`` (a real CLI process): temporary raw copies older than an
hour, and Delta data files that no version references (what a writer killed between writing a data file and
committing it leaves — here a worker SIGKILLed during its Delta write, plus planted files of known age).
Dry-run first lists and keeps; the real run removes only those; young leftovers (a write in progress), files
that time travel needs and every table's rows are untouched."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from robust_helpers import Project, TarnProcesses, settled_objects, wait_until, write_project

from tarn.lake import Lake
from tarn.orchestrator.maintenance import orphaned_files, staged_uploads

EVENTS = {
    "name": "events",
    "columns": [{"name": "id", "type": "long"}, {"name": "v", "type": "double"}, {"name": "s", "type": "string"}],
}
TWO_HOURS_AGO = time.time() - 2 * 3600


def _age(path: Path) -> Path:
    os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    return path


def _csv(path: Path, rows: int, base: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("id,v,s\n")
        for start in range(0, rows, 50_000):
            f.write("".join(f"{base + j},{j * 0.5},row {j}\n" for j in range(start, min(rows, start + 50_000))))
    return path


def _maintain(tarn_processes: TarnProcesses, project: Project, *args: str) -> dict[str, object]:
    p = tarn_processes.start(project, "maintain", "-o", "json", *args)
    assert p.proc.wait(timeout=120) == 0, p.stderr()[-2000:]
    out: dict[str, object] = json.loads(p.stdout())
    return out


@pytest.mark.slow
def test_tarn_maintain_sweeps_tmp_copies_and_orphaned_data_files(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake]
) -> None:
    project = write_project(tmp_path / "project", [EVENTS], ingest={"max_receives": 1000})
    lake = lake_of(project)
    [(_, first, _)] = lake.ingest([_csv(tmp_path / "in" / "small.csv", 100)], "events")
    table_dir = Path(lake.storage.table_uri("stage", "events"))

    # A worker SIGKILLed while it writes a big file's data: a file no commit references (the unfinished
    # upload 'part-….parquet#1', or a finished data file whose commit never came).
    def files() -> set[str]:
        return {p.name for p in table_dir.iterdir() if p.is_file()}

    before = files()
    lake.ingest([_csv(tmp_path / "in" / "big.csv", 3_000_000, base=10_000_000)], "events", process=False)
    worker = tarn_processes.start(project, "worker", "--workers", "1")
    wait_until(
        lambda: files() - before or not worker.alive(),
        timeout=120,
        what="a data file of the big object",
        interval=0.002,
    )
    worker.kill()
    referenced = {Path(u).name for u in DeltaTable(str(table_dir)).file_uris()}
    killed_orphans = files() - referenced
    assert killed_orphans, "the kill did not land during the Delta write"
    # Planted leftovers of known age (the real ones above are seconds old: kept until they are an hour old).
    old_orphan = table_dir / "part-00000-killed-writer-c000.snappy.parquet"
    pq.write_table(pa.table({"id": [1]}), old_orphan)
    _age(old_orphan)
    young_orphan = table_dir / "part-00000-write-in-progress-c000.snappy.parquet"
    pq.write_table(pa.table({"id": [2]}), young_orphan)
    tmp_dir = project.dir / "lake" / "raw" / ".tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    old_tmp = tmp_dir / "copy-of-a-killed-registration"
    old_tmp.write_bytes(b"x" * 1000)
    _age(old_tmp)
    young_tmp = tmp_dir / "copy-in-progress"
    young_tmp.write_bytes(b"y")
    # Age every data file: a file of an old version (removed by a later commit) must survive too.
    for p in table_dir.iterdir():
        if p.is_file() and p != young_orphan:
            _age(p)
    rows_before = DeltaTable(str(table_dir)).count()

    # Dry run: lists, removes nothing.
    dry = _maintain(tarn_processes, project, "--dry-run")
    [stage] = [t for t in dry["tables"] if t["table"] == "stage.events"]  # type: ignore[attr-defined]
    assert set(stage["orphans"]) | set(stage["staged"]) == killed_orphans | {old_orphan.name}, (stage, killed_orphans)
    assert young_orphan.name not in stage["orphans"]
    assert old_orphan.exists() and old_tmp.exists() and all((table_dir / n).exists() for n in killed_orphans)

    # The real run: the old leftovers go, the young ones and everything referenced stay.
    done = _maintain(tarn_processes, project)
    assert done["tmp_removed"] == 1
    assert not old_orphan.exists() and not old_tmp.exists()
    assert not any((table_dir / n).exists() for n in killed_orphans)
    assert young_orphan.exists() and young_tmp.exists()
    table = DeltaTable(str(table_dir))
    assert all(Path(u.removeprefix("file://")).exists() for u in table.file_uris())
    assert table.count() == rows_before
    assert orphaned_files(str(table_dir), 3600) == [] and staged_uploads(str(table_dir), 3600) == []

    # Afterwards the killed object is finished as if nothing happened.
    again = tarn_processes.start(project, "worker", "--workers", "1", "--until-idle")
    wait_until(lambda: settled_objects(lake, 2), timeout=180, what="the big object")
    assert again.proc.wait(timeout=60) == 0
    assert DeltaTable(str(table_dir)).count() == 100 + 3_000_000
    assert lake.object(first.object_id).state == "committed"


def test_time_travel_survives_the_sweep(tmp_path: Path, lake_of: Callable[[Project], Lake]) -> None:
    """Files removed from a table (an overwrite) are not orphans, however old: version 0 still reads."""
    from deltalake import write_deltalake

    from tarn.orchestrator.maintenance import maintain

    project = write_project(tmp_path / "project", [])
    lake = lake_of(project)
    uri = lake.storage.table_uri("analytics", "t")
    write_deltalake(uri, pa.table({"a": [1, 2]}))
    write_deltalake(uri, pa.table({"a": [3]}), mode="overwrite")
    from tarn.tables import delta

    lake.meta.catalog.record("analytics.t", zone="analytics", location=uri, columns=delta.columns(uri), delta_version=1)
    for p in Path(uri).glob("*.parquet"):
        _age(p)
    sweep = maintain(lake)
    assert [t.orphans for t in sweep.tables] == [[]]
    assert DeltaTable(uri, version=0).to_pyarrow_table().column("a").to_pylist() == [1, 2]
    assert DeltaTable(uri).to_pyarrow_table().column("a").to_pylist() == [3]
