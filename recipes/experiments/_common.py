"""Helpers shared by the experiments: data, training, hooks, SROP means, CSV output."""

from __future__ import annotations

import argparse
import csv
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import spectral_rolloff

__all__ = [
    "Timer",
    "add_common_arguments",
    "benchmark_pool",
    "capture",
    "digit_data",
    "evaluate",
    "mean_srop",
    "parse_args",
    "train_model",
    "write_csv",
]


def digit_data(
    data: str = "digits",
    data_dir: str = "data",
    *,
    download: bool = False,
    max_train: int | None = None,
    max_val: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and validation digits as ``(N, 1, 28, 28)`` floats in [0, 1] with labels.

    ``data="digits"``: scikit-learn's digits (offline), split 80/20 with ``seed``;
    ``data="mnist"``: torchvision's MNIST from ``data_dir`` (downloaded with ``download``).
    ``max_train`` / ``max_val`` keep the first samples of a seeded shuffle.
    """
    if data == "digits":
        from recipes.data import digits_tensors, split_indices

        images, labels = digits_tensors(28)
        train_idx, val_idx = split_indices(len(labels), 0.2, seed)
        tx, ty, vx, vy = images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
    elif data == "mnist":
        from recipes.mnist import DigitsDataModule

        module = DigitsDataModule("mnist", data_dir=data_dir, download=download)
        train, val = module._mnist(train=True), module._mnist(train=False)
        tx = train.data.unsqueeze(1).float() / 255.0  # type: ignore[attr-defined]
        ty = train.targets.clone()  # type: ignore[attr-defined]
        vx = val.data.unsqueeze(1).float() / 255.0  # type: ignore[attr-defined]
        vy = val.targets.clone()  # type: ignore[attr-defined]
    else:
        raise ValueError(f"data={data!r} is not one of ('digits', 'mnist')")
    generator = torch.Generator().manual_seed(seed)
    if max_train is not None:
        keep = torch.randperm(len(ty), generator=generator)[:max_train]
        tx, ty = tx[keep], ty[keep]
    if max_val is not None:
        keep = torch.randperm(len(vy), generator=generator)[:max_val]
        vx, vy = vx[keep], vy[keep]
    return tx, ty, vx, vy


def train_model(
    model: pl.LightningModule,
    train_x: Tensor,
    train_y: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    callbacks: Sequence[pl.Callback] = (),
    val: tuple[Tensor, Tensor] | None = None,
) -> pl.LightningModule:
    """Fit ``model`` with a quiet, deterministic Lightning ``Trainer`` on CPU tensors."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True, generator=generator
    )
    val_loader = DataLoader(TensorDataset(*val), batch_size=512) if val is not None else None
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if val_loader is not None else 0,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*`val_dataloader`.*")
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer.fit(model, loader, val_loader)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


def mean_srop(maps: Tensor, roll_percent: float = 0.85) -> float:
    """Mean SROP over all maps of ``maps`` (``(..., H, W)``), flat maps left out; NaN if none."""
    srop = spectral_rolloff(maps.float(), roll_percent)
    srop = srop[~torch.isnan(srop)]
    return float(srop.mean()) if srop.numel() else math.nan


def benchmark_pool(x: Tensor, times: int = 1) -> Tensor:
    """The paper's benchmark downscaling: max pooling with kernel 2 and stride 2, ``times`` times."""
    for _ in range(times):
        x = F.max_pool2d(x, kernel_size=2, stride=2)
    return x


@contextmanager
def capture(
    model: nn.Module, names: Iterable[str], *, inputs: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Record the outputs (and with ``inputs``, ``{name}:in`` the first inputs) of named modules.

    The hooks exist only inside the ``with`` block; the dict is filled by forward passes inside
    it (the last pass wins).
    """
    modules = dict(model.named_modules())
    store: dict[str, Tensor] = {}
    handles = []
    for name in names:
        if name not in modules:
            raise KeyError(f"no module named {name!r}; some valid names: {list(modules)[:20]}")

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any, name: str = name) -> None:
            store[name] = output.detach()
            if inputs:
                store[f"{name}:in"] = args[0].detach()

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts with the same keys) to ``path``; floats with 6 significant digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError("no rows to write")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    return path


class Timer:
    """Wall-clock seconds since creation (``elapsed``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def add_common_arguments(parser: argparse.ArgumentParser, *, training: bool) -> None:
    """The options every experiment shares: seed and threads, plus data and training ones."""
    if training:
        parser.add_argument("--epochs", type=int, default=8)
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
        parser.add_argument("--data-dir", default="data", help="MNIST root (torchvision layout)")
        parser.add_argument("--download", action="store_true", help="download MNIST if missing")
        parser.add_argument(
            "--max-train", type=int, default=None, help="keep this many train images"
        )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = torch's default); 1 is fastest for "
        "these tiny models on a busy or small CPU",
    )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and apply ``--threads``."""
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return args
