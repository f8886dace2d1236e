"""Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").

:class:`BlurPool2d` low-passes every channel with a fixed binomial filter, then subsamples.
:func:`antialias_resnet` swaps the strided downsampling of a torchvision ResNet for blurred
versions, the way the paper's ``antialiased-cnns`` do it:

- ``maxpool`` (k3, s2)       -> ``MaxPool2d(k2, s1)`` then ``BlurPool2d(s2)``  ("MaxBlurPool")
- a block's strided conv      -> ``BlurPool2d(s2)`` then the same conv with stride 1
- the shortcut's strided 1x1  -> ``BlurPool2d(s2)`` then the same 1x1 conv with stride 1

The stem's stride-2 7 x 7 conv is kept, as in ``antialiased-cnns``. The swap keeps every
parameter (same shapes, same values; a swapped conv ``layer2.0.conv1`` becomes
``layer2.0.conv1.1`` behind its blur ``layer2.0.conv1.0``), so load pretrained ResNet weights
*before* the swap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BlurPool2d", "antialias_resnet", "binomial_filter"]


def binomial_filter(size: int) -> Tensor:
    """The normalized 2-D binomial filter of ``size`` taps (outer product of binomial rows)."""
    if not 1 <= size <= 7:
        raise ValueError(f"filter size must be in 1..7, got {size}")
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = row[:, None] * row[None, :]
    return (kernel / kernel.sum()).to(torch.float32)


class BlurPool2d(nn.Module):
    """Depthwise binomial blur followed by subsampling by ``stride`` (a fixed, unlearned filter).

    Args:
        channels: number of channels (the filter is applied to each one separately).
        filter_size: taps of the binomial filter (1 = plain subsampling, 3 = [1, 2, 1], ...).
        stride: subsampling factor.
        pad_mode: padding of the borders before filtering: ``"reflect"`` as in the paper's
            ``antialiased-cnns`` (falls back to ``"replicate"`` on maps too small to reflect),
            ``"replicate"``, or ``"zeros"`` as in kornia's ``BlurPool2D`` (then the two agree
            exactly, see ``tests/test_experiments.py``). Away from the borders all agree.

    Example:
        >>> pool = BlurPool2d(3, filter_size=3)
        >>> pool(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 3, 8, 8])
    """

    filt: Tensor

    def __init__(
        self, channels: int, filter_size: int = 3, stride: int = 2, pad_mode: str = "reflect"
    ) -> None:
        super().__init__()
        if pad_mode not in ("reflect", "replicate", "zeros"):
            raise ValueError(
                f"pad_mode must be one of 'reflect', 'replicate', 'zeros'; got {pad_mode!r}"
            )
        self.channels, self.filter_size, self.stride, self.pad_mode = (
            channels,
            filter_size,
            stride,
            pad_mode,
        )
        self.pad = ((filter_size - 1) // 2, filter_size // 2) * 2  # left, right, top, bottom
        kernel = binomial_filter(filter_size)[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", kernel, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mode = self.pad_mode
        if mode == "reflect" and min(x.shape[-2:]) <= max(self.pad):
            mode = "replicate"
        if any(self.pad):
            x = F.pad(x, self.pad, mode="constant" if mode == "zeros" else mode)
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=x.shape[1])

    def extra_repr(self) -> str:
        return f"{self.channels}, filter_size={self.filter_size}, stride={self.stride}"


def _blur_then(conv: nn.Conv2d, filter_size: int) -> nn.Sequential:
    stride = conv.stride[0]
    conv.stride = (1, 1)
    return nn.Sequential(BlurPool2d(conv.in_channels, filter_size, stride), conv)


def antialias_resnet(model: nn.Module, filter_size: int = 3) -> nn.Module:
    """Swap a torchvision ResNet's strided downsampling for blur-pooled versions, in place.

    Works on ``resnet18/34/50/101/152`` and ``wide_resnet``/``resnext`` models (BasicBlock and
    Bottleneck). Returns the same model.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if not isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        raise TypeError(
            f"expected a torchvision ResNet with a `maxpool`, got {type(model).__name__}"
        )
    conv1 = model.conv1
    if not isinstance(conv1, nn.Conv2d):
        raise TypeError(
            f"expected a torchvision ResNet with a Conv2d `conv1`, got {type(conv1).__name__}"
        )
    channels = conv1.out_channels
    model.maxpool = nn.Sequential(
        nn.MaxPool2d(kernel_size=2, stride=1), BlurPool2d(channels, filter_size, stride=2)
    )
    for module in model.modules():
        if isinstance(module, BasicBlock | Bottleneck) and module.stride > 1:
            conv = module.conv1 if isinstance(module, BasicBlock) else module.conv2
            name = "conv1" if isinstance(module, BasicBlock) else "conv2"
            setattr(module, name, _blur_then(conv, filter_size))
            if module.downsample is not None:
                down = module.downsample[0]
                if isinstance(down, nn.Conv2d) and down.stride[0] > 1:
                    module.downsample[0] = _blur_then(down, filter_size)
    return model
