"""``${name}`` in Arc jobs: job variables (resolved at load) and ``sqlParams`` (applied to the SQL text)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

from tarn.arc.stages import ArcStage, ConfigExecute, LogExecute, SQLTransform, SQLValidate
from tarn.errors import ConfigError, did_you_mean

__all__ = [
    "PLACEHOLDER",
    "apply_sql_params",
    "check_sql_params",
    "lookup_variable",
    "missing_variable_error",
    "sql_placeholders",
    "substitute_variables",
]

PLACEHOLDER = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}")
"""``${name}``; Hive-style ``${hiveconf:x}`` does not match and is left alone."""


def sql_placeholders(sql: str) -> list[str]:
    """The ``${name}`` placeholders in ``sql``, in order of first use."""
    return list(dict.fromkeys(match.group(1) for match in PLACEHOLDER.finditer(sql)))


def apply_sql_params(sql: str, params: Mapping[str, str], where: str) -> str:
    """Replace every ``${name}`` in ``sql`` with ``params[name]``.

    ``where`` names the stage for messages. A placeholder without a param, or a param without a placeholder,
    is a ConfigError (both are almost always a typo).
    """
    used = sql_placeholders(sql)
    missing = [name for name in used if name not in params]
    unused = [name for name in params if name not in used]
    problems: list[str] = []
    hints: list[str] = []
    for name in missing:
        problems.append(f"the SQL uses ${{{name}}} but sqlParams has no {name!r}{did_you_mean(name, unused or params)}")
        hints.append(f"add {name!r} to sqlParams, or pass it as a job variable with --{name}=value")
    for name in unused:
        problems.append(
            f"sqlParams {name!r} has no ${{{name}}} placeholder in the SQL{did_you_mean(name, missing or used)}"
        )
        hints.append(f"use ${{{name}}} in the SQL or remove {name!r} from sqlParams")
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}", hint="; ".join(hints))
    return PLACEHOLDER.sub(lambda match: params[match.group(1)], sql)


def check_sql_params(stage: ArcStage, where: str) -> None:
    """Fail at load, not at run time, when an inline SQL's placeholders and sqlParams do not match.

    Stages with ``resolution: lazy`` are checked when they run (their variables may come from ConfigExecute);
    SQL read from ``inputURI`` is checked when the file is read.
    """
    sql_stage_types = (SQLTransform, SQLValidate, LogExecute, ConfigExecute)
    if isinstance(stage, sql_stage_types) and stage.sql is not None and stage.resolution == "strict":
        apply_sql_params(stage.sql, stage.sql_params, where)


def lookup_variable(name: str, layers: Sequence[Mapping[str, str]]) -> str | None:
    """A job variable: the first layer that has it (command line, then notebook ``%env``), else os.environ."""
    for layer in layers:
        if name in layer:
            return layer[name]
    return os.environ.get(name)


def substitute_variables(
    text: str, layers: Sequence[Mapping[str, str]], *, skip: Iterable[str] = ()
) -> tuple[str, list[str]]:
    """Replace the ``${VAR}`` in ``text`` that are job variables.

    Names in ``skip`` (the stage's sqlParams) are left for :func:`apply_sql_params`. Returns the new text and
    the names that are neither skipped nor set, which stay as ``${VAR}`` in the text.
    """
    skipped = set(skip)
    unresolved: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in skipped:
            return match.group(0)
        value = lookup_variable(name, layers)
        if value is None:
            if name not in unresolved:
                unresolved.append(name)
            return match.group(0)
        return value

    return PLACEHOLDER.sub(replace, text), unresolved


def missing_variable_error(names: Sequence[str], where: str, *, notebook: bool = False) -> ConfigError:
    """The error for job variables that are used but not set."""
    listed = ", ".join(f"${{{name}}}" for name in names)
    noun = "variable" if len(names) == 1 else "variables"
    passes = " ".join(f"--{name}=value" for name in names)
    also = ", set it in an earlier %env cell" if notebook else ""
    return ConfigError(
        f"{where}: job {noun} {listed} not set",
        hint=f"pass {passes} on the command line{also}, or set it in the environment "
        '(or give the stage "resolution": "lazy" if a ConfigExecute sets it)',
    )
