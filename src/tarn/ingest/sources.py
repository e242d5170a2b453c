"""Readers of landed files as DuckDB relations of columns named in lower_snake_case.

CSV and JSON Lines are read as *text* (typing happens afterwards, strictly, row by row);
Parquet keeps its own types. Each source knows how to number its rows so a quarantined row can
be found in the original file (``_tarn_row``: the line number for CSV and JSON Lines, the
1-based row ordinal for Parquet and JSON arrays).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import duckdb
import numpy as np

from tarn.config.spec import CsvOptions
from tarn.engines.duckdb import connect
from tarn.errors import IngestError
from tarn.ingest.formats import compression_of, normalize_columns, read_csv_header
from tarn.ingest.typing import lit, q

MALFORMED_COL = "__malformed"


@dataclass
class Rejected:
    """A record the reader could not split into fields (CSV) or parse (JSON)."""

    line: int
    text: str
    message: str


@dataclass
class Source:
    path: str
    fmt: str
    columns: list[str]
    from_text: bool
    header_lines: int = 0
    rejects: list[Rejected] = field(default_factory=list)
    tolerant: bool = False
    _csv_opts: str = ""

    def relation(self, con: duckdb.DuckDBPyConnection) -> str:
        """SQL (usable after FROM) yielding ``columns`` (+ LINE_COL / MALFORMED_COL for JSON)."""
        raise NotImplementedError

    def has_malformed_column(self) -> bool:
        """Does the relation carry MALFORMED_COL and __text (records that parsed but are not rows)?"""
        return False

    def _csv_relation(self, con: duckdb.DuckDBPyConnection) -> str:
        """read_csv(...) of this file; in tolerant mode malformed records are skipped and recorded."""
        if not self.tolerant:
            return f"read_csv({lit(self.path)}, {self._csv_opts})"
        table = f"rejects_{uuid.uuid4().hex[:8]}"
        scan = f"rejscan_{uuid.uuid4().hex[:8]}"
        rel = (
            f"read_csv({lit(self.path)}, {self._csv_opts}, ignore_errors=true, store_rejects=true, "
            f"rejects_table={lit(table)}, rejects_scan={lit(scan)})"
        )
        if not self.rejects:
            # First pass: find the malformed records (with their line numbers). Every column must be
            # read: a count(*) alone does not decode the fields, so a record with invalid UTF-8 would
            # not be found here and would then be skipped silently by the reading pass.
            try:
                con.sql(f"SELECT count(COLUMNS(*)) FROM {rel}").fetchall()
            except duckdb.Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise IngestError(f"cannot read the file as {self.fmt}: {first}") from None
            rows = con.sql(f"SELECT line, csv_line, error_message FROM {q(table)} ORDER BY line").fetchall()
            seen: set[int] = set()
            for line, text, msg in rows:
                if int(line) not in seen:
                    seen.add(int(line))
                    self.rejects.append(Rejected(int(line), str(text or ""), str(msg)))
        return rel

    def line_numbers(self, start: int, n: int) -> np.ndarray:
        """Line numbers of the data rows with 0-based ordinals start..start+n-1."""
        ordinals = np.arange(start + 1, start + n + 1, dtype=np.int64)
        if not self.rejects:
            return ordinals + self.header_lines
        # Rows skipped as malformed shift the lines of the good rows after them.
        rej = np.array(sorted(r.line for r in self.rejects), dtype=np.int64)
        good_before = rej - self.header_lines - 1 - np.arange(len(rej), dtype=np.int64)
        shift = np.searchsorted(good_before, ordinals, side="left")
        return ordinals + self.header_lines + shift


class CsvSource(Source):
    def __init__(self, path: str, opts: CsvOptions, declared_names: list[str] | None) -> None:
        first = read_csv_header(path, opts)
        if opts.header:
            names = normalize_columns(first)
        elif opts.column_names:
            names = normalize_columns(list(opts.column_names))
        elif declared_names and len(declared_names) == len(first):
            names = list(declared_names)  # mapped by position, as Arc does
        else:
            names = [f"column_{i + 1}" for i in range(len(first))]
        if len(names) != len(first):
            raise IngestError(f"the file has {len(first)} fields per row but {len(names)} column names are configured")
        super().__init__(path, "csv", names, from_text=True, header_lines=1 if opts.header else 0)
        comp = compression_of(path)
        cols = "{" + ", ".join(f"{lit(n)}: 'VARCHAR'" for n in names) + "}"
        parts = [
            f"columns={cols}",
            f"header={'true' if opts.header else 'false'}",
            "auto_detect=false",
            f"delim={lit(opts.delimiter)}",
            f"quote={lit(opts.quote or '')}",
            f"escape={lit(opts.escape or '')}",
            f"nullstr=[{', '.join(lit(v) for v in opts.null_values)}]",
            # A record may be up to 16 MiB; the read buffer stays small whatever the file size
            # (DuckDB sizes it from max_line_size: 64 MiB lines meant a buffer as big as the file).
            "max_line_size=16777216, buffer_size=33554432",
            f"compression={lit(comp or 'none')}",
        ]
        self._csv_opts = ", ".join(parts)

    def relation(self, con: duckdb.DuckDBPyConnection) -> str:
        return self._csv_relation(con)


class JsonLinesSource(Source):
    """Each line a JSON object; an invalid line is a malformed row (quarantined), not a failed file.

    Lines are read by DuckDB's CSV reader as one text column (parallel, decompressing), so bad
    bytes are found with their line numbers like any malformed CSV record. Empty lines are
    skipped by that reader and do not count in ``_tarn_row``."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "jsonl", [], from_text=True)
        comp = compression_of(path)
        self._csv_opts = (
            "columns={'line': 'VARCHAR'}, header=false, auto_detect=false, delim='\x1f', quote='', escape='', "
            f"nullstr='\x1e\x1e', max_line_size=16777216, buffer_size=33554432, compression={lit(comp or 'none')}"
        )
        con = connect()
        self.tolerant = True
        try:
            keys = con.sql(
                f"SELECT DISTINCT unnest(json_keys(j)) AS k FROM ({self._objects(con)}) WHERE j IS NOT NULL"
            ).fetchall()
        except duckdb.Error as e:
            raise IngestError(f"cannot read the file as JSON Lines: {str(e).strip().splitlines()[0]}") from None
        finally:
            self.tolerant = False
            self.rejects.clear()
            con.close()
        raw_keys = sorted(str(k[0]) for k in keys)
        self.key_of = dict(zip(normalize_columns(raw_keys), raw_keys, strict=True))
        self.columns = list(self.key_of)

    def _objects(self, con: duckdb.DuckDBPyConnection) -> str:
        lines = self._csv_relation(con)
        return (
            "SELECT CASE WHEN json_valid(line) AND json_type(line::JSON) = 'OBJECT' THEN line::JSON END AS j, "
            "CASE WHEN NOT json_valid(line) THEN 'invalid JSON' "
            f"WHEN json_type(line::JSON) <> 'OBJECT' THEN 'not a JSON object' END AS {MALFORMED_COL}, "
            f"line FROM {lines}"
        )

    def has_malformed_column(self) -> bool:
        return True

    def relation(self, con: duckdb.DuckDBPyConnection) -> str:
        fields = ", ".join(f"(j ->> {lit('$.' + json_path_key(self.key_of[c]))}) AS {q(c)}" for c in self.columns)
        sep = ", " if fields else ""
        return f"(SELECT {fields}{sep}{MALFORMED_COL}, line AS __text FROM ({self._objects(con)}))"


def json_path_key(key: str) -> str:
    return '"' + key.replace('"', '\\"') + '"'


class JsonArraySource(Source):
    """A JSON document holding an array of objects (or one object)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "json", [], from_text=True)
        con = connect()
        try:
            keys = con.sql(f"SELECT DISTINCT unnest(json_keys(json)) FROM {self._objects()}").fetchall()
        except duckdb.Error as e:
            raise IngestError(f"not a valid JSON document: {str(e).splitlines()[0]}") from None
        finally:
            con.close()
        raw_keys = sorted(str(k[0]) for k in keys)
        self.key_of = dict(zip(normalize_columns(raw_keys), raw_keys, strict=True))
        self.columns = list(self.key_of)

    def _objects(self) -> str:
        comp = lit(compression_of(self.path) or "none")
        return f"read_json_objects({lit(self.path)}, format='auto', compression={comp})"

    def relation(self, con: duckdb.DuckDBPyConnection) -> str:
        fields = ", ".join(f"(json ->> {lit('$.' + json_path_key(self.key_of[c]))}) AS {q(c)}" for c in self.columns)
        return f"(SELECT {fields} FROM {self._objects()})"


class ParquetSource(Source):
    def __init__(self, path: str) -> None:
        super().__init__(path, "parquet", [], from_text=False)
        con = connect()
        try:
            desc = con.sql(f"DESCRIBE SELECT * FROM read_parquet({lit(path)})").fetchall()
        except duckdb.Error as e:
            raise IngestError(f"not a readable Parquet file: {str(e).splitlines()[0]}") from None
        finally:
            con.close()
        raw = [str(r[0]) for r in desc]
        self.types = {n: str(r[1]) for n, r in zip(normalize_columns(raw), desc, strict=True)}
        self.raw_of = dict(zip(normalize_columns(raw), raw, strict=True))
        self.columns = list(self.raw_of)

    def relation(self, con: duckdb.DuckDBPyConnection) -> str:
        fields = ", ".join(f"{q(self.raw_of[c])} AS {q(c)}" for c in self.columns)
        return f"(SELECT {fields} FROM read_parquet({lit(self.path)}))"


def open_source(path: str, fmt: str, csv_opts: CsvOptions, declared_names: list[str] | None) -> Source:
    if fmt == "csv":
        return CsvSource(path, csv_opts, declared_names)
    if fmt == "jsonl":
        return JsonLinesSource(path)
    if fmt == "json":
        return JsonArraySource(path)
    if fmt == "parquet":
        return ParquetSource(path)
    raise IngestError(f"unsupported format {fmt!r}")
