r"""MNIST-style digit classification with SROP tracking, driven by LightningCLI.

Offline by default, on scikit-learn's real handwritten digits resized to 28 x 28::

    python -m recipes.mnist                                   # = fit with the defaults below
    python -m recipes.mnist fit --config recipes/configs/mnist.yaml
    python -m recipes.mnist --data mnist                      # real MNIST (downloads once)
    python -m recipes.mnist fit --data.dataset mnist --data.data_dir /datasets \
        --trainer.max_epochs 10
    python -m recipes.mnist fit --config recipes/configs/mnist.yaml --trainer.default_root_dir /tmp/run

Logs, checkpoints and the summary go under ``trainer.default_root_dir`` (``runs/mnist``): a
logger whose ``save_dir`` is left at ``runs/mnist`` follows ``--trainer.default_root_dir``;
``--trainer.logger.init_args.save_dir DIR`` puts the logs alone elsewhere.

Every option of the model (``--model.*``), the data (``--data.*``), the trainer (``--trainer.*``),
the SROP callback (``--srop.*``) and the summary (``--summary.*``) is settable from the command
line or a YAML file; ``python -m recipes.mnist fit --print_config`` prints them all.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from recipes.data import DIGITS_MEAN, DIGITS_STD, digits_tensors, split_indices
from recipes.summary import SROPSummary, follow_root_dir

__all__ = ["DigitsDataModule", "SmallCNN", "main"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DATASETS = ("digits", "mnist")
#: The layers the recipe measures: SmallCNN's conv1, pool1, conv2, down, conv3 (not the ReLUs).
LAYERS = r"^features\.(conv\d|pool\d|down)$"


class SmallCNN(pl.LightningModule):
    """A small CNN for 1 x 28 x 28 digits: conv, max pooling, a strided convolution, conv, head.

    Layers (qualified names, as the SROP metrics show them): ``features.conv1`` (28 x 28),
    ``features.pool1`` (max pool 2 -> 14 x 14), ``features.conv2`` (14 x 14),
    ``features.down`` (stride-2 convolution -> 7 x 7), ``features.conv3`` (7 x 7).

    Args:
        num_classes: number of labels.
        channels: widths of the three stages.
        in_channels: input channels (1 for digits).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: tuple[int, int, int] = (16, 32, 64),
        in_channels: int = 1,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, c1, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2, 2)),
                    ("conv2", nn.Conv2d(c1, c2, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("down", nn.Conv2d(c2, c3, 3, stride=2, padding=1)),
                    ("relu3", nn.ReLU()),
                    ("conv3", nn.Conv2d(c3, c3, 3, padding=1)),
                    ("relu4", nn.ReLU()),
                ]
            )
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, num_classes))
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.features(x))
        return logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )


class _Normalized(Dataset[tuple[Tensor, int]]):
    """A tensor dataset of images in [0, 1], normalized on the fly."""

    def __init__(self, images: Tensor, labels: Tensor, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return (self.images[i] - self.mean) / self.std, int(self.labels[i])


class DigitsDataModule(pl.LightningDataModule):
    """Handwritten digits, 1 x 28 x 28: scikit-learn's digits (offline) or torchvision's MNIST.

    Args:
        dataset: ``"digits"`` (scikit-learn's 1797 real handwritten 8 x 8 digits resized to
            28 x 28, shipped with scikit-learn, no download) or ``"mnist"`` (torchvision's MNIST,
            60000 + 10000 images, downloaded into ``data_dir`` unless already there).
        data_dir: where MNIST lives or is downloaded to (torchvision's layout:
            ``{data_dir}/MNIST/raw/train-images-idx3-ubyte`` etc.).
        download: let torchvision download MNIST when it is missing.
        batch_size: batch size of both loaders.
        num_workers: DataLoader workers.
        val_fraction: share of the digits held out for validation (MNIST uses its test split).
        limit_train_samples: keep only this many training samples (None = all), e.g. for tests.
        seed: seed of the digits' train/validation split.
    """

    def __init__(
        self,
        dataset: Literal["digits", "mnist"] = "digits",
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        limit_train_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r} is not one of {DATASETS}")
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.limit_train_samples = limit_train_samples
        self.seed = seed
        self.train_set: Dataset[Any] | None = None
        self.val_set: Dataset[Any] | None = None

    def prepare_data(self) -> None:
        if self.dataset == "mnist":
            self._mnist(train=True)
            self._mnist(train=False)

    def _mnist(self, train: bool) -> Dataset[Any]:
        from torchvision import datasets, transforms

        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
        )
        raw = Path(self.data_dir) / "MNIST" / "raw"
        try:
            mnist: Dataset[Any] = datasets.MNIST(
                self.data_dir, train=train, transform=transform, download=self.download
            )
            return mnist
        except RuntimeError as error:
            how = (
                "the download failed (no internet?)"
                if self.download
                else "download is off (--data.download false)"
            )
            raise RuntimeError(
                f"MNIST not found in {raw} and {how}. Expected torchvision's raw files "
                "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                f"t10k-labels-idx1-ubyte in {raw} (or their .gz archives there, with "
                "--data.download true). Get them with internet access and --data.download "
                "true, copy them there by hand, or run the offline default --data digits."
            ) from error

    def setup(self, stage: str | None = None) -> None:
        if self.dataset == "mnist":
            train: Dataset[Any] = self._mnist(train=True)
            self.val_set = self._mnist(train=False)
        else:
            images, labels = digits_tensors(28)
            train_idx, val_idx = split_indices(len(labels), self.val_fraction, self.seed)
            train = _Normalized(images[train_idx], labels[train_idx], DIGITS_MEAN, DIGITS_STD)
            self.val_set = _Normalized(images[val_idx], labels[val_idx], DIGITS_MEAN, DIGITS_STD)
        if self.limit_train_samples is not None:
            train = Subset(train, range(min(self.limit_train_samples, len(train))))  # type: ignore[arg-type]
        self.train_set = train

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.train_set is not None, "call setup() first"
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            generator=generator,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader[Any]:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(
            self.val_set,
            batch_size=256,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


def tensor_dataset(images: Tensor, labels: Tensor) -> TensorDataset:
    """Tiny helper for experiments: a TensorDataset of ``(images, labels)``."""
    return TensorDataset(images, labels)


class SROPCLI(LightningCLI):
    """LightningCLI with the SROP callback and the summary as configurable callback groups."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        from lightning_srop import SROPCallback

        parser.add_lightning_class_args(SROPCallback, "srop")
        parser.add_lightning_class_args(SROPSummary, "summary")
        parser.set_defaults({"srop.layers": LAYERS})
        parser.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch intra-op CPU threads (0 = torch's default). 1 is the fastest for this "
            "small CNN, and stays fast on a busy or shared CPU where more threads stall.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("threads", 0) > 0:
            torch.set_num_threads(config["threads"])
        follow_root_dir(config["trainer"], (DEFAULT_ROOT_DIR,))


SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_ROOT_DIR = "runs/mnist"
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 15,
    "default_root_dir": DEFAULT_ROOT_DIR,
    "deterministic": True,
    "log_every_n_steps": 10,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": DEFAULT_ROOT_DIR, "name": "tensorboard"},
    },
}


def normalize_args(args: Sequence[str] | None) -> list[str]:
    """Make the short spellings work: no subcommand means ``fit``; ``--data NAME`` means
    ``--data.dataset NAME`` for NAME in ``("digits", "mnist")``."""
    out = list(sys.argv[1:] if args is None else args)
    i = 0
    while i < len(out):
        arg = out[i]
        if arg == "--data" and i + 1 < len(out) and out[i + 1] in DATASETS:
            out[i : i + 2] = ["--data.dataset", out[i + 1]]
        elif arg.startswith("--data=") and arg.split("=", 1)[1] in DATASETS:
            out[i] = "--data.dataset=" + arg.split("=", 1)[1]
        i += 1
    if not any(a in SUBCOMMANDS for a in out) and not any(a in ("-h", "--help") for a in out[:1]):
        out.insert(0, "fit")
    return out


def main(args: Sequence[str] | None = None, run: bool = True) -> SROPCLI:
    """Entry point of ``python -m recipes.mnist``; ``args`` replaces ``sys.argv[1:]``.

    With ``run=True`` the short spellings of :func:`normalize_args` apply.
    """
    cli_args: list[str] | None
    if args is None:
        if run:
            sys.argv[1:] = normalize_args(sys.argv[1:])
        cli_args = None
    else:
        cli_args = normalize_args(args) if run else list(args)
    return SROPCLI(
        SmallCNN,
        DigitsDataModule,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        args=cli_args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
