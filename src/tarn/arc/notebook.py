"""Arc notebooks (``.ipynb``, kernelspec ``arc``) as jobs.

Code cells run in order. A cell holding a JSON/HOCON object is a stage. A cell starting with a magic:

- ``%sql`` → SQLTransform, ``%sqlvalidate`` → SQLValidate, ``%log`` → LogExecute,
  ``%configexecute`` → ConfigExecute: the first line carries ``key=value`` arguments (``name="…"``,
  ``environments=a,b``, ``outputView=…``, ``persist=true``, ``sqlParams=k=v,k2=v2`` …), the SQL follows;
- ``%arc``: the object on the following lines is a stage (arguments on the first line are added to it);
- ``%env``: ``KEY=value`` assignments (one a line, or several on the first line) for the cells after it;
- display magics (``%conf``, ``%printschema``, ``%schema``, ``%metadata``, ``%printmetadata``, ``%list``,
  ``%version``, ``%help``, ``%summary``) do nothing when the notebook runs as a job.

``${VAR}`` resolve from the command-line variables first, then ``%env`` cells seen so far, then the process
environment. In SQL, the placeholders named in ``sqlParams`` are left for
:func:`~tarn.arc.params.apply_sql_params`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tarn.arc.hocon import build_stage, parse_hocon
from tarn.arc.params import missing_variable_error, substitute_variables
from tarn.arc.stages import ArcJob, ArcStage
from tarn.arc.validation import stage_label
from tarn.errors import ConfigError, did_you_mean

__all__ = ["DISPLAY_MAGICS", "STAGE_MAGICS", "load_notebook_job", "parse_notebook"]

STAGE_MAGICS: dict[str, str] = {
    "sql": "SQLTransform",
    "sqlvalidate": "SQLValidate",
    "log": "LogExecute",
    "configexecute": "ConfigExecute",
}
"""Magic → the Arc stage type it builds from the SQL that follows it."""

DISPLAY_MAGICS = frozenset(
    {"conf", "printschema", "schema", "metadata", "printmetadata", "list", "version", "help", "summary"}
)
"""Magics that only show something in Jupyter; ignored when the notebook runs as a job."""

_KNOWN_MAGICS = (*STAGE_MAGICS, "arc", "env", *sorted(DISPLAY_MAGICS))
_DISPLAY_ARGS = frozenset({"numRows", "truncate", "monospace", "leftAlign", "datasetLabels", "streamingDuration"})
_LIST_ARGS = frozenset({"environments", "partitionBy"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_SQL_CELL_HINT = "a cell is a JSON/HOCON stage object, or starts with a magic such as %sql on its first line"


class _Reader:
    """Walks the cells, keeping the ``%env`` variables set so far and the stages built."""

    def __init__(self, where: str, variables: Mapping[str, str]) -> None:
        self.where = where
        self.given = dict(variables)
        self.env: dict[str, str] = {}
        self.stages: list[ArcStage] = []

    @property
    def layers(self) -> list[dict[str, str]]:
        return [self.given, self.env]

    def cell(self, number: int, text: str) -> None:
        if not text.startswith("%"):
            where = f"{self.where}, cell {number}"
            raw = parse_hocon(text, {**self.env, **self.given}, where=where, syntax_hint=_SQL_CELL_HINT)
            if raw:  # a cell of comments only is no stage
                self.stages.append(build_stage(raw, len(self.stages), self.layers, cell=number))
            return
        first, _, body = text.partition("\n")
        parts = first.lstrip("%").split(None, 1)
        magic = parts[0] if parts else ""
        argline = parts[1] if len(parts) > 1 else ""
        if magic in DISPLAY_MAGICS:
            return
        if magic == "env":
            self._env(number, argline, body)
        elif magic == "arc":
            self._arc(number, argline, body)
        elif magic in STAGE_MAGICS:
            self._sql(number, magic, argline, body)
        else:
            raise ConfigError(
                f"{self.where}, cell {number}: unknown magic %{magic}{did_you_mean(magic, _KNOWN_MAGICS)}",
                hint=f"magics Tarn runs: {', '.join('%' + name for name in _KNOWN_MAGICS)}",
            )

    def _env(self, number: int, argline: str, body: str) -> None:
        where = f"{self.where}, cell {number} (%env)"
        pairs = [_split_pair(token, where) for token in _tokens(argline, where)]
        for line in body.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "//")):
                key, value = _split_pair(line, where)
                pairs.append((key, _unquote(value.strip())))
        for key, value in pairs:
            if not _ENV_NAME.match(key):
                raise ConfigError(f"{where}: {key!r} is not a variable name", hint="write KEY=value, one a line")
            resolved, unset = substitute_variables(value, self.layers)
            if unset:
                raise missing_variable_error(unset, where, notebook=True)
            self.env[key] = resolved

    def _arc(self, number: int, argline: str, body: str) -> None:
        where = f"{self.where}, cell {number} (%arc)"
        raw = parse_hocon(body, {**self.env, **self.given}, where=where, syntax_hint=_SQL_CELL_HINT)
        lazy = raw.get("resolution") == "lazy"
        args = self._args(number, argline, raw.get("name"), raw.get("type"), lazy=lazy)
        self.stages.append(build_stage({**raw, **args}, len(self.stages), self.layers, cell=number))

    def _sql(self, number: int, magic: str, argline: str, body: str) -> None:
        stage_type = STAGE_MAGICS[magic]
        args = self._args(number, argline, None, stage_type, lazy=False)
        label = stage_label(len(self.stages), args.get("name"), stage_type, number)
        if not body.strip():
            raise ConfigError(
                f"{label}: %{magic} has no SQL",
                hint=f"write the SQL on the lines after %{magic} and its arguments",
            )
        raw: dict[str, Any] = {"type": stage_type, "name": f"{magic} cell {number}", **args, "sql": body}
        self.stages.append(build_stage(raw, len(self.stages), self.layers, cell=number))

    def _args(self, number: int, argline: str, name: object, stage_type: object, *, lazy: bool) -> dict[str, Any]:
        """A magic's ``key=value`` arguments as stage keys, with ``${VAR}`` resolved."""
        label = stage_label(len(self.stages), name, stage_type, number)
        pairs = [_split_pair(token, label) for token in _tokens(argline, label)]
        pairs = [(key, value) for key, value in pairs if key not in _DISPLAY_ARGS]
        lazy = lazy or dict(pairs).get("resolution") == "lazy"
        if "name" in dict(pairs):
            label = stage_label(len(self.stages), dict(pairs)["name"], stage_type, number)
        args: dict[str, Any] = {}
        unset: list[str] = []

        def resolve(text: str) -> str:
            resolved, missing = substitute_variables(text, self.layers)
            unset.extend(name for name in missing if name not in unset)
            return resolved

        for key, value in pairs:
            if key in args:
                raise ConfigError(f"{label}: argument {key!r} is given twice")
            if key == "sqlParams":
                args[key] = {k: resolve(v) for k, v in (_split_pair(item, label) for item in _items(value))}
            elif key in _LIST_ARGS:
                args[key] = _items(resolve(value))
            else:
                args[key] = resolve(value)
        if unset and not lazy:
            raise missing_variable_error(unset, label, notebook=True)
        return args


def _tokens(argline: str, where: str) -> list[str]:
    try:
        return shlex.split(argline)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: cannot read the magic's arguments ({exc})",
            hint='quote values with spaces: name="my stage"',
        ) from None


def _split_pair(token: str, where: str) -> tuple[str, str]:
    key, equals, value = token.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"{where}: {token!r} is not key=value", hint='write key=value, e.g. name="my stage"')
    return key.strip(), value


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _cell_text(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    text = "".join(source) if isinstance(source, list) else str(source)
    return text.strip()


def parse_notebook(
    notebook: Mapping[str, Any],
    variables: Mapping[str, str] | None = None,
    *,
    source: Path | None = None,
) -> ArcJob:
    """An Arc job from a parsed notebook (nbformat 4 JSON)."""
    where = f"Arc notebook {str(source)!r}" if source else "Arc notebook"
    kernel = (notebook.get("metadata") or {}).get("kernelspec") or {}
    if kernel.get("name") not in (None, "arc"):
        raise ConfigError(
            f"{where} is not an Arc notebook (kernelspec {kernel.get('name')!r})",
            hint="Tarn runs notebooks written for the Arc kernel (kernelspec name 'arc')",
        )
    cells = notebook.get("cells")
    if not isinstance(cells, Sequence):
        raise ConfigError(f"{where} has no 'cells'", hint="save the notebook in nbformat 4")
    reader = _Reader(where, variables or {})
    for number, cell in enumerate(cells, start=1):
        if isinstance(cell, Mapping) and cell.get("cell_type") == "code":
            text = _cell_text(cell)
            if text:
                reader.cell(number, text)
    return ArcJob(stages=tuple(reader.stages), source=source, variables={**reader.env, **reader.given})


def load_notebook_job(path: str | Path, variables: Mapping[str, str] | None = None) -> ArcJob:
    """Read and parse an Arc notebook file (``.ipynb``)."""
    source = Path(path)
    try:
        notebook = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Arc notebook {str(source)!r} does not exist", hint="check the path") from None
    except OSError as exc:
        raise ConfigError(f"Arc notebook {str(source)!r} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"Arc notebook {str(source)!r} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(notebook, Mapping):
        raise ConfigError(f"Arc notebook {str(source)!r} must be a JSON object")
    return parse_notebook(notebook, variables, source=source)
