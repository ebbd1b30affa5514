#!/usr/bin/env bash
# Run the whole test suite (unit, integration with real dvc/mlflow/ray, browser): what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled DVC_NO_ANALYTICS=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
.venv/bin/ruff check snmn pipeline stages tests benchmarks
exec .venv/bin/python -m pytest -q tests "$@"
