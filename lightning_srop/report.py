"""A plain, picklable summary of one layer's SROP statistics: what loggers and plots consume."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lightning_srop.statistics import STATISTICS, SROPStatistics

__all__ = ["LayerReport"]


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
    """

    name: str
    stats: dict[str, float]
    edges: np.ndarray
    counts: np.ndarray
    sample_counts: np.ndarray
    depth: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_metric(cls, name: str, metric: SROPStatistics, depth: int = 0) -> LayerReport:
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
        )
