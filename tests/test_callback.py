"""SROPCallback with real Trainers: logged values against an independent float64 reference,
loggers read back, hook and state hygiene, bit-identical training, checkpoint resume, errors."""

from __future__ import annotations

import copy
import csv
import glob
import json
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _srop_reference import srop_reference as np_srop
from _trainers import quiet_trainer
from _wandb_reader import read_wandb_records as _wandb_records
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback, SROPWarning

LAYERS = [
    "features.0",
    "features.3",
    "features.4",
    "features.6",
]  # Conv, MaxPool, Conv, AdaptivePool
#: The layers' components in logger tags (``ordered_tags=True``): a depth index first.
TAG = {layer: f"{depth:02d}-{layer}" for depth, layer in enumerate(LAYERS)}
BIN_WIDTH = (np.sqrt(2) / 2) / 1024


# ------------------------------------------------------------------------------------------
# A tiny CNN and data
# ------------------------------------------------------------------------------------------


class TinyCNN(L.LightningModule):
    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(3),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(54, 3))
        self.fail_at: int | None = None
        self.interrupt_at: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        if self.fail_at == batch_idx:
            raise RuntimeError("boom in validation")
        if self.interrupt_at == batch_idx:
            raise KeyboardInterrupt
        self.log("val_loss", nn.functional.cross_entropy(out, y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def make_data(n: int, seed: int, size: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    x[:, :, ::2] += 0.5  # some structure
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(x, y)


def loaders(shuffle: bool = True, n_val: int = 32) -> tuple[DataLoader[Any], DataLoader[Any]]:
    train = DataLoader(make_data(32, 0), batch_size=8, shuffle=shuffle)
    val = DataLoader(make_data(n_val, 1), batch_size=8)
    return train, val


def trainer(tmp_path: Path, callbacks: list[Callback], logger: Any = False, **kw: Any) -> L.Trainer:
    kw = {"max_epochs": 2, "deterministic": True, "logger": logger, **kw}
    return quiet_trainer(tmp_path, callbacks, **kw)


class WeightRecorder(Callback):
    """Keeps a copy of the weights each validation epoch ran with (not the sanity check)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, Tensor]] = []
        self.steps: list[int] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.weights.append(copy.deepcopy(pl_module.state_dict()))
            self.steps.append(trainer.global_step)


class HookProbe(Callback):
    """Counts forward hooks on every chosen layer at each validation batch (runs after SROP)."""

    def __init__(self, layer: str = "features.0") -> None:
        self.layer = layer
        self.during: list[tuple[bool, int, int]] = []

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        module = pl_module.get_submodule(self.layer)
        self.during.append((trainer.sanity_checking, batch_idx, len(module._forward_hooks)))


def total_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def reference_srops(
    weights: dict[str, Tensor], batches: list[Tensor], layers: list[str]
) -> dict[str, np.ndarray]:
    """SROPs (float64 NumPy) of every map each layer produces on ``batches`` with ``weights``,
    captured by the test's own hooks on a fresh model."""
    model = TinyCNN()
    model.load_state_dict(weights)
    model.eval()
    captured: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    handles = []
    for name in layers:

        def hook(m: nn.Module, a: Any, out: Tensor, name: str = name) -> None:
            captured[name].append(out.detach().double().numpy())

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in handles:
        h.remove()
    return {
        name: np.concatenate([np_srop(a).ravel() for a in arrays])
        for name, arrays in captured.items()
    }


def val_batches(n: int, n_val: int = 32) -> list[Tensor]:
    return [x for x, _ in list(loaders(n_val=n_val)[1])[:n]]


# ------------------------------------------------------------------------------------------
# End to end: TensorBoard + CSV read back, values against the reference
# ------------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_tensorboard(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def test_tensorboard_and_csv_end_to_end(tmp_path: Path) -> None:
    L.seed_everything(0)
    recorder = WeightRecorder()
    cb = SROPCallback(stats=("mean", "median", "count", "flat"), ordered_tags=True)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    train, val = loaders()
    t = trainer(tmp_path, [cb, recorder], logger=[tb, csv_logger])
    with pytest.warns(SROPWarning, match="CSVLogger has no histogram support"):
        t.fit(TinyCNN(), train, val)

    acc = read_tensorboard(tmp_path / "tb" / "version_0")
    tags = acc.Tags()
    assert not [t for t in tags["scalars"] + tags["histograms"] if t.startswith("srop/")]
    # every layer a TensorBoard run of its own, srop/{NN}-{layer}, one tag per statistic
    runs = {
        layer: read_tensorboard(tmp_path / "tb" / "version_0" / "srop" / TAG[layer])
        for layer in LAYERS
    }
    stats = ("mean", "median", "count", "flat", "change")  # change: baseline=True (default)
    for run in runs.values():
        assert sorted(run.Tags()["scalars"]) == [f"srop/{stat}" for stat in sorted(stats)]
        assert "srop_histograms/per_map" in run.Tags()["histograms"]
    # callback_metrics keep the plain keys users monitor, with the values the loggers got
    for layer in LAYERS:
        for stat in stats:
            logged = runs[layer].Scalars(f"srop/{stat}")[-1].value
            assert float(t.callback_metrics[f"srop/{layer}/{stat}"]) == pytest.approx(
                logged, rel=1e-6, nan_ok=True
            )
    assert "srop/layer_profile" in tags["images"]
    assert len(acc.Images("srop/layer_profile")) == 2
    batches = val_batches(2)
    for epoch, weights in enumerate(recorder.weights):
        ref = reference_srops(weights, batches, LAYERS)
        for layer in LAYERS:
            values = ref[layer][np.isfinite(ref[layer])]
            events = {
                s: runs[layer].Scalars(f"srop/{s}") for s in ("mean", "median", "count", "flat")
            }
            assert all(len(e) == 2 for e in events.values())
            assert events["mean"][epoch].value == pytest.approx(values.mean(), rel=1e-5)
            assert abs(events["median"][epoch].value - np.quantile(values, 0.5)) <= BIN_WIDTH
            assert events["count"][epoch].value == values.size
            assert events["flat"][epoch].value == np.isnan(ref[layer]).sum()
            hist = runs[layer].Histograms("srop_histograms/per_map")
            assert len(hist) == 2
            assert hist[epoch].histogram_value.num == values.size
    # histograms and figures share the steps of Lightning's epoch-level scalars
    steps = [e.step for e in runs[LAYERS[0]].Scalars("srop/mean")]
    assert [e.step for e in runs[LAYERS[0]].Histograms("srop_histograms/per_map")] == steps
    assert [e.step for e in acc.Scalars("epoch")][-1] == steps[-1]
    assert [e.step for e in acc.Images("srop/layer_profile")] == steps

    rows = read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    for layer in LAYERS:
        key = f"srop/{TAG[layer]}/mean"
        logged = [float(r[key]) for r in rows if r.get(key)]
        assert logged == pytest.approx(
            [e.value for e in runs[layer].Scalars("srop/mean")], rel=1e-6
        )


def test_unit_input_and_extra_stats(tmp_path: Path) -> None:
    recorder = WeightRecorder()
    cb = SROPCallback(
        layers=["features.3", "features.6"], unit="input", num_batches=1, stats=("mean", "max")
    )
    _, val = loaders()
    t = trainer(tmp_path, [cb, recorder])
    t.validate(TinyCNN(), val, verbose=False)
    ref = reference_srops(recorder.weights[0], val_batches(1), ["features.3", "features.6"])
    # 12 x 12 input; features.3 is 6 x 6 (s = 2), features.6 is 3 x 3 (s = 4)
    for layer, s in (("features.3", 2.0), ("features.6", 4.0)):
        values = ref[layer][np.isfinite(ref[layer])] / s
        assert float(t.callback_metrics[f"srop/{layer}/mean"]) == pytest.approx(
            values.mean(), rel=1e-5
        )
        assert float(t.callback_metrics[f"srop/{layer}/max"]) == pytest.approx(
            values.max(), rel=1e-6
        )
    assert [r.name for r in cb.last_reports] == ["features.3", "features.6"]


# ------------------------------------------------------------------------------------------
# W&B offline, read back from the run's .wandb file
# ------------------------------------------------------------------------------------------


def test_wandb_offline_records_scalars_and_histograms(wandb_offline: Path) -> None:
    tmp_path = wandb_offline
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    recorder = WeightRecorder()
    cb = SROPCallback(layers=r"^features\.(0|3)$", ordered_tags=True)
    logger = WandbLogger(
        offline=True,
        save_dir=str(tmp_path),
        project="srop",
        settings=wandb.Settings(x_disable_stats=True, x_disable_meta=True, console="off"),
    )
    train, val = loaders()
    try:
        trainer(tmp_path, [cb, recorder], logger=logger).fit(TinyCNN(), train, val)
    finally:
        wandb.finish()
    (run_file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    # wandb's service may still be writing when finish() returns: wait for the exit record
    deadline = time.monotonic() + 30
    while True:
        records = list(_wandb_records(Path(run_file)))
        if (
            any(r.WhichOneof("record_type") == "exit" for r in records)
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.2)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    batches = val_batches(2)
    for layer, tag in (("features.0", "00-features.0"), ("features.3", "01-features.3")):
        means = [
            (r["trainer/global_step"], r[f"srop/{tag}/mean"])
            for r in rows
            if f"srop/{tag}/mean" in r
        ]
        hists = [
            (r["trainer/global_step"], r[f"srop/{tag}/values"])
            for r in rows
            if f"srop/{tag}/values" in r
        ]
        assert len(means) == 2 and means[0][0] < means[1][0]
        assert [s for s, _ in hists] == [s for s, _ in means]
        for (_, mean), (_, hist), weights in zip(means, hists, recorder.weights, strict=True):
            values = reference_srops(weights, batches, [layer])[layer]
            values = values[np.isfinite(values)]
            assert mean == pytest.approx(values.mean(), rel=1e-5)
            assert len(hist) <= 512 and sum(hist) == values.size


# ------------------------------------------------------------------------------------------
# No logger, notices, stages
# ------------------------------------------------------------------------------------------


def test_no_logger_fills_callback_metrics_with_one_notice(tmp_path: Path) -> None:
    cb = SROPCallback(layers=["features.0"])
    train, val = loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = trainer(tmp_path, [cb], logger=False, max_epochs=3)
        t.fit(TinyCNN(), train, val)
    notices = [
        w for w in caught if issubclass(w.category, SROPWarning) and "no logger" in str(w.message)
    ]
    assert len(notices) == 1
    # ... and no per-key "no logger configured" warning from Lightning for every SROP scalar.
    assert not [w for w in caught if "srop/" in str(w.message) and "no logger" in str(w.message)]
    assert {"srop/features.0/mean", "srop/features.0/median"} <= set(t.callback_metrics)


def test_skips_sanity_check_measures_validate_and_every_n_epochs(tmp_path: Path) -> None:
    cb = SROPCallback(layers=["features.0"], every_n_epochs=2, num_batches=3, ordered_tags=True)
    probe = HookProbe()
    recorder = WeightRecorder()
    train, val = loaders()
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    t = trainer(
        tmp_path, [cb, probe, recorder], logger=csv_logger, max_epochs=5, num_sanity_val_steps=2
    )
    t.fit(TinyCNN(), train, val)
    # sanity check: no hooks; then validation runs 1, 3, 5 (epochs 0, 2, 4) are measured
    sanity = [h for s, _, h in probe.during if s]
    assert sanity == [0, 0]
    hooked = [h for s, _, h in probe.during if not s]
    assert hooked == ([1, 1, 1, 0] + [0] * 4) * 2 + [1, 1, 1, 0]
    rows = read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    epochs = [int(r["epoch"]) for r in rows if r.get("srop/00-features.0/mean")]
    assert epochs == [0, 2, 4]
    assert int(cb.last_reports[0].stats["count"]) == 3 * 8 * 4
    # trainer.validate() is always measured
    probe.during.clear()
    t.validate(t.lightning_module, val, verbose=False)
    assert [h for _, _, h in probe.during] == [1, 1, 1, 0]
    assert "srop/features.0/mean" in t.callback_metrics
    assert total_hooks(t.lightning_module) == 0


# ------------------------------------------------------------------------------------------
# Hygiene: hooks, modes, parameters, buffers, exceptions, interrupts, memory
# ------------------------------------------------------------------------------------------


def test_model_state_is_untouched_by_validate(tmp_path: Path) -> None:
    model = TinyCNN()
    model.train()
    model.head.eval()  # a mixed mode, to be restored exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    probe = HookProbe()
    cb = SROPCallback(num_batches=None)
    _, val = loaders()
    trainer(tmp_path, [cb, probe]).validate(model, val, verbose=False)
    assert [h for _, _, h in probe.during] == [1, 1, 1, 1]
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert total_hooks(model) == 0
    assert cb.engine is not None and cb.engine.metrics == {}  # nothing kept between epochs


@pytest.mark.parametrize("where", ["exception", "interrupt"])
def test_no_hooks_left_after_failure_mid_validation(tmp_path: Path, where: str) -> None:
    model = TinyCNN()
    cb = SROPCallback(num_batches=3)
    _, val = loaders()
    t = trainer(tmp_path, [cb])
    handler = signal.getsignal(signal.SIGINT)
    try:
        if where == "exception":
            model.fail_at = 1
            with pytest.raises(RuntimeError, match="boom in validation"):
                t.validate(model, val, verbose=False)
        else:
            model.interrupt_at = 1
            with pytest.raises(SystemExit):  # Lightning's graceful shutdown on KeyboardInterrupt
                t.validate(model, val, verbose=False)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert total_hooks(model) == 0
    assert cb.engine is not None and not cb.engine.attached
    # the callback still works afterwards
    model.fail_at = model.interrupt_at = None
    t2 = trainer(tmp_path, [cb])
    t2.validate(model, val, verbose=False)
    assert "srop/features.0/mean" in t2.callback_metrics
    assert total_hooks(model) == 0


def _fit_weights(tmp_path: Path, callbacks: list[Callback]) -> dict[str, Tensor]:
    L.seed_everything(123)
    model = TinyCNN()
    train, val = loaders(shuffle=True)
    trainer(tmp_path, callbacks, max_epochs=3, num_sanity_val_steps=2).fit(model, train, val)
    return model.state_dict()


def test_training_is_bit_identical_with_and_without_callback(tmp_path: Path) -> None:
    without = _fit_weights(tmp_path / "a", [])
    cb = SROPCallback(sample="random", num_batches=2, stats=("mean", "q95"))
    with_cb = _fit_weights(tmp_path / "b", [cb])
    assert len(cb.last_reports) == 4
    assert without.keys() == with_cb.keys()
    for key in without:
        assert torch.equal(without[key], with_cb[key]), key


def test_statistics_do_not_grow_with_epochs_or_batches(tmp_path: Path) -> None:
    sizes: list[int] = []

    class StateSize(Callback):
        def on_validation_batch_end(
            self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
        ) -> None:
            engine = cb.engine
            assert engine is not None
            sizes.append(
                sum(t.numel() for m in engine.metrics.values() for t in m.metric_state.values())
            )

    cb = SROPCallback(num_batches=None)
    _, val = loaders(n_val=48)
    trainer(tmp_path, [cb, StateSize()], max_epochs=3).fit(TinyCNN(), loaders()[0], val)
    assert len(set(sizes)) == 1 and sizes[0] > 0  # the same size after every batch of every epoch


# ------------------------------------------------------------------------------------------
# Random sampling and checkpoint resume
# ------------------------------------------------------------------------------------------


class BatchProbe(HookProbe):
    def measured(self) -> list[int]:
        return [i for s, i, h in self.during if not s and h]


def _resume_run(
    tmp_path: Path, ckpt: Path | None, max_epochs: int
) -> tuple[BatchProbe, SROPCallback, L.Trainer]:
    L.seed_everything(7)
    cb = SROPCallback(
        layers=["features.0"], sample="random", seed=3, num_batches=2, every_n_epochs=2
    )
    probe = BatchProbe()
    train, val = loaders(shuffle=False, n_val=48)  # 6 validation batches
    t = trainer(tmp_path, [cb, probe], max_epochs=max_epochs)
    t.fit(TinyCNN(dropout=0.0), train, val, ckpt_path=ckpt)
    return probe, cb, t


def test_random_sampling_resumes_from_checkpoint(tmp_path: Path) -> None:
    full, full_cb, _ = _resume_run(tmp_path / "full", None, 4)
    measured = full.measured()
    assert len(measured) == 4  # epochs 0 and 2, two batches each
    assert measured[:2] != measured[2:]  # the two draws differ, so the test can tell them apart
    assert all(0 <= i < 6 for i in measured)

    first, _, t = _resume_run(tmp_path / "part", None, 2)
    ckpt = tmp_path / "half.ckpt"
    t.save_checkpoint(ckpt)
    resumed, resumed_cb, _ = _resume_run(tmp_path / "resumed", ckpt, 4)
    assert first.measured() + resumed.measured() == measured
    assert resumed_cb.last_reports[0].stats == full_cb.last_reports[0].stats
    assert resumed_cb.state_dict()["validation_runs"] == 4


# ------------------------------------------------------------------------------------------
# torch.compile and pytorch_lightning
# ------------------------------------------------------------------------------------------


def test_compiled_submodule_logs_clean_names_and_same_values(tmp_path: Path) -> None:
    torch._dynamo.reset()
    model = TinyCNN()
    plain = copy.deepcopy(model)
    model.features = torch.compile(model.features, backend="eager")  # type: ignore[assignment]
    _, val = loaders()
    cb = SROPCallback(num_batches=1)
    t = trainer(tmp_path, [cb])
    t.validate(model, val, verbose=False)
    t_plain = trainer(tmp_path, [SROPCallback(num_batches=1)])
    t_plain.validate(plain, val, verbose=False)
    for layer in LAYERS:
        key = f"srop/{layer}/mean"
        assert float(t.callback_metrics[key]) == float(t_plain.callback_metrics[key])
    assert total_hooks(model) == 0

    # the reason for forcing eager execution: compiled graphs silently skip hooks added later
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(8, 1, 12, 12)
    fired: list[int] = []
    with torch.inference_mode():
        compiled(x)
        handle = net[0].register_forward_hook(lambda *a: fired.append(1))
        compiled(x)
        handle.remove()
    assert fired == []

    with pytest.raises(RuntimeError, match=r"torch.compile'd code.*`compiled`='error'.*'eager'"):
        trainer(tmp_path, [SROPCallback(compiled="error")]).validate(model, val, verbose=False)
    assert total_hooks(model) == 0


def test_pytorch_lightning_trainer_accepts_the_callback(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    class PLTiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2))

        def forward(self, x: Tensor) -> Tensor:
            return self.features(x)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_mean", self(batch[0]).mean())

    model = PLTiny()
    cb = SROPCallback()
    _, val = loaders()
    t = pl.Trainer(
        accelerator="cpu",
        callbacks=[cb],
        logger=pl.loggers.CSVLogger(tmp_path, name="csv", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    t.validate(model, val, verbose=False)
    ref = np.concatenate(
        [np_srop(model.features[0](x).detach().double().numpy()).ravel() for x in val_batches(2)]
    )
    assert float(t.callback_metrics["srop/features.0/mean"]) == pytest.approx(
        ref[np.isfinite(ref)].mean(), rel=1e-5
    )
    assert "srop/features.1/median" in t.callback_metrics
    assert total_hooks(model) == 0


# ------------------------------------------------------------------------------------------
# Every error message
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": 5}, TypeError, r"`layers`.*got int 5"),
        ({"layers": "conv("}, ValueError, r"`layers`='conv\(' is not a valid regular expression"),
        ({"layers": [1, 2]}, TypeError, r"`layers` to be a non-empty list of layer names"),
        (
            {"layout": "NWHC"},
            ValueError,
            r"`layout` to be one of 'auto', 'NCHW', 'NHWC', 'NCL', 'NLC', 'tokens'; got 'NWHC'",
        ),
        ({"layout": {"a": "HW"}}, ValueError, r"`layout\['a'\]` to be one of 'auto', 'NCHW'"),
        ({"layers": []}, TypeError, r"`layers` to be a non-empty list"),
        (
            {"num_batches": 0},
            ValueError,
            r"`num_batches` to be None \(all batches\) or an int >= 1; got 0",
        ),
        ({"num_batches": 1.5}, ValueError, r"`num_batches`.*got 1.5"),
        ({"every_n_epochs": 0}, ValueError, r"`every_n_epochs` to be an int >= 1; got 0"),
        ({"sample": "all"}, ValueError, r"`sample` to be one of 'first', 'random'; got 'all'"),
        (
            {"seed": "x"},
            TypeError,
            r"`seed` to be an int in \[-9223372036854775808, 18446744073709551615\]; got 'x'",
        ),
        (
            {"seed": 2**64},
            ValueError,
            r"`seed` to be an int in \[.*, 18446744073709551615\]; got 18446744073709551616",
        ),
        ({"roll_percent": 1.5}, ValueError, r"`roll_percent` in \(0, 1\], got 1.5"),
        ({"roll_percent": "a"}, TypeError, r"`roll_percent` to be a float"),
        ({"keep_dc": 1}, TypeError, r"`keep_dc` to be a bool, got 1"),
        ({"ndim": 3}, ValueError, r"`ndim` to be None \(auto-detect\), 1 or 2; got 3"),
        ({"unit": "px"}, ValueError, r"`unit` to be one of 'layer', 'input'; got 'px'"),
        (
            {"stats": ("mean", "avg")},
            ValueError,
            r"unknown statistic\(s\) \['avg'\]; valid choices: mean, std",
        ),
        (
            {"stats": "mean"},
            ValueError,
            r"`stats` to be a non-empty sequence.*got 'mean'.*Valid choices",
        ),
        ({"stats": ()}, ValueError, r"`stats` to be a non-empty sequence"),
        ({"log_histograms": "yes"}, TypeError, r"`log_histograms` to be a bool; got 'yes'"),
        ({"log_figure": None}, TypeError, r"`log_figure` to be a bool; got None"),
        ({"prefix": ""}, ValueError, r"`prefix` to be a non-empty str"),
        ({"prefix": "srop/"}, ValueError, r"`prefix`.*got 'srop/'"),
        (
            {"repeated": "twice"},
            ValueError,
            r"`repeated` to be one of 'separate', 'merge', 'first'; got 'twice'",
        ),
        ({"num_bins": 1}, ValueError, r"`num_bins` to be an int >= 2; got 1"),
        ({"input_key": 3}, TypeError, r"`input_key` to be a str; got 3"),
        (
            {"compiled": "maybe"},
            ValueError,
            r"`compiled` to be one of 'eager', 'error'; got 'maybe'",
        ),
    ],
)
def test_bad_configuration_fails_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=r"SROPCallback: .*" + match):
        SROPCallback(**kwargs)


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        (
            ["features.0", "features.9"],
            r"names unknown layer 'features.9' \(close valid names: 'features.6', ",
        ),
        (["head.2", "feature.3"], r"unknown layer 'feature.3' \(close valid names: 'features.3'"),
        (
            r"^classifier",
            r"='\^classifier' \(a regular expression, matched with re.search\) matches no layer; valid names: 'features', 'features.0'",
        ),
        (
            nn.Conv3d,
            r"selects modules of type Conv3d, but the model has none; module types present: .*Conv2d",
        ),
        (lambda name, module: False, r"the callable '<lambda>' selects no layer"),
    ],
)
def test_unknown_layers_fail_at_setup(tmp_path: Path, layers: Any, match: str) -> None:
    cb = SROPCallback(layers=layers)
    _, val = loaders()
    model = TinyCNN()
    with pytest.raises(ValueError, match=r"SROPCallback: `layers`.*" + match):
        trainer(tmp_path, [cb]).validate(model, val, verbose=False)
    assert total_hooks(model) == 0


def test_default_layers_on_a_model_without_conv_fails_at_setup(tmp_path: Path) -> None:
    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(144, 3)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.fc(batch[0].flatten(1))

    _, val = loaders()
    with pytest.raises(
        ValueError, match=r"`layers`=None selects every convolution and pooling layer.*MLP has none"
    ):
        trainer(tmp_path, [SROPCallback()]).validate(MLP(), val, verbose=False)


def test_unit_input_with_a_batch_without_input_fails_clearly(tmp_path: Path) -> None:
    class DictModel(TinyCNN):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self(batch["image"])

    data = DataLoader([{"image": torch.randn(4, 1, 12, 12)} for _ in range(2)], batch_size=None)
    cb = SROPCallback(unit="input")
    with pytest.raises(ValueError, match=r"`input_key`='input'; the batch has keys \['image'\]"):
        trainer(tmp_path, [cb]).validate(DictModel(), data, verbose=False)
    cb = SROPCallback(unit="input", input_key="image", layers=["features.3"])
    t = trainer(tmp_path, [cb])
    t.validate(DictModel(), data, verbose=False)
    assert "srop/features.3/mean" in t.callback_metrics


def test_layers_made_in_configure_model_and_state_keys(tmp_path: Path) -> None:
    class Lazy(L.LightningModule):
        def configure_model(self) -> None:
            if not hasattr(self, "features"):
                self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.features(batch[0])

    cb = SROPCallback(layers=["features.0"], num_batches=1)
    _, val = loaders()
    t = trainer(tmp_path, [cb])
    t.validate(Lazy(), val, verbose=False)
    assert int(cb.last_reports[0].stats["count"]) + int(cb.last_reports[0].stats["flat"]) == 8 * 2
    # two callbacks in one Trainer keep separate checkpoint states
    keys = {
        SROPCallback(prefix="a").state_key,
        SROPCallback(prefix="b").state_key,
        SROPCallback(layers=nn.Conv2d).state_key,
        SROPCallback(layers=lambda n, m: True).state_key,
    }
    assert len(keys) == 4


def test_flat_keywords_are_sropoptions_fields_with_its_defaults() -> None:
    # The callback's keywords for what is measured are SROPOptions' fields, one for one, with
    # the same defaults; `options=` takes the object whole, and the two ways do not mix.
    import dataclasses
    import inspect

    from lightning_srop import SROPOptions

    parameters = inspect.signature(SROPCallback.__init__).parameters
    fields = [f for f in dataclasses.fields(SROPOptions) if f.name != "owner"]
    assert fields
    for field in fields:
        assert field.name in parameters, field.name
        assert parameters[field.name].default == field.default, field.name
    chosen = SROPOptions(layers=["a"], roll_percent=0.9, stats=("q75",), unit="input")
    whole = SROPCallback(options=chosen, prefix="x")
    assert whole.options == chosen and whole.prefix == "x"
    assert SROPCallback(layers=["a"], roll_percent=0.9, stats=["q75"], unit="input").options == (
        chosen
    )
    assert SROPCallback().options == SROPOptions()
    with pytest.raises(ValueError, match=r"either as `options=SROPOptions\(...\)`.*`roll_percent`"):
        SROPCallback(options=chosen, roll_percent=0.5)
    with pytest.raises(TypeError, match="expected `options` to be None or an SROPOptions"):
        SROPCallback(options={"roll_percent": 0.5})  # type: ignore[arg-type]
