"""SROPCallback(baseline=True): the change since initialization, log(mean SROP / baseline mean),
equals the log-ratio of two independent ``profile`` runs of the same batches (the initial and
the trained weights), in one process, under 2-process DDP and after resuming from a checkpoint."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from _ddp import InputRecorder, run_two_processes, set_ddp_environment
from _trainers import quiet_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback, profile

LAYERS = ["features.0", "features.2", "features.3"]


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.Dropout2d(0.5),  # eval mode matters: the baseline must not drop channels
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    x[:, :, ::3] += 1.0
    return TensorDataset(x, torch.randint(0, 3, (n,), generator=g))


def fit_trainer(root: Path, callbacks: list[Callback], **kw: Any) -> L.Trainer:
    return quiet_trainer(root, callbacks, **{"max_epochs": 2, "deterministic": True, **kw})


def expected_change(
    initial: nn.Module, final: nn.Module, batches: list[Tensor]
) -> tuple[dict[str, float], dict[str, float]]:
    """(baseline means, change) from two independent offline profiles of ``batches``."""
    before = profile(initial, batches, layers=LAYERS).as_dict(["mean"])
    after = profile(final, batches, layers=LAYERS).as_dict(["mean"])
    means = {name: before[name]["mean"] for name in LAYERS}
    change = {name: math.log(after[name]["mean"] / before[name]["mean"]) for name in LAYERS}
    return means, change


def test_change_equals_log_ratio_of_two_profiles(tmp_path: Path, one_thread: None) -> None:
    L.seed_everything(0, verbose=False)
    model = Net()
    initial = copy.deepcopy(model)
    val = data(24, 1)
    cb = SROPCallback(layers=LAYERS, num_batches=2)
    trainer = fit_trainer(tmp_path, [cb])
    trainer.fit(model, DataLoader(data(32, 0), batch_size=8), DataLoader(val, batch_size=8))

    batches = [val.tensors[0][:8], val.tensors[0][8:16]]  # the first num_batches batches
    means, change = expected_change(initial, model, batches)
    assert cb.baseline_means == pytest.approx(means, rel=1e-6)
    assert cb.baseline_report is not None and cb.baseline_report.num_batches == 2
    assert cb.last_report is not None and cb.last_report.epoch == 1
    for name in LAYERS:
        got = cb.last_report[name].extra["change"]
        assert got == pytest.approx(change[name], rel=1e-5, abs=1e-7)
        assert float(trainer.callback_metrics[f"srop/{name}/change"]) == pytest.approx(got)
    assert any(abs(v) > 1e-3 for v in change.values())  # training did move SROPs
    # the model is back in train mode, without hooks
    assert model.training and all(m.training for m in model.modules())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    # history: one mean per layer and measured epoch, kept for the figure over epochs
    assert [e for e, _ in cb.history["features.0"]] == [0, 1]
    assert cb.history["features.0"][-1][1] == cb.last_report["features.0"].stats["mean"]


def test_baseline_off_and_training_unchanged(tmp_path: Path, one_thread: None) -> None:
    results = []
    for baseline in (True, False):
        L.seed_everything(0, verbose=False)
        model = Net()
        cb = SROPCallback(layers=LAYERS, baseline=baseline)
        train = DataLoader(data(32, 0), batch_size=8, shuffle=True)
        val = DataLoader(data(16, 1), batch_size=8, shuffle=True)  # draws from the global RNG
        trainer = fit_trainer(tmp_path / str(baseline), [cb], max_epochs=1)
        trainer.fit(model, train, val)
        results.append((model.state_dict(), cb, trainer))
    (with_state, with_cb, _), (without_state, without_cb, trainer) = results
    for key in with_state:
        assert torch.equal(with_state[key], without_state[key]), key  # bit-identical
    assert with_cb.baseline_means is not None and without_cb.baseline_means is None
    assert "srop/features.0/change" not in trainer.callback_metrics
    assert "change" not in without_cb.last_reports[0].extra


def test_resume_keeps_the_baseline(tmp_path: Path, one_thread: None) -> None:
    L.seed_everything(0, verbose=False)
    model = Net()
    initial = copy.deepcopy(model)
    val = data(16, 1)
    train_loader = DataLoader(data(32, 0), batch_size=8)
    val_loader = DataLoader(val, batch_size=8)
    first = SROPCallback(layers=LAYERS, num_batches=2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_trainer(tmp_path, [first, checkpoint], max_epochs=1, enable_checkpointing=True).fit(
        model, train_loader, val_loader
    )
    assert first.baseline_means is not None

    resumed_model = Net()  # other initial weights: a re-measured baseline would differ
    second = SROPCallback(layers=LAYERS, num_batches=2)
    trainer = fit_trainer(tmp_path, [second], max_epochs=2)
    trainer.fit(resumed_model, train_loader, val_loader, ckpt_path=tmp_path / "ckpt" / "last.ckpt")

    assert second.baseline_report is None  # not measured again
    assert second.baseline_means == first.baseline_means
    means, change = expected_change(
        initial, resumed_model, [val.tensors[0][:8], val.tensors[0][8:]]
    )
    assert second.baseline_means == pytest.approx(means, rel=1e-6)
    assert second.last_report is not None and second.last_report.epoch == 1
    for name in LAYERS:
        assert second.last_report[name].extra["change"] == pytest.approx(
            change[name], rel=1e-5, abs=1e-7
        )
    # the history of the first run came back too: epochs 0 and 1 in the figure over epochs
    assert [e for e, _ in second.history["features.0"]] == [0, 1]


# ------------------------------------------------------------------------------------------
# DDP: two CPU processes (gloo)
# ------------------------------------------------------------------------------------------


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    set_ddp_environment(rank, world_size, port)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Net()  # the same weights on every rank
    initial = copy.deepcopy(model.state_dict())
    cb = SROPCallback(layers=LAYERS, num_batches=None)
    recorder = InputRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world_size,
        strategy=DDPStrategy(process_group_backend="gloo"),
        callbacks=[cb, recorder],
        logger=False,
        max_epochs=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out_dir,
    )
    trainer.fit(model, DataLoader(data(16, 0), batch_size=4), DataLoader(data(16, 1), batch_size=4))
    assert cb.last_report is not None
    torch.save(
        {
            "initial": initial,
            "final": model.state_dict(),
            "baseline": cb.baseline_means,
            "change": {r.name: r.extra["change"] for r in cb.last_report},
            "inputs": recorder.inputs,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


def test_two_process_ddp_baseline_is_merged(tmp_path: Path) -> None:
    run_two_processes(_worker, str(tmp_path), seconds=300)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    seen = [torch.cat(r["inputs"]) for r in results]
    assert seen[0].shape[0] == seen[1].shape[0] == 8  # disjoint halves of 16 images
    initial, final = Net(), Net()
    initial.load_state_dict(results[0]["initial"])
    final.load_state_dict(results[0]["final"])
    # One process over the union of both ranks' batches, before and after training.
    batches = [*seen[0].split(4), *seen[1].split(4)]
    means, change = expected_change(initial, final, batches)
    for rank, result in enumerate(results):
        assert result["baseline"] == pytest.approx(means, rel=1e-6), rank
        for name in LAYERS:
            assert result["change"][name] == pytest.approx(change[name], rel=1e-5, abs=1e-7)
    assert results[0]["change"] == results[1]["change"]
