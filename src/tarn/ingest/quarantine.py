"""The quarantine table's rows: its schema and the helpers that build a row's reason and record."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

QUARANTINE_SCHEMA = pa.schema(
    [
        ("_tarn_object_id", pa.string()),
        ("_tarn_row", pa.int64()),
        ("source_file", pa.string()),
        ("reason", pa.string()),
        ("errors", pa.list_(pa.struct([("field", pa.string()), ("message", pa.string())]))),
        ("record", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def fmt_error(e: dict[str, str | None]) -> str:
    return f"{e['field']}: {e['message']}" if e["field"] else str(e["message"])


def loads_record(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def now_us() -> int:
    import time

    return int(time.time() * 1_000_000)


def reject_row(object_id: str, name: str, line: int, text: str, message: str) -> pa.Table:
    return pa.table(
        {
            "_tarn_object_id": [object_id],
            "_tarn_row": [line],
            "source_file": [name],
            "reason": [f"malformed record: {message}"],
            "errors": [[{"field": None, "message": f"malformed record: {message}"}]],
            "record": [text.rstrip("\r\n")],
            "quarantined_at": pa.array([now_us()], pa.int64()).cast(QUARANTINE_SCHEMA.field("quarantined_at").type),
        },
        schema=QUARANTINE_SCHEMA,
    )
