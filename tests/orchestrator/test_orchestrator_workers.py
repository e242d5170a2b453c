"""The worker pool drains the ingest queue with several threads; keyed datasets keep landing order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, RECEIVED


def test_worker_pool_processes_everything_queued_and_stops_when_idle(
    new_lake: Callable[..., Lake], tmp_path: Path, rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "t"}], ingest={"workers": 3})
    files = []
    for i in range(9):
        f = tmp_path / f"f{i}.csv"
        f.write_text(f"id\n{i}\n{i + 100}\n")
        files.append(f)
    registered = lake.ingest(files, "t", process=False)
    assert {state for _, _, state in registered} == {RECEIVED}
    assert lake.status().queue["ready"] == 9

    processed = lake.run_worker(threading.Event(), until_idle=True)
    assert processed == 9
    assert {o.state for o in lake.objects()} == {COMMITTED}
    assert rows(lake, "SELECT count(*) AS n FROM stage.t") == [{"n": 18}]
    assert lake.status().queue == {"ready": 0, "inflight": 0, "dead": 0}


def test_keyed_dataset_applies_files_in_landing_order(
    new_lake: Callable[..., Lake], tmp_path: Path, rows: Callable[..., list[dict[str, Any]]]
) -> None:
    """Upserts by primary key must apply in the order the files landed, whatever the number of
    workers: the last file's values win."""
    lake = new_lake(
        [{"name": "k", "primary_key": ["id"], "columns": [{"name": "id", "type": "long"}, {"name": "v"}]}],
        ingest={"workers": 4},
    )
    files = []
    for i in range(8):
        f = tmp_path / f"k{i}.csv"
        f.write_text(f"id,v\n1,v{i}\n2,w{i}\n")
        files.append(f)
    lake.ingest(files, "k", process=False)
    lake.run_worker(threading.Event(), until_idle=True)
    assert {o.state for o in lake.objects()} == {COMMITTED}
    assert rows(lake, "SELECT id, v FROM stage.k ORDER BY id") == [{"id": 1, "v": "v7"}, {"id": 2, "v": "w7"}]


def test_message_of_a_crashed_worker_is_redelivered_after_the_visibility_timeout(
    new_lake: Callable[..., Lake], tmp_path: Path, rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "t"}], ingest={"visibility_timeout_seconds": 0.5})
    f = tmp_path / "f.csv"
    f.write_text("id\n1\n2\n")
    [(_, reg, _)] = lake.ingest([f], "t", process=False)
    taken = lake.ingest_service.receive()  # a worker takes the message, then dies without a word
    assert taken is not None and taken.object_id == reg.object_id
    assert lake.status().queue["inflight"] == 1

    lake.run_worker(threading.Event(), workers=2, until_idle=True)  # waits out the lease, then works

    obj = lake.object(reg.object_id)
    assert obj.state == COMMITTED
    assert obj.attempts == 2  # the second delivery did the work
    assert rows(lake, "SELECT count(*) AS n FROM stage.t") == [{"n": 2}]
    assert lake.status().queue == {"ready": 0, "inflight": 0, "dead": 0}
