"""Data that ships with a package, so the command line and the recipes run offline.

:func:`digits_tensors`: scikit-learn's real handwritten digits (1797 images of 8 x 8 pixels,
UCI "optdigits"), resized to MNIST's 28 x 28 grid. Needs scikit-learn (the ``cli`` extra).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "digits_tensors"]

#: Mean and standard deviation of :func:`digits_tensors` images (all 1797), for normalization.
DIGITS_MEAN: Final[float] = 0.1557
DIGITS_STD: Final[float] = 0.2773


def digits_tensors(size: int = 28) -> tuple[Tensor, Tensor]:
    """scikit-learn's handwritten digits as ``(N, 1, size, size)`` floats in [0, 1] and labels.

    The 8 x 8 images (intensities 0..16) are resized with bilinear interpolation (antialiased),
    then padded so that, like MNIST, the digit keeps a margin: it fills the central
    ``20/28`` of the grid.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    inner = max(1, round(size * 20 / 28))
    resized = F.interpolate(images, size=(inner, inner), mode="bilinear", align_corners=False)
    before = (size - inner) // 2
    after = size - inner - before
    padded = F.pad(resized, (before, after, before, after))
    return padded.clamp_(0.0, 1.0).contiguous(), labels
