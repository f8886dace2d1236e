"""The layout rules: the user's choice first, then the module's type, its input, its
semantics and the evidence of the forward pass (see :mod:`lightning_srop.layouts`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from lightning_srop.layouts.evidence import Evidence, _hiera_order
from lightning_srop.layouts.readings import (
    CHANNELS_FIRST_TYPES,
    FEATURES_LAST_TYPES,
    MAX_PREFIX_TOKENS,
    Reading,
    Refusal,
)


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
    evidence.check_reorder(f"{name!r} ({type(module).__name__})", inputs, tensor, module)
    if dims == 2 and shape[0] == shape[1] and _token_count(shape[0], evidence, sizes):
        return _attention(where, shape, shape[0])
    if dims not in (3, 4):
        expected = {None: "(N, C, H, W), (N, C, L) or tokens (N, L, D)", 1: "(N, C, L)"}
        return Refusal(
            f"{where} returned a tensor of shape {shape}; expected "
            f"{expected.get(ndim, '(N, C, H, W) or tokens (N, L, D)')} feature maps; it is skipped.",
            hint=False,
        )
    fits = {"NCHW": 4, "NHWC": 4, "NCL": 3, "NLC": 3, "tokens": 3}
    reading: Reading | Refusal | None = None
    if explicit != "auto" and fits[explicit] == dims:
        reading = _stated(
            where,
            module,
            tensor,
            source,
            explicit,
            explicit_for_layer,
            grid,
            prefix_tokens,
            evidence,
            sizes,
        )
    elif explicit != "auto" and explicit_for_layer:
        return Refusal(
            f"{where} returned a {dims}-D tensor of shape {shape}, but `layout`={explicit!r} "
            f"was given for it, which describes {fits[explicit]}-D outputs; it is skipped.",
            hint=False,
        )
    if reading is None:
        reading = _auto(where, module, tensor, shape, source, evidence, inputs, sizes, ndim)
        if isinstance(reading, Reading) and explicit != "auto" and reading.inferred:
            reading = replace(  # say why the global layout did not apply
                reading,
                inferred=f"{reading.inferred}; the global layout={explicit!r} describes "
                f"{fits[explicit]}-D outputs",
            )
    return _checked(reading, name, where, shape, ndim)


def _checked(
    reading: Reading | Refusal, name: str, where: str, shape: tuple[int, ...], ndim: int | None
) -> Reading | Refusal:
    """``reading`` against the ``ndim=`` option, and a refusal with the option to pass."""
    if isinstance(reading, Refusal):
        if not reading.hint:
            return reading
        hint = (
            f"pass `layout={{{name!r}: 'NCHW'}}` or `'NHWC'`"
            if len(shape) == 4
            else f"pass `layout={{{name!r}: 'tokens'}}` with `grid=(h, w)` and "
            "`prefix_tokens=`, or `'NCL'` or `'NLC'`"
        )
        return Refusal(f"{reading.reason}; it is skipped ({hint}).", reading.final, hint=False)
    if ndim is not None and reading.ndim != ndim:
        what = "tokens on a 2-D grid" if reading.layout == "tokens" else reading.describe()
        return Refusal(
            f"{where} returned {shape}, read as {what} ({reading.ndim}-D maps), but `ndim`={ndim} "
            f"was set; it is skipped (pass `ndim=None` to measure it as {reading.ndim}-D).",
            hint=False,
        )
    return reading


def _stated(
    where: str,
    module: nn.Module,
    tensor: Tensor,
    source: str,
    explicit: str,
    explicit_for_layer: bool,
    grid: tuple[int, int] | None,
    prefix_tokens: int | None,
    evidence: Evidence,
    sizes: Sequence[tuple[int, int]],
) -> Reading | Refusal:
    """The reading of a layout the user stated that fits the output's rank: attention tables
    still refused unless stated for this very layer, and a contradiction with what the
    module's type proves said once (the layer's own layout wins, a global one does not)."""
    shape = tuple(int(s) for s in tensor.shape)
    dims = len(shape)
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
    return reading


def _attention(where: str, shape: tuple[int, ...], side: int) -> Refusal:
    return Refusal(
        f"{where} returned {shape}: a square {side} x {side} over a token count, "
        "i.e. attention probabilities, an attention bias or a relative-position table, not a "
        "spatial map; it is skipped (declare a layout for this layer by name to measure it).",
        hint=False,
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
                f"`grid`={grid} with `prefix_tokens`={prefix_tokens}; it is skipped.",
                hint=False,
            )
        return Reading("tokens", source, grid, prefix)
    candidates = [c for c in _token_grids(count, evidence, sizes) if prefix_tokens in (None, c[2])]
    if not candidates:
        return Refusal(
            f"{where} returned {count} tokens (shape {shape}) and no grid seen in the forward "
            "pass fits them; it is skipped (pass `grid=(h, w)` and `prefix_tokens=`).",
            hint=False,
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
            "the conv after the transformer).",
            hint=False,
        )
    if evidence.batch is not None and shape[0] != evidence.batch:
        return Refusal(
            f"{where} returned {shape}, whose first dim is not the batch ({evidence.batch} "
            "samples): not per-sample maps (windows, heads or a table?)"
        )
    if len(shape) == 4:
        return _auto_4d(where, module, shape, source, evidence)
    return _auto_3d(where, module, shape, source, evidence, sizes, ndim)


def _auto_4d(
    where: str, module: nn.Module, shape: tuple[int, ...], source: str, evidence: Evidence
) -> Reading | Refusal:
    """A 4-D output: NesT blocks, channels last after a last-dim module, or the layout whose
    grid the forward pass has shown (``NCHW`` when none was shown at all)."""
    if _nest_blocks(module, shape):
        side = math.isqrt(shape[1]) * math.isqrt(shape[2])
        return Reading("blocks", source, (side, side))
    a, b = shape[1], shape[2]
    if _features_last(module, shape[-1]):
        if evidence.grid_strength((a, b)) or not (evidence.grids or evidence.derived_grids()):
            return Reading("NHWC", source, inferred=f"{type(module).__name__} acts on the last dim")
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


def _auto_3d(
    where: str,
    module: nn.Module,
    shape: tuple[int, ...],
    source: str,
    evidence: Evidence,
    sizes: Sequence[tuple[int, int]],
    ndim: int | None,
) -> Reading | Refusal:
    """A 3-D output: ``(N, C, L)``, ``(N, L, C)`` or tokens ``(N, L, D)``, by the grids and
    lengths the forward pass has shown (Hiera's unrolled tokens put back in place)."""
    a = shape[1]
    last = shape[-1]
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
