"""The fused CUDA kernel's logic, run on CPU through Triton's interpreter (TRITON_INTERPRET=1).

The interpreter executes the same kernel source op by op, so these tests check the two-pass
scan, the Hermitian weights, flat/invalid codes and the kappa = 1 fallback on any machine, with
float64 accumulation and with the float32 (Kahan-compensated) variant, the self-check that
guards the kernel's first use, and the fallback when the kernel is broken. (Compiled execution
on a GPU is covered by test_cuda.py where a GPU exists.)
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

pytest.importorskip("triton")

CASES = [
    ((7, 7), torch.float32),
    ((12, 12), torch.float64),
    ((5, 9), torch.float32),
    ((33, 20), torch.float32),
    ((1, 16), torch.float32),
    ((64, 64), torch.float32),  # 2112 bins: three blocks of the scan
    ((1, 2500), torch.float64),  # 1251 bins: two blocks
]
ACCUMULATIONS = ("float64", "float32")


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("triton") / "out.pt"
    code = textwrap.dedent(
        f"""
        import math, os, warnings, torch
        from lightning_srop import spectral_rolloff
        from lightning_srop.functional import FusedKernelWarning
        from lightning_srop.functional._triton import triton_available
        from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl, _FUSED_STATE
        assert triton_available(torch.device("cpu")), "interpreter mode not active"
        warnings.simplefilter("error", FusedKernelWarning)  # the real kernel passes its check
        results = {{}}
        for acc in {ACCUMULATIONS!r}:
            os.environ["LIGHTNING_SROP_TRITON_ACCUMULATE"] = acc
            gen = torch.Generator().manual_seed(0)
            for (h, w), dtype in {[(s, str(d)) for s, d in CASES]!r}:
                dtype = getattr(torch, dtype.split(".")[1])
                n = 80 if h * w < 1000 else 8
                x = torch.randn(n, h, w, generator=gen, dtype=torch.float64).to(dtype)
                x[0] = 0.0
                x[1] = 2.5
                x[2, 0, 0] = math.nan
                x[3, -1, -1] = math.inf
                for kappa in (0.85, 0.4):
                    for keep_dc in (False, True):
                        r = _spectral_rolloff_impl(x, kappa, 2, keep_dc)
                        key = f"{{h}}x{{w}}-{{dtype}}-{{kappa}}-{{keep_dc}}-{{acc}}"
                        results[key] = (x, r.srop, r.flat, r.invalid)
            # kappa = 1 on a map whose highest-radius bins are empty (a low-pass cosine).
            i, j = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
            wave = torch.cos(2 * math.pi * (2 * i + 3 * j) / 16)
            results[f"kappa1-{{acc}}"] = spectral_rolloff(wave, 1.0)
        results["state"] = {{str(k): v for k, v in _FUSED_STATE.items()}}
        torch.save(results, {str(out)!r})
        """
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an install
    env = {**os.environ, "PYTHONPATH": root, "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parent)
    return torch.load(out, weights_only=False)


def test_fused_kernel_matches_float64_reference(interpreted: dict[str, object]) -> None:
    checked = 0
    for key, value in interpreted.items():
        if key.startswith("kappa1") or key == "state":
            continue
        x, srop, _flat, invalid = value  # type: ignore[misc]
        _, _, kappa, keep_dc, _acc = key.split("-")
        want, margin = srop_reference_with_margin(
            x.double().numpy(), float(kappa), keep_dc == "True"
        )
        got = srop.double().numpy()
        assert bool(invalid[2]) and bool(invalid[3]) and not bool(invalid[4:].any()), key
        valid = ~np.isnan(want)
        assert np.array_equal(np.isnan(got), ~valid), key
        differs = valid & (got != want.astype(np.float32).astype(np.float64))
        assert np.all(margin[differs] < 1e-5), key
        checked += 1
    assert checked == len(CASES) * 4 * len(ACCUMULATIONS)
    # Both variants were checked and kept (float64 maps always accumulate in float64).
    assert interpreted["state"] == {
        "('cpu', torch.float32, 'float64')": True,
        "('cpu', torch.float64, 'float64')": True,
        "('cpu', torch.float32, 'float32')": True,
    }


@pytest.mark.parametrize("acc", ACCUMULATIONS)
def test_fused_kernel_flat_maps(interpreted: dict[str, object], acc: str) -> None:
    _, _, flat, _ = interpreted[f"7x7-torch.float32-0.85-False-{acc}"]  # type: ignore[misc]
    assert bool(flat[0]) and bool(flat[1]) and not bool(flat[4:].any())
    _, srop, flat, _ = interpreted[f"7x7-torch.float32-0.85-True-{acc}"]  # type: ignore[misc]
    assert bool(flat[0]) and not bool(flat[1])  # with DC kept, a constant is not flat ...
    assert float(srop[1]) == 0.0  # ... its SROP is the DC radius


@pytest.mark.parametrize("acc", ACCUMULATIONS)
def test_fused_kernel_kappa_one_lands_on_the_last_bin_with_energy(
    interpreted: dict[str, object], acc: str
) -> None:
    got = float(interpreted[f"kappa1-{acc}"])  # type: ignore[arg-type]
    assert got == pytest.approx(math.hypot(2 / 16, 3 / 16), rel=1e-6)


@pytest.mark.parametrize("failure", ["raise", "wrong"])
def test_broken_kernel_is_caught_by_the_guard(tmp_path: Path, failure: str) -> None:
    """The real kernel, interpreted, made to fail: one warning, plain results, no bad numbers."""
    out = tmp_path / "out.pt"
    code = textwrap.dedent(
        f"""
        import warnings, torch
        import lightning_srop.functional._triton as kernel_module
        from lightning_srop.functional import FusedKernelWarning
        from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl
        import sys
        module = sys.modules["lightning_srop.functional.spectral_rolloff"]
        real = kernel_module.triton_rolloff
        launches = []

        def broken(spectrum, *args, **kwargs):
            launches.append(spectrum.shape[0])
            if {failure!r} == "raise":
                raise RuntimeError("triton.compiler.errors.CompilationError: broken")
            srop, status = real(spectrum, *args, **kwargs)
            return srop * 0.5, status  # every SROP off by a factor of two

        module.triton_rolloff = broken
        gen = torch.Generator().manual_seed(3)
        x = torch.randn(60, 10, 13, generator=gen)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = _spectral_rolloff_impl(x, max_chunk_bytes=5_000)
            second = _spectral_rolloff_impl(x * 3.0)
        kinds = [w.category.__name__ for w in caught]
        torch.save((x, first.srop, second.srop, kinds, launches), {str(out)!r})
        """
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "TRITON_INTERPRET": "1"}
    env.pop("LIGHTNING_SROP_DISABLE_TRITON", None)
    env.pop("LIGHTNING_SROP_TRITON_ACCUMULATE", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parent)
    x, first, second, kinds, launches = torch.load(out, weights_only=False)
    assert kinds.count("FusedKernelWarning") == 1
    assert launches == [11]  # only the self-check's 11 maps ever reached the kernel
    want, margin = srop_reference_with_margin(x.double().numpy())
    for got in (first, second):
        differs = got.double().numpy() != want.astype(np.float32)
        assert np.all(margin[differs] < 1e-5)
