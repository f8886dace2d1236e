"""Sanity check 2, architecture variation (the paper's Figure 4).

SROPs of downscaling layers, normalized by the paper's benchmark: a max pooling of kernel 2 and
stride 2 applied to the same input (``normalized = mean SROP(layer(x)) / mean SROP(maxpool2(x))``,
so the benchmark itself scores exactly 1; a layer of stride 4 is compared with two benchmark
pools). Two parts:

- ``op``: single layers on the images: max pooling as in AlexNet (k3 s2) and VGG (k2 s2, the
  benchmark), ResNet's (k3 s2 p1), average pooling, binomial blur pooling (Zhang 2019), plain
  subsampling, and randomized (Kaiming-initialized) strided convolutions, averaged over seeds;
- ``model``: every downscaling unit inside whole networks (random weights by default):
  ResNet-18 and its anti-aliased twin (same weights, blur-pooled downsampling), AlexNet and
  VGG-16; each unit's output SROP against the benchmark pool of the unit's own input.

The paper's claim: anti-aliased (blur-pooled) layers and models lower SROP.

Run::

    python -m recipes.experiments.architecture_variation              # sample photos, offline
    python -m recipes.experiments.architecture_variation --image-dir /datasets/imagenet/val \\
        --num-images 256 --image-size 224 --weights DEFAULT
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recipes.blurpool import BlurPool2d
from recipes.experiments._common import (
    Timer,
    add_common_arguments,
    benchmark_pool,
    capture,
    mean_srop,
    parse_args,
    write_csv,
)

__all__ = ["MODELS", "downscaling_units", "load_images", "main", "run"]

MODELS: tuple[str, ...] = ("resnet18", "resnet18_blurpool", "alexnet", "vgg16")
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_images(image_dir: str | None, num: int, size: int, seed: int) -> Tensor:
    """``num`` RGB images in [0, 1] as ``(num, 3, size, size)``: crops of scikit-learn's sample
    photos when ``image_dir`` is None, else the first images (sorted paths, recursive) of
    ``image_dir`` resized and center-cropped."""
    if image_dir is None:
        from recipes.data import photo_crops

        return photo_crops(num, size, seed=seed)
    from PIL import Image
    from torchvision import transforms as T

    root = Path(image_dir)
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    paths = (
        sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes) if root.is_dir() else []
    )
    if not paths:
        raise FileNotFoundError(
            f"no images (*.jpg, *.png, ...) found under {root}: give --image-dir a folder of "
            "images, e.g. an ImageNet validation folder, or leave it out to use the sample photos"
        )
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[:num]])


def _ops(channels: int) -> dict[str, tuple[Callable[[Tensor], Tensor], int, int, str]]:
    """name -> (layer, kernel, stride, kind); the parameter-free single layers of part ``op``."""
    return {
        "maxpool k2 s2 (VGG, benchmark)": (lambda x: F.max_pool2d(x, 2, 2), 2, 2, "max"),
        "maxpool k3 s2 (AlexNet)": (lambda x: F.max_pool2d(x, 3, 2), 3, 2, "max"),
        "maxpool k3 s2 p1 (ResNet)": (lambda x: F.max_pool2d(x, 3, 2, 1), 3, 2, "max"),
        "avgpool k2 s2": (lambda x: F.avg_pool2d(x, 2, 2), 2, 2, "avg"),
        "avgpool k3 s2": (lambda x: F.avg_pool2d(x, 3, 2, 1), 3, 2, "avg"),
        "maxblurpool (max k2 s1 + blur3 s2)": (
            lambda x: BlurPool2d(channels, 3, 2)(F.max_pool2d(x, 2, 1)),
            2,
            2,
            "blur",
        ),
        "blurpool3 s2": (BlurPool2d(channels, 3, 2), 3, 2, "blur"),
        "blurpool5 s2": (BlurPool2d(channels, 5, 2), 5, 2, "blur"),
        "subsample s2": (lambda x: x[..., ::2, ::2], 1, 2, "subsample"),
    }


def downscaling_units(model: nn.Module) -> list[tuple[str, int]]:
    """``(qualified name, stride)`` of every Conv2d / MaxPool2d / AvgPool2d of stride > 1."""
    units = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            stride = module.stride
            s = stride[0] if isinstance(stride, tuple) else stride
            if s > 1:
                units.append((name, int(s)))
    return units


def _normalized(out: Tensor, inp: Tensor, stride: int) -> tuple[float, float, float]:
    times = max(1, round(math.log2(stride)))
    srop, bench = mean_srop(out), mean_srop(benchmark_pool(inp, times))
    return srop, bench, srop / bench


def run(
    out_dir: Path,
    *,
    image_dir: str | None = None,
    num_images: int = 32,
    image_size: int = 128,
    models: Sequence[str] = MODELS,
    weights: str | None = None,
    num_random: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Measure both parts; write ``architecture_variation.csv`` and ``.png``; return rows."""
    from recipes.imagenet import build_model

    timer = Timer()
    images = load_images(image_dir, num_images, image_size, seed)
    x = (images - IMAGENET_MEAN) / IMAGENET_STD
    rows: list[dict[str, Any]] = []
    bench_srop = mean_srop(benchmark_pool(x))
    with torch.no_grad():
        for name, (op, kernel, stride, kind) in _ops(x.shape[1]).items():
            srop = mean_srop(op(x))
            rows.append(
                {
                    "part": "op",
                    "model": "-",
                    "layer": name,
                    "kind": kind,
                    "kernel": kernel,
                    "stride": stride,
                    "srop": srop,
                    "benchmark_srop": bench_srop,
                    "normalized": srop / bench_srop,
                    "normalized_std": 0.0,
                }
            )
        for kernel in (2, 3, 7):
            values = []
            for s in range(num_random):
                torch.manual_seed(seed + s)
                conv = nn.Conv2d(x.shape[1], 16, kernel, stride=2, padding=(kernel - 1) // 2)
                values.append(mean_srop(conv(x)))
            mean = sum(values) / len(values)
            std = float(torch.tensor(values).std()) if len(values) > 1 else 0.0
            rows.append(
                {
                    "part": "op",
                    "model": "-",
                    "layer": f"random conv k{kernel} s2",
                    "kind": "random conv",
                    "kernel": kernel,
                    "stride": 2,
                    "srop": mean,
                    "benchmark_srop": bench_srop,
                    "normalized": mean / bench_srop,
                    "normalized_std": std / bench_srop,
                }
            )
        plain_units: dict[str, list[tuple[str, int]]] = {}
        for arch in models:
            torch.manual_seed(seed)  # the same initial weights for resnet18 and its blur twin
            model = build_model(arch, weights).eval()
            base = arch.removesuffix("_blurpool")
            if base not in plain_units:
                torch.manual_seed(seed)
                plain_units[base] = downscaling_units(build_model(base, None))
            units = plain_units[base]  # blur twins: the same names, now blur + layer
            with capture(model, [n for n, _ in units], inputs=True) as store:
                model(x)
            for name, stride in units:
                module = dict(model.named_modules())[name]
                kind = (
                    "blur"
                    if any(isinstance(m, BlurPool2d) for m in module.modules())
                    else (type(module).__name__)
                )
                srop, bench, normalized = _normalized(store[name], store[f"{name}:in"], stride)
                rows.append(
                    {
                        "part": "model",
                        "model": arch,
                        "layer": name,
                        "kind": kind,
                        "kernel": getattr(module, "kernel_size", "-"),
                        "stride": stride,
                        "srop": srop,
                        "benchmark_srop": bench,
                        "normalized": normalized,
                        "normalized_std": 0.0,
                    }
                )
            model_rows = [r for r in rows if r["model"] == arch]
            mean_norm = sum(r["normalized"] for r in model_rows) / len(model_rows)
            print(
                f"{arch:<18} mean normalized SROP over {len(model_rows)} downscaling units: "
                f"{mean_norm:.3f}  ({timer.elapsed:.0f} s)"
            )
    for r in rows:
        if isinstance(r["kernel"], tuple):
            r["kernel"] = r["kernel"][0]
    for r in rows:
        if r["part"] == "op":
            print(f"  {r['layer']:<36} normalized SROP {r['normalized']:.3f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "architecture_variation.csv", rows)
    plot(
        rows,
        out_dir / "architecture_variation.png",
        source=image_dir or f"{num_images} crops of sklearn sample photos",
        weights=weights or "random",
    )
    print(f"wrote {out_dir / 'architecture_variation.csv'} and .png in {timer.elapsed:.0f} s")
    return rows


def plot(rows: Sequence[dict[str, Any]], path: Path, *, source: str, weights: str) -> Path:
    """Normalized SROP of single layers (left) and of the downscaling units of models (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    colors = {
        "max": "tab:gray",
        "avg": "tab:green",
        "blur": "tab:blue",
        "subsample": "tab:orange",
        "random conv": "tab:red",
    }
    ops = [r for r in rows if r["part"] == "op"]
    fig, (ax_op, ax_model) = plt.subplots(
        1, 2, figsize=(14, 5.6), gridspec_kw={"width_ratios": [1, 1.2]}
    )
    ys = range(len(ops))
    ax_op.barh(
        list(ys),
        [r["normalized"] for r in ops],
        xerr=[r["normalized_std"] for r in ops],
        color=[colors.get(r["kind"], "k") for r in ops],
        alpha=0.85,
    )
    ax_op.set_yticks(list(ys))
    ax_op.set_yticklabels([r["layer"] for r in ops], fontsize=8)
    ax_op.invert_yaxis()
    ax_op.axvline(1.0, color="k", lw=1, ls="--")
    for y, r in zip(ys, ops, strict=True):
        ax_op.text(
            r["normalized"] + r["normalized_std"] + 0.015,
            y,
            f"{r['normalized']:.2f}",
            va="center",
            fontsize=7,
        )
    ax_op.set_xlabel("SROP / SROP of benchmark max pool (k2 s2), same input")
    ax_op.set_title("single downscaling layers")
    ax_op.grid(axis="x", alpha=0.3)
    styles = {
        "resnet18": ("tab:gray", "o-"),
        "resnet18_blurpool": ("tab:blue", "o-"),
        "alexnet": ("tab:purple", "s--"),
        "vgg16": ("tab:green", "^--"),
    }
    for arch in dict.fromkeys(r["model"] for r in rows if r["part"] == "model"):
        sel = [r for r in rows if r["model"] == arch]
        color, style = styles.get(arch, ("k", "o-"))
        mean = sum(r["normalized"] for r in sel) / len(sel)
        ax_model.plot(
            range(len(sel)),
            [r["normalized"] for r in sel],
            style,
            color=color,
            label=f"{arch} (mean {mean:.2f})",
        )
        if arch.startswith("resnet18"):
            for i, r in enumerate(sel):
                if arch == "resnet18":
                    ax_model.annotate(
                        r["layer"],
                        (i, r["normalized"]),
                        fontsize=6,
                        rotation=35,
                        xytext=(2, 4),
                        textcoords="offset points",
                    )
    ax_model.axhline(1.0, color="k", lw=1, ls="--")
    ax_model.set_xlabel("downscaling unit (forward order)")
    ax_model.set_ylabel("normalized SROP")
    ax_model.set_title(f"downscaling units inside models ({weights} weights)")
    ax_model.grid(alpha=0.3)
    ax_model.legend(fontsize=8)
    fig.suptitle(f"Architecture variation, normalized by the benchmark max pool (inputs: {source})")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out-dir", type=Path, default=Path("runs/experiments/architecture_variation")
    )
    parser.add_argument(
        "--image-dir",
        default=None,
        help="folder of images (recursive); default: sklearn's sample photos",
    )
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help=f"torchvision archs of recipes.imagenet (default: {' '.join(MODELS)})",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="None (random) or DEFAULT / a torchvision weight name (download)",
    )
    parser.add_argument("--num-random", type=int, default=5, help="seeds per random conv")
    add_common_arguments(parser, training=False)
    args = parse_args(parser, argv)
    from recipes.imagenet import ARCHS

    for arch in args.models:
        if arch not in ARCHS:
            parser.error(f"unknown model {arch!r}; valid choices: {', '.join(ARCHS)}")
    return run(
        args.out_dir,
        image_dir=args.image_dir,
        num_images=args.num_images,
        image_size=args.image_size,
        models=args.models,
        weights=args.weights,
        num_random=args.num_random,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
