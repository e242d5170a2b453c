"""Realistic demo data: orders (CSV, some gzip), customers (JSON Lines, with a schema change),
and the usual trouble — typing errors, a ragged row, a broken constraint, a duplicate upload and
a corrupt (truncated) gzip file."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path

STATUSES = ("placed", "shipped", "delivered", "returned")
CITIES = ("Oslo", "Lisbon", "Lima", "Pune", "Osaka", "Quito", "Accra", "Perth")
FIRST = ("Ada", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea")
LAST = ("Nakamura", "Okafor", "Silva", "Berg", "Patel", "Novak", "Garcia", "Kim", "Moreau", "Ali")

DEMO_YAML = """\
name: demo
lake:
  root: lake
ingest:
  workers: 2
  settle_seconds: 0.3
  poll_interval_seconds: 0.1
  scan_interval_seconds: 2
  max_receives: 2
  backoff: {base_seconds: 0.3, max_seconds: 1, jitter: 0.2}
datasets:
  - name: orders
    landing: "orders/**"
    description: Web shop orders, CSV (some gzip-compressed)
    columns:
      - {name: order_id, type: long, nullable: false}
      - {name: customer_id, type: long, nullable: false}
      - {name: ordered_at, type: timestamp, nullable: false}
      - {name: amount, type: "decimal(10,2)"}
      - {name: status, type: string, nullable: false}
    evolution: freeze
    constraints:
      - {name: amount_not_negative, check: "amount >= 0"}
      - {name: known_status, check: "status IN ('placed', 'shipped', 'delivered', 'returned')"}
  - name: customers
    landing: "customers/**"
    description: CRM export, JSON Lines; schema inferred, new fields welcome
    primary_key: [customer_id]
    evolution: evolve
"""


def _orders(rng: random.Random, start_id: int, n: int, day: dt.date) -> list[list[str]]:
    rows = []
    for i in range(n):
        t = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=rng.randrange(86400))
        rows.append(
            [
                str(start_id + i),
                str(rng.randrange(1, 201)),
                t.strftime("%Y-%m-%d %H:%M:%S"),
                f"{rng.lognormvariate(3.5, 0.8):.2f}",
                rng.choices(STATUSES, weights=(5, 3, 10, 1))[0],
            ]
        )
    return rows


def _csv(rows: list[list[str]]) -> str:
    return "order_id,customer_id,ordered_at,amount,status\n" + "".join(",".join(r) + "\n" for r in rows)


def write_demo_files(out: Path, seed: int = 7) -> list[Path]:
    """Write the demo's files into ``out`` (not yet landed); returns them in landing order."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    # Customers: day 1 (inferred schema), day 2 adds loyalty_tier → schema version 2.
    c1 = out / "customers" / "customers-2026-11-20.jsonl"
    c1.parent.mkdir(parents=True, exist_ok=True)
    with c1.open("w") as f:
        for cid in range(1, 201):
            f.write(
                json.dumps(
                    {
                        "customer_id": cid,
                        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                        "city": rng.choice(CITIES),
                        "signed_up": (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(600))).isoformat(),
                    }
                )
                + "\n"
            )
        f.write('{"customer_id": 201, "name": "Broken Record", "city": \n')  # invalid JSON line
    files.append(c1)
    c2 = out / "customers" / "customers-2026-11-21.jsonl"
    with c2.open("w") as f:
        for cid in rng.sample(range(1, 201), 40):
            f.write(
                json.dumps(
                    {
                        "customer_id": cid,
                        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                        "city": rng.choice(CITIES),
                        "signed_up": "2024-03-01",
                        "loyalty_tier": rng.choice(["bronze", "silver", "gold"]),
                    }
                )
                + "\n"
            )
    files.append(c2)

    # Orders: three clean-ish days, one gzip; defects in day 2.
    d1 = _orders(rng, 1000, 400, dt.date(2026, 11, 19))
    o1 = out / "orders" / "orders-2026-11-19.csv"
    o1.parent.mkdir(parents=True, exist_ok=True)
    o1.write_text(_csv(d1))
    files.append(o1)

    d2 = _orders(rng, 2000, 400, dt.date(2026, 11, 20))
    d2[10][3] = "n/a"  # not a decimal
    d2[57][2] = "20/11/2026 25:61"  # not a timestamp
    d2[120][3] = "-15.00"  # breaks amount_not_negative
    d2[200][4] = "lost"  # breaks known_status
    d2[301][1] = ""  # customer_id is not nullable
    text = _csv(d2).splitlines(keepends=True)
    text.insert(150, "2150,17,2026-11-20 10:00:00,12.50,placed,EXTRA_FIELD\n")  # ragged row
    o2 = out / "orders" / "orders-2026-11-20.csv"
    o2.write_text("".join(text))
    files.append(o2)

    o3 = out / "orders" / "orders-2026-11-21.csv.gz"
    o3.write_bytes(gzip.compress(_csv(_orders(rng, 3000, 500, dt.date(2026, 11, 21))).encode()))
    files.append(o3)

    # The same export uploaded twice under another name: recognised, not ingested again.
    dup = out / "orders" / "orders-2026-11-19-copy.csv"
    dup.write_bytes(o1.read_bytes())
    files.append(dup)

    # A truncated gzip: the transfer was cut off. Retries cannot help → DLQ.
    bad = out / "orders" / "orders-2026-11-22.csv.gz"
    payload = gzip.compress(_csv(_orders(rng, 4000, 3000, dt.date(2026, 11, 22))).encode())
    bad.write_bytes(payload[: len(payload) // 2])
    files.append(bad)

    # Freeze policy: a file with an unexpected column is rejected with the reason.
    drift = out / "orders" / "orders-2026-11-22-v2.csv"
    drift.write_text(
        "order_id,customer_id,ordered_at,amount,status,coupon\n4001,5,2026-11-22 09:00:00,10.00,placed,XMAS\n"
    )
    files.append(drift)
    return files
