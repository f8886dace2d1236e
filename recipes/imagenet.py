r"""ImageNet classification with SROP tracking: torchvision classifiers, driven by LightningCLI.

::

    # train (one CPU ... 8 x N GPUs: the same config; set devices / num_nodes / strategy)
    python -m recipes.imagenet fit --config recipes/configs/imagenet.yaml \
        --data.data_dir /datasets/imagenet
    python -m recipes.imagenet fit --config recipes/configs/imagenet_ddp.yaml \
        --trainer.num_nodes 4 --data.data_dir /datasets/imagenet
    # profile a pretrained model without training
    python -m recipes.imagenet validate --config recipes/configs/imagenet_validate.yaml \
        --data.data_dir /datasets/imagenet

Models (``--model.arch``): see :data:`ARCHS`. ``*_blurpool`` are the anti-aliased ResNets of
Zhang (2019) built by :func:`recipes.blurpool.antialias_resnet`. Weights: ``--model.weights
null`` (random init) or ``DEFAULT`` / a torchvision weight name (downloaded once into the torch
hub cache; the blur-pool variants load the plain ResNet's weights before the swap).

Data (``--data.data_dir``): ``--data.layout imagefolder`` expects ``{data_dir}/train/<class>/*``
and ``{data_dir}/val/<class>/*`` (torchvision ``ImageFolder``); ``--data.layout imagenet`` uses
torchvision's ``ImageNet`` (``ILSVRC2012_img_train.tar``, ``ILSVRC2012_img_val.tar`` and
``ILSVRC2012_devkit_t12.tar.gz`` in ``data_dir``; torchvision unpacks them on first use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from recipes.blurpool import antialias_resnet
from recipes.summary import SROPSummary, follow_root_dir

__all__ = ["ARCHS", "ImageNetClassifier", "ImageNetDataModule", "build_model", "main"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Valid ``arch`` names: a torchvision builder name, or ``<resnet>_blurpool``.
ARCHS: tuple[str, ...] = (
    "alexnet",
    "vgg11",
    "vgg16",
    "vgg16_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet18_blurpool",
    "resnet50_blurpool",
)


def build_model(
    arch: str, weights: str | None = None, num_classes: int = 1000, blur_filter_size: int = 3
) -> nn.Module:
    """A torchvision classifier by name, random (``weights=None``) or pretrained.

    With pretrained weights and ``num_classes != 1000`` the last linear layer is replaced by a
    fresh one with ``num_classes`` outputs.
    """
    from torchvision import models

    if arch not in ARCHS:
        raise ValueError(f"unknown model arch={arch!r}; valid choices: {', '.join(ARCHS)}")
    base = arch.removesuffix("_blurpool")
    builder: Callable[..., nn.Module] = getattr(models, base)
    if weights is None:
        model = builder(weights=None, num_classes=num_classes)
    else:
        try:
            resolved = models.get_model_weights(base).verify(weights)
        except (ValueError, KeyError) as error:
            names = ["DEFAULT", *(w.name for w in models.get_model_weights(base))]
            raise ValueError(
                f"unknown weights={weights!r} for {base}; valid choices: {', '.join(names)}"
            ) from error
        try:
            model = builder(weights=resolved)
        except OSError as error:  # URLError, no network, unwritable cache
            import torch.hub

            target = Path(torch.hub.get_dir()) / "checkpoints" / resolved.url.rsplit("/", 1)[-1]
            raise RuntimeError(
                f"could not load the pretrained weights {base}.{resolved.name} ({error}). "
                f"They download from {resolved.url} into {target}; without internet, copy that "
                "file there by hand, or use --model.weights null for random weights."
            ) from error
        if num_classes != 1000:
            _replace_head(model, num_classes)
    if arch.endswith("_blurpool"):
        antialias_resnet(model, filter_size=blur_filter_size)
    return model


def _replace_head(model: nn.Module, num_classes: int) -> None:
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        model.fc = nn.Linear(fc.in_features, num_classes)
        return
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        classifier[-1] = nn.Linear(classifier[-1].in_features, num_classes)
        return
    raise TypeError(f"do not know how to replace the head of {type(model).__name__}")


class ImageNetClassifier(pl.LightningModule):
    """A torchvision classifier trained with SGD + cosine schedule, top-1/top-5 accuracy logged.

    Args:
        arch: one of :data:`ARCHS`.
        weights: ``None`` (random init), ``"DEFAULT"`` or a torchvision weight name.
        num_classes: number of labels (1000 for ImageNet).
        lr: SGD learning rate (for a total batch of 256; scale it with the batch size).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        label_smoothing: cross-entropy label smoothing.
        blur_filter_size: taps of the binomial filter of the ``*_blurpool`` variants.
        channels_last: use the channels-last memory format (faster with mixed precision).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        weights: str | None = None,
        num_classes: int = 1000,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
        blur_filter_size: int = 3,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(arch, weights, num_classes, blur_filter_size)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        top5 = min(5, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes=num_classes, top_k=top5, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)  # type: ignore[no-any-return]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True, sync_dist=False)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.val_acc5(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/acc5", self.val_acc5)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.parameters(),
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            weight_decay=self.hparams["weight_decay"],
        )
        epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 90
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


class ImageNetDataModule(pl.LightningDataModule):
    """ImageNet (or any ImageFolder tree) with the standard torchvision transforms.

    Train: ``RandomResizedCrop(image_size)``, horizontal flip; validation:
    ``Resize(resize_size)``, ``CenterCrop(image_size)``; both normalized with ImageNet's
    mean and std.

    Args:
        data_dir: the data set's root (see ``layout``).
        layout: ``"imagefolder"``: ``{data_dir}/{train_split}/<class>/<image>`` and
            ``{data_dir}/{val_split}/<class>/<image>``; ``"imagenet"``: torchvision's
            ``ImageNet`` (the ILSVRC2012 archives and devkit in ``data_dir``).
        batch_size: per-device batch size.
        num_workers: DataLoader workers per device.
        image_size: crop size.
        resize_size: validation resize before the center crop.
        train_split: train folder name (``imagefolder``).
        val_split: validation folder name (``imagefolder``).
        pin_memory: pin host memory (GPU training).
    """

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        layout: Literal["imagefolder", "imagenet"] = "imagefolder",
        batch_size: int = 64,
        num_workers: int = 8,
        image_size: int = 224,
        resize_size: int = 256,
        train_split: str = "train",
        val_split: str = "val",
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if layout not in ("imagefolder", "imagenet"):
            raise ValueError(f"layout={layout!r} is not one of ('imagefolder', 'imagenet')")
        self.data_dir = data_dir
        self.layout = layout
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.resize_size = resize_size
        self.train_split = train_split
        self.val_split = val_split
        self.pin_memory = pin_memory
        self.train_set: Dataset[Any] | None = None
        self.val_set: Dataset[Any] | None = None

    def _transform(self, train: bool) -> Callable[[Any], Tensor]:
        from torchvision import transforms as T

        if train:
            steps: list[Any] = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            steps = [T.Resize(self.resize_size), T.CenterCrop(self.image_size)]
        return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # type: ignore[no-any-return]

    def _dataset(self, train: bool) -> Dataset[Any]:
        from torchvision import datasets

        root = Path(self.data_dir)
        transform = self._transform(train)
        if self.layout == "imagenet":
            split = "train" if train else "val"
            try:
                imagenet: Dataset[Any] = datasets.ImageNet(
                    str(root), split=split, transform=transform
                )
                return imagenet
            except (RuntimeError, FileNotFoundError) as error:
                raise FileNotFoundError(
                    f"torchvision ImageNet ({split}) could not be loaded from {root}: {error}. "
                    "Expected ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
                    f"ILSVRC2012_devkit_t12.tar.gz in {root} (download them from "
                    "https://image-net.org after registering), or use --data.layout imagefolder "
                    "with class sub-folders."
                ) from error
        folder = root / (self.train_split if train else self.val_split)
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise FileNotFoundError(
                f"no ImageFolder tree at {folder}: expected {folder}/<class name>/<image files> "
                f"(layout 'imagefolder', data_dir={str(root)!r}). Point --data.data_dir at an "
                "ImageNet copy with train/ and val/ class folders (e.g. the ILSVRC2012 archives "
                "from https://image-net.org unpacked with the usual valprep.sh), or use "
                "--data.layout imagenet for torchvision's ImageNet archives."
            )
        images: Dataset[Any] = datasets.ImageFolder(str(folder), transform=transform)
        return images

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, TrainerFn.FITTING, "fit"):
            self.train_set = self._dataset(train=True)
        self.val_set = self._dataset(train=False)

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.train_set is not None, "call setup('fit') first"
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader[Any]:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )


class ImageNetCLI(LightningCLI):
    """LightningCLI with the SROP callback and the summary as configurable callback groups."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        from lightning_srop import SROPCallback

        parser.add_lightning_class_args(SROPCallback, "srop")
        parser.add_lightning_class_args(SROPSummary, "summary")
        parser.add_argument(
            "--threads",
            type=int,
            default=0,
            help="torch intra-op CPU threads (0 = torch's default)",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("threads", 0) > 0:
            torch.set_num_threads(config["threads"])
        follow_root_dir(config["trainer"], ("runs/imagenet", "runs/imagenet_validate"))


TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 90,
    "default_root_dir": "runs/imagenet",
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs/imagenet", "name": "tensorboard"},
    },
}


def main(args: Sequence[str] | None = None, run: bool = True) -> ImageNetCLI:
    """Entry point of ``python -m recipes.imagenet {fit,validate,...}``."""
    return ImageNetCLI(
        ImageNetClassifier,
        ImageNetDataModule,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        args=None if args is None else list(args),
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
