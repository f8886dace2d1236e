"""The baseline travels the validation road: the same batches, through Lightning's own transfer
path (the DataModule's and the LightningModule's hooks, in Lightning's order) and the same model
call (``validation_step``), so that with nothing learned (``lr=0``) ``change`` is 0 for every
measured layer. A setting that cannot work raises before the first training step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _ddp import run_two_processes, set_ddp_environment
from _srop_reference import srop_reference
from _trainers import quiet_trainer
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_srop.callback
from lightning_srop import SROPCallback


def _images(n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    x[:, :, ::3] += 1.0  # some low-frequency structure, so that smoothing moves the SROPs
    return x, torch.randint(0, 3, (n,), generator=g)


def smooth(x: Tensor) -> Tensor:
    """The transform the pipelines apply in their hooks: a 3 x 3 box blur."""
    return nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class TwoConv(L.LightningModule):
    """Two convolutions and a head; trained with ``lr=0``, so its weights never change."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 12 * 12, 3)
        self.steps = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv2(torch.relu(self.conv1(x))).flatten(1))

    def inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        return batch[0], batch[1]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.steps += 1
        x, y = self.inputs(batch)
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self.inputs(batch)
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Data(L.LightningDataModule):
    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(TensorDataset(*_images(8, 1)), batch_size=self.batch_size)

    def val_dataloader(self) -> Any:
        return DataLoader(TensorDataset(*_images(16, 2)), batch_size=self.batch_size)


class SmoothingData(Data):
    """Normalisation/augmentation on the device, as Lightning's docs show it."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return smooth(x), y


class SmoothBeforeTransfer(TwoConv):
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return smooth(x), y


class SmoothingTransfer(TwoConv):
    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        x, y = batch
        return smooth(x).to(device), y.to(device)


class DictBatches(TwoConv):
    """Hugging Face style: dict batches, the model called inside ``validation_step``."""

    def inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        return smooth(batch["pixels"]), batch["labels"]


class DictData(Data):
    def _dicts(self, n: int, seed: int) -> DataLoader[Any]:
        x, y = _images(n, seed)
        samples = [{"pixels": x[i], "labels": y[i]} for i in range(n)]
        return DataLoader(samples, batch_size=4)  # type: ignore[arg-type]

    def train_dataloader(self) -> Any:
        return self._dicts(8, 1)

    def val_dataloader(self) -> Any:
        return self._dicts(16, 2)


class TwoLoaders(TwoConv):
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        scale = 1.0 if dataloader_idx == 0 else 3.0  # the step itself differs per loader
        self.log("val_loss", nn.functional.cross_entropy(self(smooth(x) * scale), y))


class TwoLoaderData(Data):
    def val_dataloader(self) -> Any:
        return [
            DataLoader(TensorDataset(*_images(4, 2)), batch_size=4),
            DataLoader(TensorDataset(*_images(8, 3)), batch_size=4),
        ]


def fit(
    model: L.LightningModule,
    data: L.LightningDataModule,
    root: Path,
    **options: Any,
) -> SROPCallback:
    options.setdefault("layers", ["conv1", "conv2"])
    options.setdefault("num_batches", 3)
    callback = SROPCallback(log_histograms=False, log_figure=False, **options)
    one_epoch(root, callback, devices=1).fit(model, datamodule=data)
    return callback


def one_epoch(root: Path | str, callback: SROPCallback, **kwargs: Any) -> L.Trainer:
    """One epoch, no sanity check: the baseline is the first pass over the validation data."""
    return quiet_trainer(root, [callback], **kwargs)


def changes(callback: SROPCallback) -> dict[str, float]:
    assert callback.last_report is not None
    return {report.name: float(report.extra["change"]) for report in callback.last_report}


PIPELINES = {
    "DataModule on_after_batch_transfer": (TwoConv, SmoothingData),
    "LightningModule on_before_batch_transfer": (SmoothBeforeTransfer, Data),
    "LightningModule transfer_batch_to_device": (SmoothingTransfer, Data),
    "dict batches, no input_key": (DictBatches, DictData),
    "two validation loaders": (TwoLoaders, TwoLoaderData),
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_nothing_learned_means_no_change(pipeline: str, tmp_path: Path, one_thread: None) -> None:
    model_type, data_type = PIPELINES[pipeline]
    callback = fit(model_type(), data_type(), tmp_path)
    assert callback.baseline_report is not None
    assert callback.baseline_report.names == ["conv1", "conv2"]
    assert callback.baseline_report.num_batches == 3
    assert changes(callback) == pytest.approx({"conv1": 0.0, "conv2": 0.0}, abs=1e-6)


def test_baseline_measures_the_transformed_batches(tmp_path: Path, one_thread: None) -> None:
    """The baseline's conv1 mean is the float64 reference over conv1 of the *smoothed* batches
    (laid out by the test), not of the raw ones."""
    model = TwoConv()
    callback = fit(model, SmoothingData(), tmp_path)
    assert callback.baseline_report is not None
    x = torch.cat([b[0] for b in list(SmoothingData().val_dataloader())[:3]])
    with torch.no_grad():
        maps = model.conv1(smooth(x)).double().numpy()
        raw = model.conv1(x).double().numpy()
    expected = float(np.nanmean(srop_reference(maps)))
    measured = float(callback.baseline_report["conv1"].stats["mean"])
    assert measured == pytest.approx(expected, rel=1e-4)
    assert abs(float(np.nanmean(srop_reference(raw))) - expected) > 1e-3  # smoothing shows


def test_calling_the_hooks_by_hand_is_caught(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutation check: a baseline that calls the LightningModule's three hooks by hand (as an
    earlier version did) skips the DataModule's, and the zero-change test then fails."""

    def by_hand(trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
        def road() -> Any:
            for position, batch in enumerate(trainer.val_dataloaders):  # type: ignore[arg-type]
                batch = pl_module.on_before_batch_transfer(batch, 0)
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                yield pl_module.on_after_batch_transfer(batch, 0), position, 0

        return road()

    monkeypatch.setattr(lightning_srop.callback, "validation_batches", by_hand)
    callback = fit(TwoConv(), SmoothingData(), tmp_path)
    assert any(abs(change) > 1e-3 for change in changes(callback).values())


def test_the_baseline_leaves_validation_state_untouched(tmp_path: Path, one_thread: None) -> None:
    """``validation_step`` runs before training with logging silenced, and what it gathers (a
    torchmetrics metric, a list of outputs) is put back: the first epoch sees only its own."""
    from torchmetrics import MeanMetric

    class Gathering(TwoConv):
        def __init__(self) -> None:
            super().__init__()
            self.val_mean = MeanMetric()
            self.outputs: list[Tensor] = []
            self.seen: list[int] = []
            self.metric_batches: list[int] = []

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, _ = batch
            self.val_mean.update(self(x).mean())
            self.outputs.append(x)
            self.log("val_mean", self.val_mean)

        def on_validation_epoch_end(self) -> None:
            self.seen.append(len(self.outputs))
            self.metric_batches.append(int(self.val_mean.update_count))
            self.outputs.clear()

    model = Gathering()
    callback = fit(model, Data(), tmp_path)
    assert callback.baseline_report is not None and callback.baseline_report.num_batches == 3
    assert model.seen == [4] and model.metric_batches == [4]  # 16 images, batches of 4
    assert model.log.__func__ is L.LightningModule.log  # type: ignore[attr-defined]


def test_baseline_report_lists_what_it_skipped(tmp_path: Path, one_thread: None) -> None:
    callback = fit(TwoConv(), Data(), tmp_path, layers=["conv1", "head"])
    assert callback.baseline_report is not None and callback.last_report is not None
    assert callback.baseline_report.names == ["conv1"]
    assert set(callback.baseline_report.skipped) == {"head"}
    assert callback.baseline_report.skipped == callback.last_report.skipped


# ---------------------------------------------------------------------- detection
def detection_model() -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    backbone.out_channels = 8  # type: ignore[assignment]
    return FasterRCNN(
        backbone,
        num_classes=3,
        min_size=64,
        max_size=64,
        rpn_anchor_generator=AnchorGenerator(((16,),), ((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        rpn_pre_nms_top_n_test=20,
        rpn_post_nms_top_n_test=10,
        box_detections_per_img=5,
    )


class Detector(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = detection_model()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = batch
        return sum(self.model(images, targets).values())  # type: ignore[return-value]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, _ = batch
        self.model(images)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _detection_collate(samples: list[Any]) -> tuple[Any, ...]:
    return tuple(zip(*samples, strict=True))  # torchvision's detection references do this


class DetectionData(L.LightningDataModule):
    def _loader(self, seed: int) -> DataLoader[Any]:
        g = torch.Generator().manual_seed(seed)
        target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}
        sizes = [(48, 56), (40, 40)] * 2
        samples = [(torch.rand(3, h, w, generator=g), dict(target)) for h, w in sizes]
        return DataLoader(samples, batch_size=2, collate_fn=_detection_collate)  # type: ignore[arg-type]

    def train_dataloader(self) -> Any:
        return self._loader(1)

    def val_dataloader(self) -> Any:
        return self._loader(2)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        return [image.flip(-1) for image in images], targets


def test_detection_batches(tmp_path: Path, one_thread: None) -> None:
    callback = fit(
        Detector(), DetectionData(), tmp_path, layers=["model.backbone.0"], num_batches=2
    )
    assert callback.baseline_report is not None
    assert callback.baseline_report.names == ["model.backbone.0"]
    assert changes(callback) == pytest.approx({"model.backbone.0": 0.0}, abs=1e-6)


# ---------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    set_ddp_environment(rank, world_size, port)
    torch.set_num_threads(1)
    callback = SROPCallback(
        layers=["conv1", "conv2"], num_batches=2, log_histograms=False, log_figure=False
    )
    strategy = DDPStrategy(process_group_backend="gloo", start_method="popen")
    trainer = one_epoch(out_dir, callback, devices=world_size, strategy=strategy)
    trainer.fit(TwoConv(), datamodule=SmoothingData())
    torch.save(
        {"change": changes(callback), "baseline": callback.baseline_means},
        Path(out_dir) / f"rank{rank}.pt",
    )


def test_two_process_ddp_nothing_learned_means_no_change(tmp_path: Path) -> None:
    run_two_processes(_ddp_worker, str(tmp_path), seconds=300)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for result in results:
        assert result["change"] == pytest.approx({"conv1": 0.0, "conv2": 0.0}, abs=1e-6)
        assert all(math.isfinite(v) for v in result["baseline"].values())
    assert results[0]["baseline"] == results[1]["baseline"]  # merged across processes


# ---------------------------------------------------------------------- fail before training
class Counting(DictBatches):
    pass


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"unit": "input"}, ValueError, "input_key"),
        ({"unit": "input", "baseline": False}, ValueError, "input_key"),
        ({"layers": ["head"]}, ValueError, "measures nothing"),
        ({"layers": ["head"], "baseline": False}, ValueError, "measures nothing"),
    ],
)
def test_bad_settings_raise_before_training(
    options: dict[str, Any], error: type[Exception], match: str, tmp_path: Path, one_thread: None
) -> None:
    model = Counting()
    with pytest.raises(error, match=match):
        fit(model, DictData(), tmp_path, **options)
    assert model.steps == 0
    assert all(not m._forward_hooks for m in model.modules())


def test_unit_input_with_unreadable_axes_raises_before_training(
    tmp_path: Path, one_thread: None
) -> None:
    """A 5-D input has no grid that ``input_layout='auto'`` can tell."""

    class Volumes(TwoConv):
        def inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
            return batch[0][:, :, 0], batch[1]

    class VolumeData(Data):
        def val_dataloader(self) -> Any:
            x, y = _images(8, 2)
            return DataLoader(TensorDataset(x[:, :, None].expand(-1, -1, 2, -1, -1), y), 4)

    model = Volumes()
    with pytest.raises(RuntimeError, match="unit='input'"):
        fit(model, VolumeData(), tmp_path, unit="input")
    assert model.steps == 0
