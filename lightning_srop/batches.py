"""What a batch holds: the model's input in a tensor, a tuple/list, a dict or a list of images.

The one place that parses batches, for every road that measures: the callback (during
validation and for its baseline), :func:`~lightning_srop.profile.profile` and the command
line. A batch is

- a tensor: the input itself;
- a tuple or list whose first item is the input: ``(x, y)``, or ``(images, targets)`` with a
  list of image tensors as torchvision detection models take;
- a list of 3-D image tensors, when the model declares a list of tensors as its first
  argument (:func:`takes_image_list`);
- a dict (any mapping) with the input under ``input_key``.

Anything else has no input that can be found: measure it with ``forward=`` (a callable
``(model, batch) -> output``), or, in the callback, through ``validation_step``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeAlias

from torch import Tensor, nn

__all__ = ["BatchInput", "batch_input", "find_input", "input_of", "takes_image_list"]

#: A model's input as a batch holds it: a tensor, or a list of image tensors (detection).
BatchInput: TypeAlias = Tensor | list[Tensor]


def takes_image_list(model: nn.Module) -> bool:
    """Whether ``model.forward`` declares a list of tensors as its first argument (torchvision
    detection models: ``forward(images: List[Tensor], targets=None)``).

    Examples:
        >>> from torch import nn
        >>> takes_image_list(nn.Conv2d(1, 1, 1))
        False
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    note = params[0].annotation
    text = note if isinstance(note, str) else repr(note)
    return any(f"{kind}[" in text for kind in ("List", "list", "Sequence")) and "Tensor" in text


def _tensor_list(value: object) -> bool:
    return (
        isinstance(value, (tuple, list))
        and bool(value)
        and all(isinstance(t, Tensor) for t in value)
    )


def batch_input(
    batch: Any, input_key: str = "input", *, owner: str = "profile", image_list: bool = False
) -> BatchInput:
    """The model's input in a batch: the tensor itself, the first item of a tuple/list,
    ``batch[input_key]`` of a dict, or a list of image tensors: the first item of an
    ``(images, targets)`` batch, or the batch itself when ``image_list`` (the model takes a
    list of images, see :func:`takes_image_list`).

    Examples:
        >>> import torch
        >>> x = torch.zeros(2, 3)
        >>> batch_input((x, torch.ones(2))) is x, batch_input({"input": x}) is x
        (True, True)
        >>> images = [torch.zeros(3, 8, 8), torch.zeros(3, 6, 9)]
        >>> len(batch_input((images, [{}, {}]))), len(batch_input(images, image_list=True))
        (2, 2)
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        if image_list and _tensor_list(batch) and all(t.dim() == 3 for t in batch):
            return list(batch)
        if isinstance(batch[0], Tensor):
            return batch[0]
        if _tensor_list(batch[0]):
            return list(batch[0])
    if isinstance(batch, Mapping):
        value = batch.get(input_key)
        if isinstance(value, Tensor):
            return value
        if isinstance(value, (tuple, list)) and _tensor_list(value):
            return list(value)
        keys = list(batch)
        tensors = [k for k in keys if isinstance(batch[k], Tensor)]
        hint = f" (e.g. `input_key`={tensors[0]!r})" if tensors else ""
        raise ValueError(
            f"{owner}: a dict batch needs its input tensor under `input_key`={input_key!r}; "
            f"the batch has keys {keys!r}. Pass the key that holds the input{hint}, or "
            "`forward=lambda model, batch: model(**batch)` to call the model on the whole batch."
        )
    raise TypeError(
        f"{owner}: expected a batch that is a tensor, a tuple/list whose first item is the input "
        f"(a tensor, or a list of image tensors), or a dict with the input under "
        f"`input_key`={input_key!r}; got {type(batch).__name__}. For other batches pass "
        "`forward=` (a callable (model, batch) -> output)."
    )


def find_input(batch: Any, input_key: str, model: nn.Module) -> BatchInput | None:
    """The input of ``batch`` for ``model`` (see :func:`batch_input`), or None where it has
    none that can be found (batches that a ``forward=`` callable consumes whole).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> find_input({"pixel_values": torch.zeros(1)}, "input", nn.Identity()) is None
        True
    """
    try:
        return batch_input(batch, input_key, image_list=takes_image_list(model))
    except (TypeError, ValueError):
        return None


def input_of(
    batch: Any, input_key: str, model: nn.Module, *, required: bool, owner: str
) -> BatchInput | None:
    """The input of ``batch`` for ``model``; where it cannot be found, ``None``, or, when
    ``required`` (``unit="input"`` needs the input's size), the error of :func:`batch_input`
    that says what was expected and which option to pass.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> batch = {"pixel_values": torch.zeros(2, 3, 8, 8)}
        >>> input_of(batch, "input", nn.Identity(), required=False, owner="demo") is None
        True
        >>> input_of(batch, "input", nn.Identity(), required=True, owner="demo")
        Traceback (most recent call last):
        ...
        ValueError: demo: a dict batch needs its input tensor under `input_key`='input'; ...
    """
    if required:
        return batch_input(batch, input_key, owner=owner, image_list=takes_image_list(model))
    return find_input(batch, input_key, model)
