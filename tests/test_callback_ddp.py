"""SROPCallback under DDP with two CPU processes (gloo): the merged per-layer statistics equal
those of one process over the union of both ranks' batches, on every rank."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _ddp import InputRecorder, run_two_processes, set_ddp_environment
from _srop_reference import srop_reference as np_srop
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import STATISTICS, SROPCallback, SROPStatistics
from lightning_srop.profile import profile

LAYERS = ["features.0", "features.2", "extra"]


class DDPNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3)
        )
        self.extra = nn.AvgPool2d(2)  # called on rank 1 only: rank 0 has no statistics for it

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        h = self(batch[0])
        if self.global_rank == 1:
            self.extra(h)
        self.log("val_mean", h.mean(), sync_dist=True)


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 1, 12, 12, generator=g)
    x[3] = 0.0  # flat maps
    return TensorDataset(x, torch.zeros(16))


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    set_ddp_environment(rank, world_size, port)
    torch.manual_seed(0)
    model = DDPNet()  # the same weights on every rank
    cb = SROPCallback(layers=LAYERS, num_batches=None, stats=STATISTICS)
    recorder = InputRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world_size,
        strategy=DDPStrategy(process_group_backend="gloo"),
        callbacks=[cb, recorder],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
    )
    trainer.validate(model, DataLoader(dataset(), batch_size=4), verbose=False)
    # profile() on one rank only, with the process group still up: local, no collective to hang
    local = (
        profile(model, dataset().tensors[0][:4], layers=["features.0"]).as_dict()
        if rank == 0
        else {}
    )
    torch.save(
        {
            "stats": {r.name: r.stats for r in cb.last_reports},
            "counts": {r.name: r.counts for r in cb.last_reports},
            "sample_counts": {r.name: r.sample_counts for r in cb.last_reports},
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "inputs": recorder.inputs,
            "state": model.state_dict(),
            "hooks": sum(len(m._forward_hooks) for m in model.modules()),
            "profile": local,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_process_ddp_merge_equals_one_process_over_the_union(tmp_path: Path) -> None:
    run_two_processes(_worker, str(tmp_path), seconds=240)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert all(r["hooks"] == 0 for r in results)
    assert (
        results[0]["profile"]["features.0"]["count"] + results[0]["profile"]["features.0"]["flat"]
        == 4 * 3
    )  # rank 0's own 4 images only

    # Both ranks saw disjoint halves whose union is the whole validation set.
    seen = [torch.cat(r["inputs"]) for r in results]
    assert seen[0].shape[0] == seen[1].shape[0] == 8
    union = torch.cat(seen)
    rows = {tuple(x.flatten().tolist()) for x in union}
    assert rows == {tuple(x.flatten().tolist()) for x in dataset().tensors[0]}

    # One process over the union: the same model, its own hooks, one Metric per layer.
    model = DDPNet()
    model.load_state_dict(results[0]["state"])
    model.eval()
    outputs: dict[str, list[Tensor]] = {name: [] for name in LAYERS}
    for name in LAYERS[:2]:
        model.get_submodule(name).register_forward_hook(
            lambda m, a, o, name=name: outputs[name].append(o.detach())
        )
    with torch.no_grad():
        for x in seen[0].split(4):
            model(x)
        for x in seen[1].split(4):
            outputs["extra"].append(model.extra(model(x)))
    for name in LAYERS:
        single = SROPStatistics()
        for out in outputs[name]:
            single.update(out)
        expected = {k: float(v) for k, v in single.compute().items()}
        ref = np.concatenate([np_srop(o.double().numpy()) for o in outputs[name]])
        for rank, res in enumerate(results):
            got = res["stats"][name]
            for key in STATISTICS:
                same = got[key] == expected[key] or (
                    math.isnan(got[key]) and math.isnan(expected[key])
                )
                assert same, (rank, name, key, got[key], expected[key])
            assert np.array_equal(res["counts"][name], single.hist.numpy())
            assert np.array_equal(res["sample_counts"][name], single.sample_hist.numpy())
            # and against the NumPy reference
            assert got["mean"] == pytest.approx(np.nanmean(ref), rel=1e-6)
            assert got["count"] == np.isfinite(ref).sum()
            assert got["flat"] == np.isnan(ref).sum()
            # logged values are the merged ones, the same on every rank
            assert res["metrics"][f"srop/{name}/mean"] == pytest.approx(got["mean"], rel=1e-6)
    assert results[0]["stats"]["features.0"]["flat"] > 0  # the all-zero image
    assert list(results[0]["stats"]) == list(results[1]["stats"])
    assert results[0]["metrics"] == results[1]["metrics"]


class FitNet(DDPNet):
    """DDPNet that trains; it also logs one plain tensor per epoch without ``sync_dist``, so
    that Lightning's advice is known to reach the captured warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        h = self(batch[0]).mean(dim=(2, 3))
        return nn.functional.cross_entropy(self.head(h), batch[1].long())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        h = self(batch[0])
        self.log("val_unsynced", h.mean())  # the control: Lightning advises sync_dist here

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import warnings

    from lightning.pytorch.callbacks import ModelCheckpoint

    set_ddp_environment(rank, world_size, port)
    torch.manual_seed(0)
    model = FitNet()
    cb = SROPCallback(layers=LAYERS[:2], num_batches=2, stats=("mean", "median", "q75"))
    checkpoint = ModelCheckpoint(dirpath=out_dir, monitor="srop/features.0/mean", save_top_k=1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world_size,
        strategy=DDPStrategy(process_group_backend="gloo"),
        callbacks=[cb, checkpoint],
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
    )
    loader = DataLoader(dataset(), batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, each time: more than the defaults show
        trainer.fit(model, loader, loader)
    torch.save(
        {
            "warnings": [str(w.message) for w in caught],
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "stats": {r.name: r.stats for r in cb.last_reports},
            "best": float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None
            else None,
        },
        Path(out_dir) / f"fit{rank}.pt",
    )


@pytest.mark.slow
def test_two_process_ddp_fit_logs_without_sync_dist_advice(tmp_path: Path) -> None:
    run_two_processes(_fit_worker, str(tmp_path), seconds=240)
    results = [torch.load(tmp_path / f"fit{r}.pt", weights_only=False) for r in range(2)]
    advice = [m for r in results for m in r["warnings"] if "sync_dist" in m]
    # Lightning warns on rank zero only; the control key shows the advice is captured at all.
    assert any("val_unsynced" in m for m in results[0]["warnings"]), results[0]["warnings"]
    assert all("val_unsynced" in m for m in advice), advice
    assert not any("srop/" in m for r in results for m in r["warnings"] if "sync_dist" in m)
    # The logged values are the merged ones, equal on both ranks, and what a monitor sees.
    keys = {k for k in results[0]["metrics"] if k.startswith("srop/")}
    assert keys == {
        f"srop/{n}/{s}" for n in LAYERS[:2] for s in ("mean", "median", "q75", "change")
    }
    for key in keys:
        assert results[0]["metrics"][key] == results[1]["metrics"][key], key
    for name in LAYERS[:2]:
        for res in results:
            assert res["metrics"][f"srop/{name}/mean"] == pytest.approx(
                res["stats"][name]["mean"], rel=1e-6
            )
    assert results[0]["best"] == results[1]["best"] is not None
