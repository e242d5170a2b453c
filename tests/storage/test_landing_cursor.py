"""The object-store landing cursor and claims in the metastore (SQLite): one claimant per object
version, a lease that a dead worker's successor takes over, a cursor that only moves forward."""

from __future__ import annotations

import time
from pathlib import Path

from tarn.metastore import Metastore

SRC = "s3://bucket/lake/landing/"


def _meta(tmp_path: Path) -> Metastore:
    return Metastore(f"sqlite:///{tmp_path / 'm.db'}")


def test_one_claimant_per_object_version(tmp_path: Path) -> None:
    m = _meta(tmp_path)
    try:
        repo = m.landing
        kw = {"size": 3, "last_modified": 100.0, "lease_seconds": 60.0}
        cid = repo.claim(SRC, "a.csv", "e1", holder="w1", **kw)
        assert cid is not None
        assert repo.claim(SRC, "a.csv", "e1", holder="w2", **kw) is None  # leased by w1
        assert repo.claim(SRC, "a.csv", "e2", holder="w2", **kw) is not None  # a new version
        repo.finish(cid, "obj1")
        assert repo.claim(SRC, "a.csv", "e1", holder="w2", **kw) is None  # done
        assert cid in repo.done_since(SRC, 0.0)
        assert repo.done_since(SRC, 101.0) == set()
    finally:
        m.close()


def test_an_expired_or_released_lease_is_taken_over(tmp_path: Path) -> None:
    m = _meta(tmp_path)
    try:
        repo = m.landing
        cid = repo.claim(SRC, "b.csv", "e", size=1, last_modified=5.0, holder="dead", lease_seconds=0.05)
        assert cid is not None
        time.sleep(0.1)  # the holder died: its lease runs out
        assert repo.claim(SRC, "b.csv", "e", size=1, last_modified=5.0, holder="w2", lease_seconds=60) == cid
        repo.release(cid, "w2")  # registration failed: the next listing tries again at once
        assert repo.claim(SRC, "b.csv", "e", size=1, last_modified=5.0, holder="w3", lease_seconds=60) == cid
    finally:
        m.close()


def test_cursor_moves_forward_only_and_old_claims_are_forgotten(tmp_path: Path) -> None:
    m = _meta(tmp_path)
    try:
        repo = m.landing
        assert repo.cursor(SRC) == 0.0
        repo.advance(SRC, 50.0)
        repo.advance(SRC, 40.0)  # another worker is behind: ignored
        assert repo.cursor(SRC) == 50.0
        repo.advance(SRC, 60.0)
        assert repo.cursor(SRC) == 60.0
        old = repo.claim(SRC, "old.csv", "e", size=1, last_modified=10.0, holder="w", lease_seconds=60)
        new = repo.claim(SRC, "new.csv", "e", size=1, last_modified=55.0, holder="w", lease_seconds=60)
        assert old and new
        repo.finish(old, None)
        repo.finish(new, None)
        assert repo.forget_before(SRC, 20.0) == 1
        assert repo.done_since(SRC, 0.0) == {new}
    finally:
        m.close()
