"""The ``lightning-srop`` command line: profile a model, compare reports, export a run.

``profile`` measures a torchvision model or a checkpointed LightningModule over an image
folder, the bundled digits or a torchvision data set, on one device
(:func:`~lightning_srop.profile.profile`) or through Lightning's ``Trainer.validate`` with an
:class:`~lightning_srop.callback.SROPCallback` (several devices or nodes). ``compare`` draws
saved reports and run directories on one figure; ``export`` writes a logged run's curves.

The parser is jsonargparse's (as ``LightningCLI``'s): flags, help and choices come from the
fields, docstrings and ``Literal`` types of :class:`~lightning_srop.options.SROPOptions` and
of the subcommands' argument classes (:class:`Profile`, :class:`Compare`, :class:`Export`).
The command line speaks the shell's idioms and translates them into jsonargparse's values
before parsing: dashed flags (``--roll-percent``), several values per list flag (``--stats
mean q75``), ``NAME=VALUE`` items for mappings (``--layout conv1=NHWC``), lone boolean flags
(``--keep-dc``); jsonargparse's own forms (``--roll_percent``, ``--stats=[mean,q75]``) work
too. Bad arguments end with one line on stderr and exit code 2;
failures that are not the arguments' fault (a download) with one line and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import importlib
import inspect
import json
import logging
import math
import re
import sys
import textwrap
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, Union

from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_srop.options import SROPOptions, Unit
from lightning_srop.report import CHANGE, SROPReport, format_table, write_csv
from lightning_srop.statistics import STATISTICS, Statistic

if TYPE_CHECKING:
    import torch
    from jsonargparse import ArgumentParser, Namespace
    from torch import Tensor

__all__ = ["PROG", "Compare", "Export", "Profile", "build_options", "build_parser", "main"]

#: The command's name (also the console script).
PROG: Final[str] = "lightning-srop"

_T = TypeVar("_T")

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
"""
    + textwrap.fill(f"--stats takes any of: {', '.join(STATISTICS)}.", 92)
    + "\n",
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
# The parser: jsonargparse's, behind a translation of the shell's spellings into its values


#: The subcommands and their argument classes (profile takes SROPOptions' fields as well).
_COMMANDS: Final[dict[str, type]] = {"profile": Profile, "compare": Compare, "export": Export}

#: Choices the types do not spell: statistic names (SROPOptions.stats is a Sequence[str]) and
#: ``--num-batches all`` (None).
_CLI_CHOICES: Final[dict[str, tuple[str, ...]]] = {"stats": STATISTICS, "num_batches": ("all",)}


class _Usage(Exception):
    """Bad arguments: one line on stderr, exit code 2."""


def _hints(command: str) -> dict[str, Any]:
    """The type of every option of a subcommand, by field name."""
    hints = typing.get_type_hints(_COMMANDS[command])
    if command == "profile":
        hints |= typing.get_type_hints(SROPOptions)
        del hints["owner"]
    return hints


def _flag(name: str, command: str) -> str:
    """The command-line spelling of a field: ``--roll-percent``, or ``REPORTS`` (positional)."""
    field = next((f for f in dataclasses.fields(_COMMANDS[command]) if f.name == name), None)
    positional = command != "profile" and field is not None and _required(field)
    return name.upper() if positional else "--" + name.replace("_", "-")


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)


def _choices(hint: Any) -> list[str]:
    """The ``Literal`` values anywhere in a type (``Mapping[str, Literal[...]]`` too)."""
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    return list(dict.fromkeys(c for arg in typing.get_args(hint) for c in _choices(arg)))


def _takes(hint: Any, *origins: Any) -> bool:
    return any(m in origins or typing.get_origin(m) in origins for m in _members(hint))


def _checked(value: str, name: str, command: str, key: str = "") -> str:
    """``value`` if it is one of the option's choices (or the option has none)."""
    hint = _hints(command)[name]
    choices = _CLI_CHOICES.get(name) or _choices(hint)
    number = _takes(hint, int) and value.lstrip("-").isdigit()
    if choices and value not in choices and not number:
        flag = _flag(name, command) + (f"[{key!r}]" if key else "")
        also = " or an int" if _takes(hint, int) else ""
        raise _Usage(f"{flag}: invalid choice: {value!r} (choose from {', '.join(choices)}{also})")
    return value


def _value(name: str, values: list[str], command: str) -> str:
    """One jsonargparse value (YAML / JSON) for an option given ``values`` on the command line:
    ``NAME=VALUE`` items as a mapping, several values (or one of a list type) as a list."""
    hint = _hints(command)[name]
    if name == "num_batches" and values == ["all"]:
        return "null"
    if len(values) == 1 and values[0].startswith(("[", "{")):  # jsonargparse's own form
        return values[0]
    if _takes(hint, Mapping, dict) and values and all("=" in v for v in values):
        items = dict(v.split("=", 1) for v in values)
        return json.dumps({k: _checked(v, name, command, k) for k, v in items.items()})
    values = [_checked(v, name, command) for v in values]
    if len(values) == 1 and (
        _takes(hint, str) or _choices(hint) or not _takes(hint, list, Sequence, tuple)
    ):
        return values[0]
    return json.dumps(values)


def _native(argv: Sequence[str]) -> list[str]:
    """The arguments in jsonargparse's spelling: ``--num-batches`` as ``--num_batches``, a
    boolean flag alone as ``--keep_dc=true``, ``--stats mean q75`` as a list, ``--layout
    conv1=NHWC`` as a mapping, ``--num-batches all`` as null, ``compare a b`` as one list.

    Examples:
        >>> _native(["profile", "--num-batches", "all", "--keep-dc", "--stats", "mean", "q75"])
        ['profile', '--num_batches=null', '--keep_dc=true', '--stats=["mean", "q75"]']
        >>> _native(["compare", "a.json", "b.json", "--log", "--out=cmp"])
        ['compare', '["a.json", "b.json"]', '--log=true', '--out=cmp']
    """
    argv = list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    if command not in _COMMANDS:
        return argv
    hints = _hints(command)
    listed = [f.name for f in dataclasses.fields(_COMMANDS[command]) if _required(f)]
    listed = [name for name in listed if _takes(hints[name], list)]  # compare's REPORT ...
    i = argv.index(command) + 1
    out, positional = argv[:i], list[str]()
    while i < len(argv):
        token, i = argv[i], i + 1
        name, eq, inline = token.removeprefix("--").partition("=")
        name = name.replace("-", "_")
        if not token.startswith("--") or name not in hints:
            (positional if listed and not token.startswith("-") else out).append(token)
            continue
        hint, values = hints[name], [inline] if eq else []
        many = _takes(hint, list, Sequence, tuple, Mapping, dict)
        while not eq and i < len(argv) and not argv[i].startswith("-" if many else "--"):
            if hint is bool and argv[i].lower() not in ("true", "false"):
                break
            values.append(argv[i])
            i += 1
            if not many:
                break
        if hint is bool and not values:
            values = ["true"]
        out.append(f"--{name}=" + _value(name, values, command) if values else f"--{name}")
    if positional:
        out.insert(argv.index(command) + 1, _value(listed[0], positional, command))
    return out


def _spelled(message: str, command: str) -> str:
    """jsonargparse's message on one line, field names as flags (``"num_batches"``,
    ``profile.data`` and ``--num_batches`` as ``--num-batches``)."""
    hints = _hints(command) if command in _COMMANDS else {}

    def flag(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return _flag(name, command) if name in hints else match[0]

    pattern = rf'"(\w+)"|`(\w+)`|\b{command or "-"}\.(\w+)\b|--(\w+)'
    return _one_line(re.sub(pattern, flag, message).replace("Parser key ", ""))


def _help_formatter() -> type[argparse.HelpFormatter]:
    from jsonargparse import DefaultHelpFormatter

    options = {n for c in _COMMANDS for n in _hints(c)}

    class Help(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """jsonargparse's help (types, defaults) with the examples' line breaks, dashed flags
        and docstring markup as plain text."""

        def format_help(self) -> str:
            text = super().format_help()
            text = re.sub(
                r"--(\w+)", lambda m: m[0].replace("_", "-") if m[1] in options else m[0], text
            )
            return re.sub(r":\w+:`~?([\w.]+)`", r"\1", text).replace("``", "")

    return Help


def build_parser() -> ArgumentParser:
    """The ``lightning-srop`` parser with its ``profile``, ``compare`` and ``export``
    subcommands; its ``parse_args`` takes the command line's spellings (dashed flags, several
    values per list flag, ``NAME=VALUE`` items, lone boolean flags)."""
    from jsonargparse import ArgumentParser

    from lightning_srop import __version__

    class Parser(ArgumentParser):
        def parse_args(  # type: ignore[override]  # as jsonargparse's own
            self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any
        ) -> Namespace:
            try:
                native = _native(sys.argv[1:] if args is None else args)
            except _Usage as err:  # a value outside its choices
                self.error(str(err))
            return super().parse_args(native, *rest, **kwargs)

    help_formatter = _help_formatter()
    parser = Parser(
        prog=PROG,
        description="Spectral roll-off points (SROPs) of feature maps, per layer.",
        epilog="examples:\n" + _EXAMPLES[""],
        formatter_class=help_formatter,
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subcommands(dest="command", metavar="COMMAND")
    for name, cls in _COMMANDS.items():
        description = (inspect.getdoc(cls) or "").split("\n", 1)[0]
        command = ArgumentParser(
            description=description,
            epilog="examples:\n" + _EXAMPLES[name],
            formatter_class=help_formatter,
            exit_on_error=False,
        )
        command.add_class_arguments(cls, as_group=False, as_positional=cls is not Profile)
        if cls is Profile:
            command.add_class_arguments(SROPOptions, skip={"owner"})
            command.set_defaults(num_batches=None)  # profile measures all batches by default
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


def _class_model(args: Profile) -> nn.Module:
    try:
        cls = _import_object(args.model)
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


# ---------------------------------------------------------------------------------------------
# profile: one device (profile) or a Lightning Trainer


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise _Usage(f"--device {name!r}: {_one_line(str(err))}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _Usage(f"--device {name!r}: CUDA is not available here; use --device cpu.")
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
) -> tuple[SROPReport, int, str]:
    import torch

    from lightning_srop.profile import profile

    device = _device(args.device)
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


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's info lines and its notices that do not apply to a one-off measurement
    silenced for the duration of the run only: warning filters and log levels come back as
    they were."""
    from lightning_srop.notices import SROPWarning

    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*no logger is attached.*", category=SROPWarning
        )
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # Lightning vs torch
        try:
            for logger in loggers:
                logger.setLevel(logging.WARNING)
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _profile_trainer(
    model: nn.Module,
    dataset: Dataset[Any],
    options: SROPOptions,
    args: Profile,
) -> tuple[SROPReport | None, int, str]:
    from lightning.pytorch import Trainer

    from lightning_srop.callback import SROPCallback

    callback = SROPCallback(options=options, log_histograms=False, log_figure=False)
    precision = {"bf16": "bf16-mixed", "fp16": "16-mixed"}.get(args.autocast or "", "32-true")
    with _quiet_lightning():
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


def _profile_command(args: Profile, options: SROPOptions) -> int:
    start = time.perf_counter()
    for flag in ("batch_size", "devices", "num_nodes"):
        if getattr(args, flag) < 1:
            raise _Usage(f"`{flag}` must be >= 1; got {getattr(args, flag)}.")
    if args.workers < 0:
        raise _Usage(f"`workers` must be >= 0; got {args.workers}.")
    trainer_run = args.devices > 1 or args.num_nodes > 1 or args.strategy is not None
    if trainer_run and args.device != "auto":
        raise _Usage("`device` is for one-device runs; a Trainer run takes `accelerator`.")

    import torch

    from lightning_srop.layers import resolve_layers

    torch.manual_seed(args.seed)  # random weights: the same model for the same seed
    build = _class_model if "." in args.model else _torchvision_model
    model = build(args)
    try:
        resolve_layers(model, options.layers, owner=PROG)
    except (ValueError, TypeError) as err:
        raise _Usage(str(err).removeprefix(f"{PROG}: ")) from err
    channels = _input_channels(model) or 3
    dataset = _dataset(args, channels)
    label = args.label or args.model.rpartition(".")[2]

    measured = time.perf_counter()
    if trainer_run:
        report, images, where = _profile_trainer(model, dataset, options, args)
        if report is None:  # not rank zero: rank zero writes and prints
            return 0
    else:
        report, images, where = _profile_one_device(model, dataset, options, args)
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


def _read_reports(args: Compare) -> tuple[list[SROPReport], list[str]]:
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
                raise _Usage(str(err)) from err
            if not found:
                raise _Usage(f"{source!r}: no SROP scalars with prefix {args.prefix!r}.")
            report = found[-1]
            epoch = "" if report.epoch is None else f" epoch {report.epoch}"
            defaults.append(report.label or f"{path.name}{epoch}")
        elif path.is_file():
            try:
                report = SROPReport.from_json(path)
            except (ValueError, KeyError, TypeError) as err:
                raise _Usage(f"{source!r} is not a report JSON file ({err}).") from err
            defaults.append(
                report.label or (path.parent.name if path.stem == "report" else path.stem)
            )
        else:
            raise _Usage(f"{source!r}: no such report file or run directory.")
        reports.append(report)
    return reports, defaults


def _compare_command(args: Compare) -> int:
    from lightning_srop.plots import compare, save_figure
    from lightning_srop.report import aligned_names

    if args.labels is not None and len(args.labels) != len(args.reports):
        raise _Usage(
            f"`labels`: expected one label per report ({len(args.reports)}), got "
            f"{len(args.labels)}."
        )
    reports, defaults = _read_reports(args)
    labels = _unique(args.labels if args.labels is not None else defaults)
    try:
        figure = compare(reports, labels, log=args.log, unit=args.unit, title=args.title)
        columns = [r.values("mean", args.unit) for r in reports]
    except ValueError as err:
        raise _Usage(str(err)) from err
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


def _export_command(args: Export) -> int:
    import json

    from lightning_srop.plots import plot_change_heatmap, plot_over_epochs, save_figure
    from lightning_srop.runs import read_run, to_csv

    run = Path(args.run)
    if not run.exists():
        raise _Usage(f"{args.run!r}: no such run directory.")
    try:
        reports = read_run(run, prefix=args.prefix)
    except (ValueError, OSError) as err:
        raise _Usage(str(err)) from err
    if not reports:
        raise _Usage(f"{args.run!r}: no SROP scalars with prefix {args.prefix!r}.")
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
        raise _Usage(str(err)) from err
    pngs = [save_figure(figure, out / "srop.png")]
    if any(CHANGE in layer.extra for r in reports for layer in r.layers):
        # one picture of the whole run: each layer's change since initialization per epoch
        pngs.append(save_figure(plot_change_heatmap(reports), out / "srop_change.png"))

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
    print(f"wrote {csv_path}, {json_path}, {', '.join(map(str, pngs))}")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point


def build_options(args: Namespace) -> SROPOptions:
    """One validated :class:`~lightning_srop.options.SROPOptions` from ``profile``'s parsed
    flags (``ValueError`` / ``TypeError`` naming the option when a value is invalid).

    Examples:
        >>> args = build_parser().parse_args(["profile", "--model", "m", "--data", "d", "--unit", "input"])
        >>> build_options(args.profile)
        SROPOptions(layers=None, num_batches=None, roll_percent=0.85, ..., unit='input', ...)
    """
    names = [f.name for f in dataclasses.fields(SROPOptions) if f.name != "owner"]
    return SROPOptions(**{name: args[name] for name in names}, owner=f"{PROG} profile")


def _arguments(cls: type[_T], args: Namespace) -> _T:
    """The parsed values of a subcommand as its argument class."""
    return cls(**{f.name: args[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``lightning-srop`` console script).

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a run fails for a reason outside the arguments
        (one line on stderr). Bad arguments exit with code 2 through ``SystemExit``, after one
        line on stderr that names the flag.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    name = next((a for a in argv if not a.startswith("-")), "")
    prog = f"{PROG} {name}" if name in _COMMANDS else PROG
    try:
        parser = build_parser()
    except ModuleNotFoundError as err:  # jsonargparse comes with the cli extra
        print(f"{PROG}: error: {err}; pip install 'lightning-srop[cli]'", file=sys.stderr)
        return 1
    try:
        cfg = parser.parse_args(argv)
        args = cfg[cfg.command]
        if cfg.command == "profile":
            try:
                options = build_options(args)
            except (ValueError, TypeError) as err:
                raise _Usage(str(err).removeprefix(f"{prog}: ")) from err
            return _profile_command(_arguments(Profile, args), options)
        if cfg.command == "compare":
            return _compare_command(_arguments(Compare, args))
        return _export_command(_arguments(Export, args))
    except (_Usage, argparse.ArgumentError) as err:
        print(f"{prog}: error: {_spelled(str(err), name)}", file=sys.stderr)
        raise SystemExit(2) from None
    except _Failure as err:
        print(f"{prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return 1
