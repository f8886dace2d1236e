"""A fused roll-off kernel for CUDA: one Triton program per map, after cuFFT's rfft2.

The plain pipeline after the FFT (power, gather in radius order, weights, cumsum, search) makes
five passes over the spectrum; on a GPU those passes, not the FFT, dominate (see
docs/performance.md). This kernel reads each map's half spectrum once per pass of a two-pass scan, in
radius order, accumulating in float64 (or, for float32 maps and
``LIGHTNING_SROP_TRITON_ACCUMULATE=float32``, in float32 with Kahan-compensated block sums:
float64 arithmetic is slow on consumer GPUs):

1. the kept energy ``E`` (Hermitian-weighted power, DC weighted 0 unless kept), the DC power,
   and the last bin with any energy;
2. a blocked prefix scan that finds the first bin whose cumulative energy reaches
   ``roll_percent * E``.

For float32 maps the threshold comparison is made in float32 (as in the plain path). If
rounding leaves the scan a hair under the threshold (only possible at ``roll_percent == 1``),
the last bin with energy is the answer.

The kernel is exercised on CPU by the test suite through Triton's interpreter
(``TRITON_INTERPRET=1``), so its logic is checked on every machine; on CUDA it is used by
:func:`~lightning_srop.functional.spectral_rolloff` unless ``LIGHTNING_SROP_DISABLE_TRITON=1``,
after a self-check against the plain path on the first use per device, dtype and accumulation
(see ``spectral_rolloff._fused_rolloff``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

__all__ = ["triton_accumulate", "triton_available", "triton_rolloff"]

try:  # Triton ships with CUDA builds of PyTorch on Linux; elsewhere the plain path is used.
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the installation
    _HAVE_TRITON = False


def triton_available(device: torch.device) -> bool:
    """Whether the fused kernel can run on ``device`` (CUDA, or any device when interpreted)."""
    if not _HAVE_TRITON or os.environ.get("LIGHTNING_SROP_DISABLE_TRITON") == "1":
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device.type == "cuda"


def triton_accumulate() -> str:
    """The kernel's accumulation for float32 maps: ``LIGHTNING_SROP_TRITON_ACCUMULATE``.

    ``"float64"`` (default) or ``"float32"`` (Kahan-compensated block sums); any other value
    raises ``ValueError``.
    """
    value = os.environ.get("LIGHTNING_SROP_TRITON_ACCUMULATE", "float64")
    if value not in ("float64", "float32"):
        raise ValueError(
            f"LIGHTNING_SROP_TRITON_ACCUMULATE: expected 'float64' or 'float32', got {value!r}."
        )
    return value


if _HAVE_TRITON:

    @triton.jit  # type: ignore[untyped-decorator, misc]
    def _weighted_power(
        base: Any, order_ptr: Any, weight_ptr: Any, offs: Any, mask: Any, ACC64: tl.constexpr
    ) -> Any:
        """Hermitian-weighted power of the bins ``offs`` (radius order) of one half spectrum."""
        idx = tl.load(order_ptr + offs, mask=mask, other=0)
        re = tl.load(base + 2 * idx, mask=mask, other=0.0)
        im = tl.load(base + 2 * idx + 1, mask=mask, other=0.0)
        w = tl.load(weight_ptr + offs, mask=mask, other=0.0)
        if ACC64:
            re = re.to(tl.float64)
            im = im.to(tl.float64)
            w = w.to(tl.float64)
        return (re * re + im * im) * w

    @triton.jit  # type: ignore[untyped-decorator, misc]
    def _rolloff_kernel(
        spec_ptr: Any,
        order_ptr: Any,
        weight_ptr: Any,
        radius_ptr: Any,
        srop_ptr: Any,
        status_ptr: Any,
        n_bins: Any,
        map_stride: Any,
        roll_percent: Any,
        flat_tolerance: Any,
        low: Any,
        high: Any,
        KEEP_DC: tl.constexpr,
        SINGLE: tl.constexpr,
        ACC64: tl.constexpr,
        BLOCK: tl.constexpr,
    ) -> None:
        pid = tl.program_id(0)
        base = spec_ptr + pid.to(tl.int64) * map_stride
        offs0 = tl.arange(0, BLOCK)

        # Pass 1: kept energy, and the last bin that holds any. Block sums are added with
        # Kahan compensation, so float32 accumulation (ACC64 = False) keeps float32 rounding.
        kept = tl.sum(tl.zeros((BLOCK,), dtype=tl.float32), axis=0)
        if ACC64:
            kept = kept.to(tl.float64)
        comp = kept
        last = tl.full((BLOCK,), -1, dtype=tl.int32)
        for start in range(0, n_bins, BLOCK):
            offs = start + offs0
            mask = offs < n_bins
            p = _weighted_power(base, order_ptr, weight_ptr, offs, mask, ACC64)
            y = tl.sum(p, axis=0) - comp
            t = kept + y
            comp = (t - kept) - y
            kept = t
            last = tl.maximum(last, tl.where(p > 0, offs, -1))
        last_bin = tl.max(last, axis=0)

        dc_re = tl.load(base)
        dc_im = tl.load(base + 1)
        if ACC64:
            dc_re = dc_re.to(tl.float64)
            dc_im = dc_im.to(tl.float64)
        everything = kept if KEEP_DC else kept + (dc_re * dc_re + dc_im * dc_im)

        # Pass 2: first bin whose cumulative energy reaches the threshold (a scan per block, a
        # compensated running sum across blocks). float32 maps compare in float32, as the plain
        # path does, so float32 rounding energy (in every bin) does not move the roll-off.
        threshold = kept * roll_percent
        threshold32 = kept.to(tl.float32) * roll_percent
        running = kept * 0.0
        rcomp = running
        found = n_bins
        for start in range(0, n_bins, BLOCK):
            offs = start + offs0
            mask = offs < n_bins
            p = _weighted_power(base, order_ptr, weight_ptr, offs, mask, ACC64)
            cumulative = tl.cumsum(p, axis=0) + (running - rcomp)
            if SINGLE:
                hit = (cumulative.to(tl.float32) >= threshold32) & mask
            else:
                hit = (cumulative >= threshold) & mask
            found = tl.minimum(found, tl.min(tl.where(hit, offs, n_bins), axis=0))
            y = tl.sum(p, axis=0) - rcomp
            t = running + y
            rcomp = (t - running) - y
            running = t
        found = tl.where(found >= n_bins, tl.maximum(last_bin, 0), found)

        # Energies outside [low, high] (NaN and Inf included) get status 3: the caller checks
        # the input map and computes it again, rescaled, or marks it invalid.
        in_range = (everything >= low) & (everything <= high)
        flat = kept <= everything * flat_tolerance
        radius = tl.load(radius_ptr + found).to(tl.float32)
        ok = in_range & (flat == 0)
        tl.store(srop_ptr + pid, tl.where(ok, radius, float("nan")))
        tl.store(status_ptr + pid, tl.where(in_range, tl.where(flat, 1, 0), 3).to(tl.uint8))


def triton_rolloff(
    spectrum: Tensor,
    order: Tensor,
    weight: Tensor,
    radius: Tensor,
    roll_percent: float,
    keep_dc: bool,
    flat_tolerance: float,
    energy_range: tuple[float, float],
    accumulate: str = "float64",
) -> tuple[Tensor, Tensor]:
    """SROPs and status codes of ``m`` half spectra, one program per map.

    Args:
        spectrum: contiguous complex tensor ``(m, H, W // 2 + 1)`` (``rfft2`` output).
        order: int64 bin indices in radius order; ``weight``: Hermitian weights in that order
            (DC weight 0 unless kept); ``radius``: radius of each ordered bin.
        roll_percent, keep_dc, flat_tolerance: as in the plain path.
        energy_range: ``(low, high)`` bounds of a map's total energy (DC included) for which
            the SROP is computed as is; for complex64 spectra ``high`` must not exceed float32's
            largest value (the threshold comparisons are made in float32).
        accumulate: ``"float64"`` (the default) or ``"float32"``: the sums of a complex64
            spectrum in float32 with Kahan-compensated block sums, faster on GPUs with slow
            float64; complex128 spectra are always summed in float64.

    Returns:
        float32 SROPs (NaN where none) and uint8 status codes (0 ok, 1 flat, 3 energy out of
        range, NaN or Inf: to be checked and rescaled by the caller).
    """
    if not _HAVE_TRITON:  # pragma: no cover - guarded by triton_available
        raise RuntimeError("triton_rolloff: Triton is not installed.")
    spectrum = spectrum.contiguous()
    m = spectrum.shape[0]
    n_bins = order.numel()
    pairs = torch.view_as_real(spectrum).reshape(m, -1)
    srop = torch.empty(m, dtype=torch.float32, device=spectrum.device)
    status = torch.empty(m, dtype=torch.uint8, device=spectrum.device)
    if m == 0:
        return srop, status
    if accumulate not in ("float64", "float32"):
        raise ValueError(
            f"triton_rolloff: expected `accumulate` 'float64' or 'float32', got {accumulate!r}."
        )
    single = spectrum.dtype == torch.complex64
    block = min(1024, max(16, triton.next_power_of_2(n_bins)))
    _rolloff_kernel[(m,)](
        pairs,
        order,
        weight,
        radius,
        srop,
        status,
        n_bins,
        pairs.shape[1],
        float(roll_percent),
        float(flat_tolerance),
        float(energy_range[0]),
        float(energy_range[1]),
        KEEP_DC=keep_dc,
        SINGLE=single,
        ACC64=not single or accumulate == "float64",
        BLOCK=block,
    )
    return srop, status
