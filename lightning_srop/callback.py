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
from pathlib import Path
from typing import Any, Final, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_srop.engine import SROPEngine, _is_compiled, batch_input
from lightning_srop.layers import LayerChoice
from lightning_srop.loggers import logger_step
from lightning_srop.notices import notice
from lightning_srop.options import (
    COMPILED_CHOICES,
    Compiled,
    Layout,
    Repeated,
    SROPOptions,
    Unit,
    check_bool,
    check_choice,
    check_int,
)
from lightning_srop.report import LayerReport, SROPReport
from lightning_srop.statistics import Statistic

__all__ = ["SAMPLE_CHOICES", "SROPCallback"]

#: Values of ``sample=``.
SAMPLE_CHOICES: Final[tuple[str, ...]] = ("first", "random")

_STATE_VERSION: Final[int] = 1


class SROPCallback(Callback):
    r"""Log per-layer spectral roll-off points (SROPs) of sampled validation batches.

    Args:
        layers: which layers to measure: ``None`` (the model's 2-D convolution and pooling
            layers; in a model without any, its 1-D ones), a regular expression over qualified
            names (``re.search``), a dotted module class path (``"torch.nn.Conv2d"``, for YAML
            configs), a list of names, a module type or tuple of types, or a callable
            ``(name, module) -> bool`` (see :mod:`lightning_srop.layers`).
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
        layout: where 4-D outputs keep their channels: ``"auto"``, ``"NCHW"``, ``"NHWC"`` or a
            mapping ``{layer: layout}`` (see :class:`~lightning_srop.options.SROPOptions`).
        stats: statistics logged as scalars, any of
            :data:`~lightning_srop.statistics.STATISTICS`.
        log_histograms: write one SROP histogram per layer to TensorBoard / W&B.
        log_figure: write a figure of the per-layer SROP against depth to TensorBoard / W&B.
        prefix: first component of every logged name: ``{prefix}/{layer}/{stat}``.
        save_reports: on rank zero, write each measured epoch's
            :class:`~lightning_srop.report.SROPReport` as JSON (histograms included) to
            ``{trainer.log_dir}/{prefix}_reports/epoch=E-step=S.json``; read them back with
            ``lightning_srop.runs.read_run`` or ``SROPReport.from_json``.
        repeated: a module called several times per batch: ``"separate"`` (keys ``name``,
            ``name#1``, ...), ``"merge"`` (all calls pooled) or ``"first"`` (first call only).
        num_bins: histogram bins per layer (quantiles are within half a bin).
        input_key: where the input lies in dict batches (for ``unit="input"``); tensor batches
            are the input, tuple/list batches hold it first.
        compiled: ``"eager"`` runs ``torch.compile``'d code eagerly during the measured batches
            (compiled graphs ignore hooks added later); ``"error"`` refuses compiled models.

    Attributes:
        options: the validated :class:`~lightning_srop.options.SROPOptions` (what is measured
            and how); the other arguments decide when and where it is logged.
        last_report: the :class:`~lightning_srop.report.SROPReport` of the last measured epoch,
            layers in forward order (the same on every process); ``None`` before the first.
        last_reports: its :class:`~lightning_srop.report.LayerReport` list.

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
        unit: Unit = "layer",
        layout: Layout | dict[str, Layout] = "auto",
        stats: Sequence[Statistic] = ("mean", "median"),
        log_histograms: bool = True,
        log_figure: bool = True,
        prefix: str = "srop",
        save_reports: bool = False,
        repeated: Repeated = "separate",
        num_bins: int = 1024,
        input_key: str = "input",
        compiled: Compiled = "eager",
    ) -> None:
        owner = "SROPCallback"
        # What is measured and how: one validated options object (shared with `profile`).
        self.options = SROPOptions(
            layers=layers,
            num_batches=num_batches,
            roll_percent=roll_percent,
            keep_dc=keep_dc,
            ndim=ndim,
            unit=unit,
            layout=layout,
            stats=stats,
            repeated=repeated,
            num_bins=num_bins,
            input_key=input_key,
            compiled=compiled,
            owner=owner,
        )
        # When and where it is logged: the callback's own options.
        self.every_n_epochs = check_int(every_n_epochs, "every_n_epochs", owner, minimum=1)
        check_choice(sample, SAMPLE_CHOICES, "sample", owner)
        self.sample = sample
        self.seed = check_int(seed, "seed", owner, minimum=-(2**63), maximum=2**64 - 1)
        self.log_histograms = check_bool(log_histograms, "log_histograms", owner)
        self.log_figure = check_bool(log_figure, "log_figure", owner)
        if not isinstance(prefix, str) or not prefix or prefix.strip("/") != prefix:
            raise ValueError(
                "SROPCallback: expected `prefix` to be a non-empty str without leading or "
                f"trailing '/'; got {prefix!r}."
            )
        self.prefix = prefix
        self.save_reports = check_bool(save_reports, "save_reports", owner)

        self.last_report: SROPReport | None = None
        self._engine: SROPEngine | None = None
        self._generator = torch.Generator().manual_seed(self.seed)
        self._validation_runs = 0  # measured or not, in fit, without the sanity check
        self._measured_epochs = 0
        self._active = False
        self._batch_counter = 0
        self._measured_batches = 0
        self._chosen: set[int] | None = None  # None: the first `num_batches`
        self._noticed: set[str] = set()

    # ------------------------------------------------------------------ options
    @property
    def layers(self) -> LayerChoice:
        """The layer choice (class paths already turned into types)."""
        return self.options.layers

    @property
    def num_batches(self) -> int | None:
        """Validation batches measured per measured epoch (``None`` = all)."""
        return self.options.num_batches

    @property
    def stats(self) -> tuple[str, ...]:
        """Statistics logged as scalars."""
        return tuple(self.options.stats)

    @property
    def last_reports(self) -> list[LayerReport]:
        """The layer reports of the last measured epoch (``last_report``'s layers)."""
        return [] if self.last_report is None else list(self.last_report.layers)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # Spawned processes (ddp_spawn, ddp_notebook, torch.multiprocessing) receive the
        # callback pickled. The engine (hooks, device metrics, a reference to the model) and
        # the generator belong to this process: the copy rebuilds them, the generator from its
        # state as plain bytes (no tensor goes through shared memory).
        state = self.__dict__.copy()
        state["_engine"] = None
        state["_generator"] = bytes(self._generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator_state = state.pop("_generator")
        self.__dict__.update(state)
        self._generator = torch.Generator()
        if isinstance(generator_state, bytes):
            self._generator.set_state(
                torch.frombuffer(bytearray(generator_state), dtype=torch.uint8)
            )

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
        return SROPEngine(pl_module, options=self.options, owner="SROPCallback")

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
        if self.options.compiled == "error" and _is_compiled(pl_module):
            raise RuntimeError(
                "SROPCallback: the LightningModule holds torch.compile'd code and "
                f"`compiled`={self.options.compiled!r}; compiled graphs ignore forward hooks added after "
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
        self._measured_batches = 0
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
        try:
            x = batch_input(batch, self.options.input_key, owner="SROPCallback")
        except (TypeError, ValueError):
            if self.options.unit == "input":
                raise  # the input's size is needed: say why it cannot be found
            x = None  # only the report's downscaling is unknown
        self._engine.set_input(x)
        self._engine.attach()
        self._measured_batches += 1

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
        self.last_report = SROPReport(
            layers=tuple(reports),
            options=self.options.to_dict(),
            skipped={k: v for k, v in engine.skipped.items() if k not in engine.metrics},
            num_batches=self._measured_batches,
            epoch=trainer.current_epoch,
            step=logger_step(trainer),
            model=type(pl_module).__name__,
        )
        if self.save_reports and trainer.is_global_zero:
            self._save_report(trainer, self.last_report)
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

    def _save_report(self, trainer: Trainer, report: SROPReport) -> Path:
        directory = Path(trainer.log_dir or trainer.default_root_dir) / f"{self.prefix}_reports"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"epoch={report.epoch}-step={report.step}.json"
        report.to_json(path)
        return path

    def _log_extras(self, trainer: Trainer, reports: list[LayerReport]) -> None:
        """Histograms and the per-layer figure, for the attached loggers that take them.

        Nothing is computed or drawn for output that no attached logger takes (``CSVLogger``
        takes neither), and a missing optional dependency (matplotlib for the figure) is one
        notice, never an error.
        """
        from lightning_srop.loggers import log_figure, log_histograms, loggers_taking

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

        unit = "cycles / input pixel" if self.options.unit == "input" else "cycles / pixel"
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
