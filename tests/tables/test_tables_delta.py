"""Delta tables through delta-rs: every commit carries an idempotency token as an app transaction."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tarn.errors import NotFoundError
from tarn.tables import delta


def _batch(ids: list[int], values: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "v": pa.array(values, pa.string())})


def test_append_carries_its_token_and_metadata(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    assert not delta.exists(uri)
    assert not delta.committed(uri, "tok-1")
    assert delta.commit_info(uri, "tok-1") is None

    v0 = delta.append(uri, _batch([1, 2], ["a", "b"]), token="tok-1", metadata={"tarn.object_id": "o1"})
    v1 = delta.append(uri, _batch([3], ["c"]), token="tok-2")
    assert (v0, v1) == (0, 1)
    assert delta.exists(uri)
    assert delta.committed(uri, "tok-1") and delta.committed(uri, "tok-2")
    assert not delta.committed(uri, "tok-3")
    assert DeltaTable(uri).transaction_version("tok-1") == 1
    info = delta.commit_info(uri, "tok-1")
    assert info is not None
    assert (info["version"], info["tarn.object_id"]) == (0, "o1")
    assert delta.row_count(uri) == 3
    assert delta.columns(uri) == [
        {"name": "id", "type": "long", "nullable": True},
        {"name": "v", "type": "string", "nullable": True},
    ]
    assert [h["version"] for h in delta.history(uri)] == [1, 0]


def test_append_from_a_stream_and_schema_merge(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    schema = pa.schema([("id", pa.int64())])
    batches = (pa.record_batch([pa.array(range(i * 10, i * 10 + 10), pa.int64())], schema=schema) for i in range(5))
    delta.append(uri, pa.RecordBatchReader.from_batches(schema, batches), token="stream")
    assert delta.row_count(uri) == 50
    delta.append(uri, pa.table({"id": pa.array([99], pa.int64()), "extra": ["x"]}), token="wider")
    assert [c["name"] for c in delta.columns(uri)] == ["id", "extra"]
    assert delta.row_count(uri) == 51


def test_upsert_merges_by_key_in_one_commit(tmp_path: Path) -> None:
    uri = str(tmp_path / "u")
    delta.upsert(uri, _batch([1, 2], ["a", "b"]), keys=["id"], token="m1")
    version = delta.upsert(uri, _batch([2, 3], ["B", "c"]), keys=["id"], token="m2")
    assert version == 1
    rows = sorted(DeltaTable(uri).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]
    assert delta.committed(uri, "m2")


def test_partitioned_append(tmp_path: Path) -> None:
    uri = str(tmp_path / "p")
    delta.append(uri, _batch([1, 2, 3], ["x", "y", "x"]), token="p1", partition_by=["v"])
    assert DeltaTable(uri).metadata().partition_columns == ["v"]
    assert sorted(p.name for p in Path(uri).iterdir() if p.is_dir() and not p.name.startswith("_")) == [
        "v=x",
        "v=y",
    ]


def test_opening_a_missing_table_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no Delta table"):
        delta.open_table(str(tmp_path / "nothing"))


def test_a_removed_table_is_never_written_through_a_stale_cached_object(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    uri = str(tmp_path / "gone")
    delta.append(uri, pa.table({"a": [1]}), token="t1")
    delta.append(uri, pa.table({"a": [2]}), token="t2")
    with ThreadPoolExecutor(max_workers=1) as other:  # one long-lived thread with its own cached table
        assert other.submit(lambda: delta.latest(uri).version()).result() == 1  # type: ignore[union-attr]
        delta.remove_table(uri)
        # A new table, not "version 2" of the old one — in this thread and in the other.
        assert delta.append(uri, pa.table({"a": [3]}), token="t3") == 0
        assert other.submit(lambda: delta.append(uri, pa.table({"a": [4]}), token="t4")).result() == 1
        rows = other.submit(lambda: delta.latest(uri).to_pyarrow_table().to_pylist()).result()  # type: ignore[union-attr]
    assert sorted(r["a"] for r in rows) == [3, 4]
