"""Tarn: an event-driven data lake with declarative, quality-aware SQL pipelines."""

# deltalake must be loaded before duckdb: with the opposite order, the process aborts at exit
# ("terminate called without an active exception") once both libraries have run (seen with
# duckdb 1.5 and 2.0, deltalake 1.6). Importing it here fixes the order for every entry point.
import deltalake as _deltalake  # noqa: F401

__version__ = "0.1.0"
