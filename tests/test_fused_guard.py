"""The fused kernel's guard (issue 10, "Guarded"), in process with stand-in kernels.

``triton_available`` is forced true on CPU and ``triton_rolloff`` replaced by a stand-in that
raises or returns wrong numbers: the guard must warn once per (device, dtype, accumulation),
fall back to the plain path, and never return the stand-in's numbers. Results are compared
with the float64 NumPy reference. The real kernel passing its self-check, and the guard around
it, are checked through Triton's interpreter in test_triton_kernel.py.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference_with_margin

from lightning_srop.functional import FusedKernelWarning
from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl

srop_module = sys.modules["lightning_srop.functional.spectral_rolloff"]


def _assert_reference(got: torch.Tensor, x: torch.Tensor, **kwargs: object) -> None:
    want, margin = srop_reference_with_margin(x.double().numpy(), **kwargs)  # type: ignore[arg-type]
    got_np = got.double().numpy()
    assert np.array_equal(np.isnan(got_np), np.isnan(want))
    differs = ~np.isnan(want) & (got_np != want.astype(np.float32))
    assert np.all(margin[differs] < 1e-5)


@pytest.fixture
def forced_fused(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[..., object]], list[int]]:
    """Install a stand-in kernel; returns a list that counts its calls."""
    monkeypatch.setattr(srop_module, "_FUSED_STATE", {})
    monkeypatch.setattr(srop_module, "triton_available", lambda device: True)
    monkeypatch.delenv("LIGHTNING_SROP_TRITON_ACCUMULATE", raising=False)

    def install(kernel: Callable[..., object]) -> list[int]:
        calls: list[int] = []

        def counted(*args: object, **kwargs: object) -> object:
            calls.append(1)
            return kernel(*args, **kwargs)

        monkeypatch.setattr(srop_module, "triton_rolloff", counted)
        return calls

    return install


def _maps(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 12, 14, generator=gen)
    x[0] = 0.0
    x[1] = 2.0
    return x


def _raise(*args: object, **kwargs: object) -> object:
    raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


def _wrong(spectrum: torch.Tensor, *args: object, **kwargs: object) -> object:
    m = spectrum.shape[0]
    return torch.full((m,), 0.25), torch.zeros(m, dtype=torch.uint8)


def _wrong_status(spectrum: torch.Tensor, *args: object, **kwargs: object) -> object:
    m = spectrum.shape[0]
    return torch.full((m,), 0.25), torch.ones(m, dtype=torch.uint8)


@pytest.mark.parametrize("kernel", [_raise, _wrong, _wrong_status])
def test_a_failing_kernel_warns_once_and_falls_back(
    forced_fused: Callable[[Callable[..., object]], list[int]], kernel: Callable[..., object]
) -> None:
    calls = forced_fused(kernel)
    x = _maps()
    with pytest.warns(FusedKernelWarning, match="plain PyTorch path") as record:
        first = _spectral_rolloff_impl(x, max_chunk_bytes=20_000)  # several chunks
    assert len([w for w in record if issubclass(w.category, FusedKernelWarning)]) == 1
    _assert_reference(first.srop, x)
    assert first.flat.tolist()[:3] == [True, True, False]
    n_calls = len(calls)
    assert n_calls == 1  # only the self-check (or the first launch) touched the kernel
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for this key, no more kernel calls
        again = _spectral_rolloff_impl(_maps(1))
    assert len(calls) == n_calls
    _assert_reference(again.srop, _maps(1))
    assert srop_module._FUSED_STATE[("cpu", torch.float32, "float64")] is False
    with pytest.warns(FusedKernelWarning, match="torch.float64") as record:  # its own key
        double = _spectral_rolloff_impl(_maps(2).double())
    assert len([w for w in record if issubclass(w.category, FusedKernelWarning)]) == 1
    _assert_reference(double.srop, _maps(2))


def _reference_kernel(spectrum: torch.Tensor, *args: object, **kwargs: object) -> object:
    """An independent correct stand-in: back to the maps, then the float64 NumPy reference."""
    width = 14  # every map in these tests is 12 x 14
    maps = torch.fft.irfft2(spectrum.to(torch.complex128), s=(spectrum.shape[1], width))
    keep_dc = bool(args[4])
    srop, _ = srop_reference_with_margin(maps.numpy(), float(args[3]), keep_dc)  # type: ignore[arg-type]
    srop_t = torch.from_numpy(srop).float()
    # Flat: (float32 rounding of) a constant; zero energy: out of range.
    varying = (maps - maps.mean(dim=(-2, -1), keepdim=True)).square().sum(dim=(-2, -1))
    flat = (varying <= 1e-10 * maps.square().sum(dim=(-2, -1))) & ~keep_dc
    status = flat.to(torch.uint8)
    status[maps.abs().amax(dim=(-2, -1)) < 1e-30] = 3
    srop_t[status != 0] = float("nan")
    return srop_t, status


def test_an_error_after_a_passed_self_check_falls_back_for_that_chunk(
    forced_fused: Callable[[Callable[..., object]], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel that passes the self-check (here: a correct stand-in) and later raises."""
    state = {"launches": 0}

    def correct_then_raise(*args: object, **kwargs: object) -> object:
        state["launches"] += 1
        if state["launches"] > 1:
            raise RuntimeError("an illegal memory access was encountered")
        return _reference_kernel(*args, **kwargs)

    forced_fused(correct_then_raise)
    x = _maps()
    with pytest.warns(FusedKernelWarning, match="raised RuntimeError: an illegal memory"):
        result = _spectral_rolloff_impl(x)
    assert state["launches"] == 2  # the self-check, then the failing launch
    _assert_reference(result.srop, x)


def test_self_check_passes_a_correct_kernel_silently(
    forced_fused: Callable[[Callable[..., object]], list[int]],
) -> None:
    """The guard's own check accepts an independent correct answer (no false alarms)."""

    calls = forced_fused(_reference_kernel)
    x = _maps()
    x[0] = 1.0  # no zero map in the user's data: every status comes from the stand-in
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kappa in (0.85, 0.3, 1.0):
            got = _spectral_rolloff_impl(x, kappa)
            _assert_reference(got.srop, x, kappa=kappa)
    assert len(calls) == 4  # one self-check (first call) and one launch per call
    assert srop_module._FUSED_STATE[("cpu", torch.float32, "float64")] is True


def test_disable_env_var_skips_the_kernel(
    forced_fused: Callable[[Callable[..., object]], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # triton_available is what reads the variable: restore the real one.
    from lightning_srop.functional import _triton

    monkeypatch.setattr(srop_module, "triton_available", _triton.triton_available)
    monkeypatch.setenv("LIGHTNING_SROP_DISABLE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # would enable the kernel on CPU otherwise
    counted = forced_fused(_raise)
    x = _maps()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _spectral_rolloff_impl(x)
    assert counted == []
    _assert_reference(got.srop, x)


def test_bad_accumulate_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_srop.functional._triton import triton_accumulate

    monkeypatch.setenv("LIGHTNING_SROP_TRITON_ACCUMULATE", "float16")
    with pytest.raises(ValueError, match="LIGHTNING_SROP_TRITON_ACCUMULATE"):
        triton_accumulate()
    monkeypatch.setenv("LIGHTNING_SROP_TRITON_ACCUMULATE", "float32")
    assert triton_accumulate() == "float32"
