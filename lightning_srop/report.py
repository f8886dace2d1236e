"""Plain, picklable SROP results: what loggers, plots, files and the command line consume.

- :class:`LayerReport`: one layer's statistics and histograms (and :class:`LayerMeta`: its
  module type, channels, map size and downscaling).
- :class:`SROPReport`: every layer of one measurement (a ``profile`` call or one validation
  epoch of the callback) with the options used; saved and loaded as JSON (exact round trip,
  histograms included), written as CSV, shown as a table, turned into a pandas DataFrame.
- The one CSV writer (:func:`write_csv`) and text table (:func:`format_table`) of the
  package; the names of logged values (:data:`CHANGE`, ...) come from
  :mod:`lightning_srop.tags`, the tag scheme, and are re-exported here.

No torch state is kept: reports pickle, travel between processes and load without a model.
This module imports no consumer: drawing lives in :mod:`lightning_srop.plots`
(``plot_reports([report])``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import numpy as np
import torch

from lightning_srop.statistics import STATISTICS, SROPStatistics
from lightning_srop.tags import CHANGE, HISTOGRAMS_GROUP, PER_MAP_TAG, PER_SAMPLE_SUFFIX

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped]

__all__ = [
    "CHANGE",
    "CSV_NAN",
    "HISTOGRAMS_GROUP",
    "PER_MAP_TAG",
    "PER_SAMPLE_SUFFIX",
    "LayerMeta",
    "LayerReport",
    "SROPReport",
    "aligned_names",
    "format_table",
    "write_csv",
]

#: Version of the JSON layout written by :meth:`SROPReport.to_json`.
REPORT_FORMAT: Final[int] = 1

#: How :func:`write_csv` writes a NaN cell (``float()``, pandas and spreadsheets read it back as
#: NaN; an empty cell stays for "no value", e.g. an unknown epoch).
CSV_NAN: Final[str] = "nan"


def _csv_cell(value: Any) -> Any:
    """A float NaN as :data:`CSV_NAN`; anything else as the ``csv`` module writes it."""
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return CSV_NAN
    return value


def write_csv(
    path_or_file: str | os.PathLike[str] | IO[str] | None,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: Sequence[str],
) -> str:
    """The package's one CSV writer: a header of ``columns``, then one line per row.

    A row is a mapping (cells looked up by column, missing ones empty) or a sequence of cells in
    column order. Floats are written at full precision (``repr``; NaN as :data:`CSV_NAN`,
    ``nan``, in every CSV the package writes), lines end with a newline (``"\\n"``).

    Args:
        path_or_file: a path to write the text to, an open text file to write it into, or
            ``None`` (only return it).
        rows: the rows.
        columns: the header, and the order of a mapping row's cells.

    Returns:
        The CSV text.

    Examples:
        >>> print(write_csv(None, [{"layer": "conv", "mean": 0.25}, ["pool", float("nan")]],
        ...                 ["layer", "mean", "note"]), end="")
        layer,mean,note
        conv,0.25,
        pool,nan
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = [row.get(column, "") for column in columns] if isinstance(row, Mapping) else row
        writer.writerow([_csv_cell(cell) for cell in cells])
    text = buffer.getvalue()
    if path_or_file is None:
        pass
    elif isinstance(path_or_file, (str, os.PathLike)):
        Path(path_or_file).write_text(text)
    else:
        path_or_file.write(text)
    return text


def format_table(rows: Iterable[Sequence[str]], columns: Sequence[str], *, left: int = 1) -> str:
    """The package's one fixed-width text table: ``columns`` as header, cells as given.

    Args:
        rows: the rows, each a sequence of already formatted cells in column order.
        columns: the header.
        left: how many leading columns are left-aligned (names); the rest are right-aligned
            (numbers).

    Returns:
        The table, lines joined with newlines (``"\\n"``; no trailing newline).

    Examples:
        >>> print(format_table([["conv", "0.25"], ["pool", "0.125"]], ["layer", "mean"]))
        layer   mean
        conv    0.25
        pool   0.125
    """
    lines = [list(columns), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


@dataclass(frozen=True)
class LayerMeta:
    """What a layer's first measured output looked like.

    Attributes:
        module_type: the module's class name.
        ndim: 2 for maps, 1 for signals.
        channels: maps per sample (every dim between the batch and the map dims).
        map_size: the map's ``(H, W)`` or ``(L,)``.
        downscale: total downscaling from the input (input size / map size, geometric mean
            over the axes), when the input's size was known.
        layout: how the output was read: ``"NCHW"``, ``"NHWC"``, ``"NCL"``, ``"NLC"`` or
            ``"tokens"`` (see :mod:`lightning_srop.layouts`).
        source: where the maps lay in the output: ``""`` (the output itself), ``"[0]"`` (the
            first item of a tuple) or ``"['last_hidden_state']"`` (a mapping's first value).
        prefix_tokens: tokens left out before the grid (``layout="tokens"``).
        inferred: what the reading was inferred from; ``""`` when it was given or fixed by
            the module's type.
    """

    module_type: str
    ndim: int
    channels: int
    map_size: tuple[int, ...]
    downscale: float | None
    layout: str
    source: str = ""
    prefix_tokens: int = 0
    inferred: str = ""


@dataclass(frozen=True)
class LayerReport:
    """Computed SROP statistics of one layer, detached from any device or process group.

    Attributes:
        name: the layer's clean qualified name, e.g. ``"features.0"`` or ``"layer1.0.conv1"``.
        stats: every statistic of :data:`~lightning_srop.statistics.STATISTICS` as a float.
        edges: float64 histogram edges, shape ``(num_bins + 1,)``.
        counts: int64 counts of SROPs per bin, shape ``(num_bins,)``.
        sample_counts: int64 counts of per-sample mean SROPs per bin, shape ``(num_bins,)``.
        depth: position of the layer in forward order (0 = first layer that ran).
        extra: further named values (e.g. the change since a baseline).
        meta: what the layer's output looked like (None when unknown, e.g. read from scalars).
    """

    name: str
    stats: dict[str, float]
    edges: np.ndarray
    counts: np.ndarray
    sample_counts: np.ndarray
    depth: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    meta: LayerMeta | None = None

    @classmethod
    def from_metric(
        cls, name: str, metric: SROPStatistics, depth: int = 0, *, meta: LayerMeta | None = None
    ) -> LayerReport:
        """Sync ``metric`` across processes (when distributed), compute and summarize it.

        Every process of the group must call this (it is a collective when distributed); every
        process gets the same merged report. The metric's own states stay local afterwards.

        Examples:
            >>> import torch
            >>> m = SROPStatistics(num_bins=8)
            >>> m.update(torch.randn(2, 3, 8, 8))
            >>> r = LayerReport.from_metric("conv", m)
            >>> r.name, int(r.stats["count"]), r.edges.shape, int(r.counts.sum())
            ('conv', 6, (9,), 6)
        """
        with metric.sync_context(should_sync=metric.sync_on_compute, should_unsync=True):
            # The class's compute, not the instance's wrapper, which would sync a second time.
            computed = type(metric).compute(metric)
            # One device-to-host copy for everything (statistics and both histograms).
            packed = (
                torch.cat(
                    [
                        torch.stack([computed[key] for key in STATISTICS]),
                        metric.hist.to(torch.float64),
                        metric.sample_hist.to(torch.float64),
                    ]
                )
                .cpu()
                .numpy()
            )
        n_stats, n_bins = len(STATISTICS), metric.num_bins
        stats = {key: float(value) for key, value in zip(STATISTICS, packed[:n_stats], strict=True)}
        counts = packed[n_stats : n_stats + n_bins].astype(np.int64)
        sample_counts = packed[n_stats + n_bins :].astype(np.int64)
        return cls(
            name=name,
            stats=stats,
            edges=metric.bin_edges.numpy(),
            counts=counts,
            sample_counts=sample_counts,
            depth=depth,
            meta=meta,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (floats kept exactly by ``json``'s shortest repr)."""
        return {
            "name": self.name,
            "depth": self.depth,
            "stats": dict(self.stats),
            "extra": dict(self.extra),
            "meta": None if self.meta is None else _meta_to_dict(self.meta),
            "edges": [float(v) for v in self.edges],
            "counts": [int(v) for v in self.counts],
            "sample_counts": [int(v) for v in self.sample_counts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerReport:
        """The inverse of :meth:`to_dict`."""
        meta = data.get("meta")
        return cls(
            name=str(data["name"]),
            stats={k: float(v) for k, v in data["stats"].items()},
            edges=np.asarray(data["edges"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
            sample_counts=np.asarray(data["sample_counts"], dtype=np.int64),
            depth=int(data.get("depth", 0)),
            extra={k: float(v) for k, v in data.get("extra", {}).items()},
            meta=None if meta is None else _meta_from_dict(meta),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerReport):
            return NotImplemented
        return (
            self.name == other.name
            and self.depth == other.depth
            and self.meta == other.meta
            and _same_floats(self.stats, other.stats)
            and _same_floats(self.extra, other.extra)
            and np.array_equal(self.edges, other.edges)
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.sample_counts, other.sample_counts)
        )

    __hash__ = None  # type: ignore[assignment]


def _same_floats(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal keys and values, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


def _meta_to_dict(meta: LayerMeta) -> dict[str, Any]:
    out = {f.name: getattr(meta, f.name) for f in fields(meta)}
    out["map_size"] = list(meta.map_size)
    return out


def _meta_from_dict(data: Mapping[str, Any]) -> LayerMeta:
    return LayerMeta(
        module_type=str(data["module_type"]),
        ndim=int(data["ndim"]),
        channels=int(data["channels"]),
        map_size=tuple(int(s) for s in data["map_size"]),
        downscale=None if data.get("downscale") is None else float(data["downscale"]),
        layout=str(data.get("layout", "NCHW")),
        source=str(data.get("source", "")),
        prefix_tokens=int(data.get("prefix_tokens", 0)),
        inferred=str(data.get("inferred", "")),
    )


def aligned_names(reports: Sequence[SROPReport]) -> list[str]:
    """Every layer name of ``reports`` in forward order, for drawing or tabulating them together.

    A layer only a later report has follows its predecessor in that report.

    Examples:
        >>> import numpy as np
        >>> def report(*names):
        ...     none = np.zeros(0)
        ...     return SROPReport(tuple(LayerReport(n, {}, none, none, none, depth=d)
        ...                             for d, n in enumerate(names)))
        >>> aligned_names([report("conv1", "pool", "fc"), report("conv1", "blur", "pool")])
        ['conv1', 'blur', 'pool', 'fc']
    """
    names: list[str] = []
    for report in reports:
        position = 0
        for layer in sorted(report.layers, key=lambda r: r.depth):
            if layer.name in names:
                position = names.index(layer.name) + 1
            else:
                names.insert(position, layer.name)
                position += 1
    return names


#: Statistics shown by :meth:`SROPReport.table` unless told otherwise.
TABLE_STATS: Final[tuple[str, ...]] = ("mean", "q25", "median", "q75", "count", "flat_fraction")

#: Columns of :meth:`SROPReport.to_csv` before the statistics.
CSV_LEAD: Final[tuple[str, ...]] = (
    "depth",
    "layer",
    "module_type",
    "channels",
    "map_size",
    "downscale",
)


@dataclass(frozen=True, eq=False)
class SROPReport:
    """Per-layer SROP statistics of one measurement, with the options that produced them.

    Iterating gives the :class:`LayerReport` of each layer in forward order; ``report[name]``
    one layer. :func:`~lightning_srop.profile.profile` returns one; the callback keeps one per
    measured epoch (``SROPCallback.last_report``).

    Attributes:
        layers: the layer reports, in forward order.
        options: the options used, as plain values (see ``SROPOptions.to_dict``).
        skipped: layer name -> why it has no statistics (e.g. ``1 x 1`` maps).
        num_batches: batches measured.
        epoch: the training epoch (callback), ``None`` for offline profiles.
        step: the logger step (callback), ``None`` for offline profiles.
        model: the model's class name, when known.
        label: a free label (e.g. ``"trained"``), used by comparisons and legends.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_srop import profile
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2))
        >>> report = profile(net, torch.randn(2, 3, 16, 16))
        >>> report.names, report["1"].meta.map_size, report["1"].meta.downscale
        (['0', '1'], (8, 8), 2.0)
        >>> SROPReport.from_json(report.to_json()) == report
        True
    """

    layers: tuple[LayerReport, ...]
    options: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    num_batches: int = 0
    epoch: int | None = None
    step: int | None = None
    model: str | None = None
    label: str | None = None

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        """Layer keys in forward order."""
        return [r.name for r in self.layers]

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> LayerReport:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(
            f"SROPReport: no layer {name!r}; layers: {', '.join(map(repr, self.names)) or 'none'}."
        )

    def __contains__(self, name: object) -> bool:
        return any(r.name == name for r in self.layers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SROPReport):
            return NotImplemented
        return self.to_dict() == other.to_dict() and self.layers == other.layers

    __hash__ = None  # type: ignore[assignment]

    def with_label(self, label: str | None) -> SROPReport:
        """A copy with another :attr:`label`."""
        return SROPReport(
            self.layers,
            self.options,
            self.skipped,
            self.num_batches,
            self.epoch,
            self.step,
            self.model,
            label,
        )

    def as_dict(self, stats: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """``{layer: {statistic: value}}``, what ``profile`` returned before reports existed.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> from lightning_srop import profile
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
            >>> profile(net, torch.randn(2, 1, 12, 12)).as_dict(["count"])
            {'0': {'count': 4.0}, '1': {'count': 4.0}}
        """
        keys = list(STATISTICS) if stats is None else list(stats)
        unknown = [s for s in keys if s not in STATISTICS]
        if unknown:
            raise ValueError(
                f"SROPReport.as_dict: unknown statistic(s) {unknown!r}; valid choices: "
                f"{', '.join(STATISTICS)}."
            )
        return {r.name: {s: r.stats[s] for s in keys} for r in self.layers}

    def values(self, statistic: str = "mean", unit: str = "layer") -> dict[str, float]:
        """``{layer: statistic}`` in ``unit`` (``"layer"`` or ``"input"``), NaN where undefined.

        A report measured in layer units is shown per input pixel by dividing each layer's
        value by its downscaling (``meta.downscale``); the other way round is not possible.

        Raises:
            ValueError: an unknown unit, or a conversion the report cannot make.
        """
        if unit not in ("layer", "input"):
            raise ValueError(
                f"SROPReport.values: expected `unit` to be one of 'layer', 'input'; got {unit!r}."
            )
        measured_in = self.options.get("unit", "layer")
        out: dict[str, float] = {}
        for layer in self.layers:
            value = float(layer.stats.get(statistic, layer.extra.get(statistic, math.nan)))
            if unit != measured_in:
                down = layer.meta.downscale if layer.meta is not None else None
                if down is None or unit == "layer":
                    raise ValueError(
                        f"SROPReport.values: cannot show layer {layer.name!r} in unit={unit!r}: "
                        f"it was measured in unit={measured_in!r}"
                        + ("" if unit == "layer" else " and its downscaling is unknown")
                        + "."
                    )
                value /= down
            out[layer.name] = value if math.isfinite(value) else math.nan
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values, layers included (histograms as integer lists)."""
        return {
            "format": REPORT_FORMAT,
            "model": self.model,
            "label": self.label,
            "epoch": self.epoch,
            "step": self.step,
            "num_batches": self.num_batches,
            "options": self.options,
            "skipped": self.skipped,
            "layers": [r.to_dict() for r in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SROPReport:
        """The inverse of :meth:`to_dict`."""
        version = data.get("format")
        if version != REPORT_FORMAT:
            raise ValueError(
                f"SROPReport: expected report format {REPORT_FORMAT}, got {version!r} (a file "
                "written by another version of lightning-srop, or not a report)."
            )
        return cls(
            layers=tuple(LayerReport.from_dict(r) for r in data["layers"]),
            options=dict(data.get("options", {})),
            skipped=dict(data.get("skipped", {})),
            num_batches=int(data.get("num_batches", 0)),
            epoch=data.get("epoch"),
            step=data.get("step"),
            model=data.get("model"),
            label=data.get("label"),
        )

    def to_json(
        self, path: str | os.PathLike[str] | None = None, *, indent: int | None = None
    ) -> str:
        """The report as JSON (exact: floats round-trip, NaN as ``NaN``); also written to ``path``."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> SROPReport:
        """A report from JSON text or from a file written by :meth:`to_json`."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"SROPReport.from_json: no such file: {path}")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"SROPReport.from_json: not valid JSON ({err}).") from err
        return cls.from_dict(data)

    # ------------------------------------------------------------------ tables
    def rows(self) -> list[dict[str, Any]]:
        """One flat row per layer: :data:`CSV_LEAD` columns, then every statistic."""
        out: list[dict[str, Any]] = []
        for r in self.layers:
            meta = r.meta
            row: dict[str, Any] = {
                "depth": r.depth,
                "layer": r.name,
                "module_type": meta.module_type if meta else "",
                "channels": meta.channels if meta else "",
                "map_size": "x".join(map(str, meta.map_size)) if meta else "",
                "downscale": meta.downscale if meta and meta.downscale is not None else "",
            }
            row.update(r.stats)
            row.update(r.extra)
            out.append(row)
        return out

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """One row per layer (see :meth:`rows`) as CSV text; also written to ``path``."""
        rows = self.rows()
        columns = list(CSV_LEAD) + list(STATISTICS)
        for row in rows:
            columns += [k for k in row if k not in columns]
        return write_csv(path, rows, columns)

    def to_pandas(self) -> pandas.DataFrame:
        """The rows of :meth:`rows` as a DataFrame indexed by layer (needs pandas)."""
        try:
            import pandas as pd  # type: ignore[import-untyped]
        except ImportError as err:
            raise ImportError(
                "SROPReport.to_pandas needs pandas (`pip install pandas`); "
                "`to_csv()` and `rows()` work without it."
            ) from err
        return pd.DataFrame(self.rows()).set_index("layer")

    def table(self, stats: Sequence[str] = TABLE_STATS, *, digits: int = 4) -> str:
        """A fixed-width text table: layer, type, map size, then ``stats``."""
        head = ["depth", "layer", "type", "maps", *stats]
        body: list[list[str]] = []
        for r in self.layers:
            meta = r.meta
            size = "x".join(map(str, meta.map_size)) if meta else "?"
            maps = f"{meta.channels}@{size}" if meta else "?"
            cells = [str(r.depth), r.name, meta.module_type if meta else "?", maps]
            for s in stats:
                value = r.stats.get(s, r.extra.get(s, math.nan))
                cells.append(
                    str(int(value))
                    if s in ("count", "flat", "invalid") and math.isfinite(value)
                    else f"{value:.{digits}f}"
                )
            body.append(cells)
        lines = [format_table(body, head, left=3)]
        if self.skipped:
            lines.append(f"skipped: {', '.join(self.skipped)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        what = [f"{len(self.layers)} layers", f"{self.num_batches} batches"]
        if self.model:
            what.insert(0, self.model)
        if self.epoch is not None:
            what.append(f"epoch {self.epoch}")
        if self.label:
            what.append(f"label {self.label!r}")
        if self.skipped:
            what.append(f"{len(self.skipped)} skipped")
        return f"SROPReport({', '.join(what)})"

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"
