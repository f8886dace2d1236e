"""``torch.compile`` and forward hooks: hooks added after compilation are ignored by compiled
graphs, so while an engine is attached to a model holding compiled code, that code runs eagerly
(``torch.compiler.set_stance("force_eager")``), shared by every attached engine of the process.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["EagerStance", "is_compiled"]


class EagerStance:
    """The process-wide ``force_eager`` stance, shared by every attached engine.

    Engines attach and detach in any order (two callbacks detach in the order they attached,
    not in reverse), so a stack of context managers would restore the wrong stance; a count
    does not: the first holder sets the stance, the last one restores the one saved.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _holders: ClassVar[int] = 0
    _context: ClassVar[contextlib.AbstractContextManager[Any] | None] = None

    @staticmethod
    def available() -> bool:
        return getattr(torch.compiler, "set_stance", None) is not None

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            if cls._holders == 0:
                context: contextlib.AbstractContextManager[Any] = torch.compiler.set_stance(
                    "force_eager"
                )
                context.__enter__()
                cls._context = context
            cls._holders += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._holders -= 1
            if cls._holders == 0:
                context, cls._context = cls._context, None
                if context is not None:
                    context.__exit__(None, None, None)


def is_compiled(root: nn.Module) -> bool:
    """Whether ``root`` holds ``torch.compile``'d code (Lightning's ``from_compiled`` or an
    ``OptimizedModule`` anywhere inside)."""
    if getattr(root, "_compiler_ctx", None):  # Lightning's from_compiled
        return True
    return any(type(m).__name__ == "OptimizedModule" for m in root.modules())
