"""The one SparkSession of a Tarn process: created lazily from the project's ``engine`` settings, reused by every
run (each run works in its own ``newSession()``: its own temporary views and SQL settings, the same SparkContext).

``master`` is ``local[N]``, a ``spark://host:port`` cluster or a Spark Connect URL ``sc://host:port``. pyspark is
an optional dependency: without it, asking for the Spark engine raises :class:`~tarn.errors.MissingExtraError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tarn.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings every Tarn session needs (a user's ``conf`` cannot change them: results would differ from DuckDB's).
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # not INT96: Arrow reads the instants back
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.jsonGenerator.ignoreNullFields": "false",  # to_json keeps null fields, as DuckDB's does
}
# Defaults a user's ``conf`` may override.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}

_lock = threading.Lock()
_session: Any = None
_key: tuple[str, tuple[tuple[str, str], ...]] | None = None
startup_seconds: float | None = None  # how long the session took to start (benchmarks report it)


def import_pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:
        raise MissingExtraError("the Spark engine (engine: {name: spark})", "spark", "pyspark") from None
    return pyspark.sql


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def get_session(master: str = "local[*]", conf: Mapping[str, str] | None = None) -> SparkSession:
    """The process's SparkSession (created on first use). A second call with a different master or conf gets the
    same session: a process has one SparkContext; the conflict is an error rather than a silent surprise."""
    global _session, _key, startup_seconds
    sql = import_pyspark()
    settings = {**DEFAULT_CONF, **dict(conf or {}), **REQUIRED_CONF}
    key = (master, tuple(sorted(settings.items())))
    with _lock:
        if _session is not None:
            if _key is not None and _key[0] != master:
                raise ConfigError(
                    f"this process already runs a Spark session on {_key[0]!r}, not {master!r}",
                    hint="one process uses one Spark master; run the other project in its own process",
                )
            return _session  # type: ignore[no-any-return]
        start = time.perf_counter()
        builder = sql.SparkSession.builder.appName("tarn")
        builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
        for k, v in settings.items():
            builder = builder.config(k, v)
        try:
            session: SparkSession = builder.getOrCreate()
        except Exception as e:  # JVM / connection failures: say where and what to check
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"cannot start a Spark session on {master!r}: {first}",
                hint="check engine.master in tarn.yaml, that Java 17+ is installed (local masters) "
                "and that the cluster or Spark Connect server is reachable",
            ) from None
        if not master.startswith("sc://"):
            session.sparkContext.setLogLevel("ERROR")
        startup_seconds = time.perf_counter() - start
        _session, _key = session, key
        return session


def stop_session() -> None:
    """Stop the process's session (tests and benchmarks; a later ``get_session`` starts a new one)."""
    global _session, _key
    with _lock:
        if _session is not None:
            _session.stop()
        _session, _key = None, None
