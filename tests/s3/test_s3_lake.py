"""The whole path on S3 (moto's real S3 API server on loopback) with the DuckDB engine: a Lake whose
root is s3://bucket/prefix ingests files (bad rows to quarantine), runs a pipeline, and answers
queries; landing objects are discovered by listing with a persisted cursor, once each, also after a
restart and with several listers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable
from tests.conftest import wait_for
from tests.s3.conftest import write_s3_project

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, COMMITTED_WITH_QUARANTINE
from tarn.pipelines import api
from tarn.storage.base import LandedFile
from tarn.tables import delta

ORDERS = {
    "name": "orders",
    "format": "csv",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
    ],
    "constraints": [{"name": "positive", "check": "amount > 0"}],
}
ORDERS_CSV = (
    "id,customer,amount\n"
    "1,ann,10.5\n"
    "2,bob,abc\n"  # amount is not a double → quarantine
    "3,ann,4.5\n"
    ",cid,1.0\n"  # id is non-nullable → quarantine
    "5,bob,-2\n"  # constraint → quarantine
    "6,cid,7\n"
)
TOTALS = {
    "name": "totals",
    "stages": [
        {
            "type": "sql",
            "name": "sum",
            "sql": "SELECT customer, sum(amount) AS total, count(*) AS n FROM stage.orders GROUP BY customer",
            "output": "sums",
        },
        {"type": "load", "name": "save", "input": "sums", "table": "analytics.totals", "mode": "overwrite"},
    ],
}


@pytest.fixture
def s3_lake(tmp_path: Path, aws_env: str, bucket: str) -> Iterator[Lake]:
    d = write_s3_project(tmp_path / "proj", aws_env, bucket, [ORDERS])
    (d / "pipelines").mkdir()
    (d / "pipelines" / "totals.yaml").write_text(yaml.safe_dump(TOTALS, sort_keys=False))
    lake = Lake(d)
    try:
        yield lake
    finally:
        lake.close()


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", ())]


def test_ingest_pipeline_query_on_s3(s3_lake: Lake, tmp_path: Path, s3: Any, bucket: str) -> None:
    src = tmp_path / "orders.csv"
    src.write_text(ORDERS_CSV)
    [(_, reg, state)] = s3_lake.ingest([src], "orders")
    assert state == COMMITTED_WITH_QUARANTINE
    obj = s3_lake.object(reg.object_id)
    assert obj.rows_committed == 3 and obj.rows_quarantined == 3
    # The original is in the raw zone on S3, byte for byte; no temporary copy is left.
    assert obj.raw_path is not None and obj.raw_path.startswith(f"s3://{bucket}/lake/raw/orders/")
    raw_key = obj.raw_path.split("/", 3)[3]
    assert s3.get_object(Bucket=bucket, Key=raw_key)["Body"].read() == ORDERS_CSV.encode()
    assert _keys(s3, bucket, "lake/raw/.tmp/") == []
    # Stage and quarantine are Delta tables on S3.
    stage_uri = s3_lake.storage.table_uri("stage", "orders")
    assert stage_uri == f"s3://{bucket}/lake/stage/orders"
    assert _keys(s3, bucket, "lake/stage/orders/_delta_log/")
    bad = s3_lake.query("SELECT _tarn_row, reason FROM quarantine.orders ORDER BY _tarn_row").table.to_pylist()
    assert [r["_tarn_row"] for r in bad] == [3, 5, 6]
    # A pipeline on DuckDB reads stage.orders from S3 and writes analytics.totals to S3.
    run = api.run(s3_lake, "totals")
    assert run.ok, run.error
    assert _keys(s3, bucket, "lake/analytics/totals/_delta_log/")
    got = s3_lake.query("SELECT customer, total, n FROM analytics.totals ORDER BY customer").table.to_pylist()
    assert got == [{"customer": "ann", "total": 15.0, "n": 2}, {"customer": "cid", "total": 7.0, "n": 1}]
    assert s3_lake.table("analytics.totals")["rows"] == 2
    # A redelivery changes nothing: the commit is recorded in the Delta log on S3.
    assert delta.committed(stage_uri, f"tarn-ingest-{obj.id}")
    assert DeltaTable(stage_uri, storage_options=delta.options_for(stage_uri)).version() == 0


def test_landing_listing_registers_each_object_once_across_restarts(
    s3_lake: Lake, s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="lake/landing/orders/a.csv", Body=b"id,customer,amount\n1,ann,1.5\n")
    s3.put_object(Bucket=bucket, Key="lake/landing/orders/b.csv", Body=b"id,customer,amount\n2,bob,2.5\n")
    s3.put_object(Bucket=bucket, Key="lake/landing/orders/c.csv.tmp", Body=b"still being written")
    s3.put_object(Bucket=bucket, Key="lake/landing/stray/x.csv", Body=b"a\n1\n")  # no dataset matches
    landing = s3_lake.object_landing()
    assert landing.scan() == 3
    assert landing.scan() == 0  # nothing new
    source = landing.source
    assert s3_lake.meta.landing.cursor(source) > 0
    states = sorted((o.landing_path, o.state) for o in s3_lake.objects())
    assert states == [("orders/a.csv", "received"), ("orders/b.csv", "received"), ("stray/x.csv", "rejected")]
    s3_lake.run_worker(threading.Event(), until_idle=True)
    assert s3_lake.query("SELECT count(*) AS n FROM stage.orders").table.to_pylist() == [{"n": 2}]

    # A restart: a new Lake on the same project and metastore lists again from the cursor.
    project = s3_lake.dir
    s3_lake.close()
    again = Lake(project)
    try:
        assert again.object_landing().scan() == 0
        s3.put_object(Bucket=bucket, Key="lake/landing/orders/d.csv", Body=b"id,customer,amount\n4,cid,4.5\n")
        assert again.object_landing().scan() == 1
        again.run_worker(threading.Event(), until_idle=True)
        assert again.query("SELECT count(*) AS n FROM stage.orders").table.to_pylist() == [{"n": 3}]
        # An object overwritten with new content is a new version (new ETag): registered again.
        s3.put_object(Bucket=bucket, Key="lake/landing/orders/a.csv", Body=b"id,customer,amount\n9,dan,9.5\n")
        assert again.object_landing().scan() == 1
        assert len([o for o in again.objects() if o.landing_path == "orders/a.csv"]) == 2
    finally:
        again.close()


def test_concurrent_listers_register_each_object_once(s3_lake: Lake, s3: Any, bucket: str) -> None:
    for i in range(12):
        s3.put_object(Bucket=bucket, Key=f"lake/landing/orders/{i:02}.csv", Body=f"id,customer,amount\n{i},x,1\n")
    listers = [s3_lake.object_landing() for _ in range(3)]
    for i, lister in enumerate(listers):
        lister.holder = f"worker-{i}"
    counts: list[int] = []
    threads = [threading.Thread(target=lambda lst=lst: counts.append(lst.scan())) for lst in listers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 12
    assert len(s3_lake.objects()) == 12
    assert len({o.landing_path for o in s3_lake.objects()}) == 12


def test_up_discovers_landed_objects_and_runs_workers(s3_lake: Lake, s3: Any, bucket: str) -> None:
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=s3_lake.up, args=(stop,), kwargs={"ready": ready}, daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        s3.put_object(Bucket=bucket, Key="lake/landing/orders/up.csv", Body=ORDERS_CSV.encode())
        s3.put_object(Bucket=bucket, Key="lake/landing/orders/up2.csv", Body=b"id,customer,amount\n7,eve,3\n")

        def done() -> bool:
            return sorted(o.state for o in s3_lake.objects()) == [COMMITTED, COMMITTED_WITH_QUARANTINE]

        wait_for(done, timeout=30, what="both landed objects committed")
    finally:
        stop.set()
        t.join(30)
    assert s3_lake.query("SELECT count(*) AS n FROM stage.orders").table.to_pylist() == [{"n": 4}]


def test_s3_event_notifications_on_sqs_register_objects_once(
    tmp_path: Path, aws_env: str, bucket: str, s3: Any
) -> None:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=aws_env, region_name="us-east-1")
    queue = sqs.create_queue(QueueName=f"{bucket}-landing")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    d = write_s3_project(tmp_path / "p", aws_env, bucket, [ORDERS], s3={"sqs_queue_url": queue})
    lake = Lake(d)
    try:
        s3.put_object(Bucket=bucket, Key="lake/landing/orders/with space.csv", Body=b"id,customer,amount\n1,a,2\n")
        s3.put_object(Bucket=bucket, Key="elsewhere/x.csv", Body=b"not landing")  # not under landing/: ignored
        landing = lake.object_landing()
        assert landing.poll_notifications(wait_seconds=1) == 1
        assert [o.landing_path for o in lake.objects()] == ["orders/with space.csv"]
        assert landing.scan() == 0  # the listing (reconciliation) finds it done
        assert landing.poll_notifications(wait_seconds=0) == 0  # the notification was deleted
        lake.run_worker(threading.Event(), until_idle=True)
        assert lake.query("SELECT id FROM stage.orders").table.to_pylist() == [{"id": 1}]
    finally:
        lake.close()


def test_an_object_overwritten_within_its_second_by_content_of_the_same_size_is_a_new_version(
    s3_lake: Lake, s3: Any, bucket: str
) -> None:
    # S3 dates objects to the second: the two versions share path, size and LastModified, not content.
    svc = s3_lake.ingest_service
    key, rel = "lake/landing/orders/a.csv", "orders/a.csv"
    versions = []
    for body in (b"id,customer,amount\n1,ann,1.5\n", b"id,customer,amount\n9,dan,9.5\n"):
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')  # as a listing gives it
        versions.append(svc.register_object(LandedFile(rel, len(body), 1_700_000_000 * 10**9, etag)))
    assert [v.state for v in versions] == ["received", "received"]
    # The same version again (a claim redone after a crash): known, not recorded twice.
    again = svc.register_object(LandedFile(rel, len(body), 1_700_000_000 * 10**9, etag))
    assert again.state == "known"
    assert len([o for o in s3_lake.objects() if o.landing_path == rel]) == 2
