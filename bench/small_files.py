"""Small-file throughput: 2 000 CSV files of ~10 KB through 2 workers, on a SQLite and on a
PostgreSQL metastore, in files per second; next to a plain DuckDB baseline on the same files.

    python bench/small_files.py                 # 2 000 files, SQLite and PostgreSQL
    python bench/small_files.py --quick         # 200 files
    python bench/small_files.py --profile       # also py-spy one worker: where the time goes per file

Figures: small_files_per_s_sqlite, small_files_per_s_postgres (target: >= 100 on SQLite), and
small_files_baseline_duckdb_copy_per_s with the ratios to it.

How it is measured:
* The files are generated once (bench/data/small_files/): ~130 rows of ids, timestamps, floats and
  short strings each (~10 KB), every row id unique.
* Per backend, a throw-away project (``tarn init``; the dataset declares its columns; PostgreSQL: a
  fresh database on the server of scripts/postgres.sh, dropped afterwards). All files are first
  registered and queued with ``Lake.ingest(..., process=False)`` (timed on its own: the raw copy,
  checksum and one metastore transaction per file). Then **2 workers = two ``tarn worker --workers 1``
  processes** drain the queue. Two processes rather than one process of two threads: a process
  serialises the commits of one dataset (``IngestService`` holds a per-dataset lock), so two threads
  of one process are one worker for a single dataset. The figure is files / (time from starting
  the workers to the last object committed); it includes the workers' start-up (~1-2 s).
* Baseline: the same files, each through ``COPY (SELECT * FROM read_csv(f)) TO 'f.parquet'`` in
  DuckDB, on 2 threads with one connection each (no typing rules, no quarantine, no table, no
  metastore, no exactly-once): the cost floor of reading and writing the bytes.
* Every run is checked: all objects committed, rows = input rows, no duplicate (_tarn_object_id,
  _tarn_row). ``files_per_s_by_window`` gives the rate for each eighth of the files, in commit
  order: it shows how the per-file cost grows with the number of commits already in the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import COLUMNS, DATA, csv_bytes, init_project, make_batch, save, tarn_cmd, wait_quiet

ROOT = Path(__file__).resolve().parent.parent
WORK = DATA / "small_files"
ROWS_PER_FILE = 130  # ~10 KB of CSV
TARGET = 100.0
DATASET = {"name": "events", "landing": "events/**", "columns": COLUMNS}
INGEST = {
    "workers": 1,
    "poll_interval_seconds": 0.05,
    "visibility_timeout_seconds": 120,
    "max_receives": 5,
}


def make_files(n: int) -> tuple[list[Path], int]:
    folder = WORK / f"input_{n}"
    files = [folder / f"f{i:05d}.csv" for i in range(n)]
    if folder.exists() and all(f.exists() for f in files):
        return files, n * ROWS_PER_FILE
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i, f in enumerate(files):
        f.write_bytes(csv_bytes(make_batch(rng, i * ROWS_PER_FILE, ROWS_PER_FILE)))
    return files, n * ROWS_PER_FILE


def baseline(files: list[Path], threads: int = 2) -> dict[str, Any]:
    out = WORK / "baseline_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    chunks = [files[i::threads] for i in range(threads)]

    def run(chunk: list[Path]) -> None:
        con = duckdb.connect()
        con.execute("SET threads=1")
        for f in chunk:
            con.execute(f"COPY (SELECT * FROM read_csv('{f}')) TO '{out / (f.stem + '.parquet')}' (FORMAT parquet)")
        con.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"files": len(files), "seconds": round(elapsed, 3), "files_per_s": round(len(files) / elapsed, 1)}


# ----------------------------------------------------------------------------------- PostgreSQL
def postgres_server(url: str | None) -> str:
    if url:
        return url
    env_url = os.environ.get("TARN_TEST_POSTGRES_URL")
    if env_url:
        return env_url
    res = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh")], capture_output=True, text=True, check=True)
    return res.stdout.strip().splitlines()[-1]


def pg_admin(server: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------- runs
def child_env(metastore_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_")}
    if metastore_url:
        env["TARN_METASTORE_URL"] = metastore_url
    return env


def open_lake(project: Path, metastore_url: str | None) -> Any:
    from tarn.lake import Lake

    if metastore_url:
        os.environ["TARN_METASTORE_URL"] = metastore_url
    try:
        return Lake(project)
    finally:
        os.environ.pop("TARN_METASTORE_URL", None)


def run_backend(
    backend: str, files: list[Path], rows: int, metastore_url: str | None, max_wait: float, profile: bool
) -> dict[str, Any]:
    from tarn.metastore.objects import COMMITTED, TERMINAL

    project = WORK / f"project_{backend}"
    init_project(project, DATASET, INGEST)
    lake = open_lake(project, metastore_url)
    t0 = time.perf_counter()
    lake.ingest(files, "events", process=False)
    reg_s = time.perf_counter() - t0
    print(f"  {backend}: registered {len(files)} files in {reg_s:.1f}s ({len(files) / reg_s:.0f}/s)", flush=True)
    waited = wait_quiet(max_wait)
    logs = [project / f"worker{i}.err" for i in range(2)]
    outs = [project / f"worker{i}.out" for i in range(2)]
    env = child_env(metastore_url)
    t_start = time.perf_counter()
    workers = []
    for log, out in zip(logs, outs, strict=True):
        with open(log, "wb") as err, open(out, "wb") as std:
            cmd = [*tarn_cmd(), "-p", str(project), "worker", "--workers", "1"]
            workers.append(subprocess.Popen(cmd, stdout=std, stderr=err, env=env))
    spy = None
    profile_path = WORK / f"profile_{backend}.txt"
    if profile:
        exe = shutil.which("py-spy")
        if not exe:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        spy = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(workers[0].pid),
                "--idle",
                "--rate",
                "100",
                "--format",
                "raw",
                "-o",
                str(profile_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    first_commit = None
    while True:
        counts = lake.meta.objects.counts_by_state()
        if first_commit is None and counts.get(COMMITTED):
            first_commit = time.perf_counter() - t_start
        done = sum(v for k, v in counts.items() if k in TERMINAL)
        if done >= len(files):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - t_start
    for w in workers:
        w.terminate()
        w.wait(timeout=120)
    if spy is not None:
        spy.wait(timeout=120)
    processed = [int(o.read_text().split("processed ")[1].split()[0]) for o in outs]
    stderr = "\n".join(log.read_text(errors="replace") for log in logs)
    assert lake.meta.objects.counts_by_state() == {COMMITTED: len(files)}, lake.meta.objects.counts_by_state()
    done_at = sorted(o.updated_at for o in lake.objects(limit=10**7))
    window = max(len(done_at) // 8, 1)
    by_window = {
        # Objects of one micro-batch end in one metastore transaction: a window inside one batch
        # has no duration of its own (None).
        f"{i}-{i + window}": (
            round(window / (done_at[i + window - 1] - done_at[i]), 1)
            if done_at[i + window - 1] - done_at[i] > 1e-3
            else None
        )
        for i in range(0, len(done_at) - window + 1, window)
    }
    data = lake.query("SELECT _tarn_object_id, _tarn_row FROM stage.events").table
    pairs = Counter(zip(data.column(0).to_pylist(), data.column(1).to_pylist(), strict=True))
    assert data.num_rows == rows and len(pairs) == rows, (data.num_rows, len(pairs), rows)
    lake.close()
    result: dict[str, Any] = {
        "files": len(files),
        "rows": rows,
        "workers": "2 processes: tarn worker --workers 1",
        "seconds": round(elapsed, 2),
        "files_per_s": round(len(files) / elapsed, 1),
        "first_commit_after_s": round(first_commit or 0.0, 2),
        "registration_s": round(reg_s, 2),
        "registration_files_per_s": round(len(files) / reg_s, 1),
        "end_to_end_files_per_s": round(len(files) / (elapsed + reg_s), 1),
        "waited_for_quiet_s": round(waited, 1),
        "files_per_s_by_window": by_window,  # the n-th files committed: does the rate hold as the table grows?
        "processed_per_worker": processed,
        "worker_warnings": stderr.count(" WARNING "),
        "worker_errors": stderr.count(" ERROR "),
        "database_is_locked": stderr.lower().count("database is locked"),
    }
    if profile:
        result["profile"] = breakdown(profile_path, processed[0])
    print(f"  {backend}: {len(files)} files in {elapsed:.1f}s = {result['files_per_s']} files/s", flush=True)
    return result


# ------------------------------------------------------------------------------------ profiling
# Where a worker's time goes, by the innermost frame that matches (py-spy raw stacks, --idle).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("DuckDB: new in-memory connection per file", ("connect (tarn/engines/duckdb.py",)),
    ("Delta: open table / replay log", ("DeltaTable.__init__", "is_deltatable")),
    ("Delta: write data file + commit", ("write_deltalake", "RawDeltaTable.write", "merge")),
    ("Delta: history / commit info", ("DeltaTable.history", "transaction_version")),
    ("DuckDB: read + type the CSV", ("to_arrow_reader", "read_next_batch", "DuckDBPyConnection.sql", "fetchall")),
    ("metastore: SQLAlchemy + driver", ("sqlalchemy/", "psycopg/", "sqlite3")),
    ("CSV header sniff / format checks", ("read_csv_header", "detect_format", "check_compressed")),
    ("Arrow / Python glue", ("pyarrow/", "Processor.", "IngestService.")),
]


def breakdown(path: Path, files: int) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    worker_samples = 0
    if not path.exists():
        return {"error": f"no profile at {path}"}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or "WorkerPool._loop" not in stack:
            continue
        count = int(n)
        worker_samples += count
        frames = stack.split(";")
        category = "idle: waiting for a message (poll)"
        if "IngestService.process" in stack or "IngestService.receive" in stack:
            category = "other"
            for frame in reversed(frames):
                hit = next((name for name, keys in CATEGORIES if any(k in frame for k in keys)), None)
                if hit:
                    category = hit
                    break
        totals[category] += count
    seconds = {k: v / 100 for k, v in totals.most_common()}
    files = max(files, 1)
    return {
        "profiled": "one of the two workers, py-spy --idle --rate 100, worker thread only",
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "ms_per_file": {k: round(1000 * v / files, 1) for k, v in seconds.items()},
        "files_of_profiled_worker": files,
        "raw_profile": str(path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 files instead of 2 000")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--postgres-url", default=None, help="server URL (default: scripts/postgres.sh)")
    ap.add_argument("--max-wait", type=float, default=None, help="seconds to wait for a quiet machine")
    ap.add_argument("--profile", action="store_true", help="py-spy one worker; time per file by activity")
    args = ap.parse_args()
    n = args.files or (200 if args.quick else 2000)
    max_wait = args.max_wait if args.max_wait is not None else (10.0 if args.quick else 120.0)
    files, rows = make_files(n)
    sizes = [f.stat().st_size for f in files]
    print(f"{n} files, {rows} rows, mean {sum(sizes) / len(sizes) / 1000:.1f} KB", flush=True)

    wait_quiet(max_wait)
    base = baseline(files)
    print(f"  baseline DuckDB COPY: {base['files_per_s']} files/s", flush=True)
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {
        "files": n,
        "mean_file_bytes": round(sum(sizes) / len(sizes)),
        "baseline_duckdb_copy": base,
        "target_files_per_s_sqlite": TARGET,
    }
    for backend in args.backends.split(","):
        url = None
        dbname = None
        if backend == "postgres":
            server = postgres_server(args.postgres_url)
            dbname = f"bench_small_{uuid.uuid4().hex[:10]}"
            pg_admin(server, f'CREATE DATABASE "{dbname}"')
            from sqlalchemy.engine import make_url

            url = make_url(server).set(database=dbname).render_as_string(hide_password=False)
        try:
            res = run_backend(backend, files, rows, url, max_wait, args.profile)
        finally:
            if dbname:
                pg_admin(server, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        details[backend] = res
        figures[f"small_files_per_s_{backend}"] = res["files_per_s"]
        figures[f"small_files_ratio_vs_duckdb_copy_{backend}"] = round(res["files_per_s"] / base["files_per_s"], 3)
        # Landed to committed, registration (raw copy, checksum, one transaction per file) included.
        figures[f"small_files_end_to_end_per_s_{backend}"] = res["end_to_end_files_per_s"]
    figures["small_files_baseline_duckdb_copy_per_s"] = base["files_per_s"]
    if "sqlite" in details:
        details["target_met_sqlite"] = details["sqlite"]["files_per_s"] >= TARGET
    name = "small_files_quick" if args.quick else "small_files"
    name += "_profiled" if args.profile else ""
    save(name, figures, details)


if __name__ == "__main__":
    main()
