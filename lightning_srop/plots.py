"""Matplotlib figures of SROP statistics: per-layer profiles and curves over training.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global
state, no GUI backend), so plotting is safe in headless runs, in callbacks and in threads. The
caller owns the figure; nothing has to be closed.

matplotlib is an optional dependency (``pip install 'lightning-srop[plots]'``): this module
imports without it, and every plotting function raises :class:`ModuleNotFoundError` (``name``
``"matplotlib"``) with that hint when it is missing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from lightning_srop.report import LayerReport, SROPReport, aligned_names
from lightning_srop.transforms import epoch_arrays, epoch_grid, history, short_names, unit_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "SAVE_DPI",
    "compare",
    "layer_colors",
    "plot_change_heatmap",
    "plot_heatmap",
    "plot_layer_profile",
    "plot_over_epochs",
    "plot_reports",
    "plot_srop_over_epochs",
    "save_figure",
    "short_names",  # from transforms: labels of the figures
    "unit_label",
]

#: Resolution of :func:`save_figure` (sharp on screens and slides, files of ~100 kB).
SAVE_DPI: Final[int] = 150

_MEAN_COLOR: Final[str] = "tab:blue"
_MEDIAN_COLOR: Final[str] = "tab:orange"
_NO_DATA_COLOR: Final[str] = "tab:red"

#: How to get matplotlib, for the error raised without it.
_INSTALL_HINT: Final[str] = "pip install 'lightning-srop[plots]' (or matplotlib)"


def _new_figure(width: float, height: float, *, compact: bool = False) -> Figure:
    """A constrained-layout figure; ``compact`` ones at 100 dpi (thumbnails)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # matplotlib is an optional dependency
        raise ModuleNotFoundError(
            f"lightning_srop.plots needs matplotlib to draw figures ({err}); {_INSTALL_HINT}.",
            name="matplotlib",
        ) from err

    figure = Figure(figsize=(width, height), layout="constrained")
    if compact:
        figure.set_dpi(100)
    return figure


def _stat(report: LayerReport, key: str) -> float:
    value = report.stats.get(key, math.nan)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _srop_label(unit: str) -> str:
    return f"SROP ({unit})" if unit else "SROP"


def plot_layer_profile(
    reports: Sequence[LayerReport],
    *,
    unit: str = "cycles / pixel",
    title: str | None = None,
    compact: bool = False,
) -> Figure:
    """Mean SROP per layer against depth, with the interquartile band and the median.

    Layers are placed in depth order (``LayerReport.depth``, ties in the given order), one
    categorical x position each, labelled by name. The mean is a solid line with markers, the
    median a dashed line, the 25–75 % quantiles a shaded band. A layer without valid maps (NaN
    statistics) leaves a gap in every line and is marked by a red ``x`` on the x-axis. The
    y-axis starts at 0.

    Args:
        reports: per-layer reports, in any order.
        unit: frequency unit for the y label (``"cycles / input pixel"`` for input-grid SROPs).
        title: figure title; default ``"SROP per layer"``.
        compact: a figure to read as a thumbnail (TensorBoard's image cards, W&B panels):
            a fixed 8 x 4.5 in size, large fonts, layer names shortened by
            :func:`short_names` and at most 12 of them shown.

    Returns:
        A new figure with one axes.

    Raises:
        ValueError: ``reports`` is empty.

    Examples:
        >>> import numpy as np
        >>> from lightning_srop.report import LayerReport
        >>> edges, zeros = np.linspace(0.0, 0.5, 3), np.zeros(2, dtype=np.int64)
        >>> stats = {"mean": 0.2, "q25": 0.1, "median": 0.2, "q75": 0.3}
        >>> reports = [LayerReport(n, stats, edges, zeros, zeros, depth=d)
        ...            for d, n in enumerate(["conv1", "pool", "conv2"])]
        >>> fig = plot_layer_profile(reports)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['conv1', 'pool', 'conv2']
    """
    if len(reports) == 0:
        raise ValueError("plot_layer_profile: expected at least one report in `reports`, got none.")
    ordered = [r for _, r in sorted(enumerate(reports), key=lambda ir: (ir[1].depth, ir[0]))]
    n = len(ordered)
    x = np.arange(n, dtype=np.float64)
    mean, q25, median, q75 = (
        np.array([_stat(r, key) for r in ordered]) for key in ("mean", "q25", "median", "q75")
    )
    names = short_names([r.name for r in ordered]) if compact else [r.name for r in ordered]
    figure, rotate = _profile_figure(n, max(len(name) for name in names), compact)
    ax = figure.add_subplot()
    _draw_band(ax, x, q25, q75)
    ax.plot(x, median, linestyle="--", color=_MEDIAN_COLOR, linewidth=1.5, label="median")
    ax.plot(x, mean, marker="o", markersize=5, color=_MEAN_COLOR, linewidth=2, label="mean")
    missing = ~np.isfinite(mean)
    if missing.any():
        ax.plot(
            x[missing],
            np.zeros(int(missing.sum())),
            linestyle="none",
            marker="x",
            markersize=8,
            color=_NO_DATA_COLOR,
            clip_on=False,
            label="no valid maps",
        )
    _profile_ticks(ax, names, compact=compact, rotate=rotate)
    finite = np.concatenate([a[np.isfinite(a)] for a in (mean, q25, median, q75)])
    top = float(finite.max()) if finite.size else 0.0
    ax.set_ylim(0.0, top * 1.1 if top > 0 else 1.0)
    title = "SROP per layer" if title is None else title
    _label_layer_axes(ax, _srop_label(unit), title, compact=compact)
    ax.legend(loc="best", fontsize=12 if compact else "small")
    return figure


def _fits_side_by_side(n: int, longest: int, width: float) -> bool:
    """Whether ``n`` horizontal tick labels of up to ``longest`` characters fit in a figure
    ``width`` inches wide (about 0.085 in per character at 10 pt)."""
    return n * (0.085 * longest + 0.25) <= width - 1.2


def _profile_figure(n: int, longest: int, compact: bool) -> tuple[Figure, bool]:
    """The layer profile's figure for ``n`` labels of up to ``longest`` characters, and whether
    the labels must be rotated to fit."""
    if compact:
        return _new_figure(8.0, 4.5, compact=True), n * (0.11 * longest + 0.3) > 7.0
    width = float(np.clip(2.0 + 0.38 * n, 6.0, 24.0))
    rotate = not _fits_side_by_side(n, longest, width)
    return _new_figure(width, 4.2 + (min(0.06 * longest, 2.5) if rotate else 0.0)), rotate


def _draw_band(ax: Axes, x: np.ndarray, q25: np.ndarray, q75: np.ndarray) -> None:
    """The 25–75 % band; a layer whose neighbours both lack a band (it would get a zero-width
    band) gets a vertical bar instead."""
    has_band = np.isfinite(q25) & np.isfinite(q75)
    ax.fill_between(
        x, q25, q75, where=has_band, color=_MEAN_COLOR, alpha=0.2, linewidth=0, label="25–75 %"
    )
    for i in np.flatnonzero(has_band):
        left = i > 0 and has_band[i - 1]
        right = i < len(x) - 1 and has_band[i + 1]
        if not (left or right):
            ax.vlines(x[i], q25[i], q75[i], color=_MEAN_COLOR, alpha=0.35, linewidth=8)


def _rotate_ticks(ax: Axes, rotation: float) -> None:
    """Rotate the x tick labels, each anchored by its right end under its tick."""
    ax.tick_params(axis="x", labelrotation=rotation)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")


def _profile_ticks(ax: Axes, names: Sequence[str], *, compact: bool, rotate: bool) -> None:
    """One x tick per layer (at most 12 labels shown when ``compact``), rotated if asked."""
    n = len(names)
    ax.set_xticks(np.arange(n, dtype=np.float64), names)
    if compact:
        every = math.ceil(n / 12)
        for position, tick in enumerate(ax.get_xticklabels()):
            tick.set_visible(position % every == 0 or position == n - 1)
        ax.tick_params(labelsize=13)
    if rotate:
        _rotate_ticks(ax, 35 if compact else 60 if n <= 30 else 90)
    if n > 40 and not compact:
        ax.tick_params(axis="x", labelsize=7)
    ax.set_xlim(-0.5, n - 0.5)


def _label_layer_axes(ax: Axes, ylabel: str, title: str, *, compact: bool = False) -> None:
    """Axis labels, title and grid of a per-layer axes (layers in forward order along x)."""
    ax.set_xlabel("layer (forward order)", fontsize=14 if compact else None)
    ax.set_ylabel(ylabel, fontsize=14 if compact else None)
    ax.set_title(title, fontsize=16 if compact else None)
    ax.grid(axis="y", alpha=0.3)


def layer_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` RGBA colours, shallow to deep: tab10 for up to 10 layers, else viridis.

    The colours of :func:`plot_srop_over_epochs` and :func:`plot_reports`, for figures drawn
    beside them.

    Examples:
        >>> len(layer_colors(3)), len(layer_colors(12)[0])
        (3, 4)
    """
    from matplotlib import colormaps

    if n <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.9, n)]


def plot_srop_over_epochs(
    history: Mapping[str, Sequence[tuple[int, float]]],
    accuracy: Sequence[tuple[int, float]] | None = None,
    *,
    unit: str = "cycles / pixel",
    title: str | None = None,
    compact: bool = False,
) -> Figure:
    """Mean SROP of each layer against epoch, next to accuracy against epoch.

    Args:
        history: layer name -> ``(epoch, mean SROP)`` points, in depth order (the mapping's
            order is the legend's order and the colour order, shallow to deep). Points may come
            in any epoch order; NaN values leave gaps.
        accuracy: ``(epoch, accuracy)`` points; when given, a second panel on the right.
        unit: frequency unit for the y label.
        title: figure title; default ``"SROP over training"``.
        compact: a figure to read as a thumbnail (TensorBoard's image cards): larger fonts,
            a legend inside the axes.

    Returns:
        A new figure with one axes (SROP) or two (SROP, accuracy).

    Raises:
        ValueError: ``history`` is empty or holds something other than ``(epoch, value)`` pairs.

    Examples:
        >>> fig = plot_srop_over_epochs({"conv1": [(0, 0.3), (1, 0.25)]}, [(0, 0.5), (1, 0.8)])
        >>> [ax.get_ylabel() for ax in fig.axes]
        ['SROP (cycles / pixel)', 'accuracy']
    """
    if len(history) == 0:
        raise ValueError(
            "plot_srop_over_epochs: expected at least one layer in `history`, got none."
        )
    curves = _curves(history, "plot_srop_over_epochs")
    n = len(curves)
    legend_cols = 1 if n <= 12 else 2 if n <= 30 else 3
    figure, srop_ax, acc_ax = _epochs_figure(
        0.0 if compact else 1.9 * legend_cols, accuracy is not None, compact
    )
    many_points = max((e.size for e, _ in curves.values()), default=0) > 30
    for (name, (epochs, values)), color in zip(curves.items(), layer_colors(n), strict=True):
        srop_ax.plot(
            epochs,
            values,
            marker=None if many_points else "o",
            markersize=4,
            color=color,
            linewidth=1.6,
            label=name,
        )
    _decorate_epochs(srop_ax)
    srop_ax.set_ylim(bottom=0.0)
    srop_ax.set_ylabel(_srop_label(unit))
    own_title = "SROP over training" if title is None else title
    srop_ax.set_title("mean SROP per layer" if acc_ax is not None else own_title)
    _epochs_legend(figure, srop_ax, n, legend_cols, compact)
    if acc_ax is not None and accuracy is not None:
        epochs, values = epoch_arrays(accuracy, "plot_srop_over_epochs: accuracy")
        acc_ax.plot(epochs, values, marker="o", markersize=4, color="black", linewidth=1.6)
        _decorate_epochs(acc_ax)
        acc_ax.set_ylabel("accuracy")
        acc_ax.set_title("accuracy")
        figure.suptitle(own_title)
    return figure


def _curves(
    history: Mapping[str, Sequence[tuple[int, float]]], where: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's points as sorted ``(epochs, values)`` arrays, in the mapping's order."""
    return {
        str(name): epoch_arrays(points, f"{where}: history[{name!r}]")
        for name, points in history.items()
    }


def _epochs_figure(
    legend_width: float, with_accuracy: bool, compact: bool
) -> tuple[Figure, Axes, Axes | None]:
    """The figure of :func:`plot_srop_over_epochs`: the SROP axes, room for a legend on its
    right, and the accuracy axes when asked for."""
    srop_width, acc_width = (8.0 if compact else 6.0), 4.5
    width = srop_width + legend_width + (acc_width if with_accuracy else 0.0)
    figure = _new_figure(width, 4.5, compact=compact)
    if with_accuracy:
        srop_ax, acc_ax = figure.subplots(1, 2, width_ratios=[srop_width, acc_width])
        return figure, srop_ax, acc_ax
    return figure, figure.add_subplot(), None


def _epochs_legend(figure: Figure, ax: Axes, n: int, legend_cols: int, compact: bool) -> None:
    """The layers' legend: inside the axes with large fonts when ``compact``, else outside on
    the right of the figure (constrained layout makes room for it)."""
    if compact:
        ax.title.set_fontsize(16)
        for axis_label in (ax.xaxis.label, ax.yaxis.label):
            axis_label.set_fontsize(14)
        ax.tick_params(labelsize=13)
        ax.legend(
            title="shallow → deep",
            loc="lower left",
            fontsize=11 if n <= 8 else 8,
            ncols=1 if n <= 8 else 3,
            framealpha=0.8,
        )
        return
    figure.legend(
        *ax.get_legend_handles_labels(),
        title="layer (shallow → deep)",
        loc="outside right upper",
        fontsize="small",
        ncols=legend_cols,
    )


def plot_heatmap(
    history: Mapping[str, Sequence[tuple[int, float]]],
    *,
    label: str = "change = log(SROP / initial SROP)",
    title: str | None = None,
    compact: bool = False,
) -> Figure:
    """One picture of a whole run: a layer x epoch grid of a signed value (the change since
    initialization), diverging colours centred on 0.

    Rows are layers in the mapping's order, shallow at the top; columns are epochs. Blue: the
    value fell below 0 (SROP fell since initialization), red: it rose; white: no change. The
    colour scale is symmetric, ``±max |value|``; missing or NaN cells are grey.

    Args:
        history: layer name -> ``(epoch, value)`` points, in forward order (e.g.
            ``SROPCallback.history`` of ``change``, or :func:`lightning_srop.transforms.history`).
        label: the colour bar's label.
        title: figure title; default ``"SROP change since initialization"``.
        compact: a figure to read as a thumbnail (TensorBoard's 350 px image cards): a square
            450 px figure with large fonts and short layer names.

    Returns:
        A new figure: the grid and its colour bar.

    Raises:
        ValueError: ``history`` is empty or holds something other than ``(epoch, value)`` pairs.

    Examples:
        >>> fig = plot_heatmap({"conv1": [(0, 0.0), (1, -0.1)], "conv2": [(0, 0.1), (1, -0.3)]})
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['conv1', 'conv2']
    """
    if len(history) == 0:
        raise ValueError("plot_heatmap: expected at least one layer in `history`, got none.")
    curves = _curves(history, "plot_heatmap")
    epochs, grid = epoch_grid(curves)
    finite = np.abs(grid[np.isfinite(grid)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    n = len(curves)
    names = short_names(list(curves)) if compact else list(curves)
    if compact:
        figure = _new_figure(4.5, 4.5, compact=True)
    else:
        longest = max(len(name) for name in names)
        figure = _new_figure(
            float(np.clip(3.0 + 0.07 * longest + 0.3 * len(epochs), 5.0, 16.0)),
            float(np.clip(1.5 + 0.3 * n, 3.0, 14.0)),
        )
    ax = figure.add_subplot()
    from matplotlib import colormaps

    image = ax.imshow(
        grid,
        cmap=colormaps["RdBu_r"].with_extremes(bad="0.8"),
        vmin=-limit,
        vmax=limit,
        aspect="auto",
        interpolation="nearest",
        extent=(-0.5, len(epochs) - 0.5, n - 0.5, -0.5),
    )
    _heatmap_ticks(ax, names, epochs, compact)
    ax.set_title(
        "SROP change since initialization" if title is None else title,
        fontsize=14 if compact else None,
    )
    bar = figure.colorbar(image, ax=ax, shrink=0.9, pad=0.02)
    bar.set_label(label, fontsize=12 if compact else None)
    if compact:
        bar.ax.tick_params(labelsize=11)
    return figure


def _heatmap_ticks(ax: Axes, names: Sequence[str], epochs: Sequence[int], compact: bool) -> None:
    """Layer names down the rows, at most 20 (8 when ``compact``) epoch labels along x."""
    n = len(names)
    ax.set_yticks(
        np.arange(n), names, fontsize=(12 if n <= 12 else 9 if n <= 20 else 7) if compact else None
    )
    ticks = np.arange(len(epochs))
    every = max(1, -(-len(epochs) // (8 if compact else 20)))
    ax.set_xticks(ticks[::every], [str(e) for e in epochs][::every])
    if compact:
        ax.tick_params(axis="x", labelsize=12)
    ax.set_xlabel("epoch", fontsize=14 if compact else None)
    ax.set_ylabel("layer (shallow → deep)", fontsize=14 if compact else None)


def plot_change_heatmap(
    reports: Sequence[SROPReport], *, statistic: str = "change", title: str | None = None
) -> Figure:
    """:func:`plot_heatmap` of a finished run: each layer's ``change`` (or ``statistic``) per
    epoch, layers in forward order.

    The reports may come from :func:`lightning_srop.runs.read_run` or saved JSON files; runs
    logged with ``baseline=True`` carry ``change``.

    Raises:
        ValueError: no reports, or no layer has ``statistic``.

    Examples:
        >>> import numpy as np
        >>> from lightning_srop.report import LayerReport, SROPReport
        >>> none = np.zeros(0)
        >>> def report(epoch, changes):
        ...     return SROPReport(tuple(LayerReport(n, {}, none, none, none, depth=d,
        ...                                         extra={"change": v})
        ...                             for d, (n, v) in enumerate(changes.items())), epoch=epoch)
        >>> fig = plot_change_heatmap([report(0, {"stem": 0.0, "pool": 0.1}),
        ...                            report(1, {"stem": -0.1, "pool": 0.2})])
        >>> fig.axes[0].images[0].get_array().shape
        (2, 2)
    """

    if len(reports) == 0:
        raise ValueError("plot_change_heatmap: expected at least one report, got none.")
    curves = history(reports, statistic)
    if not any(math.isfinite(v) for points in curves.values() for _, v in points):
        raise ValueError(f"plot_change_heatmap: no layer of the reports has {statistic!r}.")
    label = "change = log(SROP / initial SROP)" if statistic == "change" else statistic
    return plot_heatmap(curves, label=label, title=title)


def _decorate_epochs(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``figure`` to ``path`` at :data:`SAVE_DPI`, creating parent directories.

    The format follows the suffix (``.png``, ``.pdf``, ``.svg``, ...); a path without a suffix
    gets ``.png``.

    Args:
        figure: the figure to save.
        path: target file.

    Returns:
        The path written.

    Raises:
        ValueError: ``figure`` is not a matplotlib figure or the suffix is not a format
            matplotlib can write.
    """
    if not callable(getattr(figure, "savefig", None)):
        raise ValueError(
            "save_figure: expected `figure` to be a matplotlib Figure, "
            f"got {type(figure).__name__}."
        )
    target = Path(path)
    if not target.suffix:
        target = target.with_suffix(".png")
    fmt = target.suffix[1:].lower()
    supported = figure.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"save_figure: unsupported file suffix {target.suffix!r} in `path`={str(path)!r}; "
            f"expected one of {sorted('.' + s for s in supported)}."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format=fmt, dpi=SAVE_DPI)
    return target


def plot_reports(
    reports: Sequence[SROPReport],
    *,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    log: bool = False,
    unit: str = "layer",
    quartiles: bool = True,
    title: str | None = None,
) -> Figure:
    """Mean SROP per layer against depth for one or more reports, aligned by layer name.

    The x-axis holds every layer of every report, in forward order (the first report that has
    a layer places it; layers only later reports have follow their predecessor). Each report
    is one line (mean, markers) with its 25–75 % band, so the paper's Figure 5 (randomized,
    trained, anti-aliased and "ds" curves) is one call.

    Args:
        reports: the reports to draw.
        labels: legend labels; default each report's ``label``, else ``model``, else its index.
        ax: draw into these axes (the figure is ``ax.figure``); default a new figure.
        log: log-scale y-axis (the paper's "log SROP per layer").
        unit: ``"layer"`` (cycles per pixel of each layer's grid) or ``"input"`` (per input
            pixel; layers measured in layer units are divided by their downscaling).
        quartiles: draw the interquartile bands.
        title: axes title.

    Returns:
        The figure drawn into.

    Raises:
        ValueError: no report, a label count that does not match, or an impossible unit.
    """
    _check_reports(reports, labels, unit)
    names = aligned_names(reports)
    if labels is None:
        labels = [r.label or r.model or f"report {i}" for i, r in enumerate(reports)]
    longest = max((len(n) for n in names), default=1)
    if ax is None:
        width = float(np.clip(2.5 + 0.38 * len(names), 6.0, 24.0))
        figure = _new_figure(width, 4.4 + min(0.06 * longest, 2.5))
        ax = figure.add_subplot()
    else:
        figure = ax.figure  # type: ignore[assignment]
    x = np.arange(len(names), dtype=np.float64)
    for report, label, color in zip(reports, labels, layer_colors(len(reports)), strict=True):
        mean = report.values("mean", unit)
        y = np.array([mean.get(n, math.nan) for n in names])
        if quartiles:
            q25 = report.values("q25", unit)
            q75 = report.values("q75", unit)
            lo = np.array([q25.get(n, math.nan) for n in names])
            hi = np.array([q75.get(n, math.nan) for n in names])
            band = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(x, lo, hi, where=band, color=color, alpha=0.15, linewidth=0)
        ax.plot(x, y, marker="o", markersize=4, linewidth=1.8, color=color, label=str(label))
    ax.set_xticks(x, names)
    if not _fits_side_by_side(len(names), longest, figure.get_figwidth()):
        _rotate_ticks(ax, 60 if len(names) <= 30 else 90)
    ax.set_xlim(-0.5, len(names) - 0.5)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0.0)
    ylabel = f"{'log ' if log else ''}mean SROP ({unit_label(unit)})"
    _label_layer_axes(ax, ylabel, "SROP per layer" if title is None else title)
    if len(reports) > 1 or quartiles:
        ax.legend(loc="best", fontsize="small")
    return figure


def _check_reports(reports: Sequence[SROPReport], labels: Sequence[str] | None, unit: str) -> None:
    """:func:`plot_reports`' argument checks."""
    where = "plot_reports"
    if len(reports) == 0:
        raise ValueError(f"{where}: expected at least one report, got none.")
    if labels is not None and len(labels) != len(reports):
        raise ValueError(
            f"{where}: expected one label per report ({len(reports)}), got {len(labels)}."
        )
    if unit not in ("layer", "input"):
        raise ValueError(f"{where}: expected `unit` to be one of 'layer', 'input'; got {unit!r}.")


def compare(
    reports: Sequence[SROPReport | str | os.PathLike[str]],
    labels: Sequence[str] | None = None,
    *,
    log: bool = False,
    unit: str = "layer",
    quartiles: bool = True,
    title: str | None = None,
) -> Figure:
    """Several reports (or saved report JSON files) on one figure; see :func:`plot_reports`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_srop import profile
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2))
        >>> x = torch.randn(4, 1, 16, 16)
        >>> fig = compare([profile(net, x), profile(net, x.cumsum(-1))], ["noise", "smooth"])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['noise', 'smooth']
    """
    loaded = [r if isinstance(r, SROPReport) else SROPReport.from_json(r) for r in reports]
    return plot_reports(loaded, labels=labels, log=log, unit=unit, quartiles=quartiles, title=title)


def plot_over_epochs(
    reports: Sequence[SROPReport],
    *,
    statistic: str = "mean",
    accuracy: Sequence[tuple[int, float]] | None = None,
    unit: str | None = None,
    title: str | None = None,
) -> Figure:
    """Each layer's ``statistic`` over the epochs of one run, optionally beside accuracy.

    The curves come from :func:`lightning_srop.transforms.history` (layers in forward order, shallow
    to deep in the legend and colours) and are drawn by :func:`plot_srop_over_epochs`; the
    reports may come from :func:`lightning_srop.runs.read_run`, from ``SROPCallback`` or from
    saved JSON files.

    Args:
        reports: one run's reports, one per measured epoch.
        statistic: which statistic to draw (``"mean"``, ``"median"``, ``"q75"``, ...).
        accuracy: ``(epoch, accuracy)`` points; when given, a second panel on the right.
        unit: frequency unit for the y label; default from the reports' options
            (``"cycles / input pixel"`` for ``unit="input"``, else ``"cycles / pixel"``).
        title: figure title; default ``"SROP over training"``.

    Returns:
        A new figure: one axes (SROP) or two (SROP, accuracy).

    Raises:
        ValueError: no reports, no layers, or an unknown ``statistic``.

    Examples:
        >>> import numpy as np
        >>> from lightning_srop.report import LayerReport, SROPReport
        >>> none = np.zeros(0)
        >>> def report(epoch, means):
        ...     return SROPReport(tuple(LayerReport(n, {"mean": v}, none, none, none, depth=d)
        ...                             for d, (n, v) in enumerate(means.items())), epoch=epoch)
        >>> runs = [report(0, {"stem": 0.3, "pool": 0.2}), report(1, {"stem": 0.25, "pool": 0.1})]
        >>> fig = plot_over_epochs(runs)
        >>> [line.get_label() for line in fig.axes[0].get_lines()]
        ['stem', 'pool']
    """

    if len(reports) == 0:
        raise ValueError("plot_over_epochs: expected at least one report, got none.")
    curves = history(reports, statistic)
    if not curves:
        raise ValueError("plot_over_epochs: the reports hold no layers.")
    if unit is None:
        units = {r.options.get("unit", "layer") for r in reports}
        unit = unit_label("input" if units == {"input"} else "layer")
    figure = plot_srop_over_epochs(curves, accuracy, unit=unit, title=title)
    srop_ax = figure.axes[0]
    srop_ax.set_ylabel(f"{statistic} {_srop_label(unit)}")
    if accuracy is not None:
        srop_ax.set_title(f"{statistic} SROP per layer")
    return figure
