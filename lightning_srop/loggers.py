"""Write computed SROP statistics to experiment loggers: histograms and figures.

Scalars go through ``LightningModule.log`` (the callback's job); this module writes what
Lightning's logger API has no common call for:

- **Histograms** (:func:`log_histograms`): one per layer, pre-binned on the device by
  :class:`~lightning_srop.statistics.SROPStatistics` and sent as bucket counts, never as raw
  values.

  * TensorBoard: ``SummaryWriter.add_histogram_raw`` with the layer's bins, empty leading and
    trailing bins trimmed (TensorBoard drops them anyway and then stretches the outer bins to
    ``min``/``max``). ``min``/``max`` are the outer edges of the kept bins, so the range is never
    zero, even when every map fell into one bin.
  * Weights & Biases: ``wandb.Histogram(np_histogram=(counts, edges))`` with at most
    :data:`WANDB_MAX_BINS` (512) bins: empty outer bins are trimmed first, then runs of ``k``
    adjacent bins are summed (:func:`~lightning_srop.transforms.rebin`), which is exact (every
    edge is one of the original edges, every count is a sum of original counts).
  * Layers without a single valid map (all flat or invalid, statistics NaN) are skipped.
  * ``max_bins=`` re-bins each histogram for display first
    (:func:`~lightning_srop.transforms.display_bins`: one bin per occupied value when there are
    few, else at most ``max_bins`` merged bins), exactly.

- **Figures** (:func:`log_figure`): rendered once to an RGB array, then TensorBoard
  ``add_image``, W&B ``wandb.Image`` or MLflow images.

**Which loggers take what** (:func:`loggers_taking`, judged without drawing or computing
anything): TensorBoard and W&B both, MLflow figures only (it has no histograms), ``CSVLogger``,
Comet, Neptune and others neither; they are returned by name so that the caller can say so once.

**Tags.** Every name written here is spelled by :mod:`lightning_srop.tags` (which
:mod:`lightning_srop.runs` decodes them with), a logger's own ``prefix`` argument in front.

**Steps.** Pass :func:`logger_step` ``(trainer)``: the step at which Lightning logs
epoch-level scalars, so that histograms and figures share the scalars' x.

* TensorBoard: written at ``global_step=step``; TensorBoard tolerates any order.
* W&B: Lightning's ``WandbLogger`` never passes ``step=`` to ``wandb.log``; it logs
  ``trainer/global_step`` as a metric and declares it the x-axis of every key
  (``define_metric("*", step_metric="trainer/global_step")``), while wandb's own ``_step``
  counts ``log`` calls. That counter runs ahead of the trainer's step as soon as more than one
  record is logged per step (training and validation scalars, learning rates, ...), and W&B
  silently drops a record whose ``step=`` is below it. So histograms and images go through the
  same route as Lightning's scalars (``WandbLogger.log_metrics(..., step=step)``, which adds
  ``trainer/global_step = step``): they never go backwards and share their x-axis with the
  scalars.

**MLflow** (``MLFlowLogger``, or any logger whose ``experiment`` is an ``MlflowClient`` and
that has a ``run_id``): figures as time-stepped images (see :func:`log_figure`); ``epoch`` is
not written beside the scalars (Lightning logs it at the same step, and MLflow keeps both).

**Views.** TensorBoard colours and names *runs*, and draws one card per tag with one line per
run: :func:`log_layer_runs` makes every layer a run of its own (``{NN}-{layer}`` sorts them in
forward order), one chart per statistic; with ``runs=``, :func:`log_histograms` writes each
layer's histograms into the same run; :func:`close_layer_runs` closes those writers. Other
loggers keep flat keys (:func:`log_scalars`); :func:`define_wandb_metrics` and
:func:`log_wandb_charts` give W&B its charts (epoch as the x-axis, one ``line_series`` chart
per statistic).
"""

from __future__ import annotations

import math
import re
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import numpy as np

from lightning_srop.report import LayerReport
from lightning_srop.tags import (  # group_separator, layer_tag: re-exported
    CHARTS_GROUP,
    DEFAULT_PREFIX,
    PER_MAP_TAG,
    group_separator,
    join_tag,
    layer_run_dir,
    layer_run_histogram_tag,
    layer_tag,
    logger_tag,
)
from lightning_srop.transforms import (
    HISTOGRAM_BINS,
    _check_max_bins,
    _histogram_sums,
    _layer_histograms,
    _rebin,
    display_bins,
    rebin,
    trim_empty_bins,
)

if TYPE_CHECKING:
    from lightning.fabric.loggers.logger import Logger
    from matplotlib.figure import Figure

__all__ = [
    "HISTOGRAM_BINS",
    "OUTPUTS",
    "WANDB_MAX_BINS",
    "LoggerSplit",
    "close_layer_runs",
    "define_wandb_metrics",
    "display_bins",
    "group_separator",
    "layer_tag",
    "log_figure",
    "log_histograms",
    "log_layer_runs",
    "log_scalars",
    "log_wandb_charts",
    "logger_step",
    "loggers_taking",
    "rebin",
    "trim_empty_bins",
]

#: Most bins W&B keeps in one histogram (``wandb.Histogram.MAX_LENGTH``).
WANDB_MAX_BINS: Final[int] = 512

#: What a logger may take besides scalars, for :func:`loggers_taking`.
OUTPUTS: Final[tuple[str, ...]] = ("histograms", "images")

#: The metric Lightning's ``WandbLogger`` uses as the x-axis of every key.
_WANDB_STEP_KEY: Final[str] = "trainer/global_step"

# What each kind of logger (see ``_kind``) takes besides scalars.
_TAKES: Final[dict[str, frozenset[str]]] = {
    "tensorboard": frozenset(OUTPUTS),
    "wandb_logger": frozenset(OUTPUTS),
    "wandb_run": frozenset(OUTPUTS),
    "mlflow": frozenset({"images"}),
}
_WANDB_KINDS: Final[frozenset[str]] = frozenset({"wandb_logger", "wandb_run"})


# ------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------


def _experiment(logger: Logger) -> Any:
    # ``experiment`` is not part of the fabric base class's interface, only of its subclasses.
    return getattr(logger, "experiment", None)


def _logger_classes() -> dict[str, tuple[type, ...]]:
    """Lightning's logger classes by kind: those of ``lightning`` (Fabric's and the Trainer's),
    and the standalone ``pytorch_lightning`` package's own, different classes when it is in use
    (none of its loggers can exist before it is imported)."""
    from lightning.fabric import loggers as fabric
    from lightning.pytorch import loggers as pytorch

    packages = [fabric, pytorch]
    standalone = sys.modules.get("pytorch_lightning.loggers")
    if standalone is not None:
        packages.append(standalone)

    def classes(name: str) -> tuple[type, ...]:
        return tuple(getattr(p, name) for p in packages if hasattr(p, name))

    return {
        "tensorboard": classes("TensorBoardLogger"),
        "wandb_logger": classes("WandbLogger"),
        "mlflow": classes("MLFlowLogger"),
        "csv": classes("CSVLogger"),
    }


def _has_methods(obj: object, *names: str) -> bool:
    """Whether ``obj``'s class defines every method in ``names`` (the class, so that
    Lightning's no-op ``DummyExperiment`` of non-zero ranks, which answers any attribute, has
    none)."""
    return all(callable(getattr(type(obj), name, None)) for name in names)


def _kind(logger: Logger) -> tuple[str | None, Any]:
    """``("tensorboard" | "wandb_logger" | "wandb_run" | "mlflow" | None, experiment or None)``.

    Lightning's logger classes first (``CSVLogger`` takes neither histograms nor images); a
    logger of another class is judged by what it writes with: a TensorBoard ``SummaryWriter``
    (``add_histogram_raw``), a W&B run (``define_metric``) or an MLflow client (``log_figure``,
    with the logger's ``run_id``).
    """
    classes = _logger_classes()
    if isinstance(logger, classes["tensorboard"]):
        return "tensorboard", _experiment(logger)
    if isinstance(logger, classes["wandb_logger"]):
        return "wandb_logger", None
    if isinstance(logger, classes["mlflow"]):
        return "mlflow", _experiment(logger)
    if isinstance(logger, classes["csv"]):
        return None, None
    experiment = _experiment(logger)
    if _has_methods(experiment, "add_histogram_raw", "add_image"):
        return "tensorboard", experiment
    if _has_methods(experiment, "define_metric", "log"):
        return "wandb_run", experiment
    if _has_methods(experiment, "log_figure", "log_metric") and isinstance(
        getattr(logger, "run_id", None), str
    ):
        return "mlflow", experiment
    return None, None


class LoggerSplit(NamedTuple):
    """Loggers split by whether they take one kind of output (see :func:`loggers_taking`)."""

    #: The loggers that take it, in the given order.
    taking: list[Logger]
    #: Class names (each once, in order) of the loggers that do not.
    skipped: list[str]


def loggers_taking(
    loggers: Sequence[Logger], output: Literal["histograms", "images"]
) -> LoggerSplit:
    """Which of ``loggers`` take SROP histograms or figures (images).

    Nothing is drawn: a logger is judged by its class (Lightning's logger classes) or, for
    another class, by the methods of its ``experiment``. Ask before drawing a figure: when no
    logger takes images, no figure is needed (and matplotlib may not even be installed).

    - ``TensorBoardLogger`` (or any logger writing with a ``SummaryWriter``): both;
    - ``WandbLogger`` (or any logger writing to a W&B run): both;
    - ``MLFlowLogger`` (or a logger with an ``MlflowClient`` and a ``run_id``): images only;
    - ``CSVLogger``, Comet, Neptune and other loggers: neither.

    Args:
        loggers: Lightning loggers (``trainer.loggers``), as for :func:`log_histograms`.
        output: ``"histograms"`` or ``"images"``.

    Returns:
        ``LoggerSplit(taking, skipped)``: the loggers that take ``output`` and the class names
        (each once, in order) of those that do not.

    Raises:
        ValueError: unknown ``output``.

    Examples:
        >>> class MyLogger: ...
        >>> loggers_taking([MyLogger(), MyLogger()], "images")
        LoggerSplit(taking=[], skipped=['MyLogger'])
    """
    if output not in OUTPUTS:
        raise ValueError(
            f"loggers_taking: expected `output` to be one of {', '.join(map(repr, OUTPUTS))}, "
            f"got {output!r}."
        )
    taking: list[Logger] = []
    skipped: list[str] = []
    for logger in loggers:
        kind = _kind(logger)[0]
        if kind is not None and output in _TAKES.get(kind, frozenset()):
            taking.append(logger)
        elif type(logger).__name__ not in skipped:
            skipped.append(type(logger).__name__)
    return LoggerSplit(taking, skipped)


def _wandb_log(logger: Logger, kind: str | None, record: dict[str, Any], step: int) -> None:
    if kind == "wandb_logger":
        # Lightning's route for scalars: adds ``trainer/global_step``, the logger's prefix,
        # and is a no-op on non-zero ranks.
        logger.log_metrics(record, step=step)
    else:
        _experiment(logger).log({**record, _WANDB_STEP_KEY: step})


def logger_step(trainer: Any) -> int:
    """The step at which Lightning logs epoch-level metrics right now: pass it as ``step``.

    Lightning's logger connector (``self.log(..., on_epoch=True)``) and its own monitors
    (``LearningRateMonitor``, ``DeviceStatsMonitor``) log against
    ``trainer.fit_loop.epoch_loop._batches_that_stepped``, not ``trainer.global_step``. During a
    validation run inside ``fit`` the two differ by one (the last training batch is not counted
    yet), and with several optimizers ``global_step`` counts every optimizer's step. Logging
    histograms and figures at this step puts them at the same x as the SROP scalars, in
    TensorBoard and as ``trainer/global_step`` in W&B.

    Args:
        trainer: a ``lightning.pytorch`` or ``pytorch_lightning`` ``Trainer``.

    Returns:
        ``_batches_that_stepped`` when the trainer has it, else ``trainer.global_step``.
    """
    epoch_loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(epoch_loop, "_batches_that_stepped", None)
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    return int(trainer.global_step)


def _check_step(step: object, where: str) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"{where}: expected `step` to be an int >= 0, got {step!r}.")
    return int(step)


Histogram = tuple[str, tuple[str, ...], str, np.ndarray, np.ndarray, Mapping[str, float]]


def _tensorboard_histograms(
    logger: Logger,
    experiment: Any,
    histograms: Sequence[Histogram],
    prefix: str,
    runs: Mapping[str, str] | None,
    step: int,
) -> None:
    """Write ``(layer, rest, tag, counts, edges, stats)`` histograms with
    ``add_histogram_raw``: under their flat tags, or into each layer's own run (``runs``)."""
    for name, rest, tag, counts, edges, stats in histograms:
        writer = experiment
        if runs is not None:
            writer = _layer_writer(experiment, prefix, runs[name])
            tag = layer_run_histogram_tag(
                prefix, rest[0] if rest else PER_MAP_TAG, group_separator(logger)
            )
        total, total_sq = _histogram_sums(counts, edges, stats)
        writer.add_histogram_raw(
            logger_tag(logger, tag),
            min=float(edges[0]),
            max=float(edges[-1]),
            num=int(counts.sum()),
            sum=total,
            sum_squares=total_sq,
            bucket_limits=edges[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )
    if runs is not None:
        _flush_layer_runs(experiment)


def log_histograms(
    loggers: Sequence[Logger],
    reports: Sequence[LayerReport],
    *,
    step: int,
    prefix: str = DEFAULT_PREFIX,
    labels: Mapping[str, str] | None = None,
    max_bins: int | None = None,
    runs: Mapping[str, str] | None = None,
) -> list[str]:
    """Write one SROP histogram per layer to every logger that supports histograms.

    For each report, the SROP histogram goes to tag ``f"{prefix}/{label}"`` and the histogram
    of per-sample mean SROPs to ``f"{prefix}/{label}/per_sample_mean"`` (``label`` is the
    layer's name unless ``labels`` maps it to another; ``/`` is the logger's
    ``group_separator``); a histogram with no counts (a layer whose maps were all flat or
    invalid) is skipped. See the module docstring for the TensorBoard and W&B encodings and
    the step semantics.

    Args:
        loggers: Lightning loggers (``trainer.loggers``), from ``lightning.pytorch`` or
            ``pytorch_lightning``; also any logger whose ``experiment`` is a TensorBoard
            ``SummaryWriter`` or a W&B run.
        reports: per-layer reports.
        step: the logging step, normally :func:`logger_step` ``(trainer)``.
        prefix: first component of every tag.
        labels: layer name -> the tag component used for it (e.g. ``"00-features.0"``).
        max_bins: ``None`` writes the measured bins (empty outer bins trimmed); an int
            re-bins each histogram for display with :func:`~lightning_srop.transforms.display_bins` (what the callback
            does, with ``histogram_bins``).
        runs: layer name -> its TensorBoard run label (``{NN}-{layer}``, see
            :func:`log_layer_runs`): TensorBoard histograms go into the layer's own run as
            ``{prefix}_histograms/per_map`` and ``{prefix}_histograms/per_sample_mean``. W&B
            keeps the tags above.

    Returns:
        The class names (each once, in order) of the loggers that have no histogram support,
        for a one-time notice by the caller.

    Raises:
        ValueError: bad ``step``, ``prefix`` or ``max_bins``, or a report with malformed
            counts or edges.
    """
    step = _check_step(step, "log_histograms")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(
            f"log_histograms: expected `prefix` to be a non-empty str, got {prefix!r}."
        )
    limit = None if max_bins is None else _check_max_bins(max_bins, "log_histograms")
    # Validated and binned once, whichever loggers are attached (malformed reports fail here).
    binned = [(report, _layer_histograms(report, limit)) for report in reports]
    names = dict(labels or {})
    split = loggers_taking(loggers, "histograms")
    for logger in split.taking:
        kind, experiment = _kind(logger)
        label = {report.name: names.get(report.name, report.name) for report, _ in binned}
        histograms: list[Histogram] = [
            (report.name, rest, layer_tag(logger, prefix, label[report.name], *rest), c, e, st)
            for report, layer_parts in binned
            for rest, c, e, st in layer_parts
        ]
        if kind == "tensorboard":
            _tensorboard_histograms(logger, experiment, histograms, prefix, runs, step)
        elif histograms:
            import wandb

            record: dict[str, Any] = {}
            for _, _, tag, counts, edges, _ in histograms:
                merged_counts, merged_edges = _rebin(counts, edges, WANDB_MAX_BINS)
                record[tag] = wandb.Histogram(np_histogram=(merged_counts, merged_edges))
            _wandb_log(logger, kind, record, step)
    return split.skipped


def log_scalars(
    loggers: Sequence[Logger],
    values: Mapping[str, Mapping[str, float]],
    *,
    step: int,
    epoch: int,
    prefix: str = DEFAULT_PREFIX,
) -> None:
    """Write ``{prefix}/{label}/{statistic}`` scalars to every logger, with ``epoch``.

    What Lightning's logger connector does for ``self.log`` values, with tags chosen here:
    each logger gets one ``log_metrics`` call (the tags joined with its ``group_separator``,
    its own ``prefix`` added by the logger) holding ``epoch`` too, then ``save()``.

    Args:
        loggers: Lightning loggers (``trainer.loggers``); call on rank zero.
        values: label -> statistic -> value.
        step: the logging step, normally :func:`logger_step` ``(trainer)``.
        epoch: the training epoch, logged as ``epoch`` (an x-axis for W&B charts, a column
            of the CSV row), except to MLflow: Lightning logs ``epoch`` at the same step,
            and MLflow keeps every entry of a metric, so a second one would double it.
        prefix: first component of every tag.
    """
    step = _check_step(step, "log_scalars")
    for logger in loggers:
        record: dict[str, float] = {
            layer_tag(logger, prefix, label, stat): float(value)
            for label, stats in values.items()
            for stat, value in stats.items()
        }
        if not record:
            continue
        if _kind(logger)[0] != "mlflow":
            # MLflow keeps every entry: Lightning logs `epoch` at this step itself.
            record["epoch"] = int(epoch)
        logger.log_metrics(record, step=step)
        logger.save()


_LAYER_WRITERS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _layer_writer(experiment: Any, prefix: str, label: str) -> Any:
    """The writer of a layer's own run ``{log_dir}/{prefix}/{label}``: one per folder, of the
    logger's own writer class (``torch.utils.tensorboard`` or ``tensorboardX``), kept open."""
    writers = _LAYER_WRITERS.setdefault(experiment, {})
    path = str(layer_run_dir(experiment.get_logdir(), prefix, label))
    if path not in writers:
        writers[path] = type(experiment)(path)
    return writers[path]


def _flush_layer_runs(experiment: Any) -> None:
    for writer in _LAYER_WRITERS.get(experiment, {}).values():
        writer.flush()


def close_layer_runs(loggers: Sequence[Logger]) -> None:
    """Close the layer runs' writers (:func:`log_layer_runs`) of ``loggers``; the next write
    opens new ones. A logger whose runs were never written is not touched."""
    if not _LAYER_WRITERS:
        return
    for logger in loggers:
        kind, experiment = _kind(logger)
        if kind == "tensorboard" and experiment in _LAYER_WRITERS:
            for writer in _LAYER_WRITERS.pop(experiment).values():
                writer.close()


def log_layer_runs(
    loggers: Sequence[Logger],
    values: Mapping[str, Mapping[str, float]],
    *,
    step: int,
    epoch: int,
    prefix: str = DEFAULT_PREFIX,
) -> list[Logger]:
    """TensorBoard: every layer a run of its own, so that each statistic is one chart with one
    coloured, named line per layer.

    Each label's statistics go to ``{log_dir}/{prefix}/{label}`` (``log_dir`` the logger's
    version folder) as ``{prefix}/{statistic}`` (the logger's ``group_separator`` and
    ``prefix`` applied); ``epoch`` goes to the logger's own run at the same step. TensorBoard
    lists runs by name, so labels that start with a depth index (``00-features.0``) put the
    legend and the colours in forward order. Writers stay open (flushed after each call) until
    :func:`close_layer_runs`.

    Args:
        loggers: Lightning loggers; call on rank zero.
        values: label -> statistic -> value.
        step: the logging step, normally :func:`logger_step` ``(trainer)``.
        epoch: the training epoch, logged as ``epoch`` in the logger's own run.
        prefix: the runs' folder under ``log_dir`` and the first component of every tag.

    Returns:
        The loggers that are not TensorBoard's, in order (for :func:`log_scalars`).
    """
    step = _check_step(step, "log_layer_runs")
    others: list[Logger] = []
    for logger in loggers:
        kind, experiment = _kind(logger)
        if kind != "tensorboard":
            others.append(logger)
            continue
        separator = group_separator(logger)
        for label, stats in values.items():
            writer = _layer_writer(experiment, prefix, label)
            for stat, value in stats.items():
                tag = logger_tag(logger, join_tag(prefix, stat, separator=separator))
                writer.add_scalar(tag, float(value), global_step=step)
        _flush_layer_runs(experiment)
        if values:
            logger.log_metrics({"epoch": int(epoch)}, step=step)
    return others


def define_wandb_metrics(loggers: Sequence[Logger], keys: Sequence[str]) -> None:
    """Declare ``epoch`` the x-axis of ``keys`` in W&B (``define_metric(step_metric="epoch")``).

    Lightning's ``WandbLogger`` declares ``trainer/global_step`` the x-axis of every key
    (``"*"``); these keys are named explicitly, which takes precedence. The other axis stays
    available in the W&B UI.
    """
    for logger in loggers:
        kind, experiment = _kind(logger)
        experiment = _experiment(logger) if kind == "wandb_logger" else experiment
        if kind not in _WANDB_KINDS or experiment is None:
            continue
        experiment.define_metric("epoch")
        for key in keys:
            experiment.define_metric(logger_tag(logger, key), step_metric="epoch", step_sync=True)


def log_wandb_charts(
    loggers: Sequence[Logger],
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    *,
    step: int,
    prefix: str = DEFAULT_PREFIX,
) -> None:
    """One W&B line chart per statistic, every layer a line, against epoch.

    Written as ``wandb.plot.line_series`` custom charts under ``{prefix}_charts/{statistic}``
    (the newest chart replaces the previous one in the W&B UI, so each call sends the whole
    history so far). Other loggers are ignored.

    Args:
        loggers: Lightning loggers.
        curves: statistic -> layer label (forward order) -> ``(epoch, value)`` points.
        step: the logging step.
        prefix: first component of the chart keys.
    """
    step = _check_step(step, "log_wandb_charts")
    targets = [(logger, kind) for logger in loggers if (kind := _kind(logger)[0]) in _WANDB_KINDS]
    if not targets or not curves:
        return
    import wandb

    for logger, kind in targets:
        separator = group_separator(logger)
        record: dict[str, Any] = {}
        for stat, layers in curves.items():
            if not layers:
                continue
            epochs = sorted({int(e) for points in layers.values() for e, _ in points})
            ys = []
            for points in layers.values():
                by_epoch = {int(e): float(v) for e, v in points}
                ys.append([by_epoch.get(e, math.nan) for e in epochs])
            key = join_tag(prefix + CHARTS_GROUP, stat, separator=separator)
            record[key] = wandb.plot.line_series(
                xs=epochs,
                ys=ys,
                keys=list(layers),
                title=f"SROP {stat} per layer",
                xname="epoch",
            )
        if record:
            _wandb_log(logger, kind, record, step)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _figure_to_rgb(figure: Figure) -> np.ndarray:
    """Render ``figure`` (at its own dpi) to an ``(H, W, 3)`` uint8 array.

    Agg draws into an RGBA buffer that is read directly: no pyplot, no PNG round trip, no
    Pillow. The figure's own canvas is put back afterwards.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    previous = figure.canvas
    try:
        canvas = FigureCanvasAgg(figure)
        canvas.draw()  # type: ignore[no-untyped-call]
        rgba = np.asarray(canvas.buffer_rgba(), dtype=np.uint8)  # type: ignore[no-untyped-call]
        return np.ascontiguousarray(rgba[..., :3])
    finally:
        figure.set_canvas(previous)


def _mlflow_steps_images(client: Any, key: str) -> bool:
    """Whether an MLflow client logs ``key`` as time-stepped images: ``log_image(run_id,
    image, key=, step=)`` (MLflow >= 2.16), which encodes the image with Pillow and takes
    keys of alphanumerics, ``_``, ``-``, ``.``, spaces and ``/``."""
    import importlib.util
    import inspect

    log_image = getattr(client, "log_image", None)
    if (
        not callable(log_image)
        or importlib.util.find_spec("PIL") is None
        or not re.fullmatch(r"[a-zA-Z0-9_\-./ ]+", key)
    ):
        return False
    try:
        parameters = inspect.signature(log_image).parameters
    except (TypeError, ValueError):
        return False
    return "key" in parameters and "step" in parameters


def log_figure(loggers: Sequence[Logger], figure: Figure, *, tag: str, step: int) -> list[str]:
    """Log a figure as an image to every logger that supports images.

    The figure is rendered once (Agg, no pyplot, no Pillow; the figure is left open and
    unchanged) and written with TensorBoard's ``add_image``, as a ``wandb.Image``
    (through ``WandbLogger.log_metrics``, as ``WandbLogger.log_image`` does, so at
    ``trainer/global_step = step``), or with MLflow's ``log_image(run_id, image, key=tag,
    step=step)`` (time-stepped images; an older MLflow, or one without Pillow, gets the
    artifact ``{tag}/step_{step:08d}.png`` from ``log_figure`` instead).

    Args:
        loggers: Lightning loggers, as for :func:`log_histograms`.
        figure: a matplotlib figure, e.g. from :func:`lightning_srop.plots.plot_layer_profile`.
        tag: image tag / W&B key, e.g. ``"srop/layer_profile"``.
        step: the logging step, normally :func:`logger_step` ``(trainer)``.

    Returns:
        The class names (each once, in order) of the loggers skipped for lack of image support.

    Raises:
        ValueError: bad ``tag``, ``step`` or ``figure``.
    """
    step = _check_step(step, "log_figure")
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"log_figure: expected `tag` to be a non-empty str, got {tag!r}.")
    if not callable(getattr(figure, "savefig", None)):
        raise ValueError(
            f"log_figure: expected `figure` to be a matplotlib Figure, got {type(figure).__name__}."
        )
    split = loggers_taking(loggers, "images")
    image: np.ndarray | None = None
    for logger in split.taking:
        kind, experiment = _kind(logger)
        if kind == "mlflow" and not _mlflow_steps_images(experiment, logger_tag(logger, tag)):
            # Older MLflow (or no Pillow): the client saves the figure, an artifact per step.
            experiment.log_figure(
                logger.run_id,  # type: ignore[attr-defined]
                figure,
                artifact_file=f"{logger_tag(logger, tag)}/step_{step:08d}.png",
            )
            continue
        if image is None:
            image = _figure_to_rgb(figure)
        if kind == "tensorboard":
            experiment.add_image(
                logger_tag(logger, tag), image, global_step=step, dataformats="HWC"
            )
        elif kind == "mlflow":
            # Time-stepped images: the run page's Images view, one slider per key.
            experiment.log_image(
                logger.run_id,  # type: ignore[attr-defined]
                image,
                key=logger_tag(logger, tag),
                step=step,
            )
        else:
            import wandb

            _wandb_log(logger, kind, {tag: wandb.Image(image)}, step)
    return split.skipped
