"""Where users look: the TensorBoard custom-scalars layout and tag order, W&B charts and epoch
axis, histograms of few distinct values, thumbnail-sized figures, MLflow figures."""

from __future__ import annotations

import glob
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _wandb_reader import read_wandb_records
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback, SROPStatistics
from lightning_srop.loggers import display_bins, log_histograms
from lightning_srop.plots import plot_layer_profile, short_names
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


def layouts(run_dir: Path) -> list[layout_pb2.Layout]:
    """Every custom-scalars layout written to the run's event files, in order."""
    found = []
    for file in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(file)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "custom_scalars":
                    layout = layout_pb2.Layout()
                    layout.ParseFromString(value.tensor.string_val[0])
                    found.append(layout)
    return found


def charts(layout: layout_pb2.Layout) -> dict[str, list[str]]:
    (category,) = layout.category
    return {chart.title: list(chart.multiline.tag) for chart in category.chart}


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SROPCallback, L.Trainer]:
    root = tmp_path_factory.mktemp("views")
    cb = SROPCallback(layers=FORWARD, stats=STATS, ordered_tags=True)
    trainer = fit(root, cb, TensorBoardLogger(root, name="tb", version=0))
    return root / "tb" / "version_0", cb, trainer


def test_custom_scalars_layout_names_every_layer_of_each_statistic(
    tb_run: tuple[Path, SROPCallback, L.Trainer],
) -> None:
    run_dir, _, _ = tb_run
    (layout,) = layouts(run_dir)  # written once: the layers did not change
    assert layout.category[0].title == "srop: SROP per layer"
    got = charts(layout)
    assert list(got) == ["mean", "median", "change"]  # one chart per logged statistic
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalar_tags = accumulator.Tags()["scalars"]
    for stat, patterns in got.items():
        # every layer, in forward order, each pattern matching exactly one logged tag
        expected = [f"srop/{i:02d}-{name}/{stat}" for i, name in enumerate(FORWARD)]
        matched = [[t for t in scalar_tags if re.fullmatch(p, t)] for p in patterns]
        assert matched == [[tag] for tag in expected], stat


def test_tags_sort_in_forward_order_and_callback_metrics_keep_plain_keys(
    tb_run: tuple[Path, SROPCallback, L.Trainer],
) -> None:
    run_dir, _, trainer = tb_run
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    mean_tags = sorted(t for t in tags["scalars"] if t.endswith("/mean"))
    assert [t.split("/")[1].partition("-")[2] for t in mean_tags] == FORWARD
    hist_tags = sorted(t for t in tags["histograms"] if not t.endswith("per_sample_mean"))
    assert hist_tags == [f"srop/{i:02d}-{name}" for i, name in enumerate(FORWARD)]
    for name in FORWARD:
        for stat in (*STATS, "change"):
            assert f"srop/{name}/{stat}" in trainer.callback_metrics
        value = accumulator.Scalars(f"srop/{FORWARD.index(name):02d}-{name}/mean")[-1].value
        assert float(trainer.callback_metrics[f"srop/{name}/mean"]) == pytest.approx(value)
    # Figures: the layer profile and the mean SROP over epochs, one per measured epoch
    assert {"srop/layer_profile", "srop/over_epochs"} <= set(tags["images"])
    assert len(accumulator.Images("srop/over_epochs")) == 2


def test_default_tags_are_the_callback_metrics_keys_and_the_layout_is_in_forward_order(
    tmp_path: Path,
) -> None:
    cb = SROPCallback(layers=FORWARD, stats=("mean",), baseline=False, log_figure=False)
    fit(tmp_path, cb, TensorBoardLogger(tmp_path, name="tb", version=0), epochs=1)
    run_dir = tmp_path / "tb" / "version_0"
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    assert sorted(t for t in accumulator.Tags()["scalars"] if t.startswith("srop/")) == sorted(
        f"srop/{name}/mean" for name in FORWARD
    )
    (layout,) = layouts(run_dir)
    assert charts(layout) == {"mean": [f"^srop/{name}/mean$" for name in FORWARD]}


def test_layout_rewritten_when_new_layers_appear(tmp_path: Path) -> None:
    class Growing(Net):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            super().validation_step(batch, batch_idx)
            if self.current_epoch >= 1:
                self.head(batch[0])  # called from the second epoch on

    cb = SROPCallback(layers=FORWARD, stats=("mean",), log_figure=False, ordered_tags=True)
    torch.manual_seed(0)
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[cb],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )

    class Partial(Growing):
        def forward(self, x: Tensor) -> Tensor:  # head is not part of forward
            h = self.tail(self.pool(torch.relu(self.stem(x))))
            return self.out(nn.functional.adaptive_avg_pool2d(h, 3).flatten(1))

    with pytest.warns(match="did not run"):
        trainer.fit(Partial(), *loaders())
    first, second = layouts(tmp_path / "tb" / "version_0")
    assert charts(first)["mean"] == [
        f"^srop/{i:02d}\\-{n}/mean$" for i, n in enumerate(FORWARD[:3])
    ]
    assert len(charts(second)["mean"]) == 4 and "head" in charts(second)["mean"][-1]


def test_group_separator_is_honoured(tmp_path: Path) -> None:
    class DotLogger(TensorBoardLogger):
        @property
        def group_separator(self) -> str:
            return "."

    cb = SROPCallback(
        layers=["stem"], stats=("mean",), baseline=False, log_figure=False, ordered_tags=True
    )
    fit(tmp_path, cb, DotLogger(tmp_path, name="tb", version=0), epochs=1)
    accumulator = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    accumulator.Reload()
    assert "srop.00-stem.mean" in accumulator.Tags()["scalars"]
    assert "srop.00-stem" in accumulator.Tags()["histograms"]


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


def test_wandb_charts_and_epoch_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
    }.items():
        monkeypatch.setenv(key, value)
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


# ------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------


def test_mlflow_gets_figures_and_one_histogram_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store in tmp, no server
    logger = MLFlowLogger(experiment_name="srop", tracking_uri=f"file:{tmp_path / 'mlruns'}")
    cb = SROPCallback(layers=FORWARD, stats=("mean",), ordered_tags=True)
    with pytest.warns(match="MLFlowLogger has no histogram support") as caught:
        fit(tmp_path, cb, logger)
    assert sum("histogram" in str(w.message) for w in caught) == 1
    client = logger.experiment
    artifacts = [a.path for a in client.list_artifacts(logger.run_id, "srop/layer_profile")]
    assert len(artifacts) == 2 and all(a.endswith(".png") for a in artifacts)
    assert client.list_artifacts(logger.run_id, "srop/over_epochs")
    history = client.get_metric_history(logger.run_id, "srop/00-stem/mean")
    assert len(history) == 2 and math.isfinite(history[-1].value)
