"""Data that ships with packages, so recipes and experiments run offline.

- :func:`digits_tensors`: scikit-learn's real handwritten digits resized to MNIST's grid
  (from :mod:`lightning_srop.data`, which the command line uses too).
- :func:`photo_crops`: random crops of scikit-learn's two sample photographs (natural images).
- :func:`shapes_tensors`: generated textured shapes in noise (six classes that differ only in
  their spatial structure), for the experiments' second data set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lightning_srop.data import DIGITS_MEAN, DIGITS_STD, digits_tensors

__all__ = [
    "DIGITS_MEAN",
    "DIGITS_STD",
    "SHAPE_CLASSES",
    "digits_tensors",
    "photo_crops",
    "shapes_tensors",
    "split_indices",
]

#: The classes of :func:`shapes_tensors`, in label order.
SHAPE_CLASSES: tuple[str, ...] = ("disk", "ring", "square", "triangle", "cross", "bars")


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


def shapes_tensors(num: int = 1800, size: int = 32, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``num`` generated images of textured shapes in noise, ``(num, 1, size, size)`` floats in
    [0, 1], with labels ``0 .. 5`` (:data:`SHAPE_CLASSES`, balanced).

    Each image holds one shape (disk, ring, square, triangle, cross, two parallel bars) at a
    random position, size and rotation, filled with a sinusoidal grating of random orientation,
    frequency and phase, on a background of smooth random texture, plus white Gaussian noise.
    Texture, contrast and noise are drawn the same way for every class, so only the shape's
    spatial structure names the label. Deterministic in ``seed`` (``numpy.random.default_rng``).
    """
    if num < 1 or size < 8:
        raise ValueError(f"shapes_tensors: need num >= 1 and size >= 8, got {num}, {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % len(SHAPE_CLASSES))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    images = np.empty((num, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        radius = rng.uniform(0.22, 0.36) * size
        cy, cx = rng.uniform(radius, size - radius, size=2)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        dy, dx = yy - cy, xx - cx
        u = np.cos(angle) * dx + np.sin(angle) * dy
        v = -np.sin(angle) * dx + np.cos(angle) * dy
        mask = _shape_mask(int(label), u, v, radius)
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3), rng.uniform(0, 6.3)
        grating = np.cos(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        background = _smooth_noise(rng, size)
        image = 0.25 + 0.15 * background
        image = np.where(mask, 0.65 + 0.2 * grating, image)
        images[i] = np.clip(image + rng.normal(0.0, 0.08, size=(size, size)), 0.0, 1.0)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """The boolean mask of shape ``label`` in rotated coordinates ``(u, v)`` around its center."""
    r = np.hypot(u, v)
    mask: np.ndarray
    if label == 0:  # disk
        mask = r < radius
    elif label == 1:  # ring
        mask = (r < radius) & (r > 0.55 * radius)
    elif label == 2:  # square
        mask = np.maximum(np.abs(u), np.abs(v)) < 0.8 * radius
    elif label == 3:  # equilateral triangle, inradius radius / 2
        sides = [np.cos(a) * u + np.sin(a) * v for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
        mask = np.all(np.stack(sides) < 0.5 * radius, axis=0)
    elif label == 4:  # cross
        arm = 0.3 * radius
        mask = ((np.abs(u) < arm) & (np.abs(v) < radius)) | (
            (np.abs(v) < arm) & (np.abs(u) < radius)
        )
    elif label == 5:  # two parallel bars
        mask = (np.abs(v) < radius) & (np.abs(u) > 0.2 * radius) & (np.abs(u) < 0.5 * radius)
    else:
        raise ValueError(f"unknown shape label {label}; valid: 0 .. {len(SHAPE_CLASSES) - 1}")
    return mask


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency random texture in about [-1, 1]: white noise low-passed in Fourier space."""
    spectrum = np.fft.fft2(rng.normal(size=(size, size)))
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    field = np.real(np.fft.ifft2(spectrum * (radius < 0.12)))
    scaled: np.ndarray = field / (np.abs(field).max() + 1e-12)
    return scaled
