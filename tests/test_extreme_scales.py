"""Finite maps at extreme scales have an SROP (issue 11, defect 5).

An SROP is scale invariant, so a finite, non-constant map scaled by ``a`` must have the SROP of
the unscaled map, however large or small ``a`` is for its dtype: its power may overflow to Inf or
underflow to zero or subnormals, and the implementation must not report it flat or invalid.
Each case is compared with the float64 NumPy reference computed on the map divided by the
scale (where the reference itself cannot overflow). Flat and invalid maps stay so. The fused
kernel's handling is checked through Triton's interpreter in a subprocess.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference_with_margin

from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl

# (dtype, scale) pairs where the power of a unit map scaled by `scale` overflows, underflows
# to zero, or lands among subnormals in the dtype that is computed (float32 for half types).
CASES = [
    (torch.float32, 1e17),
    (torch.float32, 1e30),
    (torch.float32, 1e-25),
    (torch.float32, 1e-20),
    (torch.float32, 1e-38),
    (torch.bfloat16, 1e17),
    (torch.bfloat16, 1e35),
    (torch.bfloat16, 1e-25),
    (torch.bfloat16, 1e-36),
    (torch.float16, 3e4),  # values near 65504
    (torch.float16, 1e-4),
    (torch.float64, 1e200),
    (torch.float64, 1e-200),
    (torch.float64, 1e-160),
    (torch.float64, 1e150),
    (torch.float32, 1.0),  # control
]


def _maps(dtype: torch.dtype, scale: float, n: int, h: int, w: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(abs(math.log10(scale))) * 7 + h)
    base = torch.randn(n, h, w, generator=gen, dtype=torch.float64)
    base = base / base.abs().amax(dim=(-2, -1), keepdim=True)  # max-abs 1: scale = max-abs
    base[: n // 4] = base[: n // 4].relu()  # post-ReLU maps too
    x = (base * scale).to(dtype)
    assert torch.isfinite(x).all() and (x != 0).any(dim=(-2, -1)).all()
    return x


def _assert_matches_unscaled_reference(
    got: torch.Tensor, x: torch.Tensor, scale: float, **kwargs: object
) -> None:
    unscaled = x.double().numpy() / scale  # the values the dtype holds, brought back to ~1
    want, margin = srop_reference_with_margin(unscaled, **kwargs)  # type: ignore[arg-type]
    got_np = got.double().numpy()
    assert not np.isnan(want).any(), "test maps must all have an SROP"
    assert not np.isnan(got_np).any(), f"{int(np.isnan(got_np).sum())} maps lost their SROP"
    differs = got_np != want.astype(np.float32).astype(np.float64)
    assert np.all(margin[differs] < 1e-5), "an SROP differs although no shell is near kappa * E"
    assert float(np.mean(differs)) <= 0.01


@pytest.mark.parametrize(("dtype", "scale"), CASES, ids=lambda v: str(v))
@pytest.mark.parametrize(("h", "w"), [(16, 16), (7, 10), (1, 33)])
def test_scaled_maps_keep_their_srop(dtype: torch.dtype, scale: float, h: int, w: int) -> None:
    x = _maps(dtype, scale, 64, h, w)
    result = _spectral_rolloff_impl(x)
    assert not result.flat.any() and not result.invalid.any()
    _assert_matches_unscaled_reference(result.srop, x, scale)


@pytest.mark.parametrize("keep_dc", [False, True])
def test_scaled_maps_with_offset_and_keep_dc(keep_dc: bool) -> None:
    x = _maps(torch.float32, 1e-30, 64, 9, 12) + 3e-30
    result = _spectral_rolloff_impl(x, keep_dc=keep_dc)
    _assert_matches_unscaled_reference(result.srop, x, 1e-30, keep_dc=keep_dc)


def test_subnormal_float64_maps() -> None:
    x = _maps(torch.float64, 1e-305, 32, 8, 8)  # many values are float64 subnormals
    _assert_matches_unscaled_reference(_spectral_rolloff_impl(x).srop, x, 1e-305)


@pytest.mark.parametrize(
    ("dtype", "big"),
    [
        (torch.float32, 1e30),
        (torch.float32, 1e-30),
        (torch.bfloat16, 1e30),
        (torch.float16, 6e4),
        (torch.float64, 1e300),
        (torch.float64, 1e-300),
    ],
)
def test_flat_and_invalid_maps_at_extreme_scales(dtype: torch.dtype, big: float) -> None:
    x = torch.zeros(7, 8, 8, dtype=torch.float64)
    x[1] = big  # constant: flat
    x[2] = -big
    x[3] = (torch.rand(8, 8, dtype=torch.float64) * 2 - 1) * big
    x[3, 2, 2] = math.nan  # invalid
    x[4] = (torch.rand(8, 8, dtype=torch.float64) * 2 - 1) * big
    x[4, 0, 0] = math.inf  # invalid
    x[5] = (torch.rand(8, 8, dtype=torch.float64) * 2 - 1) * big  # ok
    x[6] = -math.inf  # invalid
    x = x.to(dtype)
    result = _spectral_rolloff_impl(x)
    assert result.flat.tolist() == [True, True, True, False, False, False, False]
    assert result.invalid.tolist() == [False, False, False, True, True, False, True]
    assert torch.isnan(result.srop[:5]).all() and torch.isnan(result.srop[6])
    want, _ = srop_reference_with_margin(x[5:6].double().numpy() / big)
    assert float(result.srop[5]) == pytest.approx(float(want[0]), rel=1e-6)


def test_rescued_maps_keep_their_position_in_any_layout() -> None:
    """Maps needing a rescale are found again by position, in strided and chunked inputs."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 6, 6, generator=gen)
    x[0, 2] *= 1e-30
    x[2, 4] *= 1e30
    x[1, 1] = 0.0
    cl = x.to(memory_format=torch.channels_last)
    for view in (x, cl, x.permute(1, 0, 2, 3)):
        for budget in (1, None):
            got = _spectral_rolloff_impl(view, max_chunk_bytes=budget)
            want, _ = srop_reference_with_margin(view.double().numpy())
            np.testing.assert_array_equal(got.srop.numpy(), want.astype(np.float32))
            assert got.flat.sum() == 1 and not got.invalid.any()


def test_fused_kernel_at_extreme_scales(tmp_path: Path) -> None:
    """The Triton kernel (interpreted on CPU) takes the same rescue path."""
    pytest.importorskip("triton")
    out = tmp_path / "out.pt"
    cases = [(str(d).split(".")[1], s) for d, s in CASES if d != torch.float16] + [("float16", 3e4)]
    code = textwrap.dedent(
        f"""
        import math, torch
        from lightning_srop.functional._triton import triton_available
        from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl
        assert triton_available(torch.device("cpu")), "interpreter mode not active"
        gen = torch.Generator().manual_seed(0)
        results = {{}}
        for name, scale in {cases!r}:
            base = torch.randn(12, 9, 10, generator=gen, dtype=torch.float64)
            base = base / base.abs().amax(dim=(-2, -1), keepdim=True)
            x = (base * scale).to(getattr(torch, name))
            x[0] = 0.0
            x[1] = x[5, 0, 0]
            x[2, 1, 1] = math.nan
            r = _spectral_rolloff_impl(x)
            results[(name, scale)] = (x, r.srop, r.flat, r.invalid)
        torch.save(results, {str(out)!r})
        """
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an install
    env = {**os.environ, "PYTHONPATH": root, "TRITON_INTERPRET": "1"}
    env.pop("LIGHTNING_SROP_DISABLE_TRITON", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parent)
    results = torch.load(out, weights_only=False)
    assert len(results) == len(cases)
    for (_name, scale), (x, srop, flat, invalid) in results.items():
        assert flat[:2].all() and not flat[2:].any(), (_name, scale)
        assert invalid[2] and not invalid[:2].any() and not invalid[3:].any(), (_name, scale)
        _assert_matches_unscaled_reference(srop[3:], x[3:], scale)
