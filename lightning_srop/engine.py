"""The hook engine: forward hooks on chosen layers that feed per-layer SROP statistics.

The engine knows nothing about Trainers, loggers or files. It takes a model and one
:class:`~lightning_srop.options.SROPOptions`, resolves the layer choice
(:mod:`lightning_srop.layers`), registers forward hooks only while it is attached, feeds every
captured feature map into the :class:`~lightning_srop.statistics.SROPStatistics` of its layer
under ``torch.no_grad`` (never keeping the activation), and turns the statistics into
:class:`~lightning_srop.report.LayerReport` objects (merged across processes when distributed).
:class:`~lightning_srop.callback.SROPCallback`, :func:`~lightning_srop.profile.profile` and the
command line drive it.

Rules, in one place:

- **Dimensionality**: a 4-D output ``(N, C, H, W)`` is a batch of 2-D maps; a 3-D output
  ``(N, C, L)`` is a batch of 1-D signals when the module is a 1-D conv/pool/norm layer.
  Any other 3-D output (e.g. tokens ``(N, L, D)``) is skipped unless ``ndim=1`` forces 1-D.
  Outputs that are not floating-point tensors (tuples, dicts, integer tensors), of another
  rank, or of ``1 x 1`` maps (no spectrum) are skipped. Every skip is recorded in
  :attr:`SROPEngine.skipped`; it is announced once per layer with a
  :class:`~lightning_srop.notices.SROPWarning` (on rank zero), except ``1 x 1`` maps of
  layers chosen by default (global pools, squeeze-excitation), which are skipped quietly.
- **Layout**: ``layout="NHWC"`` reads 4-D outputs as ``(N, H, W, C)`` (a view, no copy); the
  default ``"auto"`` does so for a ``LayerNorm``/``Linear`` whose output's last dim is its
  feature size (and dim 1 is not), with one notice.
- **Repeated calls**: a module called several times in one batch (torchvision ResNet's shared
  ``relu``) is handled by ``repeated=``: ``"separate"`` (default) keeps one statistic per call
  site, keyed ``name``, ``name#1``, ``name#2``, ... in call order within the batch;
  ``"merge"`` pools all calls into ``name`` (every call's maps count, on purpose);
  ``"first"`` keeps only the first call of each batch.
- **Units**: ``unit="layer"`` reports cycles per pixel of the layer's own grid; ``unit="input"``
  divides by the total downscaling ``s`` of the layer (SPEC.md "Units"), taken per batch from
  the input's spatial size: ``s = L_in / L`` in 1-D and ``s = sqrt(H_in W_in / (H W))`` in 2-D
  (the common ratio when both axes are downscaled alike). The histogram range of a layer is
  fixed by its first batch (``sqrt(2)/2 / s`` in 2-D); later values beyond it fall in the
  last bin.
- **Compiled models**: hooks added after ``torch.compile`` are ignored by compiled code, so
  while an engine whose model holds compiled code is attached, compiled code runs eagerly
  (``torch.compiler.set_stance("force_eager")``, ``compiled="eager"``, the default), or the
  engine raises (``compiled="error"``). The stance is shared by every attached engine of the
  process: the first to attach sets it, the last to detach restores what was there before,
  in whatever order engines attach and detach. Models without compiled code never touch it.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_srop.functional.spectral_rolloff import MAX_RADIUS_1D, MAX_RADIUS_2D
from lightning_srop.layers import ONE_D_LAYER_TYPES, LayerChoice, select_layers
from lightning_srop.notices import notice
from lightning_srop.options import SROPOptions
from lightning_srop.report import LayerMeta, LayerReport
from lightning_srop.statistics import SROPStatistics

__all__ = ["LayerMeta", "SROPEngine", "batch_input"]


def batch_input(batch: Any, input_key: str = "input", *, owner: str = "profile") -> Tensor:
    """The input tensor of a batch: the tensor itself, the first item of a tuple/list, or
    ``batch[input_key]`` of a dict.

    Examples:
        >>> import torch
        >>> x = torch.zeros(2, 3)
        >>> batch_input((x, torch.ones(2))) is x, batch_input({"input": x}) is x
        (True, True)
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        value = batch.get(input_key)
        if isinstance(value, Tensor):
            return value
        raise ValueError(
            f"{owner}: a dict batch needs its input tensor under `input_key`={input_key!r}; "
            f"the batch has keys {list(batch)!r}."
        )
    raise TypeError(
        f"{owner}: expected a batch that is a tensor, a tuple/list whose first item is the input "
        f"tensor, or a dict with the input under `input_key`={input_key!r}; got "
        f"{type(batch).__name__}."
    )


class _EagerStance:
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


def _is_compiled(root: nn.Module) -> bool:
    if getattr(root, "_compiler_ctx", None):  # Lightning's from_compiled
        return True
    return any(type(m).__name__ == "OptimizedModule" for m in root.modules())


class SROPEngine:
    """Forward hooks on chosen layers that accumulate per-layer SROP statistics.

    Use :meth:`capture` (a context manager) around the forward passes to measure, or
    :meth:`attach` / :meth:`detach` when the start and the end lie in different callbacks.
    Each attach is one *batch* for the ``repeated=`` rule. :meth:`reports` computes (and, when
    distributed, merges) the statistics; :meth:`reset` starts over.

    Args:
        model: the root module; layer names are qualified names in it.
        layers: the layer choice (overrides ``options.layers`` when given).
        options: the :class:`~lightning_srop.options.SROPOptions` (default options if None).
        sync: merge the statistics across processes in :meth:`reports` when
            ``torch.distributed`` is initialized (then every process must call it); ``False``
            keeps them local to this process.
        owner: who drives the engine, for messages.
        changes: option fields to change, e.g. ``unit="input"`` (validated by
            :class:`~lightning_srop.options.SROPOptions`).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)).eval()
        >>> engine = SROPEngine(net)
        >>> with engine.capture():
        ...     _ = net(torch.randn(2, 3, 16, 16))
        >>> [(r.name, int(r.stats["count"])) for r in engine.reports()]
        [('0', 8), ('1', 8)]
        >>> engine.num_hooks, len(net[0]._forward_hooks)
        (0, 0)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerChoice = None,
        *,
        options: SROPOptions | None = None,
        sync: bool = True,
        owner: str = "SROPEngine",
        **changes: Any,
    ) -> None:
        if layers is not None:
            changes["layers"] = layers
        if options is None:
            options = SROPOptions(owner=owner, **changes)
        elif changes:
            options = options.replace(owner=owner, **changes)
        self.model = model
        self.options = options
        self.sync = bool(sync)
        self.owner = owner
        self.layers: list[tuple[str, nn.Module]] = []
        self._by_default = options.layers is None
        self._handles: list[RemovableHandle] = []
        self._noticed: set[str] = set()
        self.skipped: dict[str, str] = {}  # layer name -> why it has no statistics
        self.resolve()
        self.metrics: dict[str, SROPStatistics] = {}  # this round's, in first-call order
        self.meta: dict[str, LayerMeta] = {}  # per key, from its first output
        self._pool: dict[str, SROPStatistics] = {}  # every metric made, reused after reset
        self._calls: dict[str, int] = {}
        self._fired: set[str] = set()
        self._input_shape: tuple[int, ...] | None = None
        self._device: torch.device | None = None
        self._holds_stance = False

    # ------------------------------------------------------------------ layer choice
    @property
    def names(self) -> list[str]:
        """Clean names of the chosen layers, in registration order."""
        return [name for name, _ in self.layers]

    def resolve(self) -> None:
        """Resolve the layer choice again (the model may have changed). Not while attached."""
        if self._handles:
            raise RuntimeError(f"{self.owner}: cannot resolve layers while hooks are attached.")
        resolved = select_layers(self.model, self.options.layers, owner=self.owner)
        self.layers = resolved.layers
        for name in resolved.scripted:
            self._notice(
                f"scripted:{name}",
                f"layer {name!r} is, or lies inside, a torch.jit.script'ed module, whose "
                "TorchScript code never runs Python forward hooks; it cannot be measured and is "
                "skipped (choose the module that calls it, or measure the model before "
                "scripting).",
            )

    # ------------------------------------------------------------------ hooks
    @property
    def num_hooks(self) -> int:
        """Number of forward hooks this engine holds right now."""
        return len(self._handles)

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def set_input(self, x: Tensor | Sequence[int] | None) -> None:
        """Record the input of the coming batch (its spatial size gives each layer's
        downscaling, used with ``unit="input"`` and reported)."""
        if isinstance(x, Tensor):
            self._input_shape = tuple(int(s) for s in x.shape)
            self._device = x.device
        elif x is None:
            self._input_shape = None
        else:
            self._input_shape = tuple(int(s) for s in x)

    def attach(self) -> None:
        """Register one forward hook per chosen layer and start a new batch. Idempotent."""
        if self._handles:
            return
        compiled = _is_compiled(self.model)
        if compiled and self.options.compiled == "error":
            raise RuntimeError(
                f"{self.owner}: the model holds torch.compile'd code, whose compiled graphs "
                "ignore forward hooks added after compilation, and `compiled='error'` was set; "
                "pass `compiled='eager'` to run the sampled batches eagerly, or measure the "
                "uncompiled model."
            )
        if compiled and not _EagerStance.available():
            raise RuntimeError(
                f"{self.owner}: the model holds torch.compile'd code, whose compiled graphs "
                "ignore forward hooks added after compilation, and this PyTorch "
                f"({torch.__version__}) has no `torch.compiler.set_stance` to run it eagerly "
                "(PyTorch >= 2.6); measure the uncompiled model."
            )
        self._calls = {}
        try:
            if compiled:
                _EagerStance.acquire()
                self._holds_stance = True
            for name, module in self.layers:
                try:
                    handle = module.register_forward_hook(self._make_hook(name))
                except RuntimeError as err:  # e.g. a ScriptModule refuses hooks
                    self._skip(
                        name, f"layer {name!r} ({type(module).__name__}) takes no hooks ({err})."
                    )
                    continue
                self._handles.append(handle)
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook this engine registered (safe to call any number of times)."""
        handles, self._handles = self._handles, []
        try:
            for handle in handles:
                handle.remove()
        finally:
            if self._holds_stance:
                self._holds_stance = False
                _EagerStance.release()

    @contextlib.contextmanager
    def capture(self, x: Tensor | None = None) -> Iterator[SROPEngine]:
        """Attach the hooks for the duration of the ``with`` block; they are removed on any exit."""
        if x is not None:
            self.set_input(x)
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        @torch.compiler.disable  # type: ignore[misc, untyped-decorator]
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._on_output(name, module, output)

        return hook  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # Hooks, metrics on a device and the stance belong to this process; a copy sent to a
        # spawned process (ddp_spawn) starts detached and empty.
        state = self.__dict__.copy()
        state.update(_handles=[], _holds_stance=False, metrics={}, _pool={}, _device=None, meta={})
        return state

    # ------------------------------------------------------------------ capture
    def _notice(self, key: str, message: str) -> None:
        if key in self._noticed:
            return
        self._noticed.add(key)
        notice(f"{self.owner}: {message}", stacklevel=4)

    def _skip(self, name: str, message: str, *, quiet: bool = False) -> None:
        """Record why layer ``name`` has no statistics; announce it unless ``quiet``."""
        self.skipped.setdefault(name, message)
        if not quiet:
            self._notice(name, message)

    def _channels_last(self, name: str, module: nn.Module, output: Tensor) -> bool:
        choice = self.options.layout_of(name)
        if choice != "auto":
            return choice == "NHWC"
        if output.dim() != 4:
            return False
        features: int | None = None
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            features = int(module.normalized_shape[0])
        elif isinstance(module, nn.Linear):
            features = int(module.out_features)
        if features is None or output.shape[-1] != features or output.shape[1] == features:
            return False
        self._notice(
            f"layout:{name}",
            f"layer {name!r} ({type(module).__name__}) returned shape {tuple(output.shape)}, "
            f"whose last dim is its feature size {features}: read as channels-last (N, H, W, C) "
            f"maps. Pass `layout='NHWC'` (or {{{name!r}: 'NHWC'}}) to say so, or 'NCHW' to "
            "read it as (N, C, H, W).",
        )
        return True

    def _map_ndim(self, name: str, module: nn.Module, output: Tensor) -> int | None:
        dims = output.dim()
        ndim = self.options.ndim
        where = f"layer {name!r} ({type(module).__name__})"
        if ndim is None:
            if dims == 4:
                return 2
            if dims == 3 and isinstance(module, ONE_D_LAYER_TYPES):
                return 1
            if dims == 3:
                self._skip(
                    name,
                    f"{where} returned a 3-D tensor of shape {tuple(output.shape)}, read as "
                    "tokens (N, L, D) without spatial order; it is skipped. Pass `ndim=1` to "
                    "treat 3-D outputs as (N, C, L) signals.",
                )
                return None
        elif dims == ndim + 2:
            return ndim
        expected = (
            "(N, C, H, W) or (N, C, L)"
            if ndim is None
            else ("(N, C, H, W)" if ndim == 2 else "(N, C, L)")
        )
        self._skip(
            name,
            f"{where} returned a tensor of shape {tuple(output.shape)}; expected {expected} "
            "feature maps; it is skipped.",
        )
        return None

    def _on_output(self, name: str, module: nn.Module, output: Any) -> None:
        count = self._calls.get(name, 0)
        self._calls[name] = count + 1
        self._fired.add(name)
        repeated = self.options.repeated
        if count and repeated == "first":
            return
        key = f"{name}#{count}" if count and repeated == "separate" else name
        where = f"layer {name!r} ({type(module).__name__})"
        if not isinstance(output, Tensor):
            self._skip(
                name,
                f"{where} returned a {type(output).__name__}, not a tensor; it is skipped "
                "(hook the submodule that produces the feature maps instead).",
            )
            return
        if not output.is_floating_point():
            self._skip(
                name, f"{where} returned a {output.dtype} tensor, not floating point; skipped."
            )
            return
        layout = "NCHW"
        if output.dim() >= 3 and self._channels_last(name, module, output):
            output = output.movedim(-1, 1)  # a view: spectral_rolloff takes any strides
            layout = "NHWC"
        ndim = self._map_ndim(name, module, output)
        if ndim is None or output.shape[0] == 0:
            return
        map_shape = tuple(int(s) for s in output.shape[-ndim:])
        if all(s == 1 for s in map_shape):
            self._skip(
                name,
                f"{where} returned 1 x 1 maps, which have no spectrum; skipped.",
                quiet=self._by_default,
            )
            return
        downscale = self._downscaling(map_shape)
        scale = 1.0
        if self.options.unit == "input":
            if downscale is None:
                raise RuntimeError(
                    f"{self.owner}: `unit='input'` needs the input's spatial size, but none was "
                    f"recorded before {where} ran (input shape: {self._input_shape}); call "
                    "`set_input(x)` first."
                )
            scale = 1.0 / downscale
        metric = self.metrics.get(key)
        if metric is None:
            metric = self._fresh_metric(key, ndim, scale, None, output.device)
            self.metrics[key] = metric
            self._device = output.device
            if key not in self.meta:
                self.meta[key] = LayerMeta(
                    module_type=type(module).__name__,
                    ndim=ndim,
                    channels=math.prod(int(s) for s in output.shape[1:-ndim]),
                    map_size=map_shape,
                    downscale=downscale,
                    layout=layout,
                )
        elif metric.ndim != ndim:
            self._notice(
                key,
                f"{where} changed from {metric.ndim}-D to {ndim}-D maps "
                f"(shape {tuple(output.shape)}); those outputs are skipped.",
            )
            return
        metric.scale = scale  # the downscaling of this batch (histogram range stays fixed)
        with torch.no_grad():
            metric.update(output.detach())

    def _fresh_metric(
        self,
        key: str,
        ndim: int,
        scale: float,
        max_value: float | None,
        device: torch.device,
    ) -> SROPStatistics:
        """An empty metric for ``key``: last epoch's one, reset, when it fits, else a new one.

        Reusing the metric keeps its states on the device (resetting copies device-side
        defaults; creating a metric copies host tensors to the device, a synchronisation).
        """
        if max_value is None:
            max_value = (MAX_RADIUS_2D if ndim == 2 else MAX_RADIUS_1D) * scale
        with torch.inference_mode(False):
            metric = self._pool.get(key)
            if (
                metric is not None
                and metric.ndim == ndim
                and metric.max_value == max_value
                and metric.hist.device == device
            ):
                metric.reset()
                metric.scale = scale
                return metric
            metric = SROPStatistics(
                self.options.roll_percent,
                ndim=ndim,
                keep_dc=self.options.keep_dc,
                scale=scale,
                num_bins=self.options.num_bins,
                max_value=max_value,
                sync_on_compute=self.sync,
            ).to(device)
        self._pool[key] = metric
        return metric

    def _downscaling(self, map_shape: tuple[int, ...]) -> float | None:
        shape = self._input_shape
        if shape is None or len(shape) < len(map_shape):
            return None
        in_size = shape[-len(map_shape) :]
        return (
            math.sqrt(math.prod(in_size) / math.prod(map_shape))
            if len(map_shape) == 2
            else (in_size[0] / map_shape[0])
        )

    # ------------------------------------------------------------------ results
    def unfired(self) -> list[str]:
        """Chosen layers whose hooks never ran since the last :meth:`reset`."""
        return [name for name, _ in self.layers if name not in self._fired]

    def reset(self) -> None:
        """Forget all statistics (notices and layer metadata are kept per engine).

        The metric objects are kept aside and reused, reset, when their layer runs again, so
        an epoch allocates nothing new on the device and memory stays the same across epochs.
        """
        self.metrics = {}
        self._fired = set()

    def _merge_keys(self) -> None:
        """Give every process the same metrics in the same order (a collective when distributed)."""
        if not self.sync:
            return
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world < 2:
            return
        specs = [
            (k, m.ndim, m.max_value, m.scale, self.meta.get(k)) for k, m in self.metrics.items()
        ]
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, specs)
        merged: dict[str, tuple[int, float, float]] = {}
        for rank_specs in gathered:
            for key, ndim, max_value, scale, meta in rank_specs:
                known = merged.setdefault(key, (ndim, max_value, scale))
                if meta is not None:
                    self.meta.setdefault(key, meta)
                if known[:2] != (ndim, max_value):
                    raise RuntimeError(
                        f"{self.owner}: layer {key!r} has {known[0]}-D maps with histogram range "
                        f"{known[1]:.6g} on one process and {ndim}-D maps with range "
                        f"{max_value:.6g} on another (different input sizes with unit='input'?); "
                        "its statistics cannot be merged."
                    )
        device = self._device
        if device is None:
            backend = torch.distributed.get_backend()
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if backend == "nccl"
                else torch.device("cpu")
            )
        metrics: dict[str, SROPStatistics] = {}
        for key, (ndim, max_value, scale) in merged.items():
            metric = self.metrics.get(key)
            if metric is None:
                metric = self._fresh_metric(key, ndim, scale, max_value, device)
            metrics[key] = metric
        self.metrics = metrics

    def reports(self) -> list[LayerReport]:
        """Compute one :class:`LayerReport` per measured layer key, in first-call order.

        When distributed (and ``sync=True``), this is a collective (every process must call it)
        and every process gets the same merged reports: counts, sums and histograms are added
        over processes, min/max reduced, so the result equals one process measuring all
        processes' batches.
        """
        self._merge_keys()
        return [
            LayerReport.from_metric(key, metric, depth, meta=self.meta.get(key))
            for depth, (key, metric) in enumerate(self.metrics.items())
        ]
