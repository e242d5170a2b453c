"""Data files written into a Delta table's folder by another writer (Spark), described for the Delta log.

A writer outside delta-rs puts Parquet files under a prefix of its own inside the table's folder
(``<table>/tarn-spark-<id>/[col=value/…]part-….parquet``). :func:`describe` lists them and reads each file's
Parquet footer (nothing else) to build what an add action needs: the path relative to the table, size,
modification time, partition values (from the Hive-style folder names) and statistics (``numRecords``, and per
column ``nullCount`` and ``minValues`` / ``maxValues`` where they are safe), so that row counts and file
skipping work as for files delta-rs writes itself. :func:`tables.delta.commit_files` commits them.

The prefix must not start with ``_`` or ``.``: Delta (and delta-rs' vacuum) treat such folders as hidden, and
files a crashed writer left there could never be swept (``tarn maintain`` lists every unreferenced file under
a visible prefix as an orphan).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tarn.errors import StorageError

PREFIX = "tarn-spark-"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
STATS_COLUMNS = 32  # Delta's default delta.dataSkippingNumIndexedCols
STRING_STATS_CHARS = 32  # longer minimums are cut (still a lower bound); longer maximums are left out


@dataclass(frozen=True)
class DataFile:
    """One data file for an add action (``path`` relative to the table root)."""

    path: str
    size: int
    modification_time: int  # ms since the epoch
    partition_values: dict[str, str | None]
    num_records: int
    stats: str  # Delta's JSON statistics


def new_prefix() -> str:
    """A fresh folder name for one write attempt (visible to vacuum: see the module docstring)."""
    return f"{PREFIX}{uuid.uuid4().hex}"


def filesystem(uri: str, storage_options: Mapping[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path of ``uri`` in it (local paths; ``s3://`` with delta-rs' options)."""
    if "://" not in uri or uri.startswith("file://"):
        return pafs.LocalFileSystem(), uri.removeprefix("file://")
    if uri.startswith("s3://"):
        opts = dict(storage_options or {})
        endpoint = opts.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs["endpoint_override"] = host or endpoint
            kwargs["scheme"] = scheme if host else "https"
        if opts.get("AWS_REGION"):
            kwargs["region"] = opts["AWS_REGION"]
        if opts.get("AWS_ACCESS_KEY_ID") and opts.get("AWS_SECRET_ACCESS_KEY"):
            kwargs["access_key"] = opts["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = opts["AWS_SECRET_ACCESS_KEY"]
            if opts.get("AWS_SESSION_TOKEN"):
                kwargs["session_token"] = opts["AWS_SESSION_TOKEN"]
        if opts.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") == "false":
            kwargs["force_virtual_addressing"] = False
        return pafs.S3FileSystem(**kwargs), uri.removeprefix("s3://")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def describe(
    table_uri: str,
    prefix: str,
    schema: pa.Schema,
    partition_by: Sequence[str],
    storage_options: Mapping[str, str] | None = None,
) -> list[DataFile]:
    """The Parquet files under ``<table_uri>/<prefix>``; anything else there (``_SUCCESS``, ``.crc`` checksums,
    empty files) is deleted. ``schema``: the table's (the statistics' types), partition columns included."""
    fs, root = filesystem(table_uri, storage_options)
    base = f"{root.rstrip('/')}/{prefix}"
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as e:
        raise StorageError(f"cannot list the files written to {table_uri}/{prefix}: {e}") from None
    out: list[DataFile] = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root.rstrip("/")) + 1 :]
        if info.base_name.startswith(("_", ".")) or not info.base_name.endswith(".parquet"):
            fs.delete_file(info.path)  # the writer's markers and checksums: no data
            continue
        parts = _partition_values(rel, prefix, partition_by, table_uri)
        try:
            meta = pq.read_metadata(info.path, filesystem=fs)
        except (OSError, pa.ArrowException) as e:
            raise StorageError(f"cannot read the Parquet footer of {table_uri}/{rel}: {e}") from None
        if meta.num_rows == 0:
            fs.delete_file(info.path)  # an empty result's empty file adds nothing
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else dt.datetime.now(dt.UTC).timestamp()
        out.append(
            DataFile(
                path=rel,
                size=int(info.size or 0),
                modification_time=int(mtime * 1000),
                partition_values=parts,
                num_records=int(meta.num_rows),
                stats=stats_json(meta, schema, partition_by),
            )
        )
    return out


def discard(table_uri: str, prefix: str, storage_options: Mapping[str, str] | None = None) -> None:
    """Delete a write attempt's folder (its files never reached the log)."""
    fs, root = filesystem(table_uri, storage_options)
    try:
        fs.delete_dir(f"{root.rstrip('/')}/{prefix}")
    except FileNotFoundError:
        return
    except OSError as e:
        raise StorageError(
            f"cannot remove the uncommitted files under {table_uri}/{prefix}: {e}",
            hint="`tarn maintain` sweeps them later (they are unreferenced by the table)",
        ) from None


def _partition_values(rel: str, prefix: str, partition_by: Sequence[str], table_uri: str) -> dict[str, str | None]:
    dirs = rel.split("/")[1:-1] if rel.startswith(prefix + "/") else rel.split("/")[:-1]
    values: dict[str, str | None] = {}
    for d in dirs:
        col, sep, raw = d.partition("=")
        if not sep:
            raise StorageError(f"{table_uri}/{rel}: the folder {d!r} is not a partition (column=value)")
        value = unquote(raw)
        values[unquote(col)] = None if value == NULL_PARTITION else value
    if list(values) != list(partition_by):
        raise StorageError(
            f"{table_uri}/{rel}: partition folders {list(values)} do not match the table's partition columns "
            f"{list(partition_by)}"
        )
    return values


# ------------------------------------------------------------------------------------------------- stats
def stats_json(meta: pq.FileMetaData, schema: pa.Schema, partition_by: Sequence[str]) -> str:
    """Delta statistics from a Parquet footer: ``numRecords``; ``nullCount`` of the top-level primitive
    columns; ``minValues`` / ``maxValues`` for integers, dates, timestamps, booleans and strings (floats and
    decimals are left out: NaN and rounding would make a bound wrong). Only the first
    :data:`STATS_COLUMNS` data columns, as Delta's default."""
    columns = [f for f in schema if f.name not in partition_by][:STATS_COLUMNS]
    index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for f in columns:
        i = index.get(f.name)
        if i is None or pa.types.is_nested(f.type):
            continue
        lo: Any = None
        hi: Any = None
        count: int | None = 0
        exact = True
        for rg in range(meta.num_row_groups):
            col = meta.row_group(rg).column(i)
            st = col.statistics
            if st is None:
                count, exact = None, False
                break
            if count is not None:
                count = count + int(st.null_count) if st.has_null_count else None
            if st.has_min_max:
                lo = st.min if lo is None or st.min < lo else lo
                hi = st.max if hi is None or st.max > hi else hi
            elif meta.row_group(rg).num_rows > (st.null_count if st.has_null_count else 0):
                exact = False  # values without bounds: no claim
        if count is not None:
            nulls[f.name] = count
        if exact and lo is not None and hi is not None:
            lo_v, hi_v = _stat_value(lo, f.type, upper=False), _stat_value(hi, f.type, upper=True)
            if lo_v is not None and hi_v is not None:
                mins[f.name], maxs[f.name] = lo_v, hi_v
            elif lo_v is not None and pa.types.is_string(f.type):
                mins[f.name] = lo_v  # a long maximum string is left out; the minimum is still a bound
    return json.dumps(
        {"numRecords": int(meta.num_rows), "minValues": mins, "maxValues": maxs, "nullCount": nulls},
        separators=(",", ":"),
    )


def _stat_value(v: Any, t: pa.DataType, *, upper: bool) -> Any:
    if pa.types.is_integer(t):
        return int(v)
    if pa.types.is_boolean(t):
        return bool(v)
    if pa.types.is_date(t):
        return v.isoformat() if isinstance(v, dt.date) else None
    if pa.types.is_timestamp(t):
        if not isinstance(v, dt.datetime):
            return None
        if t.tz is not None:  # an instant: written in UTC with a Z
            aware = v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)
            return aware.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return v.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        if len(text) <= STRING_STATS_CHARS:
            return text
        return None if upper else text[:STRING_STATS_CHARS]
    return None
