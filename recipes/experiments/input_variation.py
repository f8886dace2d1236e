"""Sanity check 1, input variation (the paper's Figures 2 and 3).

The exact design (the paper does not publish its patterns; this is ours):

- **Digits**: scikit-learn's digits resized to 28 x 28 (default, offline) or MNIST
  (``--data mnist``), floats in [0, 1], split 80/20 with the seed.
- **Pattern**: one of a bank of 10 sinusoidal gratings ``0.5 + 0.5 cos(2 pi f (cos(a) i +
  sin(a) j) + phase)`` in [0, 1], grating ``g`` with frequency ``f_g`` evenly spaced in
  [0.08, 0.36] cycles per pixel and orientation ``a_g = 2.39996 g mod pi`` (the golden angle,
  so no two share an orientation); the phase is uniform random per image.
- **Image**: ``w * pattern + (1 - w) * digit`` for ``w`` in ``--weights`` (default 0, 0.25,
  0.5, 0.75, 0.95: the paper's values and w = 0, where both cases see the same plain digits),
  then normalized as ``(x - 0.5) / 0.5``.
- **CASE I** (the pattern is useful information): the grating's index is the image's label,
  so the pattern alone identifies the class.
- **CASE II** (the pattern is noise): the grating's index is drawn uniformly at random for
  every image (train and validation), independently of the label. Both cases draw from the same
  bank, so their inputs have the same spectra; only what the pattern says about the label
  differs.
- **Training**: one :class:`recipes.mnist.SmallCNN` per (seed, case, w), the same initial
  weights for both cases (AdamW, ``--epochs``, seeded batches).
- **Measuring**: both cases are measured on **one pattern set, fixed per seed before any
  training**: the gratings of the validation labels with phases drawn once from the seed
  (:func:`measurement_patterns`), i.e. the very patterns of CASE I's validation images. Each
  trained network is fed these patterns alone (normalized like the images) and
  :func:`lightning_srop.profile` gives each layer's mean SROP: ``pattern_srop``. ``mixed_srop``
  is the same on the mixed images ``w * pattern + (1 - w) * digit`` made from that one pattern
  set and the validation digits, again the same images for both cases (each of them is a
  possible input in either case: in CASE II any grating may come with any digit). So at
  ``w = 0``, where both cases train the very same model on the same plain digits, every
  difference is exactly 0. Also recorded per case: the validation accuracy and the mixed
  images' own SROP (``input_srop``) on the case's own validation images (CASE I: the
  measurement images themselves; CASE II: the same digits with random gratings), i.e. each
  case's own task.

The paper's claim: trained models keep the pattern's mean SROP low in CASE I (high accuracy)
and high in CASE II (low accuracy). ``input_variation_summary.csv`` gives, per w and layer, the
per-seed paired difference ``pattern_srop[I] - pattern_srop[II]`` (paper: < 0) and
``accuracy[I] - accuracy[II]`` (paper: > 0) as means over seeds with 95 % bootstrap intervals
and verdicts (rule in the file's first line). At w = 0 the two cases train the very same model
on the same data and are measured on the same inputs, so every difference there is exactly 0
(a check of the design, not a result).

Run::

    python -m recipes.experiments.input_variation --threads 1               # digits, offline
    python -m recipes.experiments.input_variation --data mnist --data-dir data --download
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from recipes.experiments._common import (
    RULE,
    VERDICT_COLORS,
    Timer,
    command_line,
    digit_data,
    ds_means,
    evaluate,
    layer_means,
    seed_list,
    summarize,
    train_model,
    write_csv,
)

__all__ = [
    "LAYERS",
    "grating_bank",
    "main",
    "measurement_patterns",
    "mix",
    "pattern_index",
    "run",
]

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


def measurement_patterns(labels: Tensor, size: int, seed: int) -> Tensor:
    """The one pattern set both cases are measured on: grating ``labels[i]`` with a phase
    drawn from ``seed``, as ``(N, 1, size, size)`` in [0, 1]. It equals the patterns that
    :func:`mix` gives CASE I with the same ``seed``; it does not depend on the case, the
    weight or the trained model, so it is fixed before training."""
    return gratings(labels, size, torch.Generator().manual_seed(seed))


def _normalize(x: Tensor) -> Tensor:
    return (x - 0.5) / 0.5


def _seed_rows(
    seed: int,
    tx: Tensor,
    ty: Tensor,
    vx: Tensor,
    vy: Tensor,
    *,
    weights: Sequence[float],
    cases: Sequence[str],
    epochs: int,
    batch_size: int,
    examples: dict[tuple[str, float], Tensor],
) -> list[dict[str, Any]]:
    from recipes.mnist import SmallCNN

    rows: list[dict[str, Any]] = []
    # one pattern set for every case and weight, fixed before any training
    patterns = measurement_patterns(vy, vx.shape[-1], seed=seed + 2)
    for case in cases:
        for w in weights:
            train_x, _ = mix(tx, ty, w, case, seed=seed + 1)
            val_x, _ = mix(vx, vy, w, case, seed=seed + 2)  # the case's own task
            measured_x = w * patterns + (1.0 - w) * vx  # the same images for every case
            examples.setdefault((case, w), val_x[:1])
            torch.manual_seed(seed)
            model = SmallCNN()
            train_model(
                model, _normalize(train_x), ty, epochs=epochs, batch_size=batch_size, seed=seed
            )
            accuracy = evaluate(model, _normalize(val_x), vy)
            mixed = layer_means(model, _normalize(measured_x), LAYERS)
            pattern = layer_means(model, _normalize(patterns), LAYERS)
            input_srop = ds_means(val_x, [1])[1]
            for depth, layer in enumerate(LAYERS):
                rows.append(
                    {
                        "seed": seed,
                        "case": case,
                        "w": float(w),
                        "layer": layer,
                        "depth": depth,
                        "accuracy": accuracy,
                        "pattern_srop": pattern[layer],
                        "mixed_srop": mixed[layer],
                        "input_srop": input_srop,
                    }
                )
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per w: accuracy of each case and ``accuracy[I] - accuracy[II]`` (paper: > 0); per w and
    layer: each case's pattern SROP and ``pattern_srop[I] - pattern_srop[II]`` (paper: < 0),
    also for the mean over layers; intervals over seeds, verdicts."""
    seeds = sorted({r["seed"] for r in rows})
    cases = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["seed"], r["case"], r["w"], r["layer"]): r for r in rows}
    out: list[dict[str, Any]] = []
    both = "I" in cases and "II" in cases
    for w in dict.fromkeys(r["w"] for r in rows):
        key = {"w": w, "layer": "-", "depth": -1}
        acc = {c: [by[(s, c, w, LAYERS[0])]["accuracy"] for s in seeds] for c in cases}
        for c in cases:
            out.append(summarize(key, f"accuracy[{c}]", acc[c]))
        if both:
            diffs = [a - b for a, b in zip(acc["I"], acc["II"], strict=True)]
            out.append(summarize(key, "accuracy[I] - accuracy[II]", diffs, direction=1))
        layer_keys = [(layer, depth) for depth, layer in enumerate(LAYERS)]
        for layer, depth in [*layer_keys, ("mean over layers", len(LAYERS))]:
            key = {"w": w, "layer": layer, "depth": depth}

            def value(s: int, c: str, layer: str = layer, w: float = w) -> float:
                if layer != "mean over layers":
                    return float(by[(s, c, w, layer)]["pattern_srop"])
                return float(sum(by[(s, c, w, n)]["pattern_srop"] for n in LAYERS)) / len(LAYERS)

            for c in cases:
                out.append(summarize(key, f"pattern_srop[{c}]", [value(s, c) for s in seeds]))
            if both:
                diffs = [value(s, "I") - value(s, "II") for s in seeds]
                out.append(
                    summarize(key, "pattern_srop[I] - pattern_srop[II]", diffs, direction=-1)
                )
    return out


def run(
    out_dir: Path,
    *,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.95),
    cases: Sequence[Literal["I", "II"]] = ("I", "II"),
    epochs: int = 8,
    batch_size: int = 64,
    data: Literal["digits", "mnist"] = "digits",
    data_dir: str = "data",
    download: bool = False,
    max_train: int | None = None,
    max_val: int | None = None,
    seed: int = 0,
    seeds: int = 3,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train one model per (seed, case, w); write ``input_variation.csv`` (per seed, case, w and
    layer), ``input_variation_summary.csv`` (intervals, verdicts) and ``.png``.

    Args:
        out_dir: folder for the CSVs and the PNG
        weights: pattern weights w, each in [0, 1]
        cases: I (the pattern is the label's) and/or II (the pattern is random)
        epochs: training epochs per model
        batch_size: training batch size
        data: digits (scikit-learn's, offline) or mnist (torchvision)
        data_dir: MNIST root (torchvision layout)
        download: download MNIST if missing
        max_train: keep this many train images
        max_val: keep this many validation images
        seed: first seed
        seeds: number of seeds (seed, seed + 1, ...); intervals are bootstrapped over them
    """
    timer = Timer()
    rows: list[dict[str, Any]] = []
    examples: dict[tuple[str, float], Tensor] = {}
    for s in seed_list(seed, seeds):
        tx, ty, vx, vy = digit_data(
            data, data_dir, download=download, max_train=max_train, max_val=max_val, seed=s
        )
        rows += _seed_rows(
            s,
            tx,
            ty,
            vx,
            vy,
            weights=weights,
            cases=cases,
            epochs=epochs,
            batch_size=batch_size,
            examples=examples,
        )
        print(f"seed {s} done ({timer.elapsed:.0f} s)")
    table = summary(rows)
    for r in table:
        if r["verdict"] != "n/a" and r["layer"] in ("-", "mean over layers"):
            print(
                f"  w={r['w']:.2f} {r['layer']:<18} {r['quantity']:<36} {r['mean']:+.4f} "
                f"[{r['low']:+.4f}, {r['high']:+.4f}]  {r['verdict']}"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "input_variation.csv", rows)
    write_csv(out_dir / "input_variation_summary.csv", table, comments=[f"rule: {RULE}"])
    plot(table, examples, out_dir / "input_variation.png", seeds=seeds)
    print(f"wrote {out_dir}/input_variation*.csv and .png in {timer.elapsed:.0f} s")
    return rows, table


def plot(
    table: Sequence[dict[str, Any]],
    examples: dict[tuple[str, float], Tensor],
    path: Path,
    *,
    seeds: int,
) -> Path:
    """Examples (top); accuracy, the pattern's SROP (mean over layers) against w, and the
    per-layer difference CASE I - CASE II with verdicts (bottom); bars: 95 % intervals."""
    from matplotlib.figure import Figure

    cases = list(dict.fromkeys(c for c, _ in examples))
    weights = list(dict.fromkeys(w for _, w in examples))
    colors = {"I": "tab:blue", "II": "tab:red"}
    fig = Figure(figsize=(15, 8.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.7])  # type: ignore[misc]
    axes = top.subplots(len(cases), len(weights), squeeze=False)
    for ci, case in enumerate(cases):
        for wi, w in enumerate(weights):
            ax = axes[ci][wi]
            ax.imshow(examples[(case, w)][0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if ci == 0:
                ax.set_title(f"w = {w:g}", fontsize=9)
            if wi == 0:
                ax.set_ylabel(f"CASE {case}", fontsize=9, color=colors.get(case, "k"))
    ax_acc, ax_pat, ax_diff = bottom.subplots(1, 3)

    def series(quantity: str, layer: str) -> list[dict[str, Any]]:
        return [r for r in table if r["quantity"] == quantity and r["layer"] == layer]

    def bars(rows: list[dict[str, Any]]) -> list[list[float]]:
        return [[r["mean"] - r["low"] for r in rows], [r["high"] - r["mean"] for r in rows]]

    for case in cases:
        acc = series(f"accuracy[{case}]", "-")
        pat = series(f"pattern_srop[{case}]", "mean over layers")
        label = f"CASE {case}: {CASES.get(case, '')}"
        ax_acc.errorbar(
            [r["w"] for r in acc],
            [r["mean"] for r in acc],
            yerr=bars(acc),
            fmt="o-",
            color=colors.get(case),
            capsize=3,
            label=label,
        )
        ax_pat.errorbar(
            [r["w"] for r in pat],
            [r["mean"] for r in pat],
            yerr=bars(pat),
            fmt="o-",
            color=colors.get(case),
            capsize=3,
            label=label,
        )
    for ax, quantity, layer in (
        (ax_acc, "accuracy[I] - accuracy[II]", "-"),
        (ax_pat, "pattern_srop[I] - pattern_srop[II]", "mean over layers"),
    ):
        for r in series(quantity, layer):
            ax.annotate(
                r["verdict"],
                (r["w"], ax.get_ylim()[1]),
                fontsize=7,
                ha="center",
                va="top",
                color=VERDICT_COLORS[r["verdict"]],
                rotation=90,
            )
    layers = [n for n in LAYERS]
    short = [n.removeprefix("features.") for n in layers] + ["mean"]
    ws = weights
    width = 0.8 / max(len(ws), 1)
    cmap = {w: (0.2 + 0.7 * i / max(len(ws) - 1, 1)) for i, w in enumerate(ws)}
    for wi, w in enumerate(ws):
        sel = [
            r
            for r in table
            if r["quantity"] == "pattern_srop[I] - pattern_srop[II]" and r["w"] == w
        ]
        for li, r in enumerate(sel):
            x = li + (wi - (len(ws) - 1) / 2) * width
            ax_diff.errorbar(
                [x],
                [r["mean"]],
                yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
                fmt="o",
                ms=4,
                capsize=2,
                color=VERDICT_COLORS[r["verdict"]],
                alpha=cmap[w],
            )
        if sel:
            ax_diff.plot([], [], "o", color="k", alpha=cmap[w], label=f"w = {w:g}")
    for v, color in VERDICT_COLORS.items():
        if v != "n/a":
            ax_diff.plot([], [], "s", color=color, label=v)
    ax_diff.axhline(0, color="k", lw=0.8)
    ax_diff.set_xticks(range(len(short)), short, rotation=30, fontsize=8)
    ax_diff.set(
        ylabel="pattern SROP, CASE I - CASE II (paper: < 0)",
        title="per layer; left to right w; color = verdict",
    )
    ax_acc.set(
        xlabel="w (pattern weight)", ylabel="validation accuracy", title="accuracy", ylim=(0, 1.02)
    )
    ax_pat.set(
        xlabel="w (pattern weight)",
        ylabel="mean SROP over layers, pattern alone",
        title="the pattern's SROP in the trained network",
    )
    for ax in (ax_acc, ax_pat, ax_diff):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Input variation: w * pattern + (1 - w) * digit; bars: 95 % bootstrap over {seeds} seeds"
    )
    from lightning_srop.plots import save_figure

    save_figure(fig, path)
    return path


def main(argv: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The command line: :func:`run`'s arguments as flags (``--help`` lists them)."""
    return command_line(run, argv, description=__doc__.split("\n\n")[0], check=_check)


def _check(arguments: Mapping[str, Any]) -> str | None:
    bad = [w for w in arguments["weights"] if not 0.0 <= w <= 1.0]
    return f"--weights must lie in [0, 1], got {bad[0]}" if bad else None


if __name__ == "__main__":
    main()
