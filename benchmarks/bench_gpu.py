"""CUDA: the fused Triton path against the plain PyTorch path and the read floor.

    .venv/bin/python benchmarks/bench_gpu.py

Prints, per activation shape (PERF_NOTES.md's set), milliseconds of: `x.sum()` (one read of the
maps at memory bandwidth, the floor), the plain pipeline (LIGHTNING_SROP_DISABLE_TRITON=1),
the fused path, and the share of maps on which both agree. Needs a CUDA device.
"""

from __future__ import annotations

import os

import torch

from lightning_srop import spectral_rolloff

SHAPES = [
    (256, 64, 112, 112),
    (256, 64, 56, 56),
    (256, 256, 28, 28),
    (256, 512, 14, 14),
    (256, 2048, 7, 7),
]


def _time(fn: object, repeats: int = 20) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()  # type: ignore[operator]
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()  # type: ignore[operator]
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / repeats


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device.")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'maps':<22}{'read ms':>9}{'plain ms':>10}{'fused ms':>10}{'speed-up':>10}{'equal':>9}")
    for shape in SHAPES:
        x = torch.randn(shape, device="cuda").relu_()
        read = _time(lambda x=x: x.sum())
        os.environ["LIGHTNING_SROP_DISABLE_TRITON"] = "1"
        plain_out = spectral_rolloff(x)
        plain = _time(lambda x=x: spectral_rolloff(x))
        del os.environ["LIGHTNING_SROP_DISABLE_TRITON"]
        fused_out = spectral_rolloff(x)
        fused = _time(lambda x=x: spectral_rolloff(x))
        equal = (plain_out == fused_out).float().mean().item()
        print(
            f"{'x'.join(map(str, shape)):<22}{read:>9.3f}{plain:>10.3f}{fused:>10.3f}{plain / fused:>10.2f}{equal:>9.4%}"
        )
        del x


if __name__ == "__main__":
    main()
