"""Where users look: TensorBoard's layer runs (one chart per statistic, a named line per layer,
forward order) and the change heatmap, W&B charts and epoch axis, histograms of few distinct
values, thumbnail-sized figures, MLflow figures."""

from __future__ import annotations

import glob
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _wandb_reader import read_wandb_records
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback, SROPStatistics
from lightning_srop.loggers import display_bins, log_histograms
from lightning_srop.plots import plot_heatmap, plot_layer_profile, short_names
from lightning_srop.report import LayerReport

#: Forward order; alphabetically these sort otherwise (head < pool < stem < tail).
FORWARD = ["stem", "pool", "tail", "head"]
STATS = ("mean", "median")


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.tail = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.AvgPool2d(2)
        self.out = nn.Linear(3 * 3 * 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.head(torch.relu(self.tail(self.pool(torch.relu(self.stem(x))))))
        return self.out(h.flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loaders() -> tuple[DataLoader[Any], DataLoader[Any]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 12, 12, generator=g)
    y = torch.randint(0, 2, (32,), generator=g)
    return (
        DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8),
        DataLoader(TensorDataset(x[16:], y[16:]), batch_size=8),
    )


def fit(root: Path, cb: SROPCallback, logger: Any, epochs: int = 2) -> L.Trainer:
    torch.manual_seed(0)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[cb],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(Net(), *loaders())
    return trainer


def layer_runs(run_dir: Path, prefix: str = "srop") -> dict[str, EventAccumulator]:
    """The layers' own runs under the logger's version folder, by run name (what TensorBoard
    lists and colours), in TensorBoard's order (sorted by name)."""
    runs = {}
    for folder in sorted((run_dir / prefix).iterdir()):
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
        accumulator.Reload()
        runs[folder.relative_to(run_dir).as_posix()] = accumulator
    return runs


def main_run(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SROPCallback, L.Trainer]:
    root = tmp_path_factory.mktemp("views")
    cb = SROPCallback(layers=FORWARD, stats=STATS)  # default tags
    trainer = fit(root, cb, TensorBoardLogger(root, name="tb", version=0))
    return root / "tb" / "version_0", cb, trainer


def test_each_statistic_is_one_chart_with_one_named_line_per_layer_in_forward_order(
    tb_run: tuple[Path, SROPCallback, L.Trainer],
) -> None:
    run_dir, _, trainer = tb_run
    runs = layer_runs(run_dir)
    # TensorBoard sorts runs by name and colours them in that order: forward order, each run
    # named after its layer (distinct names, hence distinct legend entries)
    assert list(runs) == [f"srop/{i:02d}-{name}" for i, name in enumerate(FORWARD)]
    # one card per statistic: the same tag in every layer's run, so one line per layer
    for name, accumulator in zip(FORWARD, runs.values(), strict=True):
        assert sorted(accumulator.Tags()["scalars"]) == sorted(
            f"srop/{s}" for s in (*STATS, "change")
        )
        for stat in (*STATS, "change"):
            points = accumulator.Scalars(f"srop/{stat}")
            assert len(points) == 2  # two measured epochs
            key = f"srop/{name}/{stat}"
            assert float(trainer.callback_metrics[key]) == pytest.approx(points[-1].value)
        assert sorted(accumulator.Tags()["histograms"]) == [
            "srop_histograms/per_map",
            "srop_histograms/per_sample_mean",
        ]
    # the logger's own run: no per-layer SROP cards, the epoch at the SROP steps, the figures
    main = main_run(run_dir)
    assert not [t for t in main.Tags()["scalars"] if t.startswith("srop")]
    assert not main.Tags()["histograms"]
    steps = {p.step for p in next(iter(runs.values())).Scalars("srop/mean")}
    assert steps <= {e.step for e in main.Scalars("epoch")}
    assert {"srop/layer_profile", "srop/over_epochs", "srop/change_heatmap"} <= set(
        main.Tags()["images"]
    )


def test_change_heatmap_every_measured_epoch_legible_at_thumbnail_size(
    tb_run: tuple[Path, SROPCallback, L.Trainer],
) -> None:
    from PIL import Image

    run_dir, cb, _ = tb_run
    images = main_run(run_dir).Images("srop/change_heatmap")
    assert len(images) == 2  # every measured epoch
    for event in images:
        assert (event.width, event.height) == (450, 450)  # 350 px cards scale it by 0.78
        picture = Image.open(io.BytesIO(event.encoded_image_string))
        assert picture.size == (450, 450)
    # what it draws: layers (forward order) x measured epochs, centred on 0
    changes = cb.history_of("change")
    assert list(changes) == FORWARD and all(len(points) == 2 for points in changes.values())
    figure = plot_heatmap(changes, compact=True)
    image = figure.axes[0].images[0]
    assert image.get_array().shape == (len(FORWARD), 2)
    low, high = image.get_clim()
    assert low == -high and high > 0
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == FORWARD


def test_flat_keys_stay_for_csv_and_callback_metrics(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    cb = SROPCallback(layers=FORWARD, stats=("mean",), baseline=False, log_figure=False)
    trainer = fit(tmp_path, cb, CSVLogger(tmp_path, name="csv", version=0), epochs=1)
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    for name in FORWARD:
        assert f"srop/{name}/mean" in header.split(",")
        assert f"srop/{name}/mean" in trainer.callback_metrics


def test_layer_runs_added_when_new_layers_appear(tmp_path: Path) -> None:
    class Partial(Net):
        def forward(self, x: Tensor) -> Tensor:  # head is not part of forward
            h = self.tail(self.pool(torch.relu(self.stem(x))))
            return self.out(nn.functional.adaptive_avg_pool2d(h, 3).flatten(1))

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            super().validation_step(batch, batch_idx)
            if self.current_epoch >= 1:
                self.head(batch[0])  # called from the second epoch on

    cb = SROPCallback(layers=FORWARD, stats=("mean",), log_figure=False)
    torch.manual_seed(0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[cb],
        logger=TensorBoardLogger(tmp_path, name="tb", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with pytest.warns(match="did not run"):
        trainer.fit(Partial(), *loaders())
    runs = layer_runs(tmp_path / "tb" / "version_0")
    assert list(runs) == [f"srop/{i:02d}-{name}" for i, name in enumerate(FORWARD)]
    assert [len(r.Scalars("srop/mean")) for r in runs.values()] == [2, 2, 2, 1]


def test_group_separator_is_honoured(tmp_path: Path) -> None:
    class DotLogger(TensorBoardLogger):
        @property
        def group_separator(self) -> str:
            return "."

    cb = SROPCallback(layers=["stem"], stats=("mean",), baseline=False, log_figure=False)
    fit(tmp_path, cb, DotLogger(tmp_path, name="tb", version=0), epochs=1)
    (run,) = layer_runs(tmp_path / "tb" / "version_0").values()
    assert run.Tags()["scalars"] == ["srop.mean"]
    assert "srop_histograms.per_map" in run.Tags()["histograms"]


# ------------------------------------------------------------------------------------------
# Histograms of few distinct values
# ------------------------------------------------------------------------------------------


def test_histogram_of_7x7_maps_has_one_bin_per_shell(tmp_path: Path) -> None:
    torch.manual_seed(0)
    metric = SROPStatistics()  # 1024 fixed bins
    metric.update(torch.randn(16, 8, 7, 7))
    report = LayerReport.from_metric("conv", metric)
    occupied = np.flatnonzero(report.counts)
    # the radii of a 7 x 7 grid: sqrt(a^2 + b^2) / 7, a, b in 0..3, DC left out
    shells = {math.hypot(a, b) / 7 for a in range(4) for b in range(4)} - {0.0}
    assert 1 < occupied.size <= len(shells) == 9
    counts, edges = display_bins(report.counts, report.edges)
    assert counts.size == occupied.size and np.all(counts > 0)  # no empty bucket, no comb
    assert counts.sum() == report.counts.sum() == 16 * 8
    centres = 0.5 * (report.edges[occupied] + report.edges[occupied + 1])
    assert np.all((edges[:-1] < centres) & (centres < edges[1:]))  # one shell per bucket
    # what TensorBoard gets
    logger = TensorBoardLogger(tmp_path, name="tb")
    log_histograms([logger], [report], step=0, max_bins=64)
    logger.experiment.flush()
    accumulator = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0})
    accumulator.Reload()
    h = accumulator.Histograms("srop/conv")[0].histogram_value
    assert list(h.bucket) == counts.tolist() and h.num == 16 * 8


def test_display_bins_merge_many_values_to_at_most_64() -> None:
    counts = np.zeros(1024, dtype=np.int64)
    counts[100:900] = np.arange(800) % 3 + 1
    merged, edges = display_bins(counts, np.linspace(0.0, 1.0, 1025))
    assert merged.size <= 64 and merged.sum() == counts.sum() and np.all(merged > 0)
    assert edges[0] == pytest.approx(100 / 1024) and edges[-1] == pytest.approx(900 / 1024)
    empty, no_edges = display_bins(np.zeros(4, dtype=np.int64), np.arange(5.0))
    assert empty.size == 0 and no_edges.size == 0


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def test_compact_profile_is_legible_at_thumbnail_size() -> None:
    names = [f"backbone.layer{i // 3 + 1}.{i % 3}.conv{i % 2 + 1}" for i in range(30)]
    none = np.zeros(0)
    reports = [
        LayerReport(
            n,
            {"mean": 0.1 + i / 100, "q25": 0.1, "median": 0.1, "q75": 0.2},
            none,
            none,
            none,
            depth=i,
        )
        for i, n in enumerate(names)
    ]
    figure = plot_layer_profile(reports, title="SROP per layer, epoch 3", compact=True)
    assert tuple(figure.get_size_inches()) == (8.0, 4.5)
    ax = figure.axes[0]
    visible = [t for t in ax.get_xticklabels() if t.get_visible()]
    assert len(visible) <= 13
    assert min(t.get_fontsize() for t in visible) >= 12
    assert all(len(t.get_text()) <= 16 for t in visible)
    assert ax.get_title() == "SROP per layer, epoch 3"
    labels = short_names(names)
    assert len(set(labels)) == len(labels)  # still tells the layers apart


# ------------------------------------------------------------------------------------------
# W&B offline
# ------------------------------------------------------------------------------------------


def test_wandb_charts_and_epoch_axis(wandb_offline: Path) -> None:
    tmp_path = wandb_offline
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        offline=True,
        save_dir=str(tmp_path),
        project="srop",
        settings=wandb.Settings(x_disable_stats=True, x_disable_meta=True, console="off"),
    )
    cb = SROPCallback(layers=FORWARD, stats=("mean",), ordered_tags=True)
    try:
        fit(tmp_path, cb, logger)
    finally:
        wandb.finish()
    (run_file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.monotonic() + 30
    while True:
        records = read_wandb_records(Path(run_file))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, "no exit record"
        time.sleep(0.2)
    rows = [
        {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    metrics = {
        r.metric.name: r.metric.step_metric
        for r in records
        if r.WhichOneof("record_type") == "metric" and r.metric.name
    }
    # epoch is the x-axis of every SROP scalar, and every SROP row holds epoch
    for i, name in enumerate(FORWARD):
        for stat in ("mean", "change"):
            assert metrics[f"srop/{i:02d}-{name}/{stat}"] == "epoch"
    srop_rows = [row for row in rows if "srop/00-stem/mean" in row]
    assert [row["epoch"] for row in srop_rows] == [0, 1]
    # one line_series chart per statistic: a table of every layer over the epochs so far
    chart_rows = [row for row in rows if any(k.startswith("srop_charts/mean") for k in row)]
    assert len(chart_rows) == 2
    (table_key,) = [
        k for k in chart_rows[-1] if k.startswith("srop_charts/mean") and k.endswith("_type")
    ]
    assert chart_rows[-1][table_key] == "table-file"
    table_path = chart_rows[-1][table_key.replace("_type", "path")]
    table = json.loads((Path(run_file).parent / "files" / table_path).read_text())
    lines = {row[table["columns"].index("lineKey")] for row in table["data"]}
    assert lines == {f"{i:02d}-{name}" for i, name in enumerate(FORWARD)}
    assert len(table["data"]) == 2 * len(FORWARD)  # two epochs per layer
    assert any(k.startswith("srop_charts/change") for k in chart_rows[-1])
    assert any("srop/00-stem/values" in row for row in rows)  # histograms
    assert any("srop/layer_profile/_type" in row for row in rows)  # the figure
    heatmaps = [row for row in rows if "srop/change_heatmap/_type" in row]
    assert [row["trainer/global_step"] for row in heatmaps] == [
        row["trainer/global_step"] for row in srop_rows
    ]  # the heatmap every measured epoch, at the scalars' step
    assert all(row["srop/change_heatmap/width"] == 450 for row in heatmaps)


# ------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------


def test_mlflow_gets_figures_and_one_histogram_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store in tmp, no server
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = MLFlowLogger(experiment_name="srop", tracking_uri=uri)
    cb = SROPCallback(layers=FORWARD, stats=("mean",), ordered_tags=True)
    with pytest.warns(match="MLFlowLogger has no histogram support") as caught:
        fit(tmp_path, cb, logger, epochs=3)
    assert sum("histogram" in str(w.message) for w in caught) == 1
    # read back with a fresh MLflow client, as MLflow's UI reads the store
    client, run_id = MlflowClient(tracking_uri=uri), logger.run_id
    history = client.get_metric_history(run_id, "srop/00-stem/mean")
    steps = [m.step for m in history]
    assert len(history) == 3 and len(set(steps)) == 3 and math.isfinite(history[-1].value)
    # `epoch` once per step: only Lightning's (with val_loss), none beside it from the callback
    epochs = client.get_metric_history(run_id, "epoch")
    assert sorted((m.step, m.value) for m in epochs) == [(s, float(e)) for e, s in enumerate(steps)]
    # figures: time-stepped images (the run page's Images view), per key one per measured epoch
    names = [Path(a.path).name for a in client.list_artifacts(run_id, "images")]
    pngs = [n for n in names if n.endswith(".png")]
    for key in ("srop~layer_profile", "srop~over_epochs", "srop~change_heatmap"):
        mine = [n for n in pngs if n.startswith(f"{key}+step+")]
        assert sorted(int(n.split("+")[2]) for n in mine) == steps, (key, names)
    assert len(pngs) == 9 and len(names) == 18  # and a compressed thumbnail of each
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"
    local = client.download_artifacts(run_id, f"images/{pngs[0]}", str(tmp_path / "dl"))
    from PIL import Image

    with Image.open(local) as image:  # a real PNG of a figure
        assert image.format == "PNG" and min(image.size) >= 200
