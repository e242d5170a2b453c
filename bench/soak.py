"""Soak: files keep landing while ``tarn up`` and two ``tarn worker`` processes are SIGKILLed at
random moments and restarted, again and again; afterwards nothing may be lost or duplicated.

    python bench/soak.py            # 1 000 files, >= 50 kills (SQLite metastore)
    python bench/soak.py --quick    # 100 files, >= 10 kills
    python bench/soak.py --postgres # the same on a fresh PostgreSQL database (scripts/postgres.sh)

Figures: soak_files, soak_kills, soak_lost, soak_duplicated (targets: 0 lost, 0 duplicated).

How it runs:
* A throw-away project (bench/data/soak/) with two datasets: ``events`` (appends; 90% of the files,
  20 rows each) and ``accounts`` (primary key ``id``, upserts in landing order; 10%, 8 keys each).
  Visibility timeout 2 s, so what a killed worker held comes back quickly; ``max_receives`` is
  high, because a kill is not the file's fault.
* Three processes run: ``tarn up --workers 1`` (watcher, registration, one worker) and two
  ``tarn worker --workers 1``. Files are written into landing in small batches while they run.
* A killer sleeps 0.3-3 s, SIGKILLs one of the three at random (no handler runs) and restarts it at
  once, until every file has landed and the kill target is reached. Then everything is left to
  settle and stopped with SIGTERM.
* Checks: every landed file is exactly one object, committed (lost = files without a committed
  object); duplicated = extra objects for one file + stage rows whose (_tarn_object_id, _tarn_row)
  repeats + objects whose token is in more than one commit + accounts keys held twice. The
  accounts table must hold, per key, the version of the last file that carried it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, save, tarn_cmd

ROOT = Path(__file__).resolve().parent.parent
WORK = DATA / "soak"
EVENTS = {
    "name": "events",
    "landing": "events/**",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "v", "type": "double"},
        {"name": "s", "type": "string"},
    ],
}
ACCOUNTS = {
    "name": "accounts",
    "landing": "accounts/**",
    "primary_key": ["id"],
    "columns": [
        {"name": "id", "type": "long"},
        {"name": "version", "type": "long"},
        {"name": "name", "type": "string"},
    ],
}
INGEST = {
    "workers": 1,
    "settle_seconds": 0.1,
    "poll_interval_seconds": 0.05,
    "scan_interval_seconds": 0.5,
    "visibility_timeout_seconds": 2,
    "max_receives": 1000,
    "backoff": {"base_seconds": 0.05, "max_seconds": 0.5, "jitter": 0},
}
EVENT_ROWS, ACCOUNT_ROWS, ACCOUNT_KEYS = 20, 8, 200


class Procs:
    """The three Tarn processes; any of them can be killed and restarted."""

    ROLES = ("up", "worker-a", "worker-b")

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.project, self.env = project, env
        self.logs = project / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0

    def start(self, role: str) -> None:
        args = ["up", "--workers", "1"] if role == "up" else ["worker", "--workers", "1"]
        self.starts += 1
        with open(self.logs / f"{self.starts:04d}-{role}.err", "wb") as err:
            self.procs[role] = subprocess.Popen(
                [*tarn_cmd(), "-p", str(self.project), *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )

    def kill(self, role: str) -> None:
        p = self.procs[role]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)

    def stop_all(self) -> list[int]:
        codes = []
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                codes.append(p.wait(timeout=120))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(-9)
        return codes

    def stderr(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.logs.glob("*.err")))


def write_file(landing: Path, i: int, rng: random.Random) -> tuple[str, int, list[tuple[int, int]] | None]:
    """The i-th file: (landing path, rows, accounts' (key, version) or None)."""
    if i % 10 == 9:
        rel = f"accounts/a_{i:05d}.csv"
        keys = rng.sample(range(ACCOUNT_KEYS), ACCOUNT_ROWS)
        text = "id,version,name\n" + "".join(f"{k},{i},key {k} v{i}\n" for k in keys)
        pairs: list[tuple[int, int]] | None = [(k, i) for k in keys]
        rows = ACCOUNT_ROWS
    else:
        rel = f"events/e_{i:05d}.csv"
        text = "id,v,s\n" + "".join(f"{i * 100 + j},{rng.random():.5f},row {j}\n" for j in range(EVENT_ROWS))
        pairs, rows = None, EVENT_ROWS
    tmp = landing / (rel + ".part")  # written aside, renamed into place: the usual atomic landing
    tmp.write_text(text)
    os.replace(tmp, landing / rel)
    return rel, rows, pairs


def open_lake(project: Path, url: str | None) -> Any:
    from tarn.lake import Lake

    if url:
        os.environ["TARN_METASTORE_URL"] = url
    try:
        return Lake(project)
    finally:
        os.environ.pop("TARN_METASTORE_URL", None)


def verify(lake: Any, files: dict[str, int], accounts: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    from deltalake import DeltaTable

    from tarn.metastore.objects import COMMITTED
    from tarn.tables import delta

    objs = lake.objects(limit=10_000_000)
    by_path: dict[str, list[Any]] = {}
    for o in objs:
        by_path.setdefault(o.landing_path, []).append(o)
    committed = {p for p, v in by_path.items() if any(o.state == COMMITTED for o in v)}
    lost = sorted(set(files) - committed)
    extra_objects = sum(len(v) - 1 for p, v in by_path.items() if p in files)
    ids = {p: v[0].id for p, v in by_path.items() if p in files}

    ev_uri = lake.storage.table_uri("stage", "events")
    ev = DeltaTable(ev_uri).to_pyarrow_table(columns=["_tarn_object_id", "_tarn_row"])
    pairs = Counter(zip(ev.column(0).to_pylist(), ev.column(1).to_pylist(), strict=True))
    dup_rows = sum(n - 1 for n in pairs.values() if n > 1)
    per_obj = Counter(ev.column(0).to_pylist())
    wrong_counts = {p: per_obj.get(ids.get(p, ""), 0) for p, n in files.items() if p.startswith("events/")}
    wrong_counts = {p: n for p, n in wrong_counts.items() if n != files[p]}

    token_dups = 0
    for table in ("events", "accounts"):
        uri = lake.storage.table_uri("stage", table)
        tokens = Counter(t for h in DeltaTable(uri).history() for t in delta.tokens_of(h))
        token_dups += sum(n - 1 for n in tokens.values() if n > 1)

    acc = DeltaTable(lake.storage.table_uri("stage", "accounts")).to_pyarrow_table(columns=["id", "version"])
    keys = Counter(acc.column("id").to_pylist())
    dup_keys = sum(n - 1 for n in keys.values() if n > 1)
    order = sorted(accounts, key=lambda p: by_path[p][0].arrived_at if p in by_path else 0.0)
    expected: dict[int, int] = {}
    for rel in order:
        for k, v in accounts[rel]:
            expected[k] = v
    actual = dict(zip(acc.column("id").to_pylist(), acc.column("version").to_pylist(), strict=True))
    wrong_versions = {k: (actual.get(k), v) for k, v in expected.items() if actual.get(k) != v}
    queue = lake.meta.queue.depth("ingest")
    return {
        "objects": len(objs),
        "states": dict(Counter(o.state for o in objs)),
        "lost": lost,
        "extra_objects": extra_objects,
        "duplicated_rows": dup_rows,
        "duplicated_commits": token_dups,
        "duplicated_keys": dup_keys,
        "events_files_with_wrong_row_count": wrong_counts,
        "accounts_keys_with_wrong_version": wrong_versions,
        "queue_after": queue,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 files, >= 10 kills")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--kills", type=int, default=None)
    ap.add_argument("--postgres", action="store_true", help="PostgreSQL metastore (fresh database)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    n_files = args.files or (100 if args.quick else 1000)
    min_kills = args.kills or (10 if args.quick else 50)
    rng = random.Random(args.seed)

    project = WORK / ("project_pg" if args.postgres else "project")
    shutil.rmtree(project, ignore_errors=True)
    subprocess.run([*tarn_cmd(), "init", str(project)], check=True, capture_output=True)
    import yaml

    doc = yaml.safe_load((project / "tarn.yaml").read_text())
    doc["ingest"] = INGEST
    doc["datasets"] = [EVENTS, ACCOUNTS]
    (project / "tarn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    url = server = dbname = None
    if args.postgres:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        server = (
            os.environ.get("TARN_TEST_POSTGRES_URL")
            or subprocess.run(
                ["bash", str(ROOT / "scripts" / "postgres.sh")], capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        dbname = f"bench_soak_{uuid.uuid4().hex[:10]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{dbname}"'))
        url = make_url(server).set(database=dbname).render_as_string(hide_password=False)
    lake = open_lake(project, url)
    landing = lake.storage.zone("landing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_")}
    if url:
        env["TARN_METASTORE_URL"] = url
    procs = Procs(project, env)
    for role in Procs.ROLES:
        procs.start(role)

    files: dict[str, int] = {}
    accounts: dict[str, list[tuple[int, int]]] = {}
    kills: Counter[str] = Counter()
    kill_log: list[dict[str, Any]] = []
    t0 = time.monotonic()
    next_kill = t0 + rng.uniform(2.0, 4.0)  # let the first start-up finish
    i = 0
    print(f"soak: {n_files} files, >= {min_kills} kills ({'PostgreSQL' if url else 'SQLite'})", flush=True)
    try:
        while i < n_files or sum(kills.values()) < min_kills:
            now = time.monotonic()
            if i < n_files:
                for _ in range(min(10, n_files - i)):
                    rel, rows, pairs = write_file(landing, i, rng)
                    files[rel] = rows
                    if pairs is not None:
                        accounts[rel] = pairs
                    i += 1
            if now >= next_kill:
                role = rng.choice(Procs.ROLES)
                procs.kill(role)
                kills[role] += 1
                kill_log.append({"t": round(now - t0, 2), "role": role, "objects": len(lake.objects(limit=10**7))})
                procs.start(role)
                next_kill = now + rng.uniform(0.3, 3.0)
                if sum(kills.values()) % 10 == 0:
                    print(f"  {sum(kills.values())} kills, {i} files landed, {now - t0:.0f}s", flush=True)
            time.sleep(0.25)
        print(f"  kills done ({dict(kills)}); settling…", flush=True)
        deadline = time.monotonic() + 1800
        from tarn.metastore.objects import TERMINAL

        while True:
            objs = lake.objects(limit=10**7)
            depth = lake.meta.queue.depth("ingest")
            registered = {o.landing_path for o in objs}
            if (
                set(files) <= registered
                and all(o.state in TERMINAL for o in objs)
                and depth["ready"] == depth["inflight"] == 0
            ):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"not settled after 30 min: {lake.status().to_dict()}")
            time.sleep(0.5)
        settled_s = time.monotonic() - t0
        codes = procs.stop_all()
        result = verify(lake, files, accounts)
        stderr = procs.stderr()
    finally:
        for p in procs.procs.values():
            if p.poll() is None:
                p.kill()
        lake.close()
        if dbname and server:
            from sqlalchemy import create_engine, text

            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    lost = len(result["lost"])
    duplicated = (
        result["extra_objects"] + result["duplicated_rows"] + result["duplicated_commits"] + result["duplicated_keys"]
    )
    figures = {
        "soak_files": len(files),
        "soak_kills": sum(kills.values()),
        "soak_lost": lost,
        "soak_duplicated": duplicated,
    }
    details = {
        "metastore": "postgresql" if url else "sqlite",
        "kills_by_process": dict(kills),
        "seconds_to_settle": round(settled_s, 1),
        "exit_codes_after_sigterm": codes,
        "verification": result,
        "raw_tmp_leftovers": len(list((lake.storage.zone("raw") / ".tmp").iterdir())),
        "stderr_database_is_locked": stderr.lower().count("database is locked"),
        "stderr_tracebacks": stderr.count("Traceback"),
        "kill_log": kill_log,
    }
    name = "soak_quick" if args.quick else "soak"
    name += "_postgres" if url else ""
    save(name, figures, details)
    if lost or duplicated or result["accounts_keys_with_wrong_version"] or result["events_files_with_wrong_row_count"]:
        raise SystemExit("soak FAILED: see the details above")


if __name__ == "__main__":
    main()
