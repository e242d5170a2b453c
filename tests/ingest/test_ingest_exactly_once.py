"""Exactly once: a redelivered message never duplicates rows (the commit carries the object id
as a Delta app transaction), and the same content landing twice is not ingested twice."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tarn.ingest.processor import Processor, token_for
from tarn.ingest.service import INGEST_QUEUE
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, COMMITTED_WITH_QUARANTINE, DUPLICATE, PROCESSING

CSV = "id,v\n1,a\n2,b\n3,c\n"


@pytest.fixture
def lake(new_lake: Callable[..., Lake]) -> Lake:
    return new_lake([{"name": "t"}, {"name": "other"}])


def _resend(lake: Lake, object_id: str, dataset: str) -> int:
    """Make the object's message visible again, as a queue redelivery would."""
    with lake.meta.db.tx() as conn:
        return lake.meta.queue.send(
            conn, INGEST_QUEUE, {"object_id": object_id, "dataset": dataset}, object_id=object_id
        )


def _stage(lake: Lake, table: str = "t") -> DeltaTable:
    return DeltaTable(lake.storage.table_uri("stage", table))


def test_redelivery_after_commit_does_not_duplicate_rows(
    lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    obj = ingest_file(lake, "t", "t.csv", CSV)
    assert obj.state == COMMITTED
    version = _stage(lake).version()
    assert _stage(lake).transaction_version(token_for(obj.id)) == 1

    msg_id = _resend(lake, obj.id, "t")
    msg = lake.ingest_service.receive()
    assert msg is not None and msg.id == msg_id and msg.object_id == obj.id
    assert lake.ingest_service.process(msg) == COMMITTED

    assert rows(lake, "SELECT count(*) AS n FROM stage.t") == [{"n": 3}]
    assert _stage(lake).version() == version
    assert lake.status().queue == {"ready": 0, "inflight": 0, "dead": 0}  # acknowledged


def test_redelivery_after_a_crash_between_commit_and_ack_does_not_duplicate_rows(
    lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    """The worker committed the rows, then died before recording the state and acking: the
    object is still 'processing' and its message comes back. The Delta log already holds the
    object's app transaction, so nothing is written again."""
    obj = ingest_file(lake, "t", "t.csv", CSV)
    version = _stage(lake).version()
    lake.meta.objects.transition(obj.id, PROCESSING, "simulated crash after the Delta commit")
    _resend(lake, obj.id, "t")

    msg = lake.ingest_service.receive()
    assert msg is not None
    assert lake.ingest_service.process(msg) == COMMITTED

    assert rows(lake, "SELECT count(*) AS n FROM stage.t") == [{"n": 3}]
    assert _stage(lake).version() == version
    assert _stage(lake).transaction_version(token_for(obj.id)) == 1
    assert lake.object(obj.id).rows_committed == 3


def test_redelivery_after_a_crash_keeps_the_objects_table_version(lake: Lake, ingest_file: Callable[..., Any]) -> None:
    obj = ingest_file(lake, "t", "t.csv", CSV)
    assert obj.table_version == 0
    lake.meta.objects.transition(obj.id, PROCESSING, "simulated crash after the Delta commit")
    _resend(lake, obj.id, "t")
    msg = lake.ingest_service.receive()
    assert msg is not None
    lake.ingest_service.process(msg)
    assert lake.object(obj.id).table_version == 0
    assert lake.table("stage.t")["delta_version"] == 0


def test_redelivery_of_a_file_with_quarantined_rows_writes_neither_table_again(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "q", "columns": [{"name": "id", "type": "long"}]}])
    obj = ingest_file(lake, "q", "q.csv", "id\n1\nx\n2\n")
    assert obj.state == COMMITTED_WITH_QUARANTINE
    lake.meta.objects.transition(obj.id, PROCESSING, "simulated crash after both commits")
    _resend(lake, obj.id, "q")
    msg = lake.ingest_service.receive()
    assert msg is not None
    assert lake.ingest_service.process(msg) == COMMITTED_WITH_QUARANTINE
    assert rows(lake, "SELECT count(*) AS n FROM stage.q") == [{"n": 2}]
    assert rows(lake, "SELECT count(*) AS n FROM quarantine.q") == [{"n": 1}]
    again = lake.object(obj.id)
    assert (again.rows_committed, again.rows_quarantined) == (2, 1)


def test_processor_run_twice_with_one_object_id_commits_once(lake: Lake, ingest_file: Callable[..., Any]) -> None:
    obj = ingest_file(lake, "t", "t.csv", CSV)
    ds = lake.ingest_service.dataset("t")
    proc = Processor(
        ds,
        stage_uri=lake.storage.table_uri("stage", "t"),
        quarantine_uri=lake.storage.table_uri("quarantine", "t"),
        declared=None,
        catalogued=None,
    )
    before = _stage(lake).version()
    result = proc.run(obj.id, str(obj.raw_path), "t.csv")
    assert result.already_committed
    assert _stage(lake).version() == before
    assert _stage(lake).count() == 3


def test_same_content_twice_is_a_duplicate_and_not_ingested_again(
    lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    first = ingest_file(lake, "t", "t.csv", CSV)
    second = ingest_file(lake, "t", "renamed.csv", CSV)

    assert second.state == DUPLICATE
    assert second.duplicate_of == first.id
    assert second.sha256 == first.sha256
    assert second.raw_path == first.raw_path  # no second raw copy
    assert second.error is not None and first.id in second.error
    assert lake.meta.queue.for_object(second.id) is None  # never enqueued
    assert rows(lake, "SELECT count(*) AS n FROM stage.t") == [{"n": 3}]
    assert lake.status().objects == {COMMITTED: 1, DUPLICATE: 1}


def test_same_content_in_another_dataset_is_ingested(lake: Lake, ingest_file: Callable[..., Any]) -> None:
    ingest_file(lake, "t", "t.csv", CSV)
    other = ingest_file(lake, "other", "t.csv", CSV)
    assert other.state == COMMITTED
    assert other.duplicate_of is None


def test_raw_copy_is_checksummed_and_read_only(lake: Lake, ingest_file: Callable[..., Any]) -> None:
    obj = ingest_file(lake, "t", "t.csv", CSV)
    raw = Path(str(obj.raw_path))
    assert raw.is_relative_to(lake.storage.zone("raw"))
    assert raw.read_text() == CSV
    assert obj.sha256 == hashlib.sha256(CSV.encode()).hexdigest()
    assert obj.size == len(CSV)
    assert not os.stat(raw).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_primary_key_upserts_across_files_and_redelivery_is_idempotent(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "u", "primary_key": ["id"], "columns": [{"name": "id", "type": "long"}, {"name": "v"}]}])
    ingest_file(lake, "u", "1.csv", "id,v\n1,a\n2,b\n")
    second = ingest_file(lake, "u", "2.csv", "id,v\n2,B\n3,c\n")
    assert second.state == COMMITTED, second.error
    expected = [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]
    assert rows(lake, "SELECT id, v FROM stage.u ORDER BY id") == expected

    lake.meta.objects.transition(second.id, PROCESSING, "simulated crash after the MERGE commit")
    _resend(lake, second.id, "u")
    msg = lake.ingest_service.receive()
    assert msg is not None
    assert lake.ingest_service.process(msg) == COMMITTED
    assert rows(lake, "SELECT id, v FROM stage.u ORDER BY id") == expected
    assert DeltaTable(lake.storage.table_uri("stage", "u")).transaction_version(token_for(second.id)) == 1
