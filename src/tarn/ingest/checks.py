"""Pieces of the typing query both engines build (the per-column check flags), and the two Arrow columns
every good batch gets, built from buffers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tarn.config.spec import ColumnSpec


@dataclass(frozen=True)
class Check:
    """One per-row rule: a flag column and how to describe a failure."""

    flag: str
    field: str | None
    kind: str  # type | null | constraint | malformed
    detail: str


def column_checks(
    i: int,
    c: ColumnSpec,
    raw: str,
    cast: str,
    *,
    pk: set[str],
    present: set[str],
    typed: list[str],
    checks: list[Check],
) -> None:
    """The check flags of target column ``i`` (``raw``: its quoted text column, ``cast``: its typed value),
    the same SQL on DuckDB and Spark: a type error where a value did not convert, a null error where a
    non-nullable or key column is empty or missing. Appended to ``typed`` and ``checks``."""
    if c.type not in ("string", "json"):
        flag = f"__t{i}"
        typed.append(f"({raw} IS NOT NULL AND ({cast}) IS NULL) AS {flag}")
        checks.append(Check(flag, c.name, "type", c.type))
    if not c.nullable or c.name in pk:
        flag = f"__n{i}"
        typed.append(f"({raw} IS NULL) AS {flag}")
        what = "primary key column" if c.name in pk else "non-nullable column"
        detail = "missing from the file" if c.name not in present else "empty"
        checks.append(Check(flag, c.name, "null", f"{what} is {detail}"))


# The two columns every good batch gets are built from buffers: ``pa.array``/``pa.repeat`` would do, but
# the first conversion of Python objects in a process imports pandas (~0.25 s of every ``tarn ingest``).
def int64_array(values: np.ndarray) -> pa.Array:
    """An int64 numpy array as an Arrow array, without a copy."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def repeat_string(value: str, n: int) -> pa.Array:
    """``value`` ``n`` times, as an Arrow string array."""
    data = value.encode()
    if len(data) * n >= 2**31:  # past 32-bit offsets
        return pa.repeat(value, n)
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(data))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
