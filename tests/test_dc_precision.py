"""The DC is removed before the FFT: a near-constant float32 map keeps its SROP.

A map with a tiny variation around a large offset (std ~5e-6 around -0.098, the output of a
saturated layer) loses its content to the float32 FFT's rounding of the offset unless each
map's mean is subtracted first. Checked at one torch thread (the path users hit on CPU) against
the float64 NumPy reference of ``tests/_srop_reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference, srop_reference_1d

from lightning_srop.functional import spectral_rolloff


@pytest.fixture
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def near_constant(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.standard_normal(shape)
    return (-0.098 + 5.5e-6 * smooth).astype(np.float32)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("size", [(14, 14), (56, 56), (7, 12)])
def test_near_constant_map_matches_float64_reference(size: tuple[int, int]) -> None:
    maps = near_constant((16, 16, *size))
    assert maps.std() == pytest.approx(5.5e-6, rel=0.2)  # the variation survives float32
    expected = srop_reference(maps.astype(np.float64))
    got = spectral_rolloff(torch.from_numpy(maps)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_near_constant_signal_matches_float64_reference() -> None:
    signals = near_constant((16, 16, 400), seed=1)
    expected = srop_reference_1d(signals.astype(np.float64))
    got = spectral_rolloff(torch.from_numpy(signals), ndim=1).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_keep_dc_still_counts_the_offset() -> None:
    # keep_dc=True keeps the DC bin, the map's sum: an offset map is then almost all DC and its
    # SROP is 0 (the DC shell holds over 85 % of the energy), as the reference says.
    maps = near_constant((2, 3, 16, 16))
    expected = srop_reference(maps.astype(np.float64), keep_dc=True)
    got = spectral_rolloff(torch.from_numpy(maps), keep_dc=True).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-7)
    assert np.all(got == 0.0)
    # a zero-mean map: keep_dc changes nothing
    rng = np.random.default_rng(3)
    centred = rng.standard_normal((2, 3, 16, 16))
    centred -= centred.mean(axis=(-2, -1), keepdims=True)
    x = torch.from_numpy(centred)
    torch.testing.assert_close(spectral_rolloff(x, keep_dc=True), spectral_rolloff(x))


@pytest.mark.usefixtures("one_thread")
def test_constant_maps_are_still_flat() -> None:
    x = torch.full((3, 2, 9, 9), -0.098)
    assert torch.isnan(spectral_rolloff(x)).all()
    assert torch.isnan(spectral_rolloff(x.double())).all()
