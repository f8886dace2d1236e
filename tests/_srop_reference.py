"""Independent float64 NumPy references for SROP, written for the tests only.

Deliberately different from the package's implementation: full two-sided ``fft2`` (no
half spectrum, no Hermitian weights), shells found with ``np.unique`` on exact integer radius
keys, energies per shell with ``np.bincount``, one map at a time.
"""

from __future__ import annotations

import numpy as np


def shell_keys(h: int, w: int) -> np.ndarray:
    """Integer key ``k^2 W^2 + l^2 H^2`` (radius^2 * H^2 W^2) of every bin of an h x w DFT."""
    k = np.rint(np.fft.fftfreq(h) * h).astype(np.int64)
    col = np.rint(np.fft.fftfreq(w) * w).astype(np.int64)
    return (k[:, None] ** 2) * w * w + (col[None, :] ** 2) * h * h


def reference_shells(h: int, w: int) -> np.ndarray:
    """Sorted distinct radii (cycles per pixel) of an h x w map."""
    return np.sqrt(np.unique(shell_keys(h, w)).astype(np.float64)) / (h * w)


def srop_reference(maps: np.ndarray, kappa: float = 0.85, keep_dc: bool = False) -> np.ndarray:
    """SROP of every map over the last two dims, float64; NaN for no energy or non-finite."""
    return srop_reference_with_margin(maps, kappa, keep_dc)[0]


def srop_reference_with_margin(
    maps: np.ndarray, kappa: float = 0.85, keep_dc: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """SROPs and, per map, how close any shell's cumulative energy comes to ``kappa * E``.

    The margin is ``min_s |C_s - kappa E| / E``: where it is within float rounding, SPEC.md
    allows an implementation to land one shell off.
    """
    maps = np.asarray(maps, dtype=np.float64)
    lead = maps.shape[:-2]
    h, w = maps.shape[-2:]
    flat_maps = maps.reshape(-1, h, w)
    keys = shell_keys(h, w).ravel()
    uniq, inverse = np.unique(keys, return_inverse=True)
    radii = np.sqrt(uniq.astype(np.float64)) / (h * w)
    out = np.full(len(flat_maps), np.nan)
    margin = np.full(len(flat_maps), np.inf)
    for i, m in enumerate(flat_maps):
        if not np.all(np.isfinite(m)):
            continue
        full_energy = h * w * np.sum(m**2)  # Parseval, DC included
        if not keep_dc:
            m = m - m.mean()
        power = np.abs(np.fft.fft2(m)).ravel() ** 2
        if not keep_dc:
            power[0] = 0.0
        energy = power.sum()
        if energy <= 1e-20 * full_energy:  # flat: constant or all-zero map
            continue
        cumulative = np.cumsum(np.bincount(inverse.ravel(), weights=power, minlength=len(uniq)))
        out[i] = radii[np.argmax(cumulative >= kappa * energy)]
        margin[i] = np.min(np.abs(cumulative - kappa * energy)) / energy
    return out.reshape(lead), margin.reshape(lead)


def srop_reference_1d(
    signals: np.ndarray, kappa: float = 0.85, keep_dc: bool = False
) -> np.ndarray:
    """1-D SROP over the last dim (a 1 x L map)."""
    signals = np.asarray(signals, dtype=np.float64)
    return srop_reference(signals[..., None, :], kappa, keep_dc)


def audio_rolloff(power_spectrum: np.ndarray, freqs: np.ndarray, kappa: float) -> float:
    """The classic audio roll-off (Scheirer and Slaney; librosa's ``spectral_rolloff`` formula).

    ``power_spectrum`` is one frame's one-sided spectrum; the roll-off is the smallest
    frequency whose cumulative energy reaches ``kappa`` of the total.
    """
    total = np.cumsum(power_spectrum)
    threshold = kappa * total[-1]
    index = np.where(total < threshold, np.nan, 1.0)
    return float(np.nanmin(index * freqs))


def shell_distance(a: np.ndarray, b: np.ndarray, h: int, w: int) -> np.ndarray:
    """How many radius shells apart two arrays of SROPs are (0 = equal shell)."""
    radii = reference_shells(h, w)
    ia = np.searchsorted(radii, np.asarray(a, np.float64) - 1e-6)
    ib = np.searchsorted(radii, np.asarray(b, np.float64) - 1e-6)
    return np.abs(ia - ib)
