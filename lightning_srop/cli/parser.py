"""The command line's arguments: the subcommands' argument classes, the parser (jsonargparse's,
as ``LightningCLI``'s) and the re-spelling of shell idioms into jsonargparse's values.

Flags, help and choices come from the fields, docstrings and ``Literal`` types of
:class:`~lightning_srop.options.SROPOptions` and of :class:`Profile`, :class:`Compare` and
:class:`Export`. Shell idioms are translated before parsing: dashed flags (``--roll-percent``),
several values per list flag (``--stats mean q75``), ``NAME=VALUE`` items for mappings
(``--layout conv1=NHWC``), lone boolean flags (``--keep-dc``); jsonargparse's own forms
(``--roll_percent``, ``--stats=[mean,q75]``) work too (see ``docs/cli.md`` for why).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import textwrap
import typing
from collections.abc import Mapping, Sequence
from types import UnionType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, Union

from lightning_srop.options import SROPOptions, Unit
from lightning_srop.statistics import STATISTICS, Statistic
from lightning_srop.tags import DEFAULT_PREFIX

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["PROG", "Compare", "Export", "Profile", "build_options", "build_parser"]

#: The command's name (also the console script).
PROG: Final[str] = "lightning-srop"

_T = TypeVar("_T")


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
    prefix: str = DEFAULT_PREFIX
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
    prefix: str = DEFAULT_PREFIX
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
