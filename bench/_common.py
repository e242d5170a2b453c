"""Shared helpers of the benchmarks: generated data, throw-away Tarn projects, results files."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data"  # git-ignored: generated inputs and throw-away projects
RESULTS = BENCH / "results"
MB = 1_000_000  # figures in MB are 10^6 bytes

# The generated rows: ids, timestamps, floats, short strings (and a file number for latency runs).
COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "long", "nullable": False},
    {"name": "event_time", "type": "timestamp"},
    {"name": "user_id", "type": "long"},
    {"name": "amount", "type": "double"},
    {"name": "score", "type": "double"},
    {"name": "country", "type": "string"},
    {"name": "status", "type": "string"},
    {"name": "tag", "type": "string"},
]
_COUNTRIES = ["DE", "FR", "GB", "US", "NL", "SE", "ES", "IT", "PL", "JP", "BR", "IN"]
_STATUSES = ["new", "paid", "shipped", "returned", "cancelled"]
_T0_US = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def _vocabulary(rng: np.random.Generator, n: int = 4096) -> pa.Array:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lengths = rng.integers(4, 13, n)
    words = [letters[rng.integers(0, 26, k)].tobytes().decode() for k in lengths]
    return pa.array(words, pa.string())


def make_batch(rng: np.random.Generator, start_id: int, n: int, extra: dict[str, Any] | None = None) -> pa.Table:
    """``n`` rows with ids ``start_id``…; vectorised (numpy + Arrow ``take``), no per-row Python."""
    vocab = _vocabulary(rng)
    ids = np.arange(start_id, start_id + n, dtype=np.int64)
    ts = _T0_US + ids * 250_000 + rng.integers(0, 250_000, n)  # ~4 rows a second, in order
    cols: dict[str, pa.Array] = {}
    if extra:
        for k, v in extra.items():
            cols[k] = pa.array(np.full(n, v))
    cols.update(
        {
            "id": pa.array(ids),
            "event_time": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "user_id": pa.array(rng.integers(1, 5_000_000, n)),
            "amount": pa.array(np.round(rng.gamma(2.0, 40.0, n), 2)),
            "score": pa.array(rng.random(n)),
            "country": pa.array(_COUNTRIES).take(pa.array(rng.integers(0, len(_COUNTRIES), n))),
            "status": pa.array(_STATUSES).take(pa.array(rng.integers(0, len(_STATUSES), n))),
            "tag": vocab.take(pa.array(rng.integers(0, len(vocab), n))),
        }
    )
    return pa.table(cols)


def write_csv(path: Path, target_bytes: int, *, batch_rows: int = 1_000_000, seed: int = 42) -> tuple[int, int]:
    """Write a CSV of at least ``target_bytes`` (header + rows); returns (bytes, rows)."""
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    rows = 0
    opts = pacsv.WriteOptions(include_header=True, quoting_style="none")
    first = make_batch(rng, 0, batch_rows)
    with pacsv.CSVWriter(tmp, first.schema, write_options=opts) as w:
        w.write_table(first)
        rows += first.num_rows
        while tmp.stat().st_size < target_bytes:
            t = make_batch(rng, rows, batch_rows)
            w.write_table(t)
            rows += t.num_rows
    os.replace(tmp, path)
    return path.stat().st_size, rows


def csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=True, quoting_style="none"))
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------------- Tarn projects
def tarn_cmd() -> list[str]:
    exe = shutil.which("tarn")
    return [exe] if exe else [sys.executable, "-m", "tarn.cli.main"]


def init_project(directory: Path, dataset: dict[str, Any], ingest: dict[str, Any] | None = None) -> None:
    """``tarn init DIR``, then declare the benchmark's dataset (and ingest settings) in tarn.yaml."""
    if directory.exists():
        shutil.rmtree(directory)
    subprocess.run([*tarn_cmd(), "init", str(directory)], check=True, capture_output=True, text=True)
    path = directory / "tarn.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["datasets"] = [dataset]
    if ingest:
        doc["ingest"] = {**doc.get("ingest", {}), **ingest}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# ------------------------------------------------------------------- a quiet machine
# Other work on the machine (test suites, other benchmarks) skews timings on 2 cores: wait for a
# quiet moment before each timed run, and record how much CPU others used during it.
def wait_quiet(max_wait: float = 300.0, busy_pct: float = 20.0, quiet_s: int = 3) -> float:
    """Wait until system-wide CPU use stays under ``busy_pct`` for ``quiet_s`` seconds; returns the wait."""
    import psutil

    t0 = time.perf_counter()
    calm = 0
    while calm < quiet_s and time.perf_counter() - t0 < max_wait:
        calm = calm + 1 if psutil.cpu_percent(interval=1.0) < busy_pct else 0
    waited = time.perf_counter() - t0
    if calm < quiet_s:
        print(f"  (machine still busy after {waited:.0f} s; measuring anyway)", flush=True)
    return waited


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy so far."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(v for k, v in t._asdict().items() if k not in ("idle", "iowait", "guest", "guest_nice")))


def own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# ---------------------------------------------------------------------------- results
def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
        f"{mem:.1f} GiB RAM, Python {platform.python_version()}"
    )


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("tarn", "duckdb", "deltalake", "pyarrow")}


def command_line() -> str:
    rel = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        rel = rel.relative_to(Path.cwd())
    return shlex.join(["python", str(rel), *sys.argv[1:]])


def tarn_source() -> dict[str, Any]:
    """Which Tarn was measured: the commit, and the files of src/ that differ from it."""
    import tarn

    src = Path(tarn.__file__).resolve().parent.parent
    out: dict[str, Any] = {"package": str(Path(tarn.__file__).resolve().parent)}
    try:
        git = ["git", "--no-optional-locks", "-C", str(src)]
        out["commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True).stdout
        out["uncommitted_src_files"] = sorted(line[3:] for line in status.splitlines())
    except OSError:
        pass
    return out


def save(name: str, figures: dict[str, Any], details: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``bench/results/NAME.json`` (or ``out``) and print the figures."""
    out = out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "figures": figures,
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": versions(),
        "tarn_source": tarn_source(),
        "niceness": os.nice(0),  # the scheduling priority the benchmark (and its children) ran at
        "details": details,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"figures": figures}, indent=2))
    print(f"wrote {out}")
    return out
