"""Detecting a landed file's format and compression, and reading a CSV header."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable
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
    """The format to read ``path`` with: the declared one, else by extension, else by content.
    A text format (CSV, JSON) whose content is plainly binary is refused here, with the reason."""
    ext = Path(_strip_compression_ext(name)).suffix.lower()
    known = declared if declared != "auto" else _EXT.get(ext)
    if declared == "auto" and ext == ".json":
        known = _json_kind(path)  # a '.json' file of JSON Lines: a bad line is quarantined, not the file
    if known == "parquet":
        return known
    with open_decompressed(path) as f:
        try:
            head = f.read(4096)
        except (OSError, EOFError, zstandard.ZstdError) as e:
            raise IngestError(f"cannot read the start of {name}: {e}") from None
    if known is not None:
        _refuse_binary(head, name, known)
        return known
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
    _refuse_binary(head, name, "csv")
    return "csv"


# Control characters that do not occur in text (tab, LF, VT, FF, CR and ^A, Hive's field
# separator, do).
_CONTROL = bytes(c for c in range(32) if c not in (1, 9, 10, 11, 12, 13)) + b"\x7f"
_BINARY_SHARE = 0.3


def binary_share(head: bytes) -> float:
    """The share of ``head`` that cannot be UTF-8 text: control characters and bytes that are not
    part of a valid UTF-8 sequence."""
    if not head:
        return 0.0
    invalid = len(head) - len(head.decode("utf-8", errors="ignore").encode("utf-8"))
    control = len(head) - len(head.translate(None, _CONTROL))
    return (invalid + control) / len(head)


def _refuse_binary(head: bytes, name: str, fmt: str) -> None:
    share = binary_share(head)
    if share > _BINARY_SHARE:
        raise RejectedError(
            f"{name} is not {fmt} text: {share:.0%} of its first {len(head)} bytes are control characters or "
            "invalid UTF-8 (binary data, or a text encoding other than UTF-8 such as UTF-16)",
            hint="land the file as UTF-8 text, or give the dataset the format the file really has",
        )


# Decompressed sizes up to this are never refused as a bomb, whatever the ratio.
EXPANSION_FLOOR_BYTES = 1 << 20
DEFAULT_MAX_EXPANSION_RATIO = 100.0
_ZSTD_PIECE = 1024  # compressed bytes per zstd call: at most ~32 MiB out (a zstd block expands ≤ 32768×)


def check_compressed(path: str, name: str, max_ratio: float = DEFAULT_MAX_EXPANSION_RATIO) -> None:
    """Decompress a gzip or zstd file once, streaming, before any reader sees it: a file that expands
    more than ``max_ratio`` times its size is refused (a decompression bomb), and a truncated or
    corrupt stream fails (DuckDB and python-zstandard read a zstd frame cut short as a shorter
    file, silently). Memory stays bounded whatever the file holds."""
    comp = compression_of(path)
    if comp is None:
        return
    size = os.path.getsize(path)
    limit = max(EXPANSION_FLOOR_BYTES, size * max_ratio)
    total = 0

    def count(n: int) -> None:
        nonlocal total
        total += n
        if total > limit:
            raise RejectedError(
                f"{name} expands more than {max_ratio:g}× when decompressed ({size} bytes of {comp} give over "
                f"{int(limit)} bytes): refused as a possible decompression bomb (ingest.max_expansion_ratio)",
                hint="if the file is genuine, raise ingest.max_expansion_ratio in tarn.yaml, then redrive it",
            )

    try:
        if comp == "gzip":
            _gzip_pass(path, count)
        else:
            _zstd_pass(path, count)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
        raise IngestError(
            f"{name} is not a valid {comp} file (truncated or corrupt): {e}",
            hint="land the complete file again; a redrive re-reads the same raw copy",
        ) from None


def _gzip_pass(path: str, count: Callable[[int], None]) -> None:
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count(len(chunk))


def _zstd_pass(path: str, count: Callable[[int], None]) -> None:
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    with open(path, "rb") as f:
        while piece := f.read(_ZSTD_PIECE):
            data = piece
            while data:
                count(len(dobj.decompress(data)))
                in_frame = not dobj.eof
                if in_frame:
                    break
                data = dobj.unused_data  # the next frame (files may concatenate frames)
                dobj = dctx.decompressobj()
    if in_frame:
        raise EOFError("the zstd stream ends inside a frame")


def _json_kind(path: str) -> str:
    """A '.json' file may hold one document (an array) or JSON Lines: JSON Lines when its first
    line is a complete JSON object on its own — then a bad line is quarantined, not the file."""
    try:
        with open_decompressed(path) as f:
            first = f.readline(1 << 20).strip().lstrip(b"\xef\xbb\xbf")
    except (OSError, EOFError, zstandard.ZstdError):
        return "json"
    if first.startswith(b"{"):
        try:
            return "jsonl" if isinstance(json.loads(first), dict) else "json"
        except ValueError:
            return "json"
    return "json"


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
