"""The storage contract for plain files at a location (``put_file``, ``has_objects``, ``remove_prefix``), on a
local folder and on S3 (moto's real S3 API server on loopback); the backends are the storage contract's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.storage.test_storage_contract import Backend, backend

from tarn.config.spec import S3Spec
from tarn.errors import StorageError
from tarn.storage.local import LocalStorage
from tarn.storage.s3 import S3Storage

__all__ = ["backend"]


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return str(p)


def test_put_file_has_objects_and_remove_prefix(backend: Backend, tmp_path: Path) -> None:
    st = backend.storage
    folder = st.table_uri("analytics", "exports")
    assert not st.has_objects(folder)
    st.put_file(_file(tmp_path, "a", b"one"), f"{folder}/part-1.csv")
    st.put_file(_file(tmp_path, "b", b"two"), f"{folder}/sub/part-2.csv")
    st.put_file(_file(tmp_path, "c", b"other"), f"{folder}_sibling/part-3.csv")
    assert backend.read(f"{folder}/part-1.csv") == b"one"
    st.put_file(_file(tmp_path, "a2", b"one again"), f"{folder}/part-1.csv")  # replaced in place
    assert backend.read(f"{folder}/part-1.csv") == b"one again"
    assert st.has_objects(folder) and st.has_objects(folder + "/") and st.has_objects(f"{folder}/part-1.csv")
    assert not st.has_objects(f"{folder}/nothing")

    assert st.remove_prefix(folder, keep=f"{folder}/part-1.csv") == 1
    assert backend.exists(f"{folder}/part-1.csv") and not backend.exists(f"{folder}/sub/part-2.csv")
    assert st.remove_prefix(folder) == 1
    assert not st.has_objects(folder)
    assert st.remove_prefix(folder) == 0  # nothing left: removing again is fine
    assert backend.read(f"{folder}_sibling/part-3.csv") == b"other"  # a sibling sharing the name's start


def test_remove_prefix_refuses_the_root_and_the_zones(backend: Backend) -> None:
    st = backend.storage
    zone = st.table_uri("analytics", "x").rsplit("/", 1)[0]
    for uri in (st.root, zone, st.root + "/landing", st.root + "/raw/"):
        with pytest.raises(StorageError, match="refusing to remove"):
            st.remove_prefix(uri)


def test_a_local_root_refuses_object_store_locations(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "lake")
    with pytest.raises(StorageError, match="not a local path"):
        st.has_objects("s3://bucket/x")


def test_s3_files_get_the_lakes_encryption_and_a_key_is_an_object_too(
    aws_env: str, bucket: str, s3: Any, tmp_path: Path
) -> None:
    st = S3Storage(
        f"s3://{bucket}/lake", S3Spec(endpoint_url=aws_env, region="us-east-1", allow_http=True, sse="AES256")
    )
    st.put_file(_file(tmp_path, "a", b"x" * 10), f"s3://{bucket}/lake/out/f.parquet")
    assert s3.head_object(Bucket=bucket, Key="lake/out/f.parquet")["ServerSideEncryption"] == "AES256"
    # a folder marker alone (as consoles create) is an empty folder
    s3.put_object(Bucket=bucket, Key="lake/marked/", Body=b"")
    assert not st.has_objects(f"s3://{bucket}/lake/marked")
    # an object exactly at the location (no folder under it) counts, and is removed
    s3.put_object(Bucket=bucket, Key="lake/single", Body=b"1")
    assert st.has_objects(f"s3://{bucket}/lake/single")
    assert st.remove_prefix(f"s3://{bucket}/lake/single") == 1
    # more objects than one delete request takes
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"lake/many/{i:05d}", Body=b""), range(1003)))
    assert st.remove_prefix(f"s3://{bucket}/lake/many") == 1003
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="lake/many/")
    with pytest.raises(StorageError, match="refusing to remove"):
        st.remove_prefix(f"s3://{bucket}")
