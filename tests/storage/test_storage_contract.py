"""The storage contract, written once and run on every backend: a local folder and S3 (moto's real
S3 API server on loopback)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tarn.config.spec import S3Spec
from tarn.storage.base import Storage
from tarn.storage.local import LocalStorage


@dataclass
class Backend:
    storage: Storage
    land: Callable[[str, bytes], None]  # put an object into the landing zone
    read: Callable[[str], bytes]  # the bytes at a path / URI the storage returned
    exists: Callable[[str], bool]


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        st = LocalStorage(tmp_path / "lake")

        def land(rel: str, data: bytes) -> None:
            p = tmp_path / "lake" / "landing" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)

        st.ensure_zones()
        yield Backend(st, land, lambda p: Path(p).read_bytes(), lambda p: Path(p).exists())
        return
    from tarn.storage.s3 import S3Storage, split_uri

    endpoint: str = request.getfixturevalue("aws_env")
    bucket: str = request.getfixturevalue("bucket")
    client: Any = request.getfixturevalue("s3")
    s3st = S3Storage(f"s3://{bucket}/some/lake", S3Spec(endpoint_url=endpoint, region="us-east-1", allow_http=True))
    s3st.ensure_zones()

    def put(rel: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"some/lake/landing/{rel}", Body=data)

    def read(uri: str) -> bytes:
        b, k = split_uri(uri)
        return bytes(client.get_object(Bucket=b, Key=k)["Body"].read())

    def exists(uri: str) -> bool:
        b, k = split_uri(uri)
        return int(client.list_objects_v2(Bucket=b, Prefix=k)["KeyCount"]) > 0

    yield Backend(s3st, put, read, exists)


def test_listing_sees_landed_files_and_skips_partial_ones(backend: Backend) -> None:
    assert list(backend.storage.list_landing()) == []
    backend.land("orders/2024/a.csv", b"id\n1\n")
    backend.land("orders/b.jsonl", b'{"id": 2}\n')
    backend.land("orders/c.csv.part", b"id\n")  # still being written, by convention
    backend.land("orders/.hidden.csv", b"id\n")
    seen = {f.path: f for f in backend.storage.list_landing()}
    assert sorted(seen) == ["orders/2024/a.csv", "orders/b.jsonl"]
    assert seen["orders/2024/a.csv"].size == 5
    assert seen["orders/2024/a.csv"].mtime_ns > 0
    stat = backend.storage.stat_landing("orders/b.jsonl")
    assert stat is not None and stat.path == "orders/b.jsonl" and stat.size == 10
    assert backend.storage.stat_landing("orders/none.csv") is None


def test_raw_copy_is_checksummed_kept_and_readable(backend: Backend) -> None:
    data = b"id,amount\n" + b"".join(f"{i},{i * 1.5}\n".encode() for i in range(20_000))
    backend.land("orders/big.csv", data)
    copy = backend.storage.copy_to_raw(backend.storage.landing_uri("orders/big.csv"))
    assert copy.sha256 == hashlib.sha256(data).hexdigest()
    assert copy.size == len(data)
    kept = backend.storage.keep_raw(copy, "orders", "obj123", "big.csv")
    assert kept.endswith("/orders/" + time.strftime("%Y/%m/%d", time.gmtime()) + "/obj123/big.csv")
    assert kept.startswith(backend.storage.root)
    assert backend.read(kept) == data
    assert not backend.exists(copy.temp_path)  # the temporary copy is gone
    with backend.storage.local_path(kept) as local:
        assert Path(local).read_bytes() == data
        assert Path(local).name == "big.csv"  # readers may look at the name
    if not isinstance(backend.storage, LocalStorage):
        assert not Path(local).exists()  # the spooled copy is removed


def test_raw_copy_of_a_file_of_several_chunks_hashes_exactly_what_was_stored(backend: Backend) -> None:
    # Past the 8 MiB chunk: the local copy hashes in a helper thread while it writes (one pass).
    data = os.urandom(2 * (8 << 20) + 12_345)
    backend.land("orders/blob.bin", data)
    copy = backend.storage.copy_to_raw(backend.storage.landing_uri("orders/blob.bin"))
    assert (copy.sha256, copy.size) == (hashlib.sha256(data).hexdigest(), len(data))
    kept = backend.storage.keep_raw(copy, "orders", "obj9", "blob.bin")
    assert hashlib.sha256(backend.read(kept)).hexdigest() == copy.sha256


def test_raw_copy_of_a_local_file(backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "given.csv"
    src.write_bytes(b"id\n7\n")
    copy = backend.storage.copy_to_raw(str(src))
    assert copy.sha256 == hashlib.sha256(b"id\n7\n").hexdigest()
    backend.storage.discard_raw(copy)
    assert not backend.exists(copy.temp_path)


def test_copy_of_a_missing_source_says_so(backend: Backend) -> None:
    with pytest.raises(FileNotFoundError):
        backend.storage.copy_to_raw(backend.storage.landing_uri("orders/gone.csv"))


def test_sweep_removes_only_old_temporary_copies(backend: Backend) -> None:
    backend.land("x/a.csv", b"a\n1\n")
    copy = backend.storage.copy_to_raw(backend.storage.landing_uri("x/a.csv"))
    assert backend.storage.sweep_tmp(3600) == 0
    assert backend.exists(copy.temp_path)
    time.sleep(1.2)  # S3 dates objects to the second
    assert backend.storage.sweep_tmp(1.0) == 1
    assert not backend.exists(copy.temp_path)


def test_table_uris_are_under_the_root(backend: Backend) -> None:
    uri = backend.storage.table_uri("stage", "orders")
    assert uri.startswith(backend.storage.root) and uri.endswith("/stage/orders")
    with pytest.raises(AssertionError):
        backend.storage.table_uri("raw", "orders")


def test_local_delta_options_are_empty_s3_ones_name_the_endpoint(backend: Backend) -> None:
    opts = backend.storage.delta_options()
    if isinstance(backend.storage, LocalStorage):
        assert opts == {}
    else:
        assert opts["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert opts["AWS_ALLOW_HTTP"] == "true"
        assert "AWS_ACCESS_KEY_ID" not in opts  # from the environment, never from the spec


def test_local_sweep_ignores_a_missing_tmp_folder(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "nowhere")
    assert st.sweep_tmp(0) == 0
    os.makedirs(tmp_path / "nowhere" / "raw" / ".tmp")
    assert st.sweep_tmp(0) == 0
