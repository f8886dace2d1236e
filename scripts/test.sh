#!/usr/bin/env bash
# The whole test suite: lint, types, unit/integration tests and doctests. Creates/reuses .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export MPLBACKEND=Agg WANDB_MODE=offline WANDB_SILENT=true PYTHONHASHSEED=0
echo "[test] ruff"
.venv/bin/python -m ruff check lightning_srop recipes tests benchmarks
.venv/bin/python -m ruff format --check lightning_srop recipes tests benchmarks
echo "[test] mypy"
.venv/bin/python -m mypy
echo "[test] pytest"
.venv/bin/python -m pytest "$@"
