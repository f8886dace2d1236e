"""The ``lightning-srop`` command line: profile a model, compare reports, export a run.

``profile`` measures a torchvision model or a checkpointed LightningModule over an image
folder, the bundled digits or a torchvision data set, on one device
(:func:`~lightning_srop.profile.profile`) or through Lightning's ``Trainer.validate`` with an
:class:`~lightning_srop.callback.SROPCallback` (several devices or nodes). ``compare`` draws
saved reports and run directories on one figure; ``export`` writes a logged run's curves.

The parser is jsonargparse's (as ``LightningCLI``'s): flags, help and choices come from the
signatures, docstrings and ``Literal`` types of :class:`~lightning_srop.options.SROPOptions`
and of the subcommands' argument classes (:class:`Profile`, :class:`Compare`,
:class:`Export`). Flags are dashed (``--roll-percent``); list flags take several values
(``--stats mean q75``), mapping flags ``NAME=VALUE`` items (``--layout conv1=NHWC``), boolean
flags stand alone (``--keep-dc``). Bad arguments end with one line on stderr and exit code 2;
failures that are not the arguments' fault (a download) with one line and exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import inspect
import logging
import math
import re
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, Union

from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_srop.options import SROPOptions, Unit
from lightning_srop.report import SROPReport, format_table, write_csv
from lightning_srop.statistics import Statistic

if TYPE_CHECKING:
    import torch
    from jsonargparse import ArgumentParser, Namespace
    from torch import Tensor

__all__ = ["PROG", "Compare", "Export", "Profile", "build_options", "build_parser", "main"]

#: The command's name (also the console script).
PROG: Final[str] = "lightning-srop"

#: Command-line forms of SROPOptions fields whose Python type says less than the command line
#: can: ``--num-batches all`` (None), statistic names checked as choices.
_CLI_TYPES: Final[dict[str, Any]] = {
    "num_batches": int | Literal["all"],
    "stats": Sequence[Statistic],
}

#: ImageNet statistics (torchvision's pretrained models expect them).
_IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
_IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)


class _Failure(Exception):
    """A failure that is not the arguments' fault: one line on stderr, exit code 1."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# The subcommands' arguments (their fields are the flags; SROPOptions' fields join profile's)


@dataclasses.dataclass
class Profile:
    """Measure per-layer SROPs of a model over data; write <out>/report.json, .csv and .png.

    Args:
        model: a torchvision model name (resnet18, vgg16, ...) or the class path of a
            LightningModule / nn.Module (mypkg.models.MyNet).
        data: an image folder (<dir>/<class>/<image>), 'digits' (scikit-learn's bundled
            handwritten digits, 28 px) or a torchvision data set name (CIFAR10, MNIST, ...).
        weights: torchvision weights: none (random, seeded by --seed), DEFAULT or a weight
            name such as IMAGENET1K_V1.
        checkpoint: a Lightning checkpoint for a LightningModule class path
            (load_from_checkpoint).
        data_dir: root of a torchvision data set.
        download: download a torchvision data set if missing.
        split: split of a torchvision data set (default: the test/validation split).
        image_size: resize and center-crop images to this many pixels (default: 224; 28 for
            digits).
        batch_size: images per batch.
        workers: DataLoader workers.
        device: device of a one-device run: auto (cuda if available, else cpu), cpu, cuda:0.
        autocast: run the forward passes under mixed precision (SROPs stay float32).
        seed: seed of random weights.
        devices: devices per node; more than 1 runs Lightning's Trainer.validate.
        num_nodes: nodes of a Trainer run.
        strategy: Lightning strategy of a distributed run (ddp, ddp_spawn, fsdp, ...); setting
            one runs the Trainer even on one device.
        accelerator: Lightning accelerator of a Trainer run: auto, cpu, gpu, ...
        out: output folder.
        label: the report's label (default: the model name).
    """

    model: str
    data: str
    weights: str = "none"
    checkpoint: str | None = None
    data_dir: str = "data"
    download: bool = False
    split: str | None = None
    image_size: int | None = None
    batch_size: int = 32
    workers: int = 0
    device: str = "auto"
    autocast: Literal["bf16", "fp16"] | None = None
    seed: int = 0
    devices: int = 1
    num_nodes: int = 1
    strategy: str | None = None
    accelerator: str = "auto"
    out: str = "srop_profile"
    label: str | None = None


@dataclasses.dataclass
class Compare:
    """Draw saved reports on one figure and write their means side by side.

    Args:
        reports: report JSON files (written by profile), or run directories (their last
            measured epoch).
        labels: one label per report (default: each report's label, else its folder).
        log: log-scale SROP axis.
        unit: cycles per pixel of each layer's grid, or per input pixel.
        title: figure title.
        prefix: logging prefix of run directories.
        out: output folder.
    """

    reports: list[str]
    labels: list[str] | None = None
    log: bool = False
    unit: Unit = "layer"
    title: str | None = None
    prefix: str = "srop"
    out: str = "srop_compare"


@dataclasses.dataclass
class Export:
    """Read the SROP scalars of a TensorBoard / CSV run and write them out.

    Args:
        run: a run directory (TensorBoard or CSV logs).
        prefix: logging prefix of the SROP scalars.
        statistic: statistic drawn over epochs.
        out: output folder.
    """

    run: str
    prefix: str = "srop"
    statistic: Statistic = "mean"
    out: str = "srop_export"


_EXAMPLES: Final[dict[str, str]] = {
    "": """\
  lightning-srop profile --model resnet18 --data path/to/images --out srop_resnet18
  lightning-srop compare a/report.json b/report.json --labels a b
  lightning-srop export lightning_logs/version_0
  lightning-srop profile --help
""",
    "profile": """\
  # a random-weight ResNet-18 on an image folder (<dir>/<class>/<image>), 224 px
  lightning-srop profile --model resnet18 --data path/to/val --num-batches 10

  # pretrained weights (downloaded once into the torch hub cache), SROPs per input pixel
  lightning-srop profile --model resnet50 --weights DEFAULT --data path/to/val --unit input

  # a checkpointed LightningModule on scikit-learn's bundled digits, two layers only
  lightning-srop profile --model mypkg.models.MyNet --checkpoint last.ckpt --data digits \\
      --layers features.conv1 features.pool1

  # a torchvision data set, downloaded into ./data
  lightning-srop profile --model resnet18 --data CIFAR10 --data-dir data --download --image-size 32

  # several GPUs through Lightning's DDP strategy (rank 0 writes the files)
  lightning-srop profile --model resnet50 --data /data/imagenet/val --devices 8 --strategy ddp

writes <out>/report.json, <out>/report.csv and <out>/report.png and prints the table.
""",
    "compare": """\
  # two saved reports, labelled, on a log axis
  lightning-srop compare random/report.json trained/report.json --labels random trained --log

  # a report next to the last epoch of a logged run
  lightning-srop compare before/report.json lightning_logs/version_3 --unit input --out cmp

writes <out>/compare.png and <out>/compare.csv (one row per layer, a column of means per label).
""",
    "export": """\
  # the SROP curves of a TensorBoard or CSV run as CSV, JSON and a figure
  lightning-srop export lightning_logs/version_0 --out srop_export

  # another logging prefix and the median instead of the mean in the figure
  lightning-srop export runs/mnist --prefix val_srop --statistic median

writes <out>/srop.csv, <out>/srop.json and <out>/srop.png .
""",
}


# ---------------------------------------------------------------------------------------------
# The parser: jsonargparse, with dashed flags, one-line errors and examples in the help


def _parser(**kwargs: Any) -> ArgumentParser:
    """A jsonargparse ``ArgumentParser`` whose help keeps the examples' line breaks and whose
    errors are one line (no usage block), exit code 2. (jsonargparse comes with the cli
    extra, hence imported here.)"""
    from jsonargparse import ArgumentParser, DefaultHelpFormatter

    class Help(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        def _get_type_str(self, action: argparse.Action) -> str | None:
            shown = super()._get_type_str(action)  # short ones (int, str | null), no choices
            return shown if shown and len(shown) < 20 and "Literal" not in shown else None

    class Parser(ArgumentParser):
        def error(self, message: str, ex: Exception | None = None) -> NoReturn:
            parser = getattr(ex, "subcommand_parser", None) or self
            commands = self._subcommands_action.choices if self._subcommands_action else {}
            named = re.search(rf"\b({'|'.join(commands) or '-'})\.(\w+)\b", message)
            if named:  # "profile.data": a subcommand's key, in a message of the main parser
                parser = commands[named[1]]
                message = re.sub(rf"\b{named[1]}\.(\w+)\b", r'"\1"', message)
            print(f"{parser.prog}: error: {_flagged(parser, message)}", file=sys.stderr)
            raise SystemExit(2)

    return Parser(formatter_class=Help, **kwargs)


def _choices(hint: Any) -> list[Any]:
    """The ``Literal`` values anywhere in a type hint (``Sequence[Literal[...]]`` too)."""
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    return list(dict.fromkeys(c for arg in typing.get_args(hint) for c in _choices(arg)))


def _expected(hint: Any) -> str:
    """What a flag of type ``hint`` takes, in words: its choices, or its types and choices."""
    members = [t for t in _members(hint) if t is not type(None)]
    others = [getattr(t, "__name__", str(t)) for t in members if not _choices(t)]
    if not others:
        return ", ".join(map(str, _choices(hint)))
    return " or ".join([*others, *map(repr, _choices(hint))])


def _flagged(parser: argparse.ArgumentParser, message: str) -> str:
    """An error in command-line words, on one line: names of arguments as their flags, a
    rejected value with the valid choices."""
    flags = {a.dest: (a.option_strings or [str(a.metavar or a.dest)])[0] for a in parser._actions}
    key = re.match(r'Parser key "(\w+)"', message)
    if key and key[1] in flags:
        hint = next(getattr(a, "_typehint", None) for a in parser._actions if a.dest == key[1])
        got = re.search(r"Got value: (.*)", message) or re.search(r"Given value: (.*)", message)
        value = got[1] if got else "?"
        if all(_choices(t) for t in _members(hint) if t is not type(None)):
            return f"{flags[key[1]]}: invalid choice: {value!r} (choose from {_expected(hint)})"
        return f"{flags[key[1]]}: invalid value {value!r}; expected {_expected(hint)}"
    message = re.sub(r"[`\"](\w+)[`\"]", lambda m: flags.get(m[1], m[0]), message)
    return _one_line(message.removeprefix(f"{parser.prog}: "))


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)


def _item_type(hint: Any) -> Any:
    """The type of one command-line value of a list- or mapping-valued type (``None`` for
    other types): list items, or ``NAME=VALUE`` items of a mapping (and a plain value)."""
    for member in _members(hint):
        origin = typing.get_origin(member)
        if origin in (list, Sequence):
            return typing.get_args(member)[0]
        if origin in (dict, Mapping):
            return str
    return None


def _cli_forms(parser: ArgumentParser) -> None:
    """Adapt the flags jsonargparse made from signatures to the command line's spelling:
    dashes, lone boolean flags, several values for list and mapping types, plain help."""
    from jsonargparse._typehints import ActionTypeHint  # the action of typed flags

    for action in parser._actions:
        if not isinstance(action, ActionTypeHint):
            continue
        for option in action.option_strings:
            del parser._option_string_actions[option]
        action.option_strings = [s.replace("_", "-") for s in action.option_strings]
        hint = action._typehint = _CLI_TYPES.get(action.dest, action._typehint)
        item = _item_type(hint)
        if not action.option_strings:  # a positional argument: RUN
            action.metavar = action.dest.upper()
        if hint is bool:
            action.nargs, action.const = "?", True
        elif item is not None:  # several values, each of the item type
            action.option_strings = [s for s in action.option_strings if not s.endswith("+")]
            action.nargs, action._typehint = "+", item
            if action.default is not None:
                default = action.default
                action.default = [default] if isinstance(default, str) else list(default)
            action.metavar = action.dest.upper().removesuffix("S")
        for option in action.option_strings:
            parser._option_string_actions[option] = action
        help_text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", action.help or "")
        many = len(_choices(hint)) > 5  # listed in the help, not in the usage line
        if many and action.nargs is None:
            action.metavar = action.dest.upper()
        if _choices(hint) and (many or typing.get_origin(hint) is not Literal):
            help_text += f" Takes: {_expected(hint)}."
        action.help = help_text.replace("``", "")


def _plain(hint: Any, value: Any) -> Any:
    """A parsed value as a field of type ``hint`` takes it: ``NAME=VALUE`` items as a mapping,
    one value of a type that takes one as itself (``--layers 'conv\\d'`` is a pattern)."""
    if not isinstance(value, list) or _item_type(hint) is None:
        return value
    mapping = any(typing.get_origin(m) in (dict, Mapping) for m in _members(hint))
    if mapping and all("=" in v for v in value):
        return dict(v.rsplit("=", 1) for v in value)
    single = any(m is str or typing.get_origin(m) is Literal for m in _members(hint))
    if len(value) == 1 and single:
        return value[0]
    return value


def _fields(cls: type, args: Namespace) -> dict[str, Any]:
    """The parsed values of the fields of ``cls`` (a dataclass) as the fields take them."""
    hints = typing.get_type_hints(cls)
    return {k: _plain(_CLI_TYPES.get(k, hints[k]), args[k]) for k in hints if k in args}


def build_parser() -> ArgumentParser:
    """The ``lightning-srop`` parser with its ``profile``, ``compare`` and ``export``
    subcommands."""
    from lightning_srop import __version__

    parser = _parser(
        prog=PROG,
        description="Spectral roll-off points (SROPs) of feature maps, per layer.",
        epilog="examples:\n" + _EXAMPLES[""],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subcommands(dest="command", metavar="COMMAND")
    for name, cls in (("profile", Profile), ("compare", Compare), ("export", Export)):
        description = inspect.getdoc(cls).split("\n", 1)[0]  # type: ignore[union-attr]
        command = _parser(description=description, epilog="examples:\n" + _EXAMPLES[name])
        command.add_class_arguments(cls, as_group=False, as_positional=cls is not Profile)
        if cls is Profile:
            command.add_class_arguments(SROPOptions, skip={"owner"})
            group = (command.groups or {})["SROPOptions"]
            group.title = "measurement options (lightning_srop.SROPOptions)"
            group.description = None
            command.set_defaults(num_batches="all")
        _cli_forms(command)
        commands.add_subcommand(name, command, help=description)
        command.prog = f"{PROG} {name}"
    return parser


# ---------------------------------------------------------------------------------------------
# profile: model


def _import_object(path: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LookupError(f"cannot import module {module_name!r} ({err})") from err
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise LookupError(f"module {module_name!r} has no attribute {attribute!r}") from None


def _class_model(args: Profile, parser: argparse.ArgumentParser) -> nn.Module:
    try:
        cls = _import_object(args.model)
    except LookupError as err:
        parser.error(f"--model {args.model!r}: {err}.")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        parser.error(f"--model {args.model!r} is not an nn.Module / LightningModule class.")
    if args.weights.lower() != "none":
        parser.error("--weights is for torchvision models; a class path takes --checkpoint.")
    if args.checkpoint is None:
        try:
            built: nn.Module = cls()
            return built
        except TypeError as err:
            parser.error(
                f"--model {args.model!r} cannot be built without arguments ({err}); give "
                "--checkpoint to load a LightningModule with its saved hyperparameters."
            )
    if not issubclass(cls, LightningModule):
        parser.error(
            f"--checkpoint needs a LightningModule class; {args.model!r} is a plain nn.Module."
        )
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint!r}: no such file.")
    return cls.load_from_checkpoint(args.checkpoint, map_location="cpu")


def _torchvision_model(args: Profile, parser: argparse.ArgumentParser) -> nn.Module:
    import torch
    from torchvision import models

    name = args.model
    known = models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        parser.error(
            f"--model {name!r} is neither a torchvision model name nor a class path "
            f"(mypkg.MyModule).{hint}"
        )
    if args.checkpoint is not None:
        parser.error("--checkpoint needs --model as a LightningModule class path.")
    if args.weights.lower() == "none":
        return typing.cast("nn.Module", models.get_model(name, weights=None))
    try:
        weights = models.get_model_weights(name).verify(args.weights)
    except (KeyError, ValueError):
        names = ["none", "DEFAULT", *(w.name for w in models.get_model_weights(name))]
        parser.error(f"--weights {args.weights!r} for {name}: valid choices: {', '.join(names)}.")
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


def _dataset(args: Profile, parser: argparse.ArgumentParser, channels: int) -> Dataset[Any]:
    if args.image_size is not None and args.image_size < 1:
        parser.error(f"--image-size must be a positive number of pixels; got {args.image_size}.")
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
            parser.error(
                f"--data {args.data!r} is not an image folder (<dir>/<class>/<image>): "
                f"{_one_line(str(err))}"
            )
    names = _torchvision_dataset_names()
    if args.data in names:
        return _torchvision_dataset(args.data, args, transform)
    if folder.exists():
        parser.error(f"--data {args.data!r} is a file, not an image folder.")
    close = difflib.get_close_matches(args.data, [*names, "digits"], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    parser.error(
        f"--data {args.data!r}: no such image folder, and not 'digits' or a torchvision data "
        f"set name.{hint}"
    )


# ---------------------------------------------------------------------------------------------
# profile: one device (profile) or a Lightning Trainer


def _device(name: str, parser: argparse.ArgumentParser) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        parser.error(f"--device {name!r}: {_one_line(str(err))}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name!r}: CUDA is not available here; use --device cpu.")
    return device


def _counted(batches: Iterable[Any], input_key: str, counter: list[int]) -> Iterator[Any]:
    from lightning_srop.engine import batch_input

    for batch in batches:
        counter[0] += len(batch_input(batch, input_key, owner=PROG))
        yield batch


def _profile_one_device(
    model: nn.Module,
    dataset: Dataset[Any],
    options: SROPOptions,
    args: Profile,
    parser: argparse.ArgumentParser,
) -> tuple[SROPReport, int, str]:
    import torch

    from lightning_srop.profile import profile

    device = _device(args.device, parser)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    counter = [0]
    batches = _counted(loader, options.input_key, counter)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast or "")
    report = profile(model, batches, options=options, device=device, autocast=dtype)
    return report, counter[0], str(device)


class _Data(LightningDataModule):
    """The data of a Trainer run: each sample exactly once over all processes (no padding
    duplicates, unlike Lightning's default distributed sampler)."""

    def __init__(self, dataset: Dataset[Any], batch_size: int, workers: int) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers

    def val_dataloader(self) -> DataLoader[Any]:
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                self.dataset,  # type: ignore[arg-type]
                num_replicas=self.trainer.world_size,
                rank=self.trainer.global_rank,
                shuffle=False,
            )
        return DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers
        )


class _Measured(LightningModule):
    """A LightningModule whose ``validation_step`` calls ``model`` on the batch's input.

    The model is held as ``_forward_module``, a wrapper name that layer names leave out, so
    layers keep the names ``profile(model, ...)`` gives them (``layer1.0.conv1``).
    """

    def __init__(self, model: nn.Module, input_key: str) -> None:
        super().__init__()
        self._forward_module = model
        self.input_key = input_key

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        from lightning_srop.engine import batch_input

        self._forward_module(batch_input(batch, self.input_key, owner=PROG))


def _profile_trainer(
    model: nn.Module,
    dataset: Dataset[Any],
    options: SROPOptions,
    args: Profile,
) -> tuple[SROPReport | None, int, str]:
    from lightning.pytorch import Trainer

    from lightning_srop.callback import SROPCallback
    from lightning_srop.notices import SROPWarning

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*no logger is attached.*", category=SROPWarning)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # The callback logs values already merged over processes (the same on each).
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # Lightning vs torch
    option_values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    option_values.pop("owner")
    callback = SROPCallback(**option_values, log_histograms=False, log_figure=False)
    precision = {"bf16": "bf16-mixed", "fp16": "16-mixed"}.get(args.autocast or "", "32-true")
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy or "auto",
        precision=precision,  # type: ignore[arg-type]
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,  # the data module's sampler measures each sample once
        limit_val_batches=options.num_batches if options.num_batches is not None else 1.0,
    )
    module = _Measured(model, options.input_key)
    data = _Data(dataset, args.batch_size, args.workers)
    trainer.validate(module, datamodule=data, verbose=False)
    if not trainer.is_global_zero:
        return None, 0, ""
    report = callback.last_report
    assert report is not None, "SROPCallback measured nothing"
    world = trainer.world_size
    n = len(dataset)  # type: ignore[arg-type]
    per_rank = [len(range(rank, n, world)) for rank in range(world)]
    limit = None if options.num_batches is None else options.num_batches * args.batch_size
    counts = [p if limit is None else min(p, limit) for p in per_rank]
    images = sum(counts)
    batches = sum(math.ceil(c / args.batch_size) for c in counts)
    report = dataclasses.replace(report, epoch=None, step=None, num_batches=batches)
    where = f"{world} process{'es' if world > 1 else ''} ({trainer.strategy.__class__.__name__})"
    return report, images, where


def _profile_command(args: Profile, options: SROPOptions, parser: ArgumentParser) -> int:
    start = time.perf_counter()
    for flag in ("batch_size", "devices", "num_nodes"):
        if getattr(args, flag) < 1:
            parser.error(f"`{flag}` must be >= 1; got {getattr(args, flag)}.")
    if args.workers < 0:
        parser.error(f"`workers` must be >= 0; got {args.workers}.")
    trainer_run = args.devices > 1 or args.num_nodes > 1 or args.strategy is not None
    if trainer_run and args.device != "auto":
        parser.error("`device` is for one-device runs; a Trainer run takes `accelerator`.")

    import torch

    from lightning_srop.layers import resolve_layers

    torch.manual_seed(args.seed)  # random weights: the same model for the same seed
    build = _class_model if "." in args.model else _torchvision_model
    model = build(args, parser)
    try:
        resolve_layers(model, options.layers, owner=parser.prog)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    channels = _input_channels(model) or 3
    dataset = _dataset(args, parser, channels)
    label = args.label or args.model.rpartition(".")[2]

    measured = time.perf_counter()
    if trainer_run:
        report, images, where = _profile_trainer(model, dataset, options, args)
        if report is None:  # not rank zero: rank zero writes and prints
            return 0
    else:
        report, images, where = _profile_one_device(model, dataset, options, args, parser)
    done = time.perf_counter()
    report = dataclasses.replace(report, model=type(model).__name__, label=label)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.csv", out / "report.png"]
    report.to_json(paths[0], indent=1)
    report.to_csv(paths[1])
    from lightning_srop.plots import plot_reports, save_figure

    title = f"SROP per layer: {label} ({images} images)"
    save_figure(plot_reports([report], unit=options.unit, title=title), paths[2])
    print(report.table())
    print(f"wrote {', '.join(map(str, paths))}")
    print(
        f"measured {len(report)} layers over {images} images ({report.num_batches} batches) "
        f"on {where} in {done - measured:.2f} s ({time.perf_counter() - start:.2f} s in all)"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# compare and export; their CSV file and their table


def _number(value: float, digits: int | None = None) -> str:
    """A CSV cell (full precision) or, with ``digits``, a table cell; NaN as empty."""
    if math.isnan(value):
        return ""
    return repr(float(value)) if digits is None else f"{value:.{digits}f}"


def _unique(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out: list[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _read_reports(args: Compare, parser: ArgumentParser) -> tuple[list[SROPReport], list[str]]:
    """The reports to compare (files, or the last epoch of run directories), default labels."""
    reports: list[SROPReport] = []
    defaults: list[str] = []
    for source in args.reports:
        path = Path(source)
        if path.is_dir():
            from lightning_srop.runs import read_run

            try:
                found = read_run(path, prefix=args.prefix)
            except (ValueError, OSError) as err:
                parser.error(str(err))
            if not found:
                parser.error(f"{source!r}: no SROP scalars with prefix {args.prefix!r}.")
            report = found[-1]
            epoch = "" if report.epoch is None else f" epoch {report.epoch}"
            defaults.append(report.label or f"{path.name}{epoch}")
        elif path.is_file():
            try:
                report = SROPReport.from_json(path)
            except (ValueError, KeyError, TypeError) as err:
                parser.error(f"{source!r} is not a report JSON file ({err}).")
            defaults.append(
                report.label or (path.parent.name if path.stem == "report" else path.stem)
            )
        else:
            parser.error(f"{source!r}: no such report file or run directory.")
        reports.append(report)
    return reports, defaults


def _compare_command(args: Compare, parser: ArgumentParser) -> int:
    from lightning_srop.plots import compare, save_figure
    from lightning_srop.report import aligned_names

    if args.labels is not None and len(args.labels) != len(args.reports):
        parser.error(
            f"`labels`: expected one label per report ({len(args.reports)}), got "
            f"{len(args.labels)}."
        )
    reports, defaults = _read_reports(args, parser)
    labels = _unique(args.labels if args.labels is not None else defaults)
    try:
        figure = compare(reports, labels, log=args.log, unit=args.unit, title=args.title)
        columns = [r.values("mean", args.unit) for r in reports]
    except ValueError as err:
        parser.error(str(err))
    names = aligned_names(reports)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = save_figure(figure, out / "compare.png")
    header = ["layer", *labels]
    rows = [[name, *(_number(c.get(name, math.nan)) for c in columns)] for name in names]
    csv_path = out / "compare.csv"
    write_csv(csv_path, rows, header)
    per = "input pixel" if args.unit == "input" else "pixel"
    print(f"mean SROP (cycles / {per})")
    shown = [[name, *(_number(c.get(name, math.nan), 4) for c in columns)] for name in names]
    print(format_table(shown, header))
    print(f"wrote {png}, {csv_path}")
    return 0


def _export_command(args: Export, parser: ArgumentParser) -> int:
    import json

    from lightning_srop.plots import plot_over_epochs, save_figure
    from lightning_srop.runs import read_run, to_csv

    run = Path(args.run)
    if not run.exists():
        parser.error(f"{args.run!r}: no such run directory.")
    try:
        reports = read_run(run, prefix=args.prefix)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    if not reports:
        parser.error(f"{args.run!r}: no SROP scalars with prefix {args.prefix!r}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "srop.csv"
    to_csv(reports, csv_path)
    json_path = out / "srop.json"
    json_path.write_text(
        json.dumps({"run": str(run), "reports": [r.to_dict() for r in reports]}) + "\n"
    )
    try:
        figure = plot_over_epochs(reports, statistic=args.statistic)
    except ValueError as err:
        parser.error(str(err))
    png = save_figure(figure, out / "srop.png")

    shown = reports[-6:]
    header = [
        "layer",
        *(f"epoch {r.epoch if r.epoch is not None else i}" for i, r in enumerate(shown)),
    ]
    names = list(dict.fromkeys(name for r in shown for name in r.names))
    table = [
        [
            name,
            *(
                _number(r[name].stats.get(args.statistic, math.nan), 4) if name in r else ""
                for r in shown
            ),
        ]
        for name in names
    ]
    print(f"{args.statistic} SROP, last {len(shown)} of {len(reports)} measured epochs")
    print(format_table(table, header))
    print(f"wrote {csv_path}, {json_path}, {png}")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point


def build_options(args: Namespace, parser: ArgumentParser) -> SROPOptions:
    """One validated :class:`~lightning_srop.options.SROPOptions` from a subcommand's parsed
    flags; a validation error becomes ``parser.error`` (one line naming the flag, exit 2).

    Examples:
        >>> parser = build_parser()
        >>> args = parser.parse_args(["profile", "--model", "m", "--data", "d", "--unit", "input"])
        >>> build_options(args.profile, parser)
        SROPOptions(layers=None, num_batches=None, roll_percent=0.85, ..., unit='input', ...)
    """
    values = _fields(SROPOptions, args)
    if values.get("num_batches") == "all":
        values["num_batches"] = None
    try:
        return SROPOptions(**values, owner=parser.prog)
    except (ValueError, TypeError) as err:
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``lightning-srop`` console script).

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a run fails for a reason outside the arguments
        (one line on stderr). Bad arguments exit with code 2 through ``SystemExit``.
    """
    try:
        parser = build_parser()
    except ModuleNotFoundError as err:  # jsonargparse comes with the cli extra
        print(f"{PROG}: error: {err}; pip install 'lightning-srop[cli]'", file=sys.stderr)
        return 1
    cfg = parser.parse_args(argv)
    name: str = cfg.command
    command = parser._subcommands_action.choices[name]  # type: ignore[union-attr]
    args = cfg[name]
    try:
        if name == "profile":
            options = build_options(args, command)
            return _profile_command(Profile(**_fields(Profile, args)), options, command)
        if name == "compare":
            return _compare_command(Compare(**_fields(Compare, args)), command)
        return _export_command(Export(**_fields(Export, args)), command)
    except _Failure as err:
        print(f"{command.prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return 1
