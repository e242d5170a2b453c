"""Event-to-queryable latency: files of ~1 MB dropped one by one into landing while ``tarn up`` runs;
for each, the time from its close to its rows being visible to a query through the Lake facade
(``Lake.query``, what ``tarn query`` runs).

    python bench/event_latency.py            # 200 files
    python bench/event_latency.py --quick    # 20 files

Figures: event_to_query_p50_s, event_to_query_p99_s. Targets: p50 < 1 s, p99 < 3 s.

How it is measured:
* ``tarn init`` makes a throw-away project in bench/data/; its dataset declares the columns, and
  every file carries a unique ``file_no``. ``tarn up`` runs as a child process with
  ``settle_seconds: 0.2`` and ``poll_interval_seconds: 0.05`` (2 workers, the default).
* A warm-up file (creates the stage table, not counted) goes first. Then each file is written
  into ``lake/landing/events/`` with one write and closed; the close time is taken right after
  ``close()`` returns. By default the next file is dropped as soon as the previous one became
  visible (``--interval S`` drops one every S seconds instead, whatever is still in flight).
* Visibility: every 5 ms the benchmark lists the table's ``_delta_log``; when a commit appears it
  runs ``Lake.query("SELECT file_no, count(*) … WHERE file_no IN (pending) GROUP BY 1")``. A file
  is visible at the *start* of the first such query that returns all of its rows (a query issued
  then shows them); the time until that query *returned* is kept too (``…_returned``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    COLUMNS,
    DATA,
    MB,
    busy_cpu_s,
    csv_bytes,
    init_project,
    make_batch,
    own_cpu_s,
    save,
    tarn_cmd,
    wait_quiet,
)

DATASET = "events"
ROWS_PER_FILE = 11_000  # ~1 MB of CSV
TARGET_P50 = 1.0
TARGET_P99 = 3.0
POLL = 0.005
TIMEOUT = 120.0
_COMMIT = re.compile(r"^\d{20}\.json$")  # a Delta commit (temporary files have other names)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q, method="linear"))


class Harness:
    def __init__(self, project: Path, files: list[bytes]) -> None:
        from tarn.lake import Lake

        self.project = project
        self.files = files
        self.lake = Lake(project)
        self.landing = self.lake.storage.zone("landing") / DATASET
        self.landing.mkdir(parents=True, exist_ok=True)
        self.delta_log = Path(self.lake.storage.table_uri("stage", DATASET)) / "_delta_log"
        self.close_wall: dict[int, float] = {}
        self.queries = 0
        self.query_errors = 0
        self.error_messages: list[str] = []
        self.query_s: list[float] = []

    def drop(self, i: int) -> float:
        """Write file ``i`` into landing and close it; returns the close time (perf_counter)."""
        path = self.landing / f"part-{i:05d}.csv"
        with open(path, "wb") as f:
            f.write(self.files[i])
        t = time.perf_counter()
        self.close_wall[i] = time.time()
        return t

    def commits(self) -> int:
        try:
            return sum(1 for e in os.scandir(self.delta_log) if _COMMIT.match(e.name))
        except FileNotFoundError:
            return 0

    def visible(self, pending: list[int]) -> dict[int, int] | None:
        from tarn.errors import QueryError

        ids = ", ".join(map(str, pending))
        t0 = time.perf_counter()
        try:
            res = self.lake.query(
                f"SELECT file_no, count(*) AS n FROM stage.{DATASET} WHERE file_no IN ({ids}) GROUP BY 1"
            )
        except QueryError as e:  # e.g. the table's first commit is not readable yet
            self.query_errors += 1
            if len(self.error_messages) < 5:
                self.error_messages.append(f"{time.perf_counter():.3f} {str(e).splitlines()[0]}")
            return None
        self.queries += 1
        self.query_s.append(time.perf_counter() - t0)
        return dict(zip(res.table.column("file_no").to_pylist(), res.table.column("n").to_pylist(), strict=True))

    def run(
        self, numbers: list[int], interval: float | None, up: subprocess.Popen[bytes]
    ) -> dict[int, tuple[float, float]]:
        """Drop ``numbers``; returns file_no → (close→visible s, close→query returned s)."""
        pending: dict[int, float] = {}
        done: dict[int, tuple[float, float]] = {}
        todo = list(numbers)
        next_at = time.perf_counter()
        seen = self.commits()  # commits already in the table's log
        while todo or pending:
            now = time.perf_counter()
            if todo and ((interval is None and not pending) or (interval is not None and now >= next_at)):
                i = todo.pop(0)
                pending[i] = self.drop(i)
                next_at = max(next_at + (interval or 0), now)
                continue
            c = self.commits()
            if c != seen and pending:
                seen = c
                t_query = time.perf_counter()
                counts = self.visible(sorted(pending))
                t_back = time.perf_counter()
                if counts is None:
                    seen = c - 1  # query again at the next poll
                    counts = {}
                for i, n in counts.items():
                    if n == ROWS_PER_FILE and i in pending:
                        t_close = pending.pop(i)
                        done[i] = (t_query - t_close, t_back - t_close)
                continue
            oldest = min(pending.values(), default=now)
            if now - oldest > TIMEOUT:
                raise SystemExit(f"files {sorted(pending)} not visible after {TIMEOUT:.0f} s; see the tarn up log")
            if up.poll() is not None:
                raise SystemExit(f"tarn up exited with {up.returncode}; see the tarn up log")
            time.sleep(POLL)
        return done

    def breakdown(self, numbers: list[int]) -> dict[str, Any]:
        """Medians of the phases between close and commit, from the metastore's object trail."""
        by_name = {o.landing_path.rsplit("/", 1)[-1]: o for o in self.lake.objects(dataset=DATASET, limit=100000)}
        phases: dict[str, list[float]] = {
            "close_to_registered_s": [],
            "registered_to_processing_s": [],
            "processing_to_committed_s": [],
            "close_to_committed_state_s": [],
        }
        states: dict[str, int] = {}
        for i in numbers:
            o = by_name.get(f"part-{i:05d}.csv")
            if o is None:
                continue
            states[o.state] = states.get(o.state, 0) + 1
            events = self.lake.object_detail(o.id)["events"]
            t_proc = next((e["at"] for e in events if e["state"] == "processing"), None)
            t_done = next((e["at"] for e in reversed(events) if e["state"].startswith("committed")), None)
            close = self.close_wall[i]
            phases["close_to_registered_s"].append(o.arrived_at - close)
            if t_proc is not None:
                phases["registered_to_processing_s"].append(t_proc - o.arrived_at)
            if t_proc is not None and t_done is not None:
                phases["processing_to_committed_s"].append(t_done - t_proc)
            if t_done is not None:
                phases["close_to_committed_state_s"].append(t_done - close)
        out: dict[str, Any] = {"object_states": states}
        for k, v in phases.items():
            if v:
                out[k] = {"p50": round(statistics.median(v), 4), "p99": round(percentile(v, 99), 4)}
        return out


def _cpu_of(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def start_up(project: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*tarn_cmd(), "--project", str(project), "up"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.time() + 60
    while "watching" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(f"tarn up did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def stop_up(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 files instead of 200")
    ap.add_argument("--files", type=int, default=None, help="number of files (default 200, quick 20)")
    ap.add_argument(
        "--interval",
        type=float,
        default=None,
        help="drop a file every S seconds (default: the next as soon as the previous is visible)",
    )
    ap.add_argument("--profile", action="store_true", help="record tarn up with py-spy (collapsed stacks)")
    ap.add_argument("--max-wait", type=float, default=None, help="seconds to wait for a quiet machine (120, quick 5)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default bench/results/NAME.json)")
    ap.add_argument("--keep", action="store_true", help="keep the throw-away project in bench/data/")
    args = ap.parse_args()
    n = args.files or (20 if args.quick else 200)
    name = "event_latency" + ("_quick" if args.quick else "") + ("_interval" if args.interval else "")
    name += "_profiled" if args.profile else ""

    work = DATA / "latency_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    project = work / "project"
    dataset = {
        "name": DATASET,
        "landing": f"{DATASET}/**",
        "format": "csv",
        "evolution": "freeze",
        "columns": [{"name": "file_no", "type": "long", "nullable": False}, *COLUMNS],
    }
    ingest = {"workers": 2, "settle_seconds": 0.2, "poll_interval_seconds": 0.05}
    init_project(project, dataset, ingest)

    rng = np.random.default_rng(7)
    files = [csv_bytes(make_batch(rng, i * ROWS_PER_FILE, ROWS_PER_FILE, {"file_no": i})) for i in range(n + 1)]
    size_mb = statistics.mean(len(b) for b in files) / MB
    mode = f"one every {args.interval} s" if args.interval else "next after the previous is visible"
    print(f"{n} files of {size_mb:.2f} MB ({ROWS_PER_FILE} rows), dropped {mode}; tarn up in {project}", flush=True)

    waited = wait_quiet(args.max_wait if args.max_wait is not None else (5.0 if args.quick else 120.0))
    log = work / "up.log"
    up = start_up(project, log)
    h = Harness(project, files)
    spy: subprocess.Popen[bytes] | None = None
    profile = DATA / f"{name}_profile.txt"
    if args.profile:
        exe = shutil.which("py-spy")
        if exe is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        cmd = [exe, "record", "--pid", str(up.pid), "--rate", "100", "--format", "raw", "-o", str(profile)]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.perf_counter()
        warm = h.run([0], None, up)[0]
        print(f"  warm-up file (creates the table): {warm[0]:.3f} s", flush=True)
        t1 = time.perf_counter()
        busy0, own0 = busy_cpu_s(), own_cpu_s()
        up_cpu0 = _cpu_of(up.pid)
        lat = h.run(list(range(1, n + 1)), args.interval, up)
        elapsed = time.perf_counter() - t1
        up_cpu = _cpu_of(up.pid) - up_cpu0
        others = (busy_cpu_s() - busy0) - (own_cpu_s() - own0) - up_cpu
        breakdown = h.breakdown(list(range(1, n + 1)))
    finally:
        code = stop_up(up)
        h.lake.close()
        if spy is not None:
            spy.wait(timeout=60)
            print(f"  py-spy profile of tarn up (CPU samples, all threads): {profile}")
    visible = [lat[i][0] for i in sorted(lat)]
    returned = [lat[i][1] for i in sorted(lat)]
    half = len(visible) // 2
    figures = {
        "event_to_query_p50_s": round(statistics.median(visible), 4),
        "event_to_query_p99_s": round(percentile(visible, 99), 4),
    }
    details = {
        "mode": "quick" if args.quick else "full",
        "files": n,
        "file_mb": round(size_mb, 3),
        "rows_per_file": ROWS_PER_FILE,
        "drop": mode,
        "ingest_settings": ingest,
        "warm_up_s": round(warm[0], 4),
        "max_s": round(max(visible), 4),
        "mean_s": round(statistics.mean(visible), 4),
        "first_half_p50_s": round(statistics.median(visible[:half] or visible), 4),
        "second_half_p50_s": round(statistics.median(visible[half:]), 4),
        "event_to_query_returned_p50_s": round(statistics.median(returned), 4),
        "event_to_query_returned_p99_s": round(percentile(returned, 99), 4),
        "queries": h.queries,
        "query_errors": h.query_errors,
        "query_error_messages": h.error_messages,
        "query_p50_s": round(statistics.median(h.query_s), 4),
        "elapsed_s": round(elapsed, 2),
        "files_per_s": round(n / elapsed, 2),
        "phases": breakdown,
        "tarn_up_exit": code,
        "tarn_up_cpu_s": round(up_cpu, 2),
        "waited_for_quiet_s": round(waited, 1),
        "other_processes_cpu_s": round(max(others, 0.0), 2),
        "latencies_s": [round(v, 4) for v in visible],
        "targets": {"event_to_query_p50_s": f"< {TARGET_P50}", "event_to_query_p99_s": f"< {TARGET_P99}"},
        "targets_met": {
            "event_to_query_p50_s": figures["event_to_query_p50_s"] < TARGET_P50,
            "event_to_query_p99_s": figures["event_to_query_p99_s"] < TARGET_P99,
        },
        "total_s": round(time.perf_counter() - t0, 2),
    }
    print(
        f"  p50 {figures['event_to_query_p50_s']:.3f} s, p99 {figures['event_to_query_p99_s']:.3f} s, "
        f"max {details['max_s']:.3f} s; phases (p50): "
        + ", ".join(f"{k} {v['p50']:.3f}" for k, v in breakdown.items() if isinstance(v, dict) and "p50" in v)
    )
    save(name, figures, details, args.out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
