"""Spectral roll-off points (SROPs) of 1-D and 2-D maps, vectorized over all maps.

Pure tensor math: no Lightning, no logging, no hooks.

The pipeline for a chunk of ``m`` maps of size ``H x W`` (1-D maps are ``1 x L``):

1. ``rfft2`` (half spectrum, ``H x (W // 2 + 1)`` bins);
2. the bins are gathered in increasing radius order (a cached *radius plan* per shape and
   device) and their power is weighted by the Hermitian multiplicity of each half-spectrum bin
   (1 or 2), the DC bin weighted 0 unless ``keep_dc``;
3. cumulative sum along that order, and a binary search for the first bin whose cumulative
   energy reaches ``roll_percent`` of the total: its radius is the SROP.

On CUDA, steps 2 and 3 run as one fused Triton kernel (``_triton.py``) when Triton is installed.

Ties in radius are exact: the plan sorts bins by the integer key ``k^2 W^2 + l^2 H^2``, so a
shell of equal radius is never split by rounding.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections.abc import Iterator
from typing import Final, NamedTuple

import torch
from torch import Tensor

from lightning_srop.functional._plans import (
    DEFAULT_PLAN_CACHE_BYTES,
    _radius_plan,
    _RadiusPlan,
    plan_cache_bytes,
    set_plan_cache_bytes,
)
from lightning_srop.functional._triton import (
    triton_accumulate,
    triton_available,
    triton_rolloff,
)
from lightning_srop.notices import SROPWarning

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "DEFAULT_PLAN_CACHE_BYTES",
    "DEFAULT_ROLL_PERCENT",
    "MAX_RADIUS_1D",
    "MAX_RADIUS_2D",
    "FusedKernelWarning",
    "plan_cache_bytes",
    "set_plan_cache_bytes",
    "spectral_rolloff",
]

#: Largest radial frequency of a 2-D map, in cycles per pixel: ``sqrt(2) / 2``.
MAX_RADIUS_2D: Final[float] = math.sqrt(2.0) / 2.0
#: Largest frequency of a 1-D map, in cycles per sample.
MAX_RADIUS_1D: Final[float] = 0.5
#: Default ``roll_percent``: the share of spectral energy below the roll-off point.
DEFAULT_ROLL_PERCENT: Final[float] = 0.85
#: Default bound on the extra memory one call allocates at a time, per device type.
DEFAULT_MAX_CHUNK_BYTES: Final[dict[str, int]] = {"cpu": 16 * 2**20, "cuda": 1024 * 2**20}
_FALLBACK_CHUNK_BYTES: Final[int] = 256 * 2**20

# A map whose kept spectral energy is below this share of its total energy (DC included) is
# "flat": its non-DC spectrum is only the FFT's rounding of a constant (measured: about
# 1e-14 of the total in float32), not content.
_FLAT_TOLERANCE: Final[dict[torch.dtype, float]] = {
    torch.float32: (16 * torch.finfo(torch.float32).eps) ** 2,
    torch.float64: (16 * torch.finfo(torch.float64).eps) ** 2,
}


def _energy_range(dtype: torch.dtype) -> tuple[float, float]:
    """Total spectral energies (DC included) at which a map's SROP is computed as is.

    Above the upper bound the power has overflowed (or is about to, in the comparisons); below
    the lower bound bins may have fallen into the subnormal range, where their absolute rounding
    (the smallest subnormal, ``tiny * eps``) summed over up to ``2**24`` bins could exceed the
    relative rounding ``eps`` of the smallest non-flat energy (``total * flat tolerance``):
    ``low = 2**24 * tiny / tolerance`` (``2**-64`` in float32, ``2**-902`` in float64). Maps
    outside the range are rescaled by a power of two (exact) and computed again.
    """
    info = torch.finfo(dtype)
    return 2.0**24 * info.tiny / _FLAT_TOLERANCE[dtype], info.max


_STATUS_OK: Final[int] = 0
_STATUS_FLAT: Final[int] = 1
_STATUS_INVALID: Final[int] = 2
# Internal: the map's energy left the range of _energy_range (over- or underflow) or is not
# finite; _compute checks the input map and computes it again, rescaled, or marks it invalid.
_STATUS_RESCALE: Final[int] = 3


class RolloffResult(NamedTuple):
    """SROPs together with the reason a map has none.

    Attributes:
        srop: float32 SROPs, NaN where the map is flat or invalid.
        flat: bool, the map has no spectral energy outside the bins left out (e.g. constant).
        invalid: bool, the map holds NaN or Inf values.
    """

    srop: Tensor
    flat: Tensor
    invalid: Tensor


def _check_options(roll_percent: object, ndim: object, keep_dc: object, where: str) -> None:
    """Check the options shared by the function, the Metric and the callback."""
    if isinstance(ndim, bool) or ndim not in (1, 2):
        raise ValueError(f"{where}: expected `ndim` to be 1 or 2, got {ndim!r}.")
    if isinstance(roll_percent, bool) or not isinstance(roll_percent, numbers.Real):
        raise TypeError(
            f"{where}: expected `roll_percent` to be a float in (0, 1], "
            f"got {type(roll_percent).__name__} {roll_percent!r}."
        )
    if not 0.0 < float(roll_percent) <= 1.0:
        raise ValueError(
            f"{where}: expected `roll_percent` in (0, 1], got {roll_percent!r} "
            "(the share of spectral energy below the roll-off, e.g. 0.85)."
        )
    if not isinstance(keep_dc, bool):
        raise TypeError(f"{where}: expected `keep_dc` to be a bool, got {keep_dc!r}.")


def _check_inputs(x: object, roll_percent: object, ndim: object, keep_dc: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"spectral_rolloff: expected `x` to be a torch.Tensor, got {type(x).__name__}."
        )
    _check_options(roll_percent, ndim, keep_dc, "spectral_rolloff")
    assert isinstance(x, Tensor)
    if x.is_complex():
        raise TypeError(
            f"spectral_rolloff: expected a real floating-point tensor, got complex dtype {x.dtype}; "
            "pass the feature maps themselves, not their spectrum."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"spectral_rolloff: expected a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got {x.dtype}; convert with `x.float()`."
        )
    if x.dim() < int(ndim):  # type: ignore[call-overload]
        raise ValueError(
            f"spectral_rolloff: expected a tensor with at least ndim={ndim} dimensions "
            f"(the map's {'H, W' if ndim == 2 else 'L'}), got shape {tuple(x.shape)}."
        )
    if any(s == 0 for s in x.shape[x.dim() - int(ndim) :]):  # type: ignore[call-overload]
        raise ValueError(
            f"spectral_rolloff: expected non-empty maps, got map size "
            f"{tuple(x.shape[x.dim() - int(ndim) :])} in shape {tuple(x.shape)}."  # type: ignore[call-overload]
        )


def _iter_map_chunks(
    x: Tensor, lead: int, map_shape: tuple[int, int], maps: int
) -> Iterator[Tensor]:
    """Yield ``(m, H, W)`` chunks of the maps of ``x`` in row-major order, ``m <= maps``.

    ``x`` has ``lead`` leading dims before the map dims. Slices are taken along the leading
    dims, so a tensor whose leading dims cannot be merged without a copy (channels_last, a
    permuted view) is only ever copied one chunk at a time.
    """
    if lead == 0:
        yield x.reshape(1, *map_shape)
        return
    per_row = math.prod(x.shape[1:lead])
    if per_row <= maps or lead == 1:
        step = max(1, maps // max(per_row, 1))
        for start in range(0, x.shape[0], step):
            yield x[start : start + step].reshape(-1, *map_shape)
    else:
        for row in x:
            yield from _iter_map_chunks(row, lead - 1, map_shape, maps)


# ---------------------------------------------------------------- the fused kernel's guard


class FusedKernelWarning(SROPWarning):
    """The fused Triton kernel raised or failed its self-check; the plain path is used instead.

    A :class:`~lightning_srop.notices.SROPWarning`, so filtering those filters this too.

    Emitted once per device, compute dtype and accumulation. Results are never taken from a
    kernel that failed: the plain PyTorch path computes them, for the rest of the process.
    """


# (device, compute dtype, accumulation) -> True: checked and in use; False: disabled.
_FUSED_STATE: dict[tuple[str, torch.dtype, str], bool] = {}
_FUSED_LOCK = threading.Lock()
_SELF_CHECK_RTOL: Final[float] = 1e-5


def _fused_rolloff(
    spectrum: Tensor,
    map_shape: tuple[int, int],
    plan: _RadiusPlan,
    roll_percent: float,
    keep_dc: bool,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor] | None:
    """The fused kernel's SROPs and status codes, or ``None`` when the plain path must be used.

    The first use per (device, dtype, accumulation) checks the kernel on a few maps of the
    chunk's own shape against a float64 computation (:func:`_fused_self_check`); a failed
    check, and any error at any launch, emits one :class:`FusedKernelWarning` and disables the
    kernel for that key for the rest of the process.
    """
    accumulate = triton_accumulate() if dtype == torch.float32 else "float64"
    key = (str(spectrum.device), dtype, accumulate)
    state = _FUSED_STATE.get(key)
    if state is False:
        return None
    try:
        if state is None:
            problem = _fused_self_check(
                map_shape, spectrum.device, roll_percent, keep_dc, dtype, accumulate
            )
            if problem is not None:
                _disable_fused(key, problem)
                return None
            with _FUSED_LOCK:
                _FUSED_STATE.setdefault(key, True)
        return _launch_fused(spectrum, plan, roll_percent, keep_dc, dtype, accumulate)
    except Exception as error:  # compile, launch or driver errors: never break the user's run
        _disable_fused(key, f"raised {type(error).__name__}: {error}")
        return None


def _launch_fused(
    spectrum: Tensor,
    plan: _RadiusPlan,
    roll_percent: float,
    keep_dc: bool,
    dtype: torch.dtype,
    accumulate: str,
) -> tuple[Tensor, Tensor]:
    weight = plan.weight[dtype] if keep_dc else plan.weight_no_dc[dtype]
    return triton_rolloff(
        spectrum,
        plan.order,
        weight,
        plan.radius[dtype],
        roll_percent,
        keep_dc,
        _FLAT_TOLERANCE[dtype],
        _energy_range(dtype),
        accumulate,
    )


def _disable_fused(key: tuple[str, torch.dtype, str], problem: str) -> None:
    with _FUSED_LOCK:
        if _FUSED_STATE.get(key) is False:
            return
        _FUSED_STATE[key] = False
    device, dtype, accumulate = key
    warnings.warn(
        f"lightning_srop: the fused Triton SROP kernel on {device} for {dtype} maps "
        f"(accumulate={accumulate}) {problem}. SROPs are computed by the plain PyTorch path "
        "instead for the rest of this process (correct, slower). Please report this with your "
        "GPU, driver, torch and triton versions; LIGHTNING_SROP_DISABLE_TRITON=1 skips the "
        "kernel and this check.",
        FusedKernelWarning,
        stacklevel=5,
    )


def _self_check_maps(height: int, width: int, dtype: torch.dtype) -> Tensor:
    """Maps of one shape whose SROPs the self-check knows: random, post-ReLU, offset, an
    analytic cosine, a constant (flat) and a zero map (energy out of range)."""
    gen = torch.Generator().manual_seed(20261127)
    noise = torch.randn(8, height, width, generator=gen, dtype=torch.float64)
    noise[4:6] = noise[4:6].relu()
    noise[6:] += 3.0
    i = torch.arange(height, dtype=torch.float64)[:, None]
    j = torch.arange(width, dtype=torch.float64)[None, :]
    cosine = torch.cos(2 * math.pi * ((height // 3) * i / height + (width // 4) * j / width) + 0.3)
    constant = torch.full((1, height, width), 1.5, dtype=torch.float64)
    zero = torch.zeros(1, height, width, dtype=torch.float64)
    return torch.cat([noise, cosine[None], constant, zero]).to(dtype)


def _fused_self_check(
    map_shape: tuple[int, int],
    device: torch.device,
    roll_percent: float,
    keep_dc: bool,
    dtype: torch.dtype,
    accumulate: str,
) -> str | None:
    """Run the kernel on :func:`_self_check_maps`; ``None`` if it agrees, else the problem.

    Agreement follows the precision rule: each SROP must be a radius ``r`` whose cumulative
    energy (float64, on CPU) reaches ``roll_percent * E`` within a relative ``1e-5`` while
    the energy of the radii below ``r`` does not; flat and out-of-range codes must be exact.
    """
    height, width = map_shape
    maps = _self_check_maps(height, width, dtype)
    cpu = torch.device("cpu")
    cpu_plan = _radius_plan(height, width, cpu)
    device_plan = _radius_plan(height, width, device)
    spectrum = torch.fft.rfft2(maps.to(device))
    srop, status = _launch_fused(spectrum, device_plan, roll_percent, keep_dc, dtype, accumulate)
    srop, status = srop.float().cpu(), status.cpu()
    # float64 reference on CPU: cumulative weighted power in radius order.
    power = torch.view_as_real(torch.fft.rfft2(maps.double())).square().sum(-1)
    power = power.reshape(maps.shape[0], -1)
    weight = cpu_plan.weight[torch.float64] if keep_dc else cpu_plan.weight_no_dc[torch.float64]
    cumulative = (power[:, cpu_plan.order] * weight).cumsum(1)
    kept = cumulative[:, -1]
    everything = kept if keep_dc else kept + power[:, 0]
    radius = cpu_plan.radius[torch.float32]
    want_status = [_STATUS_OK] * 9 + [_STATUS_FLAT, _STATUS_RESCALE]
    if keep_dc:
        want_status[9] = _STATUS_OK  # with the DC bin kept, a constant's SROP is 0
    if status.tolist() != want_status:
        return f"failed its self-check: status codes {status.tolist()}, expected {want_status}"
    for index in range(len(want_status)):
        if want_status[index] != _STATUS_OK:
            if not math.isnan(float(srop[index])):
                return (
                    f"failed its self-check: map {index} has no SROP but got {float(srop[index])}"
                )
            continue
        target = roll_percent * float(kept[index])
        slack = _SELF_CHECK_RTOL * float(kept[index])
        got = float(srop[index])
        at = cumulative[index][radius <= got]
        below = cumulative[index][radius < got]
        reached = at.numel() > 0 and float(at[-1]) >= target - slack
        early = below.numel() > 0 and float(below[-1]) >= target + slack
        if not reached or early or not float(everything[index]) > 0:
            return (
                f"failed its self-check on {height} x {width} maps: map {index} got SROP {got}, "
                "not a roll-off of the float64 computation"
            )
    return None


def _select_maps(
    source: Tensor, lead_shape: tuple[int, ...], index: Tensor, map_shape: tuple[int, int]
) -> Tensor:
    """The maps at flat (row-major) positions ``index`` of ``source``'s leading dims."""
    if not lead_shape:
        return source.reshape(1, *map_shape)
    coords = torch.unravel_index(index, lead_shape)
    return source[coords].reshape(-1, *map_shape)


class _Workspace:
    """Buffers of one call, sized for its largest chunk and reused by every chunk.

    Reuse keeps the work in cache and, on CPU, spares the page faults of fresh large
    allocations per chunk. (The spectrum itself is not preallocated: ``rfft2(..., out=)``
    measured slower than letting it allocate, as it copies into ``out``.)
    """

    def __init__(
        self, maps: int, height: int, width: int, dtype: torch.dtype, device: torch.device
    ):
        self.maps = maps
        self.shape = (height, width)
        self.dtype = dtype
        self.device = device
        self.fused = triton_available(device)
        self.cast: Tensor | None = None
        self._power: Tensor | None = None
        self._ordered: Tensor | None = None

    def plain_buffers(self) -> tuple[Tensor, Tensor]:
        """Power and radius-ordered buffers of the plain path (allocated on first use)."""
        if self._power is None or self._ordered is None:
            height, width = self.shape
            half = width // 2 + 1
            self._power = torch.empty(self.maps, height, half, dtype=self.dtype, device=self.device)
            self._ordered = torch.empty(
                self.maps, height * half, dtype=self.dtype, device=self.device
            )
        return self._power, self._ordered

    def centered(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """``maps`` in the compute dtype minus each map's mean, and the means.

        Subtracting the mean first keeps the FFT's rounding on the map's variation instead of
        its offset: a near-constant map (a std of 5e-6 around -0.1) loses its content to the
        rounding of a float32 FFT of the raw values, never to that of the centered ones. The
        subtraction is exact where it matters (Sterbenz: values within a factor 2 of the mean).
        """
        if self.cast is None:
            self.cast = torch.empty(
                self.maps, *maps.shape[1:], dtype=self.dtype, device=maps.device
            )
        mean = maps.mean(dim=(-2, -1), keepdim=True, dtype=self.dtype)
        return torch.sub(maps, mean, out=self.cast[: maps.shape[0]]), mean


def _rolloff_chunk(
    maps: Tensor, plan: _RadiusPlan, roll_percent: float, keep_dc: bool, work: _Workspace
) -> tuple[Tensor, Tensor]:
    """SROPs of one ``(m, H, W)`` chunk: the radius (NaN where none) and a status code."""
    dtype = work.dtype
    m = maps.shape[0]
    height, width = work.shape
    centered, mean = work.centered(maps)
    spectrum = torch.fft.rfft2(centered)
    # The DC bin is the map's sum: put it back, so that the flat test (and `keep_dc`) see the
    # map's own DC while every other bin comes from the centered, precise transform.
    spectrum[:, 0, 0] = mean.reshape(m) * (height * width)
    weight = plan.weight[dtype] if keep_dc else plan.weight_no_dc[dtype]
    if work.fused:
        fused = _fused_rolloff(spectrum, work.shape, plan, roll_percent, keep_dc, dtype)
        if fused is not None:
            return fused
        work.fused = False  # the kernel is off for this device and dtype: plain path below
    # |F|^2 in the spectrum's own layout: square (re, im) in place over the contiguous pairs,
    # then add the halves; then one gather into radius order. Measured 2 x faster on CPU than
    # mul + addcmul over the strided halves, and 3 x faster than gathering (re, im) pairs.
    pairs = torch.view_as_real(spectrum).square_()
    power_buffer, ordered_buffer = work.plain_buffers()
    power = torch.add(pairs[..., 0], pairs[..., 1], out=power_buffer[:m]).reshape(m, -1)
    dc_power = power[:, 0].clone()
    ordered = torch.gather(power, 1, plan.order.expand(m, -1), out=ordered_buffer[:m])
    ordered.mul_(weight)
    cumulative = ordered.cumsum_(1)
    kept = cumulative[:, -1]
    total = kept if keep_dc else kept + dc_power
    threshold = (kept * roll_percent).unsqueeze(1)
    index = torch.searchsorted(cumulative, threshold).squeeze(1)
    index.clamp_(max=cumulative.shape[1] - 1)
    srop = plan.radius[dtype].index_select(0, index)
    return _finish(srop, kept, total, dtype)


def _finish(srop: Tensor, kept: Tensor, total: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Status codes from the energies, and NaN SROPs where the status is not ok.

    ``total`` outside :func:`_energy_range` (NaN and Inf included) gives ``_STATUS_RESCALE``.
    """
    low, high = _energy_range(dtype)
    in_range = (total >= low) & (total <= high)
    flat = kept <= total * _FLAT_TOLERANCE[dtype]
    status = torch.where(
        in_range,
        flat.to(torch.uint8) * _STATUS_FLAT,
        torch.full_like(flat, _STATUS_RESCALE, dtype=torch.uint8),
    )
    srop = torch.where(status == _STATUS_OK, srop, torch.full_like(srop, math.nan))
    return srop, status


def _pow2_normalized(maps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Scale each finite, non-zero map by a power of two to a max-abs in ``[0.5, 1)``.

    Scaling by a power of two is exact (up to values far below the map's own rounding that
    fall out of range), and an SROP is scale invariant. The factor ``2**-e`` is applied in two
    halves so that it never overflows itself (``e`` reaches 1074 for float64 subnormals).

    Returns:
        the scaled maps (zeros where a map is not finite or all zero), and per map whether it
        is finite and whether it is all zero.
    """
    flat_maps = maps.reshape(maps.shape[0], -1)
    finite = torch.isfinite(flat_maps).all(dim=1)
    amax = torch.where(finite, flat_maps.abs().amax(dim=1), torch.zeros((), dtype=maps.dtype))
    zero = amax == 0
    _, exponent = torch.frexp(amax)
    first = torch.div(-exponent, 2, rounding_mode="floor")
    second = -exponent - first
    two = torch.tensor(2.0, dtype=maps.dtype, device=maps.device)
    factor1 = torch.pow(two, first.to(maps.dtype)).view(-1, *([1] * (maps.dim() - 1)))
    factor2 = torch.pow(two, second.to(maps.dtype)).view(-1, *([1] * (maps.dim() - 1)))
    usable = (finite & ~zero).view(-1, *([1] * (maps.dim() - 1)))
    scaled = torch.where(usable, maps * factor1 * factor2, torch.zeros((), dtype=maps.dtype))
    return scaled, finite, zero


def _spectral_rolloff_impl(
    x: Tensor,
    roll_percent: float = DEFAULT_ROLL_PERCENT,
    ndim: int = 2,
    keep_dc: bool = False,
    max_chunk_bytes: int | None = None,
) -> RolloffResult:
    """Validate, chunk and compute: the shared helper of the function and the Metric."""
    _check_inputs(x, roll_percent, ndim, keep_dc)
    if max_chunk_bytes is not None and (isinstance(max_chunk_bytes, bool) or max_chunk_bytes <= 0):
        raise ValueError(
            f"spectral_rolloff: expected `max_chunk_bytes` to be a positive int or None, "
            f"got {max_chunk_bytes!r}."
        )
    with torch.no_grad():  # an SROP has no useful gradient; activations may still require one
        return _compute(x, float(roll_percent), ndim, keep_dc, max_chunk_bytes)


def _compute(
    x: Tensor, roll_percent: float, ndim: int, keep_dc: bool, max_chunk_bytes: int | None
) -> RolloffResult:
    """The SROPs of validated input, chunk by chunk into preallocated outputs."""
    lead_shape = tuple(x.shape[: x.dim() - ndim])
    map_shape: tuple[int, int] = (
        (int(x.shape[-2]), int(x.shape[-1])) if ndim == 2 else (1, int(x.shape[-1]))
    )
    n_maps = math.prod(lead_shape)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out_srop = torch.empty(n_maps, dtype=torch.float32, device=x.device)
    out_status = torch.empty(n_maps, dtype=torch.uint8, device=x.device)
    if n_maps > 0:
        plan = _radius_plan(map_shape[0], map_shape[1], x.device)
        height, width = map_shape
        item = torch.finfo(dtype).bits // 8
        bins = height * (width // 2 + 1)
        # spectrum (2 items/bin) + power (1) + ordered power/cumsum (1) + a cast copy of the map.
        per_map = item * (4 * bins + height * width) + 64
        budget = max_chunk_bytes
        if budget is None:
            budget = DEFAULT_MAX_CHUNK_BYTES.get(x.device.type, _FALLBACK_CHUNK_BYTES)
        maps_per_chunk = max(1, budget // per_map)
        lead = len(lead_shape)
        source = x if ndim == 2 else x.unsqueeze(-2)
        work = _Workspace(min(maps_per_chunk, n_maps), height, width, dtype, x.device)
        start = 0
        for chunk in _iter_map_chunks(source, lead, map_shape, maps_per_chunk):
            srop, status = _rolloff_chunk(chunk, plan, roll_percent, keep_dc, work)
            stop = start + chunk.shape[0]
            out_srop[start:stop] = srop
            out_status[start:stop] = status
            start = stop
        rescale = out_status == _STATUS_RESCALE
        if bool(rescale.any()):  # rare: over/underflowed energies, NaN/Inf maps, all-zero maps
            index = rescale.nonzero().squeeze(1)
            for part in torch.split(index, maps_per_chunk):
                maps = _select_maps(source, lead_shape, part, map_shape)
                scaled, finite, zero = _pow2_normalized(maps.to(dtype))
                srop, status = _rolloff_chunk(scaled, plan, roll_percent, keep_dc, work)
                status = torch.where(zero, _STATUS_FLAT, status)
                # Still out of range after normalization: only non-finite input gets here.
                status = torch.where(~finite | (status == _STATUS_RESCALE), _STATUS_INVALID, status)
                out_srop[part] = torch.where(status == _STATUS_OK, srop, math.nan).float()
                out_status[part] = status.to(torch.uint8)
    out_srop = out_srop.reshape(lead_shape)
    out_status = out_status.reshape(lead_shape)
    return RolloffResult(out_srop, out_status == _STATUS_FLAT, out_status == _STATUS_INVALID)


def spectral_rolloff(
    x: Tensor,
    roll_percent: float = DEFAULT_ROLL_PERCENT,
    *,
    ndim: int = 2,
    keep_dc: bool = False,
    max_chunk_bytes: int | None = None,
) -> Tensor:
    r"""Spectral roll-off point (SROP) of every map in ``x``.

    The SROP of a map is the smallest radial frequency :math:`r` such that the spectral energy
    of all DFT bins of radius :math:`\le r` is at least ``roll_percent`` of the map's energy.
    Frequencies are in cycles per pixel of the map's own grid, folded to :math:`[-1/2, 1/2)` per
    axis, so a 2-D SROP lies in :math:`[0, \sqrt{2}/2]` and a 1-D SROP in :math:`[0, 1/2]`.

    Args:
        x: real tensor of shape ``(*, H, W)`` (``ndim=2``) or ``(*, L)`` (``ndim=1``); any
            float dtype (half and bfloat16 are computed in float32, float64 in float64), any
            strides (channels_last and other non-contiguous views are fine), CPU or CUDA.
        roll_percent: share :math:`\kappa \in (0, 1]` of the energy below the roll-off.
        ndim: 2 for maps over the last two dims, 1 for signals over the last dim.
        keep_dc: keep the DC bin (the map's mean) in the energy. By default it is left out,
            which is the same as subtracting each map's mean first.
        max_chunk_bytes: bound on the extra memory allocated at a time; maps are processed in
            chunks that fit. ``None`` picks a default per device type (16 MiB on CPU, where it
            also keeps the work in cache, 1 GiB on CUDA).

    Returns:
        float32 tensor of shape ``x.shape[:-ndim]`` on ``x.device``. Flat maps (no energy in the
        bins kept, e.g. constant or all-zero maps) and maps holding NaN or Inf give NaN.

    Raises:
        TypeError: ``x`` is not a real floating-point tensor, or an argument has a wrong type.
        ValueError: ``ndim`` is not 1 or 2, ``roll_percent`` is outside (0, 1], or ``x`` has
            fewer than ``ndim`` dims or an empty map.

    Examples:
        A cosine at 3 cycles along the height and 4 along the width of a 32 x 32 map has its
        whole energy at radius :math:`\sqrt{(3/32)^2 + (4/32)^2} = 5/32`:

        >>> import math, torch
        >>> i, j = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing="ij")
        >>> wave = torch.cos(2 * math.pi * (3 * i / 32 + 4 * j / 32))
        >>> spectral_rolloff(wave).item() == 5 / 32
        True
        >>> spectral_rolloff(torch.randn(8, 16, 28, 28)).shape
        torch.Size([8, 16])
        >>> spectral_rolloff(torch.ones(4, 4))  # a constant map is flat
        tensor(nan)
    """
    return _spectral_rolloff_impl(x, roll_percent, ndim, keep_dc, max_chunk_bytes).srop
