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

__all__ = ["Notices", "SROPWarning", "is_rank_zero", "notice"]


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


class Notices:
    """Say each notice once: keyed by what it is about (a layer, a logger class, a reason),
    not by its text, which may change between epochs (counts, shapes).

    Lightning's ``WarningCache`` keys by message text, hence this keyed twin. One instance per
    owner (a callback, an engine); it pickles with its owner, keys said included.

    Args:
        owner: the name in front of every message, e.g. ``"SROPCallback"``.

    Examples:
        >>> import warnings
        >>> say = Notices("Demo")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     said = [say("layer:a", f"layer 'a' skipped, epoch {e}") for e in range(3)]
        >>> said, [str(w.message) for w in caught]
        ([True, False, False], ["Demo: layer 'a' skipped, epoch 0"])
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._said: set[str] = set()

    def __call__(self, key: str, message: str, *, stacklevel: int = 4) -> bool:
        """Emit ``{owner}: {message}`` (rank zero only) unless ``key`` was said already.

        Returns:
            Whether the notice was new.
        """
        if key in self._said:
            return False
        self._said.add(key)
        notice(f"{self.owner}: {message}", stacklevel=stacklevel + 1)
        return True
