"""Offline SROP profiling of a model: the callback's engine without a Trainer.

>>> import torch
>>> from torch import nn
>>> from lightning_srop import profile
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
>>> result = profile(net, torch.randn(4, 3, 16, 16))
>>> list(result), int(result["2"]["count"])
(['0', '2'], 32)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_srop.engine import LayerChoice, SROPEngine, check_engine_options
from lightning_srop.report import LayerReport
from lightning_srop.statistics import STATISTICS

__all__ = ["batch_input", "profile", "profile_reports"]


def batch_input(batch: Any, input_key: str = "input", *, owner: str = "profile") -> Tensor:
    """The input tensor of a batch: the tensor itself, the first item of a tuple/list, or
    ``batch[input_key]`` of a dict.

    Examples:
        >>> import torch
        >>> x = torch.zeros(2, 3)
        >>> batch_input((x, torch.ones(2))) is x, batch_input({"input": x}) is x
        (True, True)
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        value = batch.get(input_key)
        if isinstance(value, Tensor):
            return value
        raise ValueError(
            f"{owner}: a dict batch needs its input tensor under `input_key`={input_key!r}; "
            f"the batch has keys {list(batch)!r}."
        )
    raise TypeError(
        f"{owner}: expected a batch that is a tensor, a tuple/list whose first item is the input "
        f"tensor, or a dict with the input under `input_key`={input_key!r}; got "
        f"{type(batch).__name__}."
    )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def profile_reports(
    model: nn.Module,
    data: Tensor | Iterable[Any],
    *,
    layers: LayerChoice = None,
    num_batches: int | None = None,
    roll_percent: float = 0.85,
    keep_dc: bool = False,
    unit: Literal["layer", "input"] = "layer",
    ndim: int | None = None,
    repeated: Literal["separate", "merge", "first"] = "separate",
    num_bins: int = 1024,
    device: torch.device | str | None = None,
    input_key: str = "input",
) -> list[LayerReport]:
    """Like :func:`profile`, but returns one :class:`LayerReport` per layer (with histograms).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
        >>> reports = profile_reports(net, [torch.randn(2, 1, 12, 12)] * 3, num_batches=2)
        >>> [(r.name, r.depth, int(r.counts.sum())) for r in reports]
        [('0', 0, 8), ('1', 1, 8)]
    """
    owner = "profile"
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{owner}: expected `model` to be a torch.nn.Module, got {type(model).__name__}."
        )
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(
            f"{owner}: expected `num_batches` to be None (all batches) or an int >= 1; "
            f"got {num_batches!r}."
        )
    if not isinstance(input_key, str):
        raise TypeError(f"{owner}: expected `input_key` to be a str, got {input_key!r}.")
    check_engine_options(
        roll_percent=roll_percent,
        keep_dc=keep_dc,
        ndim=ndim,
        unit=unit,
        repeated=repeated,
        num_bins=num_bins,
        compiled="eager",
        owner=owner,
    )
    batches: Iterable[Any] = [data] if isinstance(data, Tensor) else data
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(batches, Iterable):
        raise TypeError(
            f"{owner}: expected `data` to be a tensor batch or an iterable of batches (e.g. a "
            f"DataLoader); got {type(data).__name__}."
        )
    engine = SROPEngine(
        model,
        layers,
        roll_percent=roll_percent,
        keep_dc=keep_dc,
        ndim=ndim,
        unit=unit,
        repeated=repeated,
        num_bins=num_bins,
        sync=False,  # local to this process: never a collective that other ranks must join
        owner=owner,
    )
    original_device = _model_device(model)
    target = torch.device(device) if device is not None else original_device
    modes = {module: module.training for module in model.modules()}
    moved = target != original_device
    try:
        if moved:
            model.to(target)
        model.eval()
        with torch.no_grad():
            for batch in itertools.islice(batches, num_batches):
                x = batch_input(batch, input_key, owner=owner).to(target)
                with engine.capture(x):
                    model(x)
        return engine.reports()
    finally:
        engine.detach()
        for module, training in modes.items():
            module.training = training
        if moved:
            model.to(original_device)


def profile(
    model: nn.Module,
    data: Tensor | Iterable[Any],
    *,
    layers: LayerChoice = None,
    num_batches: int | None = None,
    roll_percent: float = 0.85,
    keep_dc: bool = False,
    unit: Literal["layer", "input"] = "layer",
    ndim: int | None = None,
    repeated: Literal["separate", "merge", "first"] = "separate",
    num_bins: int = 1024,
    device: torch.device | str | None = None,
    input_key: str = "input",
    stats: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-layer SROP statistics of ``model`` over ``data``, without a Trainer.

    The model runs in eval mode under ``torch.no_grad``; each module's train/eval mode is
    restored afterwards (and its device, if ``device`` moved it). No hook is left behind, even
    if the model raises. The statistics are local to the calling process (no merge across
    ``torch.distributed`` processes), so calling it on one rank only is safe.

    Args:
        model: any ``nn.Module``; it is called as ``model(x)``.
        data: one batch (a tensor) or an iterable of batches (a list, a ``DataLoader``). A
            batch is a tensor, a tuple/list whose first item is the input (``(x, y)``), or a
            dict holding the input under ``input_key``.
        layers: which layers (see :mod:`lightning_srop.engine`): ``None`` = every Conv1d/Conv2d
            and pooling layer, a regex, a list of names, module types, or a callable.
        num_batches: use at most this many batches (``None`` = all).
        roll_percent: share of spectral energy below the roll-off, in (0, 1].
        keep_dc: keep the DC bin (the map's mean) in the energy.
        unit: ``"layer"`` (cycles per pixel of the layer's grid) or ``"input"`` (per input
            pixel, SROP divided by the layer's total downscaling).
        ndim: ``None`` auto-detects 2-D and 1-D maps; 1 or 2 forces it.
        repeated: how modules called several times per forward count: ``"separate"``
            (keys ``name``, ``name#1``, ...), ``"merge"`` or ``"first"``.
        num_bins: histogram bins (quantiles are within half a bin).
        device: run on this device (the model is moved there and back); default the model's.
        input_key: key of the input in dict batches.
        stats: statistics to return per layer (default all of
            :data:`~lightning_srop.statistics.STATISTICS`).

    Returns:
        ``{layer: {statistic: value}}`` in forward order (the order layers first ran).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.MaxPool2d(2))
        >>> batches = [(torch.randn(2, 3, 32, 32), torch.zeros(2)) for _ in range(3)]
        >>> out = profile(net, batches, unit="input", stats=["mean", "count"])
        >>> out["0"]["count"], out["1"]["mean"] < 0.71 / 4
        (24.0, True)
    """
    if stats is None:
        names: Sequence[str] = STATISTICS
    else:
        if isinstance(stats, str) or not all(isinstance(s, str) for s in stats):
            raise TypeError(
                f"profile: expected `stats` to be a sequence of statistic names; got {stats!r}."
            )
        unknown = [s for s in stats if s not in STATISTICS]
        if unknown:
            raise ValueError(
                f"profile: `stats` has unknown statistic(s) {unknown!r}; valid choices: "
                f"{', '.join(STATISTICS)}."
            )
        names = stats
    reports = profile_reports(
        model,
        data,
        layers=layers,
        num_batches=num_batches,
        roll_percent=roll_percent,
        keep_dc=keep_dc,
        unit=unit,
        ndim=ndim,
        repeated=repeated,
        num_bins=num_bins,
        device=device,
        input_key=input_key,
    )
    return {r.name: {s: r.stats[s] for s in names} for r in reports}
