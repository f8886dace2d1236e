"""One road from batches to a report: what the callback's baseline, :func:`~lightning_srop.profile.profile`
and the command line all run. The model in eval mode without gradients (every module's mode
restored), each batch's input recorded, the model called with the engine's hooks attached, no
hook left behind, and one :class:`~lightning_srop.report.SROPReport` with what was skipped."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from lightning_srop.batches import BatchInput
from lightning_srop.engine import SROPEngine
from lightning_srop.report import SROPReport

__all__ = ["eval_mode", "measure"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the ``with`` block; every module's own train/eval flag is
    restored afterwards (also on an exception), not just the root's.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Dropout(), nn.Dropout())
        >>> net[1].eval()
        Dropout(p=0.5, inplace=False)
        >>> with eval_mode(net):
        ...     [m.training for m in net.modules()]
        [False, False, False]
        >>> [m.training for m in net.modules()]
        [True, True, False]
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def measure(
    engine: SROPEngine,
    batches: Iterable[Any],
    run: Callable[[Any], object],
    *,
    input_of: Callable[[Any], BatchInput | None],
    **fields: Any,
) -> SROPReport:
    """Measure ``batches`` with ``engine``'s hooks: the one road from batches to a report.

    The statistics start empty; the model runs in eval mode under ``torch.no_grad`` (every
    module's mode restored, see :func:`eval_mode`); for each batch, the input that
    ``input_of(batch)`` finds is recorded (``engine.set_input``) and ``run(batch)`` calls the
    model with the hooks attached; no hook is left behind, even if ``run`` raises.

    Args:
        engine: the engine whose hooks measure.
        batches: the batches, as the model sees them (on its device, transfer hooks run).
        run: calls the model on one batch (``model(x)``, a ``forward=`` callable, or the
            LightningModule's ``validation_step``).
        input_of: the model's input in a batch, for the downscaling and ``unit="input"``
            (``None`` where it has none that can be found; it raises where one is needed).
        fields: :class:`~lightning_srop.report.SROPReport` fields (``model``, ``label``,
            ``epoch``, ``step``).

    Returns:
        The report (a collective when the engine syncs): every measured layer, the
        ``skipped`` ones with their reasons, and the number of batches measured.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
        >>> engine = SROPEngine(net, sync=False)
        >>> report = measure(engine, [torch.randn(2, 1, 8, 8)], net, input_of=lambda b: b)
        >>> report.names, report.num_batches, net.training
        (['0'], 1, True)
    """
    engine.detach()
    engine.reset()
    measured = 0
    try:
        with eval_mode(engine.model), torch.no_grad():
            for batch in batches:
                engine.set_input(input_of(batch))
                with engine.capture():
                    run(batch)
                measured += 1
        return engine.report(num_batches=measured, **fields)
    finally:
        engine.detach()
        engine.reset()
