"""A recipe callback that records per-epoch SROP means and accuracy and draws the run's summary.

:class:`SROPSummary` reads ``{prefix}/{layer}/mean`` and the accuracy metric from
``trainer.callback_metrics`` after every validation epoch (where :class:`SROPCallback` and the
LightningModule put them), and at the end of ``fit`` writes ``srop_summary.png`` (per-layer SROP
curves over epochs beside accuracy) and ``srop_summary.csv`` next to the logs, then prints where
the logs are and how to view them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from lightning_srop import LayerReport, SROPCallback
from lightning_srop.plots import plot_layer_profile, plot_srop_over_epochs, save_figure
from lightning_srop.report import write_csv

__all__ = ["SROPSummary"]


class SROPSummary(pl.Callback):
    """Collect ``{prefix}/*/mean`` and ``accuracy_key`` per validation epoch; plot them at fit end.

    Args:
        prefix: the metric prefix of the :class:`~lightning_srop.SROPCallback` (``"srop"``).
        statistic: which SROP statistic to plot per layer.
        accuracy_key: the accuracy metric logged by the LightningModule.
        filename: the PNG's file name, written into the logger's directory (or
            ``trainer.default_root_dir`` without a logger); the CSV gets the same stem.
        verbose: print the log directory, the ``tensorboard`` command (with the flags that load
            every epoch's images, and a line of advice on smoothing) and the PNG's path.
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

    def _last_accuracy(self) -> str:
        return f"{self.accuracy[-1][1]:.3f}" if self.accuracy else "n/a"

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
            reports = _last_reports(trainer, self.prefix)
            if validate_only and reports:
                title = f"{name}: SROP per layer (validate, val/acc {self._last_accuracy()})"
                fig = plot_layer_profile(reports, title=title)
            else:
                title = f"{name}: per-layer {self.statistic} SROP and accuracy"
                fig = plot_srop_over_epochs(self.history, self.accuracy or None, title=title)
            self.figure_path = save_figure(fig, png)
        if self.verbose:
            root = tensorboard_root(trainer)
            print()
            print(f"Logs:        {out_dir}")
            if root is not None:
                print(f"TensorBoard: {tensorboard_command(root)}")
                print(f"             {SMOOTHING_TIP}")
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
        columns = [
            "epoch",
            self.accuracy_key,
            *(f"{self.prefix}/{k}/{self.statistic}" for k in layers),
        ]
        acc = dict(self.accuracy)
        per_layer = {k: dict(v) for k, v in self.history.items()}
        rows = [
            [epoch, acc.get(epoch, math.nan), *(per_layer[k].get(epoch, math.nan) for k in layers)]
            for epoch in epochs
        ]
        write_csv(path, rows, columns)


def follow_root_dir(trainer: Any, defaults: Collection[str]) -> None:
    """Let a recipe's loggers write under ``trainer.default_root_dir``.

    A logger whose ``save_dir`` is still one of the recipe's defaults gets
    ``trainer.default_root_dir`` instead, so ``--trainer.default_root_dir DIR`` moves the logs
    and the summary with it; a ``save_dir`` set to anything else is kept. ``trainer`` is the
    parsed ``trainer`` config of a LightningCLI (before the classes are instantiated).
    """
    root = trainer.get("default_root_dir")
    loggers = trainer.get("logger")
    if root is None or loggers is None or isinstance(loggers, bool):
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and init_args.get("save_dir") in defaults:
            init_args["save_dir"] = root


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


#: One line of advice printed under the ``tensorboard`` command.
SMOOTHING_TIP = (
    "Set Smoothing to 0 (settings, top right): SROPs move by a few percent, "
    "and smoothing draws a jump as a slow drift."
)


def tensorboard_command(root: str) -> str:
    """The ``tensorboard`` command that shows every epoch's images and histograms.

    TensorBoard keeps a random sample of 10 images and 500 histograms per tag unless told
    otherwise; ``--samples_per_plugin images=0,histograms=0`` keeps them all.
    """
    return f"tensorboard --logdir {root} --samples_per_plugin images=0,histograms=0"


def tensorboard_root(trainer: pl.Trainer) -> str | None:
    """The ``--logdir`` to give TensorBoard (the logger's root dir), or None without one."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return str(logger.root_dir)
    return None


def _last_reports(trainer: pl.Trainer, prefix: str) -> list[LayerReport]:
    """The last measured epoch of the run's SROPCallback with this prefix (empty if none)."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, SROPCallback) and callback.prefix == prefix:
            return list(callback.last_reports)
    return []
