"""One error root for the whole of Tarn.

Every error says what went wrong *and* what to do next (``hint``). Errors are either
retryable (a transient condition: the queue retries the message with backoff) or terminal
(retrying cannot help: the object is rejected, the run fails, the CLI exits 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


class TarnError(Exception):
    """Root of every error Tarn raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


def redact_error(e: TarnError, redact: Callable[[str], str]) -> TarnError:
    """Strip secret values from an error's message and hint (in place); returns it."""
    e.message = redact(e.message)
    e.hint = redact(e.hint) if e.hint else e.hint
    e.args = (e.message,)
    return e


class ConfigError(TarnError):
    """The project (tarn.yaml, a dataset, a pipeline, a schema) is invalid."""


class NotFoundError(TarnError):
    """A named thing (object, table, dataset, message, run) does not exist."""


class StateError(TarnError):
    """An operation is not valid in the thing's current state."""


class IngestError(TarnError):
    """Processing a landed object failed. Retryable unless stated otherwise."""

    retryable = True


class RejectedError(IngestError):
    """The object violates the dataset's contract (e.g. a frozen schema); retrying cannot help."""

    retryable = False


class QueryError(TarnError):
    """A SQL query failed."""


class StorageError(TarnError):
    """The lake root or an object in it cannot be read or written."""

    retryable = True


class MissingExtraError(TarnError):
    """An optional backend is used whose Python package is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the Python package {module!r}, which is not installed",
            hint=f"pip install 'tarn[{extra}]'",
        )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for an unknown name, or '' if nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


_OS_FAILURES = (
    (
        ("no space left on device", "os error 28", "disk quota exceeded"),
        "the disk holding the lake root is full: "
        "free space (or grow the volume), then 'tarn dlq redrive' what was dead-lettered meanwhile",
    ),
    (
        ("read-only file system", "os error 30"),
        "the lake root (or one of its zones) is mounted read-only: remount it writable, then 'tarn dlq redrive'",
    ),
    (
        ("permission denied", "os error 13", "operation not permitted"),
        "the user running Tarn may not write to the "
        "lake root: fix its ownership or permissions, then 'tarn dlq redrive'",
    ),
)


def storage_hint(message: str) -> str | None:
    """What to do about a storage failure reported by a library as text (delta-rs, DuckDB, the OS),
    or None when the text is not one of the failures an operator must fix on the machine."""
    low = message.lower()
    for needles, hint in _OS_FAILURES:
        if any(n in low for n in needles):
            return hint
    return None
