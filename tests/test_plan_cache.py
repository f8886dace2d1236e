"""The radius-plan cache is bounded (issue 11, defect 4) and option checks (defect 7)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference_1d, srop_reference_with_margin

from lightning_srop.functional import spectral_rolloff
from lightning_srop.functional.spectral_rolloff import (
    DEFAULT_PLAN_CACHE_BYTES,
    _check_options,
    plan_cache_bytes,
    set_plan_cache_bytes,
)

plans_module = sys.modules["lightning_srop.functional._plans"]


@pytest.fixture
def small_cache() -> Iterator[int]:
    budget = 2 * 2**20
    plans_module._PLAN_CACHE.clear()
    set_plan_cache_bytes(budget)
    yield budget
    set_plan_cache_bytes(DEFAULT_PLAN_CACHE_BYTES)
    plans_module._PLAN_CACHE.clear()


def _held_bytes() -> int:
    """Bytes of every tensor the cache holds, counted independently of its own bookkeeping."""
    plans = list(plans_module._PLAN_CACHE._plans.values())
    tensors = [t for p in plans for t in (p.order, *p.radius.values(), *p.weight.values())]
    tensors += [t for p in plans for t in p.weight_no_dc.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_many_signal_lengths_keep_the_cache_within_budget(small_cache: int) -> None:
    gen = torch.Generator().manual_seed(0)
    peak = 0
    for length in range(2000, 2300):  # 300 distinct lengths: ~100 MB of plans unbounded
        spectral_rolloff(torch.randn(1, length, generator=gen), ndim=1)
        peak = max(peak, _held_bytes())
    assert peak <= small_cache
    assert plan_cache_bytes() == _held_bytes() > small_cache // 2
    assert len(plans_module._PLAN_CACHE) < 300


def test_results_stay_correct_after_eviction(small_cache: int) -> None:
    gen = torch.Generator().manual_seed(1)
    first = torch.randn(50, 3001, generator=gen, dtype=torch.float64)
    want = srop_reference_1d(first.numpy())
    np.testing.assert_array_equal(spectral_rolloff(first, ndim=1).numpy(), want.astype(np.float32))
    for length in range(3002, 3100):  # evicts the plan of length 3001
        spectral_rolloff(torch.randn(1, length, generator=gen), ndim=1)
    assert (1, 3001, "cpu") not in plans_module._PLAN_CACHE._plans
    got = spectral_rolloff(first, ndim=1)  # rebuilt plan
    np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))
    maps = torch.randn(40, 20, 24, generator=gen)
    want2, margin = srop_reference_with_margin(maps.double().numpy())
    got2 = spectral_rolloff(maps).double().numpy()
    differs = got2 != want2.astype(np.float32)
    assert np.all(margin[differs] < 1e-5)


def test_a_plan_larger_than_the_budget_is_used_but_not_kept(small_cache: int) -> None:
    set_plan_cache_bytes(1000)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 30, 31, generator=gen, dtype=torch.float64)
    want = srop_reference_with_margin(x.numpy())[0]
    np.testing.assert_array_equal(spectral_rolloff(x).numpy(), want.astype(np.float32))
    assert _held_bytes() == 0 and plan_cache_bytes() == 0
    set_plan_cache_bytes(0)
    np.testing.assert_array_equal(spectral_rolloff(x).numpy(), want.astype(np.float32))
    assert len(plans_module._PLAN_CACHE) == 0


def test_lowering_the_budget_evicts_least_recently_used_first(small_cache: int) -> None:
    for size in (10, 11, 12):
        spectral_rolloff(torch.randn(2, size, size))
    spectral_rolloff(torch.randn(2, 10, 10))  # 10 x 10 is now the most recently used
    keys = list(plans_module._PLAN_CACHE._plans)
    assert keys == [(11, 11, "cpu"), (12, 12, "cpu"), (10, 10, "cpu")]
    plan10 = plans_module._PLAN_CACHE._plans[(10, 10, "cpu")]
    set_plan_cache_bytes(plan10.nbytes)
    assert list(plans_module._PLAN_CACHE._plans) == [(10, 10, "cpu")]


@pytest.mark.parametrize("budget", [-1, 1.5, "1", True])
def test_set_plan_cache_bytes_rejects_bad_values(budget: object) -> None:
    with pytest.raises(ValueError, match="`budget` to be a non-negative int"):
        set_plan_cache_bytes(budget)  # type: ignore[arg-type]


def test_budget_from_environment_variable() -> None:
    code = textwrap.dedent(
        """
        import torch
        from lightning_srop.functional import spectral_rolloff as f
        import sys
        m = sys.modules["lightning_srop.functional._plans"]
        print(m._PLAN_CACHE.budget)
        """
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an install
    env = {**os.environ, "PYTHONPATH": root, "LIGHTNING_SROP_PLAN_CACHE_BYTES": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "12345"
    env["LIGHTNING_SROP_PLAN_CACHE_BYTES"] = "lots"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "LIGHTNING_SROP_PLAN_CACHE_BYTES" in bad.stderr


# ---------------------------------------------------------------- defect 7: numpy scalars
@pytest.mark.parametrize(
    "kappa", [np.float32(0.85), np.float64(0.85), np.float16(0.5), 1, np.int64(1)]
)
def test_numpy_scalars_are_accepted_as_roll_percent(kappa: object) -> None:
    _check_options(kappa, 2, False, "where")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(30, 12, 12, generator=gen, dtype=torch.float64)
    got = spectral_rolloff(x, kappa).numpy()  # type: ignore[arg-type]
    want, margin = srop_reference_with_margin(x.numpy(), float(kappa))  # type: ignore[arg-type]
    differs = got != want.astype(np.float32)
    assert np.all(margin[differs] < 1e-5)


@pytest.mark.parametrize(
    ("kappa", "exc", "match"),
    [
        (np.bool_(True), TypeError, r"SomeOwner: expected `roll_percent` to be a float"),
        (True, TypeError, r"SomeOwner: expected `roll_percent` to be a float"),
        (np.float32(1.5), ValueError, r"SomeOwner: expected `roll_percent` in \(0, 1\]"),
        (np.float64(0.0), ValueError, r"SomeOwner: expected `roll_percent` in \(0, 1\]"),
        (np.float64("nan"), ValueError, r"SomeOwner: expected `roll_percent` in \(0, 1\]"),
        (complex(0.5), TypeError, r"SomeOwner: expected `roll_percent` to be a float"),
    ],
)
def test_bad_roll_percent_names_the_argument(kappa: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        _check_options(kappa, 2, False, "SomeOwner")
