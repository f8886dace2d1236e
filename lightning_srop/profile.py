"""Offline SROP profiling of a model: the callback's engine without a Trainer.

>>> import torch
>>> from torch import nn
>>> from lightning_srop import profile
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
>>> report = profile(net, torch.randn(4, 3, 16, 16))
>>> report.names, int(report["2"].stats["count"])
(['0', '2'], 32)
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn

from lightning_srop.batches import BatchInput, batch_input, input_of, takes_image_list
from lightning_srop.engine import SROPEngine
from lightning_srop.measure import measure
from lightning_srop.options import SROPOptions, check_bool
from lightning_srop.report import SROPReport

__all__ = ["profile"]

#: Below this many batches no progress bar is shown by default.
_PROGRESS_MIN_BATCHES = 20


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _progress(
    batches: Iterable[Any], total: int | None, show: bool | None, desc: str
) -> Iterable[Any]:
    if show is None:
        show = total is not None and total >= _PROGRESS_MIN_BATCHES and sys.stderr.isatty()
    if not show:
        return batches
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]  # Lightning's own progress bar depends on it
    except ImportError:  # pragma: no cover - Lightning brings tqdm
        return batches
    return tqdm(batches, total=total, desc=desc, unit="batch", leave=False)  # type: ignore[no-any-return]


def _length(data: Iterable[Any], limit: int | None) -> int | None:
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return limit
    return n if limit is None else min(n, limit)


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Call:
    """How :func:`profile` runs the model on a batch: ``model(x)`` on the batch's input, or
    ``forward(model, batch)`` on the whole batch, on ``target``, under ``autocast``."""

    def __init__(
        self,
        model: nn.Module,
        options: SROPOptions,
        target: torch.device,
        forward: Callable[[nn.Module, Any], Any] | None,
        autocast: torch.dtype | None,
        owner: str = "profile",
    ) -> None:
        self.model, self.options, self.target = model, options, target
        self.forward, self.autocast, self.owner = forward, autocast, owner
        self.image_list = takes_image_list(model)

    def prepared(self, batch: Any) -> Any:
        """The batch on the target device: whole for ``forward=``, else just the input."""
        if self.forward is None:
            batch = batch_input(
                batch, self.options.input_key, owner=self.owner, image_list=self.image_list
            )
        return move_data_to_device(batch, self.target)

    def run(self, batch: Any) -> None:
        with _autocast(self.target, self.autocast):
            if self.forward is not None:
                self.forward(self.model, batch)
            else:
                self.model(batch)

    def input_of(self, batch: Any) -> BatchInput | None:
        if self.forward is None:
            return batch  # type: ignore[no-any-return]  # prepared() kept only the input
        needed = self.options.unit == "input"
        return input_of(
            batch, self.options.input_key, self.model, required=needed, owner=self.owner
        )


def _check_arguments(
    model: object, progress: object, autocast: object, forward: object, owner: str = "profile"
) -> None:
    """The arguments of :func:`profile` that are not options: expected types, or an error."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{owner}: expected `model` to be a torch.nn.Module, got {type(model).__name__}."
        )
    if progress is not None:
        check_bool(progress, "progress", owner)
    if autocast is not None and not isinstance(autocast, torch.dtype):
        raise TypeError(
            f"{owner}: expected `autocast` to be None or a torch.dtype (e.g. torch.bfloat16); "
            f"got {autocast!r}."
        )
    if forward is not None and not callable(forward):
        raise TypeError(
            f"{owner}: expected `forward` to be None or a callable (model, batch) -> output; "
            f"got {type(forward).__name__}."
        )


def _batches(data: object, image_list: bool, owner: str = "profile") -> Iterable[Any]:
    """``data`` as an iterable of batches: one batch (a tensor, or a list of image tensors
    for a model that takes one) becomes a list of one."""
    one_batch = isinstance(data, Tensor) or (
        image_list
        and isinstance(data, (list, tuple))
        and bool(data)
        and all(isinstance(t, Tensor) and t.dim() == 3 for t in data)
    )
    batches = [data] if one_batch else data
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(batches, Iterable):
        raise TypeError(
            f"{owner}: expected `data` to be a tensor batch, a list of image tensors (for a "
            "model that takes one) or an iterable of batches (e.g. a DataLoader); got "
            f"{type(data).__name__}."
        )
    return batches


def profile(
    model: nn.Module,
    data: Tensor | Iterable[Any],
    *,
    options: SROPOptions | None = None,
    device: torch.device | str | None = None,
    autocast: torch.dtype | None = None,
    progress: bool | None = None,
    label: str | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    **changes: Any,
) -> SROPReport:
    """Per-layer SROP statistics of ``model`` over ``data``, without a Trainer.

    :func:`~lightning_srop.measure.measure` runs it, as it runs the callback's baseline: eval
    mode, no grad, each module's mode (and device) restored, no hook left behind; local to
    the process (safe on one rank only).

    Args:
        model: any ``nn.Module``, called as ``model(x)`` or ``forward(model, batch)``.
        data: one batch (a tensor, or a list of image tensors for a model that takes one) or
            an iterable of batches (a list, a ``DataLoader``). A batch is a tensor, a
            tuple/list whose first item is the input (``(x, y)``, or ``(images, targets)``
            with a list of image tensors as detection models take), or a dict holding the
            input under ``input_key``.
        options: an :class:`~lightning_srop.options.SROPOptions`; default: default options
            with ``num_batches=None`` (every batch of ``data``).
        device: run on this device (the model is moved there and back; default: its own).
        autocast: run the forward passes under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16``), as mixed-precision training does; SROPs are computed in float32.
        progress: show a progress bar (tqdm); default: on a terminal, from 20 batches.
        label: stored in the report (the legend of comparisons).
        forward: a callable ``(model, batch) -> output`` that runs the model on a whole
            batch, for batches of any other form, e.g. ``lambda m, b: m(**b)`` for Hugging
            Face dict batches. The input is still looked up (``input_key``) for the report's
            downscaling and ``unit="input"``; the batch is moved to the device first.
        changes: option fields, e.g. ``layers=``, ``num_batches=``, ``unit=``,
            ``roll_percent=`` (see :class:`~lightning_srop.options.SROPOptions`).

    Returns:
        An :class:`~lightning_srop.report.SROPReport`, layers in forward order (the order they
        first ran); ``.as_dict()`` gives ``{layer: {statistic: value}}``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.MaxPool2d(2))
        >>> batches = [(torch.randn(2, 3, 32, 32), torch.zeros(2)) for _ in range(3)]
        >>> out = profile(net, batches, unit="input").as_dict(["mean", "count"])
        >>> out["0"]["count"], out["1"]["mean"] < 0.71 / 4
        (24.0, True)
    """
    owner = "profile"
    _check_arguments(model, progress, autocast, forward)
    if options is None:
        options = SROPOptions(**{"num_batches": None, **changes, "owner": owner})
    elif changes:
        options = options.replace(owner=owner, **changes)
    batches = _batches(data, takes_image_list(model))
    engine = SROPEngine(model, options=options, sync=False, owner=owner)
    original_device = _model_device(model)
    target = torch.device(device) if device is not None else original_device
    moved, call = target != original_device, _Call(model, options, target, forward, autocast)
    limited = itertools.islice(batches, options.num_batches)
    shown = _progress(limited, _length(batches, options.num_batches), progress, "SROP")
    try:
        if moved:
            model.to(target)
        return measure(
            engine,
            (call.prepared(batch) for batch in shown),
            call.run,
            input_of=call.input_of,
            model=type(model).__name__,
            label=label,
        )
    finally:
        if moved:
            model.to(original_device)
