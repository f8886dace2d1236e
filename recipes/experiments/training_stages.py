"""Sanity check 3, training stages (the paper's Figure 5), with a shuffled-label control.

Digits (default) or MNIST (``--data mnist``): per seed, a small CNN
(:class:`recipes.mnist.SmallCNN`) is initialized with the seed ("randomized") and trained twice
from that same initialization, with the same optimizer, the same batches and the same number of
steps: once on the true labels ("trained") and once on a random permutation of them
("shuffled_labels", the control: the same label counts, no information about the images).
After every epoch both are profiled with :func:`lightning_srop.profile` on a fixed validation
batch and scored on the true validation labels. The "ds" condition replaces every learned layer
by the paper's benchmark pool (max pooling, k2 s2): at each layer, the mean SROP of the input
images max-pooled down to that layer's resolution.

ImageNet-style folder (``--image-dir``, with ``--weights DEFAULT``): per seed, a torchvision
classifier (``--arch``) with random weights ("randomized", initialized with the seed) against
the pretrained one ("trained"), both profiled on a seeded random choice of the folder's images;
there is no training here, so no control and no accuracy.

The paper's direction: trained layers have a LOWER SROP than randomized ones (a decrease in
SROP = an increase in useful information) and, if SROP follows useful information rather than
training as such, lower than the shuffled-label control; over training, SROP falls as accuracy
rises (a negative rank correlation). Per layer, ``training_stages_summary.csv`` gives the
per-seed paired differences of log mean SROP (trained - randomized, trained - shuffled_labels)
and the Spearman correlation of accuracy and mean SROP over epochs, each as a mean over seeds
with a 95 % bootstrap interval and a verdict (rule in the file's first line).

Run::

    python -m recipes.experiments.training_stages --threads 1                 # digits, offline
    python -m recipes.experiments.training_stages --data mnist --data-dir data --download
    python -m recipes.experiments.training_stages --image-dir /datasets/imagenet/val \\
        --arch resnet18 --weights DEFAULT --num-images 256 --image-size 224
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_srop import SROPReport, compare, profile
from lightning_srop.plots import save_figure
from recipes.experiments._common import (
    RULE,
    VERDICT_COLORS,
    Timer,
    command_line,
    digit_data,
    ds_means,
    evaluate,
    imagenet_normalize,
    load_images,
    save_reports,
    seed_list,
    spearman,
    summarize,
    train_model,
    write_csv,
)

__all__ = [
    "CONDITIONS",
    "LAYERS",
    "StageRecorder",
    "digits_seed",
    "main",
    "plot",
    "print_seed",
    "run",
    "shuffled_labels",
    "summary",
    "write_outputs",
]

LAYERS: tuple[str, ...] = (
    "features.conv1",
    "features.pool1",
    "features.conv2",
    "features.down",
    "features.conv3",
)
CONDITIONS: tuple[str, ...] = ("randomized", "trained", "shuffled_labels", "ds")


def shuffled_labels(labels: Tensor, seed: int) -> Tensor:
    """A seeded random permutation of ``labels``: the control's training labels."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return labels[order]


class StageRecorder(pl.Callback):
    """Profile the model's layers and measure accuracy before training and after each epoch.

    ``layers=None`` measures :func:`lightning_srop.profile`'s default choice; ``changes`` are
    further option fields for ``profile`` (e.g. ``layout=``, ``grid=``, ``prefix_tokens=``).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        layers: Sequence[str] | None = LAYERS,
        **changes: Any,
    ) -> None:
        self.x, self.y = x, y
        self.layers = None if layers is None else list(layers)
        self.changes = changes
        self.stages: list[tuple[int, float, SROPReport]] = []

    def record(self, model: torch.nn.Module, epoch: int) -> None:
        report = profile(model, self.x, layers=self.layers, label=f"epoch {epoch}", **self.changes)
        self.stages.append((epoch, evaluate(model, self.x, self.y), report))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.stages:
            self.record(pl_module, 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(pl_module, trainer.current_epoch + 1)


def _row(
    seed: int,
    layer: str,
    depth: int,
    condition: str,
    epoch: int,
    accuracy: float,
    srop: float,
    flat: float = 0.0,
) -> dict[str, Any]:
    """One CSV row; ``flat`` is the share of the layer's maps without SROP (constant maps,
    e.g. behind dead ReLUs): all flat gives ``mean_srop`` NaN."""
    return {
        "seed": seed,
        "layer": layer,
        "depth": depth,
        "condition": condition,
        "epoch": epoch,
        "accuracy": accuracy,
        "mean_srop": srop,
        "log_mean_srop": math.log(srop) if math.isfinite(srop) else math.nan,
        "flat_fraction": flat,
    }


def _ds_rows(
    seed: int, x: Tensor, report: SROPReport, layers: Sequence[str]
) -> list[dict[str, Any]]:
    downscale = {}
    for name in layers:
        meta = report[name].meta
        downscale[name] = meta.downscale if meta is not None and meta.downscale else 1.0
    means = ds_means(x, downscale.values())
    return [
        _row(seed, name, depth, "ds", -1, math.nan, means[2 ** round(math.log2(downscale[name]))])
        for depth, name in enumerate(layers)
    ]


def digits_seed(
    seed: int,
    tx: Tensor,
    ty: Tensor,
    vx: Tensor,
    vy: Tensor,
    *,
    epochs: int,
    batch_size: int,
    build: Callable[[], pl.LightningModule] | None = None,
    layers: Sequence[str] | None = LAYERS,
    changes: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, SROPReport]]:
    """One seed of the digits check: the model ``build()`` (default
    :class:`recipes.mnist.SmallCNN`) initialized with ``seed``, trained on the true and on the
    shuffled labels, ``layers`` (``None``: profile's default choice, as the randomized
    network's report lists them) profiled with the option ``changes`` at every stage."""
    if build is None:
        from recipes.mnist import SmallCNN

        build = SmallCNN
    rows: list[dict[str, Any]] = []
    reports: dict[str, SROPReport] = {}
    names = list(layers) if layers is not None else None
    for condition, labels in (("trained", ty), ("shuffled_labels", shuffled_labels(ty, seed))):
        torch.manual_seed(seed)
        model = build()  # the same initial weights for both conditions
        recorder = StageRecorder(vx, vy, layers, **(changes or {}))
        train_model(
            model, tx, labels, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=[recorder]
        )
        for epoch, accuracy, report in recorder.stages:
            if epoch == 0 and condition != "trained":
                continue  # the control starts from the very same randomized network
            name = "randomized" if epoch == 0 else condition
            names = names or list(report.names)
            for depth, layer in enumerate(names):
                stats = report[layer].stats
                rows.append(
                    _row(
                        seed,
                        layer,
                        depth,
                        name,
                        epoch,
                        accuracy,
                        stats["mean"],
                        stats["flat_fraction"],
                    )
                )
        reports.setdefault("randomized", recorder.stages[0][2])
        reports[condition] = recorder.stages[-1][2]
    rows += _ds_rows(seed, vx, reports["randomized"], names or [])
    return rows, reports


def _pretrained_seed(
    seed: int, x: Tensor, *, arch: str, weights: str | None
) -> tuple[list[dict[str, Any]], dict[str, SROPReport]]:
    from recipes.imagenet import build_model

    torch.manual_seed(seed)
    randomized = profile(build_model(arch, None), x, label="randomized")
    trained = profile(build_model(arch, weights), x, label="trained")
    layers = [n for n in randomized.names if n in trained]
    rows: list[dict[str, Any]] = []
    for condition, report in (("randomized", randomized), ("trained", trained)):
        for depth, layer in enumerate(layers):
            epoch = 0 if condition == "randomized" else -1
            stats = report[layer].stats
            rows.append(
                _row(
                    seed,
                    layer,
                    depth,
                    condition,
                    epoch,
                    math.nan,
                    stats["mean"],
                    stats["flat_fraction"],
                )
            )
    rows += _ds_rows(seed, x, randomized, layers)
    return rows, {"randomized": randomized, "trained": trained}


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layer: each condition's mean SROP, the paired log differences trained - randomized
    and trained - shuffled_labels (paper: < 0), and the Spearman correlation of accuracy and
    mean SROP over the trained run's epochs (paper: < 0), over seeds, with verdicts."""
    seeds = sorted({r["seed"] for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    out: list[dict[str, Any]] = []
    for layer in layers:
        sel = [r for r in rows if r["layer"] == layer]
        key = {"layer": layer, "depth": sel[0]["depth"]}

        def final(condition: str, seed: int, sel: list[dict[str, Any]] = sel) -> float:
            last = [r for r in sel if r["condition"] == condition and r["seed"] == seed]
            return float(max(last, key=lambda r: r["epoch"])["log_mean_srop"])

        present = [c for c in CONDITIONS if any(r["condition"] == c for r in sel)]
        for condition in present:
            values = [math.exp(final(condition, s)) for s in seeds]
            out.append(summarize(key, f"mean_srop[{condition}]", values))
        for control in ("randomized", "shuffled_labels"):
            if control in present:
                diffs = [final("trained", s) - final(control, s) for s in seeds]
                out.append(summarize(key, f"log_srop[trained - {control}]", diffs, direction=-1))
        rhos = []
        for s in seeds:
            run_ = sorted(
                (r for r in sel if r["seed"] == s and r["condition"] in ("randomized", "trained")),
                key=lambda r: r["epoch"],
            )
            finite = all(math.isfinite(r["accuracy"] + r["mean_srop"]) for r in run_)
            if len(run_) > 2 and finite:
                rhos.append(spearman([r["accuracy"] for r in run_], [r["mean_srop"] for r in run_]))
        if rhos:
            out.append(summarize(key, "spearman[accuracy, mean_srop]", rhos, direction=-1))
    for condition in ("trained", "shuffled_labels"):
        accs = [
            max(
                (r for r in rows if r["seed"] == s and r["condition"] == condition),
                key=lambda r: r["epoch"],
            )["accuracy"]
            for s in seeds
            if any(r["seed"] == s and r["condition"] == condition for r in rows)
        ]
        if accs and all(math.isfinite(a) for a in accs):
            out.append(summarize({"layer": "-", "depth": -1}, f"accuracy[{condition}]", accs))
    return out


def run(
    out_dir: Path,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    data: Literal["digits", "mnist"] = "digits",
    data_dir: str = "data",
    download: bool = False,
    max_train: int | None = None,
    num_profile: int = 256,
    image_dir: str | None = None,
    arch: str = "resnet18",
    weights: str | None = None,
    num_images: int = 32,
    image_size: int = 128,
    seed: int = 0,
    seeds: int = 3,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every seed; write ``training_stages.csv`` (per seed, layer, condition and epoch),
    ``training_stages_summary.csv`` (per layer, with intervals and verdicts), the figures
    ``training_stages.png`` and ``training_stages_reports.png`` and the first seed's reports
    (``training_stages_reports.json``); return ``(rows, summary rows)``.

    Args:
        out_dir: folder for the CSVs, the PNGs and the reports
        epochs: training epochs
        batch_size: training batch size
        data: digits (scikit-learn's, offline) or mnist (torchvision)
        data_dir: MNIST root (torchvision layout)
        download: download MNIST if missing
        max_train: keep this many train images
        num_profile: validation images profiled and scored at each stage
        image_dir: ImageNet-style image folder: randomized vs pretrained torchvision model
            instead
        arch: torchvision arch (with image_dir)
        weights: with image_dir: DEFAULT or a torchvision weight name (downloads once)
        num_images: images (with image_dir)
        image_size: crop size (with image_dir)
        seed: first seed
        seeds: number of seeds (seed, seed + 1, ...); intervals are bootstrapped over them
    """
    timer = Timer()
    rows: list[dict[str, Any]] = []
    first: dict[str, SROPReport] = {}
    for s in seed_list(seed, seeds):
        if image_dir is not None:
            x = imagenet_normalize(load_images(image_dir, num_images, image_size, s))
            seed_rows, reports = _pretrained_seed(s, x, arch=arch, weights=weights)
        else:
            tx, ty, vx, vy = digit_data(
                data, data_dir, download=download, max_train=max_train, max_val=num_profile, seed=s
            )
            tx, vx = (tx - 0.5) / 0.5, (vx - 0.5) / 0.5
            seed_rows, reports = digits_seed(
                s, tx, ty, vx, vy, epochs=epochs, batch_size=batch_size
            )
        rows += seed_rows
        first = first or reports
        print_seed(s, seed_rows, timer)
    source = image_dir and f"{arch} ({weights or 'random'} weights) on {image_dir}"
    table = write_outputs(
        out_dir, "training_stages", rows, first, seed=seed, data=source or data, timer=timer
    )
    return rows, table


def print_seed(seed: int, rows: Sequence[dict[str, Any]], timer: Timer) -> None:
    """Print one seed's final accuracies and the time so far."""
    accs = {
        c: max((r for r in rows if r["condition"] == c), key=lambda r: r["epoch"])["accuracy"]
        for c in ("randomized", "trained", "shuffled_labels")
        if any(r["condition"] == c for r in rows)
    }
    print(
        f"seed {seed}: accuracy "
        + ", ".join(f"{c} {a:.3f}" for c, a in accs.items())
        + f"  ({timer.elapsed:.0f} s)"
    )


def write_outputs(
    out_dir: Path,
    stem: str,
    rows: Sequence[dict[str, Any]],
    first: Mapping[str, SROPReport],
    *,
    seed: int,
    data: str,
    timer: Timer,
    strip: str = "features.",
) -> list[dict[str, Any]]:
    """Summarize ``rows`` (:func:`summary`), write ``<stem>.csv``, ``<stem>_summary.csv``, the
    figures ``<stem>.png`` (:func:`plot`) and ``<stem>_reports.png`` and the first seed's
    reports ``<stem>_reports.json`` into ``out_dir``, print the verdicts; return the summary.
    ``strip`` is left out of the layer names on the figure's axes."""
    table = summary(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{stem}.csv", rows)
    write_csv(out_dir / f"{stem}_summary.csv", table, comments=[f"rule: {RULE}"])
    save_reports(out_dir / f"{stem}_reports.json", first)
    figure = compare(
        list(first.values()),
        list(first),
        log=True,
        title=f"seed {seed}: mean SROP per layer, 25-75 % bands",
    )
    save_figure(figure, out_dir / f"{stem}_reports.png")
    plot(rows, table, out_dir / f"{stem}.png", data=data, strip=strip)
    for r in table:
        if r["verdict"] != "n/a":
            print(
                f"  {r['layer']:<24} {r['quantity']:<38} {r['mean']:+.4f} "
                f"[{r['low']:+.4f}, {r['high']:+.4f}]  {r['verdict']}"
            )
    print(f"wrote {out_dir}/{stem}*.csv, .png, .json in {timer.elapsed:.0f} s")
    return table


def plot(
    rows: Sequence[dict[str, Any]],
    table: Sequence[dict[str, Any]],
    path: Path,
    *,
    data: str,
    strip: str = "features.",
) -> Path:
    """log mean SROP per layer and condition with intervals (left), the trained-vs-control
    differences and the Spearman correlations with intervals and verdicts (middle), SROP and
    accuracy over epochs (right); ``strip`` is left out of the layer names on the axes."""
    from matplotlib.figure import Figure

    from recipes.experiments._common import bootstrap_interval

    layers = [r["layer"] for r in table if r["quantity"] == "mean_srop[randomized]"]
    short = [name.removeprefix(strip) for name in layers]
    seeds = sorted({r["seed"] for r in rows})
    fig = Figure(figsize=(17, 5.2), layout="constrained")
    ax_layers, ax_diff, ax_epochs = fig.subplots(1, 3, width_ratios=[1.1, 1.1, 1])
    colors = {
        "randomized": "tab:gray",
        "trained": "tab:blue",
        "shuffled_labels": "tab:orange",
        "ds": "black",
    }
    xs = list(range(len(layers)))
    for condition in CONDITIONS:
        sel = [r for r in table if r["quantity"] == f"mean_srop[{condition}]"]
        if not sel:
            continue
        means = [math.log(r["mean"]) for r in sel]
        err = [
            [math.log(r["mean"]) - math.log(r["low"]) for r in sel],
            [math.log(r["high"]) - math.log(r["mean"]) for r in sel],
        ]
        ax_layers.errorbar(
            xs,
            means,
            yerr=err,
            fmt="o-" if condition != "ds" else "x--",
            capsize=3,
            color=colors[condition],
            label=condition,
        )
    ax_layers.set_xticks(xs, short, rotation=30 if len(xs) > 6 else 0, fontsize=8)
    ax_layers.set(
        ylabel="log mean SROP (layer grid)",
        title=f"per layer, final epoch; bars: 95 % bootstrap over {len(seeds)} seeds",
    )
    ax_layers.grid(alpha=0.3)
    ax_layers.legend(fontsize=8)
    quantities = list(dict.fromkeys(r["quantity"] for r in table if r["verdict"] != "n/a"))
    width = 0.8 / max(len(quantities), 1)
    markers = ["o", "s", "^", "D"]
    for qi, quantity in enumerate(quantities):
        of_layer = {r["layer"]: r for r in table if r["quantity"] == quantity}
        for li, layer in enumerate(layers):
            if layer not in of_layer:
                continue
            r = of_layer[layer]
            x = li + (qi - (len(quantities) - 1) / 2) * width
            color = VERDICT_COLORS[r["verdict"]]
            ax_diff.errorbar(
                [x],
                [r["mean"]],
                yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
                fmt=markers[qi % len(markers)],
                color=color,
                capsize=3,
                label=quantity if li == 0 else None,
            )
            ax_diff.annotate(
                r["verdict"][:5],
                (x, r["high"]),
                fontsize=6,
                ha="center",
                color=color,
                xytext=(0, 3),
                textcoords="offset points",
                rotation=90,
            )
    ax_diff.axhline(0, color="k", lw=0.8)
    ax_diff.set_xticks(xs, short, rotation=30 if len(xs) > 6 else 0, fontsize=8)
    ax_diff.set(
        ylabel="difference / correlation (paper: < 0)",
        title="paired differences and Spearman rho; color = verdict",
    )
    ax_diff.grid(alpha=0.3)
    ax_diff.legend(fontsize=7, loc="lower left")
    epochs = sorted({r["epoch"] for r in rows if r["epoch"] >= 0})
    for condition, style in (("trained", "-"), ("shuffled_labels", ":")):
        runs = [r for r in rows if r["condition"] in ("randomized", condition)]
        if not any(r["condition"] == condition for r in runs) or len(epochs) < 2:
            continue
        for li, layer in enumerate(layers):
            ys = []
            for e in epochs:
                vals = [r["log_mean_srop"] for r in runs if r["layer"] == layer and r["epoch"] == e]
                ys.append(sum(vals) / len(vals))
            ax_epochs.plot(
                epochs,
                [y - ys[0] for y in ys],
                style,
                marker="o",
                ms=2,
                color=_cmap(li, len(layers)),
                label=f"{short[li]}" if condition == "trained" else None,
            )
    if len(epochs) >= 2:
        twin = ax_epochs.twinx()
        for condition, style in (("trained", "s-"), ("shuffled_labels", "s:")):
            runs = [r for r in rows if r["condition"] in ("randomized", condition)]
            acc = []
            for e in epochs:
                lo_hi = [r["accuracy"] for r in runs if r["epoch"] == e and r["depth"] == 0]
                acc.append(bootstrap_interval(lo_hi) if lo_hi else (math.nan,) * 3)
            twin.errorbar(
                epochs,
                [a[0] for a in acc],
                yerr=[[a[0] - a[1] for a in acc], [a[2] - a[0] for a in acc]],
                fmt=style,
                color="tab:red",
                capsize=2,
                label=f"accuracy ({condition})",
            )
        twin.set_ylabel("validation accuracy (true labels)", color="tab:red")
        twin.set_ylim(0, 1.02)
        twin.legend(fontsize=7, loc="center right")
    ax_epochs.axhline(0, color="k", lw=0.8)
    ax_epochs.set(
        xlabel="epoch (0 = randomized)",
        ylabel="log SROP - log SROP(randomized), seed mean",
        title="over epochs: solid trained, dotted shuffled labels",
    )
    ax_epochs.grid(alpha=0.3)
    if ax_epochs.get_legend_handles_labels()[0]:
        ax_epochs.legend(fontsize=7, loc="lower left", ncol=2)
    fig.suptitle(f"Training stages: {data}")
    save_figure(fig, path)
    return path


def _cmap(i: int, n: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["viridis"](i / max(n - 1, 1) * 0.9)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The command line: :func:`run`'s arguments as flags (``--help`` lists them)."""
    return command_line(run, argv, description=__doc__.split("\n\n")[0], check=_check)


def _check(arguments: Mapping[str, Any]) -> str | None:
    if arguments["image_dir"] is None:
        return None
    from recipes.imagenet import ARCHS

    arch = arguments["arch"]
    return None if arch in ARCHS else f"unknown --arch {arch!r}; valid choices: {', '.join(ARCHS)}"


if __name__ == "__main__":
    main()
