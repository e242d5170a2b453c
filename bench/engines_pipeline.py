"""The same Tarn pipeline on DuckDB and on Apache Spark ``local[2]``, in the same run.

    python bench/engines_pipeline.py            # ≥ 1 GB of orders CSV (generated once, cached in bench/data/)
    python bench/engines_pipeline.py --quick    # ~8 MB in 2 files, under a minute on a quiet machine

The pipeline is ``bench/engines_pipeline.yaml``: orders CSV files read as text → a typing stage (typed columns;
a few bad values per file, quarantined by an expectation) → an SQL join with a customers dimension (CSV) and an
aggregate per customer → a ``merge`` load into ``analytics.customer_stats`` (keys: customer_id). The target is
pre-populated (the same pipeline, run once on DuckDB over a small seed input with half of the customers), so the
measured merge both updates and inserts.

Each engine runs in a child process of its own, on a fresh copy of the seeded project whose ``tarn.yaml`` selects
the engine (``engine: {name: duckdb}`` / ``engine: {name: spark, master: "local[2]", conf: …}``). The Spark child
starts the process's SparkSession first (timed: ``spark_session_start_s``), then runs the pipeline.

Figures:
- ``pipeline_duckdb_s`` / ``pipeline_spark_s``: wall time of ``api.run`` (what ``tarn run`` does: every stage,
  the row counts of every view, the quarantine and merge commits, the run records), start-up excluded.
- ``spark_session_start_s``: ``SparkSession.builder…getOrCreate()`` on ``local[2]`` (JVM start included).
- ``spark_vs_duckdb_time_ratio``: pipeline_spark_s ÷ pipeline_duckdb_s (start-up excluded).
- ``input_mb`` (MB = 10^6 bytes of CSV), ``peak_rss_duckdb_mb`` / ``peak_rss_spark_mb``: the summed RSS of the
  child's process tree (Python + the JVM for Spark), sampled every 50 ms with psutil.

Both runs must leave the same target (row count, schema and a checksum over every row) and the same quarantine
count; the per-stage durations of both runs (the run records, as ``tarn runs show`` prints them) are printed
side by side. Options: ``--repeat N`` (median; the order of the engines alternates), ``--master``, ``--keep``,
``--out FILE``, ``--max-wait S`` (seconds to wait for a quiet machine before each run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest_throughput as it  # its RSS sampler, page-cache warm-up and quiet-machine wait setting
from _common import DATA, MB, busy_cpu_s, machine, save, versions, wait_quiet

BENCH = Path(__file__).resolve().parent
PIPELINE_FILE = BENCH / "engines_pipeline.yaml"
PIPELINE = "engines_pipeline"
TARGET = "analytics.customer_stats"
QUARANTINE = "quarantine.engines_pipeline"
MASTER = "local[2]"
# Spark settings of the benchmark project: no UI, shuffle partitions sized for 2 cores (the default 200 makes
# 200 tiny tasks per aggregate on 2 cores), a driver heap that holds the typed rows of 1 GB of CSV.
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "3g",
}
BATCH = 500_000
_STATUSES = ["new", "paid", "shipped", "returned", "cancelled"]
_CHANNELS = ["web", "app", "store", "phone", "partner"]
_REGIONS = ["north", "south", "east", "west", "central", "islands"]
_SEGMENTS = ["consumer", "smb", "enterprise", "public"]
_T0 = int(np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64))
_YEAR_S = 366 * 86_400
# Bad values injected into the orders (each one makes a typing error, so its row is quarantined).
_BAD = [("customer_id", "C-1042"), ("ordered_at", "2024-02-30 08:00:00"), ("amount", "12,50"), ("quantity", "two")]


# ------------------------------------------------------------------------------------------- the input
def _orders_batch(rng: np.random.Generator, start_id: int, n: int, customers: int, bad_every: int) -> pa.Table:
    """``n`` orders with ids ``start_id``…; about one row in ``bad_every`` gets one unparseable value."""
    ids = np.arange(start_id, start_id + n, dtype=np.int64)
    # 0.2 % of the orders name a customer missing from the dimension (dropped by the inner join)
    cust = rng.integers(1, int(customers * 1.002) + 1, n)
    cols: dict[str, pa.Array] = {
        "order_id": pa.array(ids).cast(pa.string()),
        "customer_id": pa.array(cust).cast(pa.string()),
        "ordered_at": pa.array(_T0 + rng.integers(0, _YEAR_S, n), pa.timestamp("s")).cast(pa.string()),
        "amount": pa.array(np.round(rng.gamma(2.0, 35.0, n) + 1.0, 2)).cast(pa.string()),
        "quantity": pa.array(rng.integers(1, 10, n)).cast(pa.string()),
        "status": pa.array(_STATUSES).take(pa.array(rng.choice(len(_STATUSES), n, p=[0.2, 0.4, 0.3, 0.05, 0.05]))),
        "channel": pa.array(_CHANNELS).take(pa.array(rng.integers(0, len(_CHANNELS), n))),
    }
    if bad_every:
        for name, value in _BAD:
            mask = rng.random(n) < 1.0 / (bad_every * len(_BAD))
            cols[name] = pc.if_else(pa.array(mask), pa.scalar(value), cols[name])
    return pa.table(cols)


def _write_orders(
    path: Path, rows: int, rng: np.random.Generator, start_id: int, customers: int, bad_every: int
) -> None:
    opts = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    writer: pacsv.CSVWriter | None = None
    try:
        for s in range(0, rows, BATCH):
            t = _orders_batch(rng, start_id + s, min(BATCH, rows - s), customers, bad_every)
            if writer is None:
                writer = pacsv.CSVWriter(path, t.schema, write_options=opts)
            writer.write_table(t)
    finally:
        if writer is not None:
            writer.close()


def _write_customers(path: Path, customers: int, rng: np.random.Generator) -> None:
    ids = np.arange(1, customers + 1, dtype=np.int64)
    t = pa.table(
        {
            "customer_id": pa.array(ids),
            "name": pc.binary_join_element_wise("customer ", pa.array(ids).cast(pa.string()), ""),
            "region": pa.array(_REGIONS).take(pa.array(rng.integers(0, len(_REGIONS), customers))),
            "segment": pa.array(_SEGMENTS).take(pa.array(rng.integers(0, len(_SEGMENTS), customers))),
            "signup_date": pa.array((_T0 - rng.integers(0, 5 * _YEAR_S, customers)) // 86_400, pa.int32()).cast(
                pa.date32()
            ),
        }
    )
    pacsv.write_csv(t, path, pacsv.WriteOptions(include_header=True, quoting_style="needed"))


def ensure_input(size_mb: int, files: int) -> dict[str, Any]:
    """The orders files (≥ ``size_mb`` MB in all), the customers dimension and the seed input, generated once
    with a fixed seed: ``bench/data/engines_<size>mb/{full,seed}/``."""
    root = DATA / f"engines_{size_mb}mb"
    meta_file = root / "input.json"
    if meta_file.exists():
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        full = root / "full"
        if sum(p.stat().st_size for p in full.glob("*.csv")) == meta["bytes_total"]:
            print(f"using cached input {root} ({meta['bytes_total'] / MB:.0f} MB, {meta['order_rows']:,} orders)")
            return meta
    if root.exists():
        shutil.rmtree(root)
    full, seed = root / "full", root / "seed"
    full.mkdir(parents=True)
    seed.mkdir()
    t0 = time.perf_counter()
    print(f"generating {root} (≥ {size_mb} MB of orders CSV in {files} files)…", flush=True)
    rows_total = max(20_000, int(size_mb * MB / 64))  # ~66 bytes a row: a little over size_mb (else topped up)
    customers = max(5_000, rows_total // 30)
    bad_every = 20_000 if rows_total > 1_000_000 else 2_000
    rng = np.random.default_rng(20240601)
    _write_customers(full / "customers.csv", customers, rng)
    per_file = -(-rows_total // files)
    for i in range(files):
        _write_orders(full / f"orders_{i}.csv", per_file, rng, i * per_file + 1, customers, bad_every)
    orders_bytes = sum(p.stat().st_size for p in full.glob("orders_*.csv"))
    order_rows, extra = per_file * files, 0
    while orders_bytes < size_mb * MB:  # top up with one more file until the size is reached
        n = int((size_mb * MB - orders_bytes) / 60) + 1000
        _write_orders(full / f"orders_{files + extra}.csv", n, rng, order_rows + 1, customers, 0)
        order_rows, extra = order_rows + n, extra + 1
        orders_bytes = sum(p.stat().st_size for p in full.glob("orders_*.csv"))
    # The seed: orders of the first half of the customers only (the measured merge updates those, inserts the rest)
    _write_orders(seed / "orders_0.csv", customers, rng, 10**12, customers // 2, 0)
    shutil.copy(full / "customers.csv", seed / "customers.csv")
    meta = {
        "bytes_total": sum(p.stat().st_size for p in full.glob("*.csv")),
        "orders_bytes": orders_bytes,
        "order_files": len(list(full.glob("orders_*.csv"))),
        "order_rows": order_rows,
        "customers": customers,
        "bad_every": bad_every,
        "generated_s": round(time.perf_counter() - t0, 1),
    }
    meta_file.write_text(json.dumps(meta, indent=2))
    print(
        f"  {meta['bytes_total'] / MB:.0f} MB, {order_rows:,} orders, {customers:,} customers "
        f"in {meta['generated_s']} s"
    )
    return meta


# ----------------------------------------------------------------------------------------- projects
def _write_project(directory: Path, engine: dict[str, Any], data: Path) -> None:
    doc = {"name": "engines_bench", "lake": {"root": "lake"}, "datasets": [], "engine": engine}
    (directory / "tarn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    link = directory / "data"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(data, target_is_directory=True)


def build_template(root: Path) -> Path:
    """A project with the pipeline and a target seeded by one DuckDB run over the seed input."""
    template = root / "template"
    if template.exists():
        shutil.rmtree(template)
    (template / "pipelines").mkdir(parents=True)
    shutil.copy(PIPELINE_FILE, template / "pipelines" / PIPELINE_FILE.name)
    _write_project(template, {"name": "duckdb"}, root / "seed")
    r = subprocess.run(
        [sys.executable, __file__, "--child", "seed", "--project", str(template)], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"seeding the target failed:\n{r.stdout}\n{r.stderr}")
    return template


def fresh_project(template: Path, directory: Path, engine: dict[str, Any], data: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(template, directory, symlinks=True)
    _write_project(directory, engine, data)
    return directory


def engine_section(name: str, master: str) -> dict[str, Any]:
    if name == "spark":
        return {"name": "spark", "master": master, "conf": dict(SPARK_CONF)}
    return {"name": "duckdb"}


# --------------------------------------------------------------------------------------- child side
def child(engine: str, project: Path) -> None:
    """Run the pipeline once in this process (the seed run too, on DuckDB) and print the timings as one JSON line."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import tarn  # noqa: F401  (deltalake before duckdb)
    from tarn.lake import Lake
    from tarn.pipelines import api

    out: dict[str, Any] = {"engine": engine}
    lake = Lake(project)
    try:
        if engine == "spark":
            from tarn.engines import spark_session

            t0 = time.perf_counter()
            spark_session.get_session(lake.spec.engine.master, dict(lake.spec.engine.conf))
            out["session_start_s"] = time.perf_counter() - t0
            out["session_startup_seconds_recorded"] = spark_session.startup_seconds
        t0 = time.perf_counter()
        result = api.run(lake, PIPELINE)
        out["pipeline_s"] = time.perf_counter() - t0
        out.update(run_id=result.run_id, ok=result.ok, error=result.error, error_stage=result.error_stage)
    finally:
        lake.close()
        if engine == "spark":
            from tarn.engines import spark_session

            t0 = time.perf_counter()
            spark_session.stop_session()
            out["session_stop_s"] = time.perf_counter() - t0
            # The JVM this process started outlives stop() until this process exits, then stays a zombie (nobody
            # reaps it): end it and reap it here.
            for proc in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    if proc.name() == "java":
                        proc.terminate()
                        proc.wait(timeout=30)
    print(json.dumps(out), flush=True)


# -------------------------------------------------------------------------------------- parent side
def warm_cache(directory: Path) -> None:
    for p in sorted(directory.glob("*.csv")):
        it.warm_cache(p)


class TreeSampler(it.RssSampler):
    """Peak summed RSS of a process tree, and the CPU time of every process seen in it (the JVM of a Spark child
    is not a waited-for child of this process: without this, its CPU would count as "other processes")."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(pid, interval)
        self.cpu: dict[int, float] = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error), p.oneshot():
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system  # its own (children are sampled themselves)
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)


def _self_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def run_child(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` after waiting for a quiet machine: wall time, output, peak RSS of its tree, CPU of the tree and
    of the other processes on the machine meanwhile."""
    waited = wait_quiet(it.QUIET["max_wait"])
    busy0, self0 = busy_cpu_s(), _self_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(proc.pid) as sampler:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    tree = sum(sampler.cpu.values())  # the child and its descendants, as last sampled (≤ 50 ms before each exit)
    others = (busy_cpu_s() - busy0) - (_self_cpu_s() - self0) - tree
    return {
        "wall_s": wall,
        "returncode": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "sampled_rss_mb": sampler.peak / MB,
        "cpu_s": tree,
        "waited_for_quiet_s": round(waited, 1),
        "other_processes_cpu_s": round(max(others, 0.0), 2),
    }


def run_engine(engine: str, project: Path, data: Path) -> dict[str, Any]:
    """Run the pipeline on ``engine`` in a child process; wall times, peak RSS of its process tree, the run record."""
    os.sync()  # no write-back of earlier files during the run
    warm_cache(data)
    r = run_child([sys.executable, __file__, "--child", engine, "--project", str(project)])
    lines = [ln for ln in r["stdout"].splitlines() if ln.startswith("{")]
    if r["returncode"] != 0 or not lines:
        raise SystemExit(f"{engine} child failed ({r['returncode']}):\n{r['stdout']}\n{r['stderr'][-4000:]}")
    res = json.loads(lines[-1])
    if not res["ok"]:
        raise SystemExit(f"{engine}: pipeline failed at stage {res['error_stage']!r}: {res['error']}")
    res.update(
        process_wall_s=r["wall_s"],
        peak_rss_mb=r["sampled_rss_mb"],
        cpu_s=r["cpu_s"],
        waited_for_quiet_s=r["waited_for_quiet_s"],
        other_processes_cpu_s=r["other_processes_cpu_s"],
    )
    res["run"] = run_record(project, res["run_id"])
    res["target"] = inspect_tables(project)
    return res


def run_record(project: Path, run_id: str) -> dict[str, Any]:
    """The run and its steps as the metastore recorded them (what ``tarn runs show RUN`` prints)."""
    from tarn.lake import Lake
    from tarn.pipelines import api

    lake = Lake(project)
    try:
        d = api.run_detail(lake, run_id)
    finally:
        lake.close()
    steps = [
        {
            "stage": s["name"],
            "type": s["type"],
            "state": s["state"],
            "duration_s": round(s["duration_s"] or 0.0, 3),
            "rows_in": s.get("rows_in"),
            "rows_out": s.get("rows_out"),
            "expectations": s.get("expectations"),
            "detail": s.get("detail"),
        }
        for s in d["steps"]
    ]
    return {"duration_s": d.get("duration_s"), "strategy": d.get("strategy"), "steps": steps}


def inspect_tables(project: Path) -> dict[str, Any]:
    """Row count, schema and a checksum of the target (every column but Tarn's own), and the quarantine count."""
    import duckdb
    from deltalake import DeltaTable

    from tarn.lake import Lake

    lake = Lake(project)
    try:
        target_uri = lake.storage.table_uri(*TARGET.split("."))
        quarantine_uri = lake.storage.table_uri(*QUARANTINE.split("."))
    finally:
        lake.close()
    dt_ = DeltaTable(target_uri)
    ds = dt_.to_pyarrow_dataset()
    cols = [f.name for f in ds.schema if not f.name.startswith("_tarn")]
    con = duckdb.connect()
    try:
        con.register("t", ds)
        quoted = ", ".join(f'"{c}"' for c in cols)
        row = con.execute(
            f"SELECT count(*), sum(hash({quoted}))::VARCHAR, sum(orders), sum(revenue)::VARCHAR, "
            "count(DISTINCT customer_id) FROM t"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    quarantined = DeltaTable(quarantine_uri).to_pyarrow_dataset().count_rows() if Path(quarantine_uri).exists() else 0
    return {
        "rows": row[0],
        "checksum": row[1],
        "sum_orders": row[2],
        "sum_revenue": row[3],
        "distinct_keys": row[4],
        "schema": [f"{f.name}: {f.type}" for f in ds.schema],
        "version": dt_.version(),
        "quarantine_rows": quarantined,
    }


def stage_table(duck: dict[str, Any], spark: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for a, b in zip(duck["run"]["steps"], spark["run"]["steps"], strict=True):
        rows.append(
            {
                "stage": a["stage"],
                "type": a["type"],
                "duckdb_s": a["duration_s"],
                "spark_s": b["duration_s"],
                "rows_out": a["rows_out"],
            }
        )
    return rows


def print_stages(rows: list[dict[str, Any]], duck: dict[str, Any], spark: dict[str, Any]) -> None:
    print("\nwhere the time goes (run records, seconds per stage):")
    print(f"  {'stage':<14} {'type':<8} {'duckdb':>8} {'spark':>8}  {'rows out':>12}")
    for r in rows:
        n = f"{r['rows_out']:,}" if r["rows_out"] is not None else ""
        print(f"  {r['stage']:<14} {r['type']:<8} {r['duckdb_s']:8.2f} {r['spark_s']:8.2f}  {n:>12}")
    print(
        f"  {'run (record)':<23} {duck['run']['duration_s']:8.2f} {spark['run']['duration_s']:8.2f}"
        f"\n  {'api.run wall':<23} {duck['pipeline_s']:8.2f} {spark['pipeline_s']:8.2f}"
        f"\n  {'process wall':<23} {duck['process_wall_s']:8.2f} {spark['process_wall_s']:8.2f}"
        f"   (spark: session start {spark['session_start_s']:.2f} s, stop {spark.get('session_stop_s', 0):.2f} s)"
    )


def compare(duck: dict[str, Any], spark: dict[str, Any]) -> dict[str, Any]:
    a, b = duck["target"], spark["target"]
    same = {k: a[k] == b[k] for k in ("rows", "checksum", "sum_orders", "sum_revenue", "schema", "quarantine_rows")}
    if not all(same.values()):
        diff = {k: (a[k], b[k]) for k, ok in same.items() if not ok}
        raise SystemExit(f"the engines' results differ: {json.dumps(diff, default=str)}")
    return same


def merge_metrics(res: dict[str, Any]) -> dict[str, Any]:
    detail = res["run"]["steps"][-1].get("detail") or {}
    m = detail.get("metrics") or {}
    return {k: m[k] for k in ("num_target_rows_updated", "num_target_rows_inserted", "num_source_rows") if k in m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~8 MB of orders instead of ≥ 1 GB")
    ap.add_argument("--size-mb", type=int, default=None, help="MB of orders CSV (default 1050, quick 8)")
    ap.add_argument("--files", type=int, default=None, help="orders files (default 4, quick 2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine (median reported; order alternates)")
    ap.add_argument("--master", default=MASTER, help=f"Spark master (default {MASTER})")
    ap.add_argument("--max-wait", type=float, default=None, help="seconds to wait for a quiet machine (120, quick 5)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default bench/results/NAME.json)")
    ap.add_argument("--keep", action="store_true", help="keep the projects in bench/data/")
    ap.add_argument("--child", choices=["duckdb", "spark", "seed"], help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child("duckdb" if args.child == "seed" else args.child, args.project)
        return

    size_mb = args.size_mb or (8 if args.quick else 1050)
    files = args.files or (2 if args.quick else 4)
    it.QUIET["max_wait"] = args.max_wait if args.max_wait is not None else (5.0 if args.quick else 120.0)
    meta = ensure_input(size_mb, files)
    root = DATA / f"engines_{size_mb}mb"
    data = root / "full"
    work = root / "work"
    work.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    template = build_template(root)
    seeded = inspect_tables(template)
    print(f"seeded {TARGET}: {seeded['rows']:,} rows ({time.perf_counter() - t0:.1f} s)", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {"duckdb": [], "spark": []}
    for i in range(args.repeat):
        order = ["duckdb", "spark"] if i % 2 == 0 else ["spark", "duckdb"]
        for engine in order:
            project = fresh_project(template, work / engine, engine_section(engine, args.master), data)
            res = run_engine(engine, project, data)
            runs[engine].append(res)
            extra = f", session start {res['session_start_s']:.2f} s" if engine == "spark" else ""
            print(
                f"[{i + 1}/{args.repeat}] {engine}: pipeline {res['pipeline_s']:.2f} s{extra}, "
                f"peak RSS {res['peak_rss_mb']:.0f} MB; others used {res['other_processes_cpu_s']:.1f} CPU s",
                flush=True,
            )
        compare(runs["duckdb"][-1], runs["spark"][-1])

    duck, spark = runs["duckdb"][-1], runs["spark"][-1]
    stages = stage_table(duck, spark)
    print_stages(stages, duck, spark)
    d_s = statistics.median(r["pipeline_s"] for r in runs["duckdb"])
    s_s = statistics.median(r["pipeline_s"] for r in runs["spark"])
    start_s = statistics.median(r["session_start_s"] for r in runs["spark"])
    t = duck["target"]
    print(
        f"\nsame target on both engines: {t['rows']:,} rows, checksum {t['checksum']}, "
        f"{t['quarantine_rows']} rows quarantined; merge {merge_metrics(duck)}"
    )
    figures = {
        "pipeline_duckdb_s": round(d_s, 3),
        "pipeline_spark_s": round(s_s, 3),
        "spark_session_start_s": round(start_s, 3),
        "spark_vs_duckdb_time_ratio": round(s_s / d_s, 3),
        "input_mb": round(meta["bytes_total"] / MB, 1),
        "peak_rss_duckdb_mb": round(max(r["peak_rss_mb"] for r in runs["duckdb"]), 1),
        "peak_rss_spark_mb": round(max(r["peak_rss_mb"] for r in runs["spark"]), 1),
    }
    details = {
        "mode": "quick" if args.quick else "full",
        "input": {**meta, "path": str(root.relative_to(BENCH.parent))},
        "pipeline": str(PIPELINE_FILE.relative_to(BENCH.parent)),
        "engines": {"duckdb": engine_section("duckdb", args.master), "spark": engine_section("spark", args.master)},
        "how": (
            "each engine runs in a child process on a fresh copy of a project whose target was seeded by one DuckDB "
            "run over half of the customers; pipeline_*_s is the wall time of api.run (= tarn run) in the child, the "
            "Spark session started (and timed) before it; peak RSS is the child's process tree (Python + JVM) "
            "sampled with psutil; with --repeat, medians, the order of the engines alternating"
        ),
        "repeat": args.repeat,
        "stages_last_run": stages,
        "target": {k: v for k, v in t.items() if k != "version"},
        "seeded_target_rows": seeded["rows"],
        "merge_metrics": {"duckdb": merge_metrics(duck), "spark": merge_metrics(spark)},
        "pipeline_s_all": {e: [round(r["pipeline_s"], 3) for r in rs] for e, rs in runs.items()},
        "runs": runs,
        "machine": machine(),
        "versions": {**versions(), "pyspark": _version("pyspark")},
        "load_average_1m": os.getloadavg()[0],
    }
    save("engines_pipeline_quick" if args.quick else "engines_pipeline", figures, details, args.out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(template, ignore_errors=True)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip native libraries' static destructors (DuckDB + delta-rs can abort at exit)
