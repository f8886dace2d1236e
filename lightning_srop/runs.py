"""Read finished runs back as :class:`~lightning_srop.report.SROPReport` lists, one per epoch.

Three sources, detected by :func:`read_run`:

- **TensorBoard** event files (:func:`read_tensorboard`): the scalars ``{prefix}/{layer}/{stat}``
  that :class:`~lightning_srop.SROPCallback` logged, and its histograms ``{prefix}/{layer}`` and
  ``{prefix}/{layer}/per_sample_mean`` (the bins it logged: the fixed bins minus empty outer
  ones with ``histogram_bins=None``, else re-binned for display, exactly: every logged bin is a
  union of fixed bins). The callback's depth index (``{prefix}/{NN}-{layer}/{stat}``,
  ``ordered_tags=True``) is recognised and stripped when every layer of the run carries one.
  ``{prefix}/{layer}/change`` (``baseline=True``) goes to ``LayerReport.extra["change"]``.
  Statistics that were not logged as scalars are derived from the histograms where they can be
  (count exactly; mean and std from the histogram's sums, exact when the callback had them;
  min, max and quantiles to within half a logged bin, see :func:`histogram_statistics`).
- **CSVLogger** ``metrics.csv`` (:func:`read_csv`): scalars only, no histograms.
- **Report JSON** files written by :meth:`SROPReport.to_json` (:func:`read_reports`): exact.

What a report read from a logger holds:

- ``epoch`` from Lightning's ``epoch`` value logged at the same step, ``step`` the logging step;
- every statistic of :data:`~lightning_srop.statistics.STATISTICS`; NaN where not logged and
  not derivable;
- ``edges``/``counts``/``sample_counts``: the logged bins, both histograms on one common grid
  (the union of their bins; a gap between them is filled with empty bins of the same width).
  Without a histogram (CSV, a layer without valid maps, ``log_histograms=False``) all three are
  zero-length arrays;
- ``depth``: forward order, read from what the run recorded: the TensorBoard Custom Scalars
  layout the callback writes (its charts list every layer in forward order). A run without one
  (written by other code) follows a plain rule: the
  callback's depth index (``{NN}-{layer}`` tags, ``ordered_tags=True``) when every layer has
  one, else layer names sorted alphabetically; layers the layout does not name follow, sorted
  by name. CSVLogger sorts its columns alphabetically, which is forward order with the
  callback's ordered tags; otherwise pass ``order=`` to :func:`read_csv` to restore it (e.g.
  ``read_tensorboard(...)[0].names``);
- no ``options``, ``meta``, ``model``, ``label`` or batch count: loggers do not record them.

:func:`history` and :func:`to_csv` turn a run's reports into per-layer curves and one long table;
:func:`lightning_srop.plots.plot_over_epochs` draws them.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from lightning_srop.report import (
    CHANGE,
    HISTOGRAMS_GROUP,
    PER_MAP_TAG,
    PER_SAMPLE_SUFFIX,
    LayerReport,
    SROPReport,
    aligned_names,
    write_csv,
)
from lightning_srop.statistics import QUANTILES, STATISTICS, histogram_quantile

__all__ = [
    "EVENTS_PATTERN",
    "METRICS_FILE",
    "histogram_statistics",
    "history",
    "read_csv",
    "read_reports",
    "read_run",
    "read_tensorboard",
    "to_csv",
]

#: File names of TensorBoard event files.
EVENTS_PATTERN: Final[str] = "events.out.tfevents.*"

#: The file a ``CSVLogger`` writes its metrics to.
METRICS_FILE: Final[str] = "metrics.csv"

#: The tag under which TensorBoard stores a Custom Scalars layout.
LAYOUT_TAG: Final[str] = "custom_scalars__config__"

#: Columns of :func:`to_csv` before the statistics.
RUN_CSV_LEAD: Final[tuple[str, ...]] = ("epoch", "step", "depth", "layer")

PathLike = str | os.PathLike[str]
Version = int | str | None

_INSTALL_TENSORBOARD: Final[str] = "pip install tensorboard"


# ------------------------------------------------------------------------------------------
# Histograms
# ------------------------------------------------------------------------------------------


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


def _common_grid(
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


def _empty_histogram() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros(0, dtype=np.float64),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
    )


# ------------------------------------------------------------------------------------------
# Finding runs
# ------------------------------------------------------------------------------------------


def _existing(path: PathLike, where: str) -> Path:
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"{where}: no such file or directory: {target}")
    return target


def _has_events(directory: Path) -> bool:
    return any(p.is_file() for p in directory.glob(EVENTS_PATTERN))


def _dirs_with(root: Path, has: Callable[[Path], bool]) -> list[Path]:
    """``root`` if it qualifies, else every directory below it that does, sorted."""
    if has(root):
        return [root]
    found: list[Path] = []
    for current, dirs, _ in os.walk(root):
        dirs.sort()
        path = Path(current)
        if path != root and has(path):
            found.append(path)
            dirs[:] = []  # a run's own subfolders belong to it
    return found


def _choose(root: Path, candidates: list[Path], version: Version, where: str, what: str) -> Path:
    """One run directory among ``candidates``, by ``version`` when there are several."""
    if version is not None:
        wanted = f"version_{version}" if isinstance(version, int) else str(version)
        matches = [
            c
            for c in candidates
            if c.name == wanted or c.relative_to(root).as_posix() == wanted.strip("/")
        ]
        if len(matches) != 1:
            listed = ", ".join(c.relative_to(root).as_posix() or "." for c in candidates)
            raise ValueError(
                f"{where}: `version`={version!r} matches {len(matches)} of the runs with {what} "
                f"under {root}; runs: {listed or 'none'}."
            )
        return matches[0]
    if not candidates:
        raise FileNotFoundError(f"{where}: no {what} in {root} or below it.")
    if len(candidates) > 1:
        listed = ", ".join(c.relative_to(root).as_posix() for c in candidates)
        raise ValueError(
            f"{where}: {root} holds {len(candidates)} runs with {what}: {listed}; pass "
            "`version=` (an int for `version_<n>`, or the folder's name or relative path) or "
            "the run's own folder."
        )
    return candidates[0]


# ------------------------------------------------------------------------------------------
# Layer order
# ------------------------------------------------------------------------------------------


def _tag_rest(tag: str, prefix: str) -> str | None:
    """``rest`` of ``{prefix}/{rest}``, None for other tags."""
    head = prefix + "/"
    return tag[len(head) :] if tag.startswith(head) and len(tag) > len(head) else None


def _scalar_key(tag: str, prefix: str) -> tuple[str, str] | None:
    """``(layer, statistic)`` of a scalar ``{prefix}/{layer}/{statistic}`` (statistic one of
    :data:`~lightning_srop.statistics.STATISTICS` or ``change``)."""
    rest = _tag_rest(tag, prefix)
    if rest is None:
        return None
    layer, _, stat = rest.rpartition("/")
    return (layer, stat) if layer and (stat in STATISTICS or stat == CHANGE) else None


_ORDERED_LABEL: Final[re.Pattern[str]] = re.compile(r"^(\d+)-(.+)$")


def _unlabel(keys: dict[Any, tuple[str, str]], *others: dict[Any, tuple[str, str]]) -> list[str]:
    """Strip the callback's depth index (``{NN}-{layer}``, ``ordered_tags=True``) from the
    layer part of every key, in place, when every layer label of the run carries one.

    Returns:
        The layer names in the order of their index; empty when the labels carry none.
    """
    labels = {layer for group in (keys, *others) for layer, _ in group.values()}
    matches = {label: _ORDERED_LABEL.match(label) for label in labels}
    if not labels or not all(matches.values()):
        return []
    names = {label: match.group(2) for label, match in matches.items() if match is not None}
    for group in (keys, *others):
        for tag, (layer, what) in group.items():
            group[tag] = (names[layer], what)
    by_index = sorted((int(m.group(1)), m.group(2)) for m in matches.values() if m is not None)
    return list(dict.fromkeys(name for _, name in by_index))


def _histogram_key(tag: str, prefix: str) -> tuple[str, str] | None:
    """``(layer, "srop" | "sample")`` of a histogram ``{prefix}/{layer}[/per_sample_mean]``."""
    rest = _tag_rest(tag, prefix)
    if rest is None:
        return None
    suffix = "/" + PER_SAMPLE_SUFFIX
    if rest.endswith(suffix) and len(rest) > len(suffix):
        return rest[: -len(suffix)], "sample"
    return rest, "srop"


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------


def _tensorboard_modules() -> tuple[Any, Any]:
    """``(EventAccumulator, layout_pb2)``, imported lazily (an optional dependency)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.plugins.custom_scalar import layout_pb2
    except ImportError as err:
        raise ImportError(
            f"reading TensorBoard logs needs the `tensorboard` package (`{_INSTALL_TENSORBOARD}`)"
            f"; read_csv and read_reports work without it ({err})."
        ) from err
    return EventAccumulator, layout_pb2


def _layout_tags(accumulator: Any, layout_pb2: Any) -> list[str]:
    """Every tag of the run's Custom Scalars layouts, in chart order (layer order within each
    chart); a tag's regular expression (``^{re.escape(tag)}$``, what the callback writes) is
    turned back into the tag."""
    if LAYOUT_TAG not in accumulator.Tags().get("tensors", []):
        return []
    tags: list[str] = []
    for event in accumulator.Tensors(LAYOUT_TAG):
        layout = layout_pb2.Layout()
        for value in event.tensor_proto.string_val:
            layout.ParseFromString(value)
            for category in layout.category:
                for chart in category.chart:
                    for pattern in chart.multiline.tag:
                        body = pattern.removeprefix("^").removesuffix("$")
                        tags.append(re.sub(r"\\(.)", r"\1", body))
    return list(dict.fromkeys(tags))


Measurement = tuple[int, int]  # (step, k-th measurement at that step)
Series = tuple[Any, str]  # (EventAccumulator, tag)

#: The histograms of a layer's own run, ``{prefix}_histograms/{tag}``, by kind.
_LAYER_HISTOGRAMS: Final[dict[str, str]] = {PER_MAP_TAG: "srop", PER_SAMPLE_SUFFIX: "sample"}


def _layer_runs(run_dir: Path, prefix: str) -> list[Path]:
    """The layers' own runs of a TensorBoard run, ``{run_dir}/{prefix}/{NN}-{layer}``, sorted."""
    folder = run_dir / prefix
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _has_events(p))


def read_tensorboard(
    logdir: PathLike, *, prefix: str = "srop", version: Version = None
) -> list[SROPReport]:
    """The SROP reports of a TensorBoard run, one per measured epoch, ordered by step.

    See the module docstring for what the reports hold (statistics, histograms, forward order).
    A Lightning ``TensorBoardLogger``'s own ``prefix`` argument puts ``"{logger_prefix}-"``
    before every tag: pass ``prefix="{logger_prefix}-srop"`` then.

    Args:
        logdir: the run's folder (``.../version_0``, holding ``events.out.tfevents.*``), or a
            folder above it holding exactly one run (else choose with ``version``).
        prefix: the callback's ``prefix``.
        version: which run when ``logdir`` holds several: an int for ``version_<n>``, or the
            run folder's name or path relative to ``logdir``.

    Returns:
        One :class:`~lightning_srop.report.SROPReport` per measurement (several measurements
        at one step, e.g. ``fit`` then ``validate``, come in the order they were written).

    Raises:
        FileNotFoundError: ``logdir`` does not exist or holds no event files.
        ValueError: several runs and no (or an unmatched) ``version``, or no SROP values.
        ImportError: ``tensorboard`` is not installed.
    """
    where = "read_tensorboard"
    root = _existing(logdir, where)
    if root.is_file():
        root = root.parent
    run_dir = _choose(
        root,
        _dirs_with(root, lambda d: _has_events(d) or bool(_layer_runs(d, prefix))),
        version,
        where,
        f"TensorBoard event files ({EVENTS_PATTERN})",
    )
    accumulator_cls, layout_pb2 = _tensorboard_modules()

    def load(directory: Path) -> Any:
        # Keep every scalar, histogram and tensor (the layout); images and audio are not read.
        accumulator = accumulator_cls(
            str(directory),
            size_guidance={
                "scalars": 0,
                "histograms": 0,
                "tensors": 0,
                "distributions": 1,
                "images": 1,
                "audio": 1,
            },
        )
        accumulator.Reload()
        return accumulator

    accumulator = load(run_dir)
    tags = accumulator.Tags()
    # Series: (accumulator, tag) -> (layer label, statistic | "srop" | "sample").
    scalar_tags: dict[Series, tuple[str, str]] = {
        (accumulator, t): key for t in tags.get("scalars", []) if (key := _scalar_key(t, prefix))
    }
    hist_tags: dict[Series, tuple[str, str]] = {
        (accumulator, t): key
        for t in tags.get("histograms", [])
        if (key := _histogram_key(t, prefix))
    }
    for layer_dir in _layer_runs(run_dir, prefix):
        layer = load(layer_dir)
        layer_tags = layer.Tags()
        for t in layer_tags.get("scalars", []):
            stat = _tag_rest(t, prefix)
            if stat in STATISTICS or stat == CHANGE:
                scalar_tags[layer, t] = (layer_dir.name, str(stat))
        for t in layer_tags.get("histograms", []):
            kind = _LAYER_HISTOGRAMS.get(_tag_rest(t, prefix + HISTOGRAMS_GROUP) or "")
            if kind is not None:
                hist_tags[layer, t] = (layer_dir.name, kind)
    if not scalar_tags and not hist_tags:
        shown = sorted(tags.get("scalars", []))[:8]
        raise ValueError(
            f"{where}: no SROP values in {run_dir}: looked for scalars "
            f"'{prefix}/<layer>/<statistic>' (statistic one of {', '.join(STATISTICS)}) and "
            f"histograms '{prefix}/<layer>'; scalar tags there: "
            f"{', '.join(shown) or 'none'}{' ...' if len(tags.get('scalars', [])) > 8 else ''}."
        )
    layout_tags = {
        t: key for t in _layout_tags(accumulator, layout_pb2) if (key := _scalar_key(t, prefix))
    }
    indexed = _unlabel(scalar_tags, hist_tags, layout_tags)
    # Forward order: the layout's, else the depth index of the tags, else by name.
    order = list(dict.fromkeys(layer for layer, _ in layout_tags.values())) or indexed
    rank = {name: i for i, name in enumerate(order)}

    stats: dict[Measurement, dict[str, dict[str, float]]] = {}
    hists: dict[Measurement, dict[str, dict[str, Any]]] = {}

    def measurements(events: Sequence[Any]) -> Iterable[tuple[Measurement, Any]]:
        seen: dict[int, int] = {}
        for event in events:
            k = seen.get(event.step, 0)
            seen[event.step] = k + 1
            yield (int(event.step), k), event

    for (source, tag), (layer, stat) in scalar_tags.items():
        for m, event in measurements(source.Scalars(tag)):
            stats.setdefault(m, {}).setdefault(layer, {})[stat] = float(event.value)
    for (source, tag), (layer, kind) in hist_tags.items():
        for m, event in measurements(source.Histograms(tag)):
            hists.setdefault(m, {}).setdefault(layer, {})[kind] = event.histogram_value

    epochs: dict[int, list[float]] = {}
    if "epoch" in tags.get("scalars", []):
        for event in accumulator.Scalars("epoch"):
            epochs.setdefault(int(event.step), []).append(float(event.value))

    reports: list[SROPReport] = []
    for m in sorted(set(stats) | set(hists)):
        step, k = m
        present = {*stats.get(m, {}), *hists.get(m, {})}
        names = sorted(present, key=lambda name: (rank.get(name, len(rank)), name))
        layers = []
        for depth, name in enumerate(names):
            logged = stats.get(m, {}).get(name, {})
            layer_hists = hists.get(m, {}).get(name, {})
            layers.append(_layer_from_tensorboard(name, depth, logged, layer_hists))
        at_step = epochs.get(step, [])
        epoch: int | None = None
        if at_step:
            # One value (the usual case), else the k-th logged at this step.
            value = at_step[0] if len(set(at_step)) == 1 else at_step[min(k, len(at_step) - 1)]
            epoch = round(value)
        reports.append(SROPReport(layers=tuple(layers), epoch=epoch, step=step))
    return reports


def _histogram_arrays(value: Any) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(list(value.bucket), dtype=np.float64)
    edges = np.asarray([value.min, *value.bucket_limit], dtype=np.float64)
    return np.round(counts).astype(np.int64), edges


def _layer_from_tensorboard(
    name: str, depth: int, logged: Mapping[str, float], hists: Mapping[str, Any]
) -> LayerReport:
    srop = hists.get("srop")
    sample = hists.get("sample")
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    srop_counts, srop_edges = _histogram_arrays(srop) if srop is not None else none
    sample_counts, sample_edges = _histogram_arrays(sample) if sample is not None else none
    edges, (counts, per_sample) = _common_grid(
        [(srop_counts, srop_edges), (sample_counts, sample_edges)]
    )
    derived: dict[str, float] = {}
    if srop is not None:
        derived = histogram_statistics(
            srop_counts, srop_edges, total=float(srop.sum), total_squares=float(srop.sum_squares)
        )
    if sample is not None:
        sample_stats = histogram_statistics(sample_counts, sample_edges)
        derived["sample_mean"] = sample_stats["mean"]
        derived["sample_std"] = sample_stats["std"]
    stats = {
        key: float(logged[key]) if key in logged else derived.get(key, math.nan)
        for key in STATISTICS
    }
    return LayerReport(
        name=name,
        stats=stats,
        edges=edges,
        counts=counts,
        sample_counts=per_sample,
        depth=depth,
        extra={CHANGE: float(logged[CHANGE])} if CHANGE in logged else {},
    )


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def _has_metrics(directory: Path) -> bool:
    return (directory / METRICS_FILE).is_file()


def read_csv(
    path: PathLike,
    *,
    prefix: str = "srop",
    version: Version = None,
    order: Sequence[str] | None = None,
) -> list[SROPReport]:
    """The SROP reports of a ``CSVLogger`` run, one per row holding SROP values.

    Scalars only: the histograms are zero-length arrays (``edges``, ``counts`` and
    ``sample_counts`` of shape ``(0,)``), statistics that were not logged are NaN. ``epoch`` and
    ``step`` come from the table's ``epoch`` and ``step`` columns.

    ``CSVLogger`` sorts its columns alphabetically, so without ``order`` the layers' ``depth``
    is their column order, which is forward order only when the names sort that way.

    Args:
        path: a ``metrics.csv``, the run's folder holding it, or a folder above holding one run
            (else choose with ``version``, as for :func:`read_tensorboard`).
        prefix: the callback's ``prefix``.
        version: which run when ``path`` holds several.
        order: layer names in forward order (e.g. from a TensorBoard read or a report JSON);
            layers it does not name follow in column order.

    Returns:
        One :class:`~lightning_srop.report.SROPReport` per row with SROP values, in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no ``metrics.csv``.
        ValueError: several runs and no (or an unmatched) ``version``, or no SROP columns.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "metrics.csv").write_text(
        ...     "epoch,srop/conv/mean,srop/pool/mean,step,train_loss\\n"
        ...     "0,,,3,0.9\\n0,0.25,0.125,3,\\n1,0.2,0.1,7,\\n")
        >>> reports = read_csv(folder, order=["pool", "conv"])
        >>> [(r.epoch, r.step, r.names, r["conv"].stats["mean"]) for r in reports]
        [(0, 3, ['pool', 'conv'], 0.25), (1, 7, ['pool', 'conv'], 0.2)]
    """
    where = "read_csv"
    target = _existing(path, where)
    if target.is_dir():
        run_dir = _choose(
            target, _dirs_with(target, _has_metrics), version, where, f"a {METRICS_FILE}"
        )
        target = run_dir / METRICS_FILE
    with target.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    keys = {c: key for c in columns if (key := _scalar_key(c, prefix))}
    _unlabel(keys)
    if not keys:
        raise ValueError(
            f"{where}: no SROP columns in {target}: looked for '{prefix}/<layer>/<statistic>' "
            f"(statistic one of {', '.join(STATISTICS)}); columns: {', '.join(columns) or 'none'}."
        )
    names = list(dict.fromkeys(layer for layer, _ in keys.values()))
    if order is not None:
        names = [n for n in order if n in names] + [n for n in names if n not in order]
    reports: list[SROPReport] = []
    for row in rows:
        values: dict[str, dict[str, float]] = {}
        for column, (layer, stat) in keys.items():
            cell = (row.get(column) or "").strip()
            if cell:
                values.setdefault(layer, {})[stat] = float(cell)
        if not values:
            continue
        layers = []
        for depth, name in enumerate(n for n in names if n in values):
            edges, counts, sample_counts = _empty_histogram()
            logged = values[name]
            stats = {s: logged.get(s, math.nan) for s in STATISTICS}
            extra = {CHANGE: logged[CHANGE]} if CHANGE in logged else {}
            layers.append(
                LayerReport(name, stats, edges, counts, sample_counts, depth=depth, extra=extra)
            )
        reports.append(
            SROPReport(
                layers=tuple(layers),
                epoch=_int_cell(row.get("epoch")),
                step=_int_cell(row.get("step")),
            )
        )
    return reports


def _int_cell(cell: str | None) -> int | None:
    text = (cell or "").strip()
    return round(float(text)) if text else None


# ------------------------------------------------------------------------------------------
# Report JSON files
# ------------------------------------------------------------------------------------------


def _report_data(path: Path) -> dict[str, Any] | None:
    """The parsed JSON of ``path`` when it is a report file (an object with ``"format"`` and
    ``"layers"``), else None; unreadable JSON raises, naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"read_reports: cannot read {path} ({err}).") from err
    if isinstance(data, dict) and "format" in data and "layers" in data:
        return data
    return None


def _by_epoch(report: SROPReport) -> tuple[bool, int, bool, int]:
    return (
        report.epoch is None,
        report.epoch or 0,
        report.step is None,
        report.step or 0,
    )


def read_reports(directory: PathLike) -> list[SROPReport]:
    """Every report JSON file (written by :meth:`SROPReport.to_json`) in ``directory``.

    Other JSON files (configs, ...) are left alone: a report file is a JSON object with
    ``"format"`` and ``"layers"`` keys.

    Args:
        directory: a folder of ``*.json`` files (not searched recursively).

    Returns:
        The reports, sorted by epoch, then step (reports without an epoch last), then file name.

    Raises:
        FileNotFoundError: ``directory`` does not exist or holds no report JSON file.
        ValueError: a report file that cannot be read (its path is named).
    """
    where = "read_reports"
    folder = _existing(directory, where)
    if not folder.is_dir():
        raise ValueError(f"{where}: expected a directory, got the file {folder}.")
    reports: list[SROPReport] = []
    for path in sorted(folder.glob("*.json")):
        data = _report_data(path)
        if data is None:
            continue
        try:
            reports.append(SROPReport.from_dict(data))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: {path} is not a readable report ({err}).") from err
    if not reports:
        raise FileNotFoundError(
            f"{where}: no report JSON files in {folder}: looked for *.json files written by "
            "SROPReport.to_json (objects with 'format' and 'layers')."
        )
    return sorted(reports, key=_by_epoch)


# ------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------


def _has_report_json(directory: Path) -> bool:
    for path in directory.glob("*.json"):
        try:
            if path.is_file() and _report_data(path) is not None:
                return True
        except ValueError:  # unreadable JSON is not a report; read_reports names it
            continue
    return False


def read_run(path: PathLike, *, prefix: str = "srop", version: Version = None) -> list[SROPReport]:
    """The SROP reports of a finished run, whatever wrote it.

    Detection, first match wins:

    1. a ``.json`` file: one report (:meth:`SROPReport.from_json`);
    2. a ``.csv`` file: :func:`read_csv`; an ``events.out.tfevents.*`` file: its folder with
       :func:`read_tensorboard`;
    3. a folder with report JSON files in it: :func:`read_reports`;
    4. a folder with TensorBoard event files in it or below it: :func:`read_tensorboard`
       (TensorBoard has histograms, so it wins over a ``metrics.csv`` of the same run);
    5. a folder with a ``metrics.csv`` in it or below it: :func:`read_csv`.

    Args:
        path: a file or folder, as above.
        prefix: the callback's ``prefix`` (for logger output).
        version: which run when a folder holds several (see :func:`read_tensorboard`).

    Returns:
        The run's reports (one per measured epoch).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: nothing SROP-like at ``path`` (the message says what was looked for), or
            what the chosen reader raises.
    """
    where = "read_run"
    target = _existing(path, where)
    if target.is_file():
        if target.suffix.lower() == ".json":
            return [SROPReport.from_json(target)]
        if target.suffix.lower() == ".csv":
            return read_csv(target, prefix=prefix)
        if target.name.startswith("events.out.tfevents."):
            return read_tensorboard(target.parent, prefix=prefix)
        raise ValueError(
            f"{where}: cannot read {target}: expected a report .json, a CSVLogger .csv or a "
            f"TensorBoard {EVENTS_PATTERN} file, or a folder holding them."
        )
    if _has_report_json(target):
        return read_reports(target)
    if _dirs_with(target, _has_events):
        return read_tensorboard(target, prefix=prefix, version=version)
    if _dirs_with(target, _has_metrics):
        return read_csv(target, prefix=prefix, version=version)
    raise ValueError(
        f"{where}: nothing SROP-like in {target}: looked for report JSON files (*.json written "
        f"by SROPReport.to_json) in it, and TensorBoard event files ({EVENTS_PATTERN}) or a "
        f"CSVLogger {METRICS_FILE} in it or below it."
    )


# ------------------------------------------------------------------------------------------
# Curves and tables
# ------------------------------------------------------------------------------------------


def history(
    reports: Sequence[SROPReport], statistic: str = "mean"
) -> dict[str, list[tuple[int, float]]]:
    """Each layer's ``statistic`` over a run: ``{layer: [(epoch, value), ...]}``.

    Layers come in forward order (by ``depth``; a layer only later reports have follows its
    predecessor there); points in the reports' order. A report without an epoch uses its
    index in ``reports``. A layer missing from a report has no point there.

    Args:
        reports: one run's reports, e.g. from :func:`read_run`.
        statistic: a key of :data:`~lightning_srop.statistics.STATISTICS`, or of the layers'
            ``extra`` values.

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
    if statistic not in known:
        raise ValueError(
            f"history: unknown statistic {statistic!r}; valid choices: {', '.join(STATISTICS)} "
            "(or a key of the layers' `extra` values)."
        )
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in aligned_names(reports)}
    for index, report in enumerate(reports):
        epoch = index if report.epoch is None else int(report.epoch)
        for layer in report.layers:
            value = layer.stats.get(statistic, layer.extra.get(statistic, math.nan))
            curves[layer.name].append((epoch, float(value)))
    return curves


def to_csv(reports: Sequence[SROPReport], path: PathLike | None = None) -> str:
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
