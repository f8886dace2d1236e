"""CPU: `spectral_rolloff` against `rfft2` alone and against a per-map NumPy loop.

Maps: the outputs of every Conv2d and pooling layer (the callback's default layer choice) of
torchvision's ResNet-18 and ResNet-50 (random weights) at 224 px, batch 8 by default. Per
layer, interleaved in one run (best of `--repeats`), so ratios hold on a noisy machine:

- `rfft2`: `torch.fft.rfft2` of the whole activation, the part an exact SROP cannot avoid;
- `srop`: `spectral_rolloff` of the whole activation (radius plans cached, as in steady use);
- `loop`: a careful per-map NumPy loop (float64; radius order cached per map size; per map
  fft2, power, DC out, cumsum in radius order, search), timed on `--loop-maps` maps per layer
  and extrapolated per map.

Also printed: the model's forward time (same batch), and the peak extra resident memory of one
`spectral_rolloff` call on the largest activation, measured in a fresh subprocess: its peak
RSS (VmHWM, reset through /proc/self/clear_refs just before the call) minus its RSS before
the call, the input already allocated (Linux; skipped elsewhere).

`--clock cpu` times with `time.process_time()` (CPU seconds of all threads of this process)
instead of wall time: on a shared, oversubscribed machine wall times swing by 2 x or more from
one repeat to the next, CPU time far less; with several threads it also counts their overhead.

    .venv/bin/python benchmarks/bench_srop.py [--models resnet18 resnet50] [--batch 8]
        [--repeats 5] [--loop-maps 256] [--threads N] [--no-loop] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package first
from lightning_srop import spectral_rolloff

DEFAULT_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def build_model(name: str) -> nn.Module:
    """A torchvision classification model with random weights, in eval mode."""
    import torchvision.models

    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval()


def capture_activations(model: nn.Module, batch: int, size: int = 224) -> dict[str, torch.Tensor]:
    """Outputs of every Conv2d and pooling layer (maps larger than 1 x 1)."""
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, DEFAULT_LAYERS):
            handles.append(
                module.register_forward_hook(
                    lambda m, i, o, name=name: acts.__setitem__(name, o.detach().clone())
                )
            )
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size))
    for h in handles:
        h.remove()
    return {k: v for k, v in acts.items() if v.shape[-1] > 1}  # 1 x 1 maps have no spectrum


def capture_resnet18_activations(batch: int, size: int = 224) -> dict[str, torch.Tensor]:
    """Outputs of every Conv2d and pooling layer of a random-weight ResNet-18."""
    return capture_activations(build_model("resnet18"), batch, size)


@functools.cache
def _numpy_plan(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2).ravel()
    order = np.argsort(radius, kind="stable")
    return order, radius[order]


def numpy_loop_srop(maps: np.ndarray, kappa: float = 0.85) -> np.ndarray:
    """Per-map NumPy SROP (float64), the baseline."""
    h, w = maps.shape[-2:]
    order, radius = _numpy_plan(h, w)
    out = np.empty(len(maps))
    for i, m in enumerate(maps):
        power = np.abs(np.fft.fft2(m)) ** 2
        power[0, 0] = 0.0
        cumulative = np.cumsum(power.ravel()[order])
        out[i] = radius[np.searchsorted(cumulative, kappa * cumulative[-1])]
    return out


_CLOCK: Callable[[], float] = time.perf_counter


def _timed(fn: Callable[[], object]) -> float:
    start = _CLOCK()
    fn()
    return _CLOCK() - start


def peak_extra_rss(shape: tuple[int, ...]) -> int | None:
    """Peak resident memory one ``spectral_rolloff`` call adds on a float32 input of ``shape``.

    Run in a fresh subprocess, so that memory freed earlier and kept by the allocator does not
    hide the call's own. Bytes, or None where ``/proc/self/clear_refs`` is unavailable.
    """
    code = textwrap.dedent(
        f"""
        import torch
        from pathlib import Path
        from lightning_srop import spectral_rolloff
        def kib(field):
            lines = Path("/proc/self/status").read_text().splitlines()
            return next(int(l.split()[1]) for l in lines if l.startswith(field + ":"))
        torch.set_num_threads({torch.get_num_threads()})
        x = torch.randn(*{tuple(shape)!r})
        spectral_rolloff(x[:1, :1])  # plan cached, libraries loaded
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS
        before = kib("VmRSS")
        spectral_rolloff(x)
        print(max(0, kib("VmHWM") - before) * 1024)
        """
    )
    root = str(Path(__file__).resolve().parents[1])
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": root},
        )
        return int(out.stdout.split()[-1])
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None


def bench_model(name: str, args: argparse.Namespace) -> None:
    model = build_model(name)
    acts = capture_activations(model, args.batch)
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        forward = min(_timed(lambda: model(x)) for _ in range(3))
    n_maps_all = sum(a.shape[0] * a.shape[1] for a in acts.values())
    print(
        f"\n{name} @224, batch {args.batch}: {len(acts)} layers, {n_maps_all:,} maps; "
        f"forward {forward * 1e3:.1f} ms"
    )
    print(
        f"{'layer':<24}{'shape':>20}{'maps':>8}{'rfft2 ms':>10}{'srop ms':>10}"
        f"{'srop/rfft2':>11}{'loop ms':>10}{'vs loop':>9}"
    )
    total_fft = total_srop = total_loop = 0.0
    for layer, act in acts.items():
        n_maps = act.shape[0] * act.shape[1]
        spectral_rolloff(act[:1])  # radius plan cached, as in steady use
        sample = act.reshape(-1, *act.shape[-2:])[: args.loop_maps].double().numpy()
        t_fft = t_srop = t_loop = math.inf
        for _ in range(args.repeats):  # interleaved, best of each: drifts in load hit all
            t_fft = min(t_fft, _timed(lambda act=act: torch.fft.rfft2(act)))
            t_srop = min(t_srop, _timed(lambda act=act: spectral_rolloff(act)))
            if not args.no_loop:
                t_loop = min(t_loop, _timed(lambda s=sample: numpy_loop_srop(s)))
        t_numpy = t_loop / len(sample) * n_maps
        total_fft += t_fft
        total_srop += t_srop
        total_loop += t_numpy
        print(
            f"{layer:<24}{'x'.join(map(str, act.shape)):>20}{n_maps:>8}{t_fft * 1e3:>10.2f}"
            f"{t_srop * 1e3:>10.2f}{t_srop / t_fft:>10.2f}x{t_numpy * 1e3:>10.1f}"
            f"{t_numpy / t_srop:>8.1f}x"
        )
    print(
        f"{'all layers':<24}{'':>20}{n_maps_all:>8}{total_fft * 1e3:>10.1f}"
        f"{total_srop * 1e3:>10.1f}{total_srop / total_fft:>10.2f}x{total_loop * 1e3:>10.0f}"
        f"{total_loop / total_srop:>8.1f}x"
    )
    print(
        f"{name}: spectral_rolloff = {total_srop / total_fft:.2f} x rfft2 alone (target <= 1.4), "
        f"{total_loop / total_srop:.1f} x faster than the NumPy loop (target >= 20), "
        f"{total_srop / forward:.2f} x the forward"
    )
    largest = max(acts.values(), key=lambda a: a.numel())
    extra = peak_extra_rss(tuple(largest.shape))
    if extra is not None:
        print(
            f"{name}: peak extra RSS of spectral_rolloff on {'x'.join(map(str, largest.shape))} "
            f"({largest.numel() * 4 / 2**20:.1f} MiB): {extra / 2**20:.1f} MiB "
            "(default max_chunk_bytes 16 MiB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--loop-maps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-loop", action="store_true", help="skip the NumPy loop")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter; cpu: time.process_time (see above)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global _CLOCK
    _CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"best of {args.repeats} interleaved"
    )
    for name in args.models:
        bench_model(name, args)


if __name__ == "__main__":
    main()
