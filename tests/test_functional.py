"""spectral_rolloff: reference, analytic cases, invariances, dtypes, layouts, errors, memory."""

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
from _srop_reference import (
    audio_rolloff,
    reference_shells,
    shell_distance,
    srop_reference_1d,
    srop_reference_with_margin,
)

from lightning_srop.functional import MAX_RADIUS_2D, spectral_rolloff
from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl

SHAPES = [
    (7, 7),
    (8, 8),
    (14, 14),
    (28, 28),
    (5, 9),
    (9, 4),
    (1, 16),
    (16, 1),
    (2, 3),
    (3, 2),
    (11, 13),
    (56, 56),
]


def _agreement(
    got: torch.Tensor, x: torch.Tensor, h: int, w: int, **kwargs: object
) -> tuple[float, int]:
    """Compare with the float64 reference (SPEC.md "Precision").

    Returns the share of maps whose SROP equals the reference and the largest shell distance;
    asserts that every map whose cumulative energy is not within rounding (1e-5 relative) of
    ``kappa * E`` at some shell is exactly equal.
    """
    want, margin = srop_reference_with_margin(x.double().numpy(), **kwargs)  # type: ignore[arg-type]
    got_np = got.double().numpy().ravel()
    want_np = want.ravel().astype(np.float32).astype(np.float64)
    margin = margin.ravel()
    assert np.array_equal(np.isnan(got_np), np.isnan(want_np))
    ok = ~np.isnan(want_np)
    differs = ok & (got_np != want_np)
    assert np.all(margin[differs] < 1e-5), "an SROP differs although no shell is near the threshold"
    equal = 1.0 - float(np.mean(differs[ok])) if ok.any() else 1.0
    dist = int(shell_distance(got_np[ok], want_np[ok], h, w).max()) if ok.any() else 0
    return equal, dist


# ---------------------------------------------------------------- reference
@pytest.mark.parametrize(("h", "w"), SHAPES)
@pytest.mark.parametrize("kappa", [0.85, 0.5, 0.99])
def test_matches_float64_reference_on_random_maps(h: int, w: int, kappa: float) -> None:
    gen = torch.Generator().manual_seed(h * 100 + w)
    n = 600 if h * w < 1000 else 150
    x = torch.randn(n, h, w, generator=gen) * torch.rand(n, 1, 1, generator=gen) + torch.randn(
        n, 1, 1, generator=gen
    )
    x = torch.cat([x, torch.relu(x)])  # post-ReLU maps too
    got = spectral_rolloff(x, kappa)
    _, dist = _agreement(got, x, h, w, kappa=kappa)
    # Post-ReLU maps with one live pixel have a flat spectrum whose cumulative energy hits
    # kappa * E exactly at a shell: there rounding decides, and _agreement allows it.
    assert dist <= 1
    gaussian_equal, _ = _agreement(got[:n], x[:n], h, w, kappa=kappa)
    assert gaussian_equal >= 0.999, f"only {gaussian_equal:.4%} of maps equal the float64 reference"


def test_matches_reference_over_many_maps_in_aggregate() -> None:
    """Over 20k random 12 x 12 maps, the disagreement rate is at most 0.1 %."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(20_000, 12, 12, generator=gen).relu()
    equal, dist = _agreement(spectral_rolloff(x), x, 12, 12)
    assert equal >= 0.999 and dist <= 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 10), (28, 28)])
def test_dtypes_against_reference(dtype: torch.dtype, h: int, w: int) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(400, h, w, generator=gen).to(dtype)
    got = spectral_rolloff(x)
    assert got.dtype == torch.float32
    # The reference sees exactly the values the half-precision tensor holds.
    equal, dist = _agreement(got, x, h, w)
    assert equal >= 0.999 and dist <= 1


@pytest.mark.parametrize("keep_dc", [True, False])
def test_keep_dc_against_reference(keep_dc: bool) -> None:
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(500, 9, 12, generator=gen) + 2.0
    equal, dist = _agreement(spectral_rolloff(x, keep_dc=keep_dc), x, 9, 12, keep_dc=keep_dc)
    assert equal >= 0.999 and dist <= 1


def test_keep_dc_with_large_offset_is_zero() -> None:
    x = torch.randn(16, 8, 8) * 0.01 + 10.0
    assert torch.all(spectral_rolloff(x, keep_dc=True) == 0.0)
    assert torch.all(spectral_rolloff(x, keep_dc=False) > 0.0)


# ---------------------------------------------------------------- analytic cases
def _cosine(h: int, w: int, k0: int, l0: int, phase: float = 0.3) -> torch.Tensor:
    i, j = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.cos(2 * math.pi * (k0 * i / h + l0 * j / w) + phase)


@pytest.mark.parametrize(
    ("h", "w", "k0", "l0"),
    [
        (32, 32, 3, 4),
        (32, 32, 0, 5),
        (32, 32, 7, 0),
        (16, 16, 8, 8),
        (15, 20, 2, 3),
        (9, 31, 4, 15),
        (64, 48, 20, 1),
    ],
)
@pytest.mark.parametrize("kappa", [0.1, 0.85, 1.0])
def test_cosine_has_srop_at_its_frequency(h: int, w: int, k0: int, l0: int, kappa: float) -> None:
    expected = math.sqrt((k0 / h) ** 2 + (l0 / w) ** 2)
    got = spectral_rolloff(_cosine(h, w, k0, l0).float(), kappa).item()
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_cosine_frequency_is_folded() -> None:
    # k0 = h - 3 is the same frequency as 3 (folded to [-1/2, 1/2)).
    got = spectral_rolloff(_cosine(20, 20, 17, 2).float()).item()
    assert got == pytest.approx(math.sqrt((3 / 20) ** 2 + (2 / 20) ** 2), rel=1e-6)


def test_two_cosines_roll_off_at_the_energy_share() -> None:
    # Energies 0.64 : 0.36 at radii 2/32 and 9/32: the roll-off jumps at kappa = 0.64.
    x = (0.8 * _cosine(32, 32, 2, 0) + 0.6 * _cosine(32, 32, 0, 9)).float()
    low, high = 2 / 32, 9 / 32
    for kappa, expected in [(0.3, low), (0.63, low), (0.65, high), (0.85, high), (1.0, high)]:
        assert spectral_rolloff(x, kappa).item() == pytest.approx(expected, rel=1e-6), kappa


def test_nyquist_corner_has_the_largest_radius() -> None:
    checker = (-1.0) ** (torch.arange(8)[:, None] + torch.arange(8)[None, :])
    assert spectral_rolloff(checker.float()).item() == pytest.approx(MAX_RADIUS_2D, rel=1e-6)


# ---------------------------------------------------------------- invariances
def _assert_same_srops(a: torch.Tensor, b: torch.Tensor, h: int, w: int) -> None:
    equal = float((a == b).double().mean())
    assert equal >= 0.999, f"{equal:.4%} equal"
    assert int(shell_distance(a.numpy(), b.numpy(), h, w).max()) <= 1


@pytest.mark.parametrize(("h", "w"), [(12, 12), (9, 14)])
def test_invariances(h: int, w: int) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3000, h, w, generator=gen)
    base = spectral_rolloff(x)
    transforms = {
        "roll": torch.roll(x, shifts=(3, -5), dims=(-2, -1)),
        "flip_h": torch.flip(x, dims=(-2,)),
        "flip_w": torch.flip(x, dims=(-1,)),
        "transpose": x.transpose(-2, -1),
        "rot90": torch.rot90(x, 1, dims=(-2, -1)),
        "rot270": torch.rot90(x, 3, dims=(-2, -1)),
        "scale": x * -3.7,
        "scale_pow2": x * 0.25,
        "offset": x + 2.5,
    }
    for name, y in transforms.items():
        got = spectral_rolloff(y)
        if name == "scale_pow2":
            assert torch.equal(got, base), name  # exact in floating point
        else:
            _assert_same_srops(got, base, h, w)


# ---------------------------------------------------------------- flat and invalid maps
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_constant_and_zero_maps_are_flat(dtype: torch.dtype) -> None:
    x = torch.stack(
        [
            torch.zeros(10, 10),
            torch.full((10, 10), 0.1),
            torch.full((10, 10), -7.3),
            torch.randn(10, 10),
        ]
    )
    result = _spectral_rolloff_impl(x.to(dtype))
    assert result.flat.tolist() == [True, True, True, False]
    assert not result.invalid.any()
    assert torch.isnan(result.srop[:3]).all() and torch.isfinite(result.srop[3])


def test_one_by_one_maps_are_flat_without_dc_and_zero_with_it() -> None:
    x = torch.randn(5, 3, 1, 1)
    assert torch.isnan(spectral_rolloff(x)).all()
    assert _spectral_rolloff_impl(x).flat.all()
    assert torch.equal(spectral_rolloff(x, keep_dc=True), torch.zeros(5, 3))


def test_nan_and_inf_maps_are_invalid_and_do_not_leak() -> None:
    x = torch.randn(6, 8, 8)
    x[1, 2, 3] = math.nan
    x[3, 0, 0] = math.inf
    x[4, 7, 7] = -math.inf
    result = _spectral_rolloff_impl(x)
    assert result.invalid.tolist() == [False, True, False, True, True, False]
    assert not result.flat.any()
    assert torch.isnan(result.srop[[1, 3, 4]]).all()
    clean = spectral_rolloff(x[[0, 2, 5]])
    assert torch.equal(result.srop[[0, 2, 5]], clean)


# ---------------------------------------------------------------- 1-D
@pytest.mark.parametrize("length", [15, 33, 101, 7])
@pytest.mark.parametrize("kappa", [0.5, 0.85, 0.95])
def test_1d_equals_classic_audio_rolloff(length: int, kappa: float) -> None:
    """Odd lengths: the one-sided audio convention equals the two-sided definition."""
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(200, length, generator=gen, dtype=torch.float64)
    got = spectral_rolloff(x, kappa, ndim=1)
    freqs = np.arange(length // 2 + 1) / length
    want = []
    for signal in x.numpy():
        power = np.abs(np.fft.rfft(signal)) ** 2
        power[0] = 0.0  # DC left out, as by default
        want.append(audio_rolloff(power, freqs, kappa))
    equal = float(np.mean(got.numpy() == np.float32(want)))
    assert equal >= 0.995  # the rest differ by rounding at the threshold only
    assert np.max(np.abs(got.numpy() - np.float32(want))) <= 1.0 / length + 1e-7


@pytest.mark.parametrize("length", [16, 31, 64])
def test_1d_matches_reference_and_2d_single_row(length: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 50, length, generator=gen)
    got = spectral_rolloff(x, ndim=1)
    assert got.shape == (3, 50)
    want = srop_reference_1d(x.numpy())
    assert float(np.mean(got.numpy() == want.astype(np.float32))) >= 0.999
    assert torch.equal(got, spectral_rolloff(x.unsqueeze(-2), ndim=2))
    assert float(got.max()) <= 0.5


def test_1d_cosine() -> None:
    t = torch.arange(40, dtype=torch.float64)
    x = torch.cos(2 * math.pi * 7 * t / 40)
    assert spectral_rolloff(x, ndim=1).item() == pytest.approx(7 / 40, rel=1e-6)


# ---------------------------------------------------------------- shapes and layouts
@pytest.mark.parametrize("lead", [(), (3,), (2, 3), (2, 1, 4), (0,), (2, 0, 3)])
def test_output_shape_dtype_device(lead: tuple[int, ...]) -> None:
    x = torch.randn(*lead, 6, 5)
    out = spectral_rolloff(x)
    assert out.shape == lead and out.dtype == torch.float32 and out.device == x.device


def test_non_contiguous_inputs_equal_contiguous_copies() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, 10, 12, generator=gen)
    views = {
        "channels_last": x.to(memory_format=torch.channels_last),
        "permuted": x.permute(1, 0, 2, 3),
        "stepped": x[:, ::2, 1:, ::2],
        "transposed_maps": x.transpose(-1, -2),
        "expanded": x[:1, :1].expand(3, 5, 10, 12),
    }
    for name, view in views.items():
        assert not view.is_contiguous(), name
        assert torch.equal(spectral_rolloff(view), spectral_rolloff(view.contiguous())), name


@pytest.mark.parametrize("budget", [1, 5_000, 50_000, 10**9])
def test_chunking_does_not_change_results(budget: int) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 7, 9, 9, generator=gen).to(memory_format=torch.contiguous_format)
    cl = torch.randn(4, 6, 9, 9, generator=gen).to(memory_format=torch.channels_last)
    assert torch.equal(spectral_rolloff(x, max_chunk_bytes=budget), spectral_rolloff(x))
    assert torch.equal(
        spectral_rolloff(cl, max_chunk_bytes=budget), spectral_rolloff(cl.contiguous())
    )


def test_memory_stays_bounded_on_a_large_channels_last_activation() -> None:
    """Peak RSS growth is far below the activation's size (it is never copied whole)."""
    code = textwrap.dedent(
        """
        import resource, torch
        from lightning_srop import spectral_rolloff
        x = torch.randn(16, 64, 112, 112).to(memory_format=torch.channels_last)  # 51 MB, not mergeable
        spectral_rolloff(x[:1, :1], max_chunk_bytes=8 * 2**20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = spectral_rolloff(x, max_chunk_bytes=8 * 2**20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert out.shape == (16, 64)
        print(after - before, x.numel() * 4)
        """
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an install
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": root},
    )
    grown, size = map(int, result.stdout.split())
    # A whole complex spectrum of x would be ~2.1 x its size; a contiguous copy 1 x.
    assert grown < 0.5 * size, (
        f"peak RSS grew by {grown / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB input"
    )


def test_inputs_that_require_grad_and_inference_tensors() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = spectral_rolloff(x)
    assert not out.requires_grad
    assert torch.equal(out, spectral_rolloff(x.detach()))
    with torch.inference_mode():
        y = torch.randn(2, 3, 8, 8)
        assert spectral_rolloff(y).shape == (2, 3)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"ndim": 3}, ValueError, r"`ndim` to be 1 or 2, got 3"),
        ({"ndim": True}, ValueError, r"`ndim` to be 1 or 2"),
        ({"roll_percent": 0.0}, ValueError, r"`roll_percent` in \(0, 1\], got 0.0"),
        ({"roll_percent": 1.5}, ValueError, r"`roll_percent` in \(0, 1\], got 1.5"),
        ({"roll_percent": "0.85"}, TypeError, r"`roll_percent` to be a float"),
        ({"keep_dc": 1}, TypeError, r"`keep_dc` to be a bool"),
        ({"max_chunk_bytes": 0}, ValueError, r"`max_chunk_bytes` to be a positive int"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        spectral_rolloff(torch.randn(2, 4, 4), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match=r"complex dtype torch.complex64.*not their spectrum"):
        spectral_rolloff(torch.randn(4, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"floating-point tensor .* got torch.int64"):
        spectral_rolloff(torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"floating-point tensor .* got torch.bool"):
        spectral_rolloff(torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"at least ndim=2 dimensions .* got shape \(5,\)"):
        spectral_rolloff(torch.randn(5))
    with pytest.raises(ValueError, match=r"non-empty maps, got map size \(0, 4\)"):
        spectral_rolloff(torch.randn(3, 0, 4))
    with pytest.raises(TypeError, match=r"torch.Tensor, got ndarray"):
        spectral_rolloff(np.zeros((4, 4)))  # type: ignore[arg-type]


# ---------------------------------------------------------------- compile and devices
def test_torch_compile_matches_eager() -> None:
    compiled = torch.compile(spectral_rolloff, backend="aot_eager", fullgraph=False)
    x = torch.randn(4, 8, 12, 12)
    assert torch.equal(compiled(x), spectral_rolloff(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_matches_reference(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(64, 32, 28, 28, generator=gen).to(dtype)
    got = spectral_rolloff(x.cuda())
    assert got.is_cuda
    equal, dist = _agreement(got.cpu(), x, 28, 28)
    assert equal >= 0.999 and dist <= 1


def test_reference_shell_table_sanity() -> None:
    # The test's own helper: 2 x 2 maps have shells 0, 1/2, sqrt(2)/2.
    assert np.allclose(reference_shells(2, 2), [0.0, 0.5, math.sqrt(0.5)])
