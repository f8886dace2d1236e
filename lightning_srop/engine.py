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

- **What an output is**: :mod:`lightning_srop.layouts` decides, once per layer and output
  shape, whether an output is 2-D maps (``NCHW``, ``NHWC``, token grids) or 1-D signals
  (``NCL``, ``NLC``), from the user's ``layout=``/``grid=``/``prefix_tokens=``/``ndim=``, the
  module's type and input, and what the forward pass has shown. Tuples and mappings are read
  through their first tensor. While a layer's reading is still open, light hooks on the
  other modules collect that evidence (grids, lengths, the reading of each module's output);
  once every reading is decided they are no longer attached. An inferred reading is stated
  in one notice per batch that inferred something and kept in the layer's metadata.
- **Skips**: outputs that are not floating-point tensors, refused readings (attention maps,
  tensors whose axes cannot be told), ``1 x 1`` maps (no spectrum) and, among the default
  choice, ECA-style ``Conv1d`` over a pooled channel vector are skipped. Every skip is
  recorded in :attr:`SROPEngine.skipped`; it is announced once per layer with a
  :class:`~lightning_srop.notices.SROPWarning` (on rank zero), except the quiet skips of
  layers chosen by default (``1 x 1`` maps, channel attention).
- **Repeated calls** (``repeated=``) and **units** (``unit=``, ``input_layout=``) follow
  :class:`~lightning_srop.options.SROPOptions`. With ``unit="input"`` the total downscaling
  ``s`` of a layer is taken per batch from the input's own grid or length; a layer finer than
  the input is skipped; the histogram range ``max_radius / 2**j`` (``2**j <= s``) widens
  exactly (a power of two) when a later batch or process has a smaller ``s``.
- **Compiled models**: see :mod:`lightning_srop.compiled` (``compiled=``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_srop.batches import BatchInput
from lightning_srop.compiled import EagerStance, is_compiled
from lightning_srop.functional.spectral_rolloff import MAX_RADIUS_1D, MAX_RADIUS_2D
from lightning_srop.layers import LayerChoice, select_layers
from lightning_srop.layouts import (
    CHANNELS_FIRST_TYPES,
    Evidence,
    Reading,
    Refusal,
    downscale_exponent,
    downscaling,
    input_spatial,
    int_sizes,
    read_layout,
    unwrap_output,
)
from lightning_srop.notices import Notices, notice
from lightning_srop.options import SROPOptions
from lightning_srop.report import LayerMeta, LayerReport, SROPReport
from lightning_srop.statistics import SROPStatistics

__all__ = ["LayerMeta", "SROPEngine"]


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
        self._notices = Notices(owner)  # each notice once per engine, by its key
        self.skipped: dict[str, str] = {}  # layer name -> why it has no statistics
        self.resolve()
        self.metrics: dict[str, SROPStatistics] = {}  # this round's, in first-call order
        self.meta: dict[str, LayerMeta] = {}  # per key, from its first output
        self._pool: dict[str, SROPStatistics] = {}  # every metric made, reused after reset
        self._calls: dict[str, int] = {}
        self._fired: set[str] = set()
        self._input_shape: tuple[int, ...] | None = None
        self._spatial: tuple[int, ...] | None = None  # the input's grid or length
        self._spatial_why = "no input was recorded (call `set_input(x)` first)"
        self._device: torch.device | None = None
        self._holds_stance = False
        # Layout decisions, once per (layer, where in the output, shape); see lightning_srop.layouts.
        self.evidence = Evidence()
        self._readings: dict[
            tuple[bool, str, str, tuple[int, ...]], tuple[Reading | Refusal, int]
        ] = {}
        self._evidence_handles: list[RemovableHandle] = []
        self._want_evidence = False
        self._missed = False  # a reading was decided (not cached) in this batch
        self._inferred: list[str] = []  # readings inferred in this batch, announced at detach

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
        self._channel_attention = resolved.channel_attention
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
        """Number of forward hooks this engine holds right now (evidence hooks included)."""
        return len(self._handles) + len(self._evidence_handles)

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def set_input(self, x: BatchInput | Sequence[int] | None) -> None:
        """Record the input of the coming batch: its batch size and its own grid or length
        (``input_layout=``) give each layer's downscaling, used with ``unit="input"`` and
        reported. A list of images (detection) gives the batch size only: such models resize
        their images inside."""
        self._spatial, self._spatial_why = None, "no input was recorded (call `set_input(x)` first)"
        if isinstance(x, list) and x and all(isinstance(t, Tensor) for t in x):
            self._input_shape = (len(x),)
            self._device = x[0].device
            self._spatial_why = (
                "the input is a list of images, which the model resizes inside, so their size "
                "is not the one its layers see"
            )
            return
        if isinstance(x, Tensor):
            self._input_shape = tuple(int(s) for s in x.shape)
            self._device = x.device
        elif x is None:
            self._input_shape = None
            return
        else:
            self._input_shape = tuple(int(s) for s in x)
        self._spatial, why = input_spatial(self._input_shape, self.options.input_layout)
        self._spatial_why = why or self._spatial_why

    def attach(self) -> None:
        """Register one forward hook per chosen layer and start a new batch. Idempotent."""
        if self._handles:
            return
        compiled = is_compiled(self.model)
        if compiled and self.options.compiled == "error":
            raise RuntimeError(
                f"{self.owner}: the model holds torch.compile'd code, whose compiled graphs "
                "ignore forward hooks added after compilation, and `compiled='error'` was set; "
                "pass `compiled='eager'` to run the sampled batches eagerly, or measure the "
                "uncompiled model."
            )
        if compiled and not EagerStance.available():
            raise RuntimeError(
                f"{self.owner}: the model holds torch.compile'd code, whose compiled graphs "
                "ignore forward hooks added after compilation, and this PyTorch "
                f"({torch.__version__}) has no `torch.compiler.set_stance` to run it eagerly "
                "(PyTorch >= 2.6); measure the uncompiled model."
            )
        self._calls = {}
        self._missed = False
        self.evidence.start_pass(self._input_shape, self._spatial)
        try:
            if compiled:
                EagerStance.acquire()
                self._holds_stance = True
            if self._want_evidence or not self._readings:
                self._attach_evidence()
            for name, module in self.layers:
                try:
                    handle = module.register_forward_hook(self._make_hook(name), with_kwargs=True)
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
        handles += self._evidence_handles
        self._evidence_handles = []
        try:
            for handle in handles:
                handle.remove()
        finally:
            if self._holds_stance:
                self._holds_stance = False
                EagerStance.release()
            if handles:  # the end of a batch
                self._want_evidence = self._missed
                self._announce_inferred()

    def _attach_evidence(self) -> None:
        """Light hooks on the modules that are not measured, which only record how their
        outputs read (for the readings of measured layers that depend on them)."""
        chosen = {id(module) for _, module in self.layers}
        if all(isinstance(m, CHANNELS_FIRST_TYPES) for _, m in self.layers):
            return  # every reading is fixed by the module's type
        for raw, module in self.model.named_modules():
            if raw and id(module) not in chosen:
                try:
                    handle = module.register_forward_hook(
                        self._make_evidence_hook(raw), with_kwargs=True
                    )
                except RuntimeError:  # TorchScript refuses hooks (and never runs them)
                    continue
                self._evidence_handles.append(handle)

    def _announce_inferred(self) -> None:
        if not self._inferred:
            return
        listed, self._inferred = self._inferred, []
        shown = "; ".join(listed[:12]) + (
            f"; ... ({len(listed)} in all)" if len(listed) > 12 else ""
        )
        notice(
            f"{self.owner}: read {len(listed)} layer output(s) by inference: {shown}. Pass "
            "`layout=` (and `grid=`, `prefix_tokens=` for tokens), for all layers or as "
            "{name: value}, to state it.",
            stacklevel=4,
        )

    @contextlib.contextmanager
    def capture(self, x: BatchInput | None = None) -> Iterator[SROPEngine]:
        """Attach the hooks for the duration of the ``with`` block; they are removed on any exit."""
        if x is not None:
            self.set_input(x)
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any, Any], None]:
        @torch.compiler.disable  # type: ignore[misc, untyped-decorator]
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            self._on_output(name, module, args, kwargs, output)

        return hook  # type: ignore[no-any-return]

    def _make_evidence_hook(self, raw: str) -> Callable[[nn.Module, Any, Any, Any], None]:
        @torch.compiler.disable  # type: ignore[misc, untyped-decorator]
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            tensor, source = unwrap_output(output)
            if tensor is None or tensor.dim() not in (3, 4) or not tensor.is_floating_point():
                return
            reading = self._reading(
                raw, module, tensor, source, args, kwargs, output, measured=False
            )
            if isinstance(reading, Reading):
                self.evidence.note(tensor, reading)

        return hook  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # Hooks, metrics on a device and the stance belong to this process; a copy sent to a
        # spawned process (ddp_spawn) starts detached and empty.
        state = self.__dict__.copy()
        state.update(
            _handles=[],
            _evidence_handles=[],
            _holds_stance=False,
            metrics={},
            _pool={},
            _device=None,
            meta={},
            evidence=Evidence(),
            _readings={},
        )
        return state

    # ------------------------------------------------------------------ capture
    def _notice(self, key: str, message: str) -> None:
        self._notices(key, message)

    def _skip(self, name: str, message: str, *, quiet: bool = False) -> None:
        """Record why layer ``name`` has no statistics; announce it unless ``quiet``."""
        self.skipped.setdefault(name, message)
        if not quiet:
            self._notice(name, message)

    def _reading(
        self,
        name: str,
        module: nn.Module,
        tensor: Tensor,
        source: str,
        args: Any,
        kwargs: Any,
        output: Any,
        *,
        measured: bool = True,
    ) -> Reading | Refusal:
        """The reading of this output, decided once per layer and shape (see
        :mod:`lightning_srop.layouts`). Modules that are not ``measured`` (evidence only) are
        read with default options and never announced."""
        cache_key = (measured, name, source, tuple(tensor.shape))
        cached = self._readings.get(cache_key)
        version = self.evidence.version
        if cached is not None and (
            isinstance(cached[0], Reading) or cached[0].final or cached[1] == version
        ):
            return cached[0]
        self._missed = True
        layout, for_layer = self.options.layout_of(name) if measured else ("auto", False)
        grid, prefix = self.options.grid_of(name) if measured else (None, None)
        sizes = int_sizes((*args, *(kwargs or {}).values()))
        if isinstance(output, (tuple, list)):
            sizes += int_sizes(output[1:])
        reading = read_layout(
            name,
            module,
            tensor,
            source=source,
            explicit=layout,
            explicit_for_layer=for_layer,
            grid=grid,
            prefix_tokens=prefix,
            ndim=self.options.ndim if measured else None,
            evidence=self.evidence,
            inputs=args,
            sizes=sizes,
        )
        self._readings[cache_key] = (reading, version)
        if measured and isinstance(reading, Reading) and reading.inferred:
            self._inferred.append(f"{name!r} as {reading.describe()} ({reading.inferred})")
        if measured and isinstance(reading, Reading) and reading.note:
            self._notice(f"note:{name}", reading.note)
        return reading

    def _on_output(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        count = self._calls.get(name, 0)
        self._calls[name] = count + 1
        self._fired.add(name)
        repeated = self.options.repeated
        if count and repeated == "first":
            return
        key = f"{name}#{count}" if count and repeated == "separate" else name
        where = f"layer {name!r} ({type(module).__name__})"
        tensor, source = unwrap_output(output)
        if tensor is None:
            self._skip(
                name,
                f"{where} returned a {type(output).__name__} without a tensor first; it is "
                "skipped (hook the submodule that produces the feature maps instead).",
            )
            return
        if not tensor.is_floating_point():
            self._skip(
                name, f"{where} returned a {tensor.dtype} tensor, not floating point; skipped."
            )
            return
        reading = self._reading(name, module, tensor, source, args, kwargs, output)
        if isinstance(reading, Refusal):
            self._skip(name, reading.reason)
            return
        self.evidence.note(tensor, reading)
        if tensor.shape[0] == 0:
            return
        if name in self._channel_attention:
            why = self._not_temporal(args)
            if why:
                self._skip(
                    name,
                    f"{where} runs over {why}, not over time; skipped by the default choice "
                    "(name it in `layers=` to measure it).",
                    quiet=self._by_default,
                )
                return
        output = reading.maps(tensor)
        ndim = reading.ndim
        map_shape = tuple(int(s) for s in output.shape[-ndim:])
        if all(s == 1 for s in map_shape):
            self._skip(
                name,
                f"{where} returned 1 x 1 maps, which have no spectrum; skipped.",
                quiet=self._by_default,
            )
            return
        scaled = self._scale(name, where, map_shape, ndim)
        if scaled is None:
            return
        metric = self._metric_for(key, module, where, tensor, output, reading, scaled)
        if metric is not None:
            with torch.no_grad():
                metric.update(output.detach())

    def _scale(
        self, name: str, where: str, map_shape: tuple[int, ...], ndim: int
    ) -> tuple[float, float | None, float | None] | None:
        """``(scale, max_value, downscale)`` of maps of ``map_shape`` against this batch's
        input: the factor that turns cycles per layer pixel into the unit asked for, the
        histogram's range with ``unit="input"`` (``None``: the layer's own Nyquist limit) and
        the layer's downscaling; ``None`` when the layer is skipped (finer than the input)."""
        downscale = downscaling(map_shape, self._spatial) if self._spatial else None
        scale, max_value = 1.0, None
        if self.options.unit == "input":
            if self._spatial is None:
                raise RuntimeError(
                    f"{self.owner}: `unit='input'` needs the input's spatial size, but "
                    f"{self._spatial_why} (input shape: {self._input_shape}; {where})."
                )
            exponent = downscale_exponent(map_shape, self._spatial)
            if exponent < 0:
                self._skip(
                    name,
                    f"{where} returned maps of {map_shape}, finer than the input's "
                    f"{self._spatial}: no place on the input's axis with `unit='input'`; "
                    "skipped (measure it with `unit='layer'`).",
                )
                return None
            assert downscale is not None
            scale = 1.0 / downscale
            max_value = (MAX_RADIUS_2D if ndim == 2 else MAX_RADIUS_1D) * 2.0**-exponent
        return scale, max_value, downscale

    def _metric_for(
        self,
        key: str,
        module: nn.Module,
        where: str,
        tensor: Tensor,
        output: Tensor,
        reading: Reading,
        scaled: tuple[float, float | None, float | None],
    ) -> SROPStatistics | None:
        """The statistics of ``key`` for these maps, made at its first output (with the layer's
        metadata), widened for a smaller downscaling; ``None`` when the maps changed rank."""
        scale, max_value, downscale = scaled
        ndim = reading.ndim
        map_shape = tuple(int(s) for s in output.shape[-ndim:])
        metric = self.metrics.get(key)
        if metric is None:
            metric = self._fresh_metric(key, ndim, scale, max_value, output.device)
            self.metrics[key] = metric
            self._device = output.device
            if key not in self.meta:
                self.meta[key] = LayerMeta(
                    module_type=type(module).__name__,
                    ndim=ndim,
                    channels=math.prod(int(s) for s in output.shape[1:-ndim]),
                    map_size=map_shape,
                    downscale=downscale,
                    layout=reading.layout,
                    source=reading.source,
                    prefix_tokens=reading.prefix,
                    inferred=reading.inferred,
                )
        elif metric.ndim != ndim:
            self._notice(
                key,
                f"{where} changed from {metric.ndim}-D to {ndim}-D maps "
                f"(shape {tuple(tensor.shape)}); those outputs are skipped.",
            )
            return None
        elif max_value is not None and max_value > metric.max_value:
            metric.grow(max_value)  # a smaller downscaling than before: widen exactly
        metric.scale = scale  # the downscaling of this batch
        return metric

    def _not_temporal(self, args: Any) -> str:
        """What a default ``Conv1d`` of a 2-D model runs over when that is not time: a pooled
        channel vector (ECA-style channel attention) or a flattened 2-D grid; else ``""``."""
        first = args[0] if args else None
        if not isinstance(first, Tensor) or first.dim() != 3:
            return ""
        channels, length = int(first.shape[1]), int(first.shape[2])
        if channels == 1 and length in self.evidence.channels_2d:
            return "a pooled channel vector (ECA-style channel attention)"
        if any(h * w == length for h, w in self.evidence.grids):
            return "a flattened 2-D grid"
        return ""

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
                if known[0] != ndim:
                    raise RuntimeError(
                        f"{self.owner}: layer {key!r} has {known[0]}-D maps on one process and "
                        f"{ndim}-D maps on another; its statistics cannot be merged."
                    )
                # Ranges are max_radius / 2**j: the widest holds the others exactly.
                merged[key] = (ndim, max(known[1], max_value), known[2])
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
            elif metric.max_value < max_value:
                metric.grow(max_value)
            metrics[key] = metric
        self.metrics = metrics

    def report(self, **fields: Any) -> SROPReport:
        """This round's :meth:`reports` as an :class:`~lightning_srop.report.SROPReport`, with
        the options and the layers ``skipped`` (those that measured nothing, with the reason).

        A collective when the engine syncs, like :meth:`reports`; ``fields`` are the report's
        other fields (``num_batches``, ``epoch``, ``step``, ``model``, ``label``).
        """
        layers = self.reports()
        measured = {report.name for report in layers}
        skipped = {k: v for k, v in self.skipped.items() if k not in measured}
        return SROPReport(
            layers=tuple(layers), options=self.options.to_dict(), skipped=skipped, **fields
        )

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
