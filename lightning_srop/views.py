"""What the callback writes to its loggers each measured epoch (rank zero only).

- :func:`write_scalars`: in TensorBoard every layer is a run of its own (one chart per
  statistic, a line per layer); other loggers get flat keys; W&B gets one chart per statistic
  with every layer (forward order) a line.
- :func:`write_extras`: one histogram per layer, a figure of SROP against depth, one of each
  layer's mean SROP over the epochs so far and a layer x epoch heatmap of ``change``, for the
  attached loggers that take them. Nothing is computed or drawn for output that no attached
  logger takes, and a missing optional dependency (matplotlib, Pillow) is one notice.

The callback decides when; these functions know which logger takes what
(:mod:`lightning_srop.loggers`) and how the figures look (:mod:`lightning_srop.plots`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_srop.loggers import (
    define_wandb_metrics,
    log_figure,
    log_histograms,
    log_layer_runs,
    log_scalars,
    log_wandb_charts,
    loggers_taking,
)
from lightning_srop.report import LayerReport, SROPReport
from lightning_srop.tags import join_tag, layer_tag
from lightning_srop.transforms import history

__all__ = ["write_extras", "write_scalars"]

#: Layer names -> their component in logger tags (``indexed=True``: TensorBoard's run names).
Labels = Callable[..., dict[str, str]]
#: Layers and statistics already declared to W&B (``None`` before the first epoch).
Declared = tuple[tuple[str, ...], tuple[str, ...]] | None


def write_scalars(
    loggers: Sequence[Any],
    scalars: Mapping[str, Mapping[str, float]],
    reports_so_far: Sequence[SROPReport],
    *,
    step: int,
    epoch: int,
    prefix: str,
    labels: Labels,
    order: Mapping[str, int],
    declared: Declared,
) -> Declared:
    """Write this epoch's ``scalars`` (layer -> statistic -> value) and the W&B charts.

    Args:
        loggers: the Trainer's loggers.
        scalars: the logged values of each layer, in forward order.
        reports_so_far: every measured epoch's report so far (the W&B curves).
        step: the logger step; ``epoch``: the training epoch.
        prefix: the first component of every tag.
        labels: layer names -> tag components (``labels(names, indexed=True)``: run names).
        order: layer -> depth index (the order of W&B's lines).
        declared: what earlier epochs declared to W&B.

    Returns:
        What is declared to W&B after this epoch.
    """
    names = list(scalars)
    runs, flat = labels(names, indexed=True), labels(names)
    others = log_layer_runs(
        loggers,
        {runs[name]: dict(values) for name, values in scalars.items()},
        step=step,
        epoch=epoch,
        prefix=prefix,
    )
    log_scalars(
        others,
        {flat[name]: dict(values) for name, values in scalars.items()},
        step=step,
        epoch=epoch,
        prefix=prefix,
    )
    stats = tuple(dict.fromkeys(stat for values in scalars.values() for stat in values))
    if declared is None or not set(names) <= set(declared[0]) or stats != declared[1]:
        # The first measured epoch, or layers/statistics that are not declared yet.
        every = sorted({*(declared[0] if declared else ()), *names}, key=lambda n: order[n])
        labelled = labels(every)
        define_wandb_metrics(
            others,
            [layer_tag(None, prefix, labelled[name], stat) for stat in stats for name in every],
        )
        declared = (tuple(every), stats)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for stat in stats:
        by_layer = history(reports_so_far, stat, skip_missing=True)
        if by_layer:
            labelled = labels(list(by_layer))
            curves[stat] = {labelled[name]: points for name, points in by_layer.items()}
    log_wandb_charts(others, curves, step=step, prefix=prefix)
    return declared


def write_extras(
    loggers: Sequence[Any],
    reports: Sequence[LayerReport],
    *,
    step: int,
    epoch: int,
    prefix: str,
    unit: str,
    histograms: bool,
    figures: bool,
    max_bins: int | None,
    labels: Mapping[str, str],
    runs: Mapping[str, str],
    history: Mapping[str, list[tuple[int, float]]],
    changes: Mapping[str, list[tuple[int, float]]],
    say: Callable[[str, str], None],
) -> None:
    """Histograms and figures, for the attached loggers that take them.

    Args:
        loggers: the Trainer's loggers.
        reports: this epoch's layer reports.
        step: the step Lightning logs the epoch's scalars at; ``epoch``: the training epoch.
        prefix: the first component of every tag.
        unit: the ``unit=`` option (the figures' axis label).
        histograms: write histograms; ``figures``: draw and write the figures.
        max_bins: the most bins of a logged histogram (``None``: the measured bins).
        labels: layer -> its flat tag component; ``runs``: layer -> its TensorBoard run.
        history: layer -> ``(epoch, mean SROP)`` so far; ``changes``: the same of ``change``.
        say: ``say(key, message)`` gives a notice once per key.
    """
    if histograms:
        takers, skipped = loggers_taking(loggers, "histograms")
        for name in skipped:
            say(
                f"hist:{name}",
                f"logger {name} has no histogram support; SROP histograms are not written "
                "to it (scalars are).",
            )
        if takers:
            log_histograms(
                takers,
                list(reports),
                step=step,
                prefix=prefix,
                labels=dict(labels),
                max_bins=max_bins,
                runs=dict(runs),
            )
    if not figures:
        return
    takers, skipped = loggers_taking(loggers, "images")
    for name in skipped:
        say(
            f"figure:{name}",
            f"logger {name} has no image support; the SROP figures are not written to it.",
        )
    if not takers:
        return  # no logger could show the figures: do not draw them
    try:
        _write_figures(takers, reports, step, epoch, prefix, unit, history, changes)
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing not in ("matplotlib", "PIL"):  # optional dependencies of figures only
            raise
        say(
            "figure-import",
            f"the SROP figure needs {'Pillow' if missing == 'PIL' else 'matplotlib'}, which "
            "is not installed; it is not drawn (scalars and histograms are still logged). "
            "Install it with: pip install 'lightning-srop[plots]'.",
        )


def _write_figures(
    takers: Sequence[Any],
    reports: Sequence[LayerReport],
    step: int,
    epoch: int,
    prefix: str,
    unit: str,
    history: Mapping[str, list[tuple[int, float]]],
    changes: Mapping[str, list[tuple[int, float]]],
) -> None:
    """The per-layer figure, the curves over epochs and the change heatmap (matplotlib)."""
    from lightning_srop.plots import (  # imports without matplotlib
        plot_heatmap,
        plot_layer_profile,
        plot_srop_over_epochs,
        short_names,
        unit_label,
    )

    label = unit_label(unit)
    figure = plot_layer_profile(
        list(reports), unit=label, title=f"SROP per layer, epoch {epoch}", compact=True
    )
    log_figure(takers, figure, tag=join_tag(prefix, "layer_profile"), step=step)
    shown = dict(zip(short_names(list(history)), history.values(), strict=True))
    figure = plot_srop_over_epochs(
        shown, unit=label, title=f"mean SROP per layer, up to epoch {epoch}", compact=True
    )
    log_figure(takers, figure, tag=join_tag(prefix, "over_epochs"), step=step)
    if changes:
        figure = plot_heatmap(
            dict(zip(short_names(list(changes)), changes.values(), strict=True)),
            title=f"SROP change since init, epoch {epoch}",
            compact=True,
        )
        log_figure(takers, figure, tag=join_tag(prefix, "change_heatmap"), step=step)
