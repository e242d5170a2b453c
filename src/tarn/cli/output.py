"""One output interface for the CLI: Rich tables for people, JSON / CSV for machines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


# No markup: file names, SQL and error texts are printed as they are ("[draft].csv" stays).
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def _default(o: Any) -> Any:
    if isinstance(o, dt.datetime | dt.date | dt.time):
        return o.isoformat()
    return str(o)


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def emit_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: Format,
    title: str | None = None,
    *,
    below: str | None = None,
    below_title: str = "",
) -> None:
    """Rows as a Rich table, or as JSON / CSV. ``below``: a long free-text column (an error) that a table
    cannot show in a narrow terminal without folding every column; in table form it is printed under the
    table instead, one entry per row that has it, keyed by the row's first column (JSON / CSV keep it)."""
    if fmt == Format.json:
        emit_json([{c: r.get(c) for c in columns} for r in rows])
        return
    if fmt == Format.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in columns])
        sys.stdout.write(buf.getvalue())
        return
    shown = [c for c in columns if c != below]
    # Light rules, no side borders: a 100-column terminal shows an object listing without folding ids.
    t = Table(title=title, show_lines=False, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, c in enumerate(shown):
        t.add_column(c, overflow="fold", no_wrap=i == 0)  # the first column is the key: never folded
    for r in rows:
        t.add_row(*["" if r.get(c) is None else _cell(r.get(c)) for c in shown])
    console.print(t)
    notes = [(_cell(r.get(shown[0])), _cell(r[below])) for r in rows if below and r.get(below)]
    if notes:
        console.print(Text(f"{below}s{below_title}:", style="bold"))
        for key, text in notes:
            console.print(Text(f"  {key}  ") + Text(first_line(text)))


def first_line(text: str, limit: int = 160) -> str:
    """The first line of a text, cut at ``limit`` characters; "…" marks that more was left out."""
    lines = text.strip().splitlines() or [""]
    first = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 1]
    return first + (" …" if first != text.strip() else "")


def _cell(v: Any) -> str:
    if isinstance(v, dict | list):
        return json.dumps(v, default=_default)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat()
    return str(v)


def kv(title: str, pairs: dict[str, Any]) -> None:
    t = Table(title=title, show_header=False, header_style="bold")
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in pairs.items():
        t.add_row(k, "" if v is None else _cell(v))
    console.print(t)
