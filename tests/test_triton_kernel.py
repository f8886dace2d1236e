"""The fused CUDA kernel's logic, run on CPU through Triton's interpreter (TRITON_INTERPRET=1).

The interpreter executes the same kernel source op by op, so these tests check the two-pass
scan, the Hermitian weights, flat/invalid codes and the kappa = 1 fallback on any machine.
(Compiled execution on a GPU is covered by test_functional's CUDA tests where a GPU exists.)
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
]


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("triton") / "out.pt"
    code = textwrap.dedent(
        f"""
        import math, torch
        from lightning_srop import spectral_rolloff
        from lightning_srop.functional._triton import triton_available
        from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl
        assert triton_available(torch.device("cpu")), "interpreter mode not active"
        gen = torch.Generator().manual_seed(0)
        results = {{}}
        for (h, w), dtype in {[(s, str(d)) for s, d in CASES]!r}:
            dtype = getattr(torch, dtype.split(".")[1])
            x = torch.randn(120, h, w, generator=gen, dtype=torch.float64).to(dtype)
            x[0] = 0.0
            x[1] = 2.5
            x[2, 0, 0] = math.nan
            x[3, -1, -1] = math.inf
            for kappa in (0.85, 0.4):
                for keep_dc in (False, True):
                    r = _spectral_rolloff_impl(x, kappa, 2, keep_dc)
                    results[f"{{h}}x{{w}}-{{dtype}}-{{kappa}}-{{keep_dc}}"] = (x, r.srop, r.flat, r.invalid)
        # kappa = 1 on a map whose highest-radius bins are exactly empty (a low-pass cosine).
        i, j = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        results["kappa1"] = spectral_rolloff(torch.cos(2 * math.pi * (2 * i + 3 * j) / 16), 1.0)
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
        if key == "kappa1":
            continue
        x, srop, _flat, invalid = value  # type: ignore[misc]
        _, _, kappa, keep_dc = key.split("-")
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
    assert checked == len(CASES) * 4


def test_fused_kernel_flat_maps(interpreted: dict[str, object]) -> None:
    _, _, flat, _ = interpreted["7x7-torch.float32-0.85-False"]  # type: ignore[misc]
    assert bool(flat[0]) and bool(flat[1]) and not bool(flat[4:].any())
    _, srop, flat, _ = interpreted["7x7-torch.float32-0.85-True"]  # type: ignore[misc]
    assert bool(flat[0]) and not bool(flat[1])  # with DC kept, a constant is not flat ...
    assert float(srop[1]) == 0.0  # ... its SROP is the DC radius


def test_fused_kernel_kappa_one_lands_on_the_last_bin_with_energy(
    interpreted: dict[str, object],
) -> None:
    assert float(interpreted["kappa1"]) == pytest.approx(math.hypot(2 / 16, 3 / 16), rel=1e-6)  # type: ignore[arg-type]
