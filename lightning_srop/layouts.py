"""Layout rules: how one layer output becomes a batch of maps, or why it is not one.

This is the only place that decides what a tensor is. A layer's output is read as one of

- ``"NCHW"`` ``(N, C, H, W)`` and ``"NHWC"`` ``(N, H, W, C)``: 2-D maps;
- ``"NCL"`` ``(N, C, L)`` and ``"NLC"`` ``(N, L, C)``: 1-D signals (time);
- ``"tokens"`` ``(N, P + h*w, D)``: ``D`` maps over an ``h x w`` patch grid, stored row-major
  after ``P`` prefix tokens (class, distillation, register tokens), which are left out;
- ``"blocks"`` ``(N, T, n, C)``: NesT's blocked tokens, ``T = g*g`` square blocks of
  ``n = b*b`` tokens each, read back to ``C`` maps of ``gb x gb`` (as timm's ``deblockify``);

or it is refused (attention probabilities and biases, tensors whose axes cannot be told).
Tuples and mappings (Hugging Face ``ModelOutput``) are read through their first tensor, the
hidden state by convention.

The user's explicit choice comes first (``layout=`` for all layers or per layer, ``grid=``,
``prefix_tokens=``, ``ndim=``). Otherwise a reading comes from, in this order:

1. **the module's type**, where it fixes the layout: convolutions, pooling, batch/instance/group
   norms, padding, upsampling and pixel (un)shuffle keep channels first;
2. **the module's input**: a module whose output has its input's shape (activations,
   dropout, GRN, residual blocks) keeps the reading of that input, when the input was
   read earlier in the same forward pass;
3. **the module's semantics**: ``nn.Linear``, ``nn.LayerNorm`` and ``nn.RMSNorm`` act on the
   last dim, so it holds the features (channels last);
4. **what the forward pass has shown**: grids of 2-D maps read so far, the input's grid (and
   its integer downscalings), sizes that a module received or returned as ints (Swin's
   ``input_dimensions``, SegFormer's ``height, width``), lengths of 1-D signals. A token count
   ``L`` fits a grid ``h x w`` when ``L - h*w`` is a small number of prefix tokens.

A reading that steps 3 or 4 inferred is stated once (a notice) and kept in the layer's
metadata. When two readings fit equally (e.g. ``H == W == C`` with no evidence) or none does,
nothing is measured: the notice names the layer and the option to pass. Square ``L x L``
outputs over a token count are attention maps and never read as images, unless a layout is
declared for that very layer.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import torch
from torch import Tensor, nn

__all__ = [
    "CHANNELS_FIRST_TYPES",
    "FEATURES_LAST_TYPES",
    "MAX_PREFIX_TOKENS",
    "Evidence",
    "Reading",
    "Refusal",
    "downscale_exponent",
    "downscaling",
    "input_spatial",
    "int_sizes",
    "read_layout",
    "unwrap_output",
]

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
    """

    reason: str
    final: bool = True


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


class Evidence:
    """What the forward passes have shown: grids, lengths, channel counts, and the reading of
    each tensor read in the current pass (so a module can keep its input's reading).

    Examples:
        >>> import torch
        >>> ev = Evidence()
        >>> ev.start_pass((2, 3, 32, 32), (32, 32))
        >>> (8, 8) in ev.derived_grids(), ev.grid_strength((8, 8))
        (True, 1)
    """

    def __init__(self) -> None:
        self.grids: set[tuple[int, int]] = set()  # read 2-D grids (strong evidence)
        self.lengths: set[int] = set()  # read 1-D lengths
        self.channels_2d: set[int] = set()  # channel counts of read 2-D maps
        self.token_counts: set[int] = set()  # token counts read over a grid
        self.batch: int | None = None
        self.input_grid: tuple[int, int] | None = None
        self.reordered: str = ""  # a module seen to reorder tokens: their order is not proven
        # tokens of a known reordering (timm Hiera's Unroll): count -> (grid, position of each)
        self.orders: dict[int, tuple[tuple[int, int], tuple[int, ...]]] = {}
        self.version = 0  # grows with every new fact: refusals for lack of evidence are retried
        self._derived: frozenset[tuple[int, int]] = frozenset()
        self._seen: dict[int, tuple[weakref.ref[Tensor], tuple[int, ...], Reading]] = {}

    def start_pass(self, input_shape: Sequence[int] | None, spatial: Sequence[int] | None) -> None:
        """A new forward pass: forget tensor readings, record the input's batch and grid."""
        self._seen = {}
        self.batch = int(input_shape[0]) if input_shape else None
        grid = (int(spatial[0]), int(spatial[1])) if spatial and len(spatial) == 2 else None
        if grid != self.input_grid:
            self.input_grid = grid
            self._derived = frozenset(_downscaled(grid)) if grid else frozenset()
            self.version += 1

    def derived_grids(self) -> frozenset[tuple[int, int]]:
        """The input's grid divided by integers (floor and ceil): where patches could lie."""
        return self._derived

    def grid_strength(self, grid: tuple[int, int]) -> int:
        """2: a grid read in this model; 1: an integer downscaling of the input; 0: neither."""
        if grid in self.grids:
            return 2
        return 1 if grid in self._derived else 0

    def add_grid(self, grid: tuple[int, int]) -> None:
        if grid not in self.grids:
            self.grids.add(grid)
            self.version += 1

    def note(self, tensor: Tensor, reading: Reading) -> None:
        """Record that ``tensor`` was read as ``reading`` (and the grid or length it shows)."""
        self._seen[id(tensor)] = (weakref.ref(tensor), tuple(tensor.shape), reading)
        shape = tuple(int(s) for s in reading.maps(tensor).shape)
        if reading.layout == "tokens" and int(tensor.shape[1]) not in self.token_counts:
            self.token_counts.add(int(tensor.shape[1]))
            self.version += 1
        if reading.ndim == 2:
            self.add_grid((shape[-2], shape[-1]))
            if shape[1] not in self.channels_2d:
                self.channels_2d.add(shape[1])
                self.version += 1
        elif shape[-1] not in self.lengths:
            self.lengths.add(shape[-1])
            self.version += 1

    def check_reorder(
        self, name: str, inputs: Sequence[Any], tensor: Tensor, module: nn.Module | None = None
    ) -> None:
        """Record ``name`` if it returned its input's tokens in another order (timm Hiera's
        ``Unroll``): token readings inferred after it are no longer proven row-major, except
        where the family is known (:func:`_hiera_order`)."""
        first = next((x for x in inputs if isinstance(x, Tensor)), None)
        if (
            self.reordered
            or first is None
            or first is tensor
            or tensor.dim() != 3
            or first.shape != tensor.shape
            or not tensor.is_floating_point()
            or first.dtype != tensor.dtype
        ):
            return
        if not torch.allclose(first.sum(1), tensor.sum(1), rtol=1e-5, atol=1e-6):
            return
        if torch.equal(first, tensor):
            return
        if torch.equal(first.sort(dim=1).values, tensor.sort(dim=1).values):
            self.reordered = name
            self.version += 1
            if module is not None:
                self._known_order(module, int(tensor.shape[1]))

    def _known_order(self, module: nn.Module, count: int) -> None:
        """Where each token of timm Hiera's ``Unroll`` lies on the patch grid: the module run
        on the tokens' own row-major indices (it only moves tokens, whatever they hold)."""
        size = getattr(module, "size", None)
        if type(module).__module__ != "timm.models.hiera" or type(module).__name__ != "Unroll":
            return
        if not (isinstance(size, list) and len(size) == 2 and size[0] * size[1] == count):
            return
        index = torch.arange(count, dtype=torch.float64).view(1, count, 1)
        with torch.no_grad():
            moved = module(index).reshape(-1)
        self.orders[count] = ((int(size[0]), int(size[1])), tuple(int(i) for i in moved.tolist()))

    def reading_of(self, tensor: Any) -> Reading | None:
        """The reading of ``tensor`` if it was read earlier in this pass."""
        if not isinstance(tensor, Tensor):
            return None
        entry = self._seen.get(id(tensor))
        if entry is None or entry[0]() is not tensor or entry[1] != tuple(tensor.shape):
            return None
        return entry[2]


def _downscaled(grid: tuple[int, int]) -> set[tuple[int, int]]:
    h, w = grid
    out: set[tuple[int, int]] = set()
    for s in range(1, max(h, w) + 1):
        out.add((h // s, w // s))
        out.add((-(-h // s), -(-w // s)))
    return {g for g in out if g[0] > 0 and g[1] > 0}


def _features_last(module: nn.Module, size: int) -> bool:
    """Whether ``module`` acts on the last dim, of ``size`` features: ``Linear``/``LayerNorm``
    (exact types), or a norm that declares ``data_format="channels_last"`` (Hugging Face's
    and timm's ConvNeXt norms)."""
    if getattr(module, "data_format", None) == "channels_last":
        shape: tuple[int, ...] = tuple(getattr(module, "normalized_shape", ()))
        return not shape or int(shape[-1]) == size
    if type(module) not in FEATURES_LAST_TYPES:
        return False
    if isinstance(module, nn.Linear):
        return int(module.out_features) == size
    norm: tuple[int, ...] = tuple(getattr(module, "normalized_shape", ()))
    return len(norm) == 1 and int(norm[0]) == size


def _token_grids(
    count: int, evidence: Evidence, sizes: Sequence[tuple[int, int]]
) -> list[tuple[int, tuple[int, int], int]]:
    """``(strength, grid, prefix)`` of every grid that ``count`` tokens can lie on, best first:
    sizes the module was given (3), grids read (2), the input's downscalings (1); then fewer
    prefix tokens."""
    found: dict[tuple[int, int], int] = {}
    for grid in sizes:
        found[grid] = 3
    for grid in (*evidence.grids, *evidence.derived_grids()):
        found.setdefault(grid, evidence.grid_strength(grid))
    out = []
    for grid, strength in found.items():
        prefix = count - grid[0] * grid[1]
        if grid[0] * grid[1] >= 4 and 0 <= prefix <= MAX_PREFIX_TOKENS:
            out.append((strength, grid, prefix))
    out.sort(key=lambda t: (-t[0], t[2]))
    return out


def _best(candidates: Sequence[tuple[int, Reading]]) -> Reading | tuple[Reading, Reading] | None:
    """The single strongest reading, the two tied ones, or None."""
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda c: -c[0])
    if len(ranked) > 1 and ranked[1][0] == ranked[0][0] and ranked[1][1] != ranked[0][1]:
        return ranked[0][1], ranked[1][1]
    return ranked[0][1]


def _square_pairs(shape: tuple[int, ...]) -> list[int]:
    """The sides ``L`` of the square ``L x L`` axis pairs an attention table can have:
    ``(..., L, L)`` (heads first, or a bare table) and ``(N, L, L, heads)`` (heads last)."""
    out = []
    if len(shape) >= 2 and shape[-2] == shape[-1]:
        out.append(int(shape[-1]))
    if len(shape) == 4 and shape[1] == shape[2] and shape[1] not in out:
        out.append(int(shape[1]))
    return out


def _token_count(count: int, evidence: Evidence, sizes: Sequence[tuple[int, int]]) -> bool:
    """Whether ``count`` is a token count of this model: read as tokens, or fitting a grid
    read earlier (or given as sizes) with a few prefix tokens."""
    if count in evidence.token_counts:
        return True
    return any(strength >= 2 for strength, _, _ in _token_grids(count, evidence, sizes))


def _attention_like(tensor: Tensor, evidence: Evidence, sizes: Sequence[tuple[int, int]]) -> int:
    """The side ``L`` of an attention or relative-position table: a square ``L x L`` over a token count ``L``, in
    any axis order (``(N, heads, L, L)``, ``(N, L, L, heads)``, ``(N, L, L)``).

    ``L x L`` is no table where it is a grid of the input's (a one-channel 28 x 28 image is not
    attention) and ``L`` no token count, or where a ``(N, L, L)`` tensor holds ``L`` tokens of
    ``L`` features, ``L`` a feature count of the maps read (a token map whose width equals its
    length, e.g. 64 features over an 8 x 8 grid). 0 where it is none."""
    shape = tuple(int(s) for s in tensor.shape)
    if len(shape) < 3:
        return 0
    for side in _square_pairs(shape):
        if not _token_count(side, evidence, sizes):
            continue
        if side not in evidence.token_counts and (
            (side, side) in evidence.grids or (side, side) in evidence.derived_grids()
        ):
            continue  # a grid of maps (read, or the input's), not a table
        if (
            len(shape) == 3
            and shape[0] == evidence.batch
            and side in evidence.channels_2d
            and any(g[0] * g[1] <= side for g in evidence.grids)
            and _tokens_of_read_maps(side, evidence)
        ):
            continue  # (N, L, D) tokens with D == L: a token map
        return side
    return 0


def _tokens_of_read_maps(count: int, evidence: Evidence) -> bool:
    """Whether ``count`` tokens lie on a grid of 2-D maps read in this model (few prefixes)."""
    return any(0 <= count - h * w <= MAX_PREFIX_TOKENS for h, w in evidence.grids if h * w >= 4)


def read_layout(
    name: str,
    module: nn.Module,
    tensor: Tensor,
    *,
    source: str,
    explicit: str,
    explicit_for_layer: bool,
    grid: tuple[int, int] | None,
    prefix_tokens: int | None,
    ndim: int | None,
    evidence: Evidence,
    inputs: Sequence[Any] = (),
    sizes: Sequence[tuple[int, int]] = (),
) -> Reading | Refusal:
    """Decide how ``tensor`` (the output of ``module``, named in ``where``) is read.

    Args:
        name: the layer's name, for messages.
        module: the module that returned it.
        tensor: the output tensor (already unwrapped, see :func:`unwrap_output`).
        source: where ``tensor`` lies in the output.
        explicit: the ``layout=`` option that applies (``"auto"`` for none).
        explicit_for_layer: whether ``explicit`` was given for this layer by name.
        grid: the token grid ``(h, w)``, if given.
        prefix_tokens: the number of prefix tokens, if given.
        ndim: the ``ndim=`` option (None: any).
        evidence: what the forward passes have shown.
        inputs: the module's positional inputs (the first tensor may have been read).
        sizes: ``(h, w)`` pairs the module was given or returned as ints.

    Returns:
        A :class:`Reading`, or a :class:`Refusal` whose reason names the option to pass.
    """
    where = f"layer {name!r} ({type(module).__name__})"
    dims = tensor.dim()
    shape = tuple(int(s) for s in tensor.shape)
    evidence.check_reorder(
        f"{name.lstrip(chr(0))!r} ({type(module).__name__})", inputs, tensor, module
    )
    hint_4d = f"pass `layout={{{name!r}: 'NCHW'}}` or `'NHWC'`"
    hint_3d = (
        f"pass `layout={{{name!r}: 'tokens'}}` with `grid=(h, w)` and `prefix_tokens=`, or "
        "`'NCL'` or `'NLC'`"
    )
    if dims == 2 and shape[0] == shape[1] and _token_count(shape[0], evidence, sizes):
        return _attention(where, shape, shape[0])
    if dims not in (3, 4):
        expected = {None: "(N, C, H, W), (N, C, L) or tokens (N, L, D)", 1: "(N, C, L)"}
        return Refusal(
            f"{where} returned a tensor of shape {shape}; expected "
            f"{expected.get(ndim, '(N, C, H, W) or tokens (N, L, D)')} feature maps; it is skipped."
        )
    fits = {"NCHW": 4, "NHWC": 4, "NCL": 3, "NLC": 3, "tokens": 3}
    reading: Reading | Refusal | None = None
    if explicit != "auto" and fits[explicit] == dims:
        side = _attention_like(tensor, evidence, sizes)
        if not explicit_for_layer and side:
            return _attention(where, shape, side)
        fixed = _fixed_by_type(module, dims)
        if explicit == "tokens":
            reading = _explicit_tokens(where, shape, source, grid, prefix_tokens, evidence, sizes)
        else:
            reading = Reading(explicit, source)
        if fixed and fixed != explicit and not isinstance(reading, Refusal):
            if explicit_for_layer:  # the user's word for this very layer comes first
                reading = Reading(
                    reading.layout,
                    reading.source,
                    reading.grid,
                    reading.prefix,
                    note=f"{where} was given `layout`={explicit!r}, but a "
                    f"{type(module).__name__} returns channels first ({fixed!r}); it is read "
                    f"as {explicit!r} as stated (pass {fixed!r} for it, or leave it out).",
                )
            else:  # a global layout is for the layers that need it: the type decides
                reading = Reading(
                    fixed,
                    source,
                    note=f"{where} returns channels first ({fixed!r}), which the global "
                    f"`layout`={explicit!r} contradicts; it is read as {fixed!r} (state a layout "
                    "per layer, as {name: layout}, to apply it to some layers only).",
                )
    elif explicit != "auto" and explicit_for_layer:
        return Refusal(
            f"{where} returned a {dims}-D tensor of shape {shape}, but `layout`={explicit!r} "
            f"was given for it, which describes {fits[explicit]}-D outputs; it is skipped."
        )
    if reading is None:
        reading = _auto(where, module, tensor, shape, source, evidence, inputs, sizes, ndim)
        if isinstance(reading, Reading) and explicit != "auto" and reading.inferred:
            reading = replace(  # say why the global layout did not apply
                reading,
                inferred=f"{reading.inferred}; the global layout={explicit!r} describes "
                f"{fits[explicit]}-D outputs",
            )
    if isinstance(reading, Refusal):
        if "it is skipped" in reading.reason:
            return reading
        hint = hint_4d if dims == 4 else hint_3d
        return Refusal(f"{reading.reason}; it is skipped ({hint}).", final=reading.final)
    if ndim is not None and reading.ndim != ndim:
        what = "tokens on a 2-D grid" if reading.layout == "tokens" else reading.describe()
        return Refusal(
            f"{where} returned {shape}, read as {what} ({reading.ndim}-D maps), but `ndim`={ndim} "
            f"was set; it is skipped (pass `ndim=None` to measure it as {reading.ndim}-D)."
        )
    return reading


def _attention(where: str, shape: tuple[int, ...], side: int) -> Refusal:
    return Refusal(
        f"{where} returned {shape}: a square {side} x {side} over a token count, "
        "i.e. attention probabilities, an attention bias or a relative-position table, not a "
        "spatial map; it is skipped (declare a layout for this layer by name to measure it)."
    )


def _explicit_tokens(
    where: str,
    shape: tuple[int, ...],
    source: str,
    grid: tuple[int, int] | None,
    prefix_tokens: int | None,
    evidence: Evidence,
    sizes: Sequence[tuple[int, int]],
) -> Reading | Refusal:
    count = shape[1]
    if grid is not None:
        prefix = count - grid[0] * grid[1] if prefix_tokens is None else prefix_tokens
        if prefix < 0 or prefix + grid[0] * grid[1] != count:
            return Refusal(
                f"{where} returned {count} tokens (shape {shape}), which do not fit "
                f"`grid`={grid} with `prefix_tokens`={prefix_tokens}; it is skipped."
            )
        return Reading("tokens", source, grid, prefix)
    candidates = [c for c in _token_grids(count, evidence, sizes) if prefix_tokens in (None, c[2])]
    if not candidates:
        return Refusal(
            f"{where} returned {count} tokens (shape {shape}) and no grid seen in the forward "
            "pass fits them; it is skipped (pass `grid=(h, w)` and `prefix_tokens=`)."
        )
    _, found, prefix = candidates[0]
    return Reading("tokens", source, found, prefix)


def _auto(
    where: str,
    module: nn.Module,
    tensor: Tensor,
    shape: tuple[int, ...],
    source: str,
    evidence: Evidence,
    inputs: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    ndim: int | None,
) -> Reading | Refusal:
    dims = len(shape)
    if isinstance(module, CHANNELS_FIRST_TYPES) or (
        getattr(module, "data_format", None) == "channels_first"
    ):
        return Reading("NCHW" if dims == 4 else "NCL", source)
    first = next((x for x in inputs if isinstance(x, Tensor)), None)
    if first is not None and tuple(first.shape) == shape:
        inherited = evidence.reading_of(first)
        if inherited is not None:  # shape-preserving: activations, dropout, residual blocks
            said = "" if inherited.layout in ("NCHW", "NCL") else "kept from its input"
            return replace(inherited, source=source, inferred=said, note="")
    side = _attention_like(tensor, evidence, sizes)
    if side:
        return _attention(where, shape, side)
    if evidence.batch and shape[0] != evidence.batch and shape[0] % evidence.batch == 0:
        return Refusal(
            f"{where} returned {shape}, whose first dim holds {shape[0] // evidence.batch} "
            f"items per sample ({evidence.batch} samples): patches or windows folded into the "
            "batch (as MobileViT unfolds its patches), which cannot be read back as maps without "
            "the model's own fold; it is skipped (measure the layer that folds them back, e.g. "
            "the conv after the transformer)."
        )
    if evidence.batch is not None and shape[0] != evidence.batch:
        return Refusal(
            f"{where} returned {shape}, whose first dim is not the batch ({evidence.batch} "
            "samples): not per-sample maps (windows, heads or a table?)"
        )
    last = shape[-1]
    if dims == 4 and _nest_blocks(module, shape):
        side = math.isqrt(shape[1]) * math.isqrt(shape[2])
        return Reading("blocks", source, (side, side))
    if dims == 4:
        a, b = shape[1], shape[2]
        if _features_last(module, last):
            if evidence.grid_strength((a, b)) or not (evidence.grids or evidence.derived_grids()):
                return Reading(
                    "NHWC", source, inferred=f"{type(module).__name__} acts on the last dim"
                )
            return Refusal(
                f"{where} returned {shape}: {type(module).__name__} acts on the last dim, but "
                f"{a} x {b} is no grid seen in the forward pass nor a downscaling of the input's "
                "(blocked or windowed tokens?)",
                final=False,
            )
        candidates = []
        for layout, g in (("NCHW", (shape[2], shape[3])), ("NHWC", (a, b))):
            strength = evidence.grid_strength(g)
            if strength:
                candidates.append((strength, Reading(layout, source, inferred=_grid_words(g))))
        best = _best(candidates)
        if isinstance(best, tuple):
            return Refusal(
                f"{where} returned {shape}, which reads as maps of {shape[2]} x {shape[3]} "
                f"(channels first) or of {a} x {b} (channels last) and the forward pass does "
                "not tell which",
            )
        if best is None and not evidence.grids and not evidence.derived_grids():
            return Reading(
                "NCHW",
                source,
                inferred="PyTorch's (N, C, H, W) convention; no grid was seen to check it against",
            )
        if best is None:
            return Refusal(
                f"{where} returned {shape}, and no grid seen in the forward pass matches "
                f"{shape[2]} x {shape[3]} (channels first) or {a} x {b} (channels last)",
                final=False,
            )
        if best.layout == "NCHW":
            return Reading("NCHW", source)  # PyTorch's convention, confirmed: nothing to say
        return best
    # 3-D: (N, C, L), (N, L, C) or tokens (N, L, D)
    a = shape[1]
    features_last = _features_last(module, last)
    three: list[tuple[int, Reading]] = []
    token = _token_grids(a, evidence, sizes)
    if token:
        strength, g, prefix = token[0]
        three.append((strength, Reading("tokens", source, g, prefix, _grid_words(g, strength))))
    if a in evidence.lengths:
        three.append((2, Reading("NLC", source, inferred=f"signals of length {a} seen")))
    if not features_last and last in evidence.lengths:
        three.append((2, Reading("NCL", source)))
    best = _best(three)
    hiera = _hiera_order(module, a, evidence)
    if hiera is not None:
        grid, order = hiera
        return Reading("tokens", source, grid, 0, order=order)
    if isinstance(best, Reading) and best.layout == "tokens" and evidence.reordered:
        return Refusal(
            f"{where} returned {shape}, which fits {best.describe()}, but {evidence.reordered} "
            "reorders the tokens earlier in the forward pass, so their order is not proven to be "
            "the grid's row order (windows unrolled?); state a layout only for tokens "
            "known to be in row order"
        )
    if isinstance(best, tuple):
        return Refusal(
            f"{where} returned {shape}, which fits both {best[0].describe()} and "
            f"{best[1].describe()}"
        )
    if best is not None:
        return best
    if ndim == 1:  # the user says these are signals; no evidence says which axis is time
        if features_last:
            return Reading("NLC", source, inferred=f"{type(module).__name__} acts on the last dim")
        return Reading("NCL", source, inferred="PyTorch's (N, C, L) convention, as ndim=1 asks")
    return Refusal(
        f"{where} returned a 3-D tensor of shape {shape}; no patch grid or signal length seen "
        "in the forward pass fits it, so it cannot be told apart from tokens without spatial "
        "order",
        final=False,
    )


def _hiera_order(
    module: nn.Module, count: int, evidence: Evidence
) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    """The grid and token positions of a timm Hiera block's ``count`` unrolled tokens: those
    of the ``Unroll`` (:meth:`Evidence._known_order`), halved by each q-pooling, which keeps
    the first of every ``4`` contiguous quarters (``x.view(B, 4, -1, C).max(1)``): token ``j``
    pools tokens ``j + k * count`` (``k < 4``), whose positions share one 2 x 2 cell. None
    where the module is no Hiera block or the positions do not agree."""
    if type(module).__module__ != "timm.models.hiera" or not evidence.orders:
        return None
    (h, w), order = next(iter(evidence.orders.values()))
    positions = [(p // w, p % w) for p in order]
    while len(positions) > count:
        quarter = len(positions) // 4
        if quarter * 4 != len(positions) or h % 2 or w % 2:
            return None
        pooled = []
        for j in range(quarter):
            cells = {
                (positions[j + k * quarter][0] // 2, positions[j + k * quarter][1] // 2)
                for k in range(4)
            }
            if len(cells) != 1:
                return None
            pooled.append(cells.pop())
        positions, h, w = pooled, h // 2, w // 2
    if len(positions) != count:
        return None
    return (h, w), tuple(r * w + c for r, c in positions)


def _fixed_by_type(module: nn.Module, dims: int) -> str:
    """The layout the module's type proves (``"NCHW"``/``"NCL"`` for channels-first types), or
    ``""`` where the type proves none."""
    if isinstance(module, CHANNELS_FIRST_TYPES) or (
        getattr(module, "data_format", None) == "channels_first"
    ):
        return "NCHW" if dims == 4 else "NCL"
    return ""


def _nest_blocks(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """A timm NesT module returning blocked tokens ``(N, T, n, C)``: ``T`` square blocks of
    ``n`` tokens, both perfect squares (the family's ``blockify``; read back as its
    ``deblockify`` does)."""
    if not type(module).__module__.startswith("timm.models.nest"):
        return False
    blocks, tokens = shape[1], shape[2]
    return math.isqrt(blocks) ** 2 == blocks and math.isqrt(tokens) ** 2 == tokens


def _grid_words(grid: tuple[int, int], strength: int = 2) -> str:
    source = {3: "the sizes the module was given", 2: "a grid read earlier"}.get(
        strength, "the input's grid"
    )
    return f"{grid[0]}x{grid[1]} from {source}"


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
