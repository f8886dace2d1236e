"""``profile``'s model and data: a torchvision model or a LightningModule class (a checkpoint),
and an image folder, the bundled digits or a torchvision data set, transformed for the model."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import Dataset

from lightning_srop.cli.parser import (
    Profile,
    _Failure,
    _one_line,
    _Usage,
)
from lightning_srop.layers import import_object

if TYPE_CHECKING:
    from torch import Tensor

#: ImageNet statistics (torchvision's pretrained models expect them).
_IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
_IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)
# ---------------------------------------------------------------------------------------------
# profile: model


def _class_model(args: Profile) -> nn.Module:
    try:
        cls = import_object(args.model)
    except LookupError as err:
        raise _Usage(f"--model {args.model!r}: {err}.") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise _Usage(f"--model {args.model!r} is not an nn.Module / LightningModule class.")
    if args.weights.lower() != "none":
        raise _Usage("--weights is for torchvision models; a class path takes --checkpoint.")
    if args.checkpoint is None:
        try:
            built: nn.Module = cls()
            return built
        except TypeError as err:
            raise _Usage(
                f"--model {args.model!r} cannot be built without arguments ({err}); give "
                "--checkpoint to load a LightningModule with its saved hyperparameters."
            ) from err
    if not issubclass(cls, LightningModule):
        raise _Usage(
            f"--checkpoint needs a LightningModule class; {args.model!r} is a plain nn.Module."
        )
    if not Path(args.checkpoint).is_file():
        raise _Usage(f"--checkpoint {args.checkpoint!r}: no such file.")
    return cls.load_from_checkpoint(args.checkpoint, map_location="cpu")


def _torchvision_model(args: Profile) -> nn.Module:
    import torch
    from torchvision import models

    name = args.model
    known = models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise _Usage(
            f"--model {name!r} is neither a torchvision model name nor a class path "
            f"(mypkg.MyModule).{hint}"
        )
    if args.checkpoint is not None:
        raise _Usage("--checkpoint needs --model as a LightningModule class path.")
    if args.weights.lower() == "none":
        return typing.cast("nn.Module", models.get_model(name, weights=None))
    try:
        weights = models.get_model_weights(name).verify(args.weights)
    except (KeyError, ValueError):
        names = ["none", "DEFAULT", *(w.name for w in models.get_model_weights(name))]
        raise _Usage(
            f"--weights {args.weights!r} for {name}: valid choices: {', '.join(names)}."
        ) from None
    try:
        return typing.cast("nn.Module", models.get_model(name, weights=weights))
    except OSError as err:  # URLError without a network, an unwritable cache
        target = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
        raise _Failure(
            f"cannot load the weights {name}.{weights.name} ({_one_line(str(err))}): they "
            f"download from {weights.url} into {target}; without internet, copy that file "
            "there (or point TORCH_HOME elsewhere), or use --weights none."
        ) from err


def _input_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution (``None`` when it has none)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(module.in_channels)
    return None


# ---------------------------------------------------------------------------------------------
# profile: data


class _Channels:
    """Convert a PIL image to grayscale (1 channel) or RGB (3 channels)."""

    def __init__(self, channels: int) -> None:
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, image: Any) -> Any:
        return image.convert(self.mode)


def _image_transform(size: int, channels: int) -> Callable[[Any], Tensor]:
    from torchvision import transforms as T

    if channels == 1:
        mean: Sequence[float] = (sum(_IMAGENET_MEAN) / 3,)
        std: Sequence[float] = (sum(_IMAGENET_STD) / 3,)
    else:
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    return T.Compose(  # type: ignore[no-any-return]
        [
            _Channels(channels),
            T.Resize(size),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def _digits(size: int, channels: int) -> Dataset[Any]:
    """scikit-learn's 1797 handwritten digits at ``size`` px (MNIST-like margin), normalized."""
    from torch.utils.data import TensorDataset

    from lightning_srop.data import DIGITS_MEAN, DIGITS_STD, digits_tensors

    images, labels = digits_tensors(size)
    images = (images - DIGITS_MEAN) / DIGITS_STD
    if channels != 1:
        images = images.expand(-1, channels, -1, -1)
    return TensorDataset(images.contiguous(), labels)


def _torchvision_dataset(
    name: str, args: Profile, transform: Callable[[Any], Tensor]
) -> Dataset[Any]:
    from torchvision import datasets

    cls = getattr(datasets, name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"transform": transform}
    if "download" in params:
        kwargs["download"] = args.download
    if "train" in params:
        kwargs["train"] = args.split == "train"
    elif "split" in params:
        kwargs["split"] = args.split or "test"
    try:
        return typing.cast("Dataset[Any]", cls(args.data_dir, **kwargs))
    except OSError as err:
        raise _Failure(
            f"cannot download {name} into {args.data_dir} ({_one_line(str(err))}); without "
            "internet, put the files there by hand."
        ) from err
    except RuntimeError as err:
        fix = "" if args.download else "; add --download to fetch it"
        raise _Failure(f"{name} in {args.data_dir}: {_one_line(str(err))}{fix}") from err


def _torchvision_dataset_names() -> list[str]:
    from torchvision import datasets

    return [
        n for n in getattr(datasets, "__all__", []) if isinstance(getattr(datasets, n, None), type)
    ]


def _dataset(args: Profile, channels: int) -> Dataset[Any]:
    if args.image_size is not None and args.image_size < 1:
        raise _Usage(f"--image-size must be a positive number of pixels; got {args.image_size}.")
    if args.data == "digits":
        return _digits(args.image_size or 28, channels)
    size = args.image_size or 224
    transform = _image_transform(size, channels)
    folder = Path(args.data)
    if folder.is_dir():
        from torchvision.datasets import ImageFolder

        try:
            images: Dataset[Any] = ImageFolder(str(folder), transform=transform)
            return images
        except (FileNotFoundError, OSError) as err:
            raise _Usage(
                f"--data {args.data!r} is not an image folder (<dir>/<class>/<image>): "
                f"{_one_line(str(err))}"
            ) from err
    names = _torchvision_dataset_names()
    if args.data in names:
        return _torchvision_dataset(args.data, args, transform)
    if folder.exists():
        raise _Usage(f"--data {args.data!r} is a file, not an image folder.")
    close = difflib.get_close_matches(args.data, [*names, "digits"], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise _Usage(
        f"--data {args.data!r}: no such image folder, and not 'digits' or a torchvision data "
        f"set name.{hint}"
    )
