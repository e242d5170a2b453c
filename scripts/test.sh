#!/usr/bin/env bash
# The project's test command (README, .ci/run): install, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
ruff check src tests bench
ruff format --check src tests bench
mypy
python -m pytest -q "$@"
