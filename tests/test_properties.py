"""Property-based tests: shapes and values that must never crash or leave the valid range."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_srop import SROPStatistics, spectral_rolloff
from lightning_srop.functional import MAX_RADIUS_1D, MAX_RADIUS_2D
from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}

arrays = hnp.arrays(
    dtype=np.float64,
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9),
    elements=st.floats(allow_nan=True, allow_infinity=True, width=64)
    | st.sampled_from([0.0, 1.0, -1.0]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=arrays,
    ndim=st.sampled_from([1, 2]),
    dtype=st.sampled_from(sorted(DTYPES)),
    kappa=st.floats(min_value=1e-6, max_value=1.0),
    keep_dc=st.booleans(),
    budget=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
)
def test_never_crashes_and_stays_in_range(
    values: np.ndarray, ndim: int, dtype: str, kappa: float, keep_dc: bool, budget: int | None
) -> None:
    if values.ndim < ndim:
        values = values.reshape((1,) * (ndim - values.ndim) + values.shape)
    x = torch.from_numpy(values).to(DTYPES[dtype])
    result = _spectral_rolloff_impl(x, kappa, ndim, keep_dc, budget)
    srop = result.srop
    assert srop.shape == x.shape[: x.dim() - ndim] and srop.dtype == torch.float32
    finite = srop[~torch.isnan(srop)]
    top = MAX_RADIUS_2D if ndim == 2 else MAX_RADIUS_1D
    assert bool(((finite >= 0) & (finite <= top + 1e-6)).all())
    # NaN exactly where the map is flat or invalid, never both.
    assert torch.equal(torch.isnan(srop), result.flat | result.invalid)
    assert not bool((result.flat & result.invalid).any())
    # Maps with a NaN or Inf (after the cast) are invalid.
    has_nonfinite = (
        ~torch.isfinite(x.double()).flatten(x.dim() - ndim).all(-1) if srop.dim() else None
    )
    if has_nonfinite is not None:
        assert bool((result.invalid[has_nonfinite]).all())


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 4),
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_statistics_never_crash_and_count_every_map(
    n: int, c: int, h: int, w: int, scale: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen) * scale
    metric = SROPStatistics()
    metric.update(x)
    stats = metric.compute()
    assert int(stats["count"] + stats["flat"] + stats["invalid"]) == n * c
    if int(stats["count"]):
        assert (
            0.0
            <= float(stats["min"])
            <= float(stats["mean"])
            <= float(stats["max"])
            <= MAX_RADIUS_2D + 1e-9
        )
        assert float(stats["q05"]) <= float(stats["median"]) <= float(stats["q95"])
    else:
        assert math.isnan(float(stats["mean"]))


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), k0=st.integers(0, 11), l0=st.integers(0, 11))
def test_any_cosine_lands_on_its_folded_frequency(h: int, w: int, k0: int, l0: int) -> None:
    k0, l0 = k0 % h, l0 % w
    fy, fx = min(k0, h - k0) / h, min(l0, w - l0) / w
    i, j = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    wave = torch.cos(2 * math.pi * (k0 * i / h + l0 * j / w) + 0.4)
    got = spectral_rolloff(wave).item()
    if fy == fx == 0:
        assert math.isnan(got)  # a constant: flat
    else:
        assert got == np_approx(math.hypot(fy, fx))


def np_approx(value: float) -> object:
    import pytest

    return pytest.approx(value, rel=1e-6, abs=1e-7)
