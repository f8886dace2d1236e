"""Maps per second of `spectral_rolloff` against a plain per-map NumPy loop.

Shapes: the outputs of every Conv2d and pooling layer of torchvision's ResNet-18 at 224 px
(the callback's default layer choice), batch 32 by default. Both are timed in the same run on
the same activations, so the printed ratio holds even on a noisy machine.

    .venv/bin/python benchmarks/bench_srop.py [--batch 32] [--loop-maps 256] [--repeats 3]

The NumPy loop is what a careful user writes by hand: the radius order of each map size is
computed once and cached (not per map), then per map: fft2, power, DC bin dropped, sort by
radius, cumsum, search. It is timed on `--loop-maps` maps per layer and extrapolated per map;
`spectral_rolloff` is timed on every map.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np
import torch
from torch import nn

from lightning_srop import spectral_rolloff


def capture_resnet18_activations(batch: int, size: int = 224) -> dict[str, torch.Tensor]:
    """Outputs of every Conv2d and pooling layer of a random-weight ResNet-18."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--loop-maps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    acts = capture_resnet18_activations(args.batch)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 @224, batch {args.batch}"
    )
    print(
        f"{'layer':<22}{'shape':>22}{'maps':>9}{'torch maps/s':>15}{'numpy maps/s':>15}{'ratio':>8}"
    )
    total_maps = 0
    total_torch = 0.0
    total_numpy = 0.0
    for name, act in acts.items():
        n_maps = act.shape[0] * act.shape[1]
        spectral_rolloff(act[:1])  # radius plan cached, as in steady use
        sample = act.reshape(-1, *act.shape[-2:])[: args.loop_maps].double().numpy()
        t_torch, t_loop = math.inf, math.inf
        for _ in range(args.repeats):  # interleaved, best of each: drifts in load hit both
            t_torch = min(t_torch, _timed(lambda act=act: spectral_rolloff(act)))
            t_loop = min(t_loop, _timed(lambda s=sample: numpy_loop_srop(s)))
        t_numpy = t_loop / len(sample) * n_maps
        total_maps += n_maps
        total_torch += t_torch
        total_numpy += t_numpy
        print(
            f"{name:<22}{tuple(act.shape)!s:>22}{n_maps:>9}{n_maps / t_torch:>15,.0f}"
            f"{n_maps / t_numpy:>15,.0f}{t_numpy / t_torch:>8.1f}"
        )
    print(
        f"{'all layers':<22}{'':>22}{total_maps:>9}{total_maps / total_torch:>15,.0f}"
        f"{total_maps / total_numpy:>15,.0f}{total_numpy / total_torch:>8.1f}"
    )
    print(
        f"spectral_rolloff is {total_numpy / total_torch:.1f}x the per-map NumPy loop (target >= 20x)"
    )


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
