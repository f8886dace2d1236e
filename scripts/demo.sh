#!/usr/bin/env bash
# Set up .venv (or reuse it) and run the main job: the MNIST-style recipe with SROPCallback on
# scikit-learn's bundled handwritten digits (no download), a few epochs on CPU. It prints where
# the logs are, the `tensorboard --logdir ...` line, and writes a PNG summary.
# Extra arguments go to the recipe, e.g.:  bash scripts/demo.sh --trainer.max_epochs 3
#                                           bash scripts/demo.sh --data mnist   (real MNIST, needs internet)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export PYTHONHASHSEED=0
exec .venv/bin/python -m recipes.mnist fit --config recipes/configs/mnist.yaml "$@"
