"""The hook engine: layer choice, forward hooks, and per-layer SROP statistics.

The engine knows nothing about Trainers. It resolves a layer choice to modules and clean names,
registers forward hooks only while it is attached, feeds every captured feature map into the
:class:`~lightning_srop.statistics.SROPStatistics` of its layer under ``torch.no_grad`` (never
keeping the activation), and turns the statistics into
:class:`~lightning_srop.report.LayerReport` objects (merged across processes when distributed).
Both :class:`~lightning_srop.callback.SROPCallback` and :func:`~lightning_srop.profile.profile`
drive it.

Rules, in one place:

- **Layer choice** (``layers=``): ``None`` picks every Conv1d/Conv2d and pooling/downscaling
  module (:data:`DEFAULT_LAYER_TYPES`); a string is a regular expression matched with
  :func:`re.search` against clean qualified names (anchor it with ``^...$`` for exact names); a
  list/tuple of strings names layers exactly (unknown names raise an error listing close
  valid names); a module type or a tuple of types selects by ``isinstance``; a callable
  ``(name, module) -> bool`` selects what it returns true for.
- **Names** are qualified names in the root module with wrapper components removed:
  ``_orig_mod`` (``torch.compile``), ``_fsdp_wrapped_module``, ``_forward_module``,
  ``_checkpoint_wrapped_module`` anywhere, and ``module`` where its parent is a
  (Distributed)DataParallel wrapper. Wrapper modules themselves are never selected.
- **Dimensionality**: a 4-D output ``(N, C, H, W)`` is a batch of 2-D maps; a 3-D output
  ``(N, C, L)`` is a batch of 1-D signals when the module is a 1-D conv/pool/norm layer.
  Any other 3-D output (e.g. tokens ``(N, L, D)``) is skipped unless ``ndim=1`` forces 1-D.
  Outputs that are not floating-point tensors (tuples, dicts, integer tensors), of another
  rank, or of ``1 x 1`` maps (no spectrum) are skipped. Every skip is announced once per layer
  with a :class:`SROPWarning` (on rank zero).
- **Repeated calls**: a module called several times in one batch (torchvision ResNet's shared
  ``relu``) is handled by ``repeated=``: ``"separate"`` (default) keeps one statistic per call
  site, keyed ``name``, ``name#1``, ``name#2``, ... in call order within the batch;
  ``"merge"`` pools all calls into ``name`` (every call's maps count, on purpose);
  ``"first"`` keeps only the first call of each batch.
- **Units**: ``unit="layer"`` reports cycles per pixel of the layer's own grid; ``unit="input"``
  divides by the total downscaling ``s`` of the layer (SPEC.md "Units"), taken per batch from
  the input's spatial size: ``s = L_in / L`` in 1-D and ``s = sqrt(H_in W_in / (H W))`` in 2-D
  (the common ratio when both axes are downscaled alike). The histogram range of a layer is
  fixed by its first batch (``sqrt(2)/2 / s`` in 2-D); later values beyond it fall in the
  last bin.
- **Compiled models**: hooks added after ``torch.compile`` are ignored by compiled code, so
  while attached the engine runs compiled code eagerly (``torch.compiler.set_stance
  ("force_eager")``, ``compiled="eager"``, the default), or raises (``compiled="error"``).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Literal, TypeAlias

import torch
from lightning_utilities.core.rank_zero import rank_zero_only
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_srop.functional.spectral_rolloff import (
    MAX_RADIUS_1D,
    MAX_RADIUS_2D,
    _check_options,
)
from lightning_srop.report import LayerReport
from lightning_srop.statistics import SROPStatistics

__all__ = [
    "DEFAULT_LAYER_TYPES",
    "WRAPPER_NAMES",
    "LayerChoice",
    "SROPEngine",
    "SROPWarning",
    "check_layer_choice",
    "clean_name",
    "is_rank_zero",
    "notice",
    "resolve_layers",
]

#: Module types selected by ``layers=None``: convolutions and pooling/downscaling layers.
DEFAULT_LAYER_TYPES: Final[tuple[type[nn.Module], ...]] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool1d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
    nn.PixelUnshuffle,
)

#: Module types whose 3-D outputs are ``(N, C, L)`` signals (auto-detected as 1-D).
ONE_D_LAYER_TYPES: Final[tuple[type[nn.Module], ...]] = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.LPPool1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
    nn.Upsample,
)

#: Name components removed from qualified names wherever they appear.
WRAPPER_NAMES: Final[tuple[str, ...]] = (
    "_orig_mod",
    "_fsdp_wrapped_module",
    "_forward_module",
    "_checkpoint_wrapped_module",
)

# Classes whose child ``module`` is the wrapped model, and wrapper classes never selected.
_MODULE_WRAPPERS: Final[frozenset[str]] = frozenset({"DistributedDataParallel", "DataParallel"})
_WRAPPER_CLASSES: Final[frozenset[str]] = frozenset(
    {
        "OptimizedModule",
        "DistributedDataParallel",
        "DataParallel",
        "FullyShardedDataParallel",
        "CheckpointWrapper",
        "_LightningModuleWrapperBase",
        "_FabricModule",
    }
)

REPEATED_CHOICES: Final[tuple[str, ...]] = ("separate", "merge", "first")
UNIT_CHOICES: Final[tuple[str, ...]] = ("layer", "input")
COMPILED_CHOICES: Final[tuple[str, ...]] = ("eager", "error")

#: What ``layers=`` accepts.
LayerChoice: TypeAlias = (
    str
    | Sequence[str]
    | type[nn.Module]
    | tuple[type[nn.Module], ...]
    | Callable[[str, nn.Module], bool]
    | None
)


class SROPWarning(UserWarning):
    """A notice about a layer that is skipped or a logger that cannot show something."""


def is_rank_zero() -> bool:
    """Whether this process is the global rank zero (Lightning's rank, else the environment)."""
    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
        else:
            rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    return int(rank) == 0


def notice(message: str, *, stacklevel: int = 3) -> None:
    """Emit ``message`` as a :class:`SROPWarning` on rank zero only."""
    if is_rank_zero():
        warnings.warn(message, SROPWarning, stacklevel=stacklevel)


def clean_name(root: nn.Module, raw_name: str) -> str:
    """The qualified name ``raw_name`` of a submodule of ``root`` without wrapper components.

    Examples:
        >>> from torch import nn
        >>> net = nn.DataParallel(nn.Sequential(nn.Conv2d(1, 2, 3)))
        >>> clean_name(net, "module.0")
        '0'
        >>> wrapped = nn.Module()
        >>> wrapped.add_module("_orig_mod", nn.Sequential(nn.Conv2d(1, 2, 3)))
        >>> clean_name(wrapped, "_orig_mod.0")
        '0'
    """
    if not raw_name:
        return ""
    parent: nn.Module | None = root
    kept: list[str] = []
    for part in raw_name.split("."):
        child = parent._modules.get(part) if parent is not None else None
        is_wrapper = part in WRAPPER_NAMES or (
            part == "module" and parent is not None and type(parent).__name__ in _MODULE_WRAPPERS
        )
        if not is_wrapper:
            kept.append(part)
        parent = child
    return ".".join(kept)


def _named_layers(root: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """``(clean, raw, module)`` for every non-wrapper submodule, in registration order."""
    out: list[tuple[str, str, nn.Module]] = []
    seen: set[str] = set()
    for raw, module in root.named_modules():
        if not raw or type(module).__name__ in _WRAPPER_CLASSES:
            continue
        name = clean_name(root, raw)
        if not name or name in seen:
            name = raw  # a name that only wrappers told apart: keep the raw one
        seen.add(name)
        out.append((name, raw, module))
    return out


def _close_names(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    if close:
        return "close valid names: " + ", ".join(repr(c) for c in close)
    shown = ", ".join(repr(v) for v in valid[:10])
    more = f", ... ({len(valid)} in all)" if len(valid) > 10 else ""
    return f"valid names: {shown}{more}" if valid else "the model has no submodules"


def _is_module_type(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, nn.Module)


def resolve_layers(
    model: nn.Module, layers: LayerChoice = None, *, owner: str = "resolve_layers"
) -> list[tuple[str, nn.Module]]:
    """Resolve a layer choice to ``(clean name, module)`` pairs in registration order.

    Args:
        model: the root module; names are qualified names in it.
        layers: the choice; see the module docstring.
        owner: who asks, for error messages (e.g. ``"SROPCallback"``).

    Returns:
        The selected layers, at least one.

    Raises:
        TypeError: ``layers`` has an unsupported type.
        ValueError: a name is unknown (close valid names are listed), the regular expression is
            invalid, or the choice selects no layer.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        >>> [name for name, _ in resolve_layers(net)]
        ['0', '2']
        >>> [name for name, _ in resolve_layers(net, nn.ReLU)]
        ['1']
        >>> resolve_layers(net, ["3", "conv"])
        Traceback (most recent call last):
        ...
        ValueError: resolve_layers: `layers` names unknown layer 'conv' (valid names: ...).
    """
    named = _named_layers(model)
    valid = [name for name, _, _ in named]
    arg = f"{owner}: `layers`"
    if layers is None:
        chosen = [(n, m) for n, _, m in named if isinstance(m, DEFAULT_LAYER_TYPES)]
        if not chosen:
            kinds = ", ".join(t.__name__ for t in DEFAULT_LAYER_TYPES[:6])
            raise ValueError(
                f"{arg}=None selects every convolution and pooling layer ({kinds}, ...), but "
                f"{type(model).__name__} has none; pass `layers=` (names, a regex, module "
                f"types or a callable). {_close_names('', valid).capitalize()}."
            )
        return chosen
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as err:
            raise ValueError(f"{arg}={layers!r} is not a valid regular expression: {err}.") from err
        chosen = [(n, m) for n, raw, m in named if pattern.search(n) or pattern.search(raw)]
        if not chosen:
            raise ValueError(
                f"{arg}={layers!r} (a regular expression, matched with re.search) matches no "
                f"layer; {_close_names(layers, valid)}."
            )
        return chosen
    if _is_module_type(layers) or (
        isinstance(layers, tuple) and layers and all(_is_module_type(t) for t in layers)
    ):
        types = layers if isinstance(layers, tuple) else (layers,)
        chosen = [(n, m) for n, _, m in named if isinstance(m, types)]  # type: ignore[arg-type]
        if not chosen:
            names = ", ".join(t.__name__ for t in types)  # type: ignore[union-attr]
            present = sorted({type(m).__name__ for _, _, m in named})
            raise ValueError(
                f"{arg} selects modules of type {names}, but the model has none; "
                f"module types present: {', '.join(present) or 'none'}."
            )
        return chosen
    if isinstance(layers, (list, tuple)):
        if not layers or not all(isinstance(x, str) for x in layers):
            raise TypeError(
                f"{arg}: expected a non-empty list of layer names (str), got {layers!r}."
            )
        wanted = [str(x) for x in layers]
        by_name = {n: m for n, _, m in named}
        by_name.update({raw: m for _, raw, m in named})
        raw_to_clean = {raw: n for n, raw, _ in named}
        unknown = [x for x in wanted if x not in by_name]
        if unknown:
            details = "; ".join(f"{u!r} ({_close_names(u, valid)})" for u in unknown)
            word = "layer" if len(unknown) == 1 else "layers"
            raise ValueError(f"{arg} names unknown {word} {details}.")
        chosen_names: list[str] = []
        for x in wanted:
            name = raw_to_clean.get(x, x)
            if name not in chosen_names:
                chosen_names.append(name)
        order = {n: i for i, n in enumerate(valid)}
        chosen_names.sort(key=lambda n: order.get(n, len(order)))
        return [(n, by_name[n]) for n in chosen_names]
    if callable(layers):
        chosen = [(n, m) for n, _, m in named if layers(n, m)]
        if not chosen:
            raise ValueError(
                f"{arg}: the callable {getattr(layers, '__name__', layers)!r} selects no layer "
                f"(it returned false for all {len(valid)} submodules)."
            )
        return chosen
    raise TypeError(
        f"{arg}: expected None, a regular expression (str), a list of layer names, a module "
        f"type, a tuple of module types or a callable (name, module) -> bool; got "
        f"{type(layers).__name__} {layers!r}."
    )


def check_layer_choice(layers: object, owner: str) -> None:
    """Check the type of a layer choice (and compile a regex) without a model."""
    if layers is None or _is_module_type(layers):
        return
    if isinstance(layers, str):
        try:
            re.compile(layers)
        except re.error as err:
            raise ValueError(
                f"{owner}: `layers`={layers!r} is not a valid regular expression: {err}."
            ) from err
        return
    if isinstance(layers, tuple) and layers and all(_is_module_type(t) for t in layers):
        return
    if isinstance(layers, (list, tuple)):
        if layers and all(isinstance(x, str) for x in layers):
            return
        raise TypeError(
            f"{owner}: expected `layers` to be a non-empty list of layer names (str) or a tuple "
            f"of module types, got {layers!r}."
        )
    if callable(layers):
        return
    raise TypeError(
        f"{owner}: expected `layers` to be None, a regular expression (str), a list of layer "
        "names, a module type, a tuple of module types or a callable (name, module) -> bool; "
        f"got {type(layers).__name__} {layers!r}."
    )


def check_choice(value: object, choices: Sequence[str], argument: str, owner: str) -> None:
    """Raise ``ValueError`` naming ``argument`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{owner}: expected `{argument}` to be one of {', '.join(map(repr, choices))}; "
            f"got {value!r}."
        )


def check_engine_options(
    *,
    roll_percent: object,
    keep_dc: object,
    ndim: object,
    unit: object,
    repeated: object,
    num_bins: object,
    compiled: object,
    owner: str,
) -> None:
    """Validate the options shared by the engine, the callback and ``profile``."""
    if ndim is not None and (isinstance(ndim, bool) or ndim not in (1, 2)):
        raise ValueError(
            f"{owner}: expected `ndim` to be None (auto-detect), 1 or 2; got {ndim!r}."
        )
    _check_options(roll_percent, 2 if ndim is None else ndim, keep_dc, owner)
    check_choice(unit, UNIT_CHOICES, "unit", owner)
    check_choice(repeated, REPEATED_CHOICES, "repeated", owner)
    check_choice(compiled, COMPILED_CHOICES, "compiled", owner)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"{owner}: expected `num_bins` to be an int >= 2; got {num_bins!r}.")


def _force_eager() -> contextlib.AbstractContextManager[Any] | None:
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:
        return None
    cm: contextlib.AbstractContextManager[Any] = set_stance("force_eager")
    return cm


def _is_compiled(root: nn.Module) -> bool:
    if getattr(root, "_compiler_ctx", None):  # Lightning's from_compiled
        return True
    return any(type(m).__name__ == "OptimizedModule" for m in root.modules())


class SROPEngine:
    """Forward hooks on chosen layers that accumulate per-layer SROP statistics.

    Use :meth:`capture` (a context manager) around the forward passes to measure, or
    :meth:`attach` / :meth:`detach` when the start and the end lie in different callbacks.
    Each attach is one *batch* for the ``repeated=`` rule. :meth:`reports` computes (and, when
    distributed, merges) the statistics; :meth:`reset` starts over.

    Args:
        model: the root module; layer names are qualified names in it.
        layers: the layer choice (see the module docstring).
        roll_percent: share of spectral energy below the roll-off, in (0, 1].
        keep_dc: keep the DC bin (the map's mean) in the energy.
        ndim: ``None`` auto-detects 2-D ``(N, C, H, W)`` and 1-D ``(N, C, L)`` outputs; 1 or 2
            forces it (``ndim=1`` also takes 3-D outputs of any module, e.g. tokens).
        unit: ``"layer"`` (cycles per pixel of the layer's grid) or ``"input"`` (per input
            pixel; needs :meth:`set_input` before each batch).
        repeated: ``"separate"``, ``"merge"`` or ``"first"`` (see the module docstring).
        num_bins: histogram bins of each layer's statistics.
        compiled: ``"eager"`` runs compiled code eagerly while attached so hooks fire;
            ``"error"`` raises if the model holds compiled code.
        sync: merge the statistics across processes in :meth:`reports` when
            ``torch.distributed`` is initialized (then every process must call it); ``False``
            keeps them local to this process.
        owner: who drives the engine, for messages.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)).eval()
        >>> engine = SROPEngine(net)
        >>> with engine.capture():
        ...     _ = net(torch.randn(2, 3, 16, 16))
        >>> [(r.name, int(r.stats["count"])) for r in engine.reports()]
        [('0', 8), ('1', 8)]
        >>> engine.num_hooks, len(net[0]._forward_hooks)
        (0, 0)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerChoice = None,
        *,
        roll_percent: float = 0.85,
        keep_dc: bool = False,
        ndim: int | None = None,
        unit: Literal["layer", "input"] = "layer",
        repeated: Literal["separate", "merge", "first"] = "separate",
        num_bins: int = 1024,
        compiled: Literal["eager", "error"] = "eager",
        sync: bool = True,
        owner: str = "SROPEngine",
    ) -> None:
        check_engine_options(
            roll_percent=roll_percent,
            keep_dc=keep_dc,
            ndim=ndim,
            unit=unit,
            repeated=repeated,
            num_bins=num_bins,
            compiled=compiled,
            owner=owner,
        )
        self.model = model
        self.layer_choice = layers
        self.roll_percent = float(roll_percent)
        self.keep_dc = keep_dc
        self.ndim = ndim
        self.unit = unit
        self.repeated = repeated
        self.num_bins = num_bins
        self.compiled = compiled
        self.sync = bool(sync)
        self.owner = owner
        self.layers: list[tuple[str, nn.Module]] = resolve_layers(model, layers, owner=owner)
        self.metrics: dict[str, SROPStatistics] = {}  # this round's, in first-call order
        self._pool: dict[str, SROPStatistics] = {}  # every metric made, reused after reset
        self._handles: list[RemovableHandle] = []
        self._calls: dict[str, int] = {}
        self._fired: set[str] = set()
        self._noticed: set[str] = set()
        self._input_shape: tuple[int, ...] | None = None
        self._device: torch.device | None = None
        self._stance: contextlib.AbstractContextManager[Any] | None = None

    # ------------------------------------------------------------------ layer choice
    @property
    def names(self) -> list[str]:
        """Clean names of the chosen layers, in registration order."""
        return [name for name, _ in self.layers]

    def resolve(self) -> None:
        """Resolve the layer choice again (the model may have changed). Not while attached."""
        if self._handles:
            raise RuntimeError(f"{self.owner}: cannot resolve layers while hooks are attached.")
        self.layers = resolve_layers(self.model, self.layer_choice, owner=self.owner)

    # ------------------------------------------------------------------ hooks
    @property
    def num_hooks(self) -> int:
        """Number of forward hooks this engine holds right now."""
        return len(self._handles)

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def set_input(self, x: Tensor | Sequence[int] | None) -> None:
        """Record the input of the coming batch (its spatial size is used with ``unit="input"``)."""
        if isinstance(x, Tensor):
            self._input_shape = tuple(int(s) for s in x.shape)
            self._device = x.device
        elif x is None:
            self._input_shape = None
        else:
            self._input_shape = tuple(int(s) for s in x)

    def attach(self) -> None:
        """Register one forward hook per chosen layer and start a new batch. Idempotent."""
        if self._handles:
            return
        if self.compiled == "error" and _is_compiled(self.model):
            raise RuntimeError(
                f"{self.owner}: the model holds torch.compile'd code, whose compiled graphs "
                "ignore forward hooks added after compilation, and `compiled='error'` was set; "
                "pass `compiled='eager'` to run the sampled batches eagerly, or measure the "
                "uncompiled model."
            )
        self._calls = {}
        stance = _force_eager() if self.compiled == "eager" else None
        if stance is None and self.compiled == "eager" and _is_compiled(self.model):
            raise RuntimeError(
                f"{self.owner}: the model holds torch.compile'd code, whose compiled graphs "
                "ignore forward hooks added after compilation, and this PyTorch "
                f"({torch.__version__}) has no `torch.compiler.set_stance` to run it eagerly "
                "(PyTorch >= 2.6); measure the uncompiled model."
            )
        try:
            if stance is not None:
                stance.__enter__()
                self._stance = stance
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook this engine registered (safe to call any number of times)."""
        handles, self._handles = self._handles, []
        try:
            for handle in handles:
                handle.remove()
        finally:
            stance, self._stance = self._stance, None
            if stance is not None:
                stance.__exit__(None, None, None)

    @contextlib.contextmanager
    def capture(self, x: Tensor | None = None) -> Iterator[SROPEngine]:
        """Attach the hooks for the duration of the ``with`` block; they are removed on any exit."""
        if x is not None:
            self.set_input(x)
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        @torch.compiler.disable  # type: ignore[misc, untyped-decorator]
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._on_output(name, module, output)

        return hook  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ capture
    def _notice(self, key: str, message: str) -> None:
        if key in self._noticed:
            return
        self._noticed.add(key)
        notice(f"{self.owner}: {message}", stacklevel=4)

    def _map_ndim(self, name: str, module: nn.Module, output: Tensor) -> int | None:
        dims = output.dim()
        where = f"layer {name!r} ({type(module).__name__})"
        if self.ndim is None:
            if dims == 4:
                return 2
            if dims == 3 and isinstance(module, ONE_D_LAYER_TYPES):
                return 1
            if dims == 3:
                self._notice(
                    name,
                    f"{where} returned a 3-D tensor of shape {tuple(output.shape)}, read as "
                    "tokens (N, L, D) without spatial order; it is skipped. Pass `ndim=1` to "
                    "treat 3-D outputs as (N, C, L) signals.",
                )
                return None
        elif dims == self.ndim + 2:
            return self.ndim
        expected = (
            "(N, C, H, W) or (N, C, L)"
            if self.ndim is None
            else ("(N, C, H, W)" if self.ndim == 2 else "(N, C, L)")
        )
        self._notice(
            name,
            f"{where} returned a tensor of shape {tuple(output.shape)}; expected {expected} "
            "feature maps; it is skipped.",
        )
        return None

    def _on_output(self, name: str, module: nn.Module, output: Any) -> None:
        count = self._calls.get(name, 0)
        self._calls[name] = count + 1
        self._fired.add(name)
        if count and self.repeated == "first":
            return
        key = f"{name}#{count}" if count and self.repeated == "separate" else name
        where = f"layer {name!r} ({type(module).__name__})"
        if not isinstance(output, Tensor):
            self._notice(
                name,
                f"{where} returned a {type(output).__name__}, not a tensor; it is skipped "
                "(hook the submodule that produces the feature maps instead).",
            )
            return
        if not output.is_floating_point():
            self._notice(
                name, f"{where} returned a {output.dtype} tensor, not floating point; skipped."
            )
            return
        ndim = self._map_ndim(name, module, output)
        if ndim is None or output.shape[0] == 0:
            return
        map_shape = tuple(int(s) for s in output.shape[-ndim:])
        if all(s == 1 for s in map_shape):
            self._notice(name, f"{where} returned 1 x 1 maps, which have no spectrum; skipped.")
            return
        scale = 1.0
        if self.unit == "input":
            downscale = self._downscaling(name, where, map_shape)
            if downscale is None:
                return
            scale = 1.0 / downscale
        metric = self.metrics.get(key)
        if metric is None:
            metric = self._fresh_metric(key, ndim, scale, None, output.device)
            self.metrics[key] = metric
            self._device = output.device
        elif metric.ndim != ndim:
            self._notice(
                key,
                f"{where} changed from {metric.ndim}-D to {ndim}-D maps "
                f"(shape {tuple(output.shape)}); those outputs are skipped.",
            )
            return
        metric.scale = scale  # the downscaling of this batch (histogram range stays fixed)
        with torch.no_grad():
            metric.update(output.detach())

    def _fresh_metric(
        self,
        key: str,
        ndim: int,
        scale: float,
        max_value: float | None,
        device: torch.device,
    ) -> SROPStatistics:
        """An empty metric for ``key``: last epoch's one, reset, when it fits, else a new one.

        Reusing the metric keeps its states on the device (resetting copies device-side
        defaults; creating a metric copies host tensors to the device, a synchronisation).
        """
        if max_value is None:
            max_value = (MAX_RADIUS_2D if ndim == 2 else MAX_RADIUS_1D) * scale
        with torch.inference_mode(False):
            metric = self._pool.get(key)
            if (
                metric is not None
                and metric.ndim == ndim
                and metric.max_value == max_value
                and metric.hist.device == device
            ):
                metric.reset()
                metric.scale = scale
                return metric
            metric = SROPStatistics(
                self.roll_percent,
                ndim=ndim,
                keep_dc=self.keep_dc,
                scale=scale,
                num_bins=self.num_bins,
                max_value=max_value,
                sync_on_compute=self.sync,
            ).to(device)
        self._pool[key] = metric
        return metric

    def _downscaling(self, name: str, where: str, map_shape: tuple[int, ...]) -> float | None:
        shape = self._input_shape
        if shape is None or len(shape) < len(map_shape):
            raise RuntimeError(
                f"{self.owner}: `unit='input'` needs the input's spatial size, but none was "
                f"recorded before {where} ran (input shape: {shape}); call `set_input(x)` first."
            )
        in_size = shape[-len(map_shape) :]
        return math.sqrt(math.prod(in_size) / math.prod(map_shape))

    # ------------------------------------------------------------------ results
    def unfired(self) -> list[str]:
        """Chosen layers whose hooks never ran since the last :meth:`reset`."""
        return [name for name, _ in self.layers if name not in self._fired]

    def reset(self) -> None:
        """Forget all statistics (notices are kept per engine).

        The metric objects are kept aside and reused, reset, when their layer runs again, so
        an epoch allocates nothing new on the device and memory stays the same across epochs.
        """
        self.metrics = {}
        self._fired = set()

    def _merge_keys(self) -> None:
        """Give every process the same metrics in the same order (a collective when distributed)."""
        if not self.sync:
            return
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world < 2:
            return
        specs = [(k, m.ndim, m.max_value, m.scale) for k, m in self.metrics.items()]
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, specs)
        merged: dict[str, tuple[int, float, float]] = {}
        for rank_specs in gathered:
            for key, ndim, max_value, scale in rank_specs:
                known = merged.setdefault(key, (ndim, max_value, scale))
                if known[:2] != (ndim, max_value):
                    raise RuntimeError(
                        f"{self.owner}: layer {key!r} has {known[0]}-D maps with histogram range "
                        f"{known[1]:.6g} on one process and {ndim}-D maps with range "
                        f"{max_value:.6g} on another (different input sizes with unit='input'?); "
                        "its statistics cannot be merged."
                    )
        device = self._device
        if device is None:
            backend = torch.distributed.get_backend()
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if backend == "nccl"
                else torch.device("cpu")
            )
        metrics: dict[str, SROPStatistics] = {}
        for key, (ndim, max_value, scale) in merged.items():
            metric = self.metrics.get(key)
            if metric is None:
                metric = self._fresh_metric(key, ndim, scale, max_value, device)
            metrics[key] = metric
        self.metrics = metrics

    def reports(self) -> list[LayerReport]:
        """Compute one :class:`LayerReport` per measured layer key, in first-call order.

        When distributed (and ``sync=True``), this is a collective (every process must call it)
        and every process gets the same merged reports: counts, sums and histograms are added
        over processes, min/max reduced, so the result equals one process measuring all
        processes' batches.
        """
        self._merge_keys()
        return [
            LayerReport.from_metric(key, metric, depth)
            for depth, (key, metric) in enumerate(self.metrics.items())
        ]
