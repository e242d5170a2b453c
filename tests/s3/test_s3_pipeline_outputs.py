"""Pipelines on an s3:// lake root (moto's real S3 API server on loopback), DuckDB engine: file outputs
(parquet, csv) are written locally by the engine and uploaded to ``<folder>/part-<run_id>.<ext>`` with the
lake's server-side encryption — append, overwrite, if_exists, a resumed run rewriting its own file — and byte
for byte what a local root gets; a table a failed or abandoned run created is removed object by object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from deltalake import write_deltalake
from tests.conftest import write_project
from tests.s3.conftest import write_s3_project

from tarn.errors import ConfigError
from tarn.lake import Lake
from tarn.metastore import runs as R
from tarn.pipelines import api
from tarn.pipelines import loads as L
from tarn.pipelines.recovery import recover_stale_runs
from tarn.tables import delta

ROWS_SQL = (
    "SELECT * FROM (VALUES (1, 'ann', 10.5), (2, 'bob', 4.25), (3, 'cid', NULL), (4, 'dee', 7.0)) "
    "AS t(id, name, amount) ORDER BY id"
)


def exports(mode: str = "append", if_exists: str = "write", name: str = "exports") -> dict[str, Any]:
    """Rows to ${out}/pq (parquet) and ${out}/csv (csv)."""
    load = {"mode": mode, "if_exists": if_exists}
    return {
        "name": name,
        "params": {"out": None},
        "stages": [
            {"type": "sql", "name": "rows", "sql": ROWS_SQL, "output": "rows"},
            {"type": "load", "name": "pq", "input": "rows", "path": "${out}/pq", "format": "parquet", **load},
            {"type": "load", "name": "csv", "input": "rows", "path": "${out}/csv", "format": "csv", **load},
        ],
    }


def _pipeline(lake: Lake, doc: dict[str, Any]) -> None:
    folder = lake.dir / "pipelines"
    folder.mkdir(exist_ok=True)
    (folder / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def s3_lake(tmp_path: Path, aws_env: str, bucket: str) -> Iterator[Lake]:
    lake = Lake(write_s3_project(tmp_path / "proj", aws_env, bucket, [], s3={"sse": "AES256"}))
    try:
        yield lake
    finally:
        lake.close()


@pytest.fixture
def out(bucket: str) -> str:
    return f"s3://{bucket}/lake/exports"


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", ()))


def _parts(s3: Any, bucket: str, folder: str) -> list[str]:
    return [k.rsplit("/", 1)[1] for k in _keys(s3, bucket, f"lake/exports/{folder}/")]


def test_file_outputs_on_s3_are_the_bytes_a_local_root_writes(
    s3_lake: Lake, out: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    _pipeline(s3_lake, exports())
    r = api.run(s3_lake, "exports", params={"out": out})
    assert r.ok, r.error
    assert _parts(s3, bucket, "pq") == [f"part-{r.run_id}.parquet"]
    assert _parts(s3, bucket, "csv") == [f"part-{r.run_id}.csv"]
    step = next(s for s in r.steps if s["name"] == "pq")
    assert step["rows_out"] == 4 and step["detail"]["metrics"]["file"] == f"{out}/pq/part-{r.run_id}.parquet"
    pq_key = f"lake/exports/pq/part-{r.run_id}.parquet"
    assert s3.head_object(Bucket=bucket, Key=pq_key)["ServerSideEncryption"] == "AES256"
    assert r.outputs == {f"{out}/pq": None, f"{out}/csv": None}  # files: no Delta version

    local = Lake(write_project(tmp_path / "local", []))
    try:
        _pipeline(local, exports())
        lr = api.run(local, "exports", params={"out": str(tmp_path / "local_out")})
        assert lr.ok, lr.error
    finally:
        local.close()
    for folder, ext in (("pq", "parquet"), ("csv", "csv")):
        key = f"lake/exports/{folder}/part-{r.run_id}.{ext}"
        on_s3 = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert on_s3 == (tmp_path / "local_out" / folder / f"part-{lr.run_id}.{ext}").read_bytes()
    assert on_s3.decode().splitlines()[:2] == ["id,name,amount", "1,ann,10.50"]


def test_append_then_overwrite_then_if_exists_on_s3(s3_lake: Lake, out: str, s3: Any, bucket: str) -> None:
    _pipeline(s3_lake, exports())
    first = api.run(s3_lake, "exports", params={"out": out})
    second = api.run(s3_lake, "exports", params={"out": out})
    assert first.ok and second.ok, (first.error, second.error)
    for folder, ext in (("pq", "parquet"), ("csv", "csv")):  # append: one file per run
        assert _parts(s3, bucket, folder) == sorted([f"part-{first.run_id}.{ext}", f"part-{second.run_id}.{ext}"])
    # something else under the folder (a nested object, an object exactly at a sibling name) and a sibling
    # prefix sharing the folder's name as a prefix
    s3.put_object(Bucket=bucket, Key="lake/exports/pq/nested/old.parquet", Body=b"x")
    s3.put_object(Bucket=bucket, Key="lake/exports/pq_keep/a.txt", Body=b"x")

    _pipeline(s3_lake, exports("overwrite"))
    third = api.run(s3_lake, "exports", params={"out": out})
    assert third.ok, third.error
    assert _parts(s3, bucket, "pq") == [f"part-{third.run_id}.parquet"]
    assert _keys(s3, bucket, "lake/exports/pq/") == [f"lake/exports/pq/part-{third.run_id}.parquet"]
    assert _parts(s3, bucket, "csv") == [f"part-{third.run_id}.csv"]
    assert _keys(s3, bucket, "lake/exports/pq_keep/") == ["lake/exports/pq_keep/a.txt"]

    _pipeline(s3_lake, exports(if_exists="error"))
    failed = api.run(s3_lake, "exports", params={"out": out})
    assert not failed.ok and failed.error_stage == "pq"
    assert "already exists (if_exists: error" in (failed.error or "")
    _pipeline(s3_lake, exports(if_exists="ignore"))
    ignored = api.run(s3_lake, "exports", params={"out": out})
    assert ignored.ok, ignored.error
    assert next(s for s in ignored.steps if s["name"] == "pq")["detail"]["metrics"]["skipped"]
    assert _parts(s3, bucket, "pq") == [f"part-{third.run_id}.parquet"]  # neither wrote
    # an empty (new) folder does not exist yet: if_exists error writes
    fresh = api.run(s3_lake, "exports", params={"out": out + "/fresh"})
    assert fresh.ok and "already exists" not in (fresh.error or "")


class Crash(BaseException):
    """Stands for the process dying (not caught by the runner)."""


def test_a_resumed_run_rewrites_its_own_file(
    s3_lake: Lake, out: str, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pipeline(s3_lake, exports())
    real = L.write_files

    def crash_on_csv(engine: Any, sql: str, target: L.Target, fmt: Any, **kw: Any) -> L.WriteResult:
        if fmt == "csv":
            raise Crash()
        return real(engine, sql, target, fmt, **kw)

    monkeypatch.setattr(L, "write_files", crash_on_csv)
    with pytest.raises(Crash):
        api.run(s3_lake, "exports", params={"out": out})
    [crashed] = s3_lake.meta.runs.list(pipeline="exports", state=R.RUNNING)
    assert _parts(s3, bucket, "pq") == [f"part-{crashed.id}.parquet"] and _parts(s3, bucket, "csv") == []
    monkeypatch.setattr(L, "write_files", real)
    r = api.run(s3_lake, "exports", params={"out": out}, resume=crashed.id)
    assert r.ok and r.run_id == crashed.id, r.error
    assert _parts(s3, bucket, "pq") == [f"part-{crashed.id}.parquet"]  # the same key, written again
    assert _parts(s3, bucket, "csv") == [f"part-{crashed.id}.csv"]


def test_extracting_plain_files_from_s3_on_duckdb_is_a_clear_error(s3_lake: Lake, out: str) -> None:
    _pipeline(
        s3_lake,
        {
            "name": "readback",
            "stages": [
                {"type": "extract", "name": "read", "path": f"{out}/pq/*.parquet", "output": "back"},
                {"type": "load", "name": "save", "input": "back", "table": "analytics.back"},
            ],
        },
    )
    with pytest.raises(ConfigError, match=r"stage 'read': reading files from s3://.* not supported on the DuckDB"):
        api.run(s3_lake, "readback")


def test_file_output_to_s3_on_a_local_root_is_a_clear_error(tmp_path: Path) -> None:
    lake = Lake(write_project(tmp_path / "local", []))
    try:
        _pipeline(lake, exports())
        r = api.run(lake, "exports", params={"out": "s3://somewhere/exports"})
    finally:
        lake.close()
    assert not r.ok and r.error_stage == "pq"
    assert "needs an s3:// lake root" in (r.error or "")


# ---------------------------------------------------------------------------------- removing a created table
def _two_tables(name: str, second: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "stages": [
            {"type": "sql", "name": "rows", "sql": ROWS_SQL, "output": "rows"},
            {"type": "load", "name": "made", "input": "rows", "table": "analytics.made"},
            {"type": "load", "name": "second", "input": "rows", **second},
        ],
    }


def test_a_failed_run_removes_the_table_it_created_on_s3(s3_lake: Lake, s3: Any, bucket: str) -> None:
    # the second write fails in phase 2 (the predicate names a column the rows do not have): the first is undone
    second = {"table": "analytics.other", "mode": "replace_where", "predicate": "day = 'd1'"}
    other = s3_lake.storage.table_uri("analytics", "other")
    write_deltalake(other, pa.table({"day": ["d1"], "n": [1]}), storage_options=delta.options_for(other))
    _pipeline(s3_lake, _two_tables("atomic", second))
    r = api.run(s3_lake, "atomic")
    assert not r.ok and r.error_stage == "second", r.error
    assert "analytics.made: removed (created by this run)" in (r.error or "")
    assert _keys(s3, bucket, "lake/analytics/made/") == []
    assert not delta.exists(s3_lake.storage.table_uri("analytics", "made"))
    # the table can be made again afterwards (no stale cached state of the removed table)
    _pipeline(s3_lake, _two_tables("atomic", {"table": "analytics.third"}))
    again = api.run(s3_lake, "atomic")
    assert again.ok, again.error
    assert s3_lake.query("SELECT count(*) AS n FROM analytics.made").table.to_pylist() == [{"n": 4}]


def test_an_abandoned_run_removes_the_table_it_created_on_s3(
    s3_lake: Lake, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _two_tables("mk", {"table": "analytics.other"})
    _pipeline(s3_lake, doc)
    real = L.write_table_files

    def crash_on_other(engine: Any, sql: str, target: L.Target, **kw: Any) -> L.WriteResult | None:
        if target.key == "analytics.other":
            raise Crash()
        return real(engine, sql, target, **kw)

    monkeypatch.setattr(L, "write_table_files", crash_on_other)
    with pytest.raises(Crash):
        api.run(s3_lake, "mk")
    monkeypatch.setattr(L, "write_table_files", real)
    assert _keys(s3, bucket, "lake/analytics/made/_delta_log/")
    _pipeline(s3_lake, {**doc, "description": "changed after the crash"})
    # the process that ran it is gone: a new Lake (metastore) finds the run stale
    later = Lake(s3_lake.dir)
    try:
        [res] = recover_stale_runs(later)
        assert res.state == R.FAILED and "changed since the run started" in (res.error or "")
        assert "analytics.made: removed (created by this run)" in (res.error or "")
        assert _keys(s3, bucket, "lake/analytics/made/") == []
        assert later.meta.runs.stale() == []
    finally:
        later.close()
