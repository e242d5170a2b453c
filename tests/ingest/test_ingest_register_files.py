"""Registering many files at once (``tarn ingest FILE…``, Lake.ingest): raw copies one by one, records
and queue messages in transactions of many files. Same outcome as one by one: order kept, duplicates
within the batch found, every file audited, and a failure mid-way keeps the files before it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tarn.errors import NotFoundError
from tarn.ingest import registration
from tarn.lake import Lake
from tarn.metastore.objects import DUPLICATE, RECEIVED, REJECTED


@pytest.fixture
def lake(new_lake: Callable[..., Lake]) -> Lake:
    return new_lake([{"name": "t"}])


def _files(d: Path, n: int) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        f = d / f"f{i:03d}.csv"
        f.write_text(f"id,v\n{i},x\n")
        out.append(f)
    return out


def test_chunks_of_files_are_recorded_in_order_with_one_message_each(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registration, "REGISTER_CHUNK", 4)  # 10 files: transactions of 4, 4 and 2
    files = _files(tmp_path / "in", 10)
    files.insert(5, files[2])  # the same file again, mid-way: known, not copied twice
    dup = tmp_path / "in" / "same_as_f001.csv"
    dup.write_text(files[1].read_text())
    files.append(dup)
    out = lake.ingest(files, "t", process=False)
    assert [f for f, _, _ in out] == files
    states = [s for _, _, s in out]
    assert states[:5] + states[6:11] == [RECEIVED] * 10
    assert states[5] == "known" and out[5][1].object_id == ""
    assert states[11] == DUPLICATE and out[11][1].duplicate_of == out[1][1].object_id
    assert lake.meta.queue.depth("ingest")["ready"] == 10
    objs = {o.id: o for o in lake.objects(limit=100)}
    assert {Path(objs[r.object_id].landing_path).name for _, r, s in out if s == RECEIVED} == {
        f"f{i:03d}.csv" for i in range(10)
    }
    assert all(Path(str(o.raw_path)).exists() for o in objs.values())
    audited = [a for a in lake.meta.audit.list(100) if a["action"] == "ingest"]
    assert len(audited) == len(files)  # every file, the known one included


def test_a_file_gone_mid_way_raises_after_the_files_before_it_are_recorded(lake: Lake, tmp_path: Path) -> None:
    files = _files(tmp_path / "in", 3)
    files.insert(2, tmp_path / "in" / "gone.csv")
    with pytest.raises(NotFoundError, match=r"gone\.csv does not exist"):
        lake.ingest(files, "t", process=False)
    assert sorted(Path(o.landing_path).name for o in lake.objects()) == ["f000.csv", "f001.csv"]
    assert lake.meta.queue.depth("ingest")["ready"] == 2
    # the rest on a second call; the first two are known
    again = lake.ingest([f for f in files if f.exists()], "t", process=False)
    assert [s for _, _, s in again] == ["known", "known", RECEIVED]


def test_a_refused_file_in_a_batch_is_recorded_as_rejected_in_its_place(lake: Lake, tmp_path: Path) -> None:
    files = _files(tmp_path / "in", 2)
    link = tmp_path / "in" / "link.csv"
    link.symlink_to(files[0])
    out = lake.ingest([files[0], link, files[1]], "t", process=False)
    assert [s for _, _, s in out] == [RECEIVED, REJECTED, RECEIVED]
    assert "symlink" in str(lake.object(out[1][1].object_id).error)


def test_a_failed_transaction_leaves_no_record_and_no_raw_copy(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _files(tmp_path / "in", 3)

    def fail(*_a: object, **_k: object) -> None:
        raise RuntimeError("metastore went away")

    monkeypatch.setattr(lake.meta.queue, "send", fail)
    with pytest.raises(RuntimeError, match="went away"):
        lake.ingest(files, "t", process=False)
    assert lake.objects() == []
    assert lake.meta.queue.depth("ingest")["ready"] == 0
    # neither the temporary copies nor the raw copies kept inside the rolled-back transaction remain
    assert [p for p in (Path(lake.storage.root) / "raw").rglob("*") if p.is_file()] == []


def test_files_settled_together_are_registered_together_and_one_error_stays_in_its_place(
    new_lake: Callable[..., Lake], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = new_lake([{"name": "t", "landing": "t/**"}])
    monkeypatch.setattr(registration, "REGISTER_CHUNK", 3)
    landing = Path(lake.storage.landing_uri("t"))
    landing.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (landing / f"f{i}.csv").write_text(f"id\n{i}\n")
    items = [(f"t/f{i}.csv", 1.0) for i in range(5)]
    items.insert(2, ("t/vanished.csv", 1.0))  # gone between settling and the copy
    items.append(("elsewhere/x.csv", 1.0))  # no dataset's landing pattern matches
    (Path(lake.storage.landing_uri("elsewhere"))).mkdir(parents=True, exist_ok=True)
    Path(lake.storage.landing_uri("elsewhere/x.csv")).write_text("id\n9\n")
    out = lake.ingest_service.register_landed(items)
    assert len(out) == len(items)
    assert isinstance(out[2], NotFoundError) and "vanished.csv" in str(out[2])
    registered = [r for r in out if not isinstance(r, Exception)]
    assert [r.state for r in registered] == [RECEIVED] * 5 + [REJECTED]
    assert lake.meta.queue.depth("ingest")["ready"] == 5
    assert {Path(o.landing_path).name for o in lake.objects() if o.state == RECEIVED} == {f"f{i}.csv" for i in range(5)}
    # seen again (the reconciliation scan): known, nothing recorded twice
    again = lake.ingest_service.register_landed(items[:2])
    assert [getattr(r, "state", None) for r in again] == ["known", "known"]


def test_a_file_growing_while_it_is_copied_is_not_registered(lake: Lake, tmp_path: Path) -> None:
    import threading

    from tarn.errors import IngestError

    big = tmp_path / "growing.csv"
    big.write_bytes(b"id,v\n" + b"1,x\n" * 10_000_000)  # 40 MB: copied and hashed on two threads
    stop = threading.Event()

    def grow() -> None:
        with big.open("ab") as f:
            while not stop.is_set():
                f.write(b"2,y\n" * 1000)
                f.flush()

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        with pytest.raises(IngestError, match="changed while it was being copied; ingest it again once"):
            lake.ingest([big], "t", process=False)
    finally:
        stop.set()
        writer.join()
    assert lake.objects() == []
    assert [p for p in (Path(lake.storage.root) / "raw").rglob("*") if p.is_file()] == []
