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

from rich.console import Console
from rich.table import Table


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


def emit_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: Format, title: str | None = None) -> None:
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
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if r.get(c) is None else _cell(r.get(c)) for c in columns])
    console.print(t)


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
