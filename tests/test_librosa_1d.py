"""How the 1-D SROP relates to librosa's ``spectral_rolloff`` (docs/srop.md, "1-D").

librosa is not a dependency: its documented algorithm for one frame is reimplemented here,

    S = |rfft(frame)|                       (magnitudes, one-sided, bins 0 .. n_fft // 2)
    freq[k] = k * sr / n_fft
    rolloff = min freq[k] such that cumsum(S)[k] >= roll_percent * sum(S)

(``librosa.feature.spectral_rolloff(S=S[:, None], sr=sr, n_fft=n_fft)``; DC and, for even
``n_fft``, Nyquist counted once like every other bin). Ours is the power ``|X_k|^2`` over the
two-sided spectrum, i.e. the one-sided power weighted by the Hermitian multiplicity ``m_k``
(1 for DC and Nyquist, 2 otherwise), as a frequency in cycles per sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_srop import spectral_rolloff

SR = 22050.0


def librosa_rolloff(magnitudes: np.ndarray, sr: float, n_fft: int, roll_percent: float) -> float:
    """librosa's rule on one frame's one-sided spectrum ``magnitudes`` (length n_fft//2 + 1)."""
    cumulative = np.cumsum(magnitudes)
    k = int(np.argmax(cumulative >= roll_percent * cumulative[-1]))
    return k * sr / n_fft


def multiplicity(n: int) -> np.ndarray:
    m = np.full(n // 2 + 1, 2.0)
    m[0] = 1.0
    if n % 2 == 0:
        m[-1] = 1.0  # the Nyquist bin has no mirror
    return m


def ours_hz(x: np.ndarray, roll_percent: float = 0.85, keep_dc: bool = True) -> float:
    """Our SROP (cycles per sample, returned as float32) in Hz, snapped to the bin grid: the
    bin is exact, only the float32 rounding of k / n is undone."""
    srop = spectral_rolloff(torch.from_numpy(x), roll_percent, ndim=1, keep_dc=keep_dc)
    n = x.shape[-1]
    k = round(float(srop) * n)
    assert abs(float(srop) - k / n) < 1e-6  # a bin frequency, up to float32 rounding
    return k * SR / n


@pytest.mark.parametrize("n", [63, 64, 255, 256])
def test_ours_is_librosas_rule_on_the_multiplicity_weighted_power(n: int) -> None:
    rng = np.random.default_rng(n)
    for trial in range(20):
        x = rng.normal(size=n) * np.linspace(1, 3, n) + np.sin(np.arange(n) * 0.3 * trial)
        spectrum = np.abs(np.fft.rfft(x))
        kappa = float(rng.uniform(0.5, 0.95))
        # exact: librosa's rule applied to m_k |X_k|^2 instead of |X_k| gives our SROP in Hz
        weighted = multiplicity(n) * spectrum**2
        assert ours_hz(x, kappa) == librosa_rolloff(weighted, SR, n, kappa)
        # keep_dc=False (our default) = the same with the DC bin zeroed
        no_dc = weighted.copy()
        no_dc[0] = 0.0
        assert ours_hz(x, kappa, keep_dc=False) == librosa_rolloff(no_dc, SR, n, kappa)
        if n % 2 == 1:
            # odd length, DC left out: every remaining weight is 2, so the weights drop out and
            # ours equals librosa's rule on the plain power spectrum |X_k|^2
            power = spectrum**2
            power[0] = 0.0
            assert ours_hz(x, kappa, keep_dc=False) == librosa_rolloff(power, SR, n, kappa)


@pytest.mark.parametrize("n", [63, 64, 255, 256])
def test_a_single_bin_pair_agrees_exactly(n: int) -> None:
    """A pure tone (one bin and its mirror, or the lone Nyquist bin): both give its frequency."""
    t = np.arange(n)
    bins = [1, 5, n // 3, (n - 1) // 2] + ([n // 2] if n % 2 == 0 else [])
    for k0 in bins:
        for phase in (0.0, 0.7):
            x = np.cos(2 * np.pi * k0 * t / n + (0.0 if 2 * k0 == n else phase))
            expected = k0 * SR / n
            assert librosa_rolloff(np.abs(np.fft.rfft(x)), SR, n, 0.85) == pytest.approx(expected)
            assert ours_hz(x) == pytest.approx(expected)
            assert ours_hz(x, keep_dc=False) == pytest.approx(expected)


def test_general_signals_differ() -> None:
    """Magnitude (librosa) and power (ours) weight a weak component differently."""
    n = 64
    t = np.arange(n)
    x = np.cos(2 * np.pi * 2 * t / n) + 0.3 * np.cos(2 * np.pi * 6 * t / n)
    # magnitudes 1 : 0.3 -> bin 2 holds 77 % < 85 %: librosa goes on to bin 6
    assert librosa_rolloff(np.abs(np.fft.rfft(x)), SR, n, 0.85) == pytest.approx(6 * SR / n)
    # powers 1 : 0.09 -> bin 2 holds 92 % >= 85 %: ours stops at bin 2
    assert ours_hz(x) == pytest.approx(2 * SR / n)
    # even length, energy at bin 1 and at Nyquist: |X_1| = n / 2 = 32 (and its mirror
    # X_63), |X_32| = 1.2 n = 76.8 (no mirror)
    y = np.cos(2 * np.pi * t / n) + 1.2 * np.cos(np.pi * t)
    s = np.abs(np.fft.rfft(y))
    assert s[1] == pytest.approx(32.0) and s[n // 2] == pytest.approx(76.8)
    # librosa: bin 1 holds 32 / 108.8 = 0.294 of the magnitude sum
    # ours: bin 1 and its mirror hold 2 * 32^2 / (2 * 32^2 + 76.8^2) = 0.258 of the power
    for kappa, theirs, ours in ((0.25, 1, 1), (0.27, 1, n // 2), (0.3, n // 2, n // 2)):
        assert librosa_rolloff(s, SR, n, kappa) == pytest.approx(theirs * SR / n)
        assert ours_hz(y, kappa) == pytest.approx(ours * SR / n)
