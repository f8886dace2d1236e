"""Data that ships with packages, so recipes and experiments run offline.

- :func:`digits_tensors`: scikit-learn's real handwritten digits resized to MNIST's grid
  (from :mod:`lightning_srop.data`, which the command line uses too).
- :func:`photo_crops`: random crops of scikit-learn's two sample photographs (natural images).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lightning_srop.data import DIGITS_MEAN, DIGITS_STD, digits_tensors

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "digits_tensors", "photo_crops", "split_indices"]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random split of ``range(n)`` into train and validation indices."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def photo_crops(num: int, size: int, *, seed: int = 0, grayscale: bool = False) -> Tensor:
    """``num`` random ``size x size`` crops of scikit-learn's sample photographs.

    Returns floats in [0, 1] of shape ``(num, 3, size, size)`` (or ``(num, 1, ...)`` with
    ``grayscale``). The two photos ("china.jpg", "flower.jpg", 427 x 640) ship with
    scikit-learn, so this needs no download.
    """
    from sklearn.datasets import load_sample_images

    photos = [
        torch.from_numpy(np.asarray(p, dtype=np.float32) / 255.0).permute(2, 0, 1)
        for p in load_sample_images().images
    ]
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(num):
        photo = photos[i % len(photos)]
        _, h, w = photo.shape
        if size > min(h, w):
            raise ValueError(f"crop size {size} exceeds the photos' size {h} x {w}")
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        crops.append(photo[:, top : top + size, left : left + size])
    batch = torch.stack(crops)
    if grayscale:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        batch = (batch * weights).sum(1, keepdim=True)
    return batch.contiguous()
