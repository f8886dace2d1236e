"""The figure of :mod:`recipes.experiments.families` (drawing only; the numbers come in)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipes.experiments._common import VERDICT_COLORS

__all__ = ["plot"]


def plot(table: Sequence[dict[str, Any]], h_rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Per data set (rows of panels): each layer's paired log differences trained - randomized
    (filled) and trained - shuffled_labels (hollow) with intervals, families side by side,
    marker color = verdict, after-downscaling layers shaded (left); the group means and the
    contrast with intervals, and the verdict on H (right)."""
    from matplotlib.figure import Figure

    from lightning_srop.plots import save_figure

    datasets = list(dict.fromkeys(r["data"] for r in table))
    fig = Figure(figsize=(17, 4.6 * len(datasets)), layout="constrained")
    axes = fig.subplots(len(datasets), 2, width_ratios=[4.2, 1], squeeze=False)
    for (ax, ax_h), data in zip(axes, datasets, strict=True):
        _plot_layers(ax, data, [r for r in table if r["data"] == data and r["layer"] != "-"])
        _plot_h(ax_h, [r for r in h_rows if r["data"] == data])
    fig.suptitle("Training stages across families: does SROP fall after a downscaling (H)?")
    save_figure(fig, path)
    return path


def _plot_layers(ax: Any, data: str, cells: Sequence[dict[str, Any]]) -> None:
    """One data set's per-layer differences, families side by side."""
    from matplotlib.lines import Line2D

    layers = list(dict.fromkeys((r["family"], r["layer"]) for r in cells))
    for x, (family, layer) in enumerate(layers):
        for control, offset, fill in (
            ("randomized", -0.15, True),
            ("shuffled_labels", 0.15, False),
        ):
            sel = [
                r
                for r in cells
                if (r["family"], r["layer"]) == (family, layer)
                and r["quantity"] == f"log_srop[trained - {control}]"
            ]
            if not sel:
                continue
            r = sel[0]
            if control == "randomized" and r["after_downscaling"]:
                ax.axvspan(x - 0.5, x + 0.5, color="tab:blue", alpha=0.08, lw=0)
            color = VERDICT_COLORS[r["verdict"]]
            ax.errorbar(
                [x + offset],
                [r["mean"]],
                yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
                fmt="o",
                color=color,
                mfc=color if fill else "white",
                capsize=2,
                ms=5,
            )
    starts = [i for i, (f, _) in enumerate(layers) if i == 0 or layers[i - 1][0] != f]
    for i in starts[1:]:
        ax.axvline(i - 0.5, color="k", lw=0.8)
    for i in starts:
        ax.text(
            i - 0.4,
            1.01,
            layers[i][0],
            transform=ax.get_xaxis_transform(),
            fontsize=9,
            weight="bold",
        )
    short = [_short(layer) for _, layer in layers]
    ax.set_xticks(range(len(layers)), short, rotation=60, fontsize=7, ha="right")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylabel("log SROP difference (final epoch)")
    ax.set_title(
        f"{data}: trained - randomized (filled), trained - shuffled labels (hollow); "
        "shaded = after a downscaling; color = verdict (paper: < 0)",
        fontsize=9,
        loc="left",
        pad=14,
    )
    ax.grid(alpha=0.3, axis="y")
    handles = [
        Line2D([], [], marker="o", ls="", color=c, label=v)
        for v, c in VERDICT_COLORS.items()
        if v != "n/a"
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower left")


def _plot_h(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    """The group means and contrast per control, with intervals, and the verdicts on H."""
    groups = ("after downscaling", "same grid", "after - same")
    titles = []
    for ci, (control, fill) in enumerate((("randomized", True), ("shuffled_labels", False))):
        for gi, group in enumerate(groups):
            sel = [r for r in rows if r["control"] == control and r["group"] == group]
            if not sel:
                continue
            r = sel[0]
            color = VERDICT_COLORS[r["verdict"]]
            ax.errorbar(
                [gi + (ci - 0.5) * 0.3],
                [r["mean"]],
                yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
                fmt="s",
                color=color,
                mfc=color if fill else "white",
                capsize=3,
            )
        h = [r for r in rows if r["control"] == control and r["group"] == "H"]
        if h:
            label = "vs randomized" if control == "randomized" else "vs control"
            titles.append(f"H {label}: {h[0]['verdict']}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(
        range(len(groups)),
        ["after ds\n(H: < 0)", "same grid\n(H: not < 0)", "after - same\n(H: < 0)"],
        fontsize=8,
    )
    ax.set_title("\n".join(titles), fontsize=9)
    ax.set_ylabel("group mean over layers and families")
    ax.grid(alpha=0.3, axis="y")


def _short(layer: str) -> str:
    for prefix in ("net.", "vit.", "features."):
        layer = layer.removeprefix(prefix)
    return layer.replace("stages.", "s").replace("layers.", "s").replace("blocks.", "b")
