"""Concurrency: four ``tarn worker`` processes drain 500 queued files into one Delta table, on SQLite
and on PostgreSQL, while queries run against the lake. Every file is committed exactly once, each
query sees a consistent, growing table, and no worker ever reports a locked database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from robust_helpers import (
    EVENTS,
    Project,
    TarnProcesses,
    assert_exactly_once,
    event_files,
    settled_objects,
    wait_until,
    write_project,
)
from sqlalchemy import select

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, FAILED
from tarn.metastore.schema import object_events

N_FILES, ROWS = 500, 10


def _failed_attempts(lake: Lake) -> list[str]:
    """The messages of every failed attempt (a retry) in the objects' trails."""
    with lake.meta.db.read() as conn:
        rows = conn.execute(select(object_events.c.message).where(object_events.c.state == FAILED))
        return [str(r[0]) for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_four_worker_processes_commit_500_files_exactly_once_while_queries_run(
    backend: str,
    tmp_path: Path,
    tarn_processes: TarnProcesses,
    request: pytest.FixtureRequest,
    lake_of: Callable[[Project], Lake],
) -> None:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    project = write_project(
        tmp_path / "project",
        [EVENTS],
        # Small micro-batches: many commits, so the queries below see the table grow (with the default
        # 100 objects a batch, 500 files are four commits, over before a query gets in).
        ingest={"workers": 1, "max_receives": 50, "batch_objects": 5},
        metastore_url=url,
    )
    lake = lake_of(project)
    files = event_files(tmp_path / "incoming", N_FILES, ROWS)
    started = time.monotonic()
    workers = [tarn_processes.start(project, "worker", "--workers", "1") for _ in range(4)]
    seen: list[int] = []

    def query_while_ingesting() -> None:
        if not lake.tables():
            return
        # A consistent snapshot, never shrinking, made of whole files only.
        [row] = lake.query(
            "SELECT count(*) AS n, count(DISTINCT _tarn_object_id) AS f FROM stage.events"
        ).table.to_pylist()
        assert row["n"] == row["f"] * ROWS, row
        assert not seen or row["n"] >= seen[-1], (seen[-1], row)
        seen.append(row["n"])

    registered = []  # files are queued while the workers already run
    for start in range(0, N_FILES, 50):
        registered += lake.ingest(files[start : start + 50], "events", process=False)
        query_while_ingesting()
    while not settled_objects(lake, N_FILES):
        assert time.monotonic() - started < 400, f"not done after 400 s: {lake.status().to_dict()}"
        query_while_ingesting()
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    codes = [w.terminate(timeout=60) for w in workers]
    assert codes == [0, 0, 0, 0], tarn_processes.all_stderr()[-3000:]

    objs = lake.objects(limit=10_000)
    assert len(objs) == N_FILES and {o.state for o in objs} == {COMMITTED}
    assert_exactly_once(lake, "events", {reg.object_id: ROWS for _, reg, _ in registered})
    assert lake.meta.queue.depth("ingest") == {"ready": 0, "inflight": 0, "dead": 0}
    # At least one query ran mid-way and saw a part of the table (consistent, checked above).
    assert any(0 < n < N_FILES * ROWS for n in seen), f"no query saw the table mid-ingest: {seen}"
    processed = [int(w.stdout().split("processed ")[1].split()[0]) for w in workers]
    assert sum(processed) >= N_FILES and all(n > 0 for n in processed), processed  # all four took work
    # The only failed attempts allowed are lost Delta commit races (the first commits creating the
    # table at once), which the queue retries; anything else is a bug.
    retried = [m for m in _failed_attempts(lake) if "Failed to commit transaction" not in m]
    assert retried == [], f"attempts that failed and were retried: {retried[:5]}"
    log = tarn_processes.all_stderr()
    assert "database is locked" not in log.lower()
    assert "Traceback" not in log, log[-3000:]
    print(f"\n{backend}: {N_FILES} files by 4 worker processes in {elapsed:.1f}s ({N_FILES / elapsed:.1f} files/s)")


@pytest.mark.postgres
def test_workers_recording_one_new_table_at_once_do_not_fail_on_postgres(
    tmp_path: Path, pg_database: str, lake_of: Callable[[Project], Lake]
) -> None:
    """On PostgreSQL two workers committing the first file of a dataset at the same moment both
    insert its catalog row; the ingest service records again instead of failing the attempt."""
    project = write_project(tmp_path / "project", [EVENTS], metastore_url=pg_database)
    lakes = [lake_of(project) for _ in range(4)]
    columns = [{"name": "id", "type": "long", "nullable": True}]
    errors: list[BaseException] = []
    for race in range(8):
        barrier = threading.Barrier(len(lakes))

        def record(lake: Lake, barrier: threading.Barrier = barrier, name: str = f"stage.race{race}") -> None:
            try:
                barrier.wait(timeout=30)
                lake.ingest_service._catalog_record(
                    name, zone="stage", location=f"/l/{name}", columns=columns, delta_version=0, dataset="events"
                )
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=record, args=(lk,)) for lk in lakes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert len(lakes[0].meta.catalog.tables()) == 8


def test_simultaneous_writers_to_one_delta_table_each_land_once(
    tmp_path: Path, lake_of: Callable[[Project], Lake]
) -> None:
    """Four independent services (as four processes are) commit to one Delta table at the same moment —
    first its creation, then plain appends. Conflicting commits are retried (through the queue's
    backoff) until every file is in the table exactly once."""
    project = write_project(tmp_path / "project", [EVENTS], ingest={"backoff": {"base_seconds": 0.05, "jitter": 0}})
    lakes = [lake_of(project) for _ in range(4)]
    rows: dict[str, int] = {}
    errors: list[BaseException] = []
    for wave in range(2):
        files = []
        for i in range(4):
            f = tmp_path / "in" / f"w{wave}_{i}.csv"
            f.parent.mkdir(exist_ok=True)
            f.write_text("id,v,s\n" + "".join(f"{wave * 1000 + i * 10 + j},{j},w{wave}\n" for j in range(5)))
            files.append(f)
        for _, reg, _ in lakes[0].ingest(files, "events", process=False):
            rows[reg.object_id] = 5
        messages = [lk.ingest_service.receive() for lk in lakes]
        barrier = threading.Barrier(len(lakes))

        def process(lake: Lake, msg: Any, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=30)
                lake.ingest_service.process(msg)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=process, args=(lk, m)) for lk, m in zip(lakes, messages, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []

        def drained() -> bool:  # attempts that lost a commit race come back after their backoff
            msg = lakes[0].ingest_service.receive()
            if msg is not None:
                lakes[0].ingest_service.process(msg)
            return settled_objects(lakes[0], len(rows))

        wait_until(drained, timeout=60, what="the retried commits")
    assert {o.state for o in lakes[0].objects()} == {COMMITTED}
    assert_exactly_once(lakes[0], "events", rows)
    print(f"\n{len(_failed_attempts(lakes[0]))} attempts lost a commit race and were retried")


@pytest.mark.postgres
def test_two_watchers_registering_the_same_landed_files_record_each_once(
    tmp_path: Path, pg_database: str, lake_of: Callable[[Project], Lake]
) -> None:
    """Two processes' watchers on one landing folder (PostgreSQL, READ COMMITTED): both see the same files
    settle and register them at once, many to a transaction. Each file is recorded once, with one message."""
    project = write_project(tmp_path / "project", [EVENTS], metastore_url=pg_database)
    a, b = lake_of(project), lake_of(project)
    for i in range(60):
        (project.landing / "events" / f"f{i:03d}.csv").write_text(f"id,v,s\n{i},0.5,x\n")
    items = [(f"events/f{i:03d}.csv", time.time()) for i in range(60)]
    out: dict[str, list[Any]] = {}
    go = threading.Barrier(2)

    def register(name: str, lake: Lake) -> None:
        go.wait()
        out[name] = lake.ingest_service.register_landed(items)

    threads = [threading.Thread(target=register, args=(n, lk)) for n, lk in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not [r for rs in out.values() for r in rs if isinstance(r, Exception)], out
    objs = a.objects(limit=1000)
    assert len(objs) == 60 and len({o.landing_path for o in objs}) == 60  # none twice
    assert a.meta.queue.depth("ingest")["ready"] == 60
    states = [r.state for rs in out.values() for r in rs]
    assert states.count("received") == 60 and states.count("known") == 60


@pytest.mark.postgres
def test_the_same_content_landing_twice_at_once_is_ingested_once(
    tmp_path: Path, pg_database: str, lake_of: Callable[[Project], Lake]
) -> None:
    """Two watchers register two files of the same content at the same moment (PostgreSQL): one is
    received, the other recorded as its duplicate, for every such pair."""
    project = write_project(tmp_path / "project", [EVENTS], metastore_url=pg_database)
    a, b = lake_of(project), lake_of(project)
    for i in range(40):
        for side in ("x", "y"):
            (project.landing / "events" / f"{side}{i:03d}.csv").write_text(f"id,v,s\n{i},0.5,same\n")
    out: dict[str, list[Any]] = {}
    go = threading.Barrier(2)

    def register(side: str, lake: Lake) -> None:
        go.wait()
        out[side] = lake.ingest_service.register_landed([(f"events/{side}{i:03d}.csv", 0.0) for i in range(40)])

    threads = [threading.Thread(target=register, args=(s, lk)) for s, lk in (("x", a), ("y", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(40):
        pair = sorted(out[side][i].state for side in ("x", "y"))
        assert pair == ["duplicate", "received"], (i, pair)
    assert a.meta.queue.depth("ingest")["ready"] == 40
