"""Layer-wise SROP statistics as a mergeable torchmetrics ``Metric``.

Every state is fixed-size and reduces by addition (or min / max), so statistics merge exactly
across batches, in any order, and across processes. Sums are kept in two-limb fixed point
(two int64 sums at ``2**-30`` and ``2**-60`` resolution), which makes them order-independent to
the last bit while keeping float64 accuracy for the mean and the standard deviation.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal, TypeAlias, get_args

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_srop.functional.spectral_rolloff import (
    DEFAULT_ROLL_PERCENT,
    MAX_RADIUS_1D,
    MAX_RADIUS_2D,
    RolloffResult,
    _check_options,
    _spectral_rolloff_impl,
)

__all__ = [
    "QUANTILES",
    "STATISTICS",
    "MergedValue",
    "SROPStatistics",
    "Statistic",
    "histogram_quantile",
]

#: Quantile levels reported by :meth:`SROPStatistics.compute`, by name.
QUANTILES: Final[dict[str, float]] = {
    "q05": 0.05,
    "q25": 0.25,
    "median": 0.50,
    "q75": 0.75,
    "q95": 0.95,
}

Statistic: TypeAlias = Literal[
    "mean",
    "std",
    "min",
    "max",
    "q05",
    "q25",
    "median",
    "q75",
    "q95",
    "sample_mean",
    "sample_std",
    "count",
    "flat",
    "invalid",
    "flat_fraction",
    "invalid_fraction",
]
#: Every key of :meth:`SROPStatistics.compute` (the values of :data:`Statistic`).
STATISTICS: Final[tuple[str, ...]] = get_args(Statistic)

_LIMB: Final[float] = 2.0**30


def _fixed_sum(values: Tensor) -> Tensor:
    """Sum of non-negative ``values`` as two int64 limbs ``[hi, lo]``, exact in any order.

    Each value is split exactly into ``hi * 2**-30 + lo * 2**-60`` (plus at most ``2**-61``);
    integer sums of the limbs do not depend on the order of addition.
    """
    scaled = values.to(torch.float64) * _LIMB
    hi = torch.floor(scaled)
    lo = torch.round((scaled - hi) * _LIMB)
    return torch.stack([hi.to(torch.int64).sum(), lo.to(torch.int64).sum()])


def _from_fixed(limbs: Tensor) -> Tensor:
    """The float64 value of a two-limb fixed-point sum."""
    f64 = limbs.to(torch.float64)
    return f64[0] / _LIMB + f64[1] / (_LIMB * _LIMB)


def _bin_index(values: Tensor, num_bins: int, max_value: float) -> Tensor:
    index = torch.floor(values.to(torch.float64) * (num_bins / max_value)).to(torch.int64)
    return index.clamp_(0, num_bins - 1)


def histogram_quantile(counts: Tensor, centres: Tensor, q: float) -> Tensor:
    """Quantile ``q`` of the values behind a histogram: the package's one quantile rule.

    NumPy's linear rule (``numpy.quantile``'s default) with each value replaced by the centre
    of its bin: the 0-based rank ``q * (n - 1)`` is interpolated between the centres of the
    bins holding its two neighbouring ranks, so the result is within half a bin of the exact
    quantile. Used for the statistics of :class:`SROPStatistics` and for statistics derived
    from logged histograms (:func:`lightning_srop.transforms.histogram_statistics`).

    Args:
        counts: values per bin, shape ``(n,)``.
        centres: the bins' centres, shape ``(n,)``, increasing.
        q: the level, in [0, 1].

    Returns:
        A float64 scalar; meaningless (the caller masks it) when ``counts`` is all zero.

    Examples:
        >>> counts = torch.tensor([1, 0, 3])
        >>> float(histogram_quantile(counts, torch.tensor([0.05, 0.15, 0.25]), 0.5))
        0.25
    """
    counts = counts.to(torch.float64)
    n = counts.sum()  # no valid value: NaN, by the caller's mask (no host sync here)
    cumulative = torch.cumsum(counts, 0)
    rank = q * torch.clamp(n - 1, min=0.0)
    lo, hi = torch.floor(rank), torch.ceil(rank)
    # 0-based rank r lies in the first bin whose cumulative count exceeds r.
    ranks = torch.stack([lo, hi]).unsqueeze(1)
    bins = torch.searchsorted(cumulative, ranks, right=True).squeeze(1)
    around = centres.to(torch.float64)[bins.clamp_(max=counts.numel() - 1)]
    return around[0] + (rank - lo) * (around[1] - around[0])


class SROPStatistics(Metric):
    """Statistics of the SROPs of all maps that a layer produced, mergeable exactly.

    :meth:`update` takes a batch of feature maps ``(N, C, H, W)`` (or ``(N, C, L)`` with
    ``ndim=1``; any ``(N, *, H, W)`` works, all dims between the first and the map dims count
    as channels), computes their SROPs with :func:`~lightning_srop.functional.spectral_rolloff`
    and adds them to fixed-size states: counts of maps (valid, flat, invalid), fixed-point sums
    of SROPs and squares, min and max, a histogram of SROPs and one of per-sample mean SROPs
    (the mean over one sample's valid channels). :meth:`compute` turns those into the
    statistics listed in :data:`STATISTICS`.

    Args:
        roll_percent: share of spectral energy below the roll-off, in (0, 1].
        ndim: 2 for ``(.., H, W)`` maps, 1 for ``(.., L)`` signals.
        keep_dc: keep the DC bin (see :func:`~lightning_srop.functional.spectral_rolloff`).
        scale: factor applied to every SROP before it is recorded, e.g. ``1 / s`` to report
            SROPs of a layer of total downscaling ``s`` in cycles per input pixel.
        num_bins: bins of both histograms; quantiles are within half a bin of the exact ones.
        max_value: upper edge of the histograms; default the largest possible SROP times
            ``scale`` (``sqrt(2)/2`` in 2-D, ``1/2`` in 1-D). Larger values fall in the last bin.
        max_chunk_bytes: memory bound passed to ``spectral_rolloff``.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    Examples:
        >>> import torch
        >>> metric = SROPStatistics()
        >>> metric.update(torch.randn(4, 8, 16, 16))
        >>> metric.update(torch.zeros(2, 8, 16, 16))  # flat maps are counted, not averaged
        >>> stats = metric.compute()
        >>> int(stats["count"]), int(stats["flat"]), round(float(stats["flat_fraction"]), 3)
        (32, 16, 0.333)
        >>> 0.0 < float(stats["q25"]) <= float(stats["median"]) <= float(stats["q75"]) < 0.71
        True
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    count: Tensor
    flat: Tensor
    invalid: Tensor
    fixed_sum: Tensor
    fixed_sum_sq: Tensor
    min_value: Tensor
    max_value_seen: Tensor
    hist: Tensor
    sample_count: Tensor
    sample_fixed_sum: Tensor
    sample_fixed_sum_sq: Tensor
    sample_hist: Tensor

    def __init__(
        self,
        roll_percent: float = DEFAULT_ROLL_PERCENT,
        *,
        ndim: int = 2,
        keep_dc: bool = False,
        scale: float = 1.0,
        num_bins: int = 1024,
        max_value: float | None = None,
        max_chunk_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_options(roll_percent, ndim, keep_dc, "SROPStatistics")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(
                f"SROPStatistics: expected `num_bins` to be an int >= 2, got {num_bins!r}."
            )
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"SROPStatistics: expected `scale` to be a finite float > 0, got {scale!r}."
            )
        if max_value is None:
            max_value = (MAX_RADIUS_2D if ndim == 2 else MAX_RADIUS_1D) * float(scale)
        if not (isinstance(max_value, (int, float)) and math.isfinite(max_value) and max_value > 0):
            raise ValueError(
                f"SROPStatistics: expected `max_value` to be a finite float > 0, got {max_value!r}."
            )
        self.roll_percent = float(roll_percent)
        self.ndim = ndim
        self.keep_dc = keep_dc
        self.scale = float(scale)
        self.num_bins = num_bins
        self.max_value = float(max_value)
        self.max_chunk_bytes = max_chunk_bytes

        def zero() -> Tensor:
            return torch.tensor(0, dtype=torch.int64)

        def limbs() -> Tensor:
            return torch.zeros(2, dtype=torch.int64)

        for name in ("count", "flat", "invalid"):
            self.add_state(name, default=zero(), dist_reduce_fx="sum")
        for name in ("fixed_sum", "fixed_sum_sq"):
            self.add_state(name, default=limbs(), dist_reduce_fx="sum")
        self.add_state(
            "min_value", default=torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min"
        )
        self.add_state(
            "max_value_seen",
            default=torch.tensor(-math.inf, dtype=torch.float64),
            dist_reduce_fx="max",
        )
        self.add_state(
            "hist", default=torch.zeros(num_bins, dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state("sample_count", default=zero(), dist_reduce_fx="sum")
        for name in ("sample_fixed_sum", "sample_fixed_sum_sq"):
            self.add_state(name, default=limbs(), dist_reduce_fx="sum")
        self.add_state(
            "sample_hist", default=torch.zeros(num_bins, dtype=torch.int64), dist_reduce_fx="sum"
        )

    @property
    def bin_edges(self) -> Tensor:
        """The ``num_bins + 1`` histogram edges, float64 on CPU."""
        return torch.linspace(0.0, self.max_value, self.num_bins + 1, dtype=torch.float64)

    def grow(self, max_value: float) -> None:
        """Widen the histograms' range to ``max_value``, a power-of-two multiple of the current
        one, exactly: every old bin lies inside one new bin, so nothing is re-estimated.

        Used when the downscaling of a layer changes between batches (``unit="input"``) or
        differs between processes.

        Examples:
            >>> import torch
            >>> metric = SROPStatistics(num_bins=4, max_value=1.0)
            >>> metric._add_to_histogram(metric.hist, torch.tensor([0.1, 0.3, 0.6]), torch.tensor([True] * 3))
            >>> metric.grow(2.0)
            >>> metric.hist.tolist(), metric.max_value
            ([2, 1, 0, 0], 2.0)
        """
        ratio = float(max_value) / self.max_value
        k = round(math.log2(ratio)) if ratio > 0 else 0
        if k < 0 or ratio != 2.0**k:
            raise ValueError(
                f"SROPStatistics.grow: expected a power-of-two multiple of the range "
                f"{self.max_value!r}; got {max_value!r}."
            )
        if k == 0:
            return
        for name in ("hist", "sample_hist"):
            old = getattr(self, name)
            index = torch.arange(self.num_bins, device=old.device) >> k
            setattr(self, name, torch.zeros_like(old).index_add_(0, index, old))
        self.max_value = float(max_value)

    def update(self, maps: Tensor) -> None:
        """Add the SROPs of a batch of maps of shape ``(N, *, H, W)`` (``(N, *, L)`` in 1-D)."""
        if not isinstance(maps, Tensor) or maps.dim() < self.ndim + 1:
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(
                f"SROPStatistics.update: expected maps of shape (N, *, {'H, W' if self.ndim == 2 else 'L'}) "
                f"with at least {self.ndim + 1} dims, got {shape}."
            )
        result = _spectral_rolloff_impl(
            maps, self.roll_percent, self.ndim, self.keep_dc, self.max_chunk_bytes
        )
        self._update_from_rolloff(result)

    def _update_from_rolloff(self, result: RolloffResult) -> None:
        """Add precomputed SROPs (shape ``(N, *)``, first dim = samples) to the states.

        Mask-based throughout: no boolean indexing, no data-dependent branch, so on CUDA an
        update never waits for the device (it runs inside forward hooks).
        """
        srop = (
            result.srop.reshape(result.srop.shape[0], -1)
            if result.srop.dim()
            else result.srop.reshape(1, 1)
        )
        if srop.numel() == 0:  # a shape, known on the host
            return
        f64 = torch.float64
        flat = result.flat.reshape(srop.shape)
        invalid = result.invalid.reshape(srop.shape)
        valid = ~(flat | invalid)
        zero = torch.zeros((), dtype=f64, device=srop.device)
        values = torch.where(valid, srop.to(f64) * self.scale, zero)
        self.flat += flat.sum()
        self.invalid += invalid.sum()
        self.count += valid.sum()
        self.fixed_sum += _fixed_sum(values)
        self.fixed_sum_sq += _fixed_sum(values.square())
        inf = torch.full((), math.inf, dtype=f64, device=srop.device)
        self.min_value = torch.minimum(self.min_value, torch.where(valid, values, inf).min())
        self.max_value_seen = torch.maximum(
            self.max_value_seen, torch.where(valid, values, -inf).max()
        )
        self._add_to_histogram(self.hist, values, valid)
        # Per-sample means over valid channels; samples with no valid channel are left out.
        per_sample = valid.sum(1)
        has_valid = per_sample > 0
        means = torch.where(has_valid, values.sum(1) / per_sample.clamp(min=1), zero)
        self.sample_count += has_valid.sum()
        self.sample_fixed_sum += _fixed_sum(means)
        self.sample_fixed_sum_sq += _fixed_sum(means.square())
        self._add_to_histogram(self.sample_hist, means, has_valid)

    def _add_to_histogram(self, hist: Tensor, values: Tensor, keep: Tensor) -> None:
        # index_add_ with 0/1 weights: no bincount (whose output size needs a device sync).
        index = _bin_index(values, self.num_bins, self.max_value).reshape(-1)
        hist.index_add_(0, index, keep.reshape(-1).to(hist.dtype))

    def compute(self) -> dict[str, Tensor]:
        """Statistics of everything seen so far, as float64 scalars (see :data:`STATISTICS`).

        ``std`` and ``sample_std`` are population standard deviations (``ddof=0``). Quantiles
        (``q05``, ``q25``, ``median``, ``q75``, ``q95``) come from the histogram, within half a
        bin of NumPy's linear-interpolation quantiles of the raw values. Statistics of no valid
        map are NaN; fractions are shares of all maps seen (valid, flat and invalid).
        """
        f64 = torch.float64
        nan = torch.full((), math.nan, dtype=f64, device=self.hist.device)
        n = self.count.to(f64)
        any_valid = self.count > 0
        # Fixed-point rounding must not push the mean outside the observed range.
        mean = torch.clamp(_from_fixed(self.fixed_sum) / n, self.min_value, self.max_value_seen)
        mean_sq = _from_fixed(self.fixed_sum_sq) / n
        out: dict[str, Tensor] = {
            "mean": mean,
            "std": torch.sqrt(torch.clamp(mean_sq - mean.square(), min=0.0)),
            "min": self.min_value.to(f64),
            "max": self.max_value_seen.to(f64),
        }
        width = self.max_value / self.num_bins
        centres = (torch.arange(self.num_bins, dtype=f64, device=self.hist.device) + 0.5) * width
        for name, q in QUANTILES.items():
            # A bin centre may lie outside the values seen; the exact quantile never does.
            value = histogram_quantile(self.hist, centres, q)
            out[name] = torch.clamp(value, self.min_value, self.max_value_seen)
        ns = self.sample_count.to(f64)
        s_mean = _from_fixed(self.sample_fixed_sum) / ns
        s_mean_sq = _from_fixed(self.sample_fixed_sum_sq) / ns
        out["sample_mean"] = torch.where(self.sample_count > 0, s_mean, nan)
        out["sample_std"] = torch.where(
            self.sample_count > 0,
            torch.sqrt(torch.clamp(s_mean_sq - s_mean.square(), min=0.0)),
            nan,
        )
        out = {key: torch.where(any_valid, value, nan) for key, value in out.items()}
        total = (self.count + self.flat + self.invalid).to(f64)
        out["count"] = n
        out["flat"] = self.flat.to(f64)
        out["invalid"] = self.invalid.to(f64)
        out["flat_fraction"] = self.flat.to(f64) / total  # 0 / 0 = NaN when nothing was seen
        out["invalid_fraction"] = self.invalid.to(f64) / total
        return {key: out[key] for key in STATISTICS}


class MergedValue(Metric):
    """One value that the engine already merged across processes, logged as it is.

    Lightning cannot tell that a plain tensor logged per epoch is the same on every process, so
    under DDP it advises ``sync_dist=True`` for it when the epoch's metrics are computed. A
    ``Metric`` merges its own state; this one holds the merged value and never syncs: the
    engine's merge was the collective, and a second one would only average equal values.
    """

    full_state_update = False
    value: Tensor

    def __init__(self, value: float, device: torch.device) -> None:
        super().__init__(sync_on_compute=False)
        self.add_state("value", torch.tensor(math.nan), dist_reduce_fx=None)
        self.to(device)
        self.update(value)

    def update(self, value: float) -> None:
        self.value = torch.tensor(value, dtype=self.value.dtype, device=self.value.device)

    def compute(self) -> Tensor:
        return self.value.clone()
