"""Sanity check 1, input variation (the paper's Figures 2 and 3).

Images are synthesized as ``w * pattern + (1 - w) * digit`` for several ``w``. The patterns
are a bank of 10 sinusoidal gratings (distinct frequency and orientation, random phase per
image). Both cases draw from the same bank, so their inputs have the same spectra:

- CASE I, the pattern is useful information: the grating's index is the image's label;
- CASE II, the pattern is noise: the grating's index is drawn at random, unrelated to the label.

A small CNN (:class:`recipes.mnist.SmallCNN`) is trained per (case, w). Reported per model:
validation accuracy; the mean SROP of the network's feature maps on the mixed validation
images; and "the pattern's mean SROP": the mean SROP of the feature maps when the trained
network sees the validation patterns alone. The paper's claim: trained models keep the
pattern's mean SROP low in CASE I (high accuracy) and high in CASE II (low accuracy).

Run::

    python -m recipes.experiments.input_variation                       # digits, offline
    python -m recipes.experiments.input_variation --data mnist --data-dir data --download
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recipes.experiments._common import (
    Timer,
    add_common_arguments,
    capture,
    digit_data,
    evaluate,
    mean_srop,
    parse_args,
    train_model,
    write_csv,
)

__all__ = ["LAYERS", "grating_bank", "main", "mix", "pattern_index", "run"]

LAYERS: tuple[str, ...] = (
    "features.conv1",
    "features.pool1",
    "features.conv2",
    "features.down",
    "features.conv3",
)
CASES: dict[str, str] = {"I": "pattern = label (useful)", "II": "pattern random (noise)"}


def grating_bank(num: int = 10, size: int = 28) -> tuple[Tensor, Tensor]:
    """Frequencies (cycles / pixel) and orientations (radians) of ``num`` distinct gratings."""
    freqs = torch.linspace(0.08, 0.36, num)
    # Orientations spread by the golden angle, so no two gratings share an orientation.
    angles = torch.remainder(torch.arange(num) * 2.39996323, math.pi)
    return freqs, angles


def gratings(index: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Grating number ``index[i]`` of the bank with a random phase, as ``(N, 1, size, size)``
    in [0, 1]."""
    freqs, angles = grating_bank(10, size)
    f, a = freqs[index].view(-1, 1, 1), angles[index].view(-1, 1, 1)
    phase = torch.rand(len(index), 1, 1, generator=generator) * 2 * math.pi
    i, j = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    wave = torch.cos(2 * math.pi * f * (torch.cos(a) * i + torch.sin(a) * j) + phase)
    return (0.5 + 0.5 * wave).unsqueeze(1)


def pattern_index(labels: Tensor, case: str, generator: torch.Generator) -> Tensor:
    """The grating of each image: its label (CASE I) or a random one (CASE II)."""
    if case == "I":
        return labels.clone()
    if case == "II":
        return torch.randint(0, 10, labels.shape, generator=generator)
    raise ValueError(f"case={case!r} is not one of {tuple(CASES)}")


def mix(digits: Tensor, labels: Tensor, w: float, case: str, seed: int) -> tuple[Tensor, Tensor]:
    """``(w * pattern + (1 - w) * digit, pattern)`` for ``case`` ``"I"`` or ``"II"``."""
    generator = torch.Generator().manual_seed(seed)
    index = pattern_index(labels, case, generator)
    pattern = gratings(index, digits.shape[-1], generator)
    return w * pattern + (1.0 - w) * digits, pattern


def _normalize(x: Tensor) -> Tensor:
    return (x - 0.5) / 0.5


def layer_means(model: torch.nn.Module, x: Tensor) -> dict[str, float]:
    """Mean SROP of each of :data:`LAYERS` on the inputs ``x`` (eval mode, no grad)."""
    model.eval()
    with torch.no_grad(), capture(model, LAYERS) as store:
        model(x)
    return {name: mean_srop(store[name]) for name in LAYERS}


def run(
    out_dir: Path,
    *,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.95),
    cases: Sequence[str] = ("I", "II"),
    epochs: int = 8,
    batch_size: int = 64,
    data: str = "digits",
    data_dir: str = "data",
    download: bool = False,
    max_train: int | None = None,
    max_val: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Train one model per (case, w), write ``input_variation.csv`` and ``.png``; return rows."""
    from recipes.mnist import SmallCNN

    timer = Timer()
    tx, ty, vx, vy = digit_data(
        data, data_dir, download=download, max_train=max_train, max_val=max_val, seed=seed
    )
    rows: list[dict[str, Any]] = []
    examples: dict[tuple[str, float], Tensor] = {}
    for case in cases:
        for w in weights:
            train_x, _ = mix(tx, ty, w, case, seed=seed + 1)
            val_x, val_pattern = mix(vx, vy, w, case, seed=seed + 2)
            examples[(case, w)] = val_x[:1]
            torch.manual_seed(seed)
            model = SmallCNN()
            train_model(
                model, _normalize(train_x), ty, epochs=epochs, batch_size=batch_size, seed=seed
            )
            accuracy = evaluate(model, _normalize(val_x), vy)
            mixed = layer_means(model, _normalize(val_x))
            pattern = layer_means(model, _normalize(val_pattern))
            row: dict[str, Any] = {
                "case": case,
                "w": float(w),
                "accuracy": accuracy,
                "input_srop": mean_srop(val_x),
                "mixed_srop": sum(mixed.values()) / len(mixed),
                "pattern_srop": sum(pattern.values()) / len(pattern),
            }
            row.update({f"mixed_srop/{k}": v for k, v in mixed.items()})
            row.update({f"pattern_srop/{k}": v for k, v in pattern.items()})
            rows.append(row)
            print(
                f"case {case:>2}  w={w:.2f}  acc={accuracy:.3f}  "
                f"pattern SROP={row['pattern_srop']:.4f}  mixed SROP={row['mixed_srop']:.4f}  "
                f"input SROP={row['input_srop']:.4f}  ({timer.elapsed:.0f} s)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "input_variation.csv", rows)
    plot(rows, examples, out_dir / "input_variation.png")
    print(
        f"wrote {out_dir / 'input_variation.csv'} and {out_dir / 'input_variation.png'} "
        f"in {timer.elapsed:.0f} s"
    )
    return rows


def plot(
    rows: Sequence[dict[str, Any]], examples: dict[tuple[str, float], Tensor], path: Path
) -> Path:
    """Examples (top), accuracy and SROPs against w per case (bottom)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    weights = list(dict.fromkeys(r["w"] for r in rows))
    colors = {"I": "tab:blue", "II": "tab:red"}
    fig = plt.figure(figsize=(13, 7.8))
    grid = fig.add_gridspec(2, 1, height_ratios=[1, 1.6], hspace=0.25)
    top = grid[0].subgridspec(len(cases), len(weights), wspace=0.05, hspace=0.15)
    for ci, case in enumerate(cases):
        for wi, w in enumerate(weights):
            ax = fig.add_subplot(top[ci, wi])
            ax.imshow(examples[(case, w)][0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if ci == 0:
                ax.set_title(f"w = {w:g}", fontsize=9)
            if wi == 0:
                ax.set_ylabel(f"CASE {case}", fontsize=9, color=colors.get(case, "k"))
    bottom = grid[1].subgridspec(1, 3, wspace=0.32)
    ax_acc, ax_pat, ax_layer = (fig.add_subplot(bottom[0, i]) for i in range(3))
    for case in cases:
        sel = [r for r in rows if r["case"] == case]
        ws = [r["w"] for r in sel]
        color = colors.get(case)
        label = f"CASE {case}: {CASES.get(case, '')}"
        ax_acc.plot(ws, [r["accuracy"] for r in sel], "o-", color=color, label=label)
        ax_pat.plot(
            ws,
            [r["pattern_srop"] for r in sel],
            "o-",
            color=color,
            label=f"CASE {case}: pattern alone",
        )
        ax_pat.plot(
            ws,
            [r["mixed_srop"] for r in sel],
            "s--",
            color=color,
            alpha=0.55,
            ms=4,
            label=f"CASE {case}: mixed input",
        )
        last = sel[-1]
        layer_keys = [k for k in last if k.startswith("pattern_srop/")]
        ax_layer.plot(
            range(len(layer_keys)),
            [last[k] for k in layer_keys],
            "o-",
            color=color,
            label=f"CASE {case}, w = {last['w']:g}",
        )
    ax_acc.set(
        xlabel="w (pattern weight)", ylabel="validation accuracy", title="accuracy", ylim=(0, 1.02)
    )
    ax_pat.set(
        xlabel="w (pattern weight)",
        ylabel="mean SROP over layers (cycles/pixel)",
        title="feature-map SROP",
    )
    layer_keys = [k for k in rows[-1] if k.startswith("pattern_srop/")]
    ax_layer.set_xticks(range(len(layer_keys)))
    ax_layer.set_xticklabels(
        [k.split("/", 1)[1].removeprefix("features.") for k in layer_keys], rotation=30, fontsize=8
    )
    ax_layer.set(ylabel="mean SROP, pattern alone", title="per layer, largest w")
    ax_acc.legend(fontsize=7, loc="lower left")
    ax_layer.legend(fontsize=7, loc="best")
    # Below the axes: inside, it hides points of the mixed-input curves, which span the range.
    ax_pat.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    for ax in (ax_acc, ax_pat, ax_layer):
        ax.grid(alpha=0.3)
    fig.suptitle("Input variation: w * pattern + (1 - w) * digit")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=Path("runs/experiments/input_variation"))
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 0.95],
        help="pattern weights w",
    )
    parser.add_argument("--cases", nargs="+", default=["I", "II"], choices=list(CASES))
    parser.add_argument("--max-val", type=int, default=None, help="keep this many val images")
    add_common_arguments(parser, training=True)
    args = parse_args(parser, argv)
    for w in args.weights:
        if not 0.0 <= w <= 1.0:
            parser.error(f"--weights must lie in [0, 1], got {w}")
    return run(
        args.out_dir,
        weights=args.weights,
        cases=args.cases,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data=args.data,
        data_dir=args.data_dir,
        download=args.download,
        max_train=args.max_train,
        max_val=args.max_val,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
