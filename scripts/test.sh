#!/usr/bin/env bash
# The test command: set-up, then lint, type checks and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${AEDMAE_VENV:-.venv}
echo "== ruff"; "$VENV/bin/ruff" check .
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"; "$VENV/bin/python" -m pytest "$@"
