"""The one quiet CPU ``Trainer`` of the tests: no progress bar, no model summary, no sanity
check, no checkpoints and no logger unless asked (each test names what it needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L

__all__ = ["quiet_trainer"]


def quiet_trainer(root: Path | str, callbacks: list[Any], **kw: Any) -> L.Trainer:
    """A CPU ``Trainer`` writing under ``root``; ``kw`` adds or overrides Trainer arguments
    (defaults: one device, one epoch, ``logger=False``, no checkpointing, no sanity check)."""
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(callbacks=callbacks, default_root_dir=root, **{**defaults, **kw})
