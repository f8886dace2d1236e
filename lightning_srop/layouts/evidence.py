"""Evidence: what one forward pass has shown about grids, lengths and token order (grids read
so far, the input's grid and its downscalings, modules that reorder tokens, Hiera's unrolled
order), which the layout rules read."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_srop.layouts.readings import Reading


class Evidence:
    """What the forward passes have shown: grids, lengths, channel counts, and the reading of
    each tensor read in the current pass (so a module can keep its input's reading).

    Examples:
        >>> import torch
        >>> ev = Evidence()
        >>> ev.start_pass((2, 3, 32, 32), (32, 32))
        >>> (8, 8) in ev.derived_grids(), ev.grid_strength((8, 8))
        (True, 1)
    """

    def __init__(self) -> None:
        self.grids: set[tuple[int, int]] = set()  # read 2-D grids (strong evidence)
        self.lengths: set[int] = set()  # read 1-D lengths
        self.channels_2d: set[int] = set()  # channel counts of read 2-D maps
        self.token_counts: set[int] = set()  # token counts read over a grid
        self.batch: int | None = None
        self.input_grid: tuple[int, int] | None = None
        self.reordered: str = ""  # a module seen to reorder tokens: their order is not proven
        # tokens of a known reordering (timm Hiera's Unroll): count -> (grid, position of each)
        self.orders: dict[int, tuple[tuple[int, int], tuple[int, ...]]] = {}
        self.version = 0  # grows with every new fact: refusals for lack of evidence are retried
        self._derived: frozenset[tuple[int, int]] = frozenset()
        self._seen: dict[int, tuple[weakref.ref[Tensor], tuple[int, ...], Reading]] = {}

    def start_pass(self, input_shape: Sequence[int] | None, spatial: Sequence[int] | None) -> None:
        """A new forward pass: forget tensor readings, record the input's batch and grid."""
        self._seen = {}
        self.batch = int(input_shape[0]) if input_shape else None
        grid = (int(spatial[0]), int(spatial[1])) if spatial and len(spatial) == 2 else None
        if grid != self.input_grid:
            self.input_grid = grid
            self._derived = frozenset(_downscaled(grid)) if grid else frozenset()
            self.version += 1

    def derived_grids(self) -> frozenset[tuple[int, int]]:
        """The input's grid divided by integers (floor and ceil): where patches could lie."""
        return self._derived

    def grid_strength(self, grid: tuple[int, int]) -> int:
        """2: a grid read in this model; 1: an integer downscaling of the input; 0: neither."""
        if grid in self.grids:
            return 2
        return 1 if grid in self._derived else 0

    def add_grid(self, grid: tuple[int, int]) -> None:
        if grid not in self.grids:
            self.grids.add(grid)
            self.version += 1

    def note(self, tensor: Tensor, reading: Reading) -> None:
        """Record that ``tensor`` was read as ``reading`` (and the grid or length it shows)."""
        self._seen[id(tensor)] = (weakref.ref(tensor), tuple(tensor.shape), reading)
        shape = tuple(int(s) for s in reading.maps(tensor).shape)
        if reading.layout == "tokens" and int(tensor.shape[1]) not in self.token_counts:
            self.token_counts.add(int(tensor.shape[1]))
            self.version += 1
        if reading.ndim == 2:
            self.add_grid((shape[-2], shape[-1]))
            if shape[1] not in self.channels_2d:
                self.channels_2d.add(shape[1])
                self.version += 1
        elif shape[-1] not in self.lengths:
            self.lengths.add(shape[-1])
            self.version += 1

    def check_reorder(
        self, name: str, inputs: Sequence[Any], tensor: Tensor, module: nn.Module | None = None
    ) -> None:
        """Record ``name`` if it returned its input's tokens in another order (timm Hiera's
        ``Unroll``): token readings inferred after it are no longer proven row-major, except
        where the family is known (:func:`_hiera_order`)."""
        first = next((x for x in inputs if isinstance(x, Tensor)), None)
        if (
            self.reordered
            or first is None
            or first is tensor
            or tensor.dim() != 3
            or first.shape != tensor.shape
            or not tensor.is_floating_point()
            or first.dtype != tensor.dtype
        ):
            return
        if not torch.allclose(first.sum(1), tensor.sum(1), rtol=1e-5, atol=1e-6):
            return
        if torch.equal(first, tensor):
            return
        if torch.equal(first.sort(dim=1).values, tensor.sort(dim=1).values):
            self.reordered = name
            self.version += 1
            if module is not None:
                self._known_order(module, int(tensor.shape[1]))

    def _known_order(self, module: nn.Module, count: int) -> None:
        """Where each token of timm Hiera's ``Unroll`` lies on the patch grid: the module run
        on the tokens' own row-major indices (it only moves tokens, whatever they hold)."""
        size = getattr(module, "size", None)
        if type(module).__module__ != "timm.models.hiera" or type(module).__name__ != "Unroll":
            return
        if not (isinstance(size, list) and len(size) == 2 and size[0] * size[1] == count):
            return
        index = torch.arange(count, dtype=torch.float64).view(1, count, 1)
        with torch.no_grad():
            moved = module(index).reshape(-1)
        self.orders[count] = ((int(size[0]), int(size[1])), tuple(int(i) for i in moved.tolist()))

    def reading_of(self, tensor: Any) -> Reading | None:
        """The reading of ``tensor`` if it was read earlier in this pass."""
        if not isinstance(tensor, Tensor):
            return None
        entry = self._seen.get(id(tensor))
        if entry is None or entry[0]() is not tensor or entry[1] != tuple(tensor.shape):
            return None
        return entry[2]


def _downscaled(grid: tuple[int, int]) -> set[tuple[int, int]]:
    h, w = grid
    out: set[tuple[int, int]] = set()
    for s in range(1, max(h, w) + 1):
        out.add((h // s, w // s))
        out.add((-(-h // s), -(-w // s)))
    return {g for g in out if g[0] > 0 and g[1] > 0}


def _hiera_order(
    module: nn.Module, count: int, evidence: Evidence
) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    """The grid and token positions of a timm Hiera block's ``count`` unrolled tokens: those
    of the ``Unroll`` (:meth:`Evidence._known_order`), halved by each q-pooling, which keeps
    the first of every ``4`` contiguous quarters (``x.view(B, 4, -1, C).max(1)``): token ``j``
    pools tokens ``j + k * count`` (``k < 4``), whose positions share one 2 x 2 cell. None
    where the module is no Hiera block or the positions do not agree."""
    if type(module).__module__ != "timm.models.hiera" or not evidence.orders:
        return None
    (h, w), order = next(iter(evidence.orders.values()))
    positions = [(p // w, p % w) for p in order]
    while len(positions) > count:
        quarter = len(positions) // 4
        if quarter * 4 != len(positions) or h % 2 or w % 2:
            return None
        pooled = []
        for j in range(quarter):
            cells = {
                (positions[j + k * quarter][0] // 2, positions[j + k * quarter][1] // 2)
                for k in range(4)
            }
            if len(cells) != 1:
                return None
            pooled.append(cells.pop())
        positions, h, w = pooled, h // 2, w // 2
    if len(positions) != count:
        return None
    return (h, w), tuple(r * w + c for r, c in positions)
