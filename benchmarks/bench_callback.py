"""Overhead of SROPCallback on a validation epoch of a small CNN, side by side in one run.

    .venv/bin/python benchmarks/bench_callback.py [--device cpu|cuda] [--repeats 5] [--threads N]

Times ``trainer.validate`` (one validation epoch: 8 batches of 64 RGB images of 32 x 32, a
4-conv CNN with pooling; 6 hooked layers by default) with no callback and with the callback in
several settings, interleaving the runs (so drift hits every setting alike), and prints the
median epoch time of each and its ratio to the baseline. Loggers: none, or a TensorBoard
logger in both the baseline and the callback run (then the callback also renders and writes
histograms and the figure).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback


class SmallCNN(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))


class EpochTimer(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after every callback's on_validation_epoch_end (and the loggers' writes)
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(512, 3, 32, 32, generator=g), torch.randint(0, 10, (512,), generator=g)
    )
    loader = DataLoader(data, batch_size=64)
    model = SmallCNN()
    settings: dict[str, dict[str, Any]] = {
        "baseline (no callback)": {"callback": None, "tb": False},
        "SROPCallback() default, 2 of 8 batches": {"callback": {}, "tb": False},
        "SROPCallback(num_batches=None), 8 of 8": {"callback": {"num_batches": None}, "tb": False},
        "baseline + TensorBoard": {"callback": None, "tb": True},
        "SROPCallback() + TensorBoard (hist+fig)": {"callback": {}, "tb": True},
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:

        def run(setting: dict[str, Any]) -> float:
            timer = EpochTimer()
            callbacks: list[Callback] = [timer]
            if setting["callback"] is not None:
                callbacks.insert(0, SROPCallback(**setting["callback"]))
            logger: Any = False
            if setting["tb"]:
                from lightning.pytorch.loggers import TensorBoardLogger

                logger = TensorBoardLogger(tmp, name="bench")
            trainer = L.Trainer(
                accelerator=args.device,
                devices=1,
                callbacks=callbacks,
                logger=logger,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=tmp,
            )
            trainer.validate(model, loader, verbose=False)
            return timer.seconds[-1]

        for setting in settings.values():  # warm-up: allocations, imports, radius plans
            run(setting)
        for _ in range(args.repeats):
            for name, setting in settings.items():
                times[name].append(run(setting))
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"SmallCNN validation epoch (8 x 64 images of 3x32x32), {device}, torch {torch.__version__}"
    )
    print(f"median of {args.repeats} interleaved runs")
    print(f"{'setting':<44}{'epoch ms':>10}{'ratio':>8}")
    base = {
        False: statistics.median(times["baseline (no callback)"]),
        True: statistics.median(times["baseline + TensorBoard"]),
    }
    for name, setting in settings.items():
        median = statistics.median(times[name])
        print(f"{name:<44}{median * 1e3:>10.1f}{median / base[setting['tb']]:>8.2f}")


if __name__ == "__main__":
    main()
