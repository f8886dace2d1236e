"""Figures of SROP statistics: checked on the figure objects and on the rendered PNGs."""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from lightning_srop.plots import SAVE_DPI, plot_layer_profile, plot_srop_over_epochs, save_figure
from lightning_srop.report import LayerReport

EDGES = np.linspace(0.0, math.sqrt(2.0) / 2.0, 1025)
EMPTY = np.zeros(1024, dtype=np.int64)


def _report(name: str, mean: float | None, depth: int) -> LayerReport:
    keys = ("mean", "q25", "median", "q75")
    if mean is None:
        stats = dict.fromkeys(keys, math.nan)
    else:
        stats = {"mean": mean, "q25": 0.8 * mean, "median": 0.95 * mean, "q75": 1.25 * mean}
    return LayerReport(name, stats, EDGES, EMPTY, EMPTY, depth)


def _lines_by_label(figure: Figure) -> dict[str, Line2D]:
    return {str(line.get_label()): line for line in figure.axes[0].get_lines()}


def _render(figure: Figure) -> tuple[np.ndarray, RendererAgg]:
    """Draw with an Agg canvas: the pixels and the renderer that laid the texts out."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()), canvas.get_renderer()


# ------------------------------------------------------------------------------------------
# plot_layer_profile
# ------------------------------------------------------------------------------------------


def test_layer_profile_contents(tmp_path: Path) -> None:
    names = ["features.0", "features.2", "features.5", "features.7", "classifier.0"]
    means = [0.30, 0.22, None, 0.12, 0.08]
    reports = [_report(n, m, d) for d, (n, m) in enumerate(zip(names, means, strict=True))]
    # Given in scrambled order: plotted in depth order.
    figure = plot_layer_profile([reports[i] for i in (3, 0, 4, 2, 1)], title="profile")
    save_figure(figure, tmp_path / "profile.png")
    (ax,) = figure.axes

    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert ax.get_title() == "profile"
    assert ax.get_ylabel() == "SROP (cycles / pixel)"

    lines = _lines_by_label(figure)
    assert set(lines) == {"mean", "median", "no valid maps"}
    mean_y = np.asarray(lines["mean"].get_ydata(), dtype=float)
    np.testing.assert_allclose(mean_y, [0.30, 0.22, math.nan, 0.12, 0.08])  # NaN = gap
    assert lines["mean"].get_marker() == "o"
    assert lines["median"].get_linestyle() == "--"
    np.testing.assert_allclose(
        np.asarray(lines["median"].get_ydata(), dtype=float),
        [0.95 * 0.30, 0.95 * 0.22, math.nan, 0.95 * 0.12, 0.95 * 0.08],
    )
    # The layer without valid maps is marked on the axis at its own position.
    np.testing.assert_array_equal(lines["no valid maps"].get_xdata(), [2.0])

    # The band: two pieces (the NaN layer splits it) spanning q25..q75 of their layers.
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1 and bands[0].get_label() == "25–75 %"
    paths = bands[0].get_paths()
    assert len(paths) == 2
    left = paths[0].vertices
    assert left[:, 0].min() == 0.0 and left[:, 0].max() == 1.0
    assert left[:, 1].min() == pytest.approx(0.8 * 0.22)
    assert left[:, 1].max() == pytest.approx(1.25 * 0.30)
    right = paths[1].vertices
    assert right[:, 0].min() == 3.0 and right[:, 0].max() == 4.0

    bottom, top = ax.get_ylim()
    assert bottom == 0.0 and top >= 1.25 * 0.30
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "25–75 %",
        "median",
        "mean",
        "no valid maps",
    ]


def test_layer_profile_many_layers_stay_readable(tmp_path: Path) -> None:
    names = [f"layer{i // 4 + 1}.{i % 4}.conv{i % 2 + 1}" for i in range(24)]
    reports = [_report(n, 0.3 * math.exp(-d / 8) + 0.02, d) for d, n in enumerate(names)]
    reports[10] = _report(names[10], None, 10)
    figure = plot_layer_profile(reports, unit="cycles / input pixel")
    path = save_figure(figure, tmp_path / "profile24.png")
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert ax.get_ylabel() == "SROP (cycles / input pixel)"
    assert all(t.get_rotation() > 0 for t in ax.get_xticklabels())
    assert figure.get_size_inches()[0] > 8.0  # grows with the number of layers

    # Every tick label lies inside the figure and no two overlap along the axis.
    _, renderer = _render(figure)
    fig_box = figure.bbox
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
    for box in boxes:
        assert fig_box.x0 <= box.x0 and box.x1 <= fig_box.x1
        assert fig_box.y0 <= box.y0 and box.y1 <= fig_box.y1
    # Rotated labels: their anchors (right ends) are strictly ordered, one per tick.
    assert all(a.x1 < b.x1 for a, b in itertools.pairwise(boxes))

    with Image.open(path) as image:
        width, height = image.size
    expected = figure.get_size_inches() * SAVE_DPI
    assert abs(width - expected[0]) <= 1 and abs(height - expected[1]) <= 1


def test_layer_profile_isolated_layer_keeps_a_band() -> None:
    reports = [_report("a", None, 0), _report("b", 0.2, 1), _report("c", None, 2)]
    figure = plot_layer_profile(reports)
    (ax,) = figure.axes
    # No neighbour to span a band with: a vertical bar from q25 to q75 stands in for it.
    segments = [
        seg for c in ax.collections if not isinstance(c, PolyCollection) for seg in c.get_segments()
    ]  # type: ignore[attr-defined]
    assert len(segments) == 1
    np.testing.assert_allclose(segments[0], [[1.0, 0.8 * 0.2], [1.0, 1.25 * 0.2]])
    np.testing.assert_array_equal(_lines_by_label(figure)["no valid maps"].get_xdata(), [0, 2])


def test_layer_profile_all_nan_and_errors() -> None:
    figure = plot_layer_profile([_report("dead", None, 0)])
    (ax,) = figure.axes
    assert ax.get_ylim() == (0.0, 1.0)
    _render(figure)  # draws without warnings or errors
    with pytest.raises(ValueError, match=r"plot_layer_profile: expected at least one report"):
        plot_layer_profile([])


def test_ties_in_depth_keep_the_given_order() -> None:
    reports = [_report("b", 0.1, 0), _report("a", 0.2, 0), _report("c", 0.3, 1)]
    ax = plot_layer_profile(reports).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a", "c"]


# ------------------------------------------------------------------------------------------
# plot_srop_over_epochs
# ------------------------------------------------------------------------------------------


def test_srop_over_epochs_with_accuracy(tmp_path: Path) -> None:
    history = {
        "conv1": [(2, 0.30), (0, 0.40), (1, 0.35)],  # unsorted epochs
        "conv2": [(0, 0.30), (1, math.nan), (2, 0.20)],  # NaN: a gap
        "pool": [(0, 0.25), (1, 0.20), (2, 0.15)],
    }
    accuracy = [(1, 0.7), (0, 0.4), (2, 0.85)]
    figure = plot_srop_over_epochs(history, accuracy, title="run 3")
    save_figure(figure, tmp_path / "epochs.png")
    srop_ax, acc_ax = figure.axes

    lines = srop_ax.get_lines()
    assert [line.get_label() for line in lines] == ["conv1", "conv2", "pool"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(np.asarray(lines[0].get_ydata(), dtype=float), [0.40, 0.35, 0.30])
    assert math.isnan(float(lines[1].get_ydata()[1]))  # type: ignore[index]
    assert len({line.get_color() for line in lines}) == 3  # type: ignore[arg-type]
    assert srop_ax.get_ylim()[0] == 0.0 and srop_ax.get_ylim()[1] >= 0.40
    assert srop_ax.get_xlabel() == "epoch" and srop_ax.get_ylabel() == "SROP (cycles / pixel)"

    (acc_line,) = acc_ax.get_lines()
    np.testing.assert_array_equal(acc_line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(np.asarray(acc_line.get_ydata(), dtype=float), [0.4, 0.7, 0.85])
    assert acc_ax.get_ylabel() == "accuracy"

    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["conv1", "conv2", "pool"]
    assert figure.get_suptitle() == "run 3"
    # Integer epochs: no fractional ticks.
    ticks = [t for t in srop_ax.get_xticks() if 0 <= t <= 2]
    assert all(float(t).is_integer() for t in ticks)


def test_srop_over_epochs_without_accuracy_many_layers(tmp_path: Path) -> None:
    history = {f"block{i}": [(e, 0.3 / (i + 1) + 0.01 * e) for e in range(5)] for i in range(20)}
    figure = plot_srop_over_epochs(history, unit="cycles / input pixel")
    save_figure(figure, tmp_path / "epochs20.png")
    (ax,) = figure.axes
    assert len(ax.get_lines()) == 20
    assert ax.get_title() == "SROP over training"
    assert ax.get_ylabel() == "SROP (cycles / input pixel)"
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == list(history)
    # The legend is inside the figure, to the right of the axes.
    pixels, renderer = _render(figure)
    box = legend.get_window_extent(renderer)
    assert box.x0 >= ax.get_window_extent(renderer).x1
    assert box.x1 <= pixels.shape[1] + 1


def test_srop_over_epochs_errors() -> None:
    with pytest.raises(ValueError, match=r"expected at least one layer in `history`"):
        plot_srop_over_epochs({})
    with pytest.raises(ValueError, match=r"history\['conv'\]: expected \(epoch, value\) pairs"):
        plot_srop_over_epochs({"conv": [(0, 0.1, 2)]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"accuracy: expected \(epoch, value\) pairs"):
        plot_srop_over_epochs({"conv": [(0, 0.1)]}, [("a", "b")])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------
# save_figure, global state
# ------------------------------------------------------------------------------------------


def test_save_figure(tmp_path: Path) -> None:
    figure = plot_layer_profile([_report("a", 0.2, 0)])
    path = save_figure(figure, tmp_path / "new" / "dir" / "profile")
    assert path == tmp_path / "new" / "dir" / "profile.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_figure(figure, str(tmp_path / "profile.svg"))
    assert svg.read_text()[:200].lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match=r"unsupported file suffix '.nope'.*'.png'"):
        save_figure(figure, tmp_path / "profile.nope")
    with pytest.raises(ValueError, match=r"expected `figure` to be a matplotlib Figure"):
        save_figure("not a figure", tmp_path / "x.png")  # type: ignore[arg-type]


def test_no_pyplot_state_and_thread_safety(tmp_path: Path) -> None:
    before = plt.get_fignums()

    def work(i: int) -> Path:
        reports = [_report(f"l{j}", 0.1 + 0.01 * (i + j), j) for j in range(6)]
        save_figure(plot_layer_profile(reports), tmp_path / f"p{i}.png")
        history = {"a": [(0, 0.1 * i), (1, 0.2)]}
        return save_figure(plot_srop_over_epochs(history, [(0, 0.5), (1, 0.6)]), tmp_path / f"e{i}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(work, range(4)))
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert plt.get_fignums() == before
