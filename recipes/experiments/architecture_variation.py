"""Sanity check 2, architecture variation (the paper's Figure 4).

SROPs of downscaling layers, normalized by the paper's benchmark: a max pooling of kernel 2 and
stride 2 applied to the same input (``normalized = mean SROP(layer(x)) / mean SROP(maxpool2(x))``,
so the benchmark itself scores exactly 1; a layer of stride 4 is compared with two benchmark
pools). Every SROP is measured with :func:`lightning_srop.profile`. Two parts:

- ``op``: single layers on the images: max pooling as in AlexNet (k3 s2) and VGG (k2 s2, the
  benchmark), ResNet's (k3 s2 p1), average pooling, binomial blur pooling (Zhang 2019; the
  blur is :class:`recipes.blurpool.BlurPool2d`, equal to kornia's ``BlurPool2D`` /
  ``MaxBlurPool2D`` up to the border padding), plain subsampling, and randomized
  (Kaiming-initialized, one per seed) strided convolutions;
- ``model``: every downscaling unit inside whole networks (random weights initialized with the
  seed, or pretrained with ``--weights DEFAULT``): ResNet-18 and its anti-aliased twin (same
  weights, blur-pooled downsampling), AlexNet and VGG-16; each unit's output SROP against the
  benchmark pool of the unit's own input.

Each seed draws other images (other crops of the sample photos, or another random choice from
``--image-dir``) and, with random weights, other weights. The paper's claim: anti-aliased
(blur-pooled) layers and models lower SROP. ``architecture_variation_summary.csv`` gives, per
layer, the normalized SROP over seeds with a 95 % bootstrap interval and, where the paper states
a direction, a verdict: blur-pooling ops against the benchmark (``normalized - 1 < 0``) and each
unit of the blur-pooled ResNet-18 against the same unit of the plain one (paired by seed).

Run::

    python -m recipes.experiments.architecture_variation --threads 1    # sample photos, offline
    python -m recipes.experiments.architecture_variation --image-dir /datasets/imagenet/val \\
        --num-images 256 --image-size 224 --weights DEFAULT
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_srop import profile
from lightning_srop.plots import save_figure
from recipes.blurpool import BlurPool2d
from recipes.experiments._common import (
    RULE,
    VERDICT_COLORS,
    Timer,
    benchmark_pool,
    command_line,
    imagenet_normalize,
    load_images,
    seed_list,
    summarize,
    write_csv,
)

__all__ = ["MODELS", "OPS", "downscaling_units", "load_images", "main", "run"]

MODELS: tuple[str, ...] = ("resnet18", "resnet18_blurpool", "alexnet", "vgg16")
BENCHMARK = "maxpool k2 s2 (VGG, benchmark)"

#: name -> (module key, kernel, stride, kind) of the parameter-free single layers of part ``op``.
OPS: dict[str, tuple[str, int, int, str]] = {
    BENCHMARK: ("max_k2", 2, 2, "max"),
    "maxpool k3 s2 (AlexNet)": ("max_k3", 3, 2, "max"),
    "maxpool k3 s2 p1 (ResNet)": ("max_k3p1", 3, 2, "max"),
    "avgpool k2 s2": ("avg_k2", 2, 2, "avg"),
    "avgpool k3 s2": ("avg_k3", 3, 2, "avg"),
    "maxblurpool (max k2 s1 + blur3 s2)": ("maxblur", 2, 2, "blur"),
    "blurpool3 s2": ("blur3", 3, 2, "blur"),
    "blurpool5 s2": ("blur5", 5, 2, "blur"),
    "subsample s2": ("subsample", 1, 2, "subsample"),
}
RANDOM_CONV_KERNELS: tuple[int, ...] = (2, 3, 7)


class _Subsample(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[..., ::2, ::2]


class _Bank(nn.Module):
    """Applies every op to the same input (so one ``profile`` call measures them all)."""

    def __init__(self, ops: dict[str, nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleDict(ops)

    def forward(self, x: Tensor) -> Tensor:
        for op in self.ops.values():
            op(x)
        return x


class _Probe(nn.Module):
    """A downscaling unit with the benchmark pool beside it, fed the unit's own input."""

    def __init__(self, unit: nn.Module, times: int) -> None:
        super().__init__()
        self.unit, self.bench = unit, benchmark_pool(times)

    def forward(self, x: Tensor) -> Tensor:
        self.bench(x)
        return self.unit(x)  # type: ignore[no-any-return]


def _op_bank(channels: int, seed: int) -> _Bank:
    modules: dict[str, nn.Module] = {
        "max_k2": nn.MaxPool2d(2, 2),
        "max_k3": nn.MaxPool2d(3, 2),
        "max_k3p1": nn.MaxPool2d(3, 2, 1),
        "avg_k2": nn.AvgPool2d(2, 2),
        "avg_k3": nn.AvgPool2d(3, 2, 1),
        "maxblur": nn.Sequential(nn.MaxPool2d(2, 1), BlurPool2d(channels, 3, 2)),
        "blur3": BlurPool2d(channels, 3, 2),
        "blur5": BlurPool2d(channels, 5, 2),
        "subsample": _Subsample(),
    }
    for kernel in RANDOM_CONV_KERNELS:
        torch.manual_seed(seed * 1000 + kernel)
        modules[f"conv_k{kernel}"] = nn.Conv2d(
            channels, 16, kernel, stride=2, padding=(kernel - 1) // 2
        )
    return _Bank(modules)


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


def _op_rows(seed: int, x: Tensor) -> list[dict[str, Any]]:
    bank = _op_bank(x.shape[1], seed)
    report = profile(bank, x, layers=[f"ops.{key}" for key in bank.ops])
    bench = report["ops.max_k2"].stats["mean"]
    rows = []
    entries = list(OPS.items()) + [
        (f"random conv k{k} s2", (f"conv_k{k}", k, 2, "random conv")) for k in RANDOM_CONV_KERNELS
    ]
    for name, (key, kernel, stride, kind) in entries:
        srop = report[f"ops.{key}"].stats["mean"]
        rows.append(_raw(seed, "op", "-", name, kind, kernel, stride, srop, bench))
    return rows


def _raw(
    seed: int,
    part: str,
    model: str,
    layer: str,
    kind: str,
    kernel: Any,
    stride: int,
    srop: float,
    bench: float,
) -> dict[str, Any]:
    return {
        "seed": seed,
        "part": part,
        "model": model,
        "layer": layer,
        "kind": kind,
        "kernel": kernel,
        "stride": stride,
        "srop": srop,
        "benchmark_srop": bench,
        "normalized": srop / bench,
    }


def _model_rows(
    seed: int, x: Tensor, arch: str, weights: str | None, units: list[tuple[str, int]]
) -> list[dict[str, Any]]:
    from recipes.imagenet import build_model

    torch.manual_seed(seed)  # the same initial weights for resnet18 and its blur twin
    model = build_model(arch, weights).eval()
    kinds: dict[str, tuple[str, Any]] = {}
    for name, stride in units:
        module = model.get_submodule(name)
        kind = (
            "blur"
            if any(isinstance(m, BlurPool2d) for m in module.modules())
            else type(module).__name__
        )
        kernel = getattr(module, "kernel_size", "-")
        kinds[name] = (kind, kernel[0] if isinstance(kernel, tuple) else kernel)
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, _Probe(module, max(1, round(math.log2(stride)))))
    layers = [f"{n}.{part}" for n, _ in units for part in ("unit", "bench")]
    report = profile(model, x, layers=layers)
    rows = []
    for name, stride in units:
        srop, bench = (report[f"{name}.{p}"].stats["mean"] for p in ("unit", "bench"))
        kind, kernel = kinds[name]
        rows.append(_raw(seed, "model", arch, name, kind, kernel, stride, srop, bench))
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (part, model, layer): normalized SROP over seeds; verdicts for blur ops against the
    benchmark and for blur-pooled ResNet-18 units against the plain ones (paper: lower)."""
    seeds = sorted({r["seed"] for r in rows})
    keys = list(dict.fromkeys((r["part"], r["model"], r["layer"], r["kind"]) for r in rows))
    by = {(r["seed"], r["part"], r["model"], r["layer"]): r for r in rows}
    out: list[dict[str, Any]] = []
    for part, model, layer, kind in keys:
        key = {"part": part, "model": model, "layer": layer, "kind": kind}
        values = [by[(s, part, model, layer)]["normalized"] for s in seeds]
        out.append(summarize(key, "normalized", values))
        if part == "op" and kind == "blur":
            out.append(summarize(key, "normalized - 1", [v - 1 for v in values], direction=-1))
        plain = model.removesuffix("_blurpool")
        if part == "model" and plain != model and all((s, part, plain, layer) in by for s in seeds):
            diffs = [
                v - by[(s, part, plain, layer)]["normalized"]
                for s, v in zip(seeds, values, strict=True)
            ]
            out.append(summarize(key, f"normalized - normalized[{plain}]", diffs, direction=-1))
    for model in dict.fromkeys(r["model"] for r in rows if r["part"] == "model"):
        key = {"part": "model", "model": model, "layer": "all units (mean)", "kind": "-"}
        per_seed = {
            s: [r["normalized"] for r in rows if r["model"] == model and r["seed"] == s]
            for s in seeds
        }
        means = {s: sum(v) / len(v) for s, v in per_seed.items()}
        out.append(summarize(key, "normalized", list(means.values())))
        plain = model.removesuffix("_blurpool")
        if plain != model and any(r["model"] == plain for r in rows):
            plain_means = {
                s: sum(v) / len(v)
                for s in seeds
                for v in [[r["normalized"] for r in rows if r["model"] == plain and r["seed"] == s]]
            }
            diffs = [means[s] - plain_means[s] for s in seeds]
            out.append(summarize(key, f"normalized - normalized[{plain}]", diffs, direction=-1))
    return out


def run(
    out_dir: Path,
    *,
    image_dir: str | None = None,
    num_images: int = 32,
    image_size: int = 128,
    models: Sequence[str] = MODELS,
    weights: str | None = None,
    seed: int = 0,
    seeds: int = 3,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure both parts for every seed; write ``architecture_variation.csv`` (per seed),
    ``architecture_variation_summary.csv`` (intervals, verdicts) and ``.png``.

    Args:
        out_dir: folder for the CSVs and the PNG
        image_dir: folder of images (recursive, e.g. ImageNet val); default: scikit-learn's
            sample photos
        num_images: images per seed
        image_size: image (crop) size in pixels
        models: torchvision archs of recipes.imagenet
        weights: None (random, one init per seed) or DEFAULT / a torchvision weight name
            (downloads once)
        seed: first seed
        seeds: number of seeds (seed, seed + 1, ...); intervals are bootstrapped over them
    """
    from recipes.imagenet import build_model

    timer = Timer()
    rows: list[dict[str, Any]] = []
    unit_lists: dict[str, list[tuple[str, int]]] = {}
    for arch in models:
        base = arch.removesuffix("_blurpool")  # blur twins: the same names, now blur + layer
        if base not in unit_lists:
            unit_lists[base] = downscaling_units(build_model(base, None))
    for s in seed_list(seed, seeds):
        x = imagenet_normalize(load_images(image_dir, num_images, image_size, s))
        rows += _op_rows(s, x)
        for arch in models:
            rows += _model_rows(s, x, arch, weights, unit_lists[arch.removesuffix("_blurpool")])
        print(f"seed {s} done ({timer.elapsed:.0f} s)")
    table = summary(rows)
    for r in table:
        if r["quantity"] != "normalized" or r["part"] == "op" or "all" in r["layer"]:
            print(
                f"  {r['model']:<18} {r['layer']:<36} {r['quantity']:<36} {r['mean']:.3f} "
                f"[{r['low']:.3f}, {r['high']:.3f}]  {r['verdict']}"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "architecture_variation.csv", rows)
    write_csv(out_dir / "architecture_variation_summary.csv", table, comments=[f"rule: {RULE}"])
    plot(
        table,
        out_dir / "architecture_variation.png",
        source=image_dir or f"{num_images} crops of sklearn sample photos",
        weights=weights or "random",
        seeds=seeds,
    )
    print(f"wrote {out_dir}/architecture_variation*.csv and .png in {timer.elapsed:.0f} s")
    return rows, table


def plot(
    table: Sequence[dict[str, Any]], path: Path, *, source: str, weights: str, seeds: int
) -> Path:
    """Normalized SROP of single layers (left) and of the downscaling units of models (right),
    with 95 % bootstrap intervals over seeds; verdicts as colored labels."""
    from matplotlib.figure import Figure

    colors = {
        "max": "tab:gray",
        "avg": "tab:green",
        "blur": "tab:blue",
        "subsample": "tab:orange",
        "random conv": "tab:red",
    }
    fig = Figure(figsize=(15, 6), layout="constrained")
    ax_op, ax_model = fig.subplots(1, 2, width_ratios=[1, 1.3])
    ops = [r for r in table if r["part"] == "op" and r["quantity"] == "normalized"]
    verdicts = {
        r["layer"]: r["verdict"] for r in table if r["part"] == "op" and r["verdict"] != "n/a"
    }
    ys = list(range(len(ops)))
    ax_op.barh(
        ys,
        [r["mean"] for r in ops],
        xerr=[[r["mean"] - r["low"] for r in ops], [r["high"] - r["mean"] for r in ops]],
        color=[colors.get(r["kind"], "k") for r in ops],
        alpha=0.85,
        capsize=3,
    )
    ax_op.set_yticks(ys, [r["layer"] for r in ops], fontsize=8)
    ax_op.invert_yaxis()
    ax_op.axvline(1.0, color="k", lw=1, ls="--")
    for y, r in zip(ys, ops, strict=True):
        v = verdicts.get(r["layer"])
        ax_op.text(
            r["high"] + 0.015,
            y,
            f"{r['mean']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" + (f"  {v}" if v else ""),
            va="center",
            fontsize=7,
            color=VERDICT_COLORS[v] if v else "k",
        )
    ax_op.set_xlabel("SROP / SROP of benchmark max pool (k2 s2), same input")
    ax_op.set_title(f"single downscaling layers (bars: 95 % bootstrap over {seeds} seeds)")
    ax_op.grid(axis="x", alpha=0.3)
    styles = {
        "resnet18": ("tab:gray", "o-"),
        "resnet18_blurpool": ("tab:blue", "o-"),
        "alexnet": ("tab:purple", "s--"),
        "vgg16": ("tab:green", "^--"),
    }
    model_rows = [
        r
        for r in table
        if r["part"] == "model" and r["quantity"] == "normalized" and "all" not in r["layer"]
    ]
    diff = {
        (r["model"], r["layer"]): r["verdict"]
        for r in table
        if r["part"] == "model" and r["verdict"] != "n/a"
    }
    for arch in dict.fromkeys(r["model"] for r in model_rows):
        sel = [r for r in model_rows if r["model"] == arch]
        color, style = styles.get(arch, ("k", "o-"))
        mean = next(
            r
            for r in table
            if r["model"] == arch and "all" in r["layer"] and r["quantity"] == "normalized"
        )
        label = f"{arch} (mean {mean['mean']:.2f})"
        if (arch, "all units (mean)") in diff:
            label += f", vs plain: {diff[(arch, 'all units (mean)')]}"
        xs = list(range(len(sel)))
        ax_model.errorbar(
            xs,
            [r["mean"] for r in sel],
            yerr=[[r["mean"] - r["low"] for r in sel], [r["high"] - r["mean"] for r in sel]],
            fmt=style,
            color=color,
            capsize=3,
            label=label,
        )
        for i, r in enumerate(sel):
            v = diff.get((arch, r["layer"]))
            if v:
                ax_model.scatter(
                    [i],
                    [r["mean"]],
                    s=90,
                    facecolors="none",
                    edgecolors=VERDICT_COLORS[v],
                    linewidths=2,
                    zorder=5,
                )
            if arch == "resnet18":
                ax_model.annotate(
                    r["layer"],
                    (i, r["mean"]),
                    fontsize=6,
                    rotation=35,
                    xytext=(2, 4),
                    textcoords="offset points",
                )
    ax_model.axhline(1.0, color="k", lw=1, ls="--")
    ax_model.set_xlabel("downscaling unit (forward order)")
    ax_model.set_ylabel("normalized SROP")
    ax_model.set_title(
        f"units inside models ({weights} weights); rings: blur vs plain verdict "
        "(green holds, red reversed, gray inconclusive)",
        fontsize=9,
    )
    ax_model.grid(alpha=0.3)
    ax_model.legend(fontsize=8)
    fig.suptitle(f"Architecture variation, normalized by the benchmark max pool (inputs: {source})")
    save_figure(fig, path)
    return path


def main(argv: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The command line: :func:`run`'s arguments as flags (``--help`` lists them)."""
    return command_line(run, argv, description=__doc__.split("\n\n")[0], check=_check)


def _check(arguments: Mapping[str, Any]) -> str | None:
    from recipes.imagenet import ARCHS

    unknown = [arch for arch in arguments["models"] if arch not in ARCHS]
    return f"unknown model {unknown[0]!r}; valid choices: {', '.join(ARCHS)}" if unknown else None


if __name__ == "__main__":
    main()
