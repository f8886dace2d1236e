"""Helpers of the tests that start real DDP processes (gloo on CPU)."""

from __future__ import annotations

import os
import socket
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

__all__ = ["InputRecorder", "free_port", "set_ddp_environment"]


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


class InputRecorder(Callback):
    """Keeps a copy of every validation batch's input this process saw."""

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any
    ) -> None:
        self.inputs.append(batch[0].clone())
