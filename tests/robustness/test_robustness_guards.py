"""The guards bad input meets before any reader: decompression bombs (ingest.max_expansion_ratio),
truncated gzip/zstd streams, binary content under a text format, and records with bytes that are
not UTF-8 (quarantined with their line, never dropped). Real files through ``Lake.ingest``."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from robust_helpers import write_project

from tarn.errors import IngestError, RejectedError
from tarn.ingest.formats import EXPANSION_FLOOR_BYTES, binary_share, check_compressed
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, COMMITTED_WITH_QUARANTINE, DEAD_LETTERED, REJECTED

ORDERS = {
    "name": "orders",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": "string"},
    ],
}
DOCS = {
    "name": "docs",
    "format": "jsonl",
    "columns": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
}


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    lk = write_project(tmp_path / "project", [ORDERS, DOCS], ingest={"max_receives": 1}).open()
    yield lk
    lk.close()


def _ingest(lake: Lake, tmp_path: Path, name: str, data: bytes, dataset: str = "orders") -> tuple[str, str]:
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    [(_, reg, state)] = lake.ingest([path], dataset)
    obj = lake.object(reg.object_id)
    return state, obj.error or lake.meta.objects.events(obj.id)[-1]["message"] or ""


def _rows(n: int, note: str = "x") -> bytes:
    return ("id,amount,note\n" + "".join(f"{i},1.5,{note}\n" for i in range(n))).encode()


def _same_rows(n: int) -> bytes:
    """``n`` identical rows: compresses some 500×."""
    return b"id,amount,note\n" + b"1,1.5,same\n" * n


def test_a_gzip_bomb_is_rejected_naming_the_ratio_setting(lake: Lake, tmp_path: Path) -> None:
    bomb = gzip.compress(_same_rows(1_000_000), compresslevel=9)
    assert len(_same_rows(1_000_000)) / len(bomb) > 300
    state, reason = _ingest(lake, tmp_path, "bomb.csv.gz", bomb)
    assert state == REJECTED
    assert "expands more than 100×" in reason and "ingest.max_expansion_ratio" in reason
    assert lake.tables() == []  # nothing was read into a table


def test_a_zstd_bomb_is_rejected(lake: Lake, tmp_path: Path) -> None:
    bomb = zstandard.ZstdCompressor().compress(_same_rows(1_000_000))
    state, reason = _ingest(lake, tmp_path, "bomb.csv.zst", bomb)
    assert (state, "decompression bomb" in reason) == (REJECTED, True)


def test_compressible_files_within_the_ratio_or_under_the_floor_are_read(lake: Lake, tmp_path: Path) -> None:
    # A small file may compress far more than 100× (under the 1 MiB floor nothing is refused) …
    small = _same_rows(20_000)
    assert len(small) < EXPANSION_FLOOR_BYTES and len(small) / len(gzip.compress(small, 9)) > 100
    assert _ingest(lake, tmp_path, "small.csv.gz", gzip.compress(small, 9))[0] == COMMITTED
    # … and an ordinary compressed file of a few MB is read whole.
    varied = (
        "id,amount,note\n" + "".join(f"{i},{i * 0.37:.2f},note {i * 7919 % 100003}\n" for i in range(200_000))
    ).encode()
    assert _ingest(lake, tmp_path, "varied.csv.zst", zstandard.ZstdCompressor().compress(varied))[0] == COMMITTED
    assert lake.query("SELECT count(*) AS n FROM stage.orders").table.to_pylist() == [{"n": 220_000}]


def test_the_ratio_is_a_parameter(tmp_path: Path) -> None:
    data = _same_rows(200_000)
    path = tmp_path / "f.csv.gz"
    path.write_bytes(gzip.compress(data, 9))
    ratio = len(data) / path.stat().st_size
    check_compressed(str(path), "f.csv.gz", max_ratio=ratio * 2)
    with pytest.raises(RejectedError, match="expands more than"):
        check_compressed(str(path), "f.csv.gz", max_ratio=ratio / 2)
    plain = tmp_path / "plain.csv"
    plain.write_bytes(data)
    check_compressed(str(plain), "plain.csv", max_ratio=1.5)  # not compressed: nothing to check


def test_a_truncated_zstd_file_fails_instead_of_reading_as_a_shorter_file(lake: Lake, tmp_path: Path) -> None:
    whole = zstandard.ZstdCompressor().compress(_rows(5000))
    # DuckDB and python-zstandard's stream reader both read this as an empty file, silently.
    state, reason = _ingest(lake, tmp_path, "cut.csv.zst", whole[: len(whole) // 2])
    assert state == DEAD_LETTERED
    assert "cut.csv.zst is not a valid zstd file (truncated or corrupt)" in reason
    cut_frame = tmp_path / "two.csv.zst"
    cut_frame.write_bytes(whole + whole[:20])  # a whole frame, then a second one cut short
    with pytest.raises(IngestError, match="ends inside a frame"):
        check_compressed(str(cut_frame), "two.csv.zst")


def test_concatenated_zstd_frames_and_gzip_members_are_read_whole(lake: Lake, tmp_path: Path) -> None:
    a, b = _rows(300), ("".join(f"{i},2.5,y\n" for i in range(300, 500))).encode()
    zst = zstandard.ZstdCompressor().compress(a) + zstandard.ZstdCompressor().compress(b)
    assert _ingest(lake, tmp_path, "frames.csv.zst", zst)[0] == COMMITTED
    gz = gzip.compress(a) + gzip.compress(b)
    assert _ingest(lake, tmp_path, "members.csv.gz", gz + b"")[0] == COMMITTED
    assert lake.query("SELECT count(*) AS n FROM stage.orders").table.to_pylist() == [{"n": 1000}]


def test_binary_content_under_a_text_format_is_rejected_with_the_reason(lake: Lake, tmp_path: Path) -> None:
    import random

    state, reason = _ingest(lake, tmp_path, "noise.csv", random.Random(7).randbytes(8000))
    assert state == REJECTED and "noise.csv is not csv text" in reason and "binary data" in reason
    state, reason = _ingest(lake, tmp_path, "wide.csv", "id,amount,note\n1,2.0,x\n".encode("utf-16"))
    assert state == REJECTED and "UTF-16" in reason
    state, reason = _ingest(lake, tmp_path, "noise.jsonl", random.Random(8).randbytes(8000), dataset="docs")
    assert state == REJECTED and "is not jsonl text" in reason
    assert lake.tables() == []


def test_text_with_some_non_utf8_or_control_bytes_is_not_taken_for_binary() -> None:
    assert binary_share("id,név,ár\n1,Ödön,2.5\n2,Éva,3.0\n".encode("latin-1")) < 0.3
    assert binary_share(b"a\x01b\x01c\n1\x012\x013\n") == 0  # Hive's ^A separator is text
    assert binary_share(b"id,note\n1,a\x00b\n2,ok\n") < 0.1
    assert binary_share(b"") == 0


def test_rows_with_invalid_utf8_are_quarantined_with_their_line_not_dropped(lake: Lake, tmp_path: Path) -> None:
    data = b"id,amount,note\n1,1.0,caf\xe9\n2,2.0,plain\n3,3.0,na\xefve\n4,4.0,fine\n"
    state, reason = _ingest(lake, tmp_path, "latin1.csv", data)
    assert (state, reason.split(" (")[0]) == (COMMITTED_WITH_QUARANTINE, "2 rows committed, 2 quarantined")
    bad = lake.query("SELECT _tarn_row, reason FROM quarantine.orders ORDER BY 1").table.to_pylist()
    assert [b["_tarn_row"] for b in bad] == [2, 4]
    assert all("malformed record" in b["reason"] for b in bad)
    good = lake.query("SELECT id, _tarn_row FROM stage.orders ORDER BY id").table.to_pylist()
    assert good == [{"id": 2, "_tarn_row": 3}, {"id": 4, "_tarn_row": 5}]


def test_json_lines_with_invalid_utf8_are_quarantined_not_dropped(lake: Lake, tmp_path: Path) -> None:
    data = b'{"id": 1, "name": "a"}\n{"id": 2, "name": "caf\xe9"}\n{"id": 3, "name": "c"}\n'
    state, reason = _ingest(lake, tmp_path, "docs.jsonl", data, dataset="docs")
    assert (state, reason.split(" (")[0]) == (COMMITTED_WITH_QUARANTINE, "2 rows committed, 1 quarantined")
    [bad] = lake.query("SELECT _tarn_row FROM quarantine.docs").table.to_pylist()
    assert bad["_tarn_row"] == 2


def test_gzip_members_helper_sanity() -> None:
    """gzip.compress of two members concatenated is one valid stream (Python and DuckDB agree)."""
    buf = io.BytesIO(gzip.compress(b"a") + gzip.compress(b"b"))
    with gzip.open(buf) as f:
        assert f.read() == b"ab"


def test_the_ratio_is_set_in_tarn_yaml(tmp_path: Path) -> None:
    """ingest.max_expansion_ratio: a strict project refuses what the default lets through."""
    strict = write_project(tmp_path / "strict", [ORDERS], ingest={"max_expansion_ratio": 2, "max_receives": 1}).open()
    try:
        data = ("id,amount,note\n" + "".join(f"{i},{i * 0.37:.2f},note {i % 97}\n" for i in range(100_000))).encode()
        assert len(data) / len(gzip.compress(data)) > 2
        state, reason = _ingest(strict, tmp_path, "plain.csv.gz", gzip.compress(data))
        assert state == REJECTED and "expands more than 2×" in reason
    finally:
        strict.close()
