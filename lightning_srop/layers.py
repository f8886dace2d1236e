"""Layer choice: which modules of a model are measured, under which clean names.

- **Layer choice** (``layers=``):

  * ``None`` picks the layers whose outputs are spatial maps *for the model at hand*:

    - every 2-D convolution and pooling/downscaling layer (:data:`DEFAULT_LAYER_TYPES_2D`)
      and every 1-D convolution and pooling layer (:data:`DEFAULT_LAYER_TYPES_1D`): CNNs,
      audio models, and mixed ones (a spectrogram or subsampling front-end followed by
      temporal ``Conv1d``);
    - in a model whose spatial information flows as tokens, every **transformer block**:
      the innermost item of a ``ModuleList``/``Sequential`` that holds a token attention
      (``nn.MultiheadAttention``, or a module with ``Linear`` projections named ``qkv``,
      ``query``/``key``/``value``, ``q_proj``/``k_proj``/``v_proj`` or ``q``/``k``/``v``).
      Its output is read over the patch grid (:mod:`lightning_srop.layouts`); the patch
      embedding is a 2-D convolution, chosen by the first rule. CNNs have no such block, so
      their default choice is unchanged.

    In a model with 2-D layers, a default ``Conv1d`` or 1-D pool that runs over a pooled
    channel vector (ECA-style channel attention: one input channel whose length is a channel
    count of the 2-D maps) or over a flattened 2-D grid (a length ``h * w`` of a grid read) is
    left out at run time and listed in the report's ``skipped``.
  * a string is a regular expression matched with :func:`re.search` against clean qualified
    names (anchor it with ``^...$`` for exact names), **unless** it is the dotted path of a
    module class that can be imported (``"torch.nn.Conv2d"``, ``"timm.layers.BlurPool2d"``):
    then it selects by ``isinstance``. This is how a type is chosen from a LightningCLI YAML
    file or the command line.
  * a list/tuple of strings names layers exactly (unknown names raise an error listing close
    valid names); items that are dotted class paths (or module types) select by type, and the
    union is measured.
  * a module type or a tuple of types selects by ``isinstance``.
  * a callable ``(name, module) -> bool`` selects what it returns true for.

- **Names** are qualified names in the root module with wrapper components removed:
  ``_orig_mod`` (``torch.compile``), ``_fsdp_wrapped_module``, ``_forward_module``,
  ``_checkpoint_wrapped_module`` anywhere, and ``module`` where its parent is a
  (Distributed)DataParallel wrapper. Wrapper modules themselves are never selected.

- **TorchScript**: the submodules of a ``torch.jit.script``'ed module run inside TorchScript,
  which never calls Python hooks, and a scripted module refuses hooks itself. They are never
  chosen by default; naming one gives a notice that it cannot be measured (hook the module
  that calls the scripted one, or measure the unscripted model). Traced modules take hooks.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from torch import nn

__all__ = [
    "DEFAULT_LAYER_TYPES",
    "DEFAULT_LAYER_TYPES_1D",
    "DEFAULT_LAYER_TYPES_2D",
    "WRAPPER_NAMES",
    "LayerChoice",
    "ResolvedLayers",
    "clean_name",
    "import_object",
    "is_scripted",
    "is_token_attention",
    "normalize_layer_choice",
    "resolve_layers",
    "select_layers",
    "transformer_blocks",
]

#: Module types selected by ``layers=None`` in a model that has any of them.
DEFAULT_LAYER_TYPES_2D: Final[tuple[type[nn.Module], ...]] = (
    nn.Conv2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
    nn.PixelUnshuffle,
)

#: Module types selected by ``layers=None`` in a model without any 2-D default type.
DEFAULT_LAYER_TYPES_1D: Final[tuple[type[nn.Module], ...]] = (
    nn.Conv1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.LPPool1d,
)

#: Every module type ``layers=None`` can select (2-D and 1-D).
DEFAULT_LAYER_TYPES: Final[tuple[type[nn.Module], ...]] = (
    *DEFAULT_LAYER_TYPES_2D,
    *DEFAULT_LAYER_TYPES_1D,
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

# A dotted path whose last component is a class name: "torch.nn.Conv2d".
_CLASS_PATH: Final[re.Pattern[str]] = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Z]\w*")

#: What ``layers=`` accepts.
LayerChoice: TypeAlias = (
    str
    | Sequence[str]
    | type[nn.Module]
    | tuple[type[nn.Module], ...]
    | Callable[[str, nn.Module], bool]
    | None
)


def is_scripted(module: nn.Module) -> bool:
    """Whether ``module`` is TorchScript compiled by ``torch.jit.script`` (hooks never run).

    Traced modules (``torch.jit.trace``) are called from Python and take hooks: not scripted.
    """
    return type(module).__name__ == "RecursiveScriptModule"


def _child(parent: nn.Module | None, part: str) -> nn.Module | None:
    # ``_modules`` is a dict, or TorchScript's OrderedModuleDict (no ``.get``).
    if parent is None:
        return None
    modules = parent._modules
    return modules[part] if part in modules else None  # noqa: SIM401


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
        is_wrapper = part in WRAPPER_NAMES or (
            part == "module" and parent is not None and type(parent).__name__ in _MODULE_WRAPPERS
        )
        if not is_wrapper:
            kept.append(part)
        parent = _child(parent, part)
    return ".".join(kept)


@dataclass(frozen=True)
class _Named:
    name: str  # clean
    raw: str
    module: nn.Module
    scripted_in: str | None  # the clean name of the scripted module it lies in (or is)


def _named_layers(root: nn.Module) -> list[_Named]:
    """Every non-wrapper submodule, in registration order."""
    out: list[_Named] = []
    seen: set[str] = set()
    scripted_roots: list[tuple[str, str]] = []  # (raw prefix, clean name)
    for raw, module in root.named_modules():
        if not raw or type(module).__name__ in _WRAPPER_CLASSES:
            continue
        name = clean_name(root, raw)
        if not name or name in seen:
            name = raw  # a name that only wrappers told apart: keep the raw one
        seen.add(name)
        inside = next((c for r, c in scripted_roots if raw.startswith(r + ".")), None)
        if inside is None and is_scripted(module):
            scripted_roots.append((raw, name))
            inside = name
        out.append(_Named(name, raw, module, inside))
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


def import_object(path: str) -> Any:
    """The object at dotted ``path`` (``package.module.Name``), or ``LookupError`` saying
    which part cannot be found (the command line's ``--model`` and class paths in ``layers=``).

    Examples:
        >>> import_object("torch.nn.Conv2d").__name__
        'Conv2d'
    """
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LookupError(f"cannot import module {module_name!r} ({err})") from err
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise LookupError(f"module {module_name!r} has no attribute {attribute!r}") from None


def _import_module_type(path: str) -> type[nn.Module] | str | None:
    """The module class at dotted ``path``; ``None`` if it does not look like a class path;
    the reason as a ``str`` if it looks like one but cannot be imported as a module class."""
    if not _CLASS_PATH.fullmatch(path):
        return None
    try:
        value = import_object(path)
    except LookupError as err:
        return str(err)
    if _is_module_type(value):
        return value  # type: ignore[no-any-return]
    return f"{path} is a {type(value).__name__}, not a torch.nn.Module subclass"


def normalize_layer_choice(layers: object, owner: str) -> LayerChoice:
    """Check a layer choice without a model and turn importable class paths into types.

    Returns the choice to store: strings that are dotted paths of module classes become the
    class; lists mixing names and class paths keep names as ``str`` and classes as types.

    Raises:
        TypeError: the choice has an unsupported type.
        ValueError: a regular expression does not compile.

    Examples:
        >>> from torch import nn
        >>> normalize_layer_choice("torch.nn.Conv2d", "demo") is nn.Conv2d
        True
        >>> normalize_layer_choice(["features.0", "torch.nn.MaxPool2d"], "demo")
        ('features.0', <class 'torch.nn.modules.pooling.MaxPool2d'>)
        >>> normalize_layer_choice(r"^features\\.\\d+$", "demo")
        '^features\\\\.\\\\d+$'
    """
    arg = f"{owner}: `layers`"
    if layers is None or _is_module_type(layers):
        return layers  # type: ignore[return-value]
    if isinstance(layers, str):
        found = _import_module_type(layers)
        if isinstance(found, type):
            return found
        try:
            re.compile(layers)
        except re.error as err:
            raise ValueError(f"{arg}={layers!r} is not a valid regular expression: {err}.") from err
        return layers
    if isinstance(layers, (list, tuple)):
        items: list[str | type[nn.Module]] = []
        for item in layers:
            if _is_module_type(item):
                items.append(item)
            elif isinstance(item, str):
                found = _import_module_type(item)
                items.append(found if isinstance(found, type) else item)
            else:
                items = []
                break
        if not items:
            raise TypeError(
                f"{owner}: expected `layers` to be a non-empty list of layer names (str) or module types "
                f"(classes or dotted class paths such as 'torch.nn.Conv2d'), got {layers!r}."
            )
        return tuple(items)  # type: ignore[return-value]
    if callable(layers):
        return layers  # type: ignore[return-value]
    raise TypeError(
        f"{arg}: expected None, a regular expression (str), a dotted module class path "
        "(str, e.g. 'torch.nn.Conv2d'), a list of layer names, a module type, a tuple of module "
        f"types or a callable (name, module) -> bool; got {type(layers).__name__} {layers!r}."
    )


_PROJECTIONS: Final[tuple[frozenset[str], ...]] = (
    frozenset({"qkv"}),
    frozenset({"query", "key", "value"}),
    frozenset({"q_proj", "k_proj", "v_proj"}),
    frozenset({"q", "k", "v"}),
)


_NORMS: Final[tuple[type[nn.Module], ...]] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Identity,
)


def _projection(module: nn.Module) -> nn.Linear | None:
    """The ``Linear`` of a token projection: the module itself, or the one ``Linear`` of a
    projection wrapped with a norm (timm LeViT's ``LinearNorm``); None for anything else."""
    if isinstance(module, nn.Linear):
        return module
    children = list(module.children())
    linear = [c for c in children if isinstance(c, nn.Linear)]
    if len(linear) == 1 and all(isinstance(c, (nn.Linear, *_NORMS)) for c in children):
        return linear[0]
    return None


def is_token_attention(module: nn.Module) -> bool:
    """Whether ``module`` is attention over tokens: ``nn.MultiheadAttention``, or a module
    with ``Linear`` query/key/value projections as children (named as usual, or told by their
    structure: two or more reading the same token width, one of them returning it, and an
    output projection back to a width), a ``Linear`` wrapped with a norm counting as one.
    Channel or spatial attention of CNNs, built from convolutions and pooling, is not.

    Examples:
        >>> from torch import nn
        >>> is_token_attention(nn.MultiheadAttention(8, 2))
        True
        >>> class Attention(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)
        >>> is_token_attention(Attention()), is_token_attention(nn.Conv2d(1, 1, 1))
        (True, False)
    """
    if isinstance(module, nn.MultiheadAttention):
        return True
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False  # a container chains or lists its items: it projects nothing in parallel
    children = [(n, p) for n, c in module.named_children() if (p := _projection(c)) is not None]
    linear = {n for n, _ in children}
    if any(names <= linear for names in _PROJECTIONS):
        return True
    # By structure, whatever the names: parallel projections of the same tokens (q + kv,
    # qk + v, v + attention weights as in outlook attention) and an output projection back to
    # the token width: two or more Linear children reading one width, one returning it.
    widths: dict[int, list[nn.Linear]] = {}
    for _, child in children:
        widths.setdefault(int(child.in_features), []).append(child)
    return any(
        len(same) >= 2
        and any(int(c.out_features) == width for c in same)
        and any(int(c.out_features) != width for c in same)
        for width, same in widths.items()
    ) and any(int(c.out_features) == int(c.in_features) for _, c in children)


def transformer_blocks(root: nn.Module) -> list[str]:
    """Raw qualified names of the transformer blocks of ``root``: the innermost items of a
    ``ModuleList``/``Sequential`` that hold a token attention (see :func:`is_token_attention`).

    Examples:
        >>> from torch import nn
        >>> layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        >>> transformer_blocks(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
        ['layers.0', 'layers.1']
    """
    holds: set[str] = set()
    for raw, module in root.named_modules():
        if isinstance(module, nn.MultiheadAttention) or is_token_attention(module):
            holds.add(raw)
    if not holds:
        return []
    items: list[str] = []
    for raw, module in root.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        for child_name, _ in module.named_children():
            item = f"{raw}.{child_name}" if raw else child_name
            if any(h == item or h.startswith(item + ".") for h in holds):
                items.append(item)
    # innermost: drop items that contain another item
    return [i for i in items if not any(o != i and o.startswith(i + ".") for o in items)]


@dataclass(frozen=True)
class ResolvedLayers:
    """The outcome of a layer choice on one model.

    Attributes:
        layers: ``(clean name, module)`` pairs to hook, in registration order.
        scripted: clean names the choice selected that lie inside TorchScript (not hookable).
        by_default: whether the choice was ``None`` (the default): skips are quiet then.
        channel_attention: default-chosen 1-D layers (``Conv1d``, 1-D pools) of a model with
            2-D layers, left out at run time when they run over a pooled channel vector
            (ECA-style) or a flattened 2-D grid.
    """

    layers: list[tuple[str, nn.Module]]
    scripted: list[str]
    by_default: bool
    channel_attention: frozenset[str] = frozenset()


def select_layers(
    model: nn.Module, layers: LayerChoice = None, *, owner: str = "resolve_layers"
) -> ResolvedLayers:
    """Resolve a layer choice on ``model``; see the module docstring for the rules.

    Raises:
        TypeError: ``layers`` has an unsupported type.
        ValueError: a name is unknown (close valid names are listed), the regular expression is
            invalid, or the choice selects no layer that can be hooked.
    """
    layers = normalize_layer_choice(layers, owner)
    named = _named_layers(model)
    valid = [n.name for n in named if n.scripted_in is None or n.scripted_in == n.name]
    arg = f"{owner}: `layers`"
    by_default = layers is None
    chosen: list[_Named]
    channel_attention: frozenset[str] = frozenset()
    if layers is None:
        plain = [n for n in named if n.scripted_in is None]
        blocks = set(transformer_blocks(model))
        chosen = [n for n in plain if isinstance(n.module, DEFAULT_LAYER_TYPES) or n.raw in blocks]
        if any(isinstance(n.module, DEFAULT_LAYER_TYPES_2D) for n in chosen):
            channel_attention = frozenset(
                n.name for n in chosen if isinstance(n.module, DEFAULT_LAYER_TYPES_1D)
            )
        if not chosen:
            kinds = ", ".join(t.__name__ for t in DEFAULT_LAYER_TYPES[:6])
            raise ValueError(
                f"{arg}=None selects every convolution and pooling layer ({kinds}, ...), but "
                f"{type(model).__name__} has none; pass `layers=` (names, a regex, module "
                f"types or a callable). {_close_names('', valid).capitalize()}."
            )
    elif isinstance(layers, str):
        pattern = re.compile(layers)
        chosen = [n for n in named if pattern.search(n.name) or pattern.search(n.raw)]
        if not chosen:
            hint = ""
            reason = _import_module_type(layers)
            if isinstance(reason, str):
                hint = f" It looks like a module class path, but it cannot be imported ({reason})."
            raise ValueError(
                f"{arg}={layers!r} (a regular expression, matched with re.search) matches no "
                f"layer; {_close_names(layers, valid)}.{hint}"
            )
    elif _is_module_type(layers) or (
        isinstance(layers, tuple) and layers and all(_is_module_type(t) for t in layers)
    ):
        types = layers if isinstance(layers, tuple) else (layers,)
        chosen = [n for n in named if isinstance(n.module, types)]  # type: ignore[arg-type]
        if not chosen:
            names = ", ".join(t.__name__ for t in types)  # type: ignore[union-attr]
            present = sorted({type(n.module).__name__ for n in named})
            raise ValueError(
                f"{arg} selects modules of type {names}, but the model has none; "
                f"module types present: {', '.join(present) or 'none'}."
            )
    elif isinstance(layers, tuple):
        chosen = _by_names_and_types(named, valid, layers, arg)
    else:  # a callable (normalize_layer_choice rejected everything else)
        chosen = [n for n in named if layers(n.name, n.module)]  # type: ignore[operator]
        if not chosen:
            raise ValueError(
                f"{arg}: the callable {getattr(layers, '__name__', layers)!r} selects no layer "
                f"(it returned false for all {len(named)} submodules)."
            )
    hookable = [(n.name, n.module) for n in chosen if n.scripted_in is None]
    scripted = [n.name for n in chosen if n.scripted_in is not None]
    if not hookable:
        where = sorted({n.scripted_in for n in chosen if n.scripted_in is not None})
        raise ValueError(
            f"{arg}: every chosen layer ({', '.join(map(repr, scripted))}) is, or lies inside, "
            f"a torch.jit.script'ed module ({', '.join(map(repr, where))}), whose TorchScript "
            "code never runs Python forward hooks; choose a module that calls it, or measure "
            "the model before scripting."
        )
    return ResolvedLayers(hookable, scripted, by_default, channel_attention)


def _by_names_and_types(
    named: list[_Named], valid: list[str], items: tuple[object, ...], arg: str
) -> list[_Named]:
    wanted = [x for x in items if isinstance(x, str)]
    types = tuple(x for x in items if isinstance(x, type))
    by_name = {n.name: n for n in named}
    by_name.update({n.raw: n for n in named})
    unknown = [x for x in wanted if x not in by_name]
    if unknown:
        details = "; ".join(f"{u!r} ({_close_names(u, valid)})" for u in unknown)
        word = "layer" if len(unknown) == 1 else "layers"
        raise ValueError(f"{arg} names unknown {word} {details}.")
    picked = {id(by_name[x]) for x in wanted}
    chosen = [n for n in named if id(n) in picked or (types and isinstance(n.module, types))]
    if not chosen:
        names = ", ".join(t.__name__ for t in types)
        raise ValueError(f"{arg} selects modules of type {names}, but the model has none.")
    return chosen


def resolve_layers(
    model: nn.Module, layers: LayerChoice = None, *, owner: str = "resolve_layers"
) -> list[tuple[str, nn.Module]]:
    """Resolve a layer choice to ``(clean name, module)`` pairs in registration order.

    Args:
        model: the root module; names are qualified names in it.
        layers: the choice; see the module docstring.
        owner: who asks, for error messages (e.g. ``"SROPCallback"``).

    Returns:
        The selected layers that can be hooked, at least one.

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
        >>> [name for name, _ in resolve_layers(net, "torch.nn.MaxPool2d")]
        ['2']
        >>> resolve_layers(net, ["3", "conv"])
        Traceback (most recent call last):
        ...
        ValueError: resolve_layers: `layers` names unknown layer 'conv' (valid names: ...).
    """
    return select_layers(model, layers, owner=owner).layers
