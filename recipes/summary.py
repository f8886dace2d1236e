"""A recipe callback that records per-epoch SROP means and accuracy and draws the run's summary.

:class:`SROPSummary` reads ``{prefix}/{layer}/mean`` and the accuracy metric from
``trainer.callback_metrics`` after every validation epoch (where :class:`SROPCallback` and the
LightningModule put them), and at the end of ``fit`` writes ``srop_summary.png`` (per-layer SROP
curves over epochs beside accuracy) and ``srop_summary.csv`` next to the logs, then prints where
the logs are and how to view them.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["SROPSummary", "plot_profile", "plot_summary"]


class SROPSummary(pl.Callback):
    """Collect ``{prefix}/*/mean`` and ``accuracy_key`` per validation epoch; plot them at fit end.

    Args:
        prefix: the metric prefix of the :class:`~lightning_srop.SROPCallback` (``"srop"``).
        statistic: which SROP statistic to plot per layer.
        accuracy_key: the accuracy metric logged by the LightningModule.
        filename: the PNG's file name, written into the logger's directory (or
            ``trainer.default_root_dir`` without a logger); the CSV gets the same stem.
        verbose: print the log directory, the ``tensorboard --logdir`` line and the PNG's path.
    """

    def __init__(
        self,
        prefix: str = "srop",
        statistic: str = "mean",
        accuracy_key: str = "val/acc",
        filename: str = "srop_summary.png",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.statistic = statistic
        self.accuracy_key = accuracy_key
        self.filename = filename
        self.verbose = verbose
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.accuracy: list[tuple[int, float]] = []
        self.figure_path: Path | None = None
        self._pattern = re.compile(rf"^{re.escape(prefix)}/(?P<layer>.+)/{re.escape(statistic)}$")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        for key, value in trainer.callback_metrics.items():
            match = self._pattern.match(key)
            if match:
                self.history.setdefault(match["layer"], []).append((epoch, float(value)))
        if self.accuracy_key in trainer.callback_metrics:
            self.accuracy.append((epoch, float(trainer.callback_metrics[self.accuracy_key])))
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._finish(trainer, pl_module, validate_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "accuracy": self.accuracy}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}  # type: ignore[misc]
        self.accuracy = [tuple(p) for p in state_dict["accuracy"]]  # type: ignore[misc]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, validate_only=False)

    @rank_zero_only
    def _finish(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, validate_only: bool
    ) -> None:
        out_dir = Path(log_dir(trainer))
        out_dir.mkdir(parents=True, exist_ok=True)
        png = out_dir / self.filename
        self._write_csv(png.with_suffix(".csv"))
        if self.history or self.accuracy:
            name = type(pl_module).__name__
            arch = getattr(pl_module, "hparams", {}).get("arch")
            if arch:
                name = f"{name} ({arch})"
            if validate_only:
                title = f"{name}: per-layer {self.statistic} SROP (validate)"
                fig = plot_profile(
                    {k: v[-1][1] for k, v in self.history.items() if v},
                    self.accuracy[-1][1] if self.accuracy else None,
                    statistic=self.statistic,
                    title=title,
                )
            else:
                title = f"{name}: per-layer {self.statistic} SROP and accuracy"
                fig = plot_summary(
                    self.history, self.accuracy, statistic=self.statistic, title=title
                )
            fig.savefig(png, dpi=120, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
            self.figure_path = png
        if self.verbose:
            root = tensorboard_root(trainer)
            print()
            print(f"Logs:        {out_dir}")
            if root is not None:
                print(f"TensorBoard: tensorboard --logdir {root}")
            wandb = wandb_line(trainer)
            if wandb is not None:
                print(f"W&B:         {wandb}")
            if self.figure_path is not None:
                print(f"Summary:     {self.figure_path}")
            else:
                print("Summary:     no SROP or accuracy values were logged, no figure written")

    def _write_csv(self, path: Path) -> None:
        epochs = sorted(
            {e for pts in self.history.values() for e, _ in pts} | {e for e, _ in self.accuracy}
        )
        layers = list(self.history)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "epoch",
                    self.accuracy_key,
                    *(f"{self.prefix}/{k}/{self.statistic}" for k in layers),
                ]
            )
            acc = dict(self.accuracy)
            per_layer = {k: dict(v) for k, v in self.history.items()}
            for epoch in epochs:
                writer.writerow(
                    [
                        epoch,
                        acc.get(epoch, math.nan),
                        *(per_layer[k].get(epoch, math.nan) for k in layers),
                    ]
                )


def log_dir(trainer: pl.Trainer) -> str:
    """The directory of this run's logs: the first logger's ``log_dir`` (TensorBoard, CSV), the
    W&B run's files folder (uploaded with the run), else ``trainer.default_root_dir``."""
    from lightning.pytorch.loggers import WandbLogger

    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return str(logger.experiment.dir)
    if logger is not None:
        directory = getattr(logger, "log_dir", None)
        if directory is None:
            directory = getattr(logger, "save_dir", None)
        if directory is not None:
            return str(directory)
    return str(trainer.default_root_dir)


def wandb_line(trainer: pl.Trainer) -> str | None:
    """Where the W&B run is: its URL, or for an offline run the ``wandb sync`` command."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            url = getattr(run, "url", None)
            if url and not getattr(run, "offline", False):
                return str(url)
            return f"wandb sync {Path(run.dir).parent}   (offline run; uploads it)"
    return None


def tensorboard_root(trainer: pl.Trainer) -> str | None:
    """The ``--logdir`` to give TensorBoard (the logger's root dir), or None without one."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return str(logger.root_dir)
    return None


def plot_summary(
    history: Mapping[str, Sequence[tuple[int, float]]],
    accuracy: Sequence[tuple[int, float]],
    *,
    statistic: str = "mean",
    title: str | None = None,
) -> Any:
    """Per-layer SROP curves over epochs (left) beside accuracy over epochs (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_srop, ax_acc) = plt.subplots(
        1, 2, figsize=(11.5, 4.8), gridspec_kw={"width_ratios": [1.35, 1]}
    )
    cmap = plt.get_cmap("viridis")
    n = max(len(history), 1)
    for i, (layer, points) in enumerate(history.items()):
        if not points:
            continue
        epochs, values = zip(*points, strict=False)
        ax_srop.plot(
            epochs,
            values,
            marker="o",
            ms=4,
            lw=1.8,
            color=cmap(i / max(n - 1, 1) * 0.9),
            label=layer,
        )
    ax_srop.set_xlabel("epoch")
    ax_srop.set_ylabel(f"{statistic} SROP (cycles / pixel of the layer's grid)")
    ax_srop.set_title("SROP per layer (darker = shallower)")
    ax_srop.grid(alpha=0.3)
    if history:
        ax_srop.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=min(len(history), 4),
            frameon=False,
        )
    if accuracy:
        epochs, values = zip(*accuracy, strict=False)
        ax_acc.plot(epochs, values, marker="o", ms=4, lw=2, color="tab:red")
        step = max(1, math.ceil(len(accuracy) / 8))  # at most about 8 labels
        labelled = set(accuracy[::step]) | {accuracy[-1]}
        for e, v in accuracy:
            if (e, v) in labelled:
                ax_acc.annotate(
                    f"{v:.3f}",
                    (e, v),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        low = min(values)
        ax_acc.set_ylim(max(0.0, low - 0.1), min(1.02, max(values) + 0.05))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("accuracy")
    ax_acc.grid(alpha=0.3)
    for ax in (ax_srop, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_profile(
    values: Mapping[str, float],
    accuracy: float | None = None,
    *,
    statistic: str = "mean",
    title: str | None = None,
) -> Any:
    """One value per layer against depth (forward order), e.g. after ``trainer.validate``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 3), 4.6))
    ax.plot(
        range(len(names)), [values[k] for k in names], marker="o", ms=4, lw=1.8, color="tab:blue"
    )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel(f"{statistic} SROP (cycles / pixel of the layer's grid)")
    ax.grid(alpha=0.3)
    if accuracy is not None:
        ax.text(
            0.99,
            0.97,
            f"val/acc = {accuracy:.3f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
        )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
