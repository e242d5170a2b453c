"""Bad input: a generated corpus of 46 kinds of files (44 broken or awkward, 2 good) goes through
one running ``tarn up`` (a real process, real watcher, real workers). Each file ends in a defined
state with a clear reason that ``tarn objects show ID`` prints, the worker keeps running, and the
good files among them are committed as if nothing else had happened. Files that change or vanish
while Tarn reads them are covered separately, with a real writer thread racing the raw copy."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import badinput as bi
import pytest
from robust_helpers import Project, TarnProcesses, settled_objects, sha256_of, wait_until, write_project

from tarn.errors import IngestError, NotFoundError
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, TERMINAL

CORPUS_INGEST = {
    "max_receives": 2,
    "max_file_bytes": bi.MAX_FILE_BYTES,
    "visibility_timeout_seconds": 60,
    "settle_seconds": 0.2,
    "scan_interval_seconds": 1,
}


def _reason_text(detail: dict[str, Any]) -> str:
    """What 'tarn objects show ID' prints about why: the error and every message of the trail."""
    return "\n".join([detail.get("error") or "", *(e["message"] or "" for e in detail["events"])])


def _append_slowly(path: Path, rows: int, stop: threading.Event) -> None:
    """A writer that reopens the file for every row (each close is a 'settled' event)."""
    with open(path, "w") as f:
        f.write("id,amount,day,note\n")
    for i in range(rows):
        if stop.is_set():
            return
        with open(path, "a") as f:
            f.write(f"{90_000 + i},1.0,2024-01-01,growing\n")
        time.sleep(0.03)


@pytest.mark.slow
def test_bad_input_corpus_through_one_tarn_up(
    tmp_path: Path, tarn_processes: TarnProcesses, lake_of: Callable[[Project], Lake]
) -> None:
    project = write_project(tmp_path / "project", bi.DATASETS, ingest=CORPUS_INGEST)
    lake = lake_of(project)
    cases = bi.cases(tmp_path / "outside")
    assert len({c.kind for c in cases}) == len(cases) >= 40
    up = tarn_processes.start(project, "up")
    wait_until(lambda: "watching" in up.stdout(), timeout=60, what="tarn up to start")

    for c in cases:
        path = project.landing / c.path
        path.parent.mkdir(parents=True, exist_ok=True)
        c.make(path)
    growing = project.landing / "orders" / "growing.csv"
    stop = threading.Event()
    writer = threading.Thread(target=_append_slowly, args=(growing, 60, stop), daemon=True)
    writer.start()
    writer.join(timeout=60)
    stop.set()

    wait_until(lambda: settled_objects(lake, len(cases) + 1), timeout=240, what="every corpus file to settle")
    assert up.alive(), f"tarn up died:\n{up.stderr()[-3000:]}"

    # The worker keeps running: a good file landed after all that is committed.
    (project.landing / "orders" / "after.csv").write_text(bi.orders(500))

    def after_committed() -> bool:
        objs = [o for o in lake.objects(limit=1000) if o.landing_path == "orders/after.csv"]
        return bool(objs) and objs[0].state == COMMITTED

    wait_until(after_committed, timeout=60, what="a good file landed after the corpus")

    objs = lake.objects(limit=10_000)
    by_path: dict[str, list[Any]] = {}
    for o in objs:
        by_path.setdefault(o.landing_path, []).append(o)
    failures = []
    for c in cases:
        found = by_path.get(c.path, [])
        if len(found) != 1:
            failures.append(f"{c.kind}: {len(found)} objects for {c.path!r}")
            continue
        obj = found[0]
        detail = lake.object_detail(obj.id)
        text = _reason_text(detail)
        if obj.state != c.state:
            failures.append(f"{c.kind}: state {obj.state}, expected {c.state} ({text[-300:]!r})")
        elif not re.search(c.reason, text, re.IGNORECASE | re.DOTALL):
            failures.append(f"{c.kind}: reason {text[-300:]!r} does not match {c.reason!r}")
        elif c.rows is not None and obj.rows_committed != c.rows:
            failures.append(f"{c.kind}: {obj.rows_committed} rows committed, expected {c.rows}")
        elif c.quarantined is not None and obj.rows_quarantined != c.quarantined:
            failures.append(f"{c.kind}: {obj.rows_quarantined} rows quarantined, expected {c.quarantined}")
        if obj.state not in TERMINAL:
            failures.append(f"{c.kind}: left in state {obj.state}")
    assert not failures, "\n".join(failures)

    # A file rewritten while Tarn watched it: each version Tarn took is committed, the last one whole.
    versions = sorted(by_path["orders/growing.csv"], key=lambda o: o.arrived_at)
    assert {o.state for o in versions} == {COMMITTED}
    assert versions[-1].rows_committed == 60
    for o in versions:
        assert o.raw_path is not None and sha256_of(Path(o.raw_path)) == o.sha256

    # Other files are unaffected: the good file's rows are all there, as written.
    good = by_path["orders/good.csv"][0]
    rows = lake.query(f"SELECT id, amount FROM stage.orders WHERE _tarn_object_id = '{good.id}' ORDER BY id")
    assert rows.table.to_pylist() == [{"id": 1, "amount": 9.5}, {"id": 2, "amount": 3.25}, {"id": 3, "amount": 0.5}]
    # Quarantined rows say why, with their line: the non-UTF-8 row, the ragged rows.
    latin1 = by_path["orders/latin1.csv"][0]
    [bad] = lake.query(
        f"SELECT _tarn_row, reason FROM quarantine.orders WHERE _tarn_object_id = '{latin1.id}'"
    ).table.to_pylist()
    assert bad["_tarn_row"] == 2 and re.search(r"malformed record.*(unicode|encoding|utf)", bad["reason"], re.I), bad
    ragged = by_path["orders/ragged.csv"][0]
    reasons = lake.query(
        f"SELECT _tarn_row, reason FROM quarantine.orders WHERE _tarn_object_id = '{ragged.id}' ORDER BY 1"
    ).table.to_pylist()
    assert [r["_tarn_row"] for r in reasons] == [3, 4] and all("malformed record" in r["reason"] for r in reasons)

    # What 'tarn objects show' prints (the real CLI, in parallel): the reason is on screen.
    shown = {
        "orders/bomb.csv.gz": "decompression bomb",
        "orders/garbage.csv": "is not csv text",
        "orders/truncated.csv.zst": "truncated or corrupt",
    }
    cli = {p: tarn_processes.start(project, "objects", "show", by_path[p][0].id) for p in shown}
    for p, proc in cli.items():
        assert proc.proc.wait(timeout=120) == 0, proc.stderr()
        out = " ".join(proc.stdout().split())  # the table wraps long text
        assert shown[p] in out, out[-1500:]

    assert up.terminate(timeout=60) == 0
    log = up.stderr()
    assert "Traceback" not in log, log[-3000:]
    assert "database is locked" not in log


@pytest.fixture
def orders_lake(tmp_path: Path, lake_of: Callable[[Project], Lake]) -> Lake:
    return lake_of(write_project(tmp_path / "project", [bi.DATASETS[0]], ingest={"max_receives": 2}))


def _big_orders(path: Path, rows: int = 400_000) -> None:
    with open(path, "w") as f:
        f.write("id,amount,day,note\n")
        for start in range(0, rows, 20_000):
            f.write("".join(f"{i},1.5,2024-01-01,n\n" for i in range(start, start + 20_000)))


def _tmp_copies(lake: Lake) -> list[Path]:
    return list((lake.storage.zone("raw") / ".tmp").iterdir())


def test_a_file_changed_while_being_copied_is_not_registered_until_it_settles(orders_lake: Lake) -> None:
    lake = orders_lake
    svc = lake.ingest_service
    path = lake.storage.zone("landing") / "orders" / "busy.csv"
    _big_orders(path)
    stop = threading.Event()

    def keep_appending() -> None:
        n = 0
        while not stop.is_set():
            with open(path, "a") as f:
                f.write(f"{10_000_000 + n},2.0,2024-01-02,late\n")
            n += 1

    writer = threading.Thread(target=keep_appending, daemon=True)
    writer.start()
    outcomes: list[str] = []
    try:
        for _ in range(5):
            try:
                svc.register(path, landing_rel="orders/busy.csv", dataset=None)
                outcomes.append("registered")
            except IngestError as e:
                assert "changed while it was being copied" in str(e)
                outcomes.append("changed")
    finally:
        stop.set()
        writer.join(timeout=10)
    assert "changed" in outcomes, outcomes
    assert _tmp_copies(lake) == [], "a discarded copy was left in raw/.tmp"
    # Once settled, the final content is registered and committed whole.
    final = svc.register(path, landing_rel="orders/busy.csv", dataset=None)
    while (msg := svc.receive()) is not None:
        svc.process(msg)
    obj = lake.object(final.object_id)
    with open(path) as f:
        lines = sum(1 for _ in f) - 1
    assert (obj.state, obj.rows_committed, obj.size) == (COMMITTED, lines, path.stat().st_size)
    assert sha256_of(Path(obj.raw_path or "")) == sha256_of(path)
    for o in lake.objects():  # versions registered while the writer ran are whole versions too
        assert o.state == COMMITTED and sha256_of(Path(o.raw_path or "")) == o.sha256


def test_a_file_deleted_while_being_copied_leaves_no_object_and_no_copy(orders_lake: Lake) -> None:
    lake = orders_lake
    svc = lake.ingest_service
    path = lake.storage.zone("landing") / "orders" / "vanishing.csv"
    _big_orders(path, 600_000)
    tmp = lake.storage.zone("raw") / ".tmp"

    def delete_during_copy() -> None:
        wait_until(lambda: any(tmp.iterdir()), timeout=30, what="the raw copy to start", interval=0.0005)
        path.unlink()

    deleter = threading.Thread(target=delete_during_copy, daemon=True)
    deleter.start()
    try:
        reg = svc.register(path, landing_rel="orders/vanishing.csv", dataset=None)
    except (IngestError, NotFoundError) as e:
        # the usual outcome: the copy saw the file vanish
        assert "changed while it was being copied" in str(e) or "disappeared" in str(e)
        deleter.join(timeout=30)
        assert lake.objects() == []
    else:
        # the copy won the race: the file was whole when copied, and the raw copy is what counts
        deleter.join(timeout=30)
        while (msg := svc.receive()) is not None:
            svc.process(msg)
        assert lake.object(reg.object_id).state == COMMITTED
    assert _tmp_copies(lake) == []


def test_a_file_deleted_after_registration_is_processed_from_its_raw_copy(orders_lake: Lake, tmp_path: Path) -> None:
    lake = orders_lake
    source = tmp_path / "drop" / "gone.csv"
    source.parent.mkdir()
    source.write_text(bi.orders(700, 5))
    [(_, reg, _)] = lake.ingest([source], "orders", process=False)
    source.unlink()
    svc = lake.ingest_service
    while (msg := svc.receive()) is not None:
        svc.process(msg)
    obj = lake.object(reg.object_id)
    assert (obj.state, obj.rows_committed) == (COMMITTED, 5)
