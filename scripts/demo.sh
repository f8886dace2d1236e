#!/usr/bin/env bash
# Set up .venv (or reuse it) and run the main job: the MNIST-style recipe with SROPCallback on
# scikit-learn's bundled handwritten digits (no download), a few epochs on CPU. It measures the
# five layers SmallCNN's docs name (conv1, pool1, conv2, down, conv3), prints where the logs are
# and the `tensorboard --logdir ... --samples_per_plugin images=0,histograms=0` line (every
# epoch's figures) with a tip on smoothing, and writes a PNG summary.
# --trainer.default_root_dir DIR moves the logs and the summary to DIR.
# Extra arguments go to the recipe, e.g.:  bash scripts/demo.sh --trainer.max_epochs 3
#                                           bash scripts/demo.sh --data mnist   (real MNIST, needs internet)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export PYTHONHASHSEED=0
exec .venv/bin/python -m recipes.mnist fit --config recipes/configs/mnist.yaml "$@"
