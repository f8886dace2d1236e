"""Sanity check 3, training stages (the paper's Figure 5).

A small CNN (:class:`recipes.mnist.SmallCNN`) is profiled with :func:`lightning_srop.profile`
on a fixed validation batch before training ("randomized") and after every epoch, the last one
being "trained". Reported per layer: the log of the mean SROP (cycles per pixel of the layer's
grid) and, per stage, the validation accuracy.

The "ds" curve replaces the network's intermediate and downscaling layers by the benchmark pool
(max pooling, kernel 2, stride 2): at each layer it is the mean SROP of the *input images*
max-pooled down to that layer's resolution, i.e. what downscaling alone does, with no learned
layer in between. The paper's claims: training lowers the layers' SROP from their randomized
values (a decrease in SROP = an increase in useful information) and, over training, SROP
variations move with accuracy.

Run::

    python -m recipes.experiments.training_stages                  # digits, offline
    python -m recipes.experiments.training_stages --data mnist --data-dir data --download
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from recipes.experiments._common import (
    Timer,
    add_common_arguments,
    benchmark_pool,
    capture,
    digit_data,
    evaluate,
    mean_srop,
    parse_args,
    train_model,
    write_csv,
)

__all__ = ["LAYERS", "StageRecorder", "main", "run"]

LAYERS: tuple[str, ...] = (
    "features.conv1",
    "features.pool1",
    "features.conv2",
    "features.down",
    "features.conv3",
)


def _profile(model: torch.nn.Module, x: Tensor) -> dict[str, float]:
    from lightning_srop import profile

    report = profile(model, x, layers=list(LAYERS))
    return {name: report[name].stats["mean"] for name in LAYERS}


class StageRecorder(pl.Callback):
    """Profile the model's layers and measure accuracy before training and after each epoch."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self.stages: list[tuple[int, float, dict[str, float]]] = []

    def record(self, model: torch.nn.Module, epoch: int) -> None:
        self.stages.append((epoch, evaluate(model, self.x, self.y), _profile(model, self.x)))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.stages:
            self.record(pl_module, 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(pl_module, trainer.current_epoch + 1)


def run(
    out_dir: Path,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    data: str = "digits",
    data_dir: str = "data",
    download: bool = False,
    max_train: int | None = None,
    num_profile: int = 256,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Train, profile every stage, write ``training_stages.csv`` and ``.png``; return rows."""
    from recipes.mnist import SmallCNN

    timer = Timer()
    tx, ty, vx, vy = digit_data(
        data, data_dir, download=download, max_train=max_train, max_val=num_profile, seed=seed
    )
    tx, vx = (tx - 0.5) / 0.5, (vx - 0.5) / 0.5
    torch.manual_seed(seed)
    model = SmallCNN()
    recorder = StageRecorder(vx, vy)
    train_model(
        model, tx, ty, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=[recorder]
    )
    # each layer's downscaling relative to the input, for the "ds" curve
    model.eval()
    with torch.no_grad(), capture(model, LAYERS) as store:
        model(vx[:1])
    size = vx.shape[-1]
    rows: list[dict[str, Any]] = []
    last = recorder.stages[-1][0]
    for epoch, accuracy, means in recorder.stages:
        stage = "randomized" if epoch == 0 else ("trained" if epoch == last else f"epoch {epoch}")
        for depth, name in enumerate(LAYERS):
            rows.append(
                {
                    "stage": stage,
                    "epoch": epoch,
                    "layer": name,
                    "depth": depth,
                    "downscale": size // store[name].shape[-1],
                    "mean_srop": means[name],
                    "log_mean_srop": math.log(means[name]),
                    "accuracy": accuracy,
                }
            )
    for depth, name in enumerate(LAYERS):
        downscale = size // store[name].shape[-1]
        srop = mean_srop(benchmark_pool(vx, round(math.log2(downscale))))
        rows.append(
            {
                "stage": "ds",
                "epoch": -1,
                "layer": name,
                "depth": depth,
                "downscale": downscale,
                "mean_srop": srop,
                "log_mean_srop": math.log(srop),
                "accuracy": math.nan,
            }
        )
    for epoch, accuracy, means in recorder.stages:
        avg = sum(math.log(v) for v in means.values()) / len(means)
        print(f"epoch {epoch:>2}  acc={accuracy:.3f}  mean log SROP over layers={avg:.4f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "training_stages.csv", rows)
    plot(rows, out_dir / "training_stages.png", data=data)
    print(f"wrote {out_dir / 'training_stages.csv'} and .png in {timer.elapsed:.0f} s")
    return rows


def plot(rows: Sequence[dict[str, Any]], path: Path, *, data: str) -> Path:
    """log mean SROP per layer by stage (left); its change and accuracy over epochs (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    short = [name.removeprefix("features.") for name in layers]
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    fig, (ax_layers, ax_epochs) = plt.subplots(1, 2, figsize=(13, 4.8))
    cmap = plt.get_cmap("Blues")
    epochs = sorted({r["epoch"] for r in rows if r["stage"] != "ds"})
    for stage in stages:
        sel = [r for r in rows if r["stage"] == stage]
        values = [r["log_mean_srop"] for r in sel]
        if stage == "randomized":
            ax_layers.plot(short, values, "o-", color="tab:gray", lw=2, label="randomized")
        elif stage == "trained":
            ax_layers.plot(
                short,
                values,
                "o-",
                color="tab:blue",
                lw=2.2,
                label=f"trained (acc {sel[0]['accuracy']:.3f})",
            )
        elif stage == "ds":
            ax_layers.plot(short, values, "k--", marker="x", label="ds (benchmark pools only)")
        else:
            shade = 0.3 + 0.5 * sel[0]["epoch"] / max(epochs[-1], 1)
            ax_layers.plot(short, values, "-", color=cmap(shade), lw=0.9, alpha=0.8)
    ax_layers.set(
        xlabel="layer",
        ylabel="log mean SROP (layer grid)",
        title="per layer (thin: intermediate epochs)",
    )
    ax_layers.grid(alpha=0.3)
    ax_layers.legend(fontsize=8)
    ref = {r["layer"]: r["log_mean_srop"] for r in rows if r["stage"] == "randomized"}
    for i, name in enumerate(layers):
        pts = sorted(
            (r["epoch"], r["log_mean_srop"] - ref[name])
            for r in rows
            if r["layer"] == name and r["stage"] != "ds"
        )
        ax_epochs.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "o-",
            ms=3,
            color=plt.get_cmap("viridis")(i / max(len(layers) - 1, 1) * 0.9),
            label=short[i],
        )
    ax_epochs.axhline(0, color="k", lw=0.8)
    ax_epochs.set(
        xlabel="epoch (0 = randomized)",
        ylabel="log SROP - log SROP(randomized)",
        title="SROP change and accuracy over training",
    )
    ax_epochs.grid(alpha=0.3)
    acc = sorted({(r["epoch"], r["accuracy"]) for r in rows if r["stage"] != "ds"})
    twin = ax_epochs.twinx()
    twin.plot(
        [a[0] for a in acc], [a[1] for a in acc], "s-", color="tab:red", lw=2, label="val accuracy"
    )
    twin.set_ylabel("validation accuracy", color="tab:red")
    twin.set_ylim(0, 1.02)
    lines = ax_epochs.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax_epochs.legend(
        lines[0] + more[0],
        lines[1] + more[1],
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=6,
        frameon=False,
    )
    fig.suptitle(f"Training stages: SmallCNN on {data}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=Path("runs/experiments/training_stages"))
    parser.add_argument(
        "--num-profile",
        type=int,
        default=256,
        help="validation images profiled and scored at each stage",
    )
    add_common_arguments(parser, training=True)
    args = parse_args(parser, argv)
    return run(
        args.out_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data=args.data,
        data_dir=args.data_dir,
        download=args.download,
        max_train=args.max_train,
        num_profile=args.num_profile,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
