"""Readings: what a layer output is (``NCHW``, ``NHWC``, ``NCL``, ``NLC``, token grids, NesT
blocks) and how it becomes maps, or why it is refused; the input's own grid and the
downscaling of a map against it. Pure shape rules, no evidence."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from torch import Tensor, nn

#: Module types whose output keeps channels in dim 1 whatever its rank.
CHANNELS_FIRST_TYPES: Final[tuple[type[nn.Module], ...]] = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.FractionalMaxPool2d,
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, InstanceNorm*d, SyncBatchNorm
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
)


#: Module types that act on the last dim: their output's last dim holds the features. Exact
#: types only (subclasses such as timm's ``LayerNorm2d`` permute internally).
FEATURES_LAST_TYPES: Final[tuple[type[nn.Module], ...]] = (
    nn.Linear,
    nn.LayerNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


#: The most prefix tokens (class, distillation, registers) a token grid may carry.
MAX_PREFIX_TOKENS: Final[int] = 16


_ONE_D = ("NCL", "NLC")


@dataclass(frozen=True)
class Reading:
    """How one output is read as maps.

    Attributes:
        layout: ``"NCHW"``, ``"NHWC"``, ``"NCL"``, ``"NLC"`` or ``"tokens"``.
        source: where the tensor lies in the output: ``""`` (the output itself), ``"[0]"``
            (first item of a tuple) or ``"['last_hidden_state']"`` (a mapping's first value).
        grid: the ``(h, w)`` patch grid of tokens (None for other layouts).
        prefix: prefix tokens before the grid (tokens only).
        inferred: what the reading was inferred from, ``""`` when explicit or fixed by the
            module's type (then it is not announced).
        note: a contradiction to announce once (a stated layout that the module's type
            disproves), ``""`` for none.
        order: for tokens out of row order, the row-major grid position of each token
            (empty: row order).
    """

    layout: str
    source: str = ""
    grid: tuple[int, int] | None = None
    prefix: int = 0
    inferred: str = ""
    note: str = ""
    order: tuple[int, ...] = ()

    @property
    def ndim(self) -> int:
        """2 for 2-D maps (token grids included), 1 for signals."""
        return 1 if self.layout in _ONE_D else 2

    def maps(self, tensor: Tensor) -> Tensor:
        """``tensor`` as ``(N, C, H, W)`` or ``(N, C, L)`` maps: a view, never a copy.

        Examples:
            >>> import torch
            >>> tokens = torch.arange(2 * 7 * 3.0).reshape(2, 7, 3)  # 1 prefix + 2 x 3 grid
            >>> Reading("tokens", grid=(2, 3), prefix=1).maps(tokens).shape
            torch.Size([2, 3, 2, 3])
        """
        if self.layout in ("NHWC", "NLC"):
            return tensor.movedim(-1, 1)
        if self.layout == "tokens":
            assert self.grid is not None
            h, w = self.grid
            grid = tensor[:, self.prefix :]
            if self.order:  # token i holds grid position order[i]: put each in its place
                back = sorted(range(len(self.order)), key=self.order.__getitem__)
                grid = grid[:, back]  # a copy
            grid = grid.movedim(-1, 1)
            return grid.reshape(*grid.shape[:-1], h, w)  # a view: the token axis splits
        if self.layout == "blocks":  # (N, T, n, C): T = g*g blocks of n = b*b tokens, row-major
            n, blocks, tokens, channels = (int(s) for s in tensor.shape)
            g, b = math.isqrt(blocks), math.isqrt(tokens)
            grid = tensor.reshape(n, g, g, b, b, channels).transpose(2, 3)
            return grid.reshape(n, g * b, g * b, channels).movedim(-1, 1)  # a copy
        return tensor

    def describe(self) -> str:
        """A short description for notices and tables, e.g. ``"tokens on 14x14 (+1 prefix)"``."""
        where = f"output{self.source} " if self.source else ""
        if self.layout == "blocks" and self.grid is not None:
            return f"{where}blocked tokens on {self.grid[0]}x{self.grid[1]}"
        if self.layout == "tokens" and self.grid is not None:
            extra = f" (+{self.prefix} prefix)" if self.prefix else ""
            return f"{where}tokens on {self.grid[0]}x{self.grid[1]}{extra}"
        return f"{where}{self.layout}"


@dataclass(frozen=True)
class Refusal:
    """Why an output is not measured.

    Attributes:
        reason: the message (names the layer, what came, what to pass).
        final: the decision cannot change with more evidence (cached for good); otherwise it
            is decided again once the forward passes have shown more.
        hint: the reason still lacks the option to pass, which :func:`read_layout` adds
            (``False``: the reason already says how the layer can be measured).
    """

    reason: str
    final: bool = True
    hint: bool = True


def unwrap_output(output: Any) -> tuple[Tensor | None, str]:
    """The tensor of an output and where it lies: the output itself, the first item of a
    tuple/list, or the first value of a mapping (a Hugging Face ``ModelOutput``).

    Examples:
        >>> import torch
        >>> x = torch.zeros(1)
        >>> unwrap_output((x, None))[1], unwrap_output({"last_hidden_state": x})[1]
        ('[0]', "['last_hidden_state']")
    """
    if isinstance(output, Tensor):
        return output, ""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0], "[0]"
    if isinstance(output, Mapping) and output:
        key, value = next(iter(output.items()))
        if isinstance(value, Tensor):
            return value, f"[{key!r}]"
    return None, ""


def input_spatial(shape: Sequence[int], input_layout: str) -> tuple[tuple[int, ...] | None, str]:
    """The spatial size of an input of ``shape`` (its grid or length, never the batch or a
    feature axis) and, when it cannot be told, why.

    Examples:
        >>> input_spatial((8, 3, 32, 24), "auto"), input_spatial((8, 16000), "auto")
        (((32, 24), ''), ((16000,), ''))
        >>> input_spatial((8, 100, 80), "auto")[0] is None
        True
        >>> input_spatial((8, 100, 80), "NLC")
        ((100,), '')
    """
    dims = len(shape)
    axes: dict[str, tuple[int, ...]] = {
        "NCHW": (2, 3),
        "NHWC": (1, 2),
        "NCL": (2,),
        "NLC": (1,),
        "NL": (1,),
    }
    layout = input_layout
    if layout == "auto":
        if dims == 4:
            layout = "NCHW"
        elif dims == 2:
            layout = "NL"
        elif dims == 3 and shape[1] == 1:
            layout = "NCL"
        else:
            return None, (
                f"the input's axes cannot be told from its shape {tuple(shape)} (channels "
                "first (N, C, L) or last (N, L, C)?); pass `input_layout=` "
                "('NCHW', 'NHWC', 'NCL', 'NLC' or 'NL')"
            )
    wanted = {"NCHW": 4, "NHWC": 4, "NCL": 3, "NLC": 3, "NL": 2}[layout]
    if dims != wanted:
        return None, (
            f"`input_layout`={layout!r} describes {wanted}-D inputs; the input has shape "
            f"{tuple(shape)}"
        )
    return tuple(int(shape[a]) for a in axes[layout]), ""


def int_sizes(values: Iterable[Any]) -> list[tuple[int, int]]:
    """``(h, w)`` pairs among a call's arguments or outputs: a tuple of two ints, or two
    consecutive int arguments (``forward(hidden, height, width)``)."""
    out: list[tuple[int, int]] = []
    previous: int | None = None
    for value in values:
        if isinstance(value, bool):
            previous = None
            continue
        if isinstance(value, int):
            if previous is not None:
                out.append((previous, value))
            previous = value
            continue
        previous = None
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            out.append((int(value[0]), int(value[1])))
    return out


def downscale_exponent(map_size: Sequence[int], input_size: Sequence[int]) -> int:
    """The largest ``j`` with ``2**j <= s``, ``s`` the downscaling from ``input_size`` to
    ``map_size`` (exact integer arithmetic; negative when the map is finer).

    Examples:
        >>> downscale_exponent((8, 8), (32, 32)), downscale_exponent((10,), (32,))
        (2, 1)
    """
    if len(map_size) == len(input_size):
        num, den, power = math.prod(input_size), math.prod(map_size), len(map_size)
    else:
        num, den, power = int(input_size[-1]), int(map_size[-1]), 1
    j = 0
    if den <= num:  # s >= 1: grow j while 2**(j+1) <= s, i.e. den * 2**((j+1) power) <= num
        while den << (power * (j + 1)) <= num:
            j += 1
    else:  # s < 1: the largest negative j with den <= num * 2**(-j power)
        while den > num << (power * -j):
            j -= 1
    return j


def downscaling(map_size: Sequence[int], input_size: Sequence[int]) -> float:
    """The total downscaling ``s`` from the input to a map: the geometric mean of the axes'
    ratios when both have the same number of axes, else the ratio of the last axes (time).

    Examples:
        >>> downscaling((8, 8), (32, 32)), downscaling((64, 100), (16000,))
        (4.0, 160.0)
    """
    if len(map_size) == len(input_size):
        return float((math.prod(input_size) / math.prod(map_size)) ** (1 / len(map_size)))
    return float(input_size[-1] / map_size[-1])
