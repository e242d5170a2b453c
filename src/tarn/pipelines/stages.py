"""Running each stage type on an engine. Writes (loads, MERGE statements, quarantined rows) are not done here:
they become :class:`PendingWrite` values that the runner commits (see :mod:`tarn.pipelines.runner`)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from sqlglot import exp

from tarn.engines.base import Engine, FileRead
from tarn.engines.dialects import internal, relation
from tarn.engines.duckdb_pipeline import qualified
from tarn.errors import ConfigError, NotFoundError, QueryError, did_you_mean
from tarn.ingest.typing import q
from tarn.pipelines import sqltools
from tarn.pipelines.analysis import ENGINE_DIALECT, resolve_location, stage_dialect, table_key
from tarn.pipelines.context import LakeAccess, StageFailed
from tarn.pipelines.loads import MergePlan, Target
from tarn.pipelines.schemas import typing_fields
from tarn.pipelines.spec import (
    TABLE_ZONES,
    ConfigStage,
    EqualStage,
    ExecuteStage,
    ExpectStage,
    ExtractStage,
    LoadStage,
    LogStage,
    PipelineSpec,
    SqlStage,
    Stage,
    TypingStage,
    ValidateStage,
    split_table,
)
from tarn.quality import expectations as X
from tarn.tables import delta

log = logging.getLogger("tarn.pipelines")

_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class StepOutcome:
    """What a stage did, for its step record."""

    rows_in: int | None = None
    rows_out: int | None = None
    output: str | None = None
    sql: str | None = None
    expectations: list[dict[str, Any]] | None = None
    detail: dict[str, Any] | None = None


@dataclass
class PendingWrite:
    """A commit a stage asks for: ``kind`` load | merge_sql | quarantine."""

    idx: int
    stage: Stage
    kind: str
    target: Target
    source_sql: str
    plan: MergePlan | None = None
    rows_in: int | None = None


@dataclass
class ViewInfo:
    rows: int | None
    delta_source: Target | None = None  # extract of a Delta table


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(json.dumps(table.to_pylist(), default=str))
    return out


def parse_message(value: Any) -> Any:
    """A validation message: JSON text becomes structured data."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value
    return value


@dataclass
class StageExecutor:
    spec: PipelineSpec
    lake: LakeAccess
    engine: Engine
    run_id: str
    started_at: float
    values: dict[str, str]
    count_rows: bool = True
    # table key → pinned Delta version (inputs), and → version this run wrote (outputs so far)
    pins: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    views: dict[str, ViewInfo] = field(default_factory=dict)
    registered: dict[str, int | None] = field(default_factory=dict)  # zone.table registered → version
    on_pin: Callable[[], None] | None = None

    # ------------------------------------------------------------------ helpers
    def _sql(self, stage: Stage, sql: str) -> str:
        """A stage's own SQL in the engine's dialect."""
        return (
            sqltools.transpile(sql, stage_dialect(self.spec, stage), self.engine.dialect, f"stage {stage.name!r}")
            .strip()
            .rstrip(";")
        )

    def _expr(self, stage: Stage, text: str) -> str:
        """A stage's expression in Tarn's internal dialect (DuckDB's), for Tarn's own SQL and delta-rs."""
        return sqltools.transpile_expr(text, stage_dialect(self.spec, stage), ENGINE_DIALECT, f"stage {stage.name!r}")

    def _own(self, sql: str) -> str:
        """Tarn's own SQL (DuckDB dialect) in the engine's dialect."""
        return internal(self.engine, sql)

    def _rel(self, name: str) -> str:
        return relation(self.engine, name)

    def lake_target(self, name: str, default_zone: str) -> Target:
        zone, table = split_table(name, default_zone)
        return Target(f"{zone}.{table}", self.lake.table_uri(zone, table), zone, table)

    def path_target(self, path: str) -> Target:
        uri = resolve_location(path, self.lake.project_dir)
        return Target(uri, uri)

    def _count(self, name: str) -> int | None:
        return self.engine.count(self._rel(name)) if self.count_rows else None

    def _need_view(self, stage: Stage, name: str) -> ViewInfo:
        if name not in self.views and not self.engine.exists(name):
            raise ConfigError(
                f"stage {stage.name!r}: no view {name!r}{did_you_mean(name, self.views)}",
                hint="a stage can only read views produced by earlier stages (their 'output')",
            )
        return self.views.get(name) or ViewInfo(None)

    def _dataset_version(self, target: Target) -> int:
        """The version a read of ``target`` sees: what this run wrote, else the pinned input version."""
        if target.key in self.written:
            return self.written[target.key]
        if target.key not in self.pins:
            if not delta.exists(target.uri):
                known = self.lake.known_tables()
                raise NotFoundError(
                    f"no table {target.key}{did_you_mean(target.key, known) if target.catalogued else ''}",
                    hint="'tarn tables' lists the lake's tables" if target.catalogued else "check the location",
                )
            self.pins[target.key] = int(DeltaTable(target.uri, storage_options=delta.options_for(target.uri)).version())
            if self.on_pin:
                self.on_pin()
        return self.pins[target.key]

    def register_references(self, stage: Stage, sql: str) -> None:
        """Register every ``zone.table`` the (engine-dialect) SQL reads, at the version the run reads."""
        refs = sqltools.references(sqltools.parse(sql, self.engine.dialect, f"stage {stage.name!r}"))
        for key in refs.tables:
            target = self.lake_target(key, "stage")
            version = self._dataset_version(target)
            if self.registered.get(key, -1) != version:
                self.engine.register_delta(
                    key, DeltaTable(target.uri, storage_options=delta.options_for(target.uri), version=version)
                )
                self.registered[key] = version

    # ------------------------------------------------------------------- stages
    def extract(self, idx: int, s: ExtractStage) -> StepOutcome:
        if s.table is not None or s.uri is not None or s.format == "delta":
            if s.table is not None:
                target = self.lake_target(s.table, "stage")
            else:
                target = self.path_target(s.uri or s.path or "")
            dt_ = self._open_version(s, target)
            self.engine.register_delta(s.output, dt_)
            rows = int(dt_.to_pyarrow_dataset().count_rows()) if self.count_rows else None
            self.views[s.output] = ViewInfo(rows, target)
            return StepOutcome(
                rows_out=rows, output=s.output, detail={"source": target.key, "version": int(dt_.version())}
            )
        assert s.path is not None
        fmt = s.format or self._format_of(s)
        paths = tuple(resolve_location(p.strip(), self.lake.project_dir) for p in s.path.split(","))
        read = FileRead(
            paths=paths,
            format=fmt,  # type: ignore[arg-type]
            delimiter=s.csv.delimiter,
            header=s.csv.header,
            quote=s.csv.quote,
            escape=s.csv.escape,
            all_varchar=s.csv.all_varchar,
            columns=s.csv.columns,
            null_values=s.csv.null_values,
            multi_line=s.multi_line,
        )
        if s.persist:  # materialize from a view of its own (a relation cannot be created from itself)
            self.engine.register_files(f"__files_{idx}", read)
            self.engine.create_view(s.output, self._own(f"SELECT * FROM {qualified(f'__files_{idx}')}"), persist=True)
        else:
            self.engine.register_files(s.output, read)
        rows = self._count(s.output)
        self.views[s.output] = ViewInfo(rows)
        return StepOutcome(rows_out=rows, output=s.output, detail={"source": list(paths), "format": fmt})

    def _format_of(self, s: ExtractStage) -> str:
        suffix = Path((s.path or "").split(",")[0].strip().rstrip("*")).suffix.lower()
        fmt = _SUFFIX_FORMATS.get(suffix)
        if fmt is None:
            raise ConfigError(
                f"stage {s.name!r}: cannot tell the format of {s.path!r} from its suffix",
                hint="set 'format': csv, jsonl, json, parquet, delta or text",
            )
        return fmt

    def _open_version(self, s: ExtractStage, target: Target) -> DeltaTable:
        if s.version is None and s.timestamp is None and s.relative_version is None:
            return DeltaTable(
                target.uri, storage_options=delta.options_for(target.uri), version=self._dataset_version(target)
            )
        if not delta.exists(target.uri):
            raise NotFoundError(f"stage {s.name!r}: no Delta table {target.key}")
        table = DeltaTable(target.uri, storage_options=delta.options_for(target.uri))
        try:
            if s.version is not None:
                table.load_as_version(s.version)
            elif s.relative_version is not None:
                v = int(table.version()) + s.relative_version
                if v < 0:
                    raise QueryError(f"stage {s.name!r}: {target.key} has no version {s.relative_version} back")
                table.load_as_version(v)
            else:
                assert s.timestamp is not None
                at = dt.datetime.fromisoformat(s.timestamp.replace("Z", "+00:00"))
                if at.tzinfo is None:
                    at = at.replace(tzinfo=dt.UTC)
                table.load_as_version(at)
        except ValueError as e:
            raise QueryError(f"stage {s.name!r}: time travel on {target.key}: {e}") from None
        except Exception as e:  # delta-rs: no such version / no version at that time
            raise QueryError(f"stage {s.name!r}: time travel on {target.key}: {str(e).splitlines()[0]}") from None
        return table

    def sql(self, idx: int, s: SqlStage) -> StepOutcome:
        assert s.sql is not None
        sql = self._sql(s, s.sql)
        stmt = sqltools.parse_one(sql, self.engine.dialect, f"stage {s.name!r}")
        if not sqltools.is_query(stmt):
            raise ConfigError(
                f"stage {s.name!r}: a 'sql' stage must be a query (SELECT …), not {stmt.key.upper()}",
                hint="use an 'execute' stage for other statements",
            )
        self.register_references(s, sql)
        self.engine.create_view(s.output, sql, persist=s.persist)
        rows = self._count(s.output)
        self.views[s.output] = ViewInfo(rows)
        return StepOutcome(rows_out=rows, output=s.output, sql=sql)

    def typing(self, idx: int, s: TypingStage) -> StepOutcome:
        info = self._need_view(s, s.input)
        fields = typing_fields(s, self.spec.base_dir)
        sql = self.engine.typing_sql(self._rel(s.input), fields, by_position=s.by_position)
        self.engine.create_view(s.output, sql, persist=s.persist)
        bad_rows = self.engine.query(
            self._own(f"SELECT count(*) FROM {qualified(s.output)} WHERE array_length(_errors) > 0")
        )
        bad = int(bad_rows.column(0)[0].as_py())
        if s.fail_mode == "failfast" and bad:
            first = self.engine.query(
                self._own(f"SELECT _errors FROM {qualified(s.output)} WHERE array_length(_errors) > 0 LIMIT 1")
            )
            errs = first.column(0)[0].as_py()
            raise StageFailed(
                s.name,
                f"typing failed (failfast): {errs[0]['field']}: {errs[0]['message']} ({bad} row(s) with errors)",
                detail={"rows_with_errors": bad, "first": errs},
            )
        rows = info.rows if info.rows is not None else self._count(s.output)
        self.views[s.output] = ViewInfo(rows)
        return StepOutcome(rows_in=info.rows, rows_out=rows, output=s.output, sql=sql, detail={"rows_with_errors": bad})

    def validate(self, idx: int, s: ValidateStage) -> StepOutcome:
        assert s.sql is not None
        sql = self._sql(s, s.sql)
        self.register_references(s, sql)
        result = self.engine.query(sql)
        if result.num_rows != 1 or result.num_columns < 1:
            raise StageFailed(
                s.name,
                f"a validation must return exactly one row (boolean, message); it returned {result.num_rows} row(s)",
                hint="aggregate the checks into one row",
            )
        row = json_rows(result)[0]
        first = result.column(0)[0].as_py()
        if first is not None and not isinstance(first, bool):
            raise StageFailed(s.name, f"the first column of a validation must be boolean, not {type(first).__name__}")
        message = parse_message(row[result.column_names[1]]) if result.num_columns > 1 else None
        detail = {"valid": first, "message": message}
        if first is not True:
            text = message if isinstance(message, str) else json.dumps(message)
            raise StageFailed(s.name, f"validation failed: {text}", detail=detail)
        return StepOutcome(sql=sql, detail=detail)

    def expect(self, idx: int, s: ExpectStage, *, pending: list[PendingWrite]) -> StepOutcome:
        info = self._need_view(s, s.input)
        columns = self.engine.schema(self._own(f"SELECT * FROM {qualified(s.input)}")).names
        exps = [e.model_copy(update={"check": self._expr(s, e.check)}) for e in s.expectations]
        flagged = f"__expect_{idx}"
        built = X.build(
            qualified(s.input),
            qualified(flagged),
            columns,
            exps,
            run_id=self.run_id,
            pipeline=self.spec.name,
            stage=s.name,
            at=self.started_at,
        )
        self.engine.create_view(flagged, self._own(built.flagged))
        counts = X.read_counts(json_rows(self.engine.query(self._own(built.counts)))[0], exps)
        recorded = [c.to_dict() for c in counts]
        self.engine.create_view(s.output, self._own(built.kept), persist=s.persist)
        rows_out = self._count(s.output)
        self.views[s.output] = ViewInfo(rows_out)
        total = counts[0].total if counts else info.rows
        bad = X.failing(counts)
        if bad:
            listed = ", ".join(f"{c.name} ({c.failed} of {c.total} rows)" for c in bad)
            raise StageFailed(s.name, f"expectation failed: {listed}", detail={"expectations": recorded})
        if built.quarantined is not None and any(c.action == "quarantine" and c.failed for c in counts):
            target = self.lake_target(self.spec.quarantine_table(s), "quarantine")
            pending.append(PendingWrite(idx, s, "quarantine", target, self._own(built.quarantined)))
        return StepOutcome(rows_in=total, rows_out=rows_out, output=s.output, sql=built.flagged, expectations=recorded)

    def equal(self, idx: int, s: EqualStage) -> StepOutcome:
        self._need_view(s, s.left)
        self._need_view(s, s.right)
        left = self.engine.schema(self._own(f"SELECT * FROM {qualified(s.left)}"))
        right = self.engine.schema(self._own(f"SELECT * FROM {qualified(s.right)}"))
        if sorted(left.names) != sorted(right.names):
            raise StageFailed(
                s.name,
                f"views {s.left!r} and {s.right!r} have different columns: "
                f"{', '.join(left.names)} vs {', '.join(right.names)}",
            )
        cols = ", ".join(q(c) for c in left.names)
        lsql = f"SELECT {cols} FROM {qualified(s.left)}"
        rsql = f"SELECT {cols} FROM {qualified(s.right)}"
        only_l = f"({lsql} EXCEPT ALL {rsql})"
        only_r = f"({rsql} EXCEPT ALL {lsql})"
        n_l = int(self.engine.query(self._own(f"SELECT count(*) FROM {only_l}")).column(0)[0].as_py())
        n_r = int(self.engine.query(self._own(f"SELECT count(*) FROM {only_r}")).column(0)[0].as_py())
        detail: dict[str, Any] = {"only_left": n_l, "only_right": n_r}
        if n_l or n_r:
            detail["sample_left"] = json_rows(self.engine.query(self._own(f"SELECT * FROM {only_l} LIMIT 5")))
            detail["sample_right"] = json_rows(self.engine.query(self._own(f"SELECT * FROM {only_r} LIMIT 5")))
            raise StageFailed(
                s.name,
                f"views {s.left!r} and {s.right!r} differ: {n_l} row(s) only in {s.left!r}, {n_r} only in {s.right!r}",
                detail=detail,
            )
        return StepOutcome(detail=detail)

    def load(self, idx: int, s: LoadStage, *, pending: list[PendingWrite]) -> StepOutcome:
        info = self._need_view(s, s.input)
        target = self.lake_target(s.table, "analytics") if s.table is not None else self.path_target(s.path or "")
        plan = MergePlan.from_load(s) if s.mode == "merge" else None
        if plan is not None and s.on is not None:
            plan = MergePlan(self._expr(s, plan.predicate), plan.matched, plan.not_matched, plan.not_matched_by_source)
        source = self._own(f"SELECT * FROM {qualified(s.input)}")
        pending.append(PendingWrite(idx, s, "load", target, source, plan, rows_in=info.rows))
        return StepOutcome(rows_in=info.rows, output=target.key)

    def execute(self, idx: int, s: ExecuteStage, *, pending: list[PendingWrite]) -> StepOutcome:
        assert s.sql is not None
        where = f"stage {s.name!r}"
        stmt = sqltools.parse_one(s.sql, stage_dialect(self.spec, s), where)
        if isinstance(stmt, exp.Merge):
            m = sqltools.parse_merge(
                stmt, dialect=stage_dialect(self.spec, s), engine_dialect=self.engine.dialect, where=where
            )
            if "." in m.target:
                target = self.lake_target(m.target, "analytics")
            else:
                view = self.views.get(m.target)
                if view is None or view.delta_source is None:
                    raise ConfigError(
                        f"{where}: MERGE INTO {m.target}: not a lake table (zone.table) or a view extracted from a "
                        f"Delta table{did_you_mean(m.target, self.views)}",
                        hint="extract the Delta table into a view first, or name the lake table",
                    )
                target = view.delta_source
            self.register_references(s, m.source_sql)
            rows = int(self.engine.query(f"SELECT count(*) FROM ({m.source_sql}) AS __source").column(0)[0].as_py())
            pending.append(PendingWrite(idx, s, "merge_sql", target, m.source_sql, m.plan, rows_in=rows))
            return StepOutcome(rows_in=rows, output=target.key, sql=s.sql, detail={"merge": m.plan.predicate})
        sql = self._sql(s, s.sql)
        written = (
            stmt.find(exp.Table)
            if isinstance(stmt, exp.Insert | exp.Update | exp.Delete | exp.Create | exp.Drop)
            else None
        )
        if written is not None and written.db in TABLE_ZONES:
            raise ConfigError(
                f"{where}: {stmt.key.upper()} on the lake table {written.db}.{written.name} is not supported",
                hint="write lake tables with a 'load' stage (append, overwrite, replace_where, merge, scd2)",
            )
        self.register_references(s, sql)
        self.engine.execute(sql)
        return StepOutcome(sql=sql)

    def log_stage(self, idx: int, s: LogStage) -> StepOutcome:
        assert s.sql is not None
        sql = self._sql(s, s.sql)
        self.register_references(s, sql)
        result = self.engine.query(f"SELECT * FROM ({sql}) AS __log LIMIT {s.limit}")
        rows = json_rows(result)
        for r in rows:
            log.info("pipeline %s, stage %s: %s", self.spec.name, s.name, json.dumps(r, default=str))
        return StepOutcome(rows_out=len(rows), sql=sql, detail={"columns": result.column_names, "rows": rows})

    def config(self, idx: int, s: ConfigStage) -> StepOutcome:
        assert s.sql is not None
        sql = self._sql(s, s.sql)
        self.register_references(s, sql)
        result = self.engine.query(sql)
        if result.num_rows != 1:
            raise StageFailed(s.name, f"a config stage must return one row; it returned {result.num_rows}")
        row = json_rows(result)[0]
        if len(row) == 1:
            only = next(iter(row.values()))
            parsed = parse_message(only) if isinstance(only, str) else only
            if isinstance(parsed, dict):
                row = parsed
        new = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in row.items()}
        if s.provides is not None:
            missing = [p for p in s.provides if p not in new]
            if missing:
                raise StageFailed(s.name, f"the result has no value for {', '.join(missing)} (declared in provides)")
        self.values.update(new)
        return StepOutcome(sql=sql, detail={"values": new})

    def run(self, idx: int, stage: Stage, pending: list[PendingWrite]) -> StepOutcome:
        if isinstance(stage, ExtractStage):
            return self.extract(idx, stage)
        if isinstance(stage, SqlStage):
            return self.sql(idx, stage)
        if isinstance(stage, TypingStage):
            return self.typing(idx, stage)
        if isinstance(stage, ValidateStage):
            return self.validate(idx, stage)
        if isinstance(stage, ExpectStage):
            return self.expect(idx, stage, pending=pending)
        if isinstance(stage, EqualStage):
            return self.equal(idx, stage)
        if isinstance(stage, LoadStage):
            return self.load(idx, stage, pending=pending)
        if isinstance(stage, ExecuteStage):
            return self.execute(idx, stage, pending=pending)
        if isinstance(stage, LogStage):
            return self.log_stage(idx, stage)
        assert isinstance(stage, ConfigStage)
        return self.config(idx, stage)


__all__ = ["PendingWrite", "StageExecutor", "StepOutcome", "ViewInfo", "json_rows", "table_key"]
