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

One file per job: :mod:`~lightning_srop.cli.parser` (the arguments, the parser and the
re-spelling of shell idioms), :mod:`~lightning_srop.cli.loading` (model and data loading),
:mod:`~lightning_srop.cli.trainer` (the measurement runs: one device, or a Lightning
``Trainer``) and :mod:`~lightning_srop.cli.commands` (the three commands and :func:`main`).
"""

from lightning_srop.cli.commands import main
from lightning_srop.cli.parser import PROG, Compare, Export, Profile, build_options, build_parser

__all__ = ["PROG", "Compare", "Export", "Profile", "build_options", "build_parser", "main"]
