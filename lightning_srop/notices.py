"""Notices: one warning class, emitted on rank zero only.

Everything the package says about a layer it skips, an output it cannot read or a logger that
cannot show something is a :class:`SROPWarning`, so users can filter all of it at once
(``warnings.filterwarnings("ignore", category=SROPWarning)``); the fused kernel's
``FusedKernelWarning`` is one too.

A leaf: it imports nothing of the package and no Lightning code at import time, so that every
room, :mod:`lightning_srop.functional` included, can use it.
"""

from __future__ import annotations

import contextlib
import os
import sys
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


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Frameworks that call into the package on the user's behalf: a notice points past them.
_CONTEXTLIB = os.path.abspath(contextlib.__file__)
_FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "jsonargparse")


def _framework_dirs() -> tuple[str, ...]:
    dirs = []
    for name in _FRAMEWORKS:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


def _user_frame() -> tuple[int, str] | None:
    """The stacklevel (for a ``warnings.warn`` called in :func:`notice`) and file of the user's
    call: the frame that called the outermost frame of the package, past any framework frames
    in between (``trainer.fit`` runs the callback); None when the package was not called from
    user code."""
    frames = []
    frame = sys._getframe(2)  # the caller of notice(): stacklevel 2
    while frame is not None:
        frames.append(os.path.abspath(frame.f_code.co_filename))
        frame = frame.f_back  # type: ignore[assignment]
    outer = max((i for i, f in enumerate(frames) if f.startswith(_PACKAGE_DIR)), default=None)
    if outer is None:
        return None
    skip = _framework_dirs()
    for index in range(outer + 1, len(frames)):
        path = frames[index]
        if (
            path.startswith(_PACKAGE_DIR)
            or path.startswith(skip)
            or path.startswith("<frozen")
            or path == _CONTEXTLIB  # the `with engine.capture():` exit, on the user's line
        ):
            continue
        return index + 2, path
    return None


def notice(message: str, *, stacklevel: int = 3) -> None:
    """Emit ``message`` as a :class:`SROPWarning` on rank zero only.

    The warning points at the user's call (the line that called ``profile``, ``trainer.fit``,
    ...), not at a line of the package; ``stacklevel`` is the fallback where no such call is
    on the stack. Lightning's warning formatter leaves the category out for any file whose
    path contains "lightning": for such a file the message starts with ``SROPWarning:`` itself,
    so the class always shows in a terminal.
    """
    if not is_rank_zero():
        return
    found = _user_frame()
    level, path = found if found is not None else (stacklevel, "")
    formatter = warnings.formatwarning
    if "lightning" in path and getattr(formatter, "__module__", "").startswith("lightning"):
        message = f"{SROPWarning.__name__}: {message}"
    warnings.warn(message, SROPWarning, stacklevel=level)


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
        >>> said, [str(w.message).split("Demo: ")[-1] for w in caught]
        ([True, False, False], ["layer 'a' skipped, epoch 0"])
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
