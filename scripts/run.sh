#!/usr/bin/env bash
# Set-up, then the aedmae command with the given arguments, e.g. `scripts/run.sh model-info`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${AEDMAE_VENV:-.venv}/bin/aedmae" "$@"
