"""Pure transforms of SROP results: histograms re-binned, statistics read off histograms,
curves over epochs and the long table of a run.

What the loggers, the figures, the run readers and the callback share, so that none of them
imports another for it: numpy (and torch for the one quantile rule of
:func:`~lightning_srop.statistics.histogram_quantile`) on plain arrays and
:class:`~lightning_srop.report.SROPReport` lists; no logger, no figure, no file format but the
one CSV writer.

- **Histograms**: :func:`trim_empty_bins`, :func:`rebin` (exact merging of adjacent bins),
  :func:`display_bins` (bins that read well, exactly), :func:`histogram_statistics` (what a
  logged histogram tells of its values) and :func:`common_grid` (several histograms on one
  grid).
- **Curves and tables**: :func:`history` (each layer's statistic over a run),
  :func:`epoch_arrays` and :func:`epoch_grid` (curves as arrays, ready to draw) and
  :func:`to_csv` (a row per report and layer).
- **Labels**: :func:`unit_label` (the frequency unit of SROPs) and :func:`short_names` (layer
  names shortened for small labels).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import torch

from lightning_srop.report import LayerReport, SROPReport, aligned_names, write_csv
from lightning_srop.statistics import QUANTILES, STATISTICS, histogram_quantile
from lightning_srop.tags import PER_SAMPLE_SUFFIX

__all__ = [
    "HISTOGRAM_BINS",
    "RUN_CSV_LEAD",
    "common_grid",
    "display_bins",
    "epoch_arrays",
    "epoch_grid",
    "histogram_statistics",
    "history",
    "rebin",
    "short_names",
    "to_csv",
    "trim_empty_bins",
    "unit_label",
]

#: Default most bins of a logged histogram (see :func:`display_bins`; the callback's
#: ``histogram_bins``).
HISTOGRAM_BINS: Final[int] = 64

#: Columns of :func:`to_csv` before the statistics.
RUN_CSV_LEAD: Final[tuple[str, ...]] = ("epoch", "step", "depth", "layer")


# ------------------------------------------------------------------------------------------
# Histograms
# ------------------------------------------------------------------------------------------


def _check_histogram(counts: Any, edges: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``counts``/``edges`` and return them as int64 / float64 arrays."""
    counts_arr = np.asarray(counts)
    edges_arr = np.asarray(edges, dtype=np.float64)
    if counts_arr.ndim != 1 or counts_arr.size == 0:
        raise ValueError(
            f"{where}: expected `counts` to be a non-empty 1-D array, got shape {counts_arr.shape}."
        )
    if edges_arr.shape != (counts_arr.size + 1,):
        raise ValueError(
            f"{where}: expected `edges` of shape ({counts_arr.size + 1},) for {counts_arr.size} "
            f"bins, got shape {edges_arr.shape}."
        )
    if not np.all(np.isfinite(edges_arr)) or not np.all(np.diff(edges_arr) > 0):
        raise ValueError(f"{where}: expected `edges` to be finite and strictly increasing.")
    integral = counts_arr.dtype.kind in "iu" or (
        counts_arr.dtype.kind == "f" and bool(np.all(counts_arr == np.round(counts_arr)))
    )
    if not integral:
        raise ValueError(
            f"{where}: expected integer `counts`, got dtype {counts_arr.dtype} "
            "(NaN or fractional values are not counts)."
        )
    counts_int = counts_arr.astype(np.int64)
    if np.any(counts_int < 0):
        raise ValueError(f"{where}: expected `counts` >= 0, got min {int(counts_int.min())}.")
    return counts_int, edges_arr


def trim_empty_bins(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop empty leading and trailing bins.

    Args:
        counts: counts per bin, shape ``(n,)``.
        edges: bin edges, shape ``(n + 1,)``, strictly increasing.

    Returns:
        ``(counts, edges)`` from the first to the last non-empty bin (views, not copies); both
        empty (shapes ``(0,)`` and ``(0,)``) when every bin is empty.

    Examples:
        >>> import numpy as np
        >>> trim_empty_bins(np.array([0, 2, 0, 1, 0]), np.arange(6.0))
        (array([2, 0, 1]), array([1., 2., 3., 4.]))
    """
    return _trim(*_check_histogram(counts, edges, "trim_empty_bins"))


def _check_max_bins(max_bins: object, where: str) -> int:
    """``max_bins`` as an int, or the error every ``max_bins`` argument raises."""
    if isinstance(max_bins, bool) or not isinstance(max_bins, (int, np.integer)) or max_bins < 1:
        raise ValueError(f"{where}: expected `max_bins` to be an int >= 1, got {max_bins!r}.")
    return int(max_bins)


def _trim(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`trim_empty_bins` of a validated histogram."""
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return counts[:0], edges[:0]
    first, last = int(nonzero[0]), int(nonzero[-1])
    return counts[first : last + 1], edges[first : last + 2]


def rebin(counts: np.ndarray, edges: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent bins exactly until there are at most ``max_bins``.

    Runs of ``k = ceil(n / max_bins)`` adjacent bins are summed, starting at the first bin; the
    last run is shorter when ``k`` does not divide ``n``. Totals are preserved and every new
    edge is one of the old ones. With ``n <= max_bins`` the input comes back unchanged.

    Args:
        counts: counts per bin, shape ``(n,)``.
        edges: bin edges, shape ``(n + 1,)``, strictly increasing.
        max_bins: the most bins wanted, >= 1.

    Returns:
        ``(counts, edges)`` with ``ceil(n / k)`` bins, int64 and float64.

    Raises:
        ValueError: ``max_bins`` is not an int >= 1, or counts/edges are malformed.

    Examples:
        >>> import numpy as np
        >>> rebin(np.array([1, 2, 3, 4, 5]), np.arange(6.0), 2)
        (array([6, 9]), array([0., 3., 5.]))
    """
    limit = _check_max_bins(max_bins, "rebin")
    return _rebin(*_check_histogram(counts, edges, "rebin"), limit)


def _rebin(counts: np.ndarray, edges: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rebin` of a validated histogram."""
    n = counts.size
    if n <= max_bins:
        return counts, edges
    k = -(-n // max_bins)
    starts = np.arange(0, n, k)
    merged = np.add.reduceat(counts, starts).astype(np.int64)
    return merged, np.append(edges[starts], edges[-1])


def display_bins(
    counts: np.ndarray, edges: np.ndarray, max_bins: int = HISTOGRAM_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Bins that read well: one per occupied value when there are few, else at most ``max_bins``.

    SROPs of small maps take few distinct values (a ``7 x 7`` map has a handful of radius
    shells), which on a fine fixed grid is a comb of empty bins with a few spikes. So:

    - empty outer bins are trimmed (:func:`trim_empty_bins`);
    - at most ``max_bins`` non-empty bins left: one bin per non-empty bin, centred on it, with
      edges half-way between neighbouring non-empty bins (the outer ones as wide as the half
      gap to their neighbour, never below 0 or narrower than the original bin); contiguous
      non-empty bins keep their original edges;
    - more: runs of adjacent bins are summed (:func:`rebin`) down to at most ``max_bins``.

    Exact either way: every original bin lies inside exactly one new bin, so every count is a
    sum of original counts and the total is unchanged.

    Args:
        counts: counts per bin, shape ``(n,)``.
        edges: bin edges, shape ``(n + 1,)``, strictly increasing.
        max_bins: the most bins wanted, >= 1.

    Returns:
        ``(counts, edges)``, int64 and float64; both zero-length when every bin is empty.

    Examples:
        >>> import numpy as np
        >>> counts = np.zeros(10, dtype=np.int64); counts[[2, 3, 7]] = [4, 1, 2]
        >>> display_bins(counts, np.arange(11.0))
        (array([4, 1, 2]), array([2. , 3. , 5.5, 9.5]))
    """
    limit = _check_max_bins(max_bins, "display_bins")
    return _display(*_check_histogram(counts, edges, "display_bins"), limit)


def _display(counts: np.ndarray, edges: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`display_bins` of a validated histogram."""
    trimmed_counts, trimmed_edges = _trim(counts, edges)
    occupied = np.flatnonzero(trimmed_counts)
    if occupied.size == 0:
        return trimmed_counts, trimmed_edges
    if occupied.size > max_bins:
        return _rebin(trimmed_counts, trimmed_edges, max_bins)
    lefts, rights = trimmed_edges[occupied], trimmed_edges[occupied + 1]
    centres = 0.5 * (lefts + rights)
    inner = 0.5 * (centres[:-1] + centres[1:])
    # Neighbouring bins keep their shared edge exactly (no rounding of the midpoint).
    inner = np.where(occupied[1:] - occupied[:-1] == 1, rights[:-1], inner)
    if occupied.size > 1:
        first = min(float(lefts[0]), max(0.0, float(centres[0] - (inner[0] - centres[0]))))
        last = max(float(rights[-1]), float(centres[-1] + (centres[-1] - inner[-1])))
    else:
        first, last = float(lefts[0]), float(rights[0])
    new_edges = np.concatenate([[first], inner, [last]]).astype(np.float64)
    return trimmed_counts[occupied].astype(np.int64), new_edges


def histogram_statistics(
    counts: np.ndarray,
    edges: np.ndarray,
    *,
    total: float | None = None,
    total_squares: float | None = None,
) -> dict[str, float]:
    """Statistics of the values behind a histogram, as far as the histogram tells them.

    ``count`` is exact. ``mean`` and ``std`` come from ``total`` and ``total_squares`` (the sum
    and sum of squares of the values, e.g. TensorBoard's ``sum``/``sum_squares``) when given,
    else from bin centres. Quantiles (``q05`` ... ``q95``), ``min`` (the 0 quantile) and ``max``
    (the 1 quantile) follow the callback's own rule,
    :func:`~lightning_srop.statistics.histogram_quantile`, so they are within half a bin of
    the exact values and equal to the callback's unclamped histogram quantiles.

    Args:
        counts: values per bin, shape ``(n,)``.
        edges: bin edges, shape ``(n + 1,)``, increasing.
        total: sum of the values, if known.
        total_squares: sum of the squared values, if known.

    Returns:
        ``count``, ``mean``, ``std``, ``min``, ``max`` and the quantiles; all but ``count`` NaN
        when the histogram is empty.

    Examples:
        >>> import numpy as np
        >>> s = histogram_statistics(np.array([1, 0, 3]), np.array([0.0, 0.1, 0.2, 0.3]))
        >>> s["count"], round(s["median"], 3), round(s["mean"], 3), round(s["max"], 3)
        (4.0, 0.25, 0.2, 0.25)
    """
    counts_arr = np.asarray(counts, dtype=np.float64)
    edges_arr = np.asarray(edges, dtype=np.float64)
    n = float(counts_arr.sum())
    out: dict[str, float] = {"count": n}
    keys = ("mean", "std", "min", "max", *QUANTILES)
    if n <= 0 or edges_arr.shape != (counts_arr.size + 1,):
        out.update(dict.fromkeys(keys, math.nan))
        return out
    centres = 0.5 * (edges_arr[:-1] + edges_arr[1:])
    s1 = float(counts_arr @ centres) if total is None else float(total)
    s2 = float(counts_arr @ (centres * centres)) if total_squares is None else float(total_squares)
    mean = s1 / n
    out["mean"] = mean
    out["std"] = math.sqrt(max(s2 / n - mean * mean, 0.0))
    counts_t, centres_t = torch.from_numpy(counts_arr), torch.from_numpy(centres)

    def quantile(q: float) -> float:
        return float(histogram_quantile(counts_t, centres_t, q))

    out["min"], out["max"] = quantile(0.0), quantile(1.0)
    for name, q in QUANTILES.items():
        out[name] = quantile(q)
    return out


def common_grid(
    parts: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Put several ``(counts, edges)`` histograms on one grid: the union of their edges.

    Histograms cut from one fixed-bin grid (what the callback logs) land on their own bins
    exactly; a gap between their ranges is filled with empty bins of the neighbouring width
    (one wide empty bin when the gap is not a whole number of bins). Empty inputs come back as
    zero-length counts; no input with counts gives zero-length edges.
    """
    present = [(c, e) for c, e in parts if c.size]
    if not present:
        return np.zeros(0, dtype=np.float64), [np.zeros(0, dtype=np.int64) for _ in parts]
    grid = np.unique(np.concatenate([e for _, e in present]))
    covered = [(float(e[0]), float(e[-1])) for _, e in present]
    filled: list[float] = [float(grid[0])]
    for left, right in itertools.pairwise(grid):
        left_f, right_f = float(left), float(right)
        inside = any(a <= left_f and right_f <= b for a, b in covered)
        if not inside and len(filled) >= 2:
            width = filled[-1] - filled[-2]
            m = round((right_f - left_f) / width)
            if m > 1 and abs((right_f - left_f) - m * width) <= 1e-6 * width:
                filled.extend(float(v) for v in np.linspace(left_f, right_f, m + 1)[1:-1])
        filled.append(right_f)
    edges = np.asarray(filled, dtype=np.float64)
    out: list[np.ndarray] = []
    for counts, part_edges in parts:
        full = np.zeros(edges.size - 1, dtype=np.int64)
        if counts.size:
            # Each bin goes to the grid bin that holds its centre (its own bin, on one grid).
            centres = 0.5 * (part_edges[:-1] + part_edges[1:])
            index = np.searchsorted(edges, centres, side="right") - 1
            np.add.at(full, index.clip(0, full.size - 1), counts.astype(np.int64))
        out.append(full)
    return edges, out


def _histogram_sums(
    counts: np.ndarray, edges: np.ndarray, stats: Mapping[str, float]
) -> tuple[float, float]:
    """Sum and sum of squares of the values: exact from ``stats`` when they match ``counts``,
    else from bin centres."""
    num = int(counts.sum())
    mean, std, count = (float(stats.get(key, math.nan)) for key in ("mean", "std", "count"))
    if math.isfinite(mean) and math.isfinite(std) and count == num:
        return mean * num, (std * std + mean * mean) * num
    centers = 0.5 * (edges[:-1] + edges[1:])
    return float(counts @ centers), float(counts @ (centers * centers))


def _layer_histograms(
    report: LayerReport, max_bins: int | None
) -> list[tuple[tuple[str, ...], np.ndarray, np.ndarray, Mapping[str, float]]]:
    """The non-empty ``(rest, counts, edges, stats)`` histograms of one report, validated
    once, trimmed (and re-binned by :func:`display_bins` when ``max_bins`` is given).

    ``rest`` is what follows the layer in the tag: nothing for the SROP histogram,
    ``(PER_SAMPLE_SUFFIX,)`` for the per-sample one. ``stats`` are the exact statistics of
    the histogram's values where the report has them (the SROP histogram), else empty (no
    per-sample count is kept).
    """
    out: list[tuple[tuple[str, ...], np.ndarray, np.ndarray, Mapping[str, float]]] = []
    for rest, field, counts, stats in (
        ((), "counts", report.counts, report.stats),
        ((PER_SAMPLE_SUFFIX,), "sample_counts", report.sample_counts, {}),
    ):
        where = f"log_histograms: report {report.name!r} ({field})"
        checked = _check_histogram(counts, report.edges, where)
        kept = _trim(*checked) if max_bins is None else _display(*checked, max_bins)
        if kept[0].size:
            out.append((rest, *kept, stats))
    return out


# ------------------------------------------------------------------------------------------
# Curves and tables
# ------------------------------------------------------------------------------------------


def history(
    reports: Sequence[SROPReport], statistic: str = "mean", *, skip_missing: bool = False
) -> dict[str, list[tuple[int, float]]]:
    """Each layer's ``statistic`` over a run: ``{layer: [(epoch, value), ...]}``.

    Layers come in forward order (by ``depth``; a layer only later reports have follows its
    predecessor there); points in the reports' order. A report without an epoch uses its
    index in ``reports``. A layer missing from a report has no point there.

    Args:
        reports: one run's reports, e.g. from :func:`lightning_srop.runs.read_run`.
        statistic: a key of :data:`~lightning_srop.statistics.STATISTICS`, or of the layers'
            ``extra`` values.
        skip_missing: a layer that lacks ``statistic`` in a report has no point there (and a
            layer that never has it no curve; an unknown ``statistic`` gives no curves), where
            by default it has a NaN point.

    Returns:
        The curves, ready for :func:`lightning_srop.plots.plot_srop_over_epochs`.

    Raises:
        ValueError: ``statistic`` is in neither the statistics nor any layer's ``extra``.

    Examples:
        >>> import numpy as np
        >>> from lightning_srop.report import LayerReport, SROPReport
        >>> none = np.zeros(0)
        >>> def report(epoch, values):
        ...     layers = [LayerReport(n, {"mean": v}, none, none, none, depth=d)
        ...               for d, (n, v) in enumerate(values.items())]
        ...     return SROPReport(tuple(layers), epoch=epoch)
        >>> history([report(0, {"conv": 0.3, "pool": 0.2}), report(1, {"conv": 0.25})])
        {'conv': [(0, 0.3), (1, 0.25)], 'pool': [(0, 0.2)]}
    """
    known = set(STATISTICS) | {k for r in reports for layer in r.layers for k in layer.extra}
    if statistic not in known and not skip_missing:
        raise ValueError(
            f"history: unknown statistic {statistic!r}; valid choices: {', '.join(STATISTICS)} "
            "(or a key of the layers' `extra` values)."
        )
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in aligned_names(reports)}
    for index, report in enumerate(reports):
        epoch = index if report.epoch is None else int(report.epoch)
        for layer in report.layers:
            value = layer.stats.get(statistic, layer.extra.get(statistic))
            if value is not None or not skip_missing:
                curves[layer.name].append((epoch, math.nan if value is None else float(value)))
    return {name: points for name, points in curves.items() if points or not skip_missing}


def epoch_arrays(
    points: Sequence[tuple[int, float]], where: str = "epoch_arrays"
) -> tuple[np.ndarray, np.ndarray]:
    """``(epoch, value)`` points as two float64 arrays sorted by epoch, non-finite values as
    NaN (gaps in a line).

    Args:
        points: one curve of :func:`history`, in any epoch order.
        where: what to name in the error (the caller and its argument).

    Returns:
        The epochs and the values.

    Raises:
        ValueError: a point is not a pair of numbers.

    Examples:
        >>> epoch_arrays([(1, 0.2), (0, float("inf"))])
        (array([0., 1.]), array([nan, 0.2]))
    """
    pairs: list[tuple[float, float]] = []
    for point in points:
        try:
            epoch, value = point
            pairs.append((float(epoch), float(value)))
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: expected (epoch, value) pairs of numbers, got {point!r}."
            ) from None
    pairs.sort(key=lambda p: p[0])
    epochs = np.array([p[0] for p in pairs], dtype=np.float64)
    values = np.array([p[1] if math.isfinite(p[1]) else math.nan for p in pairs], dtype=np.float64)
    return epochs, values


def epoch_grid(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[list[int], np.ndarray]:
    """Curves of :func:`epoch_arrays` as one layer x epoch grid.

    Returns:
        The epochs of any curve, in order, and the grid: a row per curve in the mapping's
        order, a column per epoch (at least one), NaN where a curve has no value.

    Examples:
        >>> epochs, grid = epoch_grid({"a": epoch_arrays([(0, 1.0)]), "b": epoch_arrays([(2, 3.0)])})
        >>> epochs, grid.tolist()
        ([0, 2], [[1.0, nan], [nan, 3.0]])
    """
    epochs = sorted({int(e) for xs, _ in curves.values() for e in xs})
    column = {e: i for i, e in enumerate(epochs)}
    grid = np.full((len(curves), max(len(epochs), 1)), np.nan)
    for row, (xs, ys) in enumerate(curves.values()):
        for e, v in zip(xs, ys, strict=True):
            grid[row, column[int(e)]] = v
    return epochs, grid


def to_csv(reports: Sequence[SROPReport], path: str | os.PathLike[str] | None = None) -> str:
    """One long table of a run: a row per report and layer.

    Columns: ``epoch``, ``step``, ``depth``, ``layer``, every statistic of
    :data:`~lightning_srop.statistics.STATISTICS`, then any ``extra`` values. Rows in the
    reports' order, layers by depth. Unknown epochs and steps are empty cells, NaN is ``nan``.

    Args:
        reports: one run's reports.
        path: also write the text here.

    Returns:
        The CSV text.

    Examples:
        >>> import numpy as np
        >>> from lightning_srop.report import LayerReport, SROPReport
        >>> none = np.zeros(0)
        >>> layer = LayerReport("conv", {"mean": 0.5}, none, none, none)
        >>> print(to_csv([SROPReport((layer,), epoch=2, step=9)]).splitlines()[1][:20])
        2,9,0,conv,0.5,nan,n
    """
    columns = list(RUN_CSV_LEAD) + list(STATISTICS)
    rows: list[dict[str, Any]] = []
    for report in reports:
        for layer in sorted(report.layers, key=lambda lr: lr.depth):
            row: dict[str, Any] = {
                "epoch": "" if report.epoch is None else report.epoch,
                "step": "" if report.step is None else report.step,
                "depth": layer.depth,
                "layer": layer.name,
            }
            row.update({s: layer.stats.get(s, math.nan) for s in STATISTICS})
            row.update(layer.extra)
            columns += [k for k in layer.extra if k not in columns]
            rows.append(row)
    return write_csv(path, rows, columns)


# ------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------


def unit_label(unit: str) -> str:
    """The frequency unit of SROPs measured with ``unit`` (an option of
    :class:`~lightning_srop.options.SROPOptions`), for axis labels and tables.

    Examples:
        >>> unit_label("input"), unit_label("layer")
        ('cycles / input pixel', 'cycles / pixel')
    """
    return f"cycles / {'input pixel' if unit == 'input' else 'pixel'}"


def short_names(names: Sequence[str], max_length: int = 16) -> list[str]:
    """Layer names shortened for small labels, still telling the layers apart.

    A name longer than ``max_length`` keeps its shortest tail of dotted components that no
    other name ends with and that does not start with a number (``"model.backbone.conv1"`` ->
    ``"…conv1"``, ``"model.layer1.0.conv1"`` -> ``"…layer1.0.conv1"``), marked with a leading
    ``"…"``; a label still longer than ``max_length`` loses middle characters (``"…"``).
    Names up to ``max_length`` come back unchanged.

    Args:
        names: qualified layer names.
        max_length: longest label wanted (at least 5).

    Returns:
        One label per name, in order.

    Examples:
        >>> short_names(["features.0", "backbone.layer1.0.conv1", "backbone.layer2.0.conv1"])
        ['features.0', '…layer1.0.conv1', '…layer2.0.conv1']
        >>> short_names(["encoder.blocks.11.attention.output.dense"])
        ['…dense']
    """
    max_length = max(5, int(max_length))
    parts = [name.split(".") for name in names]
    out: list[str] = []
    for name, components in zip(names, parts, strict=True):
        label = name
        for keep in range(1, len(components) if len(name) > max_length else 0):
            tail = components[-keep:]
            if tail[0].isdigit():
                continue  # "0.conv1" says less than "layer1.0.conv1"
            clashes = sum(1 for other in parts if other[-keep:] == tail)
            if clashes == 1:
                label = "…" + ".".join(tail)
                break
        if len(label) > max_length:
            head = (max_length - 1) // 2
            label = label[:head] + "…" + label[-(max_length - 1 - head) :]
            label = label.replace("……", "…")
        out.append(label)
    return out
