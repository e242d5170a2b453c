#!/usr/bin/env bash
# The project's test command (README, .ci/run): install, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# A real PostgreSQL server on loopback for the metastore contract tests (installed if missing).
TARN_TEST_POSTGRES_URL="$(bash scripts/postgres.sh)"
export TARN_TEST_POSTGRES_URL
ruff check src tests bench
ruff format --check src tests bench
mypy
python -m pytest -q "$@"
