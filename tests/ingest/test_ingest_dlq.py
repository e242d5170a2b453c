"""Failures retry with backoff; after max_receives the message is dead-lettered with its error;
``redrive`` puts it back once the cause is fixed. The project under test has max_receives 2."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard

from tarn.errors import NotFoundError, StateError
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, DEAD_LETTERED, FAILED, RECEIVED
from tarn.metastore.queue import DEAD

CSV = "id,name\n" + "".join(f"{i},name{i}\n" for i in range(2000))


def _truncated_gzip() -> bytes:
    data = gzip.compress(CSV.encode())
    return data[: len(data) // 2]


def _truncated_zstd() -> bytes:
    data = zstandard.ZstdCompressor().compress(CSV.encode())
    return data[: len(data) // 2]


def _work_until_idle(lake: Lake) -> int:
    """Run the real worker pool until nothing is visible in the queue."""
    return lake.run_worker(threading.Event(), workers=1, until_idle=True)


@pytest.mark.parametrize(
    ("name", "content", "codec"),
    [("broken.csv.gz", _truncated_gzip(), "GZIP"), ("broken.csv.zst", _truncated_zstd(), "ZSTD")],
    ids=["gzip", "zstd"],
)
def test_corrupt_file_is_retried_then_dead_lettered_with_its_error(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], name: str, content: bytes, codec: str
) -> None:
    """A truncated compressed file must fail (never commit the rows it happens to hold)."""
    lake = new_lake([{"name": "t"}])
    assert lake.spec.ingest.max_receives == 2
    obj = ingest_file(lake, "t", name, content)

    assert obj.state == FAILED  # first attempt; the message is retried after a backoff
    assert obj.error is not None and codec in obj.error.upper()
    [msg] = lake.meta.queue.list("ingest")
    assert (msg.state, msg.receive_count, msg.last_error) == ("ready", 1, obj.error)

    assert _work_until_idle(lake) == 1
    obj = lake.object(obj.id)
    assert obj.state == DEAD_LETTERED
    assert obj.attempts == 2
    [dead] = lake.dlq()
    assert dead.object_id == obj.id
    assert dead.state == DEAD
    assert dead.receive_count == 2
    assert dead.dead_at is not None
    assert dead.last_error is not None and codec in dead.last_error.upper()
    assert lake.status().to_dict()["dlq"] == 1

    trail = [e["state"] for e in lake.object_detail(obj.id)["events"]]
    assert trail == ["received", "processing", "failed", "processing", "dead_lettered"]
    detail = lake.dlq_show(dead.id)
    assert detail["message"]["id"] == dead.id
    assert detail["object"]["id"] == obj.id
    assert lake.tables() == []  # nothing was written


def test_redrive_after_fixing_the_dataset_commits_the_object(
    make_project: Callable[..., Path],
    open_lake: Callable[[Path], Lake],
    ingest_file: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    # The dataset declares the wrong format: its CSV files cannot be read as Parquet.
    project = make_project([{"name": "orders", "format": "parquet"}])
    lake = open_lake(project)
    obj = ingest_file(lake, "orders", "orders.csv", CSV)
    assert obj.state == FAILED
    _work_until_idle(lake)
    assert lake.object(obj.id).state == DEAD_LETTERED
    [dead] = lake.dlq()
    assert dead.last_error is not None and "Parquet" in dead.last_error

    # Fix tarn.yaml, open the project again, redrive, process.
    doc = yaml.safe_load((project / "tarn.yaml").read_text())
    doc["datasets"][0]["format"] = "csv"
    (project / "tarn.yaml").write_text(yaml.safe_dump(doc))
    lake.close()
    fixed = open_lake(project)
    assert fixed.redrive() == [dead.id]
    assert fixed.object(obj.id).state == RECEIVED
    msg = fixed.meta.queue.get(dead.id)
    assert (msg.state, msg.receive_count, msg.dead_at) == ("ready", 0, None)

    _work_until_idle(fixed)
    done = fixed.object(obj.id)
    assert done.state == COMMITTED, done.error
    assert done.rows_committed == 2000
    assert fixed.dlq() == []
    assert rows(fixed, "SELECT count(*) AS n, max(id) AS m FROM stage.orders") == [{"n": 2000, "m": 1999}]
    trail = [e["state"] for e in fixed.object_detail(obj.id)["events"]]
    assert trail[-3:] == ["received", "processing", "committed"]
    assert any(a["action"] == "dlq.redrive" for a in fixed.meta.audit.list())


def test_redrive_with_an_empty_dlq_or_a_live_message_is_an_error(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([{"name": "t", "format": "parquet"}])
    with pytest.raises(NotFoundError, match="dead-letter"):
        lake.redrive()
    obj = ingest_file(lake, "t", "x.csv", "a\n1\n")
    assert obj.state == FAILED
    [msg] = lake.meta.queue.list("ingest")
    with pytest.raises(StateError, match="not in the dead-letter queue"):
        lake.redrive([msg.id])
    with pytest.raises(NotFoundError):
        lake.redrive([msg.id + 1000])


def test_invalid_constraint_sql_fails_with_a_hint_instead_of_crashing(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([{"name": "c", "constraints": [{"name": "bad", "check": "no_such_column > 0"}]}])
    obj = ingest_file(lake, "c", "c.csv", "a\n1\n")
    assert obj.state in (FAILED, DEAD_LETTERED)
    assert obj.error is not None and "constraint" in obj.error
    assert "redrive" in obj.error  # the hint says what to do next
