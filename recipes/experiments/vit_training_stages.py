"""Sanity check 3, training stages, in a vision transformer: randomized vs trained vs the
shuffled-label control over the patch embedding and every transformer block.

The same check as :mod:`recipes.experiments.training_stages` (the paper's Figure 5, tested
there on a CNN), on a small ViT (:class:`SmallViT`, timm's ``VisionTransformer``) instead:
digits (default) or MNIST upsampled (bilinear) from 28 x 28 to ``--image-size`` (default 32),
cut into ``--patch-size`` patches (default 4: an 8 x 8 patch grid). Per seed, the ViT is
initialized with the seed ("randomized") and trained twice from that same initialization, with
the same optimizer, batches and number of steps: on the true labels ("trained") and on a
seeded permutation of them ("shuffled_labels", the control). After every epoch both are
profiled with :func:`lightning_srop.profile`'s default layer choice on a fixed validation batch
(the patch embedding convolution ``vit.patch_embed.proj`` and each block ``vit.blocks.<i>``,
read as an ``h x w`` grid of patch tokens, the class token left out) and scored on the true
validation labels. "ds" is the benchmark pool (max pooling, k2 s2) applied to the input images
down to the patch grid's resolution.

The rows, the summary (per layer: each condition's final mean SROP, the paired log
differences trained - randomized and trained - shuffled_labels, the Spearman correlation of
accuracy and mean SROP over the trained run's epochs, each over seeds with a 95 % bootstrap
interval and a verdict), the verdict rule and the figures are those of the CNN experiment
(its :func:`~recipes.experiments.training_stages.summary`,
:func:`~recipes.experiments.training_stages.plot` and
:data:`~recipes.experiments._common.RULE`), written as ``vit_training_stages*``.

Run::

    python -m recipes.experiments.vit_training_stages --threads 1           # digits, offline
    python -m recipes.experiments.vit_training_stages --image-size 64 --patch-size 4  # 16 x 16
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_srop import SROPReport
from recipes.experiments._common import Timer, command_line, digit_data, seed_list
from recipes.experiments.training_stages import digits_seed, print_seed, write_outputs

__all__ = ["SmallViT", "main", "profile_options", "run", "upsample"]


class SmallViT(pl.LightningModule):
    """A small vision transformer for digits: timm's ``VisionTransformer`` as ``self.vit``
    (class token, learned position embeddings, pre-norm blocks, class-token head), AdamW.

    Measured layers (profile's default choice): ``vit.patch_embed.proj`` (the patch embedding
    convolution, ``(N, D, h, w)``) and ``vit.blocks.0`` ... (each block's output, ``(N, 1 + h*w,
    D)`` tokens).

    Args:
        image_size: input height and width.
        patch_size: patch height and width (the grid is ``image_size // patch_size`` square).
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        num_classes: number of labels.
        in_channels: input channels (1 for digits).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        num_classes: int = 10,
        in_channels: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.save_hyperparameters()
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
        )

    @property
    def grid(self) -> tuple[int, int]:
        """The ``(h, w)`` patch grid."""
        size = self.hparams["image_size"] // self.hparams["patch_size"]
        return size, size

    @property
    def blocks(self) -> list[str]:
        """Qualified names of the transformer blocks, in order."""
        return [f"vit.blocks.{i}" for i in range(self.hparams["depth"])]

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.vit(x)
        return logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )


def profile_options(model: SmallViT) -> dict[str, Any]:
    """The options that state how each block's output is read: tokens on the model's patch
    grid after one prefix (class) token (profile would infer the same, with a notice)."""
    return {
        "layout": dict.fromkeys(model.blocks, "tokens"),
        "grid": dict.fromkeys(model.blocks, model.grid),
        "prefix_tokens": dict.fromkeys(model.blocks, 1),
    }


def upsample(images: Tensor, size: int) -> Tensor:
    """``(N, C, H, W)`` images resized (bilinear) to ``size x size``; same size: unchanged."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def run(
    out_dir: Path,
    *,
    epochs: int = 15,
    batch_size: int = 64,
    data: Literal["digits", "mnist"] = "digits",
    data_dir: str = "data",
    download: bool = False,
    max_train: int | None = None,
    num_profile: int = 256,
    image_size: int = 32,
    patch_size: int = 4,
    embed_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    seeds: int = 3,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every seed; write ``vit_training_stages.csv`` (per seed, layer, condition and
    epoch), ``vit_training_stages_summary.csv`` (per layer, with intervals and verdicts), the
    figures ``vit_training_stages.png`` and ``vit_training_stages_reports.png`` and the first
    seed's reports (``vit_training_stages_reports.json``); return ``(rows, summary rows)``.

    Args:
        out_dir: folder for the CSVs, the PNGs and the reports
        epochs: training epochs
        batch_size: training batch size
        data: digits (scikit-learn's, offline) or mnist (torchvision)
        data_dir: MNIST root (torchvision layout)
        download: download MNIST if missing
        max_train: keep this many train images
        num_profile: validation images profiled and scored at each stage
        image_size: the 28 x 28 digits are upsampled (bilinear) to this size
        patch_size: ViT patch size; the patch grid is image_size / patch_size square
        embed_dim: ViT token width
        depth: number of transformer blocks
        num_heads: attention heads per block
        lr: AdamW learning rate
        seed: first seed
        seeds: number of seeds (seed, seed + 1, ...); intervals are bootstrapped over them
    """
    timer = Timer()
    rows: list[dict[str, Any]] = []
    first: dict[str, SROPReport] = {}

    def build() -> SmallViT:
        return SmallViT(image_size, patch_size, embed_dim, depth, num_heads, lr=lr)

    for s in seed_list(seed, seeds):
        tx, ty, vx, vy = digit_data(
            data, data_dir, download=download, max_train=max_train, max_val=num_profile, seed=s
        )
        tx, vx = ((upsample(t, image_size) - 0.5) / 0.5 for t in (tx, vx))
        seed_rows, reports = digits_seed(
            s,
            tx,
            ty,
            vx,
            vy,
            epochs=epochs,
            batch_size=batch_size,
            build=build,
            layers=None,  # profile's default choice: the patch embedding and every block
            changes=profile_options(build()),
        )
        rows += seed_rows
        first = first or reports
        print_seed(s, seed_rows, timer)
    grid = image_size // patch_size
    source = (
        f"{data} upsampled to {image_size} x {image_size}, ViT (patch {patch_size}, "
        f"{grid} x {grid} grid, {depth} blocks, width {embed_dim})"
    )
    table = write_outputs(
        out_dir,
        "vit_training_stages",
        rows,
        first,
        seed=seed,
        data=source,
        timer=timer,
        strip="vit.",
    )
    return rows, table


def main(argv: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The command line: :func:`run`'s arguments as flags (``--help`` lists them)."""
    return command_line(run, argv, description=__doc__.split("\n\n")[0], check=_check)


def _check(arguments: Mapping[str, Any]) -> str | None:
    size, patch = arguments["image_size"], arguments["patch_size"]
    if patch < 1 or size % patch:
        return f"--image-size {size} must be a multiple of --patch-size {patch}"
    if size // patch < 2:
        return f"the patch grid {size // patch} x {size // patch} is too small to measure"
    width, heads = arguments["embed_dim"], arguments["num_heads"]
    if heads < 1 or width % heads:
        return f"--embed-dim {width} must be a multiple of --num-heads {heads}"
    return None


if __name__ == "__main__":
    main()
