"""GPU: the plain path against the fused Triton kernel (float64 and float32 accumulation).

    python benchmarks/bench_gpu.py                    # on a CUDA machine (gpu_check.sh runs it)
    python benchmarks/bench_gpu.py --device cpu --smoke   # a quick run of the script's logic

Part 1, per activation shape (PERF_NOTES.md's set), milliseconds of:

- `read`: `x.sum()`, one pass over the maps at memory bandwidth, the floor;
- `rfft2`: cuFFT's half spectrum alone;
- `plain`: the PyTorch pipeline (LIGHTNING_SROP_DISABLE_TRITON=1);
- `fused64` / `fused32`: the Triton kernel with float64 accumulation (the default) and with
  float32 Kahan-compensated accumulation (LIGHTNING_SROP_TRITON_ACCUMULATE=float32);

then `read%`, the read floor as a share of the fused time (what share of the memory bandwidth
the fused path reaches), and per path the share of maps whose SROP equals the float64 NumPy
reference (tests/_srop_reference.py) on a sample of `--ref-maps` maps.

Part 2: torchvision ResNet-50 (random weights), batch 128 at 224 px, bf16 autocast, eval:
the forward alone against the forward with `spectral_rolloff` of every default layer's output
(Conv2d and pooling, hooked with `register_forward_hook`), per path, as a ratio, with the peak
extra memory (CUDA allocator peak minus the forward's own peak).

Timings are CUDA events over `--repeats` runs after warm-up, all paths measured in one run on
one device. A fused path whose self-check fails falls back to the plain path with a warning;
the table then says so ("off").
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package first
from lightning_srop import spectral_rolloff

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _srop_reference import srop_reference

SHAPES = [
    (256, 64, 112, 112),
    (256, 64, 56, 56),
    (256, 256, 28, 28),
    (256, 512, 14, 14),
    (256, 2048, 7, 7),
]
SMOKE_SHAPES = [(2, 8, 56, 56), (2, 16, 28, 28), (2, 32, 7, 7)]
PATHS = {
    "plain": {"LIGHTNING_SROP_DISABLE_TRITON": "1"},
    "fused64": {"LIGHTNING_SROP_TRITON_ACCUMULATE": "float64"},
    "fused32": {"LIGHTNING_SROP_TRITON_ACCUMULATE": "float32"},
}
DEFAULT_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _set_path(name: str) -> None:
    for key in ("LIGHTNING_SROP_DISABLE_TRITON", "LIGHTNING_SROP_TRITON_ACCUMULATE"):
        os.environ.pop(key, None)
    os.environ.update(PATHS[name])


def _fused_state() -> dict[tuple[str, torch.dtype, str], bool]:
    module = sys.modules["lightning_srop.functional.spectral_rolloff"]
    return dict(module._FUSED_STATE)  # type: ignore[attr-defined]


def _path_ok(name: str, device: torch.device) -> bool:
    """Whether the path runs what it says (the fused kernel available and not disabled)."""
    if name == "plain":
        return True
    from lightning_srop.functional._triton import triton_available

    if not triton_available(device):
        return False
    acc = PATHS[name]["LIGHTNING_SROP_TRITON_ACCUMULATE"]
    return _fused_state().get((str(device), torch.float32, acc), True)


def _timer(device: torch.device, repeats: int) -> Callable[[Callable[[], object]], float]:
    def cuda_time(fn: Callable[[], object]) -> float:
        for _ in range(2):
            fn()
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(repeats):
            fn()
        stop.record()
        torch.cuda.synchronize()
        return start.elapsed_time(stop) / repeats

    def cpu_time(fn: Callable[[], object]) -> float:
        fn()
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best * 1e3

    return cuda_time if device.type == "cuda" else cpu_time


def bench_shapes(args: argparse.Namespace, device: torch.device) -> None:
    timed = _timer(device, args.repeats)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    paths = [p for p in PATHS if p == "plain" or device.type == "cuda" or args.fused_on_cpu]
    print(f"\n# Part 1: per shape, ms ({args.repeats} runs each)")
    head = f"{'maps':<20}{'read':>8}{'rfft2':>8}" + "".join(f"{p:>9}" for p in paths)
    head += f"{'read%':>8}" + "".join(f"{'eq ' + p:>13}" for p in paths)
    print(head)
    for shape in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, generator=gen).relu_()
        read = timed(lambda x=x: x.sum())
        fft = timed(lambda x=x: torch.fft.rfft2(x))
        sample = x.reshape(-1, *shape[-2:])[:: max(1, shape[0] * shape[1] // args.ref_maps)]
        sample = sample[: args.ref_maps]
        want = srop_reference(sample.double().cpu().numpy()).astype(np.float32)
        times, equal = {}, {}
        for path in paths:
            _set_path(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = spectral_rolloff(sample).cpu().numpy()  # first use: the self-check
            for w in caught:
                print(f"  warning ({path}): {w.message}")
            times[path] = timed(lambda x=x: spectral_rolloff(x))
            both = ~np.isnan(want)
            equal[path] = float(np.mean(got[both] == want[both])) if both.any() else 1.0
            if not _path_ok(path, device):
                times[path] = math.nan  # fell back to plain: not the fused kernel's time
        fused = times.get("fused64", math.nan)
        row = f"{'x'.join(map(str, shape)):<20}{read:>8.3f}{fft:>8.3f}"
        row += "".join(f"{times[p]:>9.3f}" for p in paths)
        row += f"{100 * read / fused:>7.1f}%" if math.isfinite(fused) else f"{'n/a':>8}"
        row += "".join(f"{equal[p]:>13.4%}" for p in paths)
        print(row, flush=True)
        del x
    _set_path("fused64")


def bench_resnet50(args: argparse.Namespace, device: torch.device) -> None:
    from torchvision.models import resnet50

    batch = 4 if args.smoke else args.batch
    size = 64 if args.smoke else 224
    timed = _timer(device, max(3, args.repeats // 2))
    torch.manual_seed(0)
    model = resnet50().to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    layers = [m for m in model.modules() if isinstance(m, DEFAULT_LAYERS)]
    srops: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if output.dim() == 4 and output.shape[-1] > 1:
            srops.append(spectral_rolloff(output))

    def forward() -> None:
        with torch.no_grad(), autocast:
            model(x)

    print(
        f"\n# Part 2: ResNet-50, batch {batch}, {size} px, bf16 autocast, eval, {len(layers)} layers"
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = timed(forward)
    base_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    print(f"{'forward only':<26}{base:>10.2f} ms{1.0:>8.2f} x")
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        for path in PATHS:
            if path != "plain" and device.type != "cuda" and not args.fused_on_cpu:
                continue
            _set_path(path)
            srops.clear()
            forward()  # self-check on the first use of each map shape
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            with_srop = timed(lambda: (srops.clear(), forward()))
            extra = torch.cuda.max_memory_allocated() - base_peak if device.type == "cuda" else 0
            note = "" if _path_ok(path, device) else "  (fell back to plain)"
            print(
                f"{'forward + SROP ' + path:<26}{with_srop:>10.2f} ms{with_srop / base:>8.2f} x"
                f"   peak extra memory {extra / 2**20:8.1f} MiB{note}",
                flush=True,
            )
    finally:
        for h in handles:
            h.remove()
        _set_path("fused64")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke runs)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and batch")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ref-maps", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument(
        "--fused-on-cpu",
        action="store_true",
        help="also time the fused paths on CPU (only with TRITON_INTERPRET=1: very slow)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device (use --device cpu --smoke to try it).")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    print(f"{name}, torch {torch.__version__}, triton {triton_version}")
    bench_shapes(args, device)
    if not args.skip_resnet:
        bench_resnet50(args, device)
    print(
        "\nfused kernel self-checks:",
        {f"{k[0]} {k[1]} acc={k[2]}": v for k, v in _fused_state().items()},
    )


if __name__ == "__main__":
    main()
