#!/usr/bin/env bash
# Set up everything, then run the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
.venv/bin/ruff check lookalike tests bench
.venv/bin/lint-imports   # the layers contract in pyproject.toml
exec .venv/bin/python -m pytest -q "$@"
