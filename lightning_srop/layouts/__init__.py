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

from lightning_srop.layouts.evidence import Evidence
from lightning_srop.layouts.readings import (
    CHANNELS_FIRST_TYPES,
    FEATURES_LAST_TYPES,
    MAX_PREFIX_TOKENS,
    Reading,
    Refusal,
    downscale_exponent,
    downscaling,
    input_spatial,
    int_sizes,
    unwrap_output,
)
from lightning_srop.layouts.rules import read_layout

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
