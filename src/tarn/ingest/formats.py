"""Detecting a landed file's format and compression, and reading a CSV header."""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path
from typing import IO, cast

import zstandard

from tarn.config.spec import CsvOptions
from tarn.errors import IngestError, RejectedError

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_PARQUET = b"PAR1"
_EXT = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".psv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def compression_of(path: str) -> str | None:
    """'gzip', 'zstd' or None, from the file's magic bytes (the name may lie)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZSTD):
        return "zstd"
    return None


def _strip_compression_ext(name: str) -> str:
    return re.sub(r"\.(gz|gzip|zst|zstd)$", "", name, flags=re.I)


def open_decompressed(path: str) -> IO[bytes]:
    comp = compression_of(path)
    if comp == "gzip":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if comp == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def detect_format(path: str, name: str, declared: str) -> str:
    """The format to read ``path`` with: the declared one, else by extension, else by content."""
    if declared != "auto":
        return declared
    ext = Path(_strip_compression_ext(name)).suffix.lower()
    if ext in _EXT:
        return _EXT[ext]
    with open_decompressed(path) as f:
        try:
            head = f.read(4096)
        except (OSError, EOFError, zstandard.ZstdError) as e:
            raise IngestError(f"cannot read the start of {name}: {e}") from None
    if head.startswith(_PARQUET):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"{"):
        return "jsonl"
    if stripped.startswith(b"["):
        return "json"
    if b"\x00" in head:
        raise RejectedError(
            f"{name}: cannot tell its format (binary content, no known extension)",
            hint="give the dataset an explicit 'format', or land files with a known extension",
        )
    return "csv"


def read_csv_header(path: str, opts: CsvOptions) -> list[str]:
    """The fields of the first record (the header, or the first data row without one)."""
    try:
        with open_decompressed(path) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.reader(
                text,
                delimiter=opts.delimiter,
                quotechar=opts.quote or '"',
                quoting=csv.QUOTE_MINIMAL if opts.quote else csv.QUOTE_NONE,
                escapechar=None if opts.escape in (None, opts.quote) else opts.escape,
                doublequote=opts.escape == opts.quote,
            )
            csv.field_size_limit(64 << 20)
            first = next(reader, None)
    except (OSError, EOFError, zstandard.ZstdError, csv.Error) as e:
        raise IngestError(f"cannot read the first line: {e}") from None
    if not first:
        raise RejectedError("the file is empty (no header line)", hint="land a file with a header and rows")
    return first


_NON_WORD = re.compile(r"[^0-9a-zA-Z_]+")


def normalize_column(name: str) -> str:
    """A column name Delta accepts without column mapping: lower_snake_case."""
    n = _NON_WORD.sub("_", name.strip().lstrip("\ufeff")).strip("_").lower()
    if not n:
        n = "column"
    if n[0].isdigit():
        n = f"c_{n}"
    return n


def normalize_columns(names: list[str]) -> list[str]:
    out: list[str] = []
    seen: dict[str, int] = {}
    for raw in names:
        n = normalize_column(raw)
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 1
        out.append(n)
    return out
