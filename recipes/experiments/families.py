"""Training stages across architecture families: does SROP fall with training after a
downscaling and not on an unchanged grid?

The paper's argument rests on downscaling: what passes a downscaling layer must be
low-frequency, so trained layers after a downscaling should show a lower SROP. The hypothesis
tested here:

    H: with training, SROP falls in layers that follow a downscaling (stride, pooling, patch
    merging) and does not fall in layers that keep the grid of the layer before them.

Per family (:data:`FAMILIES`: a small CNN, a ResNet, a ConvNeXt-style network, a ViT and a
Swin-style hierarchical transformer, all built small from configs with random weights) and data
set (the bundled digits upsampled to 32 x 32, or :func:`recipes.data.shapes_tensors`'s
generated textured shapes), the protocol of :mod:`recipes.experiments.training_stages` runs
unchanged (its :func:`~recipes.experiments.training_stages.digits_seed` and
:func:`~recipes.experiments.training_stages.summary`): per seed the model is initialized with
the seed ("randomized"), trained on the true labels ("trained") and, from the same
initialization with the same batches, on shuffled labels ("shuffled_labels", the control);
each stage is profiled with :func:`lightning_srop.profile`. Each measured layer is then marked
"after downscaling" when its grid (the map size the forward pass showed) is smaller than the
grid of the measured layer before it (the input's for the first layer), else "same grid".

Outputs in ``--out-dir``: per family and data set the rows (``<family>_<data>.csv``) and the
layers (``<family>_<data>_layers.csv``: kind, grid, previous grid, after downscaling); across
all, ``families_summary.csv`` (per layer, the summary quantities with intervals and verdicts),
``families_h.csv`` (per data set and group, the verdict counts, the group means over seeds and
the verdict on H, rule in its first lines) and ``families.png``.

Run::

    python -m recipes.experiments.families --threads 1            # 5 families x 2 data sets
    python -m recipes.experiments.families --data shapes --families cnn swin --threads 1
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_srop import SROPReport
from recipes.experiments._common import (
    RULE,
    VERDICTS,
    Timer,
    command_line,
    digit_data,
    read_csv,
    seed_list,
    summarize,
    write_csv,
)
from recipes.experiments._families_plot import plot
from recipes.experiments.training_stages import LAYERS as CNN_LAYERS
from recipes.experiments.training_stages import digits_seed, print_seed, summary
from recipes.experiments.vit_training_stages import SmallViT, profile_options, upsample

__all__ = [
    "DATASETS",
    "FAMILIES",
    "H_RULE",
    "Classifier",
    "Family",
    "h_table",
    "layer_table",
    "load_data",
    "main",
    "plot",
    "run",
]

#: The data sets: scikit-learn's digits (upsampled) and the generated shapes.
DATASETS: Final[tuple[str, ...]] = ("digits", "shapes")

#: Every image is resized or generated at this size.
IMAGE_SIZE: Final[int] = 32

#: How the verdict on H is decided; written with :data:`RULE` at the top of ``families_h.csv``.
H_RULE: Final[str] = (
    "H per data set, from each layer's verdict on log_srop[trained - randomized] (falls = "
    "holds): H holds if every after-downscaling layer falls and no same-grid layer falls; H is "
    "refuted if some after-downscaling layer rises (reversed) or some same-grid layer falls "
    "(holds); else inconclusive. 'after downscaling' = the layer's grid (H x W seen in the "
    "forward pass) is smaller than that of the measured layer before it (the input for the "
    "first). The same rule on log_srop[trained - shuffled_labels] gives H against the control"
)


class Classifier(pl.LightningModule):
    """A network ``net`` (images to logits) with cross-entropy and AdamW.

    Args:
        net: the model, called as ``net(x)``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(self, net: nn.Module, lr: float = 2e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.net = net
        self.lr, self.weight_decay = lr, weight_decay

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.net(x)
        return logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def _resnet(num_classes: int) -> Classifier:
    """A small ResNet: 3 x 3 stem, three stages of two torchvision ``BasicBlock``\\ s (skip
    connections, batch norm), the first block of stages 2 and 3 with stride 2 (32 -> 16 -> 8)."""
    from torchvision.models.resnet import BasicBlock

    widths, stages = (8, 16, 32), OrderedDict[str, nn.Module]()
    stages["stem"] = nn.Sequential(
        nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
    )
    width = widths[0]
    for i, out in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or out != width:
            down = nn.Sequential(
                nn.Conv2d(width, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        stages[f"layer{i + 1}"] = nn.Sequential(
            BasicBlock(width, out, stride=stride, downsample=down), BasicBlock(out, out)
        )
        width = out
    stages["head"] = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
    )
    return Classifier(nn.Sequential(stages), lr=2e-3)


def _convnext(num_classes: int) -> Classifier:
    """A ConvNeXt-style network from timm's ``ConvNeXtBlock`` (depthwise 5 x 5 conv,
    LayerNorm, GELU MLP, layer scale): a 2 x 2 patchify stem with LayerNorm, two blocks, a
    separate downsampling layer (LayerNorm + 2 x 2 stride-2 conv), two blocks, then global
    pooling, LayerNorm and a linear head (32 -> 16 -> 8). timm's ``ConvNeXt`` class always
    builds four stages, too many for 32 x 32 images."""
    from timm.layers.norm import LayerNorm2d
    from timm.models.convnext import ConvNeXtBlock

    dims = (32, 64)
    layers = OrderedDict[str, nn.Module]()
    layers["stem"] = nn.Sequential(nn.Conv2d(1, dims[0], 2, stride=2), LayerNorm2d(dims[0]))
    layers["stage1"] = nn.Sequential(*(ConvNeXtBlock(dims[0], kernel_size=5) for _ in range(2)))
    layers["downsample"] = nn.Sequential(
        LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, stride=2)
    )
    layers["stage2"] = nn.Sequential(*(ConvNeXtBlock(dims[1], kernel_size=5) for _ in range(2)))
    layers["head"] = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.LayerNorm(dims[1]),
        nn.Linear(dims[1], num_classes),
    )
    return Classifier(nn.Sequential(layers), lr=2e-3)


def _swin(num_classes: int) -> Classifier:
    """timm's ``SwinTransformer``: 2 x 2 patch embedding, two stages of two blocks (shifted
    4 x 4 windows), patch merging before stage 2 (32 -> 16 -> 8)."""
    from timm.models.swin_transformer import SwinTransformer

    net = SwinTransformer(
        img_size=IMAGE_SIZE,
        patch_size=2,
        in_chans=1,
        num_classes=num_classes,
        embed_dim=32,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=4,
        mlp_ratio=2.0,
    )
    return Classifier(net, lr=2e-3)


@dataclass(frozen=True)
class Family:
    """One architecture family: how to build it and which layers to measure, how.

    Attributes:
        name: the family's short name.
        build: ``num_classes -> LightningModule`` (random weights).
        layers: measured layers, in forward order.
        options: :func:`lightning_srop.profile` option fields for them (``layout=`` ...).
        epochs: default training epochs.
        describe: one line for tables.
    """

    name: str
    build: Callable[[int], pl.LightningModule]
    layers: tuple[str, ...]
    options: Callable[[pl.LightningModule], dict[str, Any]]
    epochs: int
    describe: str


def _nchw(layers: Sequence[str]) -> Callable[[pl.LightningModule], dict[str, Any]]:
    return lambda model: {"layout": dict.fromkeys(layers, "NCHW")}


def _nhwc(layers: Sequence[str]) -> Callable[[pl.LightningModule], dict[str, Any]]:
    return lambda model: {"layout": dict.fromkeys(layers, "NHWC")}


def _small_cnn(num_classes: int) -> pl.LightningModule:
    from recipes.mnist import SmallCNN

    return SmallCNN(num_classes=num_classes)


def _vit(num_classes: int) -> SmallViT:
    return SmallViT(IMAGE_SIZE, 4, 64, 4, 4, num_classes=num_classes, lr=2e-3)


_RESNET = ("net.stem", *(f"net.layer{s}.{b}" for s in (1, 2, 3) for b in (0, 1)))
_CONVNEXT = (
    "net.stem",
    "net.stage1.0",
    "net.stage1.1",
    "net.downsample",
    "net.stage2.0",
    "net.stage2.1",
)
_SWIN = (
    "net.patch_embed",
    "net.layers.0.blocks.0",
    "net.layers.0.blocks.1",
    "net.layers.1.downsample",
    "net.layers.1.blocks.0",
    "net.layers.1.blocks.1",
)
_VIT = ("vit.patch_embed.proj", *(f"vit.blocks.{i}" for i in range(4)))

#: The families, by name.
FAMILIES: Final[dict[str, Family]] = {
    f.name: f
    for f in (
        Family(
            "cnn",
            _small_cnn,
            CNN_LAYERS,
            lambda model: {},
            15,
            "recipes.mnist.SmallCNN: conv, max pool, conv, stride-2 conv, conv",
        ),
        Family("resnet", _resnet, _RESNET, _nchw(_RESNET), 5, "ResNet: stem + 3 x 2 BasicBlocks"),
        Family(
            "convnext",
            _convnext,
            _CONVNEXT,
            _nchw(_CONVNEXT),
            6,
            "ConvNeXt-style (timm blocks): patchify stem, 2 x 2 blocks, separate downsampling",
        ),
        Family(
            "vit",
            _vit,
            _VIT,
            lambda model: profile_options(model),  # type: ignore[arg-type]
            10,
            "timm VisionTransformer (SmallViT): patch 4, 4 blocks on an 8 x 8 grid",
        ),
        Family(
            "swin",
            _swin,
            _SWIN,
            _nhwc(_SWIN),
            8,
            "timm SwinTransformer: patch 2, 2 x 2 blocks, patch merging",
        ),
    )
}


def load_data(
    data: str, seed: int, *, num_profile: int, max_train: int | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and validation images ``(N, 1, 32, 32)`` normalized to about [-1, 1] and labels.

    ``digits``: scikit-learn's digits (28 x 28) upsampled, split with ``seed``; ``shapes``:
    :func:`recipes.data.shapes_tensors` (1800 images generated with seed 0), split 80/20 with
    ``seed``. The validation set keeps ``num_profile`` images (profiled and scored), the
    training set the first ``max_train`` of a seeded shuffle (all with ``None``)."""
    if data == "digits":
        tx, ty, vx, vy = digit_data("digits", max_train=max_train, max_val=num_profile, seed=seed)
        tx, vx = upsample(tx, IMAGE_SIZE), upsample(vx, IMAGE_SIZE)
    elif data == "shapes":
        from recipes.data import shapes_tensors, split_indices

        images, labels = shapes_tensors(1800, IMAGE_SIZE, seed=0)
        train, val = split_indices(len(labels), 0.2, seed)
        val = val[:num_profile]
        if max_train is not None:
            train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))]
            train = train[:max_train]
        tx, ty, vx, vy = images[train], labels[train], images[val], labels[val]
    else:
        raise ValueError(f"data={data!r} is not one of {DATASETS}")
    return (tx - 0.5) / 0.5, ty, (vx - 0.5) / 0.5, vy


def layer_table(report: SROPReport, input_size: Sequence[int]) -> list[dict[str, Any]]:
    """Per measured layer of ``report`` (forward order): its kind (module type), grid, the
    previous measured layer's grid (the input's for the first) and whether it follows a
    downscaling (its grid has fewer cells than the previous one)."""
    rows: list[dict[str, Any]] = []
    previous = tuple(int(s) for s in input_size)
    for name in report.names:
        meta = report[name].meta
        if meta is None or meta.ndim != 2:
            raise ValueError(f"layer {name!r}: no 2-D map size recorded; cannot place its grid")
        grid = tuple(int(s) for s in meta.map_size)
        rows.append(
            {
                "layer": name,
                "kind": meta.module_type,
                "grid": "x".join(map(str, grid)),
                "prev_grid": "x".join(map(str, previous)),
                "after_downscaling": math.prod(grid) < math.prod(previous),
            }
        )
        previous = grid
    return rows


def _family_run(
    family: Family,
    data: str,
    *,
    epochs: int,
    seeds: Sequence[int],
    num_profile: int,
    max_train: int | None,
    batch_size: int,
    timer: Timer,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One family on one data set over ``seeds``: ``(rows, layer rows)``."""
    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for s in seeds:
        tx, ty, vx, vy = load_data(data, s, num_profile=num_profile, max_train=max_train)
        num_classes = int(ty.max()) + 1
        seed_rows, reports = digits_seed(
            s,
            tx,
            ty,
            vx,
            vy,
            epochs=epochs,
            batch_size=batch_size,
            build=partial(family.build, num_classes),
            layers=family.layers,
            changes=family.options(family.build(num_classes)),
        )
        rows += seed_rows
        layers = layers or layer_table(reports["randomized"], vx.shape[-2:])
        print(f"{family.name} / {data}: ", end="")
        print_seed(s, seed_rows, timer)
    return rows, layers


_INT_COLUMNS = ("seed", "depth", "epoch")
_FLOAT_COLUMNS = ("accuracy", "mean_srop", "log_mean_srop", "flat_fraction")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    _, rows = read_csv(path)
    out: list[dict[str, Any]] = []
    for r in rows:
        row: dict[str, Any] = dict(r)
        for k in _INT_COLUMNS:
            row[k] = int(r[k])
        for k in _FLOAT_COLUMNS:
            row[k] = float(r[k])
        out.append(row)
    return out


def _read_layers(path: Path) -> list[dict[str, Any]]:
    _, rows = read_csv(path)
    return [{**r, "after_downscaling": r["after_downscaling"] == "True"} for r in rows]


def _final_log(rows: Sequence[dict[str, Any]], layer: str, condition: str, seed: int) -> float:
    """The log mean SROP of ``layer`` at the last epoch of ``condition`` in ``seed``."""
    sel = [
        r for r in rows if r["layer"] == layer and r["condition"] == condition and r["seed"] == seed
    ]
    return float(max(sel, key=lambda r: r["epoch"])["log_mean_srop"])


CONTROLS: Final[tuple[str, ...]] = ("randomized", "shuffled_labels")


def h_table(
    runs: Mapping[tuple[str, str], tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    table: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Per data set and control: per group (after downscaling, same grid) the counts of layer
    verdicts and the group mean of the paired log difference (per seed, mean over the group's
    layers of every family; interval over seeds), the contrast after - same, and the verdict
    on H (:data:`H_RULE`). ``runs`` maps ``(family, data)`` to ``(rows, layer rows)``;
    ``table`` is the per-layer summary with ``data``, ``family`` and ``after_downscaling``."""
    out: list[dict[str, Any]] = []
    for data in dict.fromkeys(d for _, d in runs):
        for control in CONTROLS:
            quantity = f"log_srop[trained - {control}]"
            cells = [r for r in table if r["data"] == data and r["quantity"] == quantity]
            group_seeds: dict[bool, list[float]] = {}
            seeds = sorted(
                {r["seed"] for (_, d), (rows, _) in runs.items() if d == data for r in rows}
            )
            for after in (True, False):
                per_seed = []
                for s in seeds:
                    values = [
                        _final_log(rows, lay["layer"], "trained", s)
                        - _final_log(rows, lay["layer"], control, s)
                        for (_, d), (rows, layers) in runs.items()
                        if d == data
                        for lay in layers
                        if lay["after_downscaling"] == after
                    ]
                    finite = [v for v in values if math.isfinite(v)]
                    per_seed.append(sum(finite) / len(finite) if finite else math.nan)
                group_seeds[after] = per_seed
                group = [c for c in cells if c["after_downscaling"] == after]
                counts = ", ".join(f"{sum(c['verdict'] == v for c in group)} {v}" for v in VERDICTS)
                name = "after downscaling" if after else "same grid"
                key = {"data": data, "control": control, "group": name}
                row = summarize(key, f"group mean {quantity}", per_seed, -1 if after else 1)
                out.append({**row, "layers": len(group), "note": counts})
            contrast = [a - b for a, b in zip(group_seeds[True], group_seeds[False], strict=True)]
            key = {"data": data, "control": control, "group": "after - same"}
            row = summarize(key, f"contrast {quantity}", contrast, direction=-1)
            out.append({**row, "layers": len(cells), "note": "after downscaling - same grid"})
            out.append(_h_row(data, control, quantity, cells))
    return out


def _h_row(
    data: str, control: str, quantity: str, cells: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The verdict on H (:data:`H_RULE`) from the per-layer ``cells`` of one data set."""
    after = [c for c in cells if c["after_downscaling"]]
    same = [c for c in cells if not c["after_downscaling"]]
    after_n = {v: sum(c["verdict"] == v for c in after) for v in ("holds", "reversed")}
    same_falls = sum(c["verdict"] == "holds" for c in same)
    if after_n["reversed"] or same_falls:
        decided = "refuted"
    elif after and after_n["holds"] == len(after):
        decided = "holds"
    else:
        decided = "inconclusive"
    note = (
        f"after downscaling: {after_n['holds']} of {len(after)} fall, {after_n['reversed']} "
        f"rise; same grid: {same_falls} of {len(same)} fall"
    )
    return {
        "data": data,
        "control": control,
        "group": "H",
        "quantity": f"H on {quantity}",
        "paper_direction": "-",
        "seeds": max((int(c["seeds"]) for c in cells), default=0),
        "mean": math.nan,
        "low": math.nan,
        "high": math.nan,
        "verdict": decided,
        "layers": len(cells),
        "note": note,
    }


def family_summary(
    family: str, data: str, rows: Sequence[dict[str, Any]], layers: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The training-stage :func:`~recipes.experiments.training_stages.summary` of one run,
    each row keyed by data set, family and its layer's kind, grids and group (accuracy rows:
    ``layer = "-"``, no group)."""
    of_layer = {lay["layer"]: lay for lay in layers}
    out: list[dict[str, Any]] = []
    for r in summary(rows):
        lay = of_layer.get(r["layer"])
        place = {
            "kind": lay["kind"] if lay else "-",
            "grid": lay["grid"] if lay else "-",
            "prev_grid": lay["prev_grid"] if lay else "-",
            "after_downscaling": lay["after_downscaling"] if lay else "-",
        }
        out.append(
            {
                "data": data,
                "family": family,
                "layer": r["layer"],
                "depth": r["depth"],
                **place,
                **{k: v for k, v in r.items() if k not in ("layer", "depth")},
            }
        )
    return out


def run(
    out_dir: Path,
    *,
    data: Sequence[str] = DATASETS,
    families: Sequence[str] = tuple(FAMILIES),
    epochs: int | None = None,
    batch_size: int = 32,
    num_profile: int = 128,
    max_train: int | None = 768,
    reuse: bool = False,
    seed: int = 0,
    seeds: int = 3,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every family on every data set; write the per-run rows and layers, then
    ``families_summary.csv``, ``families_h.csv`` and ``families.png``; return
    ``(summary rows, H rows)``.

    Args:
        out_dir: folder for the CSVs and the PNG
        data: data sets (digits, shapes)
        families: families (cnn, resnet, convnext, vit, swin)
        epochs: training epochs for every family (default: each family's own)
        batch_size: training batch size
        num_profile: validation images profiled and scored at each stage
        max_train: keep this many training images (a seeded choice; all with None)
        reuse: read a family and data set's rows from out_dir when both of its CSVs are there
            (from an earlier run with the same settings) instead of training again
        seed: first seed
        seeds: number of seeds (seed, seed + 1, ...); intervals are bootstrapped over them
    """
    timer = Timer()
    runs: dict[tuple[str, str], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    table: list[dict[str, Any]] = []
    for d in data:
        for name in families:
            family = FAMILIES[name]
            rows_path, layers_path = out_dir / f"{name}_{d}.csv", out_dir / f"{name}_{d}_layers.csv"
            if reuse and rows_path.exists() and layers_path.exists():
                rows, layers = _read_rows(rows_path), _read_layers(layers_path)
                print(f"{name} / {d}: read {rows_path}")
            else:
                rows, layers = _family_run(
                    family,
                    d,
                    epochs=epochs or family.epochs,
                    seeds=seed_list(seed, seeds),
                    num_profile=num_profile,
                    max_train=max_train,
                    batch_size=batch_size,
                    timer=timer,
                )
                write_csv(rows_path, rows)
                write_csv(layers_path, layers)
            runs[name, d] = rows, layers
            table += family_summary(name, d, rows, layers)
    h_rows = h_table(runs, table)
    write_csv(out_dir / "families_summary.csv", table, comments=[f"rule: {RULE}"])
    write_csv(out_dir / "families_h.csv", h_rows, comments=[f"rule: {RULE}", f"H: {H_RULE}"])
    plot(table, h_rows, out_dir / "families.png")
    for r in h_rows:
        print(
            f"  {r['data']:<7} {r['control']:<16} {r['group']:<18} {r['mean']:+.4f} "
            f"[{r['low']:+.4f}, {r['high']:+.4f}] {r['verdict']:<12} {r['note']}"
        )
    print(f"wrote {out_dir}/families*.csv, families.png in {timer.elapsed:.0f} s")
    return table, h_rows


def main(argv: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The command line: :func:`run`'s arguments as flags (``--help`` lists them)."""
    return command_line(run, argv, description=__doc__.split("\n\n")[0], check=_check)


def _check(arguments: Mapping[str, Any]) -> str | None:
    for flag, given, valid in (
        ("--data", arguments["data"], DATASETS),
        ("--families", arguments["families"], tuple(FAMILIES)),
    ):
        unknown = [v for v in given if v not in valid]
        if unknown:
            return f"unknown {flag} {unknown}; valid choices: {', '.join(valid)}"
    epochs = arguments["epochs"]
    return f"--epochs must be >= 1, got {epochs}" if epochs is not None and epochs < 1 else None


if __name__ == "__main__":
    main()
