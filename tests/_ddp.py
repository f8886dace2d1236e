"""Helpers of the tests that start real DDP processes (gloo on CPU)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as L
import pytest
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from torch import Tensor

__all__ = ["InputRecorder", "free_port", "run_two_processes", "set_ddp_environment"]


def free_port() -> int:
    """A free TCP port on the loopback interface, for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_ddp_environment(rank: int, world_size: int, port: int) -> None:
    """The environment Lightning's DDP reads in a process started by ``mp.start_processes``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        RANK=str(rank),
    )


def run_two_processes(worker: Callable[..., None], out_dir: str, *, seconds: float) -> None:
    """Spawn ``worker(rank, 2, port, out_dir)`` in two processes and wait for both; kill them
    and fail the test if they do not finish in ``seconds`` (a collective that hangs)."""
    ctx = mp.start_processes(
        worker, args=(2, free_port(), out_dir), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP workers did not finish in {seconds:g} s (a collective that hangs?)")


class InputRecorder(Callback):
    """Keeps a copy of every validation batch's input this process saw."""

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any
    ) -> None:
        self.inputs.append(batch[0].clone())
