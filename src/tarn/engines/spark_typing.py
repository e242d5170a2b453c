"""Typing on Spark: the same typed values and the same ``_errors`` as the DuckDB engine for the same inputs.

DuckDB's casts are the reference (see :mod:`tarn.ingest.typing` and ``DuckDBEngine.typing_sql``). Spark's own
``try_cast`` accepts other spellings (``'2024'`` as a date, ``'1e3'`` not as an integer, …), so each text value is
guarded or normalised first to accept exactly what DuckDB accepts:

* integers: trimmed; ``_`` between digits; ``0x`` hexadecimal; exponents (``15e-1`` → 2, rounded half up); never a
  ``.`` (Tarn's guard); from a fractional number, rounded half to even (DuckDB's cast).
* dates: ``yyyy-m-d`` or ``yyyy/m/d`` (trimmed), no time part; timestamps: a date, optionally ``T``/space and a
  time, optionally ``Z`` or an offset ``±hh[[:]mm]``, not trimmed.
* booleans: true, t, yes, y, 1 / false, f, no, n, 0 (any case, trimmed).
* doubles and decimals: trimmed, ``_`` between digits, ``inf``/``infinity``/``nan``.

Known differences (documented in the README): DuckDB's special dates ``infinity`` / ``-infinity``, and ``time``
columns (Spark 4.0 has no TIME type: a clear error).
"""

from __future__ import annotations

import re

from tarn.config.types import normalize_type
from tarn.engines.base import TypedField
from tarn.errors import QueryError

ERRORS_TYPE = "ARRAY<STRUCT<field: STRING, message: STRING>>"

_SIMPLE = {
    "string": "STRING",
    "json": "STRING",
    "integer": "INT",
    "long": "BIGINT",
    "short": "SMALLINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "binary": "BINARY",
}
_INTEGRAL = ("long", "integer", "short")
_FRACTIONAL_SOURCES = ("DOUBLE", "FLOAT", "DECIMAL")
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")

_DATE_RE = r"^[0-9]{4}([-/])[0-9]{1,2}\1[0-9]{1,2}$"
_TS_RE = (  # leading blanks allowed; trailing blanks only after a time (DuckDB's rules)
    r"^\s*[0-9]{4}([-/])[0-9]{1,2}\1[0-9]{1,2}"
    r"(([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\s*"
    r"|Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
_UNDERSCORE_RE = r"(?<=[0-9])_(?=[0-9])"


def sq(name: str) -> str:
    """Quote an identifier for Spark SQL."""
    return "`" + name.replace("`", "``") + "`"


def slit(value: str) -> str:
    """A Spark SQL string literal (backslash escapes: Spark reads ``'a''b'`` as two adjacent literals)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def spark_type(name: str) -> str:
    t = normalize_type(name)
    if t.startswith("decimal"):
        return t.upper()
    if t == "time":
        raise QueryError(
            "the Spark engine cannot type a 'time' column (Spark has no TIME type)",
            hint="declare it as string or timestamp, or run this pipeline on DuckDB (engine: duckdb)",
        )
    return _SIMPLE[t]


# strptime directives (as converted from Java patterns by tarn.pipelines.schemas) → Java DateTimeFormatter letters
_STRPTIME = {
    "%Y": "yyyy",
    "%y": "yy",
    "%B": "MMMM",
    "%b": "MMM",
    "%m": "MM",
    "%-m": "M",
    "%d": "dd",
    "%-d": "d",
    "%H": "HH",
    "%-H": "H",
    "%I": "hh",
    "%-I": "h",
    "%M": "mm",
    "%-M": "m",
    "%S": "ss",
    "%-S": "s",
    "%n": "SSSSSSSSS",
    "%f": "SSSSSS",
    "%g": "SSS",
    "%A": "EEEE",
    "%a": "EEE",
    "%p": "a",
    "%z": "XXX",
    "%Z": "z",
    "%%": "%",
}
_DIRECTIVE = re.compile(r"%-?[A-Za-z%]|[A-Za-z]+|[^%A-Za-z]+")


def strptime_to_java(fmt: str) -> str:
    """``%Y-%m-%dT%H:%M:%S`` → ``yyyy-MM-dd'T'HH:mm:ss``."""
    out: list[str] = []
    for tok in _DIRECTIVE.findall(fmt):
        if tok.startswith("%"):
            if tok not in _STRPTIME:
                raise QueryError(f"date format {fmt!r}: the directive {tok!r} has no Spark equivalent")
            out.append(_STRPTIME[tok])
        elif tok.isalpha():
            out.append("'" + tok + "'")
        else:
            out.append(tok.replace("'", "''"))
    return "".join(out)


def _in(value: str, items: tuple[str, ...]) -> str:
    return f"{value} IN ({', '.join(slit(x) for x in items)})"


def _text_cast(value: str, t: str) -> str:
    """DuckDB's TRY_CAST of text (behind Tarn's guards) on Spark."""
    if t in ("string", "json"):
        return f"CAST({value} AS STRING)"
    tv = f"trim({value})"
    if t in _INTEGRAL:
        st = _SIMPLE[t]
        clean = f"regexp_replace(trim({value}), {slit(_UNDERSCORE_RE)}, '')"
        return (
            f"CASE WHEN NOT contains({value}, '.') THEN coalesce("
            f"try_cast({clean} AS {st}), "
            f"CASE WHEN {clean} RLIKE '^0[xX][0-9a-fA-F]+$' "
            f"THEN try_cast(conv(substring({clean}, 3), 16, 10) AS {st}) END, "
            f"CASE WHEN {clean} RLIKE '^[+-]?[0-9]+[eE][+-]?[0-9]+$' "
            f"THEN try_cast(round(try_cast({clean} AS DECIMAL(38,10))) AS {st}) END) END"
        )
    if t == "date":
        return (
            f"CASE WHEN NOT contains({value}, ':') AND {tv} RLIKE {slit(_DATE_RE)} "
            f"THEN try_cast(replace({tv}, '/', '-') AS DATE) END"
        )
    if t == "timestamp":
        return (
            f"CASE WHEN {value} RLIKE {slit(_TS_RE)} "
            f"THEN try_cast(regexp_replace({tv}, '^([0-9]{{4}})/([0-9]{{1,2}})/', '$1-$2-') AS TIMESTAMP) END"
        )
    if t == "boolean":
        low = f"lower(trim({value}))"
        return f"CASE WHEN {_in(low, _TRUE)} THEN true WHEN {_in(low, _FALSE)} THEN false END"
    clean = f"regexp_replace({tv}, {slit(_UNDERSCORE_RE)}, '')"
    return f"try_cast({clean} AS {spark_type(t)})"


def convert(value: str, f: TypedField, *, from_text: bool, source_type: str = "STRING") -> str:
    """The typed value of ``value`` (a Spark SQL expression), NULL where it does not convert."""
    t = normalize_type(f.type)
    st = spark_type(t)
    if not from_text:
        if t in ("string", "json"):
            return f"CAST({value} AS STRING)"
        if t in _INTEGRAL and source_type.upper().startswith(_FRACTIONAL_SOURCES):
            return f"try_cast(bround({value}) AS {st})"  # DuckDB rounds half to even
        return f"try_cast({value} AS {st})"
    if t == "boolean" and (f.true_values is not None or f.false_values is not None):
        trues = f.true_values or ("true",)
        falses = f.false_values or ("false",)
        return f"CASE WHEN {_in(value, trues)} THEN true WHEN {_in(value, falses)} THEN false END"
    if t in ("date", "timestamp") and f.formats:
        parsed = "coalesce(" + ", ".join(f"try_to_timestamp({value}, {slit(strptime_to_java(x))})" for x in f.formats)
        parsed += ")"
        if t == "date":
            return f"CAST({parsed} AS DATE)"
        if any("%z" in x or "%Z" in x for x in f.formats):
            return parsed
        return f"to_utc_timestamp({parsed}, {slit(f.timezone or 'UTC')})"
    if t == "timestamp" and f.timezone and f.timezone != "UTC":
        return f"to_utc_timestamp({_text_cast(value, t)}, {slit(f.timezone)})"
    if t == "binary":
        if f.encoding == "base64":
            return f"try_to_binary({value}, 'base64')"
        if f.encoding == "hexadecimal":
            return f"try_to_binary({value}, 'hex')"
        return f"CAST({value} AS BINARY)"
    return _text_cast(value, t)


def _describe(f: TypedField) -> str:
    t = f.type
    if f.formats:
        t += " using formats " + ", ".join(f.formats)
    return t


_OPEN = "unable to convert '"


def _quote_to(f: TypedField) -> str:
    return "' to " + _describe(f)


def typing_sql(relation: str, fields: list[TypedField], source: list[tuple[str, str]]) -> str:
    """A SELECT over ``relation`` giving each field typed, plus ``_errors``; ``source`` is the (column, Spark type)
    each field reads, in order."""
    inner: list[str] = []
    typed: list[str] = []
    errors: list[str] = []
    for i, (f, (col, col_type)) in enumerate(zip(fields, source, strict=True)):
        raw = sq(f"__raw{i}")
        is_text = col_type.upper() == "STRING"
        v = sq(col)
        if is_text:
            if f.trim:
                v = f"trim({v})"
            if f.null_values:
                v = f"CASE WHEN {_in(v, f.null_values)} THEN NULL ELSE {v} END"
        inner.append(f"{v} AS {raw}")
        conv = convert(raw, f, from_text=is_text, source_type=col_type)
        value = conv
        if f.null_replacement is not None:
            value = f"coalesce({conv}, {convert(slit(f.null_replacement), f, from_text=True)})"
        typed.append(f"{value} AS {sq(f.name)}")
        msg = f"concat({slit(_OPEN)}, CAST({raw} AS STRING), {slit(_quote_to(f))})"
        if normalize_type(f.type) not in ("string", "json") or not is_text:
            errors.append(
                f"CASE WHEN {raw} IS NOT NULL AND ({conv}) IS NULL "
                f"THEN named_struct('field', {slit(f.name)}, 'message', {msg}) END"
            )
        if not f.nullable and f.null_replacement is None:
            errors.append(
                f"CASE WHEN {raw} IS NULL THEN named_struct('field', {slit(f.name)}, "
                "'message', 'non-nullable field is null') END"
            )
    err = (
        f"CAST(filter(array({', '.join(errors)}), x -> x IS NOT NULL) AS {ERRORS_TYPE})"
        if errors
        else f"CAST(array() AS {ERRORS_TYPE})"
    )
    return f"SELECT {', '.join([*typed, f'{err} AS _errors'])} FROM (SELECT {', '.join(inner)} FROM {relation})"
