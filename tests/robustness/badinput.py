"""A corpus of bad (and awkward-but-valid) landed files, generated on the spot.

Each :class:`Case` is one kind of input: where it lands (which dataset's folder), how to make it,
and what Tarn must make of it — the object's end state and a pattern its reason must match (in the
object's error or its state trail, i.e. what ``tarn objects show ID`` prints). Outcomes are exact
where Tarn's own rules decide them (a case whose outcome changes fails the test, so a behaviour
change is a decision); where they depend on the typing rules (huge numbers, date formats) only
the state and the reason are pinned.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

COMMITTED = "committed"
PARTIAL = "committed_with_quarantine"
REJECTED = "rejected"
DEAD = "dead_lettered"

# A deliberately low size limit for the corpus project, so "over the limit" needs no big file.
MAX_FILE_BYTES = 12 * 1024 * 1024
# The guard against decompression bombs (ingest.max_expansion_ratio).
MAX_EXPANSION_RATIO = 100

ORDER_COLUMNS = [
    {"name": "id", "type": "long", "nullable": False},
    {"name": "amount", "type": "double"},
    {"name": "day", "type": "date"},
    {"name": "note", "type": "string"},
]

DATASETS: list[dict[str, Any]] = [
    {"name": "orders", "landing": "orders/**", "columns": ORDER_COLUMNS, "evolution": "evolve"},
    {"name": "frozen", "landing": "frozen/**", "columns": ORDER_COLUMNS, "evolution": "freeze"},
    {
        "name": "keyed",
        "landing": "keyed/**",
        "primary_key": ["id"],
        "columns": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
    },
    {
        "name": "docs",
        "landing": "docs/**",
        "format": "jsonl",
        "columns": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
    },
    {"name": "arrays", "landing": "arrays/**", "format": "json"},
    {"name": "pq", "landing": "pq/**", "format": "parquet"},
    {
        "name": "pqtyped",
        "landing": "pqtyped/**",
        "format": "parquet",
        "columns": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
    },
    {"name": "anything", "landing": "anything/**", "format": "auto"},
]

GOOD_ORDERS = "id,amount,day,note\n1,9.5,2024-01-01,first\n2,3.25,2024-01-02,second\n3,0.5,2024-01-03,third\n"


def orders(first_id: int, n: int = 3) -> str:
    """A valid orders CSV of ``n`` rows (distinct content per ``first_id``: no duplicate detection)."""
    return "id,amount,day,note\n" + "".join(
        f"{i},{i}.5,2024-01-0{1 + i % 9},row {i}\n" for i in range(first_id, first_id + n)
    )


@dataclass(frozen=True)
class Case:
    kind: str
    path: str  # under landing/
    make: Callable[[Path], None]  # writes the file at the given absolute path
    state: str
    reason: str  # a regular expression the error or the trail must match (case-insensitive)
    rows: int | None = None  # rows committed, when it matters
    quarantined: int | None = None


def _text(s: str, encoding: str = "utf-8") -> Callable[[Path], None]:
    return lambda p: p.write_bytes(s.encode(encoding))


def _bytes(b: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(b)


def _rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


_BOMB_ROW = b"1,1.0,2024-01-01," + b"x" * 1_000_000 + b"\n"  # one long run: deflate's best case


def _gzip_bomb(p: Path) -> None:
    """~33 MB that gzip stores in ~32 KB: it expands ~1000× (bounded memory while writing)."""
    with gzip.open(p, "wb", compresslevel=9) as f:
        f.write(b"id,amount,day,note\n")
        for _ in range(33):
            f.write(_BOMB_ROW)


def _zstd_bomb(p: Path) -> None:
    cctx = zstandard.ZstdCompressor()
    with open(p, "wb") as out, cctx.stream_writer(out) as f:
        f.write(b"id,amount,day,note\n")
        for _ in range(33):
            f.write(_BOMB_ROW)


def _truncated_gzip(p: Path) -> None:
    data = gzip.compress(
        ("id,amount,day,note\n" + "".join(f"{i},{i}.5,2024-01-01,n{i}\n" for i in range(4000))).encode()
    )
    p.write_bytes(data[: len(data) // 2])


def _truncated_zstd(p: Path) -> None:
    data = zstandard.ZstdCompressor().compress(
        ("id,amount,day,note\n" + "".join(f"{i},{i}.5,2024-01-01,n{i}\n" for i in range(4000))).encode()
    )
    p.write_bytes(data[: len(data) // 2])


def _long_line(p: Path) -> None:
    with open(p, "wb") as f:
        f.write(b"id,amount,day,note\n1,1.0,2024-01-01,")
        f.write(b"x" * (10 * 1024 * 1024))
        f.write(b"\n2,2.0,2024-01-02,short\n")


def _sparse(size: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        with open(p, "wb") as f:
            f.truncate(size)

    return make


def _parquet_table() -> pa.Table:
    return pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})


def _good_parquet(p: Path) -> None:
    pq.write_table(_parquet_table(), p)


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(_parquet_table(), buf)
    return buf.getvalue()


def _wrong_magic_parquet(p: Path) -> None:
    data = bytearray(_parquet_bytes())
    data[:4] = b"PARX"
    data[-4:] = b"PARX"
    p.write_bytes(bytes(data))


def _truncated_parquet(p: Path) -> None:
    data = _parquet_bytes()
    p.write_bytes(data[: len(data) - 40])


def _drift_parquet(p: Path) -> None:
    # the same column names with other types: id as text, name as a number, and a new column
    pq.write_table(pa.table({"id": ["x1", "7"], "name": [1.5, 2.5], "extra": [True, False]}), p)


def _zip_named_csv(p: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("orders.csv", orders(1, 200))
    p.write_bytes(buf.getvalue())


def _deep_jsonl(p: Path) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    p.write_text(json.dumps({"id": 1, "name": "ok"}) + "\n" + '{"id": 2, "name": "deep", "x": ' + deep + "}\n")


def _deep_json(p: Path) -> None:
    p.write_text('[{"id": 1, "v": ' + "[" * 10_000 + "]" * 10_000 + "}]")


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def cases(outside: Path) -> list[Case]:
    """The corpus. ``outside`` is a folder outside the lake (symlink targets)."""
    secret = outside.resolve() / "secret.csv"

    def symlink_out(p: Path) -> None:
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(GOOD_ORDERS)
        p.symlink_to(secret)

    header = "id,amount,day,note\n"
    return [
        # ---- CSV, declared schema (orders)
        Case("good file", "orders/good.csv", _text(GOOD_ORDERS), COMMITTED, r"3 rows committed", 3, 0),
        Case("empty file", "orders/empty.csv", _bytes(b""), REJECTED, r"the file is empty"),
        Case("only blank lines", "orders/blank.csv", _text("\n\n\n"), REJECTED, r"empty|no columns"),
        Case("header only", "orders/header_only.csv", _text(header), COMMITTED, r"0 rows committed", 0, 0),
        Case("truncated gzip", "orders/truncated.csv.gz", _truncated_gzip, DEAD, r"truncated.csv.gz"),
        Case("truncated zstd", "orders/truncated.csv.zst", _truncated_zstd, DEAD, r"truncated.csv.zst"),
        Case("binary garbage named .csv", "orders/garbage.csv", _bytes(_rand(20_000, 1)), REJECTED, r"binary"),
        Case("zip archive named .csv", "orders/archive.csv", _zip_named_csv, REJECTED, r"binary"),
        Case(
            "wrong delimiter",
            "orders/semicolons.csv",
            _text("id;amount;day;note\n1;2.0;2024-01-01;x\n2;3.0;2024-01-02;y\n"),
            PARTIAL,
            r"0 rows committed, 2 quarantined",
            0,
            2,
        ),
        Case(
            "ragged rows",
            "orders/ragged.csv",
            _text(header + "1,1.0,2024-01-01,a\n2,2.0\n3,3.0,2024-01-03,c,extra,more\n4,4.0,2024-01-04,d\n"),
            PARTIAL,
            r"2 rows committed, 2 quarantined",
            2,
            2,
        ),
        Case(
            "unterminated quote",
            "orders/quote.csv",
            _text(header + '1,1.0,2024-01-01,"fine"\n2,2.0,2024-01-02,"never closed\n3,3.0,2024-01-03,c\n'),
            PARTIAL,
            r"1 rows committed",
            1,
        ),
        Case(
            "non-UTF-8 bytes",
            "orders/latin1.csv",
            _text(header + "1,1.0,2024-01-01,café\n2,2.0,2024-01-02,plain\n", "latin-1"),
            PARTIAL,
            r"1 rows committed, 1 quarantined",
            1,
            1,
        ),
        Case("UTF-8 BOM", "orders/bom.csv", _bytes(b"\xef\xbb\xbf" + orders(100).encode()), COMMITTED, r"3 rows", 3, 0),
        Case("CRLF line ends", "orders/crlf.csv", _text(orders(200).replace("\n", "\r\n")), COMMITTED, r"3 rows", 3, 0),
        Case("a 10 MB single line", "orders/long_line.csv", _long_line, COMMITTED, r"2 rows committed", 2, 0),
        Case(
            "NUL bytes",
            "orders/nul.csv",
            _bytes((header + "1,1.0,2024-01-01,a\x00b\n2,2.0,2024-01-02,ok\n").encode()),
            COMMITTED,
            r"2 rows committed",
            2,
            0,
        ),
        Case(
            "huge numbers",
            "orders/huge.csv",
            _text(header + "99999999999999999999999,1.0,2024-01-01,a\n2,1e400,2024-01-02,b\n3,3.0,2024-01-03,c\n"),
            PARTIAL,
            # the long that overflows and the double out of range (1e400) are both quarantined
            r"1 rows committed, 2 quarantined",
        ),
        Case(
            "dates in mixed formats",
            "orders/dates.csv",
            _text(
                header + "1,1,2024-01-31,a\n2,1,01/31/2024,b\n3,1,31.01.2024,c\n4,1,2024/01/31,d\n5,1,Jan 31 2024,e\n"
            ),
            PARTIAL,
            r"rows committed, [34] quarantined",  # ISO dates pass; 2024/01/31 may, as unambiguous
        ),
        Case(
            "duplicate header names",
            "orders/dup_header.csv",
            _text("id,id,amount,day,note\n1,2,1.0,2024-01-01,a\n"),
            COMMITTED,
            r"1 rows committed",
            1,
        ),
        Case(
            "schema drift: a new column (evolve)",
            "orders/drift_new.csv",
            _text("id,amount,day,note,coupon\n10,1.0,2024-01-01,a,SAVE10\n"),
            COMMITTED,
            r"new columns: coupon",
            1,
            0,
        ),
        Case(
            "schema drift: text in a numeric column",
            "orders/drift_type.csv",
            _text(header + "11,lots,2024-01-01,a\n12,2.0,2024-01-02,b\n"),
            PARTIAL,
            r"1 rows committed, 1 quarantined",
            1,
            1,
        ),
        Case(
            "odd characters in the path",
            "orders/sub dir [x]/odd ü 'q' $HOME #1 %20;&.csv",
            _text(orders(300)),
            COMMITTED,
            r"3 rows",
            3,
        ),
        Case("a newline in the file name", "orders/line\nbreak.csv", _text(orders(400)), COMMITTED, r"3 rows", 3),
        Case("symlink out of landing", "orders/link.csv", symlink_out, REJECTED, r"symlink pointing outside"),
        Case("a named pipe", "orders/pipe.csv", _fifo, REJECTED, r"not a regular file"),
        Case(
            "file over the size limit",
            "orders/too_big.csv",
            _sparse(MAX_FILE_BYTES + 1),
            REJECTED,
            r"over the limit of \d+ bytes \(ingest.max_file_bytes\)",
        ),
        Case("gzip bomb (1000×)", "orders/bomb.csv.gz", _gzip_bomb, REJECTED, r"expands more than 100×"),
        Case("zstd bomb", "orders/bomb.csv.zst", _zstd_bomb, REJECTED, r"expands more than 100×"),
        # ---- frozen schema
        Case(
            "schema drift: a new column (freeze)",
            "frozen/new_col.csv",
            _text("id,amount,day,note,coupon\n1,1.0,2024-01-01,a,X\n"),
            REJECTED,
            r"frozen schema.*new column\(s\) coupon",
        ),
        Case(
            "schema drift: a missing column (freeze)",
            "frozen/missing_col.csv",
            _text("id,amount,day\n1,1.0,2024-01-01\n"),
            REJECTED,
            r"frozen schema.*missing column\(s\) note",
        ),
        # ---- primary key
        Case(
            "duplicate primary keys",
            "keyed/dups.csv",
            _text("id,name\n1,a\n2,b\n1,c\n,d\n"),
            PARTIAL,
            r"2 rows committed, 2 quarantined",
            2,
            2,
        ),
        # ---- JSON Lines
        Case(
            "invalid JSON lines",
            "docs/invalid.jsonl",
            _text('{"id": 1, "name": "a"}\n{"id": 2, "name": \n{"id": 3, "name": "c"}\nnot json at all\n'),
            PARTIAL,
            r"2 rows committed, 2 quarantined",
            2,
            2,
        ),
        Case(
            "JSON values that are not objects",
            "docs/not_objects.jsonl",
            _text('{"id": 1, "name": "a"}\n[1, 2]\n"text"\n42\n'),
            PARTIAL,
            r"1 rows committed, 3 quarantined",
            1,
            3,
        ),
        Case("JSON nesting 10 000 deep", "docs/deep.jsonl", _deep_jsonl, COMMITTED, r"2 rows committed", 2, 0),
        Case(
            "duplicate JSON keys",
            "docs/dup_keys.jsonl",
            _text('{"id": 1, "id": 2, "name": "a"}\n{"id": 3, "name": "b", "name": "c"}\n'),
            COMMITTED,
            r"2 rows committed",
            2,
            0,
        ),
        Case(
            "JSON huge number",
            "docs/huge.jsonl",
            _text('{"id": 1e400, "name": "a"}\n{"id": 123456789012345678901234567890, "name": "b"}\n{"id": 3}\n'),
            PARTIAL,
            r"1 rows committed, 2 quarantined",
            1,
            2,
        ),
        Case("empty JSON Lines", "docs/empty.jsonl", _bytes(b""), REJECTED, r"no columns"),
        Case(
            "JSON Lines with a BOM",
            "docs/bom.jsonl",
            _bytes(b'\xef\xbb\xbf{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n'),
            COMMITTED,
            r"2 rows committed",
            2,
            0,
        ),
        # ---- JSON documents
        Case("truncated JSON document", "arrays/truncated.json", _text('[{"id": 1}, {"id": 2'), DEAD, r"JSON"),
        Case("JSON document nesting 10 000 deep", "arrays/deep.json", _deep_json, COMMITTED, r"1 rows committed", 1),
        # ---- Parquet
        Case("good Parquet", "pq/good.parquet", _good_parquet, COMMITTED, r"3 rows committed", 3, 0),
        Case("Parquet with a wrong magic", "pq/wrong_magic.parquet", _wrong_magic_parquet, DEAD, r"Parquet"),
        Case("truncated Parquet", "pq/truncated.parquet", _truncated_parquet, DEAD, r"Parquet"),
        Case("CSV named .parquet", "pq/text.parquet", _text(GOOD_ORDERS), DEAD, r"Parquet"),
        Case(
            "schema drift: Parquet with other column types",
            "pqtyped/drift.parquet",
            _drift_parquet,
            PARTIAL,
            r"1 rows committed, 1 quarantined.*new columns: extra",
            1,
            1,
        ),
        # ---- format detection
        Case("binary without a known extension", "anything/blob.bin", _bytes(_rand(5000, 2)), REJECTED, r"format"),
    ]
