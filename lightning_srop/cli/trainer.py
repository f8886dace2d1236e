"""``profile``'s measurement runs: on one device (:func:`~lightning_srop.profile.profile`) or
through Lightning's ``Trainer.validate`` with an :class:`~lightning_srop.callback.SROPCallback`
(several devices or nodes, Lightning's strategies)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_srop.cli.parser import (
    PROG,
    Profile,
    _one_line,
    _Usage,
)
from lightning_srop.options import SROPOptions
from lightning_srop.report import SROPReport

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------------------------------
# profile: one device (profile) or a Lightning Trainer


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise _Usage(f"--device {name!r}: {_one_line(str(err))}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _Usage(f"--device {name!r}: CUDA is not available here; use --device cpu.")
    return device


def _counted(batches: Iterable[Any], input_key: str, counter: list[int]) -> Iterator[Any]:
    from lightning_srop.batches import batch_input

    for batch in batches:
        counter[0] += len(batch_input(batch, input_key, owner=PROG))
        yield batch


def _profile_one_device(
    model: nn.Module,
    dataset: Dataset[Any],
    options: SROPOptions,
    args: Profile,
) -> tuple[SROPReport, int, str]:
    import torch

    from lightning_srop.profile import profile

    device = _device(args.device)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    counter = [0]
    batches = _counted(loader, options.input_key, counter)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast or "")
    report = profile(model, batches, options=options, device=device, autocast=dtype)
    return report, counter[0], str(device)


class _Data(LightningDataModule):
    """The data of a Trainer run: each sample exactly once over all processes (no padding
    duplicates, unlike Lightning's default distributed sampler)."""

    def __init__(self, dataset: Dataset[Any], batch_size: int, workers: int) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers

    def val_dataloader(self) -> DataLoader[Any]:
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                self.dataset,  # type: ignore[arg-type]
                num_replicas=self.trainer.world_size,
                rank=self.trainer.global_rank,
                shuffle=False,
            )
        return DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers
        )


class _Measured(LightningModule):
    """A LightningModule whose ``validation_step`` calls ``model`` on the batch's input.

    The model is held as ``_forward_module``, a wrapper name that layer names leave out, so
    layers keep the names ``profile(model, ...)`` gives them (``layer1.0.conv1``).
    """

    def __init__(self, model: nn.Module, input_key: str) -> None:
        super().__init__()
        self._forward_module = model
        self.input_key = input_key

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        from lightning_srop.batches import batch_input

        self._forward_module(batch_input(batch, self.input_key, owner=PROG))


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's info lines and its notices that do not apply to a one-off measurement
    silenced for the duration of the run only: warning filters and log levels come back as
    they were."""
    from lightning_srop.notices import SROPWarning

    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*no logger is attached.*", category=SROPWarning
        )
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # Lightning vs torch
        try:
            for logger in loggers:
                logger.setLevel(logging.WARNING)
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _profile_trainer(
    model: nn.Module,
    dataset: Dataset[Any],
    options: SROPOptions,
    args: Profile,
) -> tuple[SROPReport | None, int, str]:
    from lightning.pytorch import Trainer

    from lightning_srop.callback import SROPCallback

    callback = SROPCallback(options=options, log_histograms=False, log_figure=False)
    precision = {"bf16": "bf16-mixed", "fp16": "16-mixed"}.get(args.autocast or "", "32-true")
    with _quiet_lightning():
        trainer = Trainer(
            accelerator=args.accelerator,
            devices=args.devices,
            num_nodes=args.num_nodes,
            strategy=args.strategy or "auto",
            precision=precision,  # type: ignore[arg-type]
            callbacks=[callback],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            use_distributed_sampler=False,  # the data module's sampler measures each sample once
            limit_val_batches=options.num_batches if options.num_batches is not None else 1.0,
        )
        module = _Measured(model, options.input_key)
        data = _Data(dataset, args.batch_size, args.workers)
        trainer.validate(module, datamodule=data, verbose=False)
    if not trainer.is_global_zero:
        return None, 0, ""
    report = callback.last_report
    assert report is not None, "SROPCallback measured nothing"
    world = trainer.world_size
    n = len(dataset)  # type: ignore[arg-type]
    per_rank = [len(range(rank, n, world)) for rank in range(world)]
    limit = None if options.num_batches is None else options.num_batches * args.batch_size
    counts = [p if limit is None else min(p, limit) for p in per_rank]
    images = sum(counts)
    batches = sum(math.ceil(c / args.batch_size) for c in counts)
    report = dataclasses.replace(report, epoch=None, step=None, num_batches=batches)
    where = f"{world} process{'es' if world > 1 else ''} ({trainer.strategy.__class__.__name__})"
    return report, images, where
