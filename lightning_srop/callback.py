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
- with ``baseline=True``, at ``on_train_start`` of the first ``fit`` (not on resume: the
  baseline is checkpointed), the same batches are measured once with the initial weights (eval
  mode, no grad, merged across processes); each measured epoch then also reports
  ``{prefix}/{layer}/change`` = log(mean SROP / baseline mean SROP);
- at ``on_validation_epoch_end`` every process merges the statistics (a collective), puts
  ``{prefix}/{layer}/{stat}`` into ``trainer.callback_metrics`` with ``LightningModule.log``
  (merged already, the same on every process, each value a ``Metric`` that does not sync
  again), and rank zero writes the loggers: in TensorBoard every layer its own run
  ``{prefix}/{NN}-{layer}`` with tags ``{prefix}/{stat}`` (one chart per statistic, every layer
  a named line in forward order), elsewhere the flat keys (``{prefix}/{NN}-{layer}/{stat}``
  with ``ordered_tags=True``) and W&B charts; one histogram per layer, a figure of SROP against
  depth, one of SROP over the epochs so far and a layer x epoch heatmap of ``change``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng
from typing_extensions import override

from lightning_srop.batches import BatchInput, input_of
from lightning_srop.compiled import is_compiled
from lightning_srop.engine import SROPEngine
from lightning_srop.functional.spectral_rolloff import DEFAULT_ROLL_PERCENT
from lightning_srop.layers import LayerChoice
from lightning_srop.loggers import logger_step
from lightning_srop.measure import measure
from lightning_srop.notices import Notices
from lightning_srop.options import (
    COMPILED_CHOICES,
    Compiled,
    Grid,
    InputLayout,
    Layout,
    Repeated,
    SROPOptions,
    Unit,
    check_bool,
    check_choice,
    check_forward,
    check_int,
    check_prefix,
)
from lightning_srop.report import LayerReport, SROPReport
from lightning_srop.statistics import MergedValue, Statistic
from lightning_srop.tags import CHANGE, DEFAULT_PREFIX, REPORTS_GROUP, depth_labels, join_tag
from lightning_srop.transforms import HISTOGRAM_BINS, history
from lightning_srop.validation_road import run_validation_step, validation_batches
from lightning_srop.views import write_extras, write_scalars

__all__ = ["SAMPLE_CHOICES", "SROPCallback"]

_OWNER: Final[str] = "SROPCallback"


#: Values of ``sample=``.
SAMPLE_CHOICES: Final[tuple[str, ...]] = ("first", "random")


class SROPCallback(Callback):
    r"""Log per-layer spectral roll-off points (SROPs) of sampled validation batches.

    What is measured and how (``layers``, ``num_batches``, ``roll_percent``, ``keep_dc``,
    ``ndim``, ``unit``, ``layout``, ``grid``, ``prefix_tokens``, ``input_layout``, ``stats``,
    ``repeated``, ``num_bins``, ``input_key``, ``compiled``) is documented once, on
    :class:`~lightning_srop.options.SROPOptions`: pass those as keywords of the same names and
    defaults, or as one ``options=SROPOptions(...)``. The arguments below decide when and where
    it is logged.

    Args:
        every_n_epochs: measure every n-th validation run of ``fit``, starting with the first
            (the sanity check never counts). Every ``trainer.validate()`` run is measured.
        sample: ``"first"`` takes the first ``num_batches`` batches of the epoch; ``"random"``
            draws ``num_batches`` of them without replacement, the ``k``-th draw of the run
            seeded with ``(seed, k)`` (the global RNG is never touched; ``k`` is checkpointed).
        seed: seed of the draws for ``sample="random"``.
        log_histograms: write one SROP histogram per layer to TensorBoard / W&B.
        log_figure: write a figure of the per-layer SROP against depth, and one of each
            layer's mean SROP over the epochs so far, to TensorBoard / W&B / MLflow.
        prefix: first component of every logged name: ``{prefix}/{layer}/{stat}``.
        baseline: measure the chosen validation batches once before training (the initial
            weights, at ``on_train_start`` of the first ``fit``) and report, per layer and
            measured epoch, ``{prefix}/{layer}/change`` = log(mean SROP / baseline mean SROP)
            (also ``LayerReport.extra["change"]``). Negative: SROP fell since initialization.
        ordered_tags: flat logger keys carry a depth index, ``{prefix}/{NN}-{layer}/{stat}``,
            so that W&B panels, MLflow and CSV columns sort layers in forward order; the keys
            of ``trainer.callback_metrics`` (what ``ModelCheckpoint``/``EarlyStopping``
            monitor) stay ``{prefix}/{layer}/{stat}``. TensorBoard's layer runs and the W&B
            charts show forward order either way.
        histogram_bins: the most bins of a logged histogram (one bin per occupied value when
            there are fewer, see :func:`lightning_srop.transforms.display_bins`); ``None`` logs
            the measured bins.
        save_reports: on rank zero, write each measured epoch's
            :class:`~lightning_srop.report.SROPReport` as JSON (histograms included) to
            ``{trainer.log_dir}/{prefix}_reports/epoch=E-step=S.json``; read them back with
            ``lightning_srop.runs.read_run`` or ``SROPReport.from_json``.
        forward: how the baseline runs the model on a batch: a callable
            ``(pl_module, batch) -> output``; default: your ``validation_step``, with
            ``self.log`` silenced and the metric states and gathered outputs it changes put
            back, on batches moved by Lightning's own transfer path (see
            ``docs/dashboards.md``). Validation batches run through ``validation_step``
            either way.
        options: what is measured and how, as one
            :class:`~lightning_srop.options.SROPOptions` (e.g. shared with ``profile``); the
            keywords of its fields are then left at their defaults.

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
        roll_percent: float = DEFAULT_ROLL_PERCENT,
        keep_dc: bool = False,
        ndim: int | None = None,
        unit: Unit = "layer",
        layout: Layout | dict[str, Layout] = "auto",
        grid: Grid | dict[str, Grid] | None = None,
        prefix_tokens: int | dict[str, int] | None = None,
        input_layout: InputLayout = "auto",
        stats: Sequence[Statistic] = ("mean", "median"),
        log_histograms: bool = True,
        log_figure: bool = True,
        prefix: str = DEFAULT_PREFIX,
        baseline: bool = True,
        ordered_tags: bool = False,
        histogram_bins: int | None = HISTOGRAM_BINS,
        save_reports: bool = False,
        repeated: Repeated = "separate",
        num_bins: int = 1024,
        input_key: str = "input",
        compiled: Compiled = "eager",
        forward: Callable[[LightningModule, Any], Any] | None = None,
        options: SROPOptions | None = None,
    ) -> None:
        owner = _OWNER
        # What is measured and how: one validated options object (shared with `profile`),
        # given whole (`options=`) or as the flat keywords of its fields.
        measured = {
            "layers": layers,
            "num_batches": num_batches,
            "roll_percent": roll_percent,
            "keep_dc": keep_dc,
            "ndim": ndim,
            "unit": unit,
            "layout": layout,
            "grid": grid,
            "prefix_tokens": prefix_tokens,
            "input_layout": input_layout,
            "stats": stats,
            "repeated": repeated,
            "num_bins": num_bins,
            "input_key": input_key,
            "compiled": compiled,
        }
        self.options = SROPOptions.given(options, measured, owner)
        # When and where it is logged: the callback's own options.
        self.every_n_epochs = check_int(every_n_epochs, "every_n_epochs", owner, minimum=1)
        check_choice(sample, SAMPLE_CHOICES, "sample", owner)
        self.sample = sample
        self.seed = check_int(seed, "seed", owner, minimum=-(2**63), maximum=2**64 - 1)
        self.log_histograms = check_bool(log_histograms, "log_histograms", owner)
        self.log_figure = check_bool(log_figure, "log_figure", owner)
        self.prefix = check_prefix(prefix, owner)
        self.baseline = check_bool(baseline, "baseline", owner)
        self.ordered_tags = check_bool(ordered_tags, "ordered_tags", owner)
        self.histogram_bins = (
            None
            if histogram_bins is None
            else check_int(histogram_bins, "histogram_bins", owner, minimum=1)
        )
        self.save_reports = check_bool(save_reports, "save_reports", owner)
        self.forward = check_forward(forward, owner)
        #: The baseline measurement (this process's copy; ``None`` before it, and after a
        #: resume, where only its means come back from the checkpoint).
        self.baseline_report: SROPReport | None = None
        self._start_state()

    def _start_state(self) -> None:
        """The run's state before any fit: nothing measured, nothing said, nothing declared."""
        self.last_report: SROPReport | None = None
        self._engine: SROPEngine | None = None
        self._draws = 0  # random choices of batches made so far (the k of the next draw)
        self._validation_runs = 0  # measured or not, in fit, without the sanity check
        self._measured_epochs = 0
        self._active = False
        self._batch_counter = 0
        self._measured_batches = 0
        self._chosen: set[int] | None = None  # None: the first `num_batches`
        self._notices = Notices(_OWNER)
        self._baseline: dict[str, float] | None = None  # layer -> baseline mean SROP
        self._history: list[dict[str, Any]] = []  # per measured epoch: small means only
        self._tag_index: dict[str, int] = {}  # layer -> depth index in logger tags
        self._layout: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # written for
        self._restored = False

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
    def baseline_means(self) -> dict[str, float] | None:
        """Layer -> mean SROP of the baseline measurement (``None`` before it or without one)."""
        return None if self._baseline is None else dict(self._baseline)

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """Layer -> ``(epoch, mean SROP)`` of every measured epoch so far, in forward order."""
        return self.history_of("mean")

    def history_of(self, statistic: str) -> dict[str, list[tuple[int, float]]]:
        """Layer -> ``(epoch, value)`` of a logged ``statistic`` (or ``"mean"``, or ``"change"``
        with ``baseline=True``) in every measured epoch so far, in forward order; layers
        without it are left out."""
        return history(self._history_reports(), statistic, skip_missing=True)

    def _history_reports(self) -> list[SROPReport]:
        """The remembered values of every measured epoch as reports (no histograms), for
        :func:`~lightning_srop.transforms.history`."""
        none = np.zeros(0)
        return [
            SROPReport(
                layers=tuple(
                    LayerReport(name, dict(values), none, none, none, depth=depth)
                    for depth, (name, values) in enumerate(entry["values"].items())
                ),
                epoch=int(entry["epoch"] or 0),
                step=entry.get("step"),
            )
            for entry in self._history
        ]

    @property
    def last_reports(self) -> list[LayerReport]:
        """The layer reports of the last measured epoch (``last_report``'s layers)."""
        return [] if self.last_report is None else list(self.last_report.layers)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # Spawned processes (ddp_spawn, ddp_notebook, torch.multiprocessing) receive the
        # callback pickled. The engine (hooks, device metrics, a reference to the model)
        # belongs to this process: the copy rebuilds it.
        return {**self.__dict__, "_engine": None}

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
        self._notices(key, message)

    def _engine_for(self, pl_module: LightningModule) -> SROPEngine:
        """The engine of ``pl_module``: made anew when there is none or the model changed,
        else detached and resolved again (the model may have gained or lost layers since
        ``setup``); its statistics are reset either way."""
        if self._engine is None or self._engine.model is not pl_module:
            self._engine = SROPEngine(pl_module, options=self.options, owner="SROPCallback")
        else:
            self._engine.detach()
            self._engine.resolve()
        self._engine.reset()
        return self._engine

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
        # The k-th draw of the run from its own seed: the state is one checkpointed int.
        rng = np.random.default_rng([self.seed % 2**64, self._draws])
        self._draws += 1
        return {int(i) for i in rng.permutation(int(total))[: self.num_batches]}

    # ------------------------------------------------------------------ lifecycle
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.options.compiled == "error" and is_compiled(pl_module):
            raise RuntimeError(
                "SROPCallback: the LightningModule holds torch.compile'd code and "
                f"`compiled`={self.options.compiled!r}; compiled graphs ignore forward hooks added after "
                f"compilation. Valid choices: {', '.join(map(repr, COMPILED_CHOICES))} ('eager' "
                "runs the measured batches eagerly)."
            )
        if next(pl_module.children(), None) is not None:
            # Layers made later in `configure_model` are resolved at the first measured epoch.
            self._engine_for(pl_module)
        if not trainer.loggers:
            self._notice(
                "no-logger",
                "no logger is attached to the Trainer; SROP scalars still reach "
                "`trainer.callback_metrics`, histograms and figures are not written.",
            )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.baseline and self._baseline is None and self._restored:
            self._notice(
                "baseline-resume",
                "the checkpoint holds no SROP baseline (saved without `baseline=True`); it is "
                "not measured on resume, so no `change` is reported.",
            )
        measure = self.baseline and self._baseline is None and not self._restored
        self._before_training(trainer, pl_module, baseline=measure)

    def _before_training(
        self, trainer: Trainer, pl_module: LightningModule, *, baseline: bool
    ) -> None:
        """Measure validation batches before the first training step, exactly as validation
        will (:func:`~lightning_srop.validation_road.validation_batches`): ``num_batches`` of them as the baseline when
        ``baseline``, else one, only to prove that the settings work for this model and these
        batches. A setting that cannot work raises here, not an epoch later: ``unit="input"``
        without an input that can be found and read, and a layer choice that measures nothing.
        """
        batches = validation_batches(trainer, pl_module)
        if batches is None:
            if baseline:
                self._notice(
                    "baseline-no-data",
                    "no validation dataloader is ready at the start of training (no "
                    "validation, or `check_val_every_n_epoch` > 1); the SROP baseline is not "
                    "measured.",
                )
            return
        limit = (self.num_batches if baseline else 1) or None
        engine = self._engine_for(pl_module)
        with isolate_rng():  # training is the same with and without it
            report = measure(
                engine,
                itertools.islice(batches, limit),
                lambda item: run_validation_step(trainer, pl_module, item, self.forward),
                input_of=lambda item: self._input_of(pl_module, item[0]),
                epoch=trainer.current_epoch,
                step=logger_step(trainer),
                model=type(pl_module).__name__,
                label="baseline",
            )  # a collective under DDP, like every measurement: each process its own shard
        if report.num_batches and not report.layers:
            unfired = engine.unfired()
            why = "; ".join(f"{name!r}: {reason}" for name, reason in report.skipped.items())
            raise ValueError(
                f"SROPCallback: the layer choice `layers`={self.layers!r} measures nothing on "
                f"this model's validation batches: {why or 'no chosen layer ran'}"
                + (f" (never ran: {', '.join(unfired[:8])})" if unfired else "")
                + ". Choose layers that `validation_step` runs and whose outputs are maps "
                "(`layers=` names, a regex, module types or a callable), or state how their "
                "outputs read (`layout=`, `grid=`, `prefix_tokens=`)."
            )
        if baseline and report.num_batches:
            self.baseline_report = report
            self._baseline = {r.name: float(r.stats["mean"]) for r in report.layers}

    def _input_of(self, pl_module: LightningModule, batch: Any) -> BatchInput | None:
        """The input of a validation batch, required with ``unit="input"``."""
        return input_of(
            batch,
            self.options.input_key,
            pl_module,
            required=self.options.unit == "input",
            owner=_OWNER,
        )

    def _with_change(self, report: LayerReport) -> LayerReport:
        """``report`` with ``extra["change"]`` when the layer has a baseline."""
        if self._baseline is None or report.name not in self._baseline:
            return report
        before, now = self._baseline[report.name], float(report.stats["mean"])
        change = math.nan
        if math.isfinite(before) and math.isfinite(now) and before > 0 and now > 0:
            change = math.log(now / before)
        return dataclasses.replace(report, extra={**report.extra, CHANGE: change})

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = False
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._validation_runs += 1
            if (self._validation_runs - 1) % self.every_n_epochs != 0:
                return
        self._engine_for(pl_module)
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
        self._engine.set_input(self._input_of(pl_module, batch))
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
        if self.num_batches is not None and self._measured_batches < self.num_batches:
            self._notice(
                "fewer-batches",
                f"measured {self._measured_batches} validation batch(es) per process, fewer than "
                f"`num_batches`={self.num_batches}: the validation run has no more "
                "(`limit_val_batches`, a small validation set). The SROPs come from those; this "
                "notice is shown once.",
            )
        try:
            report = engine.report(  # a collective: every process takes part
                num_batches=self._measured_batches,
                epoch=trainer.current_epoch,
                step=logger_step(trainer),
                model=type(pl_module).__name__,
            )
        finally:
            engine.reset()
        reports = [self._with_change(layer) for layer in report.layers]
        self.last_report = dataclasses.replace(report, layers=tuple(reports))
        if self.save_reports and trainer.is_global_zero:
            self._save_report(trainer, self.last_report)
        self._measured_epochs += 1
        self._remember(self.last_report)
        values = {
            join_tag(self.prefix, name, stat): value
            for name, stats in self._scalars(reports).items()
            for stat, value in stats.items()
        }
        for key, value in values.items():
            pl_module.log(
                key,
                MergedValue(value, pl_module.device),  # already merged: the same on every process
                on_step=False,
                on_epoch=True,
                # the callback writes the loggers' scalars itself (`_log_views`): every layer
                # its own TensorBoard run, flat keys elsewhere
                logger=False,
                prog_bar=False,
                add_dataloader_idx=False,
                metric_attribute=key,
            )
        if reports and trainer.is_global_zero and trainer.loggers:
            self._log_views(trainer, reports)
            self._log_extras(trainer, reports)

    def _scalars(self, reports: Sequence[LayerReport]) -> dict[str, dict[str, float]]:
        """Layer -> logged statistic -> value (the chosen statistics, then ``change``)."""
        out: dict[str, dict[str, float]] = {}
        for report in reports:
            values = {stat: float(report.stats[stat]) for stat in self.stats}
            if CHANGE in report.extra:
                values[CHANGE] = float(report.extra[CHANGE])
            out[report.name] = values
        return out

    def _remember(self, report: SROPReport) -> None:
        """Keep this epoch's per-layer means (and logged values) for the curves over epochs."""
        values: dict[str, dict[str, float]] = {}
        for name, stats in self._scalars(report.layers).items():
            values[name] = {"mean": float(report[name].stats["mean"]), **stats}
        self._history.append({"epoch": report.epoch, "step": report.step, "values": values})

    def _labels(self, names: Sequence[str], indexed: bool | None = None) -> dict[str, str]:
        """Layer -> its component in logger tags: ``{NN}-{layer}`` with ``ordered_tags`` (or
        ``indexed=True``: the names of TensorBoard's layer runs).

        A layer keeps its index for the whole run (checkpointed); layers are numbered in
        forward order as first seen, so a layer that only appears later comes last.
        """
        for name in names:
            self._tag_index.setdefault(name, len(self._tag_index))
        if not (self.ordered_tags if indexed is None else indexed):
            return {name: name for name in names}
        return depth_labels(self._tag_index, names)

    def _log_views(self, trainer: Trainer, reports: Sequence[LayerReport]) -> None:
        """The loggers' scalars and the W&B charts (rank zero), see
        :func:`~lightning_srop.views.write_scalars`."""
        names = [r.name for r in reports]
        self._labels(names)  # number new layers in forward order
        self._layout = write_scalars(
            trainer.loggers,
            self._scalars(reports),
            self._history_reports(),
            step=logger_step(trainer),
            epoch=trainer.current_epoch,
            prefix=self.prefix,
            labels=lambda layers, indexed=None: self._labels(layers, indexed),
            order=self._tag_index,
            declared=self._layout,
        )

    def _save_report(self, trainer: Trainer, report: SROPReport) -> Path:
        directory = Path(trainer.log_dir or trainer.default_root_dir) / (
            self.prefix + REPORTS_GROUP
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"epoch={report.epoch}-step={report.step}.json"
        report.to_json(path)
        return path

    def _log_extras(self, trainer: Trainer, reports: list[LayerReport]) -> None:
        """Histograms and figures, see :func:`~lightning_srop.views.write_extras`."""
        names = [r.name for r in reports]
        write_extras(
            trainer.loggers,
            reports,
            step=logger_step(trainer),
            epoch=trainer.current_epoch,
            prefix=self.prefix,
            unit=self.options.unit,
            histograms=self.log_histograms,
            figures=self.log_figure,
            max_bins=self.histogram_bins,
            labels=self._labels(names),
            runs=self._labels(names, indexed=True),
            history=self.history,
            changes=self.history_of(CHANGE),
            say=self._notice,
        )

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._release()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release()
        if trainer.is_global_zero:
            from lightning_srop.loggers import close_layer_runs

            close_layer_runs(trainer.loggers)

    # ------------------------------------------------------------------ checkpointing
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "validation_runs": self._validation_runs,
            "measured_epochs": self._measured_epochs,
            "seed": self.seed,
            "draws": self._draws,
            "baseline": None if self._baseline is None else dict(self._baseline),
            "history": [
                {**entry, "values": {k: dict(v) for k, v in entry["values"].items()}}
                for entry in self._history
            ],
            "tag_index": dict(self._tag_index),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = True
        self._validation_runs = int(state_dict.get("validation_runs", 0))
        self._measured_epochs = int(state_dict.get("measured_epochs", 0))
        baseline = state_dict.get("baseline")
        self._baseline = (
            None if baseline is None else {str(k): float(v) for k, v in baseline.items()}
        )
        self._history = list(state_dict.get("history", []))
        self._tag_index = {str(k): int(v) for k, v in state_dict.get("tag_index", {}).items()}
        self._layout = None  # written again at the next measured epoch
        # Checkpoints written before the draw counter: one draw per measured epoch.
        self._draws = int(state_dict.get("draws", self._measured_epochs))
        if state_dict.get("seed", self.seed) != self.seed:
            self._notice(
                "seed",
                f"the checkpoint's `seed`={state_dict.get('seed')!r} differs from this "
                f"callback's `seed`={self.seed!r}; the next draws use this callback's seed.",
            )
