"""Retries back off exponentially, with jitter, up to a cap — and the ingest service uses it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tarn.config.spec import BackoffSpec
from tarn.events.retry import backoff_delay
from tarn.lake import Lake
from tarn.metastore.objects import FAILED


def test_delay_doubles_per_attempt_and_is_capped() -> None:
    spec = BackoffSpec(base_seconds=1.0, max_seconds=10.0, jitter=0)
    assert [backoff_delay(a, spec) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(100, spec) == 10.0  # no overflow on large attempt numbers


def test_jitter_randomises_a_fraction_of_the_delay() -> None:
    spec = BackoffSpec(base_seconds=2.0, max_seconds=300.0, jitter=0.5)
    rng = random.Random(7)
    for attempt in range(1, 8):
        full = min(300.0, 2.0 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, spec, rng) for _ in range(200)]
        assert all(full * 0.5 <= s <= full for s in samples)
        assert len(set(samples)) > 100  # actually random
    capped = [backoff_delay(30, spec, rng) for _ in range(100)]
    assert all(150.0 <= s <= 300.0 for s in capped)


def test_backoff_spec_rejects_a_jitter_outside_zero_to_one() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BackoffSpec(jitter=1.5)


@pytest.mark.parametrize(("base", "cap", "expected"), [(4.0, 60.0, 4.0), (4.0, 1.5, 1.5)])
def test_a_failed_attempt_is_retried_after_the_configured_backoff(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], base: float, cap: float, expected: float
) -> None:
    lake = new_lake(
        [{"name": "p", "format": "parquet"}],
        ingest={"max_receives": 5, "backoff": {"base_seconds": base, "max_seconds": cap, "jitter": 0}},
    )
    before = time.time()
    obj = ingest_file(lake, "p", "not-parquet.csv", "a\n1\n")
    after = time.time()
    assert obj.state == FAILED
    [msg] = lake.meta.queue.list("ingest")
    assert msg.state == "ready"
    assert msg.receive_count == 1
    assert before + expected - 0.01 <= msg.visible_at <= after + expected + 0.01
    assert lake.ingest_service.receive() is None  # not before the backoff
    events = lake.object_detail(obj.id)["events"]
    assert f"attempt 1/5 failed, retry in {expected:.1f}s" in events[-1]["message"]
