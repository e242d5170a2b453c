"""``${param}`` placeholders: where they are, which values they take, and the errors that stop a run early.

Values come, from weakest to strongest, from the pipeline's ``params`` defaults, the environment
(``TARN_PARAM_<NAME>``), and the caller (``tarn run P --param name=value``). A stage's own ``params`` win over
all of these inside that stage. ``$${x}`` is a literal ``${x}``.

Placeholders may appear in every SQL text (``sql`` / ``sql_file``, expectation checks, load predicates and merge
clauses) and in the locations an extract reads or a load writes (``table``, ``path``, ``uri``, ``timestamp``).
Checked before anything runs: a declared param that no stage uses, a stage param without a placeholder in that
stage, a placeholder that nothing provides, a required param (default ``null``) without a value, and a value
given for a param the pipeline does not declare.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tarn.errors import ConfigError, did_you_mean
from tarn.pipelines.spec import (
    ConfigStage,
    ExecuteStage,
    ExpectStage,
    ExtractStage,
    LoadStage,
    LogStage,
    MergeClause,
    ParamValue,
    PipelineSpec,
    SqlStage,
    Stage,
    ValidateStage,
)

_PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
ENV_PREFIX = "TARN_PARAM_"
SqlTextStage = SqlStage | ValidateStage | ExecuteStage | LogStage | ConfigStage


def placeholders(text: str) -> list[str]:
    """Names of the ``${name}`` placeholders in ``text``, in order, without duplicates (``$${x}`` excluded)."""
    out: list[str] = []
    for m in _PLACEHOLDER.finditer(text):
        if not m.group(1) and m.group(2) not in out:
            out.append(m.group(2))
    return out


def render(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def substitute(text: str, values: Mapping[str, str], where: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)[1:]
        name = m.group(2)
        if name not in values:
            raise ConfigError(
                f"{where}: placeholder ${{{name}}} has no value{did_you_mean(name, values)}",
                hint=f"declare it in the pipeline's 'params' (or the stage's), or pass --param {name}=…",
            )
        return values[name]

    return _PLACEHOLDER.sub(repl, text)


def stage_label(spec: PipelineSpec, stage: Stage) -> str:
    return f"pipeline {spec.name!r}, stage {stage.name!r} ({stage.type})"


def sql_text(stage: SqlTextStage, base_dir: Path) -> str:
    """The stage's SQL: inline, or read from ``sql_file`` (relative to ``base_dir``)."""
    if stage.sql is not None:
        return stage.sql
    assert stage.sql_file is not None
    path = base_dir / stage.sql_file
    if not path.is_file():
        raise ConfigError(f"stage {stage.name!r}: sql_file {str(path)!r} does not exist", hint="fix 'sql_file'")
    return path.read_text(encoding="utf-8")


def _clause_texts(prefix: str, clauses: tuple[MergeClause, ...] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, c in enumerate(clauses or ()):
        if c.condition:
            out[f"{prefix}[{i}].condition"] = c.condition
        for col, e in (c.set or {}).items():
            out[f"{prefix}[{i}].set.{col}"] = e
    return out


def stage_texts(stage: Stage, base_dir: Path) -> dict[str, str]:
    """Every text of ``stage`` that may hold placeholders, by field path."""
    t: dict[str, str] = {}
    if isinstance(stage, SqlStage | ValidateStage | ExecuteStage | LogStage | ConfigStage):
        t["sql"] = sql_text(stage, base_dir)
    elif isinstance(stage, ExtractStage):
        t.update({k: v for k in ("table", "path", "uri", "timestamp") if (v := getattr(stage, k)) is not None})
    elif isinstance(stage, ExpectStage):
        t.update({f"expectations.{e.name}.check": e.check for e in stage.expectations})
    elif isinstance(stage, LoadStage):
        t.update(
            {k: v for k in ("table", "path", "predicate", "on", "effective_at") if (v := getattr(stage, k)) is not None}
        )
        t.update(_clause_texts("when_matched", stage.when_matched))
        t.update(_clause_texts("when_not_matched", stage.when_not_matched))
        t.update(_clause_texts("when_not_matched_by_source", stage.when_not_matched_by_source))
    return t


def _with_texts(stage: Stage, texts: Mapping[str, str]) -> Stage:
    """A copy of ``stage`` with its texts replaced (``sql_file`` becomes inline ``sql``)."""
    update: dict[str, Any] = {}
    if isinstance(stage, SqlStage | ValidateStage | ExecuteStage | LogStage | ConfigStage):
        update = {"sql": texts["sql"], "sql_file": None, "params": {}}
    elif isinstance(stage, ExtractStage):
        update = {k: texts[k] for k in ("table", "path", "uri", "timestamp") if k in texts}
    elif isinstance(stage, ExpectStage):
        update["expectations"] = tuple(
            e.model_copy(update={"check": texts[f"expectations.{e.name}.check"]}) for e in stage.expectations
        )
    elif isinstance(stage, LoadStage):
        update = {k: texts[k] for k in ("table", "path", "predicate", "on", "effective_at") if k in texts}
        for prefix in ("when_matched", "when_not_matched", "when_not_matched_by_source"):
            clauses = getattr(stage, prefix)
            if clauses is None:
                continue
            new = []
            for i, c in enumerate(clauses):
                cond = texts.get(f"{prefix}[{i}].condition", c.condition)
                sets = None if c.set is None else {col: texts[f"{prefix}[{i}].set.{col}"] for col in c.set}
                new.append(c.model_copy(update={"condition": cond, "set": sets}))
            update[prefix] = tuple(new)
    return stage.model_copy(update=update)


def stage_params(stage: Stage) -> dict[str, ParamValue]:
    return dict(getattr(stage, "params", {}) or {})


@dataclass(frozen=True)
class ParamProblem:
    stage: str | None
    message: str
    hint: str


@dataclass
class ParamCheck:
    """The outcome of checking a pipeline's placeholders against its params."""

    problems: list[ParamProblem] = field(default_factory=list)
    used: set[str] = field(default_factory=set)


def check_placeholders(spec: PipelineSpec, base_dir: Path | None = None) -> ParamCheck:
    """Static check of every stage (whatever its environments): see the module docstring."""
    base = base_dir or spec.base_dir
    result = ParamCheck()
    provided_later: set[str] = set()  # names a config stage provides to the stages after it
    open_config = False  # a config stage without 'provides': later placeholders are checked at run time
    for stage in spec.stages:
        try:
            texts = stage_texts(stage, base)
        except ConfigError as e:
            result.problems.append(ParamProblem(stage.name, e.message, e.hint or ""))
            continue
        names = {n for text in texts.values() for n in placeholders(text)}
        own = stage_params(stage)
        for p in own:
            if p not in names:
                result.problems.append(
                    ParamProblem(
                        stage.name,
                        f"stage {stage.name!r}: param {p!r} has no ${{{p}}} placeholder in the stage's SQL",
                        "remove the param, or use it in the SQL",
                    )
                )
        for n in sorted(names):
            if n in own:
                continue
            if n in spec.params:
                result.used.add(n)
            elif n not in provided_later and not open_config:
                known = [*spec.params, *own, *provided_later]
                result.problems.append(
                    ParamProblem(
                        stage.name,
                        f"stage {stage.name!r}: placeholder ${{{n}}} has no value{did_you_mean(n, known)}",
                        f"declare '{n}' in the pipeline's params (or the stage's), or write $${{{n}}} for the text",
                    )
                )
        if isinstance(stage, ConfigStage):
            if stage.provides is None:
                open_config = True
            else:
                provided_later.update(stage.provides)
    for p in spec.params:
        if p not in result.used:
            result.problems.append(
                ParamProblem(
                    None,
                    f"pipeline {spec.name!r}: param {p!r} is not used by any stage (no ${{{p}}} placeholder)",
                    "remove the param, or use it",
                )
            )
    return result


def resolve_values(
    spec: PipelineSpec, given: Mapping[str, ParamValue] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The pipeline's param values for a run: defaults < TARN_PARAM_<NAME> < ``given``."""
    env = os.environ if env is None else env
    given = dict(given or {})
    unknown = [k for k in given if k not in spec.params]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"pipeline {spec.name!r} has no param {k!r}{did_you_mean(k, spec.params)}",
            hint="params: " + (", ".join(spec.params) or "(none)"),
        )
    values: dict[str, str] = {}
    missing: list[str] = []
    for name, default in spec.params.items():
        if name in given:
            values[name] = render(given[name])
        elif ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
        elif default is not None:
            values[name] = render(default)
        else:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"pipeline {spec.name!r}: required param(s) {', '.join(missing)} have no value",
            hint="pass " + " ".join(f"--param {m}=…" for m in missing) + f" (or set {ENV_PREFIX}{missing[0].upper()})",
        )
    return values


def resolve_stage(spec: PipelineSpec, stage: Stage, values: Mapping[str, str], base_dir: Path | None = None) -> Stage:
    """``stage`` with every placeholder replaced (the pipeline's ``values`` + the stage's own params)."""
    base = base_dir or spec.base_dir
    merged = {**values, **{k: render(v) for k, v in stage_params(stage).items()}}
    texts = stage_texts(stage, base)
    where = stage_label(spec, stage)
    resolved = {k: substitute(v, merged, f"{where}, {k}") for k, v in texts.items()}
    return _with_texts(stage, resolved)


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` (command-line ``--param`` values)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param {item!r} must be name=value", hint="e.g. --param day=2024-01-31")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out
