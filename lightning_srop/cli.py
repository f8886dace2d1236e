"""The ``lightning-srop`` command line: profile a model, compare reports, export a run.

Subcommands:

- ``profile``: per-layer SROPs of a torchvision model (random or pretrained weights) or a
  checkpointed LightningModule over an image folder, scikit-learn's bundled digits or a
  torchvision data set. One device runs :func:`~lightning_srop.profile.profile`; several
  devices or nodes run Lightning's ``Trainer.validate`` with an
  :class:`~lightning_srop.callback.SROPCallback` (Lightning's strategies, no loop of our own).
  Writes ``report.json``, ``report.csv`` and ``report.png``.
- ``compare``: several saved reports (and run directories, read by
  :func:`lightning_srop.runs.read_run`) on one figure, and their means side by side in a CSV.
- ``export``: the SROP curves of a logged run (TensorBoard / CSV, read by
  :mod:`lightning_srop.runs`) as CSV, JSON and a figure.

The measurement flags (``--layers``, ``--roll-percent``, ``--unit``, ...) are generated from the
fields of :class:`~lightning_srop.options.SROPOptions` by :func:`add_option_arguments`, so a new
option is a new flag; they build one validated options object (:func:`build_options`).

Bad arguments end with one line on stderr (``lightning-srop profile: error: ...``) and exit
code 2; failures that are not the arguments' fault (a download that cannot happen) with one
line and exit code 1.
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
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_srop.options import UNIT_CHOICES, SROPOptions
from lightning_srop.report import SROPReport
from lightning_srop.statistics import STATISTICS

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["PROG", "add_option_arguments", "build_options", "build_parser", "main"]

#: The command's name (also the console script).
PROG: Final[str] = "lightning-srop"

#: SROPOptions fields that are not options (never a flag).
_NOT_OPTIONS: Final[frozenset[str]] = frozenset({"owner"})

#: Item choices of sequence-valued options whose type does not carry them.
_ITEM_CHOICES: Final[Mapping[str, Sequence[str]]] = {"stats": STATISTICS}

#: Help of options whose docstring speaks of Python values the command line cannot give.
_CLI_HELP: Final[Mapping[str, str]] = {
    "layers": "which layers: one regular expression over qualified layer names (re.search; "
    "anchor with ^...$) or dotted module class path (torch.nn.Conv2d), or several exact layer "
    "names and class paths; default: the model's spatial convolution and pooling layers.",
    "num_batches": "batches measured per process: an integer, or all.",
    "ndim": "auto detects 2-D (N, C, H, W) and 1-D (N, C, L) outputs; 1 or 2 forces it "
    "(1 also takes 3-D outputs of any module, e.g. tokens).",
    "stats": "statistics reported (JSON, CSV, table); any of: " + ", ".join(STATISTICS) + ".",
}

#: Words that mean ``None`` for optional numeric options (``--num-batches all``).
_NONE_WORDS: Final[frozenset[str]] = frozenset({"none", "all", "auto"})

#: ImageNet statistics (torchvision's pretrained models expect them).
_IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
_IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)
#: Mean and standard deviation of the bundled digits at 28 x 28 (all 1797 images).


class _Failure(Exception):
    """A failure that is not the arguments' fault: one line on stderr, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# Options: flags generated from SROPOptions


def _field_help() -> dict[str, str]:
    """The ``Args:`` entries of the ``SROPOptions`` docstring, markup removed."""
    doc = inspect.cleandoc(SROPOptions.__doc__ or "")
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    section = re.split(r"\n\S", section, maxsplit=1)[0]  # up to the next section
    helps: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        match = re.match(r"^ {4}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            helps[name] = match.group(2)
        elif name and line.strip():
            helps[name] += " " + line.strip()
    for key, text in helps.items():
        text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", text)  # :class:`~a.b.C` -> C
        helps[key] = text.replace("``", "")
    return helps


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_int(text: str) -> int | None:
    if text.strip().lower() in _NONE_WORDS:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer or one of {', '.join(sorted(_NONE_WORDS))}; got {text!r}"
        ) from None


def _union_args(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _is_str_sequence(hint: Any) -> bool:
    return typing.get_origin(hint) in (Sequence, list, tuple) and typing.get_args(hint)[:1] == (
        str,
    )


def _argument_for(name: str, hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords for an ``SROPOptions`` field of type ``hint``.

    Raises:
        TypeError: a field type without a command-line form (add one here).
    """
    members = [m for m in _union_args(hint) if m is not type(None)]
    optional = len(members) < len(_union_args(hint))
    literals = [m for m in members if typing.get_origin(m) is Literal]
    if len(members) == 1 and literals:
        return {"choices": typing.get_args(literals[0])}
    if members == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if members == [int]:
        return {"type": _optional_int if optional else int, "metavar": "INT"}
    if members == [float]:
        return {"type": float, "metavar": "FLOAT"}
    if members == [str]:
        return {"type": str, "metavar": "TEXT"}
    if len(members) == 1 and _is_str_sequence(members[0]):
        choices = _ITEM_CHOICES.get(name)
        return {"nargs": "+", "choices": choices, "metavar": "NAME"}
    if literals and any(typing.get_origin(m) in (Mapping, dict) for m in members):
        # A choice, or {name: choice} given as NAME=CHOICE items.
        values = ", ".join(typing.get_args(literals[0]))
        return {"nargs": "+", "metavar": "CHOICE|NAME=CHOICE", "_choices_text": values}
    if str in members and any(_is_str_sequence(m) for m in members):
        # One pattern / class path, or several exact names.
        return {"nargs": "+", "metavar": "NAME"}
    raise TypeError(
        f"{PROG}: SROPOptions.{name} has type {hint!r}, which has no command-line form yet; "
        "teach lightning_srop.cli._argument_for about it."
    )


def _option_fields() -> list[tuple[str, Any, Any]]:
    """``(name, type, default)`` of every ``SROPOptions`` option, in field order."""
    hints = typing.get_type_hints(SROPOptions)
    return [
        (f.name, hints[f.name], f.default)
        for f in dataclasses.fields(SROPOptions)
        if f.name not in _NOT_OPTIONS
    ]


def _show(name: str, value: Any) -> str:
    if value is None:
        return {"num_batches": "all"}.get(name, "auto")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def add_option_arguments(
    parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None
) -> None:
    """Add one flag per :class:`~lightning_srop.options.SROPOptions` field to ``parser``.

    Flags are the field names with dashes (``--roll-percent``); choices come from the fields'
    ``Literal`` types, help from the class docstring. Unset flags are absent from the parsed
    namespace, so :func:`build_options` applies the dataclass's (or ``defaults``') values.

    Args:
        parser: the parser (or subparser) to extend.
        defaults: per-command defaults that differ from the dataclass's, shown in the help.
    """
    defaults = {} if defaults is None else defaults
    helps = _field_help()
    group = parser.add_argument_group(
        "measurement options (lightning_srop.SROPOptions; unset ones keep their defaults)"
    )
    for name, hint, default in _option_fields():
        kwargs = _argument_for(name, hint)
        choices_text = kwargs.pop("_choices_text", None)
        shown = defaults.get(name, default)
        text = _CLI_HELP.get(name, helps.get(name, name)).replace("%", "%%")
        if choices_text:
            text += f" Choices: {choices_text}."
        group.add_argument(
            _flag(name),
            dest=name,
            default=argparse.SUPPRESS,
            help=f"{text} (default: {_show(name, shown)})",
            **kwargs,
        )


def _plain_value(name: str, hint: Any, value: Any) -> Any:
    """A parsed flag value as the ``SROPOptions`` field takes it."""
    members = [m for m in _union_args(hint) if m is not type(None)]
    if not isinstance(value, list) or (len(members) == 1 and _is_str_sequence(members[0])):
        return value
    if any(typing.get_origin(m) in (Mapping, dict) for m in members):
        if len(value) == 1 and "=" not in value[0]:
            return value[0]
        mapping: dict[str, str] = {}
        for item in value:
            key, sep, choice = item.rpartition("=")
            if not sep or not key:
                raise ValueError(
                    f"expected `{name}` to be one choice or NAME=CHOICE items; got {item!r}."
                )
            mapping[key] = choice
        return mapping
    return value[0] if len(value) == 1 else list(value)


def _flagged(message: str, owner: str) -> str:
    """An options error in command-line words: no owner prefix, ```field``` as ``--field``."""
    message = message.removeprefix(f"{owner}: ")
    names = {name for name, _, _ in _option_fields()}
    return re.sub(
        r"`(\w+)`", lambda m: _flag(m.group(1)) if m.group(1) in names else m.group(0), message
    )


def build_options(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    defaults: Mapping[str, Any] | None = None,
) -> SROPOptions:
    """One validated :class:`~lightning_srop.options.SROPOptions` from parsed flags.

    Validation errors become ``parser.error`` (one line, exit code 2).

    Args:
        args: the parsed namespace (flags made by :func:`add_option_arguments`).
        parser: reports errors.
        defaults: per-command defaults for options not given.

    Returns:
        The options.
    """
    values: dict[str, Any] = dict(defaults or {})
    try:
        for name, hint, _ in _option_fields():
            if hasattr(args, name):
                values[name] = _plain_value(name, hint, getattr(args, name))
        return SROPOptions(**values, owner=parser.prog)
    except (ValueError, TypeError) as err:
        parser.error(_flagged(str(err), parser.prog))


# ---------------------------------------------------------------------------------------------
# Parsers

_PROFILE_EXAMPLES = """\
examples:
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

_COMPARE_EXAMPLES = """\
examples:
  # two saved reports, labelled, on a log axis
  lightning-srop compare random/report.json trained/report.json --labels random trained --log

  # a report next to the last epoch of a logged run
  lightning-srop compare before/report.json lightning_logs/version_3 --unit input --out cmp

writes <out>/compare.png and <out>/compare.csv (one row per layer, a column of means per label).
"""

_EXPORT_EXAMPLES = """\
examples:
  # the SROP curves of a TensorBoard or CSV run as CSV, JSON and a figure
  lightning-srop export lightning_logs/version_0 --out srop_export

  # another logging prefix and the median instead of the mean in the figure
  lightning-srop export runs/mnist --prefix val_srop --statistic median

writes <out>/srop.csv, <out>/srop.json and <out>/srop.png .
"""

_MAIN_EXAMPLES = """\
examples:
  lightning-srop profile --model resnet18 --data path/to/images --out srop_resnet18
  lightning-srop compare a/report.json b/report.json --labels a b
  lightning-srop export lightning_logs/version_0
  lightning-srop profile --help
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-srop`` parser with its ``profile``, ``compare`` and ``export``
    subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Spectral roll-off points (SROPs) of feature maps, per layer.",
        epilog=_MAIN_EXAMPLES,
        formatter_class=formatter,
    )
    from lightning_srop import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prof = commands.add_parser(
        "profile",
        help="measure a model's SROPs over a data set; write JSON, CSV and a figure",
        description=(
            "Measure per-layer SROPs of a model over data and write <out>/report.json, "
            "<out>/report.csv and <out>/report.png."
        ),
        epilog=_PROFILE_EXAMPLES,
        formatter_class=formatter,
    )
    model = prof.add_argument_group("model")
    model.add_argument(
        "--model",
        required=True,
        help="a torchvision model name (resnet18, vgg16, ...) or the class path of a "
        "LightningModule / nn.Module (mypkg.models.MyNet)",
    )
    model.add_argument(
        "--weights",
        default="none",
        help="torchvision weights: none (random, seeded by --seed), DEFAULT or a weight name "
        "such as IMAGENET1K_V1 (default: none)",
    )
    model.add_argument(
        "--checkpoint",
        help="a Lightning checkpoint for a LightningModule class path (load_from_checkpoint)",
    )
    data = prof.add_argument_group("data")
    data.add_argument(
        "--data",
        required=True,
        help="an image folder (<dir>/<class>/<image>), 'digits' (scikit-learn's bundled "
        "handwritten digits, 28 px) or a torchvision data set name (CIFAR10, MNIST, ...)",
    )
    data.add_argument(
        "--data-dir", default="data", help="root of a torchvision data set (default: data)"
    )
    data.add_argument(
        "--download", action="store_true", help="download a torchvision data set if missing"
    )
    data.add_argument(
        "--split",
        help="split of a torchvision data set (default: the test/validation split)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="resize and center-crop images to PX x PX (default: 224; 28 for digits)",
    )
    data.add_argument("--batch-size", type=int, default=32, metavar="N", help="(default: 32)")
    data.add_argument(
        "--workers", type=int, default=0, metavar="N", help="DataLoader workers (default: 0)"
    )
    run = prof.add_argument_group("run")
    run.add_argument(
        "--device",
        default="auto",
        help="device of a one-device run: auto (cuda if available, else cpu), cpu, cuda:0, ... "
        "(default: auto)",
    )
    run.add_argument(
        "--autocast",
        choices=("bf16", "fp16"),
        help="run the forward passes under mixed precision (SROPs are computed in float32)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of random weights (default: 0)")
    run.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="devices per node; more than 1 runs Lightning's Trainer.validate (default: 1)",
    )
    run.add_argument("--num-nodes", type=int, default=1, metavar="M", help="nodes (default: 1)")
    run.add_argument(
        "--strategy",
        help="Lightning strategy of a distributed run: ddp, ddp_spawn, fsdp, ... (default: "
        "Lightning's choice); setting one runs the Trainer even on one device",
    )
    run.add_argument(
        "--accelerator",
        default="auto",
        help="Lightning accelerator of a Trainer run: auto, cpu, gpu, ... (default: auto)",
    )
    run.add_argument("--out", default="srop_profile", help="output folder (default: srop_profile)")
    run.add_argument("--label", help="the report's label (default: the model name)")
    add_option_arguments(prof, defaults={"num_batches": None})
    prof.set_defaults(handler=_profile_command, command_parser=prof)

    comp = commands.add_parser(
        "compare",
        help="several reports (or run directories) on one figure and in one CSV",
        description="Draw saved reports on one figure and write their means side by side.",
        epilog=_COMPARE_EXAMPLES,
        formatter_class=formatter,
    )
    comp.add_argument(
        "reports",
        nargs="+",
        metavar="REPORT",
        help="report JSON files (written by `profile`), or run directories (the last measured "
        "epoch)",
    )
    comp.add_argument("--labels", nargs="+", metavar="LABEL", help="one label per report")
    comp.add_argument("--log", action="store_true", help="log-scale SROP axis")
    comp.add_argument(
        "--unit",
        choices=UNIT_CHOICES,
        default="layer",
        help="cycles per pixel of each layer's grid, or per input pixel (default: layer)",
    )
    comp.add_argument("--title", help="figure title")
    comp.add_argument(
        "--prefix", default="srop", help="logging prefix of run directories (default: srop)"
    )
    comp.add_argument("--out", default="srop_compare", help="output folder (default: srop_compare)")
    comp.set_defaults(handler=_compare_command, command_parser=comp)

    export = commands.add_parser(
        "export",
        help="a logged run's SROP curves as CSV, JSON and a figure",
        description="Read the SROP scalars of a TensorBoard / CSV run and write them out.",
        epilog=_EXPORT_EXAMPLES,
        formatter_class=formatter,
    )
    export.add_argument("run", metavar="RUN", help="a run directory (TensorBoard or CSV logs)")
    export.add_argument(
        "--prefix", default="srop", help="logging prefix of the SROP scalars (default: srop)"
    )
    export.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="mean",
        metavar="STAT",
        help=f"statistic drawn over epochs: {', '.join(STATISTICS)} (default: mean)",
    )
    export.add_argument("--out", default="srop_export", help="output folder (default: srop_export)")
    export.set_defaults(handler=_export_command, command_parser=export)
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


def _class_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> nn.Module:
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


def _torchvision_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> nn.Module:
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
    name: str, args: argparse.Namespace, transform: Callable[[Any], Tensor]
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


def _dataset(
    args: argparse.Namespace, parser: argparse.ArgumentParser, channels: int
) -> Dataset[Any]:
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
    args: argparse.Namespace,
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
    args: argparse.Namespace,
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
    option_values = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in _NOT_OPTIONS
    }
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


def _profile_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    start = time.perf_counter()
    for flag in ("batch_size", "devices", "num_nodes"):
        if getattr(args, flag) < 1:
            parser.error(f"{_flag(flag)} must be >= 1; got {getattr(args, flag)}.")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0; got {args.workers}.")
    options = build_options(args, parser, defaults={"num_batches": None})
    trainer_run = args.devices > 1 or args.num_nodes > 1 or args.strategy is not None
    if trainer_run and args.device != "auto":
        parser.error("--device is for one-device runs; a Trainer run takes --accelerator.")

    import torch

    from lightning_srop.layers import resolve_layers

    torch.manual_seed(args.seed)  # random weights: the same model for the same seed
    build = _class_model if "." in args.model else _torchvision_model
    model = build(args, parser)
    try:
        resolve_layers(model, options.layers, owner=parser.prog)
    except (ValueError, TypeError) as err:
        parser.error(_flagged(str(err), parser.prog))
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
# compare and export


def _unique(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out: list[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    )


def _number(value: float, digits: int | None = None) -> str:
    """A CSV cell (full precision) or, with ``digits``, a table cell; NaN as empty."""
    if math.isnan(value):
        return ""
    return repr(float(value)) if digits is None else f"{value:.{digits}f}"


def _compare_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import csv

    from lightning_srop.plots import compare, save_figure
    from lightning_srop.report import aligned_names

    if args.labels is not None and len(args.labels) != len(args.reports):
        parser.error(
            f"--labels: expected one label per report ({len(args.reports)}), got "
            f"{len(args.labels)}."
        )
    reports: list[SROPReport] = []
    defaults: list[str] = []
    for source in args.reports:
        path = Path(source)
        if path.is_dir():
            from lightning_srop.runs import read_run

            try:
                found = read_run(path, prefix=args.prefix)
            except (ValueError, OSError) as err:
                parser.error(_one_line(str(err)))
            if not found:
                parser.error(f"{source!r}: no SROP scalars with prefix {args.prefix!r}.")
            report = found[-1]
            epoch = "" if report.epoch is None else f" epoch {report.epoch}"
            defaults.append(report.label or f"{path.name}{epoch}")
        elif path.is_file():
            try:
                report = SROPReport.from_json(path)
            except (ValueError, KeyError, TypeError) as err:
                parser.error(f"{source!r} is not a report JSON file ({_one_line(str(err))}).")
            defaults.append(
                report.label or (path.parent.name if path.stem == "report" else path.stem)
            )
        else:
            parser.error(f"{source!r}: no such report file or run directory.")
        reports.append(report)
    labels = _unique(args.labels if args.labels is not None else defaults)
    try:
        figure = compare(reports, labels, log=args.log, unit=args.unit, title=args.title)
        columns = [r.values("mean", args.unit) for r in reports]
    except ValueError as err:
        parser.error(_one_line(str(err)))
    names = aligned_names(reports)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = save_figure(figure, out / "compare.png")
    rows = [[name, *(_number(c.get(name, math.nan)) for c in columns)] for name in names]
    header = ["layer", *labels]
    csv_path = out / "compare.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    per = "input pixel" if args.unit == "input" else "pixel"
    print(f"mean SROP (cycles / {per})")
    shown = [[name, *(_number(c.get(name, math.nan), 4) for c in columns)] for name in names]
    print(_text_table(header, shown))
    print(f"wrote {png}, {csv_path}")
    return 0


def _export_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from lightning_srop.plots import plot_over_epochs, save_figure
    from lightning_srop.runs import read_run, to_csv

    run = Path(args.run)
    if not run.exists():
        parser.error(f"{args.run!r}: no such run directory.")
    try:
        reports = read_run(run, prefix=args.prefix)
    except (ValueError, OSError) as err:
        parser.error(_one_line(str(err)))
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
        parser.error(_one_line(str(err)))
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
    print(_text_table(header, table))
    print(f"wrote {csv_path}, {json_path}, {png}")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``lightning-srop`` console script).

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a run fails for a reason outside the arguments
        (one line on stderr). Bad arguments exit with code 2 through ``SystemExit``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command: argparse.ArgumentParser = args.command_parser
    try:
        return int(args.handler(args, command))
    except _Failure as err:
        print(f"{command.prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return 1
