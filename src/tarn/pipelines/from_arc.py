"""Arc jobs and notebooks as Tarn pipelines: every Arc stage mapped to the Tarn stage with the same semantics.

``pipeline_from_arc_file(path, variables)`` reads a job (``.conf`` / ``.json``) or notebook (``.ipynb``) with
:func:`tarn.arc.load_arc_job` and returns a :class:`~tarn.pipelines.spec.PipelineSpec` in the ``spark`` dialect
(the runner transpiles the SQL to DuckDB with sqlglot). Stages keep their ``environments``; the runner skips
those outside ``--env``. The pipeline is named after the file, ``source`` is the job file, and stage names are
made unique (``name (2)``) because they name each stage's commit token.

=======================  ==========================================================================
Arc stage                Tarn stage
=======================  ==========================================================================
DelimitedExtract         ``extract`` format csv, every column text (``csv.all_varchar``); without a
                         header the columns are ``_c0``, ``_c1`` … as in Spark
JSONExtract              ``extract`` format json (``multiLine``, Arc's default) or jsonl
ParquetExtract           ``extract`` format parquet
TextExtract              ``extract`` format text (one ``value`` per line, or per file with ``multiLine``)
DeltaLakeExtract         ``extract`` of the Delta table at ``uri``, with ``version`` / ``timestamp`` /
                         ``relative_version`` from ``options``
TypingTransform          ``typing`` with ``schema_file`` (schemaURI) or ``arc_fields`` (inline schema),
                         ``by_position: true``, ``fail_mode``
SQLTransform             ``sql`` (``params`` from sqlParams); ``MERGE INTO`` … becomes ``execute``
SQLValidate              ``validate``
EqualityValidate         ``equal``
LogExecute               ``log``
ConfigExecute            ``config``
DeltaLakeLoad            ``load`` to the Delta table at ``path``: saveMode Append → append, Overwrite →
                         overwrite (``replaceWhere`` → replace_where), ErrorIfExists → ``if_exists:
                         error``, Ignore → ``if_exists: ignore``; ``partitionBy``
DeltaLakeMergeLoad       ``load`` mode merge: ``on`` from ``condition``, the clause lists in Arc's order
ParquetLoad, JSONLoad,   ``load`` of files (format parquet / jsonl / csv) at ``path``, saveMode as above
DelimitedLoad
=======================  ==========================================================================

Paths: a relative ``inputURI`` / ``outputURI`` / ``schemaURI`` is relative to the working directory (as for
Spark); ``file://`` is dropped. SQL read from an ``inputURI`` gets the job variables like inline SQL.

Keys that only tune Spark or name things Tarn does not need (``numPartitions``, ``partitionBy`` of a view,
``contiguousIndex``, ``basePath``, ``multiLine`` of a CSV, ``mergeSchema`` / ``overwriteSchema`` (Tarn's append
merges new columns, its overwrite replaces the schema), ``generateSymlinkManifest``, ``canReturnLastCommit``,
``params``, ``authentication`` on a local lake) are accepted and have no effect; Arc ``plugins`` are logged and
not run. What Tarn cannot do as Arc would is an error naming the stage and the key: a DelimitedExtract or
JSONExtract from an ``inputView``, ``schemaURI`` / ``schemaView`` on an extract, a TypingTransform with
``schemaView``, a DelimitedLoad that is not comma-delimited and double-quoted with a header, ``partitionBy`` on
file loads, and a ``resolution: lazy`` variable in a file Tarn reads before the run (a SQL or schema file's
location).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from tarn.arc import ArcJob, ArcStage, apply_sql_params, load_arc_job, load_arc_schema
from tarn.arc.params import PLACEHOLDER, missing_variable_error, substitute_variables
from tarn.arc.stages import (
    ConfigExecute,
    DelimitedExtract,
    DelimitedLoad,
    DeltaLakeExtract,
    DeltaLakeLoad,
    DeltaLakeMergeLoad,
    EqualityValidate,
    JSONExtract,
    JSONLoad,
    LogExecute,
    MergeDelete,
    ParquetExtract,
    ParquetLoad,
    SQLTransform,
    SQLValidate,
    TextExtract,
    TypingTransform,
)
from tarn.arc.validation import stage_label
from tarn.errors import ConfigError
from tarn.pipelines.project import format_errors
from tarn.pipelines.spec import STAGE_TYPES, PipelineSpec, Stage

__all__ = ["ARC_TO_TARN", "pipeline_from_arc", "pipeline_from_arc_file", "pipeline_name"]

log = logging.getLogger("tarn.pipelines")

ARC_TO_TARN: dict[str, str] = {
    "DelimitedExtract": "extract",
    "JSONExtract": "extract",
    "ParquetExtract": "extract",
    "TextExtract": "extract",
    "DeltaLakeExtract": "extract",
    "TypingTransform": "typing",
    "SQLTransform": "sql",  # execute for MERGE INTO
    "SQLValidate": "validate",
    "EqualityValidate": "equal",
    "LogExecute": "log",
    "ConfigExecute": "config",
    "DeltaLakeLoad": "load",
    "DeltaLakeMergeLoad": "load",
    "ParquetLoad": "load",
    "DelimitedLoad": "load",
    "JSONLoad": "load",
}
"""Arc stage type → the Tarn stage type it becomes."""

_DELIMITERS = {"Comma": ",", "Pipe": "|", "DefaultHive": "\x01"}
_QUOTES: dict[str, str | None] = {"DoubleQuote": '"', "SingleQuote": "'", "None": None}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_MERGE = re.compile(r"MERGE\s+INTO\b", re.IGNORECASE)

SqlArcStage = SQLTransform | SQLValidate | LogExecute | ConfigExecute


def pipeline_name(path: Path) -> str:
    """A lower_snake_case pipeline name from a job file's name (``Orders-Job.conf`` → ``orders_job``)."""
    name = re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_") or "arc_job"
    return name if not name[0].isdigit() else f"job_{name}"


def pipeline_from_arc_file(path: str | Path, variables: Mapping[str, str] | None = None) -> PipelineSpec:
    """Read an Arc job or notebook (``variables``: the command line's ``--NAME=value``) as a pipeline."""
    source = Path(path)
    return pipeline_from_arc(load_arc_job(source, variables))


def pipeline_from_arc(job: ArcJob, *, name: str | None = None, cwd: Path | None = None) -> PipelineSpec:
    """Map a parsed Arc job to a pipeline. ``cwd``: where relative locations start (default: the working
    directory)."""
    return _Mapper(job, cwd or Path.cwd()).pipeline(name)


class _Mapper:
    def __init__(self, job: ArcJob, cwd: Path) -> None:
        self.job = job
        self.cwd = cwd
        self.where = f"Arc job {str(job.source)!r}" if job.source else "Arc job"
        self.names: set[str] = set()

    # ------------------------------------------------------------------ pipeline
    def pipeline(self, name: str | None) -> PipelineSpec:
        if not self.job.stages:
            raise ConfigError(f"{self.where} has no stages", hint="an Arc job needs at least one stage")
        if self.job.plugins:
            log.warning("%s: Arc plugins are not run by Tarn: %s", self.where, ", ".join(self.job.plugins))
        stages = tuple(self.stage(i, s) for i, s in enumerate(self.job.stages))
        pipe = name or (pipeline_name(self.job.source) if self.job.source else "arc_job")
        try:
            return PipelineSpec(
                name=pipe,
                description=f"Arc job {self.job.source.name}" if self.job.source else "Arc job",
                dialect="spark",
                stages=stages,
                source=self.job.source.resolve() if self.job.source else None,
            )
        except ValidationError as e:
            raise format_errors(e, self.where) from None

    def stage(self, index: int, s: ArcStage) -> Stage:
        label = f"{self.where}, {stage_label(index, s.name, s.type)}"
        raw = self._raw(s, label)
        cls = STAGE_TYPES[raw["type"]]
        try:
            return cast(Stage, cls.model_validate(raw))
        except ValidationError as e:
            raise format_errors(e, label) from None

    def _raw(self, s: ArcStage, label: str) -> dict[str, Any]:
        if isinstance(s, DelimitedExtract | JSONExtract | ParquetExtract | TextExtract):
            return self._file_extract(s, label)
        if isinstance(s, DeltaLakeExtract):
            return self._delta_extract(s)
        if isinstance(s, TypingTransform):
            return self._typing(s, label)
        if isinstance(s, SQLTransform | SQLValidate | LogExecute | ConfigExecute):
            return self._sql_stage(s, label)
        if isinstance(s, EqualityValidate):
            return {**self._common(s, "equal"), "left": s.left_view, "right": s.right_view}
        if isinstance(s, DeltaLakeMergeLoad):
            return self._merge_load(s)
        return self._load(s, label)

    def _common(self, s: ArcStage, tarn_type: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": tarn_type, "name": self._unique(s.name), "description": s.description}
        if s.environments is not None:
            out["environments"] = list(s.environments)
        return out

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.names:
            n += 1
            candidate = f"{name} ({n})"
        self.names.add(candidate)
        return candidate

    def _location(self, uri: str, label: str, key: str, *, read_now: bool = False) -> str:
        """An absolute location (relative to the working directory; ``file://`` dropped). ``read_now``: Tarn
        reads it while mapping, so a lazy ``${VAR}`` cannot wait for the run."""
        if read_now and PLACEHOLDER.search(uri):
            raise ConfigError(
                f"{label}: {key} {uri!r} holds a variable that is set only while the job runs (resolution: lazy)",
                hint=f"Tarn reads {key} before the run: pass the variable with --NAME=value",
            )
        text = uri.strip()
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif text.startswith("file:/"):
            text = text[len("file:") :]
        if "://" in text or PLACEHOLDER.match(text):
            return text
        parts = [p.strip() for p in text.split(",")]
        return ",".join(p if Path(p).is_absolute() else str(self.cwd / p) for p in parts)

    @staticmethod
    def _unsupported(label: str, what: str, hint: str) -> ConfigError:
        return ConfigError(f"{label}: {what} is not supported by Tarn", hint=hint)

    # ------------------------------------------------------------------ extracts
    def _file_extract(
        self, s: DelimitedExtract | JSONExtract | ParquetExtract | TextExtract, label: str
    ) -> dict[str, Any]:
        if isinstance(s, DelimitedExtract | JSONExtract) and s.input_view is not None:
            raise self._unsupported(
                label,
                "reading from 'inputView'",
                "extract the files themselves (inputURI), or parse in an SQLTransform",
            )
        if s.schema_uri is not None or s.schema_view is not None:
            key = "schemaURI" if s.schema_uri is not None else "schemaView"
            raise self._unsupported(
                label, f"'{key}' on an extract", "extract the data, then type it with a TypingTransform"
            )
        assert s.input_uri is not None
        out = {
            **self._common(s, "extract"),
            "output": s.output_view,
            "persist": s.persist,
            "path": self._location(s.input_uri, label, "inputURI"),
        }
        if isinstance(s, DelimitedExtract):
            delimiter = s.custom_delimiter if s.delimiter == "Custom" else _DELIMITERS[s.delimiter]
            csv: dict[str, Any] = {
                "delimiter": delimiter,
                "header": s.header,
                "quote": _QUOTES[s.quote],
                "all_varchar": True,
            }
            if s.escape is not None:
                csv["escape"] = s.escape
            return {**out, "format": "csv", "csv": csv}
        if isinstance(s, JSONExtract):
            return {**out, "format": "json" if s.multi_line else "jsonl", "multi_line": s.multi_line}
        if isinstance(s, TextExtract):
            return {**out, "format": "text", "multi_line": s.multi_line}
        return {**out, "format": "parquet"}

    def _delta_extract(self, s: DeltaLakeExtract) -> dict[str, Any]:
        out = {
            **self._common(s, "extract"),
            "output": s.output_view,
            "persist": s.persist,
            "uri": self._location(s.input_uri, "", "inputURI"),
        }
        o = s.options
        if o is not None:
            if o.version_as_of is not None:
                out["version"] = o.version_as_of
            elif o.relative_version is not None:
                out["relative_version"] = o.relative_version
            elif o.timestamp_as_of is not None:
                out["timestamp"] = o.timestamp_as_of
        return out

    # ------------------------------------------------------------------- typing
    def _typing(self, s: TypingTransform, label: str) -> dict[str, Any]:
        out = {
            **self._common(s, "typing"),
            "input": s.input_view,
            "output": s.output_view,
            "persist": s.persist,
            "by_position": True,
            "fail_mode": s.fail_mode,
        }
        if s.schema_view is not None:
            raise self._unsupported(label, "'schemaView'", "give the schema as a file (schemaURI) or inline (schema)")
        if s.schema_ is not None:
            return {**out, "arc_fields": [f.model_dump() for f in s.schema_]}
        assert s.schema_uri is not None
        path = self._location(s.schema_uri, label, "schemaURI", read_now=True)
        if "://" in path:
            raise self._unsupported(label, f"schemaURI {s.schema_uri!r} (not a local file)", "use a local file")
        fields = load_arc_schema(Path(path))  # a clear error now for a missing or invalid schema
        if Path(path).suffix.lower() == ".json":
            return {**out, "schema_file": path}
        return {**out, "arc_fields": [f.model_dump() for f in fields]}

    # ---------------------------------------------------------------------- SQL
    def _sql_stage(self, s: SqlArcStage, label: str) -> dict[str, Any]:
        sql, params = self._sql_and_params(s, label)
        if isinstance(s, SQLTransform):
            if _MERGE.match(_LEADING_COMMENTS.sub("", sql, count=1)):
                if s.output_view is not None:
                    raise ConfigError(
                        f"{label}: a MERGE INTO statement produces no view (outputView {s.output_view!r})",
                        hint="remove outputView; read the merged table with a DeltaLakeExtract",
                    )
                return {**self._common(s, "execute"), "sql": sql, "params": params}
            if s.output_view is None:
                raise ConfigError(f"{label}: an SQLTransform needs 'outputView'", hint="name the view it produces")
            return {
                **self._common(s, "sql"),
                "sql": sql,
                "params": params,
                "output": s.output_view,
                "persist": s.persist,
            }
        tarn_type = {SQLValidate: "validate", LogExecute: "log", ConfigExecute: "config"}[type(s)]
        return {**self._common(s, tarn_type), "sql": sql, "params": params}

    def _sql_and_params(self, s: SqlArcStage, label: str) -> tuple[str, dict[str, str]]:
        """The stage's SQL and its sqlParams as Tarn stage params (applied here when a name is not a Tarn
        identifier). Placeholders left in a lazy stage are job variables set by a ConfigExecute."""
        sql = s.sql if s.sql is not None else self._read_sql(s, label)
        params = dict(s.sql_params)
        lazy = s.resolution == "lazy"
        if not lazy:
            apply_sql_params(sql, params, label)  # the same check as at load, for SQL read from a file
        if any(not _IDENT.match(p) for p in params):
            sql = self._apply_known(sql, params)
            params = {}
        else:
            sql = PLACEHOLDER.sub(lambda m: "${" + m.group(1) + "}" if m.group(1) in params else m.group(0), sql)
        if lazy:
            unused = [p for p in params if p not in {m.group(1) for m in PLACEHOLDER.finditer(sql)}]
            if unused:
                apply_sql_params(sql, params, label)  # raises: a param without a placeholder
            odd = [m.group(1) for m in PLACEHOLDER.finditer(sql) if not _IDENT.match(m.group(1))]
            if odd:
                raise ConfigError(
                    f"{label}: the job variable ${{{odd[0]}}} is set while the job runs, and Tarn only resolves "
                    "names of letters, digits and underscores then",
                    hint="rename the variable, or pass it with --NAME=value",
                )
        return sql, params

    @staticmethod
    def _apply_known(sql: str, params: Mapping[str, str]) -> str:
        return PLACEHOLDER.sub(lambda m: params[m.group(1)] if m.group(1) in params else m.group(0), sql)

    def _read_sql(self, s: SqlArcStage, label: str) -> str:
        assert s.input_uri is not None
        path = Path(self._location(s.input_uri, label, "inputURI", read_now=True))
        if "://" in str(path):
            raise self._unsupported(label, f"SQL at {s.input_uri!r} (not a local file)", "use a local file")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{label}: the SQL file {str(path)!r} does not exist", hint="check inputURI") from None
        except OSError as e:
            raise ConfigError(f"{label}: the SQL file {str(path)!r} cannot be read: {e}") from None
        resolved, unset = substitute_variables(text, [self.job.variables], skip=s.sql_params)
        if unset and s.resolution != "lazy":
            raise missing_variable_error(unset, label)
        return resolved

    # -------------------------------------------------------------------- loads
    def _save_mode(self, mode: str) -> dict[str, Any]:
        return {
            "Append": {"mode": "append"},
            "Overwrite": {"mode": "overwrite"},
            "ErrorIfExists": {"mode": "append", "if_exists": "error"},
            "Ignore": {"mode": "append", "if_exists": "ignore"},
        }[mode]

    def _load(self, s: DeltaLakeLoad | ParquetLoad | DelimitedLoad | JSONLoad, label: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self._common(s, "load"),
            "input": s.input_view,
            "path": self._location(s.output_uri, label, "outputURI"),
            **self._save_mode(s.save_mode),
        }
        if isinstance(s, DeltaLakeLoad):
            if s.replace_where is not None:
                if s.save_mode != "Overwrite":
                    raise ConfigError(
                        f"{label}: 'replaceWhere' needs saveMode Overwrite (not {s.save_mode})",
                        hint='set "saveMode": "Overwrite"',
                    )
                out.update(mode="replace_where", predicate=s.replace_where)
            return {**out, "format": "delta", "partition_by": list(s.partition_by)}
        if s.partition_by:
            raise self._unsupported(label, "'partitionBy' on a file load", "remove partitionBy, or use DeltaLakeLoad")
        if isinstance(s, DelimitedLoad):
            wrong = []
            if s.delimiter != "Comma":
                wrong.append(f"delimiter {s.delimiter}")
            if s.quote != "DoubleQuote":
                wrong.append(f"quote {s.quote}")
            if not s.header:
                wrong.append("header false")
            if wrong:
                raise self._unsupported(
                    label,
                    f"writing CSV with {', '.join(wrong)}",
                    'Tarn writes CSV comma-delimited, double-quoted, with a header: set "header": true',
                )
            return {**out, "format": "csv"}
        return {**out, "format": "parquet" if isinstance(s, ParquetLoad) else "jsonl"}

    def _merge_load(self, s: DeltaLakeMergeLoad) -> dict[str, Any]:
        update: dict[str, Any] | None = None
        if s.when_matched_update is not None:
            update = {"action": "update", "condition": s.when_matched_update.condition}
            if s.when_matched_update.values is not None:
                update["set"] = dict(s.when_matched_update.values)
        delete = _delete(s.when_matched_delete)
        ordered = (delete, update) if s.when_matched_delete_first else (update, delete)
        matched = [c for c in ordered if c is not None]
        not_matched: list[dict[str, Any]] = []
        if s.when_not_matched_by_target_insert is not None:
            ins = s.when_not_matched_by_target_insert
            clause: dict[str, Any] = {"action": "insert", "condition": ins.condition}
            if ins.values is not None:
                clause["set"] = dict(ins.values)
            not_matched.append(clause)
        by_source = [c for c in (_delete(s.when_not_matched_by_source_delete),) if c is not None]
        return {
            **self._common(s, "load"),
            "input": s.input_view,
            "path": self._location(s.output_uri, "", "outputURI"),
            "format": "delta",
            "mode": "merge",
            "on": s.condition,
            "when_matched": matched,
            "when_not_matched": not_matched,
            "when_not_matched_by_source": by_source,
            "create_if_missing": s.create_table_if_not_exists,
            "partition_by": list(s.partition_by),
        }


def _delete(d: MergeDelete | None) -> dict[str, Any] | None:
    return None if d is None else {"action": "delete", "condition": d.condition}
