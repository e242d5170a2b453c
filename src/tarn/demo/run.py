"""``tarn demo``: a throw-away project, files landing while the lake is up, and a report."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from tarn.cli.output import first_line
from tarn.demo.data import DEMO_YAML, write_demo_files
from tarn.errors import TarnError
from tarn.lake import Lake
from tarn.metastore import objects as st

SAMPLE_QUERY = """\
SELECT c.city, count(*) AS orders, sum(o.amount) AS revenue
FROM stage.orders o JOIN stage.customers c USING (customer_id)
WHERE o.status <> 'returned'
GROUP BY c.city ORDER BY revenue DESC LIMIT 5"""


# Free text wraps; names, states and numbers stay whole (the report fits an 80-column terminal).
_WRAPS = {"note", "error", "reason"}


def _table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold", no_wrap=c not in _WRAPS)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def run_demo(directory: Path | None, *, keep: bool, console: Console, timeout: float = 50.0) -> None:
    started = time.time()
    base = directory or Path(tempfile.mkdtemp(prefix="tarn-demo-"))
    project = base / "project"
    if project.exists():
        raise TarnError(f"{project} already exists", hint="pass another --dir, or remove it")
    project.mkdir(parents=True)
    (project / "tarn.yaml").write_text(DEMO_YAML)
    lake = Lake(project)
    console.print(f"Tarn demo — project in {project}")
    files = write_demo_files(base / "incoming")
    stop, ready = threading.Event(), threading.Event()
    worker = threading.Thread(target=lake.up, args=(stop,), kwargs={"ready": ready}, name="tarn-up", daemon=True)
    worker.start()
    ready.wait(10)
    try:
        landing = Path(lake.storage.landing_uri(""))  # the demo lake is a local folder
        for f in files:
            dest = landing / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)  # written and closed: the watcher sees IN_CLOSE_WRITE
            console.print(f"  landed {f.parent.name}/{f.name}")
            time.sleep(0.15)
        console.print("waiting for the lake to settle…")
        deadline = time.time() + timeout
        while time.time() < deadline:
            objs = lake.objects(limit=1000)
            if len(objs) >= len(files) and all(o.state in st.TERMINAL for o in objs):
                break
            time.sleep(0.2)
        else:
            console.print("not everything settled before the timeout; showing the current state")
    finally:
        stop.set()
        worker.join(timeout=30)
    _report(lake, console)
    console.print(f"\ndone in {time.time() - started:.1f}s")
    if keep or directory is not None:
        console.print(f"project kept in {project} — try: tarn -p {project} status")
        lake.close()
    else:
        lake.close()
        shutil.rmtree(base, ignore_errors=True)


def _report(lake: Lake, console: Console) -> None:
    objs = sorted(lake.objects(limit=1000), key=lambda o: o.arrived_at)
    console.print()
    console.print(
        _table(
            "Objects",
            ["file", "state", "rows", "quar."],
            [[Path(o.landing_path).name, o.state, o.rows_committed, o.rows_quarantined] for o in objs],
        )
    )
    for o in objs:  # why an object was not committed, under the table: a narrow column would fold it
        if o.error:
            console.print(f"  {Path(o.landing_path).name}: {first_line(o.error, 200)}")
    counts = lake.status().objects
    console.print("by state: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(
        _table(
            "Tables",
            ["table", "rows", "schema version", "Delta version"],
            [[t["name"], t["rows"], t["schema_version"], t["delta_version"]] for t in lake.tables()],
        )
    )
    for t in lake.tables():
        if t["schema_version"] > 1:
            for v in lake.meta.catalog.versions(t["name"])[1:]:
                console.print(f"schema change in {t['name']}: v{v['version']} {v['change']}")
    q_tables = [t["name"] for t in lake.tables() if t["zone"] == "quarantine"]
    rows: list[list[object]] = []
    for name in q_tables:
        res = lake.query(f"SELECT source_file, _tarn_row, reason FROM {name} ORDER BY source_file, _tarn_row")
        rows += [[name.split(".")[1], r["source_file"], r["_tarn_row"], r["reason"]] for r in res.table.to_pylist()]
    console.print(_table("Quarantined rows", ["dataset", "file", "line", "reason"], rows))
    dlq = lake.dlq()
    console.print(
        _table(
            "Dead-letter queue",
            ["message", "object", "receives", "error"],
            [[m.id, (m.object_id or "")[:8], m.receive_count, first_line(m.last_error or "", 160)] for m in dlq],
        )
    )
    try:
        res = lake.query(SAMPLE_QUERY)
        console.print(f"\ntarn query\n{SAMPLE_QUERY}")
        console.print(_table("", res.table.column_names, [list(r.values()) for r in res.table.to_pylist()]))
    except TarnError as e:
        console.print(f"sample query failed: {e}")
