"""Read finished runs back as :class:`~lightning_srop.report.SROPReport` lists, one per epoch.

Three sources, detected by :func:`read_run`:

- **TensorBoard** event files (:func:`read_tensorboard`): what
  :class:`~lightning_srop.SROPCallback` logged, every layer a run of its own
  (``{prefix}/{NN}-{layer}``: scalars ``{prefix}/{stat}``, histograms
  ``{prefix}_histograms/per_map`` and ``.../per_sample_mean``), and flat tags written by other
  code (scalars ``{prefix}/{layer}/{stat}``, histograms ``{prefix}/{layer}`` and
  ``{prefix}/{layer}/per_sample_mean``); the tag scheme is :mod:`lightning_srop.tags`'s. The
  histograms hold the bins the callback logged: the fixed bins minus empty outer
  ones with ``histogram_bins=None``, else re-binned for display, exactly: every logged bin is a
  union of fixed bins. The callback's depth index (``{prefix}/{NN}-{layer}/{stat}``,
  ``ordered_tags=True``) is recognised and stripped when every layer of the run carries one.
  ``{prefix}/{layer}/change`` (``baseline=True``) goes to ``LayerReport.extra["change"]``.
  Statistics that were not logged as scalars are derived from the histograms where they can be
  (count exactly; mean and std from the histogram's sums, exact when the callback had them;
  min, max and quantiles to within half a logged bin, see :func:`~lightning_srop.transforms.histogram_statistics`).
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
- ``depth``: forward order, read from what the run recorded: the callback's depth index
  (TensorBoard's layer runs ``{prefix}/{NN}-{layer}``, or ``{NN}-{layer}`` tags with
  ``ordered_tags=True``) when every layer has one, else layer names sorted alphabetically. The
  callback writes no TensorBoard Custom Scalars layout; a run that holds one (written by other
  code or an earlier version) follows its charts' order, layers it does not name last, by name.
  CSVLogger sorts its columns alphabetically, which is forward order with the callback's
  ordered tags; otherwise pass ``order=`` to :func:`read_csv` to restore it (e.g.
  ``read_tensorboard(...)[0].names``);
- no ``options``, ``meta``, ``model``, ``label`` or batch count: loggers do not record them.

:func:`~lightning_srop.transforms.history` and :func:`~lightning_srop.transforms.to_csv`
(re-exported here) turn a run's reports into per-layer curves and one long table;
:func:`lightning_srop.plots.plot_over_epochs` draws them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from lightning_srop.report import LayerReport, SROPReport
from lightning_srop.statistics import STATISTICS
from lightning_srop.tags import (
    CHANGE,
    DEFAULT_PREFIX,
    PER_MAP_TAG,
    PER_SAMPLE_SUFFIX,
    histogram_key,
    layer_run_key,
    logger_prefix_splits,
    scalar_key,
    split_depth_label,
    with_logger_prefix,
)
from lightning_srop.transforms import common_grid, histogram_statistics, history, to_csv

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

PathLike = str | os.PathLike[str]
Version = int | str | None

_INSTALL_TENSORBOARD: Final[str] = "pip install tensorboard"


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


def _unlabel(keys: dict[Any, tuple[str, str]], *others: dict[Any, tuple[str, str]]) -> list[str]:
    """Strip the callback's depth index (``{NN}-{layer}``, ``ordered_tags=True``) from the
    layer part of every key, in place, when every layer label of the run carries one.

    Returns:
        The layer names in the order of their index; empty when the labels carry none.
    """
    labels = {layer for group in (keys, *others) for layer, _ in group.values()}
    split = {label: split_depth_label(label) for label in labels}
    if not labels or not all(split.values()):
        return []
    names = {label: parts[1] for label, parts in split.items() if parts is not None}
    for group in (keys, *others):
        for tag, (layer, what) in group.items():
            group[tag] = (names[layer], what)
    by_index = sorted(parts for parts in split.values() if parts is not None)
    return list(dict.fromkeys(name for _, name in by_index))


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
    chart); a tag's regular expression (``^{re.escape(tag)}$``, what earlier versions wrote) is
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
Keys = dict[Series, tuple[str, str]]  # series -> (layer label, statistic | histogram kind)


def _layer_runs(run_dir: Path, prefix: str) -> tuple[str, list[Path]]:
    """``(logger_prefix, folders)``: the layers' own runs of a TensorBoard run,
    ``{run_dir}/{prefix}/{NN}-{layer}``, sorted; ``prefix`` may start with the logger's own
    prefix (:func:`~lightning_srop.tags.logger_prefix_splits`), which the folder lacks."""
    for logger_prefix, callback_prefix in logger_prefix_splits(prefix):
        folder = run_dir / callback_prefix
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if p.is_dir() and _has_events(p))
            if found:
                return logger_prefix, found
    return "", []


def _load_events(accumulator_cls: Any, directory: Path) -> Any:
    """Every scalar, histogram and tensor (the layout) of one run; no images or audio."""
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


def _tensorboard_keys(
    accumulator: Any, layer_runs: Sequence[tuple[Any, str]], prefix: str
) -> tuple[Keys, Keys]:
    """The SROP scalars and histograms of a run (flat tags) and of its layers' own runs."""
    tags = accumulator.Tags()
    scalars: Keys = {
        (accumulator, t): key for t in tags.get("scalars", []) if (key := scalar_key(t, prefix))
    }
    hists: Keys = {
        (accumulator, t): key
        for t in tags.get("histograms", [])
        if (key := histogram_key(t, prefix))
    }
    for layer, label in layer_runs:
        layer_tags = layer.Tags()
        for t in [*layer_tags.get("scalars", []), *layer_tags.get("histograms", [])]:
            key = layer_run_key(t, prefix)
            if key is not None:
                (scalars if key[0] == "scalar" else hists)[layer, t] = (label, key[1])
    return scalars, hists


def _no_values(where: str, run_dir: Path, prefix: str, tags: Mapping[str, Any]) -> ValueError:
    scalars = sorted(tags.get("scalars", []))
    shown = ", ".join(scalars[:8]) or "none"
    return ValueError(
        f"{where}: no SROP values in {run_dir}: looked for scalars "
        f"'{prefix}/<layer>/<statistic>' (statistic one of {', '.join(STATISTICS)}) and "
        f"histograms '{prefix}/<layer>'; scalar tags there: "
        f"{shown}{' ...' if len(scalars) > 8 else ''}."
    )


def _measurements(events: Sequence[Any]) -> Iterable[tuple[Measurement, Any]]:
    """Each event with its measurement: ``(step, k)`` for the k-th event at its step."""
    seen: dict[int, int] = {}
    for event in events:
        k = seen.get(event.step, 0)
        seen[event.step] = k + 1
        yield (int(event.step), k), event


def _epoch_at(epochs: Mapping[int, list[float]], m: Measurement) -> int | None:
    """The epoch logged at a measurement's step: the one value, else the k-th."""
    step, k = m
    at_step = epochs.get(step, [])
    if not at_step:
        return None
    value = at_step[0] if len(set(at_step)) == 1 else at_step[min(k, len(at_step) - 1)]
    return round(value)


def read_tensorboard(
    logdir: PathLike, *, prefix: str = DEFAULT_PREFIX, version: Version = None
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
        _dirs_with(root, lambda d: _has_events(d) or bool(_layer_runs(d, prefix)[1])),
        version,
        where,
        f"TensorBoard event files ({EVENTS_PATTERN})",
    )
    accumulator_cls, layout_pb2 = _tensorboard_modules()
    accumulator = _load_events(accumulator_cls, run_dir)
    logger_prefix, folders = _layer_runs(run_dir, prefix)
    layer_runs = [(_load_events(accumulator_cls, folder), folder.name) for folder in folders]
    scalar_tags, hist_tags = _tensorboard_keys(accumulator, layer_runs, prefix)
    if not scalar_tags and not hist_tags:
        raise _no_values(where, run_dir, prefix, accumulator.Tags())
    layout_tags = {
        t: key for t in _layout_tags(accumulator, layout_pb2) if (key := scalar_key(t, prefix))
    }
    indexed = _unlabel(scalar_tags, hist_tags, layout_tags)
    # Forward order: the layout's, else the depth index of the tags, else by name.
    order = list(dict.fromkeys(layer for layer, _ in layout_tags.values())) or indexed
    rank = {name: i for i, name in enumerate(order)}

    stats: dict[Measurement, dict[str, dict[str, float]]] = {}
    hists: dict[Measurement, dict[str, dict[str, Any]]] = {}
    for (source, tag), (layer, stat) in scalar_tags.items():
        for m, event in _measurements(source.Scalars(tag)):
            stats.setdefault(m, {}).setdefault(layer, {})[stat] = float(event.value)
    for (source, tag), (layer, kind) in hist_tags.items():
        for m, event in _measurements(source.Histograms(tag)):
            hists.setdefault(m, {}).setdefault(layer, {})[kind] = event.histogram_value
    epochs: dict[int, list[float]] = {}
    epoch_tag = with_logger_prefix("epoch", logger_prefix)
    if epoch_tag in accumulator.Tags().get("scalars", []):
        for event in accumulator.Scalars(epoch_tag):
            epochs.setdefault(int(event.step), []).append(float(event.value))

    reports: list[SROPReport] = []
    for m in sorted(set(stats) | set(hists)):
        present = {*stats.get(m, {}), *hists.get(m, {})}
        names = sorted(present, key=lambda name: (rank.get(name, len(rank)), name))
        layers = [
            _layer_from_tensorboard(
                name, depth, stats.get(m, {}).get(name, {}), hists.get(m, {}).get(name, {})
            )
            for depth, name in enumerate(names)
        ]
        reports.append(SROPReport(layers=tuple(layers), epoch=_epoch_at(epochs, m), step=m[0]))
    return reports


def _histogram_arrays(value: Any) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(list(value.bucket), dtype=np.float64)
    edges = np.asarray([value.min, *value.bucket_limit], dtype=np.float64)
    return np.round(counts).astype(np.int64), edges


def _layer_from_tensorboard(
    name: str, depth: int, logged: Mapping[str, float], hists: Mapping[str, Any]
) -> LayerReport:
    srop = hists.get(PER_MAP_TAG)
    sample = hists.get(PER_SAMPLE_SUFFIX)
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    srop_counts, srop_edges = _histogram_arrays(srop) if srop is not None else none
    sample_counts, sample_edges = _histogram_arrays(sample) if sample is not None else none
    edges, (counts, per_sample) = common_grid(
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
    prefix: str = DEFAULT_PREFIX,
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
    keys = {c: key for c in columns if (key := scalar_key(c, prefix))}
    _unlabel(keys)
    if not keys:
        raise ValueError(
            f"{where}: no SROP columns in {target}: looked for '{prefix}/<layer>/<statistic>' "
            f"(statistic one of {', '.join(STATISTICS)}); columns: {', '.join(columns) or 'none'}."
        )
    # A logger's own `prefix` argument is in front of its `epoch` column too.
    epoch_columns = [with_logger_prefix("epoch", lp) for lp, _ in logger_prefix_splits(prefix)]
    epoch_column = next((c for c in epoch_columns if c in columns), "epoch")
    names = list(dict.fromkeys(layer for layer, _ in keys.values()))
    if order is not None:
        names = [n for n in order if n in names] + [n for n in names if n not in order]
    reports = [_csv_report(row, keys, names, epoch_column) for row in rows]
    return [report for report in reports if report is not None]


def _csv_report(
    row: Mapping[str, str | None],
    keys: Mapping[str, tuple[str, str]],
    names: Sequence[str],
    epoch_column: str,
) -> SROPReport | None:
    """The report of one ``metrics.csv`` row (scalars only), None for a row without SROPs."""
    values: dict[str, dict[str, float]] = {}
    for column, (layer, stat) in keys.items():
        cell = (row.get(column) or "").strip()
        if cell:
            values.setdefault(layer, {})[stat] = float(cell)
    if not values:
        return None
    layers = []
    for depth, name in enumerate(n for n in names if n in values):
        edges, counts, sample_counts = _empty_histogram()
        logged = values[name]
        stats = {s: logged.get(s, math.nan) for s in STATISTICS}
        extra = {CHANGE: logged[CHANGE]} if CHANGE in logged else {}
        layers.append(
            LayerReport(name, stats, edges, counts, sample_counts, depth=depth, extra=extra)
        )
    return SROPReport(
        layers=tuple(layers),
        epoch=_int_cell(row.get(epoch_column)),
        step=_int_cell(row.get("step")),
    )


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


def read_run(
    path: PathLike, *, prefix: str = DEFAULT_PREFIX, version: Version = None
) -> list[SROPReport]:
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
