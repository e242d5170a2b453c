"""MERGE and SCD2 through Tarn pipelines, next to the same merge done directly with delta-rs, in the same run.

    python bench/merge_bench.py            # 100k changed rows (50k updates, 50k inserts) into a 10M-row table
    python bench/merge_bench.py --quick    # the same into a 1M-row table (under a minute)

Figures:
- ``merge_s``: ``tarn run`` of a pipeline ``extract stage.changes → load merge (keys: id)`` (API call, whole run:
  DuckDB, metastore records, row counts, the Delta commit, the catalog), wall time.
- ``merge_direct_deltars_s``: ``DeltaTable.merge(changes, "target.id = source.id").when_matched_update_all()
  .when_not_matched_insert_all().execute()`` on an identical copy of the table (the changes read to Arrow first,
  inside the timing), same writer properties.
- ``merge_ratio_vs_deltars``: merge_s ÷ merge_direct_deltars_s (target ≤ 1.5).
- ``scd2_s``: ``load mode: scd2`` (keys id; tracked: amount, status) of the same 100k rows (50k with a tracked
  change, 50k new keys) into a 10M-row table with valid_from / valid_to / is_current; ``scd2_ratio_vs_merge``.

Each measurement runs on a fresh copy of the target (copied and flushed to disk before the clock starts); with
``--repeat N`` the median of N is reported, Tarn and delta-rs alternating which goes first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

import tarn  # noqa: F401  (deltalake before duckdb)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deltalake import DeltaTable, write_deltalake

from _common import DATA, make_batch, save
from tarn.lake import Lake
from tarn.pipelines import api
from tarn.tables.delta import WRITER

BATCH = 1_000_000
CHANGED = 100_000
TARGET_RATIO = 1.5


def build_base(path: Path, rows: int, *, scd2: bool) -> None:
    """The target table: ``rows`` rows in files of 1M (cached: built once per size)."""
    marker = path / ".complete"
    if marker.exists():
        return
    if path.exists():
        shutil.rmtree(path)
    rng = np.random.default_rng(7)
    for start in range(0, rows, BATCH):
        t = make_batch(rng, start, min(BATCH, rows - start))
        if scd2:
            n = t.num_rows
            t = t.append_column("valid_from", pa.array(np.full(n, 0), pa.int64()).cast(pa.timestamp("us", tz="UTC")))
            t = t.append_column("valid_to", pa.nulls(n, pa.timestamp("us", tz="UTC")))
            t = t.append_column("is_current", pa.array(np.ones(n, dtype=bool)))
        write_deltalake(str(path), t, mode="append", writer_properties=WRITER)
    marker.write_text("ok")


def changes(rows: int) -> pa.Table:
    """50k updates of existing ids (amount and status changed) and 50k new ids."""
    rng = np.random.default_rng(11)
    half = CHANGED // 2
    upd_ids = np.sort(rng.choice(rows, half, replace=False)).astype(np.int64)
    base = make_batch(np.random.default_rng(7), 0, 1)  # schema only
    upd = make_batch(rng, 0, half)
    upd = upd.set_column(upd.schema.get_field_index("id"), "id", pa.array(upd_ids))
    upd = upd.set_column(upd.schema.get_field_index("amount"), "amount", pc.add(upd.column("amount"), 1000.0))
    upd = upd.set_column(upd.schema.get_field_index("status"), "status", pa.array(["changed"] * half))
    new = make_batch(rng, rows, half)
    return pa.concat_tables([upd, new]).cast(base.schema)


def fresh_copy(src: Path, dst: Path) -> None:
    """An identical copy of the target, flushed to disk (so write-back does not run during the timing)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".complete"))
    os.sync()


def project(root: Path) -> Lake:
    if root.exists():
        shutil.rmtree(root)
    (root / "pipelines").mkdir(parents=True)
    (root / "tarn.yaml").write_text("name: merge_bench\nlake: {root: lake}\ndatasets: []\n")
    docs: list[dict[str, Any]] = [
        {
            "name": "bench_merge",
            "stages": [
                {"type": "extract", "name": "changes", "table": "stage.changes", "output": "changes"},
                {
                    "type": "load",
                    "name": "merge",
                    "input": "changes",
                    "table": "analytics.target",
                    "mode": "merge",
                    "keys": ["id"],
                },
            ],
        },
        {
            "name": "bench_scd2",
            "stages": [
                {"type": "extract", "name": "changes", "table": "stage.changes", "output": "changes"},
                {
                    "type": "load",
                    "name": "scd2",
                    "input": "changes",
                    "table": "analytics.dim",
                    "mode": "scd2",
                    "keys": ["id"],
                    "track": ["amount", "status"],
                },
            ],
        },
    ]
    for d in docs:
        (root / "pipelines" / f"{d['name']}.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return Lake(root)


def timed_tarn(lake: Lake, pipeline: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = api.run(lake, pipeline)
    elapsed = time.perf_counter() - t0
    if not r.ok:
        raise SystemExit(f"{pipeline} failed at {r.error_stage}: {r.error}")
    step = r.steps[-1]
    return elapsed, {
        "run_id": r.run_id,
        "metrics": (step.get("detail") or {}).get("metrics"),
        "rows_out": step["rows_out"],
    }


def timed_direct(uri: str, changes_uri: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    source = DeltaTable(changes_uri).to_pyarrow_table()
    metrics = (
        DeltaTable(uri)
        .merge(source, "target.id = source.id", source_alias="source", target_alias="target", writer_properties=WRITER)
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return time.perf_counter() - t0, {"metrics": metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M-row target instead of 10M")
    ap.add_argument("--rows", type=int, default=None, help="target rows (default 10M, 1M with --quick)")
    ap.add_argument("--repeat", type=int, default=1, help="measurements per figure (median reported)")
    ap.add_argument("--no-scd2", action="store_true")
    args = ap.parse_args()
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    work = DATA / f"merge_{rows}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, base_scd = work / "base", work / "base_scd2"
    build_base(base, rows, scd2=False)
    print(f"target table: {rows:,} rows ({time.perf_counter() - t0:.1f} s to build or find)")

    lake = project(work / "project")
    changes_uri = lake.storage.table_uri("stage", "changes")
    write_deltalake(changes_uri, changes(rows), writer_properties=WRITER)
    target_uri = lake.storage.table_uri("analytics", "target")
    direct_uri = str(work / "direct_target")

    merge_s: list[float] = []
    direct_s: list[float] = []
    details: dict[str, Any] = {"rows": rows, "changed": CHANGED, "repeat": args.repeat}
    for i in range(args.repeat):
        # Alternate which side goes first, so drift in the machine's load does not favour one.
        fresh_copy(base, Path(direct_uri))
        fresh_copy(base, Path(target_uri))
        if i % 2 == 0:
            d, dd = timed_direct(direct_uri, changes_uri)
            m, md = timed_tarn(lake, "bench_merge")
        else:
            m, md = timed_tarn(lake, "bench_merge")
            d, dd = timed_direct(direct_uri, changes_uri)
        direct_s.append(d)
        merge_s.append(m)
        print(f"[{i + 1}/{args.repeat}] merge: tarn {m:.2f} s, delta-rs direct {d:.2f} s, ratio {m / d:.2f}")
        details["merge_tarn"], details["merge_direct"] = md, dd
    figures: dict[str, Any] = {
        "merge_s": round(statistics.median(merge_s), 3),
        "merge_direct_deltars_s": round(statistics.median(direct_s), 3),
    }
    figures["merge_ratio_vs_deltars"] = round(figures["merge_s"] / figures["merge_direct_deltars_s"], 3)
    details["merge_s_all"], details["merge_direct_s_all"] = merge_s, direct_s
    details["merge_ratio_pairs"] = [round(m / d, 3) for m, d in zip(merge_s, direct_s, strict=True)]
    details["load_average_1m"] = os.getloadavg()[0]
    check = DeltaTable(target_uri).to_pyarrow_dataset().count_rows()
    assert check == rows + CHANGED // 2, check

    if not args.no_scd2:
        build_base(base_scd, rows, scd2=True)
        dim_uri = lake.storage.table_uri("analytics", "dim")
        scd_s: list[float] = []
        for i in range(args.repeat):
            fresh_copy(base_scd, Path(dim_uri))
            s, sd = timed_tarn(lake, "bench_scd2")
            scd_s.append(s)
            print(f"[{i + 1}/{args.repeat}] scd2: tarn {s:.2f} s")
            details["scd2_tarn"] = sd
        figures["scd2_s"] = round(statistics.median(scd_s), 3)
        figures["scd2_ratio_vs_merge"] = round(figures["scd2_s"] / figures["merge_s"], 3)
        details["scd2_s_all"] = scd_s
        ds = DeltaTable(dim_uri).to_pyarrow_dataset()
        total, current = ds.count_rows(), ds.count_rows(filter=pc.field("is_current"))
        assert total == rows + CHANGED, total  # 50k closed versions kept + 50k new versions + 50k new keys
        assert current == rows + CHANGED // 2, current
        details["scd2_rows"] = {"total": total, "current": current}
    lake.close()
    figures["target_met"] = figures["merge_ratio_vs_deltars"] <= TARGET_RATIO
    save("merge_quick" if args.quick else "merge", figures, details)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip native libraries' static destructors (DuckDB + delta-rs can abort at exit)
