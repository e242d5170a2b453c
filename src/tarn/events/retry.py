"""Retry delays: exponential backoff with jitter (as SQS consumers and AWS SDKs do)."""

from __future__ import annotations

import random

from tarn.config.spec import BackoffSpec


def backoff_delay(attempt: int, spec: BackoffSpec, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): base·2^(attempt-1), capped, with the
    configured fraction of it randomised ("equal jitter")."""
    r = rng or random
    delay = min(spec.max_seconds, spec.base_seconds * 2 ** max(0, attempt - 1))
    jitter = delay * spec.jitter
    return float(delay - jitter + r.uniform(0, jitter))
