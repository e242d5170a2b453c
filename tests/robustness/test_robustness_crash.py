"""Crash safety: real ``tarn up`` and ``tarn worker`` processes are SIGKILLed at chosen and at random
moments, restarted, and in the end every landed file is committed exactly once.

The kill moments are found by watching what the processes leave behind, so each phase of the work
is hit for certain rather than by luck:

* registration — ``tarn up`` killed while a file is being copied into raw/ (a temporary copy exists
  in raw/.tmp), and at a random moment while files are being registered;
* processing — workers killed while an object is ``processing`` (reading/typing), while a Delta data
  file is being written (a new Parquet file in the table folder), and right after a Delta commit
  (a new ``_delta_log`` entry) but before the queue ack; and at random moments.

After each kill, the evidence that the phase was really hit is read back (a leftover temporary copy;
an in-flight message whose object is committed / not committed; a data file that no commit
references). At the end: each file is one object, committed once (row counts, no duplicate
(_tarn_object_id, _tarn_row), no duplicate primary key, one commit per token), no message is lost
or stuck (a visibility timeout of 2 s brings back what a dead worker held), and the tables read.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from robust_helpers import (
    Project,
    TarnProcess,
    TarnProcesses,
    assert_exactly_once,
    settled_objects,
    sha256_of,
    wait_until,
    write_project,
)

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, PROCESSING
from tarn.tables import delta

EVENTS = {
    "name": "events",
    "landing": "events/**",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "v", "type": "double"},
        {"name": "s", "type": "string"},
    ],
}
ACCOUNTS = {
    "name": "accounts",
    "landing": "accounts/**",
    "primary_key": ["id"],
    "columns": [
        {"name": "id", "type": "long"},
        {"name": "version", "type": "long"},
        {"name": "name", "type": "string"},
    ],
}

N_EVENTS, EVENT_ROWS = 70, 25
N_BIG, BIG_ROWS = 3, 150_000  # ~5 MB each: long raw copies and long Delta writes
N_ACCOUNTS, ACCOUNT_ROWS, ACCOUNT_KEYS = 16, 8, 30

REGISTRATION_RAW_COPY = "registration: during the raw copy"
REGISTRATION = "registration: between files"
READING = "processing: reading and typing, before any data file"
DELTA_WRITE = "processing: during the Delta write (data file written, no commit)"
COMMITTED_NOT_ACKED = "processing: after the Delta commit, before the queue ack"


def _write_big(path: Path, base: int) -> None:
    with open(path, "w") as f:
        f.write("id,v,s\n")
        for start in range(0, BIG_ROWS, 10_000):
            f.write("".join(f"{base + j},{j * 0.5},big row {j}\n" for j in range(start, start + 10_000)))


def _write_files(landing: Path, rng: random.Random) -> tuple[dict[str, int], dict[str, list[tuple[int, int]]]]:
    events: dict[str, int] = {}
    for i in range(N_EVENTS):
        rel = f"events/e_{i:03d}.csv"
        rows = "".join(f"{i * 1000 + j},{rng.random():.6f},name {j}\n" for j in range(EVENT_ROWS))
        (landing / rel).write_text("id,v,s\n" + rows)
        events[rel] = EVENT_ROWS
    for k in range(N_BIG):
        rel = f"events/zz_big_{k}.csv"
        _write_big(landing / rel, 10_000_000 * (k + 1))
        events[rel] = BIG_ROWS
    accounts: dict[str, list[tuple[int, int]]] = {}
    for i in range(N_ACCOUNTS):
        rel = f"accounts/a_{i:03d}.csv"
        keys = rng.sample(range(ACCOUNT_KEYS), ACCOUNT_ROWS)
        (landing / rel).write_text("id,version,name\n" + "".join(f"{k},{i},key {k} v{i}\n" for k in keys))
        accounts[rel] = [(k, i) for k in keys]
    return events, accounts


class Evidence:
    """What each kill really interrupted, read back from the lake after the kill."""

    def __init__(self, project: Project, lake: Lake) -> None:
        self.project, self.lake = project, lake
        self.tmp = project.dir / "lake" / "raw" / ".tmp"
        self.seen_tmp: set[str] = set()
        self.seen_orphans: set[str] = set()
        self.hits: dict[str, int] = {}
        self.kills = 0

    def tmp_copies(self) -> set[str]:
        return {p.name for p in self.tmp.iterdir()} if self.tmp.exists() else set()

    def data_files(self, dataset: str) -> set[str]:
        d = Path(self.lake.storage.table_uri("stage", dataset))
        return {p.name for p in d.glob("*.parquet")} if d.exists() else set()

    def log_entries(self, dataset: str) -> set[str]:
        d = Path(self.lake.storage.table_uri("stage", dataset)) / "_delta_log"
        return {p.name for p in d.glob("*.json")} if d.exists() else set()

    def orphans(self) -> set[str]:
        out = set()
        for ds in ("events", "accounts"):
            uri = self.lake.storage.table_uri("stage", ds)
            if not delta.exists(uri):
                out |= {f"{ds}/{n}" for n in self.data_files(ds)}
                continue
            referenced = {Path(u).name for u in DeltaTable(uri).file_uris()}
            out |= {f"{ds}/{n}" for n in self.data_files(ds) - referenced}
        return out

    def record(self, *, registering: bool, n_files: int) -> set[str]:
        """Classify the kill that just happened (every process is dead now)."""
        self.kills += 1
        hit: set[str] = set()
        tmp = self.tmp_copies() - self.seen_tmp
        self.seen_tmp |= tmp
        if registering:
            if tmp:
                hit.add(REGISTRATION_RAW_COPY)
            elif len(self.lake.objects(limit=1_000_000)) < n_files:
                hit.add(REGISTRATION)
        orphans = self.orphans() - self.seen_orphans
        self.seen_orphans |= orphans
        if orphans:
            hit.add(DELTA_WRITE)
        for m in self.lake.meta.queue.list("ingest", state="inflight", limit=1_000_000):
            obj = self.lake.object(m.object_id or "")
            uri = self.lake.storage.table_uri("stage", obj.dataset or "")
            if delta.committed(uri, f"tarn-ingest-{obj.id}"):
                hit.add(COMMITTED_NOT_ACKED)
            elif not orphans:
                hit.add(READING)
        for h in hit:
            self.hits[h] = self.hits.get(h, 0) + 1
        return hit


def _poll(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Tight polling (1 ms) for a short-lived moment; None if it did not come in time."""
    try:
        return wait_until(predicate, timeout=timeout, what=what, interval=0.001)
    except AssertionError:
        return None


@pytest.mark.slow
def test_sigkilled_workers_commit_every_object_exactly_once(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake]
) -> None:
    rng = random.Random(4)
    started = time.monotonic()
    project = write_project(tmp_path / "project", [EVENTS, ACCOUNTS])
    lake = lake_of(project)
    events, accounts = _write_files(project.landing, rng)
    n_files = len(events) + len(accounts)
    ev = Evidence(project, lake)

    def n_objects() -> int:
        return len(lake.objects(limit=1_000_000))

    # ---- Phase 1: 'tarn up' (watcher + registration + workers) killed mid-registration.
    up = tarn_processes.start(project, "up")
    _poll(lambda: ev.tmp_copies() - ev.seen_tmp, 90, "tarn up to copy a file into raw/")
    up.kill()
    ev.record(registering=True, n_files=n_files)
    for _ in range(6):  # at random moments while files are being registered, until one falls between files
        before = n_objects()
        if before >= n_files or REGISTRATION in ev.hits:
            break
        up = tarn_processes.start(project, "up")
        wait_until(lambda b=before: n_objects() > b, timeout=90, what="tarn up to register files")
        # Registration is quick (a few ms per small file): a short random delay still lands mid-way.
        time.sleep(rng.uniform(0, 0.05))
        up.kill()
        ev.record(registering=True, n_files=n_files)
    for attempt in range(4):  # the raw copy of a big file, if the first kill missed it
        if REGISTRATION_RAW_COPY in ev.hits:
            break
        if n_objects() >= n_files:  # all registered before a copy was caught: land one more big file
            rel = f"events/zz_more_{attempt}.csv"
            _write_big(project.landing / rel, 90_000_000 + attempt * 1_000_000)
            events[rel] = BIG_ROWS
            n_files += 1
        up = tarn_processes.start(project, "up")
        _poll(lambda: ev.tmp_copies() - ev.seen_tmp, 60, "a raw copy")
        up.kill()
        ev.record(registering=True, n_files=n_files)
    up = tarn_processes.start(project, "up")
    wait_until(lambda: n_objects() >= n_files, timeout=120, what="every landed file to be registered")
    up.kill()  # also mid-processing: its workers were busy
    ev.record(registering=False, n_files=n_files)

    # ---- Phase 2: 'tarn worker' processes killed at chosen moments, then at random ones.
    def workers() -> list[TarnProcess]:
        return [tarn_processes.start(project, "worker", "--workers", "2") for _ in range(2)]

    def kill_round(trigger: Callable[[], Any]) -> set[str]:
        ws = workers()
        trigger()
        for w in ws:
            w.kill()
        return ev.record(registering=False, n_files=n_files)

    def processing() -> bool:
        return bool(lake.objects(state=PROCESSING, limit=1))

    def new_data_file() -> Callable[[], Any]:
        before = ev.data_files("events") | ev.data_files("accounts")
        return lambda: (ev.data_files("events") | ev.data_files("accounts")) - before

    def new_commit() -> Callable[[], Any]:
        before = ev.log_entries("events") | ev.log_entries("accounts")
        return lambda: (ev.log_entries("events") | ev.log_entries("accounts")) - before

    targeted: list[tuple[str, Callable[[], Callable[[], Any]]]] = [
        (READING, lambda: processing),
        (DELTA_WRITE, new_data_file),
        (COMMITTED_NOT_ACKED, new_commit),
    ]
    for phase, make_trigger in targeted:
        for _attempt in range(5):
            if phase in ev.hits or settled_objects(lake, n_files):
                break
            moment = make_trigger()
            kill_round(lambda m=moment, p=phase: _poll(m, 60, p))
    for r in range(3):  # random moments, each with fresh work: files given to 'tarn ingest' (queued only)
        batch = []
        for i in range(15):
            f = tmp_path / "incoming" / f"r{r}_{i:02d}.csv"
            f.parent.mkdir(exist_ok=True)
            f.write_text("id,v,s\n" + "".join(f"{(r + 1) * 1_000_000 + i * 1000 + j},{j},late\n" for j in range(40)))
            batch.append(f)
            events[str(f.resolve())] = 40
        lake.ingest(batch, "events", process=False)
        n_files += len(batch)
        progress = lake.status().objects

        def random_moment(p: dict[str, int] = progress) -> None:
            wait_until(lambda: lake.status().objects != p, timeout=60, what="the workers to make progress")
            time.sleep(rng.uniform(0, 1.5))

        kill_round(random_moment)

    # ---- Recovery: fresh workers finish everything; what dead workers held comes back after 2 s.
    final = workers()
    wait_until(lambda: settled_objects(lake, n_files), timeout=180, what="every object to reach a terminal state")
    for w in final:
        # A SIGTERM that lands while the process is still importing kills it outright; graceful
        # shutdown is what is tested here, so wait until the worker says it has started.
        wait_until(lambda w=w: "worker started" in w.stdout(), timeout=60, what="the worker to start")
        assert w.terminate(timeout=60) == 0, w.stderr()[-2000:]

    # ---- Every phase was interrupted at least once.
    missing = {REGISTRATION_RAW_COPY, REGISTRATION, READING, DELTA_WRITE, COMMITTED_NOT_ACKED} - set(ev.hits)
    assert not missing, f"kills never hit {missing} (hits: {ev.hits})"

    # ---- Nothing lost: every landed file is exactly one committed object, its raw copy intact.
    objs = lake.objects(limit=1_000_000)
    by_path: dict[str, list[Any]] = {}
    for o in objs:
        by_path.setdefault(o.landing_path, []).append(o)
    assert sorted(by_path) == sorted([*events, *accounts]), "objects do not match the landed and ingested files"
    assert all(len(v) == 1 for v in by_path.values()), {p: len(v) for p, v in by_path.items() if len(v) > 1}
    assert {o.state for o in objs} == {COMMITTED}, {o.landing_path: (o.state, o.error) for o in objs}
    for o in objs:
        assert o.raw_path is not None and sha256_of(Path(o.raw_path)) == o.sha256
    assert lake.meta.queue.depth("ingest") == {"ready": 0, "inflight": 0, "dead": 0}

    # ---- Nothing duplicated: the append dataset, row by row and commit by commit.
    ids = {p: v[0].id for p, v in by_path.items()}
    assert_exactly_once(lake, "events", {ids[p]: n for p, n in events.items()})
    [counts] = lake.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM stage.events").table.to_pylist()
    assert counts["n"] == counts["d"] == sum(events.values())

    # ---- The keyed dataset: one row per key, holding the version of the last file (FIFO order).
    order = sorted(accounts, key=lambda p: by_path[p][0].arrived_at)
    expected: dict[int, int] = {}
    for rel in order:
        for key, version in accounts[rel]:
            expected[key] = version
    rows = lake.query("SELECT id, version FROM stage.accounts").table.to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "a primary key is in stage.accounts twice"
    assert {r["id"]: r["version"] for r in rows} == expected
    commits = DeltaTable(lake.storage.table_uri("stage", "accounts")).history()
    tokens = [h["tarn.token"] for h in commits if h.get("tarn.token")]
    assert sorted(tokens) == sorted(f"tarn-ingest-{ids[p]}" for p in accounts), "one MERGE commit per accounts file"

    # ---- Errors were handled, not shown: no worker reported a locked database.
    assert "database is locked" not in tarn_processes.all_stderr()
    print(f"\n{ev.kills} kills in {time.monotonic() - started:.0f}s; phases hit: {ev.hits}")


def test_evidence_helpers_see_a_fresh_project(tmp_path: Path, lake_of: Callable[[Project], Lake]) -> None:
    """The evidence reader works on a project without tables (no false hits)."""
    project = write_project(tmp_path / "p", [EVENTS, ACCOUNTS])
    lake = lake_of(project)
    ev = Evidence(project, lake)
    assert ev.orphans() == set()
    assert ev.record(registering=False, n_files=0) == set()
    assert os.path.isdir(project.landing / "events")
