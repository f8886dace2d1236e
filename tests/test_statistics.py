"""SROPStatistics: values against NumPy, exact merging, flat/invalid handling, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lightning_srop import STATISTICS, SROPStatistics, spectral_rolloff
from lightning_srop.report import LayerReport
from lightning_srop.statistics import QUANTILES

STATE_NAMES = (
    "count",
    "flat",
    "invalid",
    "fixed_sum",
    "fixed_sum_sq",
    "min_value",
    "max_value_seen",
    "hist",
    "sample_count",
    "sample_fixed_sum",
    "sample_fixed_sum_sq",
    "sample_hist",
)


def _batches(seed: int = 0, n: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(3 + i, 6, 10, 10, generator=gen).relu()
        x[0, 1] = 0.0  # a dead channel: flat
        if i % 2:
            x[1, 2, 3, 3] = math.nan  # an invalid map
        out.append(x)
    return out


def _states(metric: SROPStatistics) -> dict[str, torch.Tensor]:
    return {name: getattr(metric, name).clone() for name in STATE_NAMES}


def test_statistics_match_numpy_on_the_raw_srops() -> None:
    batches = _batches()
    metric = SROPStatistics()
    for b in batches:
        metric.update(b)
    stats = metric.compute()
    assert set(stats) == set(STATISTICS)

    srops = [spectral_rolloff(b).double().numpy() for b in batches]
    values = np.concatenate([s.ravel() for s in srops])
    valid = values[~np.isnan(values)]
    n_invalid = sum(int(torch.isnan(b).flatten(2).any(-1).sum()) for b in batches)
    n_flat = sum(int((b.flatten(2) == 0).all(-1).sum()) for b in batches)

    assert int(stats["count"]) == len(valid)
    assert int(stats["flat"]) == n_flat == len(batches)
    assert int(stats["invalid"]) == n_invalid == 2
    assert float(stats["flat_fraction"]) == pytest.approx(n_flat / len(values))
    assert float(stats["invalid_fraction"]) == pytest.approx(n_invalid / len(values))
    assert float(stats["mean"]) == pytest.approx(valid.mean(), abs=1e-9)
    assert float(stats["std"]) == pytest.approx(valid.std(), abs=1e-8)
    assert float(stats["min"]) == valid.min()
    assert float(stats["max"]) == valid.max()

    bin_width = (math.sqrt(2) / 2) / 1024
    for name, q in QUANTILES.items():
        assert abs(float(stats[name]) - np.quantile(valid, q)) <= bin_width, name

    per_sample = np.concatenate([np.nanmean(s, axis=1) for s in srops])
    assert float(stats["sample_mean"]) == pytest.approx(per_sample.mean(), abs=1e-9)
    assert float(stats["sample_std"]) == pytest.approx(per_sample.std(), abs=1e-8)
    assert int(metric.sample_hist.sum()) == len(per_sample)
    assert int(metric.hist.sum()) == len(valid)


@pytest.mark.parametrize("num_bins", [16, 100, 1024])
def test_quantiles_within_one_bin_on_skewed_values(num_bins: int) -> None:
    gen = torch.Generator().manual_seed(num_bins)
    # Smooth maps (low SROP) and noisy maps (high SROP): a bimodal distribution.
    smooth = torch.nn.functional.avg_pool2d(torch.randn(200, 1, 20, 20, generator=gen), 5, 1, 2)
    noisy = torch.randn(57, 1, 16, 16, generator=gen)
    metric = SROPStatistics(num_bins=num_bins)
    metric.update(smooth)
    metric.update(noisy)
    values = np.concatenate(
        [spectral_rolloff(smooth).numpy().ravel(), spectral_rolloff(noisy).numpy().ravel()]
    )
    stats = metric.compute()
    width = (math.sqrt(2) / 2) / num_bins
    for name, q in QUANTILES.items():
        assert abs(float(stats[name]) - np.quantile(values.astype(np.float64), q)) <= width, (
            name,
            num_bins,
        )


def test_merging_in_any_batch_order_gives_identical_states() -> None:
    batches = _batches(seed=1, n=4)
    reference = None
    for order in itertools.permutations(range(4)):
        metric = SROPStatistics()
        for i in order:
            metric.update(batches[i])
        states = _states(metric)
        if reference is None:
            reference = states
        for name in STATE_NAMES:
            assert torch.equal(states[name], reference[name]), (order, name)


def test_merge_state_of_two_metrics_equals_one_metric_over_all_batches() -> None:
    batches = _batches(seed=2, n=6)
    whole = SROPStatistics()
    left, right = SROPStatistics(), SROPStatistics()
    for i, b in enumerate(batches):
        whole.update(b)
        (left if i % 2 else right).update(b)
    left.merge_state(right)
    for name in STATE_NAMES:
        assert torch.equal(getattr(left, name), getattr(whole, name)), name
    merged, single = left.compute(), whole.compute()
    assert all(torch.equal(merged[k], single[k]) for k in STATISTICS)


def test_nan_never_leaks_into_statistics() -> None:
    metric = SROPStatistics()
    x = torch.randn(4, 3, 8, 8)
    x[0, 0, 0, 0] = math.nan
    x[1, 1, 2, 2] = math.inf
    x[2] = 5.0  # a whole sample of flat maps: no per-sample mean for it
    metric.update(x)
    stats = metric.compute()
    for name in ("mean", "std", "min", "max", "median", "sample_mean", "sample_std"):
        assert math.isfinite(float(stats[name])), name
    assert int(stats["invalid"]) == 2 and int(stats["flat"]) == 3 and int(stats["count"]) == 7
    assert int(metric.sample_count) == 3


def test_no_valid_map_gives_nan_statistics_and_zero_counts() -> None:
    metric = SROPStatistics()
    metric.update(torch.zeros(2, 3, 5, 5))
    stats = metric.compute()
    assert int(stats["count"]) == 0 and int(stats["flat"]) == 6
    assert float(stats["flat_fraction"]) == 1.0
    for name in ("mean", "std", "min", "max", "median", "sample_mean"):
        assert math.isnan(float(stats[name])), name


def test_scale_reports_input_grid_units() -> None:
    x = torch.randn(4, 5, 12, 12)
    plain, halved = SROPStatistics(), SROPStatistics(scale=0.5)
    plain.update(x)
    halved.update(x)
    a, b = plain.compute(), halved.compute()
    assert float(b["mean"]) == pytest.approx(float(a["mean"]) / 2, abs=1e-9)
    assert float(b["max"]) == pytest.approx(float(a["max"]) / 2)
    assert halved.max_value == pytest.approx(math.sqrt(2) / 4)


def test_1d_statistics() -> None:
    metric = SROPStatistics(ndim=1)
    x = torch.randn(3, 4, 64)
    metric.update(x)
    values = spectral_rolloff(x, ndim=1).numpy().ravel()
    stats = metric.compute()
    assert metric.max_value == 0.5
    assert float(stats["mean"]) == pytest.approx(values.astype(np.float64).mean(), abs=1e-9)


def test_reset_returns_to_empty_state() -> None:
    metric = SROPStatistics()
    metric.update(torch.randn(2, 2, 6, 6))
    metric.reset()
    assert (
        int(metric.count) == 0
        and int(metric.hist.sum()) == 0
        and math.isinf(float(metric.min_value))
    )


def test_layer_report_carries_merged_statistics() -> None:
    metric = SROPStatistics(num_bins=64)
    x = torch.randn(3, 4, 9, 9)
    metric.update(x)
    report = LayerReport.from_metric("features.0", metric, depth=3)
    assert report.name == "features.0" and report.depth == 3
    assert report.edges.shape == (65,) and report.counts.shape == (64,)
    assert report.counts.sum() == 12 and report.sample_counts.sum() == 3
    assert report.stats["mean"] == pytest.approx(
        float(spectral_rolloff(x).double().mean()), abs=1e-9
    )
    metric.update(x)  # the metric is still usable afterwards (states were restored, not synced)
    assert int(metric.count) == 24


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"roll_percent": 2.0}, ValueError, r"SROPStatistics: expected `roll_percent` in \(0, 1\]"),
        ({"ndim": 3}, ValueError, r"SROPStatistics: expected `ndim` to be 1 or 2, got 3"),
        ({"keep_dc": "no"}, TypeError, r"`keep_dc` to be a bool"),
        ({"num_bins": 1}, ValueError, r"`num_bins` to be an int >= 2, got 1"),
        ({"scale": 0.0}, ValueError, r"`scale` to be a finite float > 0, got 0.0"),
        ({"max_value": -1.0}, ValueError, r"`max_value` to be a finite float > 0, got -1.0"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        SROPStatistics(**kwargs)  # type: ignore[arg-type]


def test_update_with_too_few_dims() -> None:
    metric = SROPStatistics()
    with pytest.raises(
        ValueError, match=r"maps of shape \(N, \*, H, W\) with at least 3 dims, got \(8, 8\)"
    ):
        metric.update(torch.randn(8, 8))


def test_std_of_identical_values_is_zero_to_float64_accuracy() -> None:
    metric = SROPStatistics()
    x = torch.randn(1, 1, 9, 9).expand(7, 5, 9, 9)  # 35 copies of one map
    metric.update(x)
    stats = metric.compute()
    assert float(stats["std"]) < 1e-7 and float(stats["sample_std"]) < 1e-7
    assert float(stats["min"]) == float(stats["mean"]) == float(stats["max"])
