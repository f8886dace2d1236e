"""One frozen, validated options object for every driver of the engine.

:class:`SROPOptions` holds what decides *what is measured and how*: the layer choice, the SROP
definition (``roll_percent``, ``keep_dc``, ``ndim``), units, map layout, repeated calls,
histogram bins, compiled models, which statistics are reported and how many batches are
measured. :class:`~lightning_srop.callback.SROPCallback`, :func:`~lightning_srop.profile.profile`
and the command line build one; :class:`~lightning_srop.engine.SROPEngine` takes it. Every
option is checked here, once, with errors that name the argument and list the valid choices.

Each choice set is defined once, as a ``Literal`` and the tuple of its values.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias, get_args

from lightning_srop.functional.spectral_rolloff import DEFAULT_ROLL_PERCENT, _check_options
from lightning_srop.layers import LayerChoice, normalize_layer_choice
from lightning_srop.statistics import STATISTICS

__all__ = [
    "COMPILED_CHOICES",
    "INPUT_LAYOUT_CHOICES",
    "LAYOUT_CHOICES",
    "REPEATED_CHOICES",
    "UNIT_CHOICES",
    "Compiled",
    "Grid",
    "InputLayout",
    "Layout",
    "Repeated",
    "SROPOptions",
    "Unit",
    "check_bool",
    "check_choice",
    "check_forward",
    "check_int",
    "check_prefix",
]

Unit: TypeAlias = Literal["layer", "input"]
Repeated: TypeAlias = Literal["separate", "merge", "first"]
Compiled: TypeAlias = Literal["eager", "error"]
Layout: TypeAlias = Literal["auto", "NCHW", "NHWC", "NCL", "NLC", "tokens"]
InputLayout: TypeAlias = Literal["auto", "NCHW", "NHWC", "NCL", "NLC", "NL"]
Grid: TypeAlias = tuple[int, int]

#: Values of ``unit=``: cycles per pixel of the layer's grid, or per input pixel.
UNIT_CHOICES: Final[tuple[str, ...]] = get_args(Unit)
#: Values of ``repeated=``: how a module called several times per batch counts.
REPEATED_CHOICES: Final[tuple[str, ...]] = get_args(Repeated)
#: Values of ``compiled=``: run compiled code eagerly while measuring, or refuse it.
COMPILED_CHOICES: Final[tuple[str, ...]] = get_args(Compiled)
#: Values of ``layout=``: how an output is read (see :mod:`lightning_srop.layouts`).
LAYOUT_CHOICES: Final[tuple[str, ...]] = get_args(Layout)
#: Values of ``input_layout=``: where the input keeps its spatial axes (for ``unit="input"``).
INPUT_LAYOUT_CHOICES: Final[tuple[str, ...]] = get_args(InputLayout)


def check_choice(value: object, choices: Sequence[str], argument: str, owner: str) -> None:
    """Raise ``ValueError`` naming ``argument`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{owner}: expected `{argument}` to be one of {', '.join(map(repr, choices))}; "
            f"got {value!r}."
        )


def check_int(
    value: object,
    argument: str,
    owner: str,
    *,
    minimum: int,
    maximum: int | None = None,
    none_means: str | None = None,
) -> int:
    """An ``int`` (numpy integers too) in ``[minimum, maximum]``, else an error naming ``argument``.

    ``none_means`` is what ``None`` means where the caller accepts it (only for the message,
    e.g. ``"all batches"``; the caller handles ``None`` itself).
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
        if number >= minimum and (maximum is None or number <= maximum):
            return number
    none = f"None ({none_means}) or " if none_means is not None else ""
    bound = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    error = ValueError if numeric else TypeError
    raise error(f"{owner}: expected `{argument}` to be {none}{bound}; got {value!r}.")


def check_bool(value: object, argument: str, owner: str) -> bool:
    """A ``bool`` (numpy bools too), else ``TypeError`` naming ``argument``."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{owner}: expected `{argument}` to be a bool; got {value!r}.")


def check_prefix(prefix: object, owner: str) -> str:
    """A logged names' prefix: a non-empty ``str`` without leading or trailing ``/``."""
    if not isinstance(prefix, str) or not prefix or prefix.strip("/") != prefix:
        raise ValueError(
            f"{owner}: expected `prefix` to be a non-empty str without leading or trailing "
            f"'/'; got {prefix!r}."
        )
    return prefix


def check_forward(forward: Any, owner: str) -> Any:
    """``None`` or a callable ``(model, batch) -> output``, else ``TypeError``."""
    if forward is not None and not callable(forward):
        raise TypeError(
            f"{owner}: expected `forward` to be None or a callable (model, batch) -> output; "
            f"got {type(forward).__name__}."
        )
    return forward


def _check_stats(stats: object, owner: str) -> tuple[str, ...]:
    if (
        isinstance(stats, str)
        or not isinstance(stats, Sequence)
        or not stats
        or not all(isinstance(s, str) for s in stats)
    ):
        raise ValueError(
            f"{owner}: expected `stats` to be a non-empty sequence of statistic names, e.g. "
            f"('mean', 'median'); got {stats!r}. Valid choices: {', '.join(STATISTICS)}."
        )
    unknown = [s for s in stats if s not in STATISTICS]
    if unknown:
        raise ValueError(
            f"{owner}: `stats` has unknown statistic(s) {unknown!r}; valid choices: "
            f"{', '.join(STATISTICS)}."
        )
    return tuple(dict.fromkeys(stats))


def _check_layout(layout: object, owner: str) -> Layout | Mapping[str, Layout]:
    if isinstance(layout, Mapping):
        for name, value in layout.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"{owner}: expected the keys of `layout` to be layer names (str); got {name!r}."
                )
            check_choice(value, LAYOUT_CHOICES, f"layout[{name!r}]", owner)
        return dict(layout)
    check_choice(layout, LAYOUT_CHOICES, "layout", owner)
    return layout  # type: ignore[return-value]


def _check_per_layer(value: object, argument: str, owner: str, check: Any) -> Any:
    """``check(value)`` for one value, or for every value of a ``{layer name: value}`` mapping."""
    if isinstance(value, Mapping):
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"{owner}: expected the keys of `{argument}` to be layer names (str); "
                    f"got {name!r}."
                )
            out[name] = check(item, f"{argument}[{name!r}]")
        return out
    return check(value, argument)


def _check_grid(owner: str) -> Any:
    def check(value: object, argument: str) -> Grid | None:
        if value is None:
            return None
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
            and all(int(v) >= 1 for v in value)  # type: ignore[call-overload]
        ):
            return (int(value[0]), int(value[1]))  # type: ignore[call-overload]
        raise ValueError(
            f"{owner}: expected `{argument}` to be None (inferred) or a patch grid (h, w) of two "
            f"ints >= 1; got {value!r}."
        )

    return check


def _check_prefix(owner: str) -> Any:
    def check(value: object, argument: str) -> int | None:
        if value is None:
            return None
        return check_int(value, argument, owner, minimum=0, none_means="inferred")

    return check


@dataclasses.dataclass(frozen=True)
class SROPOptions:
    """What is measured and how: one validated set, shared by the callback, ``profile`` and the CLI.

    Args:
        layers: which layers: ``None`` (the spatial convolution and pooling layers of the
            model, see :mod:`lightning_srop.layers`), a regular expression over qualified
            names, a dotted module class path (``"torch.nn.Conv2d"``), a list of names (and
            class paths), a module type or tuple of types, or a callable
            ``(name, module) -> bool``.
        num_batches: batches measured (per validation epoch for the callback); ``None`` = all.
        roll_percent: share of spectral energy below the roll-off, in (0, 1].
        keep_dc: keep the DC bin (the map's mean) in the energy.
        ndim: ``None`` auto-detects 2-D ``(N, C, H, W)`` and 1-D ``(N, C, L)`` outputs; 1 or 2
            forces it (``ndim=1`` also takes 3-D outputs of any module, e.g. tokens).
        unit: ``"layer"`` (cycles per pixel of the layer's grid) or ``"input"`` (cycles per
            input pixel: the SROP divided by the layer's total downscaling).
        layout: how an output is read: ``"auto"`` (decided from what the forward pass shows,
            see :mod:`lightning_srop.layouts`), ``"NCHW"`` or ``"NHWC"`` for 4-D outputs,
            ``"NCL"`` or ``"NLC"`` for 3-D signals, ``"tokens"`` for ``(N, P + h*w, D)``
            token grids. A mapping ``{layer name: layout}`` sets it per layer (others
            ``"auto"``); a global layout applies to the outputs of its rank only.
        grid: the ``(h, w)`` patch grid of token outputs, or ``{layer name: (h, w)}``;
            ``None`` infers it from the forward pass.
        prefix_tokens: tokens before the grid (class, distillation, registers), or a mapping
            per layer; ``None`` infers it (the token count minus ``h * w``).
        input_layout: where the input keeps its spatial axes, for ``unit="input"``:
            ``"auto"`` (``(N, C, H, W)`` images, ``(N, T)`` waveforms, ``(N, 1, L)``
            signals), ``"NCHW"``, ``"NHWC"``, ``"NCL"``, ``"NLC"`` or ``"NL"``.
        stats: statistics reported as scalars, any of
            :data:`~lightning_srop.statistics.STATISTICS`.
        repeated: a module called several times per batch: ``"separate"`` (keys ``name``,
            ``name#1``, ...), ``"merge"`` (all calls pooled) or ``"first"`` (first call only).
        num_bins: histogram bins per layer (quantiles are within half a bin).
        input_key: where the input lies in dict batches; tensor batches are the input,
            tuple/list batches hold it first.
        compiled: ``"eager"`` runs ``torch.compile``'d code eagerly during the measured batches
            (compiled graphs ignore hooks added later); ``"error"`` refuses compiled models.
        owner: who builds the options, for messages (not an option; not compared).

    Examples:
        >>> opts = SROPOptions(layers="torch.nn.Conv2d", roll_percent=0.9, stats=["mean"])
        >>> opts.layers, opts.roll_percent, opts.stats
        (<class 'torch.nn.modules.conv.Conv2d'>, 0.9, ('mean',))
        >>> SROPOptions(unit="px")
        Traceback (most recent call last):
        ...
        ValueError: SROPOptions: expected `unit` to be one of 'layer', 'input'; got 'px'.
    """

    layers: LayerChoice = None
    num_batches: int | None = 2
    roll_percent: float = DEFAULT_ROLL_PERCENT
    keep_dc: bool = False
    ndim: int | None = None
    unit: Unit = "layer"
    layout: Layout | Mapping[str, Layout] = "auto"
    grid: Grid | Mapping[str, Grid] | None = None
    prefix_tokens: int | Mapping[str, int] | None = None
    input_layout: InputLayout = "auto"
    stats: Sequence[str] = ("mean", "median")
    repeated: Repeated = "separate"
    num_bins: int = 1024
    input_key: str = "input"
    compiled: Compiled = "eager"
    owner: str = dataclasses.field(default="SROPOptions", compare=False, repr=False)

    def __post_init__(self) -> None:
        owner = self.owner
        fix = object.__setattr__
        fix(self, "layers", normalize_layer_choice(self.layers, owner))
        if self.num_batches is not None:
            fix(
                self,
                "num_batches",
                check_int(
                    self.num_batches, "num_batches", owner, minimum=1, none_means="all batches"
                ),
            )
        if self.ndim is not None and (
            not isinstance(self.ndim, numbers.Integral)
            or isinstance(self.ndim, bool)
            or self.ndim not in (1, 2)
        ):
            raise ValueError(
                f"{owner}: expected `ndim` to be None (auto-detect), 1 or 2; got {self.ndim!r}."
            )
        fix(self, "ndim", None if self.ndim is None else int(self.ndim))
        _check_options(self.roll_percent, self.ndim or 2, self.keep_dc, owner)
        fix(self, "roll_percent", float(self.roll_percent))
        check_choice(self.unit, UNIT_CHOICES, "unit", owner)
        fix(self, "layout", _check_layout(self.layout, owner))
        fix(self, "grid", _check_per_layer(self.grid, "grid", owner, _check_grid(owner)))
        fix(
            self,
            "prefix_tokens",
            _check_per_layer(self.prefix_tokens, "prefix_tokens", owner, _check_prefix(owner)),
        )
        check_choice(self.input_layout, INPUT_LAYOUT_CHOICES, "input_layout", owner)
        fix(self, "stats", _check_stats(self.stats, owner))
        check_choice(self.repeated, REPEATED_CHOICES, "repeated", owner)
        fix(self, "num_bins", check_int(self.num_bins, "num_bins", owner, minimum=2))
        if not isinstance(self.input_key, str):
            raise TypeError(f"{owner}: expected `input_key` to be a str; got {self.input_key!r}.")
        check_choice(self.compiled, COMPILED_CHOICES, "compiled", owner)

    @classmethod
    def given(
        cls, options: SROPOptions | None, keywords: Mapping[str, Any], owner: str
    ) -> SROPOptions:
        """The options of a caller that takes them whole (``options=``) or as the keywords of
        their fields (the callback): ``options`` when given, and then every keyword must be at
        its default, else built from the keywords.

        Examples:
            >>> SROPOptions.given(None, {"unit": "input"}, "demo").unit
            'input'
            >>> SROPOptions.given(SROPOptions(), {"unit": "input"}, "demo")
            Traceback (most recent call last):
            ...
            ValueError: demo: pass what is measured either as `options=SROPOptions(...)` ...
        """
        if options is None:
            return cls(**keywords, owner=owner)
        if not isinstance(options, SROPOptions):
            raise TypeError(
                f"{owner}: expected `options` to be None or an SROPOptions; got "
                f"{type(options).__name__}."
            )
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        changed = [
            name
            for name, value in keywords.items()
            if (tuple(value) if isinstance(value, list) else value) != defaults[name]
        ]
        if changed:
            raise ValueError(
                f"{owner}: pass what is measured either as `options=SROPOptions(...)` or as "
                f"keywords, not both; got `options` and {', '.join(f'`{n}`' for n in changed)}."
            )
        return options.replace(owner=owner)

    def replace(self, **changes: Any) -> SROPOptions:
        """A copy with ``changes`` applied and validated again.

        Examples:
            >>> SROPOptions().replace(unit="input").unit
            'input'
        """
        return dataclasses.replace(self, **changes)

    def layout_of(self, name: str) -> tuple[Layout, bool]:
        """The layout option that applies to layer ``name`` and whether it names the layer.

        Examples:
            >>> SROPOptions(layout={"norm": "NHWC"}).layout_of("norm")
            ('NHWC', True)
            >>> SROPOptions(layout="tokens").layout_of("blocks.0")
            ('tokens', False)
        """
        if isinstance(self.layout, Mapping):
            value = self.layout.get(name)
            return (value, True) if value is not None else ("auto", False)
        return self.layout, False

    def grid_of(self, name: str) -> tuple[Grid | None, int | None]:
        """The token grid and prefix count given for layer ``name`` (None: inferred)."""
        grid = self.grid.get(name) if isinstance(self.grid, Mapping) else self.grid
        prefix = (
            self.prefix_tokens.get(name)
            if isinstance(self.prefix_tokens, Mapping)
            else self.prefix_tokens
        )
        return grid, prefix

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON-friendly values (the layer choice as its ``repr`` when it
        is not a string, list or None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "owner":
                continue
            value = getattr(self, f.name)
            if f.name == "layers":
                value = _layers_to_plain(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            out[f.name] = value
        return out


def _layers_to_plain(layers: object) -> object:
    if layers is None or isinstance(layers, str):
        return layers
    if isinstance(layers, type):
        return f"{layers.__module__}.{layers.__qualname__}"
    if isinstance(layers, tuple):
        return [_layers_to_plain(x) for x in layers]
    return getattr(layers, "__qualname__", repr(layers))
