"""Arc jobs written in HOCON (``.conf``/``.json``), parsed with pyhocon.

Substitutions such as ``"inputURI": ${ETL_CONF_DATA_URL}"/in.csv"`` are resolved from the variables given
(the command line's ``--VAR=value``) first, then from the process environment. A variable that is set nowhere
is an error naming the stage that uses it — unless that stage says ``"resolution": "lazy"``, in which case
the text ``${VAR}`` is kept for the runner to resolve later (after a ConfigExecute).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyhocon import ConfigFactory, ConfigParser, ConfigTree
from pyhocon.exceptions import ConfigException, ConfigSubstitutionException
from pyparsing import ParseBaseException

from tarn.arc.params import check_sql_params, missing_variable_error, substitute_variables
from tarn.arc.stages import ArcJob, ArcStage, parse_stage
from tarn.arc.validation import stage_label
from tarn.errors import ConfigError, did_you_mean

__all__ = ["build_stage", "load_hocon_job", "parse_hocon", "parse_hocon_job"]

_MARKER = "\x00tarn-unset:{}\x00"
_MARKER_RE = re.compile("\x00tarn-unset:([^\x00]*)\x00")
_UNRESOLVED_RE = re.compile(r"Cannot resolve variable \$\{([^}]+)\}")
_MAX_UNSET = 500
_EMPTY = "__tarn_empty_string_8c1f__"


def parse_hocon(
    text: str,
    variables: Mapping[str, str],
    *,
    where: str,
    basedir: Path | None = None,
    syntax_hint: str | None = None,
) -> dict[str, Any]:
    """Parse one HOCON object and resolve its substitutions (``variables``, then os.environ).

    A variable set nowhere resolves to an internal marker; :func:`build_stage` turns markers into an error
    or, for lazy stages, back into ``${VAR}``.
    """
    unset: list[str] = []
    while True:
        config = _parse(text, where=where, basedir=basedir, hint=syntax_hint)
        own_keys = [_plain(key) for key in config]
        fallback = ConfigTree()
        for name, value in variables.items():
            fallback.put(name, value)
        for name in unset:
            fallback.put(name, _MARKER.format(name))
        merged = config.with_fallback(fallback, resolve=False) if len(fallback) else config
        try:
            ConfigParser.resolve_substitutions(merged)
        except ConfigSubstitutionException as exc:
            match = _UNRESOLVED_RE.search(str(exc))
            if match is None or match.group(1) in unset or len(unset) >= _MAX_UNSET:
                raise ConfigError(f"{where}: {exc}", hint="check the ${...} substitutions") from None
            unset.append(match.group(1))
            continue
        except ConfigException as exc:
            raise ConfigError(f"{where}: {exc}", hint="check the ${...} substitutions") from None
        plain = _plain(merged.as_plain_ordered_dict())
        return {key: plain[key] for key in own_keys}


def _plain(value: Any) -> Any:
    """OrderedDicts (pyhocon's) to plain dicts, all the way down, with empty strings restored."""
    if isinstance(value, str):
        return value.replace(_EMPTY, "")
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _protect_empty_strings(text: str) -> str:
    """Write each ``""`` as a placeholder string, which :func:`_plain` turns back into ``""``.

    pyhocon drops empty strings from lists (chimpler/pyhocon#232): ``"nullableValues": ["", "n/a"]`` would
    lose the ``""`` that matters most. Comments, triple-quoted and other quoted strings are copied unchanged.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith('"""', i):
            end = text.find('"""', i + 3)
            end = n if end < 0 else end + 3
            while end < n and text[end] == '"':  # extra quotes before the closing """ belong to the string
                end += 1
        elif text[i] == '"':
            end = i + 1
            while end < n and text[end] not in '"\n':
                end += 2 if text[end] == "\\" else 1
            end = min(end + 1, n)
            if end == i + 2 and text[i + 1] == '"':
                out.append(f'"{_EMPTY}"')
                i = end
                continue
        elif text[i] == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
        else:
            end = i + 1
        out.append(text[i:end])
        i = end
    return "".join(out)


def _parse(text: str, *, where: str, basedir: Path | None, hint: str | None = None) -> ConfigTree:
    try:
        protected = _protect_empty_strings(text)
        config = ConfigFactory.parse_string(protected, basedir=str(basedir) if basedir else None, resolve=False)
    except ParseBaseException as exc:
        raise ConfigError(
            f"{where} is not valid HOCON/JSON at line {exc.lineno}, column {exc.col}: {exc.line.strip()!r}",
            hint=hint or "look for an unclosed bracket or quote at or just before that position",
        ) from None
    except ConfigException as exc:
        raise ConfigError(f"{where} is not valid HOCON/JSON: {exc}") from None
    if not isinstance(config, ConfigTree):
        raise ConfigError(f"{where} must be an object ({{...}}), not {type(config).__name__}")
    return config


def _unset_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return _MARKER_RE.findall(value)
    if isinstance(value, Mapping):
        return [name for item in value.values() for name in _unset_in(item)]
    if isinstance(value, list | tuple):
        return [name for item in value for name in _unset_in(item)]
    return []


def _restore(value: Any) -> Any:
    """Markers of unset variables back to ``${VAR}`` text."""
    if isinstance(value, str):
        return _MARKER_RE.sub(lambda match: "${" + match.group(1) + "}", value)
    if isinstance(value, Mapping):
        return {key: _restore(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_restore(item) for item in value]
    return value


def build_stage(
    raw: Any,
    index: int,
    layers: Sequence[Mapping[str, str]],
    *,
    cell: int | None = None,
) -> ArcStage:
    """One stage from its resolved object: unset-variable check, job variables in ``sql``, validation.

    ``layers`` are the variable sources before os.environ (command line, then notebook ``%env``).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{stage_label(index, None, None, cell)} must be an object ({{...}}), not {type(raw).__name__}"
        )
    label = stage_label(index, raw.get("name"), raw.get("type"), cell)
    unset = list(dict.fromkeys(_unset_in(raw)))
    if unset and raw.get("resolution") != "lazy":
        raise missing_variable_error(unset, label, notebook=cell is not None)
    stage_raw: dict[str, Any] = _restore(raw)
    sql = stage_raw.get("sql")
    if isinstance(sql, str):
        sql_params = stage_raw.get("sqlParams")
        skip = list(sql_params) if isinstance(sql_params, Mapping) else []
        stage_raw["sql"], _ = substitute_variables(sql, layers, skip=skip)
    stage = parse_stage(stage_raw, index, cell=cell)
    check_sql_params(stage, label)
    return stage


def parse_hocon_job(
    text: str,
    variables: Mapping[str, str] | None = None,
    *,
    source: Path | None = None,
) -> ArcJob:
    """An Arc job from HOCON/JSON text: top-level ``stages: [...]`` and optional ``plugins``."""
    where = f"Arc job {str(source)!r}" if source else "Arc job"
    given = dict(variables or {})
    document = parse_hocon(text, given, where=where, basedir=source.parent if source else None)
    raw_stages = document.get("stages")
    if raw_stages is None:
        raise ConfigError(
            f"{where} has no 'stages'{did_you_mean('stages', document)}",
            hint='an Arc job is an object {"stages": [ {"type": ..., "name": ...}, ... ]}',
        )
    if not isinstance(raw_stages, list):
        raise ConfigError(f"{where}: 'stages' must be a list, not {type(raw_stages).__name__}")
    stages = tuple(build_stage(raw, index, [given]) for index, raw in enumerate(raw_stages))
    plugins = document.get("plugins") or {}
    if not isinstance(plugins, Mapping):
        raise ConfigError(f"{where}: 'plugins' must be an object, not {type(plugins).__name__}")
    unset = list(dict.fromkeys(_unset_in(plugins)))
    if unset:
        raise missing_variable_error(unset, f"{where}, plugins")
    return ArcJob(stages=stages, plugins=dict(plugins), source=source, variables=given)


def load_hocon_job(path: str | Path, variables: Mapping[str, str] | None = None) -> ArcJob:
    """Read and parse an Arc job file (``.conf`` or ``.json``)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Arc job {str(source)!r} does not exist", hint="check the path") from None
    except OSError as exc:
        raise ConfigError(f"Arc job {str(source)!r} cannot be read: {exc}") from None
    return parse_hocon_job(text, variables, source=source)
