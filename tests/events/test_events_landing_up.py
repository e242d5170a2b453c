"""The event path with everything real: files land in lake/landing/ while ``Lake.up`` runs (the
watchdog observer, the reconciliation scan and the worker pool), and their rows become
queryable. Asynchronous outcomes are polled with a deadline."""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, COMMITTED_WITH_QUARANTINE, DEAD_LETTERED, DUPLICATE, REJECTED

ORDERS = {
    "name": "orders",
    "landing": "orders/**",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "amount", "type": "double"},
    ],
}
CLICKS = {"name": "clicks", "landing": "clicks/*.jsonl*", "format": "jsonl"}
NO_SCAN = {"scan_interval_seconds": 3600}  # only the watcher (and the start-up scan) can see files


def _landing(lake: Lake) -> Path:
    return lake.storage.zone("landing")


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _objects_by_path(lake: Lake) -> dict[str, Any]:
    return {o.landing_path: o for o in lake.objects(limit=10_000)}


def test_dropped_files_become_queryable_rows(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    lake = new_lake([ORDERS, CLICKS], ingest=NO_SCAN)
    with running(lake):
        _write(_landing(lake) / "orders" / "o1.csv", "id,amount\n1,9.5\n2,x\n3,1.25\n")
        _write(
            _landing(lake) / "clicks" / "c1.jsonl.gz",
            gzip.compress(b"".join(json.dumps({"user": f"u{i}", "n": i}).encode() + b"\n" for i in range(50))),
        )
        wait_for(settled(lake, 2), what="both objects to settle")
        got = wait_for(
            lambda: rows(lake, "SELECT id, amount FROM stage.orders ORDER BY id"), what="orders to be queryable"
        )

    assert got == [{"id": 1, "amount": 9.5}, {"id": 3, "amount": 1.25}]
    assert rows(lake, "SELECT count(*) AS n, sum(n) AS s FROM stage.clicks") == [{"n": 50, "s": sum(range(50))}]
    assert rows(lake, "SELECT _tarn_row, reason FROM quarantine.orders") == [
        {"_tarn_row": 3, "reason": "amount: cannot convert 'x' to double"}
    ]
    objs = _objects_by_path(lake)
    order = objs["orders/o1.csv"]
    assert (order.dataset, order.state, order.rows_committed, order.rows_quarantined) == (
        "orders",
        COMMITTED_WITH_QUARANTINE,
        2,
        1,
    )
    assert order.closed_at is not None and order.closed_at <= order.arrived_at
    assert Path(str(order.raw_path)).read_text() == "id,amount\n1,9.5\n2,x\n3,1.25\n"
    assert objs["clicks/c1.jsonl.gz"].state == COMMITTED
    assert {t["name"] for t in lake.tables()} == {"stage.orders", "quarantine.orders", "stage.clicks"}
    assert lake.status().queue == {"ready": 0, "inflight": 0, "dead": 0}


def test_files_present_at_start_up_are_picked_up_by_the_scan(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    lake = new_lake([ORDERS], ingest=NO_SCAN)
    for i in range(3):
        _write(_landing(lake) / "orders" / f"early{i}.csv", f"id,amount\n{i},1.0\n")
    assert lake.objects() == []
    with running(lake):
        wait_for(settled(lake, 3), what="the three early files")
    assert sorted(o.landing_path for o in lake.objects()) == [f"orders/early{i}.csv" for i in range(3)]
    assert {o.state for o in lake.objects()} == {COMMITTED}
    assert rows(lake, "SELECT id FROM stage.orders ORDER BY id") == [{"id": 0}, {"id": 1}, {"id": 2}]


def test_partly_written_file_is_not_picked_up_before_the_writer_closes_it(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:

    lake = new_lake([ORDERS])  # scan every second, settle 0.2 s: both run while the file is open
    settle = lake.spec.ingest.settle_seconds
    target = _landing(lake) / "orders" / "slow.csv"
    with running(lake):
        with open(target, "w") as f:
            f.write("id,amount\n")
            f.flush()
            for chunk in range(4):
                f.write("".join(f"{chunk * 100 + i},1.0\n" for i in range(100)))
                f.flush()
                time.sleep(3 * settle + 0.1)  # the writer pauses longer than the settle time
            assert lake.objects() == [], "a file still open for writing was picked up"
        wait_for(settled(lake, 1), what="the file to be processed once closed")
        obj = lake.objects()[0]
    assert len(lake.objects()) == 1
    assert (obj.landing_path, obj.state, obj.rows_total, obj.rows_committed) == ("orders/slow.csv", COMMITTED, 400, 400)
    assert rows(lake, "SELECT count(DISTINCT id) AS n FROM stage.orders") == [{"n": 400}]


def test_file_held_open_too_long_is_taken_once_its_size_is_stable(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    """A writer that never closes its file (a crashed uploader) does not block it for ever: after
    open_file_timeout_seconds, a file whose size and mtime are stable is taken."""
    lake = new_lake([ORDERS], ingest={"open_file_timeout_seconds": 1.0})
    with running(lake), open(_landing(lake) / "orders" / "stuck.csv", "w") as f:
        f.write("id,amount\n1,1.0\n2,2.0\n")
        f.flush()
        wait_for(settled(lake, 1), timeout=15, what="the open file to be taken after the timeout")
    [obj] = lake.objects()
    assert (obj.state, obj.rows_committed) == (COMMITTED, 2)


def test_file_moved_into_landing_from_outside_is_picked_up_promptly(
    new_lake: Callable[..., Lake],
    tmp_path: Path,
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    """Write elsewhere, then rename into landing (the usual atomic landing): watchdog reports a
    creation with no close event after it; the file must settle by stability, not wait for
    open_file_timeout_seconds."""
    lake = new_lake([ORDERS])
    staged = _write(tmp_path / "staging" / "moved.csv", "id,amount\n1,1.0\n")
    with running(lake):
        os.rename(staged, _landing(lake) / "orders" / "moved.csv")
        # settle 0.2 s and a scan every second: 6 s is ample.
        wait_for(settled(lake, 1), timeout=6, what="the moved-in file")
    assert lake.objects()[0].state == COMMITTED


def test_files_in_a_new_subfolder_of_landing_are_picked_up_promptly(
    new_lake: Callable[..., Lake],
    tmp_path: Path,
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    """Files in a folder that appears in landing (moved in, or 'mkdir -p' then written before
    watchdog watches the new folder) are reported only by watchdog's synthetic creation events."""
    lake = new_lake([ORDERS])
    folder = tmp_path / "staging" / "2024-01"
    _write(folder / "o1.csv", "id,amount\n1,1.0\n")
    with running(lake):
        os.rename(folder, _landing(lake) / "orders" / "2024-01")
        _write(_landing(lake) / "orders" / "2024" / "02" / "o2.csv", "id,amount\n2,2.0\n")  # mkdir -p, write
        wait_for(settled(lake, 2), timeout=6, what="the files in the new folders")
    assert sorted(o.landing_path for o in lake.objects()) == ["orders/2024-01/o1.csv", "orders/2024/02/o2.csv"]
    assert {o.state for o in lake.objects()} == {COMMITTED}


def test_file_renamed_into_place_inside_landing_is_picked_up(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    lake = new_lake([ORDERS], ingest=NO_SCAN)
    part = _write(_landing(lake) / "orders" / "upload.csv.part", "id,amount\n1,1.0\n")
    hidden = _write(_landing(lake) / "orders" / ".hidden.csv", "id,amount\n2,1.0\n")
    with running(lake):
        os.rename(part, _landing(lake) / "orders" / "upload.csv")
        wait_for(settled(lake, 1), what="the renamed file")
    assert [(o.landing_path, o.state) for o in lake.objects()] == [("orders/upload.csv", COMMITTED)]
    assert hidden.exists()  # ignored, never registered


def test_symlink_out_of_landing_is_rejected_and_not_followed(
    new_lake: Callable[..., Lake],
    tmp_path: Path,
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    lake = new_lake([ORDERS])
    secret = _write(tmp_path / "outside" / "passwd.csv", "id,amount\n1,1.0\n")
    (_landing(lake) / "orders" / "link.csv").symlink_to(secret)
    with running(lake):
        wait_for(settled(lake, 1), what="the symlink to be judged")
    [obj] = lake.objects()
    assert obj.state == REJECTED
    assert obj.error is not None and "symlink pointing outside the landing zone" in obj.error
    assert obj.raw_path is None
    assert not any(p.is_file() for p in lake.storage.zone("raw").rglob("*"))
    assert lake.tables() == []


def test_symlink_created_while_up_runs_is_rejected_promptly(
    new_lake: Callable[..., Lake],
    tmp_path: Path,
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    """A symlink gets a creation event and never a close: it is judged (rejected) promptly."""
    lake = new_lake([ORDERS])
    secret = _write(tmp_path / "outside" / "passwd.csv", "id,amount\n1,1.0\n")
    with running(lake):
        (_landing(lake) / "orders" / "link.csv").symlink_to(secret)
        wait_for(settled(lake, 1), timeout=6, what="the symlink to be judged")
    [obj] = lake.objects()
    assert obj.state == REJECTED
    assert obj.error is not None and "symlink pointing outside the landing zone" in obj.error


def test_unrouted_file_is_rejected_with_the_patterns_it_did_not_match(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    lake = new_lake([ORDERS, CLICKS], ingest=NO_SCAN)
    (_landing(lake) / "misc").mkdir()
    with running(lake):
        _write(_landing(lake) / "misc" / "stray.csv", "a\n1\n")
        _write(_landing(lake) / "clicks" / "not-jsonl.csv", "a\n1\n")  # folder matches, glob does not
        wait_for(settled(lake, 2), what="the unrouted files")
    objs = _objects_by_path(lake)
    for path in ("misc/stray.csv", "clicks/not-jsonl.csv"):
        obj = objs[path]
        assert obj.state == REJECTED
        assert obj.dataset is None
        assert obj.error is not None
        assert f"no dataset's landing pattern matches {path!r}" in obj.error
        assert "orders: orders/**" in obj.error and "clicks: clicks/*.jsonl*" in obj.error


def test_file_over_max_file_bytes_is_rejected(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    lake = new_lake([ORDERS], ingest={"max_file_bytes": 64})
    with running(lake):
        _write(_landing(lake) / "orders" / "big.csv", "id,amount\n" + "".join(f"{i},1.0\n" for i in range(50)))
        _write(_landing(lake) / "orders" / "small.csv", "id,amount\n1,1.0\n")
        wait_for(settled(lake, 2), what="both files")
    objs = _objects_by_path(lake)
    big = objs["orders/big.csv"]
    assert big.state == REJECTED
    assert big.error is not None and "over the limit of 64 bytes" in big.error and "max_file_bytes" in big.error
    assert big.raw_path is None
    assert objs["orders/small.csv"].state == COMMITTED


def test_corrupt_file_reaches_the_dlq_while_others_commit(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
) -> None:
    lake = new_lake([ORDERS])
    data = gzip.compress(("id,amount\n" + "".join(f"{i},{i}.5\n" for i in range(5000))).encode())
    with running(lake):
        _write(_landing(lake) / "orders" / "broken.csv.gz", data[: len(data) // 3])
        _write(_landing(lake) / "orders" / "fine.csv", "id,amount\n1,1.0\n")
        wait_for(settled(lake, 2), what="the corrupt file to be dead-lettered")
    objs = _objects_by_path(lake)
    broken = objs["orders/broken.csv.gz"]
    assert broken.state == DEAD_LETTERED
    assert broken.attempts == lake.spec.ingest.max_receives == 2
    assert broken.error is not None and "broken.csv.gz" in broken.error
    [dead] = lake.dlq()
    assert (dead.object_id, dead.receive_count) == (broken.id, 2)
    assert objs["orders/fine.csv"].state == COMMITTED
    assert lake.status().to_dict()["dlq"] == 1


def test_same_content_landed_twice_is_not_ingested_twice(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    lake = new_lake([ORDERS], ingest=NO_SCAN)
    content = "id,amount\n1,1.0\n2,2.0\n"
    with running(lake):
        _write(_landing(lake) / "orders" / "a.csv", content)
        wait_for(settled(lake, 1), what="the first copy")
        _write(_landing(lake) / "orders" / "b.csv", content)
        wait_for(settled(lake, 2), what="the second copy")
    objs = _objects_by_path(lake)
    first, second = objs["orders/a.csv"], objs["orders/b.csv"]
    assert first.state == COMMITTED
    assert (second.state, second.duplicate_of) == (DUPLICATE, first.id)
    assert rows(lake, "SELECT count(*) AS n FROM stage.orders") == [{"n": 2}]


def test_a_restarted_lake_does_not_register_known_files_again(
    make_project: Callable[..., Path],
    open_lake: Callable[[Path], Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    project = make_project([ORDERS])
    lake = open_lake(project)
    with running(lake):
        _write(_landing(lake) / "orders" / "one.csv", "id,amount\n1,1.0\n")
        wait_for(settled(lake, 1), what="the first file")
    lake.close()

    again = open_lake(project)
    with running(again):
        # The start-up scan sees one.csv again; a new file proves the scan's sightings were handled.
        _write(_landing(again) / "orders" / "two.csv", "id,amount\n2,2.0\n")
        wait_for(settled(again, 2), what="the second file")
    assert sorted(o.landing_path for o in again.objects()) == ["orders/one.csv", "orders/two.csv"]
    assert rows(again, "SELECT id FROM stage.orders ORDER BY id") == [{"id": 1}, {"id": 2}]


def test_many_files_landing_at_once_are_each_committed_exactly_once(
    new_lake: Callable[..., Lake],
    running: Callable[..., Any],
    wait_for: Callable[..., Any],
    settled: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    lake = new_lake([ORDERS], ingest={"workers": 3})
    n_files, per_file = 24, 50
    with running(lake):
        for f in range(n_files):
            body = "".join(f"{f * per_file + i},{i}.0\n" for i in range(per_file))
            _write(_landing(lake) / "orders" / f"part-{f:03d}.csv", "id,amount\n" + body)
        wait_for(settled(lake, n_files), timeout=60, what="every file")
    assert {o.state for o in lake.objects(limit=1000)} == {COMMITTED}
    assert len(lake.objects(limit=1000)) == n_files
    assert rows(lake, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM stage.orders") == [
        {"n": n_files * per_file, "d": n_files * per_file}
    ]
