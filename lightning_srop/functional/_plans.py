"""Radius plans: the half-spectrum bins of one map shape sorted by radius, cached per shape
and device under a byte budget (``set_plan_cache_bytes``, or the environment variable
``LIGHTNING_SROP_PLAN_CACHE_BYTES``). Private to :mod:`lightning_srop.functional`."""

from __future__ import annotations

import numbers
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor


@dataclass(frozen=True)
class _RadiusPlan:
    """Half-spectrum bins of one map shape, sorted by radius.

    Attributes:
        order: int64 indices into the flattened ``H x (W // 2 + 1)`` half spectrum.
        radius: radius of each sorted bin, in cycles per pixel (float32 and float64 copies).
        weight: Hermitian multiplicity of each sorted bin, DC included (weight 1).
        weight_no_dc: the same with the DC bin (always first in the order) weighted 0.
    """

    order: Tensor
    radius: dict[torch.dtype, Tensor]
    weight: dict[torch.dtype, Tensor]
    weight_no_dc: dict[torch.dtype, Tensor]

    @property
    def nbytes(self) -> int:
        """Bytes held by the plan's tensors."""
        tensors = [self.order, *self.radius.values(), *self.weight.values()]
        tensors += list(self.weight_no_dc.values())
        return sum(t.numel() * t.element_size() for t in tensors)


#: Default bound on the bytes the cache of radius plans holds (all shapes and devices together).
DEFAULT_PLAN_CACHE_BYTES: Final[int] = 32 * 2**20
_PLAN_CACHE_ENV: Final[str] = "LIGHTNING_SROP_PLAN_CACHE_BYTES"


def _budget_from_env() -> int:
    value = os.environ.get(_PLAN_CACHE_ENV)
    if value is None:
        return DEFAULT_PLAN_CACHE_BYTES
    try:
        budget = int(value)
    except ValueError:
        raise ValueError(
            f"{_PLAN_CACHE_ENV}: expected a non-negative int (bytes), got {value!r}."
        ) from None
    if budget < 0:
        raise ValueError(f"{_PLAN_CACHE_ENV}: expected a non-negative int (bytes), got {value!r}.")
    return budget


class _PlanCache:
    """Least-recently-used radius plans, bounded by a byte budget.

    Plans of many different map sizes (e.g. 1-D signals of varying length) would otherwise
    accumulate without bound. A plan larger than the whole budget is computed and returned but
    not kept. Thread-safe: hooks may run in several threads.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.nbytes = 0
        self._plans: OrderedDict[tuple[int, int, str], _RadiusPlan] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: tuple[int, int, str]) -> _RadiusPlan | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, key: tuple[int, int, str], plan: _RadiusPlan) -> None:
        size = plan.nbytes
        with self._lock:
            if size > self.budget or key in self._plans:
                return
            self._plans[key] = plan
            self.nbytes += size
            self._shrink()

    def set_budget(self, budget: int) -> None:
        with self._lock:
            self.budget = budget
            self._shrink()

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
            self.nbytes = 0

    def _shrink(self) -> None:
        while self.nbytes > self.budget and self._plans:
            _, evicted = self._plans.popitem(last=False)
            self.nbytes -= evicted.nbytes


_PLAN_CACHE = _PlanCache(_budget_from_env())


def set_plan_cache_bytes(budget: int) -> None:
    """Bound the memory of the radius-plan cache (default 32 MiB, all devices together).

    Every map size (and device) seen gets a cached *radius plan*: the half-spectrum bins sorted
    by radius, about 44 bytes per bin (a 224 x 224 map: 1.1 MB). The least recently used plans
    are evicted beyond the budget; ``0`` disables caching. The environment variable
    ``LIGHTNING_SROP_PLAN_CACHE_BYTES`` sets the budget at import.

    Args:
        budget: the bound in bytes, a non-negative int.

    Raises:
        ValueError: ``budget`` is negative or not an int.
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0:
        raise ValueError(
            f"set_plan_cache_bytes: expected `budget` to be a non-negative int, got {budget!r}."
        )
    _PLAN_CACHE.set_budget(int(budget))


def plan_cache_bytes() -> int:
    """Bytes currently held by the radius-plan cache (see :func:`set_plan_cache_bytes`)."""
    return _PLAN_CACHE.nbytes


def _radius_plan(height: int, width: int, device: torch.device) -> _RadiusPlan:
    """Return (and cache per device, least recently used out first) the plan of ``H x W``."""
    key = (height, width, str(device))
    plan = _PLAN_CACHE.get(key)
    if plan is not None:
        return plan
    plan = _build_radius_plan(height, width, device)
    _PLAN_CACHE.put(key, plan)
    return plan


def _build_radius_plan(height: int, width: int, device: torch.device) -> _RadiusPlan:
    """The radius plan of ``height x width`` maps on ``device``."""
    half = width // 2 + 1
    k = torch.arange(height, dtype=torch.int64)
    k = torch.minimum(k, height - k)  # folded |f_y| * H
    l_idx = torch.arange(half, dtype=torch.int64)  # |f_x| * W, already in [0, W/2]
    # r^2 * H^2 * W^2 = k^2 W^2 + l^2 H^2, an exact integer key.
    key_grid = (k[:, None] ** 2) * width**2 + (l_idx[None, :] ** 2) * height**2
    flat_key = key_grid.reshape(-1)
    order = torch.sort(flat_key, stable=True).indices
    radius64 = flat_key[order].to(torch.float64).sqrt() / (height * width)
    weight_grid = torch.full((height, half), 2.0, dtype=torch.float64)
    weight_grid[:, 0] = 1.0
    if width % 2 == 0:
        weight_grid[:, -1] = 1.0
    weight64 = weight_grid.reshape(-1)[order]
    weight_no_dc64 = weight64.clone()
    weight_no_dc64[0] = 0.0  # the DC bin has key 0, so it is first in the stable order
    dtypes = (torch.float32, torch.float64)
    plan = _RadiusPlan(
        order=order.to(device),
        radius={dt: radius64.to(device=device, dtype=dt) for dt in dtypes},
        weight={dt: weight64.to(device=device, dtype=dt) for dt in dtypes},
        weight_no_dc={dt: weight_no_dc64.to(device=device, dtype=dt) for dt in dtypes},
    )
    return plan
