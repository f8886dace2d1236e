#!/usr/bin/env bash
# Create (or reuse) .venv in the repo root with lightning-srop and everything its recipes,
# tests and docs need. Safe to run again: it reinstalls only when pyproject.toml changed.
#
# PyTorch: TORCH_SPEC picks the build (default: the pinned CPU/CUDA wheels this project is
# tested with). On a machine with other wheels, e.g.:  TORCH_SPEC="torch torchvision" bash scripts/setup_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
stamp=.venv/.lightning-srop-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${TORCH_SPEC}"

# pip, quiet, but loud on failure (this machine's pip config adds noise lines "... is ignored").
pip_install() {
    local log
    log=$(mktemp)
    if ! .venv/bin/python -m pip install --quiet "$@" >"$log" 2>&1; then
        grep -v "is ignored" "$log" >&2 || true
        echo "[setup] failed: pip install $*" >&2
        rm -f "$log"
        exit 1
    fi
    grep -v "is ignored" "$log" || true
    rm -f "$log"
}

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing PyTorch (${TORCH_SPEC}) and lightning-srop[all] into .venv (first run takes a few minutes)"
    pip_install --upgrade pip
    # shellcheck disable=SC2086
    pip_install ${TORCH_SPEC}
    pip_install -e ".[all]"
    .venv/bin/python -c "import lightning_srop, torch, torchvision, lightning" # fail loudly if anything is missing
    echo "$want" > "$stamp"
else
    echo "[setup] reusing .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
fi
