"""Finished runs read back (lightning_srop.runs): TensorBoard, CSVLogger and report JSON files
written by real Trainers with SROPCallback, compared with what the callback computed."""

from __future__ import annotations

import copy
import itertools
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from lightning_srop import SROPCallback, SROPReport
from lightning_srop.plots import plot_over_epochs, save_figure
from lightning_srop.runs import (
    histogram_statistics,
    history,
    read_csv,
    read_reports,
    read_run,
    read_tensorboard,
    to_csv,
)
from lightning_srop.statistics import QUANTILES, STATISTICS

#: Forward order of the measured layers; alphabetically they sort the other way round.
FORWARD = ["stem", "pool", "body", "avg"]
STATS = ("mean", "median", "q25", "q75", "count")
EPOCHS = 3
BIN_WIDTH = (math.sqrt(2.0) / 2.0) / 1024


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.body = nn.Conv2d(4, 6, 3, padding=1)
        self.avg = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Linear(54, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act(self.stem(x)))
        return self.head(self.avg(self.act(self.body(x))).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    x[:, :, ::2] += 0.5
    return TensorDataset(x, torch.randint(0, 3, (n,), generator=g))


class Keep(Callback):
    """A copy of the callback's report after every measured epoch (runs after it)."""

    def __init__(self, cb: SROPCallback) -> None:
        self.cb = cb
        self.reports: list[SROPReport] = []
        self.accuracy: list[tuple[int, float]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.cb.last_report is not None:
            self.reports.append(copy.deepcopy(self.cb.last_report))


class Run:
    """One fitted run, its loggers' folders and what the callbacks computed."""

    def __init__(self, root: Path) -> None:
        L.seed_everything(0, verbose=False)
        torch.set_num_threads(1)
        self.root = root
        # The measured bins, unchanged (histogram_bins=None), under tags with a depth index.
        self.cb = SROPCallback(stats=STATS, histogram_bins=None, ordered_tags=True)
        # A second callback with another prefix logs only the mean: the rest must be derived
        # from its histograms, which are re-binned for display (the default); its tags are the
        # plain layer names.
        self.lite = SROPCallback(stats=("mean",), prefix="lite", log_figure=False)
        self.keep, self.keep_lite = Keep(self.cb), Keep(self.lite)
        tb = TensorBoardLogger(root, name="tb", version=0)
        csv_logger = CSVLogger(root, name="csv", version=0)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=EPOCHS,
            callbacks=[self.cb, self.lite, self.keep, self.keep_lite],
            logger=[tb, csv_logger],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            default_root_dir=root,
            deterministic=True,
        )
        with pytest.warns(match="CSVLogger has no histogram support"):
            trainer.fit(
                Net(),
                DataLoader(_data(32, 0), batch_size=8, shuffle=True),
                DataLoader(_data(32, 1), batch_size=8),
            )
        self.trainer = trainer
        self.tb_dir = root / "tb" / "version_0"
        self.csv_dir = root / "csv" / "version_0"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    threads = torch.get_num_threads()
    try:
        return Run(tmp_path_factory.mktemp("runs"))
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------


def test_tensorboard_reports_per_epoch(run: Run) -> None:
    reports = read_tensorboard(run.tb_dir)
    assert len(reports) == EPOCHS == len(run.keep.reports)
    assert [r.epoch for r in reports] == list(range(EPOCHS))
    assert [r.step for r in reports] == [r.step for r in run.keep.reports]
    assert len({r.step for r in reports}) == EPOCHS
    assert run.cb.last_report is not None
    assert run.cb.last_report.names == FORWARD
    for report in reports:
        assert report.names == FORWARD  # not TensorBoard's alphabetical tag order
        assert [layer.depth for layer in report] == list(range(len(FORWARD)))


def test_tensorboard_scalars_equal_the_callback(run: Run) -> None:
    reports = read_tensorboard(run.tb_dir)
    for read, kept in zip(reports, run.keep.reports, strict=True):
        for name in FORWARD:
            for stat in STATS:
                assert read[name].stats[stat] == pytest.approx(kept[name].stats[stat], rel=1e-6)
    last = reports[-1]
    for layer in run.cb.last_reports:
        assert last[layer.name].stats["mean"] == pytest.approx(layer.stats["mean"], rel=1e-6)
        # Not logged and not derivable from a histogram: NaN.
        assert math.isnan(last[layer.name].stats["flat"])
        assert math.isnan(last[layer.name].stats["invalid_fraction"])


def _restricted(counts: np.ndarray, edges: np.ndarray, read_edges: np.ndarray) -> np.ndarray:
    """The callback's counts summed over the read histogram's bins."""
    positions = np.round((read_edges - edges[0]) / (edges[1] - edges[0])).astype(int)
    assert np.allclose(edges[positions], read_edges, rtol=0, atol=1e-12)
    return np.array([counts[a:b].sum() for a, b in itertools.pairwise(positions)])


def test_tensorboard_histograms_are_the_callbacks_bins(run: Run) -> None:
    reports = read_tensorboard(run.tb_dir)
    for read, kept in zip(reports, run.keep.reports, strict=True):
        for name in FORWARD:
            got, want = read[name], kept[name]
            assert got.edges.size == got.counts.size + 1 == got.sample_counts.size + 1
            assert 1 < got.counts.size < want.counts.size  # empty outer bins were trimmed
            assert got.counts.sum() == want.stats["count"] == got.stats["count"]
            np.testing.assert_array_equal(
                got.counts, _restricted(want.counts, want.edges, got.edges)
            )
            np.testing.assert_array_equal(
                got.sample_counts, _restricted(want.sample_counts, want.edges, got.edges)
            )
            assert got.sample_counts.sum() == want.sample_counts.sum() == 16  # 2 batches of 8


def _union_counts(counts: np.ndarray, edges: np.ndarray, read_edges: np.ndarray) -> np.ndarray:
    """The callback's fixed-bin counts summed over each read bin (by fixed-bin centre)."""
    centres = 0.5 * (edges[:-1] + edges[1:])
    index = np.searchsorted(read_edges, centres, side="right") - 1
    inside = (index >= 0) & (index < read_edges.size - 1)
    out = np.zeros(read_edges.size - 1, dtype=np.int64)
    np.add.at(out, index[inside], counts[inside])
    return out


def test_display_histograms_are_exact_unions_of_the_callbacks_bins(run: Run) -> None:
    for i, name in enumerate(FORWARD):
        # every layer is a TensorBoard run of its own, holding its histograms
        accumulator = EventAccumulator(
            str(run.tb_dir / "lite" / f"{i:02d}-{name}"), size_guidance={"histograms": 0}
        )
        accumulator.Reload()
        events = accumulator.Histograms("lite_histograms/per_map")
        assert len(events) == EPOCHS
        for event, kept in zip(events, run.keep_lite.reports, strict=True):
            h = event.histogram_value
            edges = np.array([h.min, *h.bucket_limit])
            counts = np.round(np.array(h.bucket)).astype(np.int64)
            want = kept[name]
            assert 1 <= counts.size <= 64 and counts.sum() == want.stats["count"]
            np.testing.assert_array_equal(counts, _union_counts(want.counts, want.edges, edges))
            assert np.count_nonzero(counts) >= 0.5 * counts.size  # not a comb of empty bins


def test_statistics_derived_from_display_histograms(run: Run) -> None:
    reports = read_tensorboard(run.tb_dir, prefix="lite")
    assert len(reports) == EPOCHS and reports[0].names == FORWARD
    for read, kept in zip(reports, run.keep_lite.reports, strict=True):
        for name in FORWARD:
            layer, want_layer = read[name], kept[name]
            got, want = layer.stats, want_layer.stats
            assert got["mean"] == pytest.approx(want["mean"], rel=1e-6)  # the logged scalar
            assert got["count"] == want["count"] > 0
            assert got["std"] == pytest.approx(want["std"], rel=1e-6, abs=1e-9)  # exact sums
            assert 1 < layer.counts.size <= 2 * 64  # both histograms on one grid
            widest = float(np.diff(layer.edges).max())
            for q in (*QUANTILES, "min", "max"):
                assert abs(got[q] - want[q]) <= widest + BIN_WIDTH, (name, q)
            assert abs(got["sample_mean"] - want["sample_mean"]) <= widest + BIN_WIDTH
            assert math.isnan(got["flat"])


def test_histogram_statistics_match_the_callback_quantiles(run: Run) -> None:
    for layer in run.cb.last_reports:
        derived = histogram_statistics(layer.counts, layer.edges)
        assert derived["count"] == layer.stats["count"]
        for q in QUANTILES:
            assert abs(derived[q] - layer.stats[q]) <= BIN_WIDTH
        assert abs(derived["mean"] - layer.stats["mean"]) <= BIN_WIDTH / 2
    empty = histogram_statistics(np.zeros(3, dtype=np.int64), np.arange(4.0))
    assert empty["count"] == 0 and math.isnan(empty["median"])


def test_tensorboard_root_and_versions(run: Run, tmp_path: Path) -> None:
    root = tmp_path / "tb"
    shutil.copytree(run.root / "tb", root)  # the shared run stays as it is
    by_root = read_tensorboard(root)
    assert [r.step for r in by_root] == [r.step for r in read_tensorboard(run.tb_dir)]
    # A second run under the same root: the reader wants to be told which.
    writer = SummaryWriter(str(root / "version_1"))
    writer.add_scalar("srop/conv/mean", 0.25, 5)
    writer.close()
    with pytest.raises(ValueError, match=r"holds 2 runs .*version_0, version_1.*`version=`"):
        read_tensorboard(root)
    (only,) = read_tensorboard(root, version=1)
    assert only.names == ["conv"] and only.step == 5 and only.epoch is None
    assert only["conv"].stats["mean"] == 0.25 and only["conv"].edges.size == 0
    assert len(read_tensorboard(root, version="version_0")) == EPOCHS
    with pytest.raises(ValueError, match=r"`version`=7 matches 0 of the runs"):
        read_tensorboard(root, version=7)


def test_callback_tags_are_the_documented_literals(run: Run) -> None:
    # Spelled out here, not taken from the package's constants: a renamed tag on both the
    # writing and the reading side would otherwise pass.
    def tags(run_name: str) -> dict[str, Any]:
        accumulator = EventAccumulator(str(run.tb_dir / run_name))
        accumulator.Reload()
        return accumulator.Tags()

    # every layer is a run of its own (sub-folder ``{prefix}/{NN}-{layer}``), one tag per
    # statistic; the logger's own run holds no per-layer SROP tag
    for run_name, literal in (
        ("srop/00-stem", "srop/mean"),
        ("srop/03-avg", "srop/q75"),
        ("srop/01-pool", "srop/change"),
        ("lite/02-body", "lite/mean"),
    ):
        assert literal in tags(run_name)["scalars"], (run_name, literal)
    for run_name, literal in (
        ("srop/00-stem", "srop_histograms/per_map"),
        ("srop/00-stem", "srop_histograms/per_sample_mean"),
        ("lite/03-avg", "lite_histograms/per_sample_mean"),
    ):
        assert literal in tags(run_name)["histograms"], (run_name, literal)
    own = tags(".")
    assert not [t for t in own["scalars"] + own["histograms"] if t.startswith(("srop", "lite"))]


def _add_histogram(writer: SummaryWriter, tag: str, step: int) -> None:
    """The same small histogram (4 values in 3 bins: 1, 2, 1) under ``tag`` at ``step``."""
    writer.add_histogram_raw(
        tag,
        min=0.0,
        max=0.3,
        num=4,
        sum=0.6,
        sum_squares=0.1,
        bucket_limits=[0.1, 0.2, 0.3],
        bucket_counts=[1, 2, 1],
        global_step=step,
        walltime=100.0,
    )


def test_independent_layer_runs_read_back_in_their_index_order(tmp_path: Path) -> None:
    # The callback's TensorBoard layout written with TensorBoard's own SummaryWriter and
    # literal tags: the version folder's own run (epoch), one sub-folder run per layer.
    writer = SummaryWriter(str(tmp_path / "version_0"))
    for step, epoch in ((3, 0), (7, 1)):
        writer.add_scalar("epoch", epoch, step, walltime=100.0)
    writer.close()
    for index, name in ((2, "alpha"), (0, "zeta"), (1, "mid.1")):  # written out of order
        layer = SummaryWriter(str(tmp_path / "version_0" / "srop" / f"{index:02d}-{name}"))
        for step in (3, 7):
            layer.add_scalar("srop/mean", 0.1 * (index + 1), step, walltime=100.0)
            layer.add_scalar("srop/change", -0.5, step, walltime=100.0)
            _add_histogram(layer, "srop_histograms/per_map", step)
        layer.close()
    reports = read_run(tmp_path)  # the folder above the version: one run
    assert [(r.epoch, r.step) for r in reports] == [(0, 3), (1, 7)]
    assert [r.names for r in reports] == [["zeta", "mid.1", "alpha"]] * 2
    layer = reports[1]["mid.1"]
    assert layer.depth == 1 and layer.stats["mean"] == pytest.approx(0.2)
    assert layer.extra == {"change": -0.5}
    np.testing.assert_array_equal(layer.counts, [1, 2, 1])
    assert layer.stats["count"] == 4 and layer.stats["median"] == pytest.approx(0.15)


def _independent_run(folder: Path, layers: list[str], *, layout: list[str] | None) -> None:
    """Events written with TensorBoard's own SummaryWriter and literal tags, no package code;
    ``layout``: the regular expressions of a Custom Scalars chart."""
    writer = SummaryWriter(str(folder))
    if layout is not None:
        charts = {"mean": ["Multiline", layout]}
        writer.add_custom_scalars({"srop: SROP per layer": charts})
    for step, epoch in ((3, 0), (7, 1)):
        for value, name in enumerate(layers):
            writer.add_scalar(f"srop/{name}/mean", 0.1 * (value + 1), step, walltime=100.0)
            writer.add_scalar(f"srop/{name}/change", -0.5, step, walltime=100.0)
            _add_histogram(writer, f"srop/{name}", step)
        writer.add_scalar("epoch", epoch, step, walltime=100.0)
    writer.close()


def test_independent_events_with_a_layout_keep_its_order(tmp_path: Path) -> None:
    # Written in another order than the layout's, all at one wall time: the layout decides.
    layout = [r"^srop/mid\.1/mean$", "^srop/zeta/mean$", "^srop/alpha/mean$"]
    _independent_run(tmp_path, ["zeta", "alpha", "mid.1"], layout=layout)
    reports = read_tensorboard(tmp_path)
    assert [(r.epoch, r.step) for r in reports] == [(0, 3), (1, 7)]
    assert [r.names for r in reports] == [["mid.1", "zeta", "alpha"]] * 2
    layer = reports[0]["zeta"]
    assert layer.depth == 1 and layer.stats["mean"] == pytest.approx(0.1)
    assert layer.extra == {"change": -0.5}
    np.testing.assert_array_equal(layer.counts, [1, 2, 1])
    assert layer.stats["count"] == 4 and layer.stats["median"] == pytest.approx(0.15)


def test_independent_events_without_a_layout_follow_the_plain_rule(tmp_path: Path) -> None:
    # No layout: names sorted, whatever order or wall times they were written with ...
    _independent_run(tmp_path / "plain", ["zeta", "alpha", "mid"], layout=None)
    assert [r.names for r in read_tensorboard(tmp_path / "plain")] == [["alpha", "mid", "zeta"]] * 2
    # ... or, when every layer carries the callback's depth index, that index's order.
    _independent_run(tmp_path / "indexed", ["02-alpha", "00-zeta", "01-mid"], layout=None)
    reports = read_tensorboard(tmp_path / "indexed")
    assert [r.names for r in reports] == [["zeta", "mid", "alpha"]] * 2


def test_tensorboard_histograms_on_one_grid(tmp_path: Path) -> None:
    # Per-sample bins far from the SROP bins: one grid, the gap filled with empty bins.
    edges = np.linspace(0.0, 1.0, 11)
    writer = SummaryWriter(str(tmp_path))
    for tag, lo, counts in (("srop/conv", 1, [2, 0, 3]), ("srop/conv/per_sample_mean", 6, [4])):
        part = edges[lo : lo + len(counts) + 1]
        writer.add_histogram_raw(
            tag,
            min=float(part[0]),
            max=float(part[-1]),
            num=sum(counts),
            sum=0.5 * sum(counts),
            sum_squares=0.3 * sum(counts),
            bucket_limits=part[1:].tolist(),
            bucket_counts=counts,
            global_step=2,
        )
    writer.close()
    (report,) = read_tensorboard(tmp_path)
    layer = report["conv"]
    np.testing.assert_allclose(layer.edges, edges[1:8], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(layer.counts, [2, 0, 3, 0, 0, 0])
    np.testing.assert_array_equal(layer.sample_counts, [0, 0, 0, 0, 0, 4])
    assert layer.stats["count"] == 5 and layer.stats["mean"] == pytest.approx(0.5)
    assert layer.stats["std"] == pytest.approx(math.sqrt(0.3 - 0.25))
    assert layer.stats["min"] == pytest.approx(0.15) and layer.stats["max"] == pytest.approx(0.35)
    assert layer.stats["sample_mean"] == pytest.approx(0.65)  # the bin's centre
    assert math.isnan(layer.stats["flat"]) and report.epoch is None


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def test_csv_equals_tensorboard_scalars(run: Run) -> None:
    tb = read_tensorboard(run.tb_dir)
    csv_reports = read_csv(run.csv_dir / "metrics.csv")
    assert len(csv_reports) == EPOCHS
    assert [(r.epoch, r.step) for r in csv_reports] == [(r.epoch, r.step) for r in tb]
    # CSVLogger sorts its columns; with the depth index in the tags that is forward order.
    assert csv_reports[0].names == FORWARD
    lite = read_csv(run.csv_dir / "metrics.csv", prefix="lite")  # plain names: alphabetical
    assert lite[0].names == sorted(FORWARD)
    assert read_csv(run.csv_dir, prefix="lite", order=FORWARD)[0].names == FORWARD
    for from_csv, from_tb in zip(csv_reports, tb, strict=True):
        for name in FORWARD:
            for stat in STATS:
                assert from_csv[name].stats[stat] == pytest.approx(
                    from_tb[name].stats[stat], rel=1e-6
                )
            assert math.isnan(from_csv[name].stats["std"])
            assert from_csv[name].edges.shape == from_csv[name].counts.shape == (0,)
    ordered = read_csv(run.csv_dir, order=tb[0].names)
    assert [r.names for r in ordered] == [FORWARD] * EPOCHS
    assert [layer.depth for layer in ordered[0]] == [0, 1, 2, 3]


def test_round_trip_through_loggers_with_their_own_prefix(tmp_path: Path) -> None:
    # Written by a real Trainer through loggers that have a `prefix` argument of their own
    # ("exp-" in front of every tag and of `epoch`), read back with the tags' whole prefix.
    L.seed_everything(0, verbose=False)
    cb = SROPCallback(stats=("mean", "q75"), histogram_bins=None, log_figure=False)
    keep = Keep(cb)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0, prefix="exp")
    csv_logger = CSVLogger(tmp_path, name="csv", version=0, prefix="exp")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        callbacks=[cb, keep],
        logger=[tb, csv_logger],
        limit_val_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    with pytest.warns(match="CSVLogger has no histogram support"):
        trainer.fit(Net(), DataLoader(_data(16, 0), batch_size=8), DataLoader(_data(16, 1)))
    # the layers' own runs sit under the callback's prefix; their tags carry the logger's
    accumulator = EventAccumulator(str(tmp_path / "tb" / "version_0" / "srop" / "00-stem"))
    accumulator.Reload()
    assert "exp-srop/mean" in accumulator.Tags()["scalars"]
    assert "exp-srop_histograms/per_map" in accumulator.Tags()["histograms"]
    from_tb = read_tensorboard(tmp_path / "tb", prefix="exp-srop")
    from_csv = read_csv(tmp_path / "csv", prefix="exp-srop", order=FORWARD)
    for back in (from_tb, from_csv):
        assert [(r.epoch, r.step) for r in back] == [(r.epoch, r.step) for r in keep.reports]
        assert [r.epoch for r in back] == [0, 1]
        for read, written in zip(back, keep.reports, strict=True):
            assert read.names == written.names == FORWARD
            for name in FORWARD:
                for stat in ("mean", "q75", "change"):
                    expected = written[name].stats.get(stat, written[name].extra.get(stat))
                    assert expected is not None and math.isfinite(expected)
                    got = read[name].stats.get(stat, read[name].extra.get(stat))
                    assert got == pytest.approx(expected, rel=1e-6), (name, stat)
    # the measured bins come back as logged (empty outer bins trimmed)
    written_layer = keep.reports[-1]["body"]
    np.testing.assert_array_equal(from_tb[-1]["body"].counts.sum(), written_layer.counts.sum())


# ------------------------------------------------------------------------------------------
# JSON files, detection, errors
# ------------------------------------------------------------------------------------------


def test_json_round_trip_through_read_reports(run: Run, tmp_path: Path) -> None:
    for report in reversed(run.keep.reports):  # written out of order
        report.to_json(tmp_path / f"epoch_{report.epoch}.json")
    (tmp_path / "config.json").write_text('{"lr": 0.1}')  # not a report: left alone
    back = read_reports(tmp_path)
    assert [r.epoch for r in back] == list(range(EPOCHS))
    assert back == run.keep.reports
    assert read_run(tmp_path) == run.keep.reports
    assert read_run(tmp_path / "epoch_2.json") == [run.keep.reports[2]]


def test_read_run_dispatch(run: Run) -> None:
    tb = read_tensorboard(run.tb_dir)
    assert [r.names for r in read_run(run.tb_dir)] == [r.names for r in tb]
    assert read_run(run.root / "tb")[-1]["stem"].counts.size > 0
    events = next(run.tb_dir.glob("events.out.tfevents.*"))
    assert [r.step for r in read_run(events)] == [r.step for r in tb]
    from_csv = read_run(run.csv_dir)
    assert from_csv[0].names == FORWARD and from_csv[0]["stem"].counts.size == 0
    assert read_run(run.csv_dir / "metrics.csv")[1]["body"].stats["mean"] == pytest.approx(
        tb[1]["body"].stats["mean"], rel=1e-6
    )


def test_clear_errors(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    for reader in (read_run, read_tensorboard, read_csv, read_reports):
        with pytest.raises(FileNotFoundError, match=r"no such file or directory: .*nowhere"):
            reader(missing)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        ValueError, match=r"nothing SROP-like in .*report JSON.*tfevents.*metrics\.csv"
    ):
        read_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no TensorBoard event files"):
        read_tensorboard(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no report JSON files .*SROPReport\.to_json"):
        read_reports(tmp_path)
    with pytest.raises(
        ValueError, match=r"no SROP columns .*'srop2/<layer>/<statistic>'.*columns: .*val_acc"
    ):
        read_csv(run.csv_dir, prefix="srop2")
    with pytest.raises(ValueError, match=r"no SROP values in .*'other/<layer>/<statistic>'"):
        read_tensorboard(run.tb_dir, prefix="other")
    with pytest.raises(ValueError, match=r"unknown statistic 'average'"):
        history(read_csv(run.csv_dir), "average")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_accumulator", None)
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing", None)
    with pytest.raises(ImportError, match=r"`pip install tensorboard`"):
        read_tensorboard(run.tb_dir)
    assert len(read_csv(run.csv_dir)) == EPOCHS  # works without tensorboard


# ------------------------------------------------------------------------------------------
# Curves, tables, figures
# ------------------------------------------------------------------------------------------


def test_history_and_long_csv(run: Run, tmp_path: Path) -> None:
    reports = read_tensorboard(run.tb_dir)
    curves = history(reports, "median")
    assert list(curves) == FORWARD
    for name in FORWARD:
        assert [e for e, _ in curves[name]] == list(range(EPOCHS))
        assert [v for _, v in curves[name]] == [r[name].stats["median"] for r in reports]
    text = to_csv(reports, tmp_path / "run.csv")
    assert (tmp_path / "run.csv").read_text() == text
    lines = text.splitlines()
    # the change since the baseline (baseline=True) follows the statistics
    assert lines[0].split(",") == ["epoch", "step", "depth", "layer", *STATISTICS, "change"]
    assert len(lines) == 1 + EPOCHS * len(FORWARD)
    first = lines[1].split(",")
    assert first[:4] == ["0", str(reports[0].step), "0", "stem"]
    assert float(first[4]) == reports[0]["stem"].stats["mean"]


def test_plot_over_epochs(run: Run, tmp_path: Path) -> None:
    reports = read_tensorboard(run.tb_dir)
    accuracy = [(r.epoch or 0, 0.3 + 0.1 * i) for i, r in enumerate(reports)]
    figure = plot_over_epochs(reports, statistic="median", accuracy=accuracy, title="a run")
    srop_ax = figure.axes[0]
    assert [line.get_label() for line in srop_ax.get_lines()] == FORWARD
    np.testing.assert_allclose(
        srop_ax.get_lines()[0].get_ydata(), [r["stem"].stats["median"] for r in reports]
    )
    assert srop_ax.get_ylabel() == "median SROP (cycles / pixel)"
    assert len(figure.axes) == 2 and figure.axes[1].get_ylabel() == "accuracy"
    path = save_figure(figure, tmp_path / "over_epochs.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas
    with pytest.raises(ValueError, match="at least one report"):
        plot_over_epochs([])
