"""Notices: one warning class, emitted on rank zero only.

Everything the package says about a layer it skips, an output it cannot read or a logger that
cannot show something is a :class:`SROPWarning`, so users can filter all of it at once
(``warnings.filterwarnings("ignore", category=SROPWarning)``); the fused kernel's
``FusedKernelWarning`` is one too.

A leaf: it imports nothing of the package and no Lightning code at import time, so that every
room, :mod:`lightning_srop.functional` included, can use it.
"""

from __future__ import annotations

import os
import warnings

import torch

__all__ = ["SROPWarning", "is_rank_zero", "notice"]


class SROPWarning(UserWarning):
    """A notice about a layer that is skipped or a logger that cannot show something."""


def is_rank_zero() -> bool:
    """Whether this process is the global rank zero (Lightning's rank, else the environment)."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
        else:
            rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    return int(rank) == 0


def notice(message: str, *, stacklevel: int = 3) -> None:
    """Emit ``message`` as a :class:`SROPWarning` on rank zero only."""
    if is_rank_zero():
        warnings.warn(message, SROPWarning, stacklevel=stacklevel)
