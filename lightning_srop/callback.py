"""``SROPCallback``: per-layer SROPs of sampled validation batches, logged next to accuracy.

The callback only decides *when* to measure, merge and log; the hooks, the layer choice and
the statistics live in :mod:`lightning_srop.engine`.

Lifecycle (see ``docs/callback.md``):

- ``__init__`` stores and validates the options (types and values);
- ``setup`` resolves the layer choice against the LightningModule (unknown names fail here);
- every ``every_n_epochs``-th validation run of ``fit`` (the sanity check never counts) and
  every ``trainer.validate()`` run, the chosen validation batches (the first ``num_batches``,
  or a seeded random choice) run with forward hooks on the chosen layers; the hooks exist only
  between ``on_validation_batch_start`` and ``on_validation_batch_end`` of those batches;
- at ``on_validation_epoch_end`` every process merges the statistics (a collective), logs
  ``{prefix}/{layer}/{stat}`` scalars with ``LightningModule.log_dict`` (``sync_dist=False``:
  the values are already merged and the same on every process), and rank zero writes one
  histogram per layer and a figure of SROP against depth to the loggers that support them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Final, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_srop.engine import (
    COMPILED_CHOICES,
    LayerChoice,
    SROPEngine,
    _is_compiled,
    check_choice,
    check_engine_options,
    check_layer_choice,
    notice,
)
from lightning_srop.profile import batch_input
from lightning_srop.report import LayerReport
from lightning_srop.statistics import STATISTICS

__all__ = ["SAMPLE_CHOICES", "SROPCallback"]

#: Values of ``sample=``.
SAMPLE_CHOICES: Final[tuple[str, ...]] = ("first", "random")

_STATE_VERSION: Final[int] = 1


def _check_int(value: object, name: str, minimum: int, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = "None or " if allow_none else ""
        raise ValueError(
            f"SROPCallback: expected `{name}` to be {none}an int >= {minimum}; got {value!r}."
        )


class SROPCallback(Callback):
    r"""Log per-layer spectral roll-off points (SROPs) of sampled validation batches.

    Args:
        layers: which layers to measure: ``None`` (every Conv1d/Conv2d and pooling/downscaling
            layer), a regular expression over qualified names (``re.search``), a list of names,
            a module type or tuple of types, or a callable ``(name, module) -> bool``.
        num_batches: how many validation batches to measure per measured epoch (``None`` = all).
        every_n_epochs: measure every n-th validation run of ``fit``, starting with the first
            (the sanity check never counts). Every ``trainer.validate()`` run is measured.
        sample: ``"first"`` takes the first ``num_batches`` batches of the epoch; ``"random"``
            draws ``num_batches`` of them without replacement from a private generator seeded
            with ``seed`` (the global RNG is never touched; its state is checkpointed).
        seed: seed of the private generator for ``sample="random"``.
        roll_percent: share of spectral energy below the roll-off, in (0, 1].
        keep_dc: keep the DC bin (the map's mean) in the energy.
        ndim: ``None`` auto-detects 2-D ``(N, C, H, W)`` and 1-D ``(N, C, L)`` outputs; 1 or 2
            forces it.
        unit: ``"layer"`` (cycles per pixel of the layer's grid) or ``"input"`` (cycles per
            input pixel: the SROP divided by the layer's total downscaling, measured from the
            batch's input, see ``input_key``).
        stats: statistics logged as scalars, any of
            :data:`~lightning_srop.statistics.STATISTICS`.
        log_histograms: write one SROP histogram per layer to TensorBoard / W&B.
        log_figure: write a figure of the per-layer SROP against depth to TensorBoard / W&B.
        prefix: first component of every logged name: ``{prefix}/{layer}/{stat}``.
        repeated: a module called several times per batch: ``"separate"`` (keys ``name``,
            ``name#1``, ...), ``"merge"`` (all calls pooled) or ``"first"`` (first call only).
        num_bins: histogram bins per layer (quantiles are within half a bin).
        input_key: where the input lies in dict batches (for ``unit="input"``); tensor batches
            are the input, tuple/list batches hold it first.
        compiled: ``"eager"`` runs ``torch.compile``'d code eagerly during the measured batches
            (compiled graphs ignore hooks added later); ``"error"`` refuses compiled models.

    Attributes:
        last_reports: the :class:`~lightning_srop.report.LayerReport` list of the last measured
            epoch, in forward order (the same on every process).

    Examples:
        >>> cb = SROPCallback(layers=r"^features\.\d+$", num_batches=4, stats=("mean", "q75"))
        >>> cb.prefix, cb.num_batches, cb.stats
        ('srop', 4, ('mean', 'q75'))
        >>> SROPCallback(stats=("mean", "average"))
        Traceback (most recent call last):
        ...
        ValueError: SROPCallback: `stats` has unknown statistic(s) ['average']; valid choices: ...
    """

    def __init__(
        self,
        layers: LayerChoice = None,
        *,
        num_batches: int | None = 2,
        every_n_epochs: int = 1,
        sample: Literal["first", "random"] = "first",
        seed: int = 0,
        roll_percent: float = 0.85,
        keep_dc: bool = False,
        ndim: int | None = None,
        unit: Literal["layer", "input"] = "layer",
        stats: Sequence[str] = ("mean", "median"),
        log_histograms: bool = True,
        log_figure: bool = True,
        prefix: str = "srop",
        repeated: Literal["separate", "merge", "first"] = "separate",
        num_bins: int = 1024,
        input_key: str = "input",
        compiled: Literal["eager", "error"] = "eager",
    ) -> None:
        owner = "SROPCallback"
        check_layer_choice(layers, owner)
        _check_int(num_batches, "num_batches", 1, allow_none=True)
        _check_int(every_n_epochs, "every_n_epochs", 1)
        check_choice(sample, SAMPLE_CHOICES, "sample", owner)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"SROPCallback: expected `seed` to be an int; got {seed!r}.")
        check_engine_options(
            roll_percent=roll_percent,
            keep_dc=keep_dc,
            ndim=ndim,
            unit=unit,
            repeated=repeated,
            num_bins=num_bins,
            compiled=compiled,
            owner=owner,
        )
        if isinstance(stats, str) or not isinstance(stats, Sequence) or not stats:
            raise ValueError(
                f"SROPCallback: expected `stats` to be a non-empty sequence of statistic names, "
                f"e.g. ('mean', 'median'); got {stats!r}. Valid choices: {', '.join(STATISTICS)}."
            )
        unknown = [s for s in stats if s not in STATISTICS]
        if unknown:
            raise ValueError(
                f"SROPCallback: `stats` has unknown statistic(s) {unknown!r}; valid choices: "
                f"{', '.join(STATISTICS)}."
            )
        for flag, value in (("log_histograms", log_histograms), ("log_figure", log_figure)):
            if not isinstance(value, bool):
                raise TypeError(f"SROPCallback: expected `{flag}` to be a bool; got {value!r}.")
        if not isinstance(prefix, str) or not prefix or prefix.strip("/") != prefix:
            raise ValueError(
                "SROPCallback: expected `prefix` to be a non-empty str without leading or "
                f"trailing '/'; got {prefix!r}."
            )
        if not isinstance(input_key, str):
            raise TypeError(f"SROPCallback: expected `input_key` to be a str; got {input_key!r}.")

        self.layers = layers
        self.num_batches = num_batches
        self.every_n_epochs = every_n_epochs
        self.sample = sample
        self.seed = seed
        self.roll_percent = float(roll_percent)
        self.keep_dc = keep_dc
        self.ndim = ndim
        self.unit = unit
        self.stats: tuple[str, ...] = tuple(stats)
        self.log_histograms = log_histograms
        self.log_figure = log_figure
        self.prefix = prefix
        self.repeated = repeated
        self.num_bins = num_bins
        self.input_key = input_key
        self.compiled = compiled

        self.last_reports: list[LayerReport] = []
        self._engine: SROPEngine | None = None
        self._generator = torch.Generator().manual_seed(seed)
        self._validation_runs = 0  # measured or not, in fit, without the sanity check
        self._measured_epochs = 0
        self._active = False
        self._batch_counter = 0
        self._chosen: set[int] | None = None  # None: the first `num_batches`
        self._noticed: set[str] = set()

    # ------------------------------------------------------------------ helpers
    @property
    @override
    def state_key(self) -> str:
        layers = self.layers
        if callable(layers) and not isinstance(layers, type):
            layers_key: object = getattr(layers, "__qualname__", type(layers).__name__)
        elif isinstance(layers, type):
            layers_key = layers.__name__
        elif isinstance(layers, tuple) and all(isinstance(t, type) for t in layers):
            layers_key = tuple(t.__name__ for t in layers)
        else:
            layers_key = layers
        return self._generate_state_key(prefix=self.prefix, layers=repr(layers_key))

    @property
    def engine(self) -> SROPEngine | None:
        """The hook engine (``None`` before ``setup``)."""
        return self._engine

    def _notice(self, key: str, message: str) -> None:
        if key not in self._noticed:
            self._noticed.add(key)
            notice(f"SROPCallback: {message}", stacklevel=4)

    def _make_engine(self, pl_module: LightningModule) -> SROPEngine:
        return SROPEngine(
            pl_module,
            self.layers,
            roll_percent=self.roll_percent,
            keep_dc=self.keep_dc,
            ndim=self.ndim,
            unit=self.unit,
            repeated=self.repeated,
            num_bins=self.num_bins,
            compiled=self.compiled,
            owner="SROPCallback",
        )

    def _release(self) -> None:
        """Remove every hook and drop this epoch's partial statistics."""
        self._active = False
        if self._engine is not None:
            self._engine.detach()
            self._engine.reset()

    def _choose_batches(self, trainer: Trainer) -> set[int] | None:
        if self.sample == "first" or self.num_batches is None:
            return None
        total = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        if not math.isfinite(total):
            self._notice(
                "random-inf",
                "`sample='random'` needs the number of validation batches, but the validation "
                "dataloader has no length; measuring the first `num_batches` batches instead.",
            )
            return None
        perm = torch.randperm(int(total), generator=self._generator)
        return {int(i) for i in perm[: self.num_batches].tolist()}

    # ------------------------------------------------------------------ lifecycle
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.compiled == "error" and _is_compiled(pl_module):
            raise RuntimeError(
                "SROPCallback: the LightningModule holds torch.compile'd code and "
                f"`compiled`={self.compiled!r}; compiled graphs ignore forward hooks added after "
                f"compilation. Valid choices: {', '.join(map(repr, COMPILED_CHOICES))} ('eager' "
                "runs the measured batches eagerly)."
            )
        has_submodules = next(pl_module.children(), None) is not None
        if has_submodules and (self._engine is None or self._engine.model is not pl_module):
            # Layers made later in `configure_model` are resolved at the first measured epoch.
            self._engine = self._make_engine(pl_module)
        if not trainer.loggers:
            self._notice(
                "no-logger",
                "no logger is attached to the Trainer; SROP scalars still reach "
                "`trainer.callback_metrics`, histograms and figures are not written.",
            )

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = False
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._validation_runs += 1
            if (self._validation_runs - 1) % self.every_n_epochs != 0:
                return
        if self._engine is None or self._engine.model is not pl_module:
            self._engine = self._make_engine(pl_module)
        else:
            self._engine.detach()
            self._engine.resolve()  # the model may have gained or lost layers since setup
        self._engine.reset()
        self._batch_counter = 0
        self._chosen = self._choose_batches(trainer)
        self._active = True

    @override
    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active or self._engine is None:
            return
        index = self._batch_counter
        self._batch_counter += 1
        if self._chosen is None:
            if self.num_batches is not None and index >= self.num_batches:
                return
        elif index not in self._chosen:
            return
        if self.unit == "input":
            self._engine.set_input(batch_input(batch, self.input_key, owner="SROPCallback"))
        self._engine.attach()

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._engine is not None:
            self._engine.detach()

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active or self._engine is None:
            return
        engine = self._engine
        engine.detach()
        self._active = False
        for name in engine.unfired():
            self._notice(
                f"unfired:{name}",
                f"layer {name!r} did not run during the measured batches (not called by "
                "validation_step, or compiled code that bypasses hooks); it has no SROPs.",
            )
        try:
            reports = engine.reports()  # a collective: every process takes part
        finally:
            engine.reset()
        self.last_reports = reports
        self._measured_epochs += 1
        values = {
            f"{self.prefix}/{report.name}/{stat}": report.stats[stat]
            for report in reports
            for stat in self.stats
        }
        if values:
            with warnings.catch_warnings():
                # Lightning recommends sync_dist=True for epoch-level values under DDP; these
                # are already merged, the same on every process, so that advice does not apply.
                warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
                pl_module.log_dict(
                    values,
                    on_step=False,
                    on_epoch=True,
                    sync_dist=False,  # already merged: the same values on every process
                    logger=bool(trainer.loggers),  # no logger: one notice (setup), not one per key
                    prog_bar=False,
                    add_dataloader_idx=False,
                )
        if reports and trainer.is_global_zero and trainer.loggers:
            self._log_extras(trainer, reports)

    def _log_extras(self, trainer: Trainer, reports: list[LayerReport]) -> None:
        """Histograms and the per-layer figure, for the attached loggers that take them.

        Nothing is computed or drawn for output that no attached logger takes (``CSVLogger``
        takes neither), and a missing optional dependency (matplotlib for the figure) is one
        notice, never an error.
        """
        from lightning_srop.loggers import log_figure, log_histograms, logger_step, loggers_taking

        step = logger_step(trainer)  # the step Lightning logs the epoch's scalars at
        if self.log_histograms:
            histogram_loggers, skipped = loggers_taking(trainer.loggers, "histograms")
            for name in skipped:
                self._notice(
                    f"hist:{name}",
                    f"logger {name} has no histogram support; SROP histograms are not written "
                    "to it (scalars are).",
                )
            if histogram_loggers:
                log_histograms(histogram_loggers, reports, step=step, prefix=self.prefix)
        if not self.log_figure:
            return
        image_loggers, skipped = loggers_taking(trainer.loggers, "images")
        for name in skipped:
            self._notice(
                f"figure:{name}",
                f"logger {name} has no image support; the SROP figure is not written to it.",
            )
        if not image_loggers:
            return  # no logger could show the figure: do not draw it
        from lightning_srop.plots import plot_layer_profile  # imports without matplotlib

        unit = "cycles / input pixel" if self.unit == "input" else "cycles / pixel"
        try:
            figure = plot_layer_profile(reports, unit=unit, title=f"SROP per layer, step {step}")
            log_figure(image_loggers, figure, tag=f"{self.prefix}/layer_profile", step=step)
        except ModuleNotFoundError as err:
            missing = (err.name or "").partition(".")[0]
            if missing not in ("matplotlib", "PIL"):  # optional dependencies of figures only
                raise
            self._notice(
                "figure-import",
                f"the SROP figure needs {'Pillow' if missing == 'PIL' else 'matplotlib'}, which "
                "is not installed; it is not drawn (scalars and histograms are still logged). "
                "Install it with: pip install 'lightning-srop[plots]'.",
            )

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._release()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release()

    # ------------------------------------------------------------------ checkpointing
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "validation_runs": self._validation_runs,
            "measured_epochs": self._measured_epochs,
            "seed": self.seed,
            "generator_state": self._generator.get_state(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validation_runs = int(state_dict.get("validation_runs", 0))
        self._measured_epochs = int(state_dict.get("measured_epochs", 0))
        generator_state = state_dict.get("generator_state")
        if state_dict.get("seed", self.seed) != self.seed:
            self._notice(
                "seed",
                f"the checkpoint's `seed`={state_dict.get('seed')!r} differs from this "
                f"callback's `seed`={self.seed!r}; continuing the checkpoint's random stream.",
            )
        if isinstance(generator_state, torch.Tensor):
            self._generator.set_state(generator_state.cpu())
