"""Delta tables (delta-rs): exactly-once commits tied to an idempotency token.

Every write carries ``Transaction(app_id=token, version=1)``; before writing, the caller asks
``committed(uri, token)``. A redelivered message or a retried run therefore never writes twice:
the token is in the table's log iff its rows are.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from tarn.config.types import from_arrow_type
from tarn.errors import NotFoundError, StateError, StorageError
from tarn.tables import files as data_files
from tarn.tables.files import DataFile

if TYPE_CHECKING:  # imported where used (pyarrow.dataset pulls in pandas: ~0.3 s at start-up)
    import pyarrow.dataset as pads

    from tarn.storage.base import Storage

WRITER = WriterProperties(compression="SNAPPY")
_CONFLICT_RETRIES = 8


# delta-rs storage options by location prefix (an object-store lake root registers its own when
# the lake is opened): every DeltaTable / write_deltalake call takes them from options_for(uri).
_OPTIONS: dict[str, dict[str, str]] = {}


def register_storage_options(prefix: str, options: Mapping[str, str]) -> None:
    """Use ``options`` for every table whose URI starts with ``prefix`` (e.g. ``s3://bucket/lake/``)."""
    _OPTIONS[prefix.rstrip("/") + "/"] = dict(options)


def options_for(uri: str) -> dict[str, str] | None:
    """The delta-rs storage options of the table at ``uri`` (None: a local path, delta-rs' defaults)."""
    best = ""
    for prefix in _OPTIONS:
        if uri.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return dict(_OPTIONS[best]) if best else None


def exists(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
    opts = dict(storage_options) if storage_options else options_for(uri)
    return bool(DeltaTable.is_deltatable(uri, storage_options=opts))


def open_table(uri: str, version: int | None = None, storage_options: Mapping[str, str] | None = None) -> DeltaTable:
    try:
        opts = dict(storage_options) if storage_options else options_for(uri)
        return DeltaTable(uri, version=version, storage_options=opts)
    except TableNotFoundError:
        raise NotFoundError(f"no Delta table at {uri}") from None


_local = threading.local()


def latest(uri: str, *, refresh: bool = True) -> DeltaTable | None:
    """The table at its latest version, or None if there is none. Each thread keeps its tables
    open and only reads the commits added since (``update_incremental``): opening a table replays
    its log, which costs more than the whole ingest of a small file."""
    cache: dict[str, DeltaTable] | None = getattr(_local, "tables", None)
    if cache is None:
        cache = _local.tables = {}
        _local.generations = {}
    dt = cache.get(uri)
    generation = _GENERATIONS.get(uri, 0)
    if dt is not None and _local.generations.get(uri, 0) != generation:
        cache.pop(uri, None)  # the table was removed (and maybe made again) since: never reuse its state
        dt = None
    if dt is not None and not refresh:
        return dt  # the caller just wrote through this very object: it is current
    if dt is not None:
        try:
            dt.update_incremental()
            opened = _opened_at(uri)
            if dt.version() - opened < _REOPEN_EVERY:
                return dt
            # A long-lived table object gets slower with every commit it has seen (measured with
            # delta-rs 1.6: an append 4.6 ms fresh, 31.6 ms after 300 commits): start afresh from
            # the latest checkpoint now and then.
            cache.pop(uri, None)
        except (DeltaError, OSError):
            cache.pop(uri, None)  # removed or replaced underneath: open it afresh
    if not exists(uri):
        return None
    try:
        dt = DeltaTable(uri, storage_options=options_for(uri))
    except TableNotFoundError:
        return None
    cache[uri] = dt
    _local.opened = {**getattr(_local, "opened", {}), uri: int(dt.version())}
    _local.generations[uri] = generation
    return dt


# Bumped when Tarn removes a table folder: every thread's cached table object for it is then stale
# (delta-rs' update_incremental does not notice a log that vanished, and a write through the stale
# object would claim a version the new log does not have).
_GENERATIONS: dict[str, int] = {}


def remove_table(uri: str, storage: Storage | None = None) -> None:
    """Delete a table entirely — a local folder, or on an object store every object under its prefix (the
    Delta log and the data files) through ``storage`` (the lake's) — and forget every cached view of it in
    this process."""
    local = "://" not in uri or uri.startswith("file://")
    if not local and storage is None:
        raise StorageError(
            f"cannot remove the Delta table at {uri}: no object-store access was given",
            hint="remove the prefix with your object store's tools",
        )
    _GENERATIONS[uri] = _GENERATIONS.get(uri, 0) + 1
    if local:
        shutil.rmtree(uri.removeprefix("file://"))
    else:
        assert storage is not None
        storage.remove_prefix(uri)


_REOPEN_EVERY = 100


def _opened_at(uri: str) -> int:
    opened: dict[str, int] = getattr(_local, "opened", {})
    return opened.get(uri, 0)


def committed(uri: str, token: str, storage_options: Mapping[str, str] | None = None) -> bool:
    """Has a commit carrying ``token`` already reached the table?"""
    if storage_options:
        if not exists(uri, storage_options):
            return False
        return open_table(uri, storage_options=storage_options).transaction_version(token) is not None
    dt = latest(uri)
    return dt is not None and dt.transaction_version(token) is not None


def commit_info(uri: str, token: str, limit: int = 500) -> dict[str, Any] | None:
    """The commit-info entry (with Tarn's custom metadata) of the commit that carried ``token``.
    For a batch commit (several tokens), ``operationMetrics.num_added_rows`` is this token's share."""
    dt = latest(uri)
    if dt is None:
        return None
    for h in dt.history(limit):
        if h.get("tarn.token") == token:
            return h
        batch = h.get("tarn.tokens")
        if batch and token in batch:  # cheap test before parsing
            rows = json.loads(batch).get(token)
            if rows is not None:
                return {**h, "operationMetrics": {"num_added_rows": int(rows)}}
    return None


def tokens_of(commit: Mapping[str, Any]) -> list[str]:
    """The exactly-once tokens a commit-info entry carries: its own, or each of a batch's objects'."""
    if commit.get("tarn.token"):
        return [str(commit["tarn.token"])]
    batch = commit.get("tarn.tokens")
    return list(json.loads(batch)) if batch else []


def _props(token: str, metadata: Mapping[str, Any], rows_by_token: Mapping[str, int] | None = None) -> CommitProperties:
    if rows_by_token:
        # One commit for several objects: one app transaction per object (each one's exactly-once
        # token), and each object's row count, so a redelivery can report it from the log.
        return CommitProperties(
            app_transactions=[Transaction(app_id=t, version=1) for t in rows_by_token],
            custom_metadata={"tarn.tokens": json.dumps(dict(rows_by_token)), **metadata},
        )
    return CommitProperties(
        app_transactions=[Transaction(app_id=token, version=1)],
        custom_metadata={"tarn.token": token, **metadata},
    )


def _retry_conflicts(uri: str, token: str, fn: Any) -> int:
    """Run a write; on a commit conflict with another writer, retry unless the token already landed."""
    for attempt in range(_CONFLICT_RETRIES):
        try:
            fn()
            return _version(uri)
        except CommitFailedError:
            if committed(uri, token) or attempt == _CONFLICT_RETRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def append(
    uri: str,
    data: pa.RecordBatchReader | pa.Table,
    *,
    token: str,
    partition_by: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    evolve: bool = True,
) -> int:
    """Append ``data`` in one commit carrying ``token``; returns the new table version.

    ``data`` may be a streaming reader (bounded memory). With a reader, a conflict retry is not
    possible (the stream is consumed), so only tables are retried; delta-rs already retries
    appends that do not conflict logically."""
    return _append(uri, data, token, _props(token, metadata or {}), partition_by, evolve)


def append_batch(
    uri: str,
    data: pa.Table,
    rows_by_token: Mapping[str, int],
    *,
    partition_by: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Append the rows of several objects in one commit that carries every object's token (all or
    none of them land). ``rows_by_token``: each object's token and its number of rows in ``data``."""
    assert rows_by_token, "a batch needs at least one token"
    first = next(iter(rows_by_token))
    return _append(uri, data, first, _props(first, metadata or {}, rows_by_token), partition_by, True)


def _append(
    uri: str,
    data: pa.RecordBatchReader | pa.Table,
    token: str,
    props: CommitProperties,
    partition_by: Sequence[str],
    evolve: bool,
) -> int:
    def write() -> None:
        write_deltalake(
            latest(uri) or uri,
            data,
            storage_options=options_for(uri),
            mode="append",
            partition_by=list(partition_by) or None,
            schema_mode="merge" if evolve else None,
            writer_properties=WRITER,
            commit_properties=props,
        )

    try:
        if isinstance(data, pa.Table):
            return _retry_conflicts(uri, token, write)
        write()
        return _version(uri)
    except OSError as e:
        raise StorageError(f"cannot write the Delta table at {uri}: {e}") from None


def upsert(
    uri: str,
    data: pa.RecordBatchReader | pa.Table,
    *,
    keys: Sequence[str],
    token: str,
    partition_by: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> int:
    """MERGE by primary key (update matched rows, insert new ones) in one commit carrying ``token``.
    The first write creates the table."""
    if not exists(uri):
        return append(uri, data, token=token, partition_by=partition_by, metadata=metadata)
    predicate = " AND ".join(f'target."{k}" = source."{k}"' for k in keys)
    dt = latest(uri) or open_table(uri)
    (
        dt.merge(
            data,
            predicate,
            source_alias="source",
            target_alias="target",
            merge_schema=True,
            writer_properties=WRITER,
            commit_properties=_props(token, metadata or {}),
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return _version(uri)


def same_schema(table: DeltaTable, schema: pa.Schema) -> str | None:
    """Why files of ``schema`` cannot be committed to ``table`` as they are (None: they can): the same column
    names with the same Delta types, and no nullable column where the table's is NOT NULL."""
    try:
        new = {f["name"]: f for f in json.loads(Schema.from_arrow(schema).to_json())["fields"]}
    except (DeltaError, ValueError, TypeError, pa.ArrowException) as e:
        return f"the result's schema has no Delta form ({e})"
    old = {f["name"]: f for f in json.loads(table.schema().to_json())["fields"]}
    if set(new) != set(old):
        added, missing = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        return f"columns differ (new: {added}, missing: {missing})"
    for name, f in old.items():
        if f["type"] != new[name]["type"]:
            return f"column {name!r} is {json.dumps(new[name]['type'])}, the table's {json.dumps(f['type'])}"
        if not f["nullable"] and new[name]["nullable"]:
            return f"column {name!r} is NOT NULL in the table"
    return None


def commit_files(
    uri: str,
    files: Sequence[DataFile],
    *,
    token: str,
    mode: str,
    schema: pa.Schema,
    partition_by: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    prefix: str | None = None,
) -> int | None:
    """Commit data files another writer (Spark) put into the table's folder — exactly those files, as they
    are — in one commit carrying ``token``; returns the new version.

    ``mode``: ``append`` or ``overwrite`` (every current file is removed in the same commit). A missing table
    is created by this very commit with ``schema`` and ``partition_by``. An existing table must have the same
    schema and partitioning (:func:`same_schema`; schema changes go through delta-rs' own writer): the commit
    never changes the table's metadata. Exactly once: if ``token`` already reached the table, the files (the
    folder ``prefix``, when given) are deleted and None is returned."""
    opts = options_for(uri)
    rows = sum(f.num_records for f in files)
    metrics = {"num_added_rows": rows, "num_added_files": len(files)}
    props = _props(token, {**(metadata or {}), "operationMetrics": metrics})
    actions: list[AddAction | RemoveAction] = [
        AddAction(f.path, f.size, f.partition_values, f.modification_time, True, f.stats) for f in files
    ]

    def discard() -> None:
        if prefix is not None:
            data_files.discard(uri, prefix, opts)

    if committed(uri, token):
        discard()
        return None

    def write() -> None:
        dt = latest(uri)
        if dt is None:
            try:
                create_table_with_add_actions(
                    uri,
                    Schema.from_arrow(schema),
                    [a for a in actions if isinstance(a, AddAction)],
                    mode="error",
                    partition_by=list(partition_by) or None,
                    storage_options=opts,
                    commit_properties=props,
                )
                return
            except DeltaError:
                dt = latest(uri)  # created meanwhile by another writer: commit to it
                if dt is None:
                    raise
        why = same_schema(dt, schema)
        parts = list(dt.metadata().partition_columns)
        if why is None and parts != list(partition_by):
            why = f"partitioned by {list(partition_by)}, the table by {parts}"
        if why is not None:
            raise StateError(
                f"cannot commit the files written to {uri}: {why}",
                hint="the table changed while the load ran; run the load again",
            )
        dt.create_write_transaction(
            actions, mode=mode, schema=dt.schema(), partition_by=parts or None, commit_properties=props
        )

    try:
        _retry_conflicts(uri, token, write)
    except CommitFailedError:
        if committed(uri, token):  # a concurrent attempt landed first: ours is not needed
            discard()
            return None
        raise
    except (DeltaError, OSError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"cannot commit {len(files)} data file(s) to the Delta table at {uri}: {text}") from None
    dt = latest(uri)  # create_write_transaction does not move the table object it was called on
    if dt is None:
        raise NotFoundError(f"no Delta table at {uri}")
    return int(dt.version())


def _version(uri: str) -> int:
    dt = latest(uri, refresh=False)
    if dt is None:
        raise NotFoundError(f"no Delta table at {uri}")
    return int(dt.version())


def arrow_schema(uri: str) -> pa.Schema:
    dt = latest(uri) or open_table(uri)
    return pa.schema(dt.schema().to_arrow())


def columns(uri: str, *, refresh: bool = True) -> list[dict[str, Any]]:
    """The table's columns in the catalog's form."""
    dt = latest(uri, refresh=refresh)
    schema = pa.schema(dt.schema().to_arrow()) if dt is not None else arrow_schema(uri)
    return [{"name": f.name, "type": from_arrow_type(f.type), "nullable": bool(f.nullable)} for f in schema]


def history(uri: str, limit: int = 20) -> list[dict[str, Any]]:
    return list(open_table(uri).history(limit))


def query_dataset(dt: DeltaTable) -> pads.Dataset:
    """A pyarrow dataset over the table's files for SQL engines, with per-file guarantees that are true.

    delta-rs' own ``to_pyarrow_dataset()`` states ``col >= null AND col <= null`` for a column a file
    does not hold (written before the column was added), and pyarrow then keeps that file's rows for
    ``col IS NOT NULL`` — a wrong answer (measured with deltalake 1.6, pyarrow 26). Here each file's
    guarantee holds its partition values and only the statistics that cannot mislead: integer and
    date min/max, and not-null where the file counted no nulls."""
    import pyarrow.dataset as pads

    base = dt.to_pyarrow_dataset()
    schema = base.schema
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    by_path = {str(a["path"]): a for a in actions}
    parts = list(dt.metadata().partition_columns)
    fmt = pads.ParquetFileFormat()
    fragments = []
    for frag in base.get_fragments():
        action = by_path.get(frag.path) or by_path.get(unquote(frag.path))
        expr = _guarantee(action, schema, parts) if action is not None else None
        if expr is None and parts:
            return base  # cannot tell this file's partition values apart: keep delta-rs' own view
        fragments.append(
            fmt.make_fragment(
                frag.path, filesystem=frag.filesystem, partition_expression=pads.scalar(True) if expr is None else expr
            )
        )
    return pads.FileSystemDataset(fragments, schema, fmt, filesystem=base.filesystem)


def _guarantee(action: Mapping[str, Any], schema: pa.Schema, parts: Sequence[str]) -> pads.Expression | None:
    import pyarrow.dataset as pads

    terms: list[pads.Expression] = []
    for col in parts:
        key = f"partition.{col}"
        if key not in action:
            return None
        value = action[key]
        field = pads.field(col)
        terms.append(field.is_null() if value is None else field == _literal(value, schema.field(col).type))
    for f in schema:
        if f.name in parts or not (pa.types.is_integer(f.type) or pa.types.is_date(f.type)):
            continue
        lo, hi, nulls = action.get(f"min.{f.name}"), action.get(f"max.{f.name}"), action.get(f"null_count.{f.name}")
        if lo is None or hi is None:
            continue  # no statistics (or a column the file lacks): no claim
        field = pads.field(f.name)
        terms += [field >= _literal(lo, f.type), field <= _literal(hi, f.type)]
        if nulls == 0:
            terms.append(field.is_valid())
    if not terms:
        return None
    expr = terms[0]
    for t in terms[1:]:
        expr = expr & t
    return expr


def _literal(value: Any, type_: pa.DataType) -> pads.Expression:
    import pyarrow.dataset as pads

    # A typed literal, not a cast expression: pyarrow only takes ``field == literal`` terms of a
    # guarantee as the known value of a partition column.
    return pads.scalar(pa.scalar(value).cast(type_))


def row_count(uri: str) -> int:
    try:
        return int(open_table(uri).count())
    except (AttributeError, DeltaError):
        return int(open_table(uri).to_pyarrow_dataset().count_rows())
