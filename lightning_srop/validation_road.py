"""The validation road outside validation: how the callback's baseline (and its check of the
settings before training) runs validation batches exactly as Lightning's evaluation loop does.

- :func:`validation_batches`: the validation dataloaders' batches in validation's order and
  limits, moved by Lightning's own transfer path (DataModule and LightningModule hooks, in
  Lightning's order);
- :func:`run_validation_step`: the LightningModule's own ``validation_step`` through the
  strategy (or a ``forward=`` callable), leaving no trace (:func:`untouched`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature
from torchmetrics import Metric

__all__ = ["run_validation_step", "untouched", "validation_batches"]


def validation_batches(
    trainer: Trainer, pl_module: LightningModule
) -> Iterator[tuple[Any, int, int]] | None:
    """``(batch, batch_idx, dataloader_idx)`` of the validation dataloaders, in
    validation's order and limits, each batch moved by Lightning's own transfer path
    (the precision plugin's input conversion, then the DataModule's or the
    LightningModule's ``on_before_batch_transfer``, ``transfer_batch_to_device`` and
    ``on_after_batch_transfer``, whichever Lightning picks); ``None`` without dataloaders."""
    loaders: Any = trainer.val_dataloaders
    if loaders is None:
        return None
    if not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    limits = list(trainer.num_val_batches or [])

    def road() -> Iterator[tuple[Any, int, int]]:
        for index, loader in enumerate(loaders):
            limit = limits[index] if index < len(limits) else math.inf
            for position, batch in enumerate(loader):
                if position >= limit:
                    break
                batch = trainer.precision_plugin.convert_input(batch)
                # The LightningModule's dispatcher to the DataModule's or its own hook, as
                # Lightning's evaluation loop calls it (no public twin exists).
                batch = pl_module._on_before_batch_transfer(batch, dataloader_idx=index)
                batch = trainer.strategy.batch_to_device(batch, dataloader_idx=index)
                yield batch, position, index

    return road()


def run_validation_step(
    trainer: Trainer,
    pl_module: LightningModule,
    item: tuple[Any, int, int],
    forward: Callable[[LightningModule, Any], Any] | None = None,
) -> None:
    """Run the model on one batch before training as validation runs it: ``forward=``
    when given, else the LightningModule's ``validation_step`` through the strategy
    (under DDP, the wrapped model), with ``self.log``/``self.log_dict`` silenced and
    everything else it changes put back (:func:`untouched`)."""
    batch, batch_idx, dataloader_idx = item
    if forward is not None:
        with trainer.precision_plugin.val_step_context():
            forward(pl_module, batch)
        return
    args: list[Any] = [batch]
    if is_param_in_hook_signature(pl_module.validation_step, "batch_idx", min_args=2):
        args.append(batch_idx)
    if len(trainer.num_val_batches or []) > 1:
        args.append(dataloader_idx)
    with untouched(pl_module):
        trainer.strategy.validation_step(*args)


@contextlib.contextmanager
def untouched(pl_module: LightningModule) -> Iterator[None]:
    """Run the LightningModule's own ``validation_step`` outside validation without a trace:
    ``self.log``/``self.log_dict`` do nothing, and what a step changes is put back afterwards:
    the states of its torchmetrics ``Metric`` modules and the contents of its public list,
    dict and set attributes (outputs gathered for ``on_validation_epoch_end``)."""
    metrics = [m for m in pl_module.modules() if isinstance(m, Metric)]
    saved_metrics = [copy.deepcopy(_metric_state(m)) for m in metrics]
    containers = {
        name: (value, copy.copy(value))
        for name, value in vars(pl_module).items()
        if not name.startswith("_") and isinstance(value, (list, dict, set))
    }
    pl_module.log = _silent  # type: ignore[method-assign]
    pl_module.log_dict = _silent  # type: ignore[method-assign]
    try:
        yield
    finally:
        del pl_module.log, pl_module.log_dict  # the class's methods again
        for metric, state in zip(metrics, saved_metrics, strict=True):
            for attr, value in state.items():
                setattr(metric, attr, value)
        for name, (value, saved) in containers.items():
            setattr(pl_module, name, value)  # the same object, even if the step rebound it
            if isinstance(value, list):
                value[:] = saved
            else:
                value.clear()
                value.update(saved)  # type: ignore[arg-type]


def _silent(*args: Any, **kwargs: Any) -> None:
    """``self.log`` while the baseline runs ``validation_step``."""


def _metric_state(metric: Metric) -> dict[str, Any]:
    """A torchmetrics ``Metric``'s accumulated state: its declared states and the bookkeeping
    of ``update``/``compute`` (update count, cached result)."""
    state = dict(metric.metric_state)
    for attr in ("_update_count", "_computed", "_forward_cache"):
        if hasattr(metric, attr):
            state[attr] = getattr(metric, attr)
    return state
