"""Redraw the docs' hero figure (docs/images/srop_summary.png) from what the demo produces.

Runs the demo's training (what ``bash scripts/demo.sh`` runs once the venv is set up: the
MNIST recipe with its config on scikit-learn's bundled digits, five measured layers, 15
epochs) into a temporary folder, reads the ``srop_summary.csv`` it writes (mean SROP of each
layer and ``val/acc`` per epoch), keeps a copy of it beside the PNG
(``docs/images/srop_summary.csv``) and draws it for a web page: large fonts, the legend under
the curves, a size that stays legible at page width and on a phone.

    .venv/bin/python scripts/hero_figure.py                    # rerun the demo, redraw
    .venv/bin/python scripts/hero_figure.py --csv docs/images/srop_summary.csv   # redraw only

``--csv`` redraws from a demo run you already have (the demo writes
``runs/mnist/tensorboard/version_N/srop_summary.csv``); ``--out`` writes somewhere else.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "srop_summary.png"


def run_demo(root: Path) -> Path:
    """Train the demo's recipe into ``root``; return the summary CSV it wrote."""
    command = [
        sys.executable,
        "-m",
        "recipes.mnist",
        "fit",
        "--config",
        "recipes/configs/mnist.yaml",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    (found,) = root.rglob("srop_summary.csv")
    return found


def read_summary(path: Path) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, float]]]:
    """``(layer -> [(epoch, mean SROP)], [(epoch, val/acc)])`` from the demo's CSV."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    history: dict[str, list[tuple[int, float]]] = {}
    accuracy: list[tuple[int, float]] = []
    for row in rows:
        epoch = int(row["epoch"])
        for column, cell in row.items():
            value = float(cell) if cell not in ("", None) else math.nan
            if column.startswith("srop/") and column.endswith("/mean"):
                history.setdefault(column[len("srop/") : -len("/mean")], []).append((epoch, value))
            elif column == "val/acc" and math.isfinite(value):
                accuracy.append((epoch, value))
    return history, accuracy


def draw(history: dict[str, list[tuple[int, float]]], accuracy: list[tuple[int, float]]) -> Any:
    """Two panels side by side, fonts sized for a page or a phone."""
    from matplotlib.figure import Figure

    from lightning_srop.plots import layer_colors

    figure = Figure(figsize=(9.0, 4.6), dpi=150, layout="constrained")
    srop_ax, acc_ax = figure.subplots(1, 2, width_ratios=[1.35, 1.0])
    colors = layer_colors(len(history))
    for (name, points), color in zip(history.items(), colors, strict=True):
        epochs, values = zip(*sorted(points), strict=True)
        label = name.removeprefix("features.")
        srop_ax.plot(
            epochs, values, marker="o", markersize=5, linewidth=2.4, color=color, label=label
        )
    srop_ax.set_title("mean SROP per layer", fontsize=17)
    srop_ax.set_xlabel("epoch", fontsize=15)
    srop_ax.set_ylabel("SROP (cycles / pixel)", fontsize=15)
    srop_ax.set_ylim(bottom=0.0)
    epochs, values = zip(*sorted(accuracy), strict=True)
    acc_ax.plot(epochs, values, marker="o", markersize=5, linewidth=2.4, color="black")
    acc_ax.set_title("validation accuracy", fontsize=17)
    acc_ax.set_xlabel("epoch", fontsize=15)
    for ax in (srop_ax, acc_ax):
        ax.tick_params(labelsize=13)
        ax.grid(alpha=0.3)
    figure.legend(
        *srop_ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(len(history), 5),
        fontsize=13,
        title="layer (features.*), shallow → deep",
        title_fontsize=13,
        frameon=False,
    )
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, help="a demo run's srop_summary.csv (else rerun it)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG (default {OUT})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.csv if args.csv is not None else run_demo(Path(tmp))
        history, accuracy = read_summary(path)
        figure = draw(history, accuracy)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out, dpi=150)
        kept = args.out.with_suffix(".csv")
        if path.resolve() != kept.resolve():
            shutil.copyfile(path, kept)
    print(f"{args.out}: {len(history)} layers over {len(accuracy)} epochs")


if __name__ == "__main__":
    main()
