"""Histograms and figures written to real loggers and read back from what they wrote.

TensorBoard event files are read with TensorBoard's own ``EventAccumulator``; W&B offline runs
by decoding the run's ``.wandb`` file (LevelDB-log framing of ``wandb_internal.Record`` protos).
Expected values are built in the tests from the bins we put in, never from the module's output.
"""

from __future__ import annotations

import glob
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _wandb_reader import read_wandb_records as _read_wandb_records
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_srop.loggers import (
    WANDB_MAX_BINS,
    log_figure,
    log_histograms,
    rebin,
    trim_empty_bins,
)
from lightning_srop.report import LayerReport
from lightning_srop.statistics import SROPStatistics

NUM_BINS = 1024
EDGES = np.linspace(0.0, math.sqrt(2.0) / 2.0, NUM_BINS + 1)
NAN_STATS = {"mean": math.nan, "std": math.nan, "count": 0.0}


def _report(
    name: str,
    bins: dict[int, int],
    sample_bins: dict[int, int] | None = None,
    *,
    stats: dict[str, float] | None = None,
    depth: int = 0,
) -> LayerReport:
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    for index, count in bins.items():
        counts[index] = count
    sample_counts = np.zeros(NUM_BINS, dtype=np.int64)
    for index, count in (sample_bins or {}).items():
        sample_counts[index] = count
    return LayerReport(name, dict(stats or NAN_STATS), EDGES.copy(), counts, sample_counts, depth)


def _small_figure() -> Figure:
    figure = Figure(figsize=(3.0, 2.0), dpi=50)
    ax = figure.add_subplot()
    ax.plot([0, 1, 2], [0.3, 0.2, 0.1])
    return figure


def _accumulator(logger: TensorBoardLogger) -> EventAccumulator:
    logger.experiment.flush()
    acc = EventAccumulator(
        logger.log_dir, size_guidance={"histograms": 0, "images": 0, "scalars": 0}
    )
    acc.Reload()
    return acc


# ------------------------------------------------------------------------------------------
# rebin / trim_empty_bins
# ------------------------------------------------------------------------------------------


def test_rebin_1024_to_512_sums_pairs() -> None:
    counts = np.arange(NUM_BINS, dtype=np.int64) % 7
    merged, edges = rebin(counts, EDGES, 512)
    np.testing.assert_array_equal(merged, counts[0::2] + counts[1::2])
    np.testing.assert_array_equal(edges, EDGES[0::2])
    assert merged.dtype == np.int64


def test_rebin_leaves_small_histograms_alone_and_handles_remainders() -> None:
    counts, edges = np.array([1, 2, 3]), np.array([0.0, 1.0, 2.0, 3.0])
    same_counts, same_edges = rebin(counts, edges, 3)
    np.testing.assert_array_equal(same_counts, counts)
    np.testing.assert_array_equal(same_edges, edges)
    # 7 bins into at most 3: runs of 3, 3, 1.
    merged, new_edges = rebin(np.arange(1, 8), np.arange(8.0), 3)
    np.testing.assert_array_equal(merged, [6, 15, 7])
    np.testing.assert_array_equal(new_edges, [0.0, 3.0, 6.0, 7.0])


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 1000), min_size=1, max_size=1500),
    max_bins=st.integers(1, 600),
)
def test_rebin_is_exact(counts: list[int], max_bins: int) -> None:
    edges = np.cumsum(np.r_[0.0, np.full(len(counts), 0.5)])
    merged, new_edges = rebin(np.array(counts), edges, max_bins)
    assert merged.size <= max_bins
    assert new_edges.size == merged.size + 1
    assert int(merged.sum()) == sum(counts)
    assert new_edges[0] == edges[0] and new_edges[-1] == edges[-1]
    assert set(new_edges.tolist()) <= set(edges.tolist())
    # Every merged count is the sum of the original bins between its edges.
    positions = np.searchsorted(edges, new_edges)
    for i, total in enumerate(merged):
        assert total == sum(counts[positions[i] : positions[i + 1]])


def test_trim_empty_bins() -> None:
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    counts[[10, 12]] = [4, 1]
    trimmed, edges = trim_empty_bins(counts, EDGES)
    np.testing.assert_array_equal(trimmed, [4, 0, 1])
    np.testing.assert_array_equal(edges, EDGES[10:14])
    empty_counts, empty_edges = trim_empty_bins(np.zeros(4, dtype=np.int64), np.arange(5.0))
    assert empty_counts.size == 0 and empty_edges.size == 0


@pytest.mark.parametrize(
    ("counts", "edges", "message"),
    [
        (np.ones(3), np.arange(3.0), "shape (4,)"),
        (np.ones(3), np.array([0.0, 2.0, 1.0, 3.0]), "strictly increasing"),
        (np.array([1.0, math.nan, 0.0]), np.arange(4.0), "integer `counts`"),
        (np.array([1, -1, 0]), np.arange(4.0), "`counts` >= 0"),
    ],
)
def test_malformed_histograms_are_named(counts: Any, edges: Any, message: str) -> None:
    with pytest.raises(
        ValueError, match="rebin: .*" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        rebin(counts, edges, 2)


def test_rebin_rejects_bad_max_bins() -> None:
    with pytest.raises(ValueError, match=r"rebin: expected `max_bins` to be an int >= 1, got 0"):
        rebin(np.ones(3), np.arange(4.0), 0)


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------


def test_tensorboard_histograms_round_trip(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    stats = {"mean": 0.3, "std": 0.02, "count": 8.0}
    conv = _report("features.0", {300: 3, 305: 5}, {301: 2}, stats=stats)
    pool = _report("features.2", {0: 1, 1023: 2}, {512: 2})
    for step in (7, 19):
        assert log_histograms([logger], [conv, pool], step=step) == []
    acc = _accumulator(logger)
    assert sorted(acc.Tags()["histograms"]) == [
        "srop/features.0",
        "srop/features.0/per_sample_mean",
        "srop/features.2",
        "srop/features.2/per_sample_mean",
    ]

    events = acc.Histograms("srop/features.0")
    assert [e.step for e in events] == [7, 19]
    h = events[0].histogram_value
    # Bins 300..305 kept (empty outer bins trimmed); limits are right edges.
    assert list(h.bucket) == [3, 0, 0, 0, 0, 5]
    np.testing.assert_array_equal(h.bucket_limit, EDGES[301:307])
    assert h.min == EDGES[300] and h.max == EDGES[306]
    assert h.num == 8
    # From the exact statistics: sum = n * mean, sum of squares = n * (std^2 + mean^2).
    assert h.sum == pytest.approx(8 * 0.3)
    assert h.sum_squares == pytest.approx(8 * (0.02**2 + 0.3**2))

    # A layer spanning the whole range keeps all bins; NaN stats: sums from bin centres.
    h = acc.Histograms("srop/features.2")[1].histogram_value
    assert len(h.bucket) == NUM_BINS and h.num == 3
    assert h.bucket[0] == 1 and h.bucket[-1] == 2 and sum(h.bucket) == 3
    centers = (EDGES[:-1] + EDGES[1:]) / 2
    assert h.sum == pytest.approx(centers[0] + 2 * centers[-1])
    assert math.isfinite(h.sum_squares)

    h = acc.Histograms("srop/features.2/per_sample_mean")[0].histogram_value
    assert list(h.bucket) == [2] and h.num == 2
    np.testing.assert_array_equal(h.bucket_limit, [EDGES[513]])
    assert h.min == EDGES[512] < h.max == EDGES[513]


def test_tensorboard_real_metric_counts_every_valid_map(tmp_path: Path) -> None:
    torch.manual_seed(0)
    metric = SROPStatistics()
    metric.update(torch.randn(3, 5, 16, 16))
    metric.update(torch.zeros(2, 5, 16, 16))  # flat: not in the histogram
    report = LayerReport.from_metric("conv", metric)
    logger = TensorBoardLogger(tmp_path, name="tb")
    log_histograms([logger], [report], step=0)
    h = _accumulator(logger).Histograms("srop/conv")[0].histogram_value
    assert h.num == 15 == sum(h.bucket)
    assert h.sum == pytest.approx(15 * report.stats["mean"])
    assert h.min <= report.stats["min"] and report.stats["max"] <= h.max


def test_tensorboard_skips_empty_layers_and_never_writes_nan(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    dead = _report("dead_relu", {})  # all maps flat: no counts, NaN statistics
    single = _report("single", {0: 4}, {0: 2})  # one bin at the lower edge 0
    log_histograms([logger], [dead, single], step=3)
    acc = _accumulator(logger)
    assert sorted(acc.Tags()["histograms"]) == ["srop/single", "srop/single/per_sample_mean"]
    h = acc.Histograms("srop/single")[0].histogram_value
    assert list(h.bucket) == [4] and h.min == 0.0 and h.max == EDGES[1] > 0.0
    for value in (h.min, h.max, h.sum, h.sum_squares, *h.bucket_limit):
        assert math.isfinite(value)

    # Nothing to write at all: no histogram, no crash.
    other = TensorBoardLogger(tmp_path, name="empty")
    assert log_histograms([other], [dead], step=0) == []
    assert log_histograms([other], [], step=0) == []
    assert _accumulator(other).Tags()["histograms"] == []


def test_tensorboard_logger_prefix_is_honoured(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", prefix="val")
    log_histograms([logger], [_report("conv", {5: 1})], step=1, prefix="s")
    log_figure([logger], _small_figure(), tag="s/profile", step=1)
    acc = _accumulator(logger)
    assert "val-s/conv" in acc.Tags()["histograms"]
    assert acc.Tags()["images"] == ["val-s/profile"]


def test_tensorboard_figure_round_trip(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    figure = _small_figure()
    assert log_figure([logger], figure, tag="srop/profile", step=4) == []
    assert log_figure([logger], figure, tag="srop/profile", step=9) == []
    events = _accumulator(logger).Images("srop/profile")
    assert [e.step for e in events] == [4, 9]
    # 3 x 2 inches at the figure's 50 dpi.
    assert (events[0].width, events[0].height) == (150, 100)
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(events[0].encoded_image_string)) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (100, 150, 3)
    assert pixels.min() < 128 < pixels.max()  # something was drawn on white
    assert figure.axes and figure.get_size_inches().tolist() == [3.0, 2.0]  # left intact


def test_pytorch_lightning_and_custom_loggers(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    class WriterLogger(Logger):
        """A logger of neither package's known classes, writing with a SummaryWriter."""

        def __init__(self, root: Path) -> None:
            super().__init__()
            self._writer = SummaryWriter(str(root))

        @property
        def experiment(self) -> SummaryWriter:
            return self._writer

        @property
        def name(self) -> str:
            return "writer"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    pl_logger = pl.loggers.TensorBoardLogger(tmp_path / "pl", name="tb")
    custom = WriterLogger(tmp_path / "custom")
    pl_csv = pl.loggers.CSVLogger(tmp_path / "csv")
    report = _report("conv", {10: 2})
    assert log_histograms([pl_logger, custom, pl_csv], [report], step=2) == ["CSVLogger"]
    assert log_figure([pl_logger, custom, pl_csv], _small_figure(), tag="p", step=2) == [
        "CSVLogger"
    ]
    custom.experiment.flush()
    for path in (pl_logger.log_dir, str(tmp_path / "custom")):
        acc = EventAccumulator(path, size_guidance={"histograms": 0, "images": 0})
        acc.Reload()
        assert acc.Histograms("srop/conv")[0].histogram_value.num == 2
        assert acc.Images("p")[0].step == 2


def test_non_zero_rank_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = TensorBoardLogger(tmp_path, name="tb")
    assert log_histograms([logger], [_report("conv", {1: 1})], step=0) == []
    assert log_figure([logger], _small_figure(), tag="p", step=0) == []
    assert glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True) == []


def test_csv_logger_is_reported_unsupported_once(tmp_path: Path) -> None:
    csv_a, csv_b = CSVLogger(tmp_path / "a"), CSVLogger(tmp_path / "b")
    tb = TensorBoardLogger(tmp_path, name="tb")
    report = _report("conv", {1: 1})
    assert log_histograms([csv_a, tb, csv_b], [report], step=0) == ["CSVLogger"]
    assert log_figure([csv_a, csv_b], _small_figure(), tag="p", step=0) == ["CSVLogger"]
    assert log_histograms([], [report], step=0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": -1}, r"log_histograms: expected `step` to be an int >= 0, got -1"),
        ({"step": True}, r"`step` .*got True"),
        ({"step": 1.5}, r"`step` .*got 1.5"),
        ({"step": 0, "prefix": ""}, r"log_histograms: expected `prefix` to be a non-empty str"),
    ],
)
def test_log_histograms_argument_errors(tmp_path: Path, kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log_histograms([CSVLogger(tmp_path)], [_report("conv", {1: 1})], **kwargs)


def test_log_histograms_names_a_malformed_report(tmp_path: Path) -> None:
    report = _report("conv", {1: 1})
    broken = LayerReport("broken", {}, EDGES[:10], report.counts, report.sample_counts)
    with pytest.raises(
        ValueError, match=r"report 'broken' \(counts\): expected `edges` of shape \(1025,\)"
    ):
        log_histograms([CSVLogger(tmp_path)], [report, broken], step=0)


def test_log_figure_argument_errors(tmp_path: Path) -> None:
    loggers = [CSVLogger(tmp_path)]
    with pytest.raises(ValueError, match=r"log_figure: expected `tag` to be a non-empty str"):
        log_figure(loggers, _small_figure(), tag="", step=0)
    with pytest.raises(ValueError, match=r"log_figure: expected `step` .*got -3"):
        log_figure(loggers, _small_figure(), tag="p", step=-3)
    with pytest.raises(ValueError, match=r"expected `figure` to be a matplotlib Figure, got str"):
        log_figure(loggers, "figure", tag="p", step=0)  # type: ignore[arg-type]


def test_log_figure_leaves_no_pyplot_figures(tmp_path: Path) -> None:
    # torchmetrics imports pyplot, so the check is that no figure is registered with it.
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    log_figure([TensorBoardLogger(tmp_path)], _small_figure(), tag="p", step=0)
    assert plt.get_fignums() == before


# ------------------------------------------------------------------------------------------
# Weights & Biases (offline)
# ------------------------------------------------------------------------------------------


def _wandb_history(save_dir: Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every history row of the single offline run under ``save_dir``, values JSON-decoded,
    nested keys joined with ``/`` (a histogram ``k`` shows up as ``k/values``, ``k/bins``).

    ``run.finish()`` can return before wandb's service process has written the whole file, so
    this waits (up to ``timeout`` seconds) for the run's closing ``exit`` record.
    """
    deadline = time.monotonic() + timeout
    while True:
        files = glob.glob(str(save_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
        records = _read_wandb_records(Path(files[0])) if len(files) == 1 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete offline run under {save_dir}: {files}")
        time.sleep(0.2)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def _wandb_settings() -> Any:
    import wandb

    return wandb.Settings(x_disable_stats=True, x_disable_meta=True, console="off")


def _spread_report(name: str) -> LayerReport:
    """A histogram over 900 of the 1024 bins (so W&B needs merging) and 2 sample bins."""
    bins = {i: (i % 5) + 1 for i in range(50, 950)}
    return _report(name, bins, {100: 1, 700: 3}, stats={"mean": 0.35, "std": 0.1, "count": 0})


def test_wandb_histograms_and_figure(wandb_offline: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        offline=True, save_dir=str(wandb_offline), project="srop", settings=_wandb_settings()
    )
    spread, narrow = _spread_report("features.0"), _report("features.3", {400: 6, 402: 1})
    dead = _report("dead", {})
    # Lightning logs scalars first (wandb's own step advances), then the callback logs.
    logger.log_metrics({"val/acc": 0.5}, step=10)
    assert log_histograms([logger], [spread, narrow, dead], step=10) == []
    assert log_figure([logger], _small_figure(), tag="srop/profile", step=10) == []
    logger.log_metrics({"val/acc": 0.6}, step=20)
    assert log_histograms([logger], [spread, narrow], step=20) == []
    logger.experiment.finish()

    rows = _wandb_history(wandb_offline)
    steps = [row["_step"] for row in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # never backwards
    hist_rows = [row for row in rows if "srop/features.0/values" in row]
    assert [row["trainer/global_step"] for row in hist_rows] == [10, 20]
    for row in hist_rows:
        assert row["srop/features.0/_type"] == "histogram"
        values, bins = row["srop/features.0/values"], row["srop/features.0/bins"]
        assert len(values) <= WANDB_MAX_BINS and len(bins) == len(values) + 1
        assert sum(values) == int(spread.counts.sum())
        # Trimmed to bins 50..949 (900 bins), merged in pairs: exactly 450 bins.
        expected = spread.counts[50:950].reshape(450, 2).sum(axis=1)
        assert values == expected.tolist()
        np.testing.assert_array_equal(bins, EDGES[50:951:2])
        assert all(math.isfinite(b) for b in bins) and bins[0] < bins[-1]

        # Narrow layer: 3 bins, no merging; per-sample histograms under their own key.
        assert row["srop/features.3/values"] == [6, 0, 1]
        np.testing.assert_array_equal(row["srop/features.3/bins"], EDGES[400:404])
        assert sum(row["srop/features.0/per_sample_mean/values"]) == 4
        assert not any(key.startswith("srop/dead") for key in row)

    (image_row,) = [row for row in rows if "srop/profile/_type" in row]
    assert image_row["srop/profile/_type"] == "image-file"
    assert image_row["trainer/global_step"] == 10
    assert (image_row["srop/profile/width"], image_row["srop/profile/height"]) == (150, 100)
    (run_dir,) = glob.glob(str(wandb_offline / "wandb" / "offline-run-*"))
    assert (Path(run_dir) / "files" / image_row["srop/profile/path"]).is_file()


def test_pytorch_lightning_wandb_logger(wandb_offline: Path) -> None:
    import pytorch_lightning as pl

    logger = pl.loggers.WandbLogger(
        offline=True, save_dir=str(wandb_offline), project="srop", settings=_wandb_settings()
    )
    assert log_histograms([logger], [_report("conv", {3: 2})], step=6) == []
    assert log_figure([logger], _small_figure(), tag="fig", step=6) == []
    logger.experiment.finish()
    rows = _wandb_history(wandb_offline)
    (hist_row,) = [row for row in rows if "srop/conv/values" in row]
    assert hist_row["srop/conv/values"] == [2] and hist_row["trainer/global_step"] == 6
    (image_row,) = [row for row in rows if "fig/_type" in row]
    assert image_row["trainer/global_step"] == 6


def test_wandb_run_behind_an_unknown_logger(wandb_offline: Path) -> None:
    import wandb

    run = wandb.init(
        mode="offline", dir=str(wandb_offline), project="srop", settings=_wandb_settings()
    )

    class RunLogger(Logger):
        @property
        def experiment(self) -> Any:
            return run

        @property
        def name(self) -> str:
            return "run"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    try:
        assert log_histograms([RunLogger()], [_report("conv", {3: 2})], step=5) == []
        assert log_figure([RunLogger()], _small_figure(), tag="fig", step=5) == []
    finally:
        run.finish()
    rows = _wandb_history(wandb_offline)
    (hist_row,) = [row for row in rows if "srop/conv/values" in row]
    assert hist_row["srop/conv/values"] == [2] and hist_row["trainer/global_step"] == 5
    (image_row,) = [row for row in rows if "fig/_type" in row]
    assert image_row["trainer/global_step"] == 5


# ------------------------------------------------------------------------------------------
# Steps in a real Trainer
# ------------------------------------------------------------------------------------------


def test_logger_step_matches_lightning_scalars(tmp_path: Path) -> None:
    import lightning.pytorch as lp
    from torch import nn

    from lightning_srop.loggers import logger_step

    class Model(lp.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 2)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val/acc", (self.net(x).argmax(1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    global_steps: list[int] = []

    class Writer(lp.Callback):
        def on_validation_epoch_end(self, trainer: lp.Trainer, module: lp.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            global_steps.append(trainer.global_step)
            log_histograms(trainer.loggers, [_report("net", {7: 1})], step=logger_step(trainer))

    data = torch.utils.data.TensorDataset(torch.randn(12, 4), torch.randint(0, 2, (12,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = lp.Trainer(
        max_epochs=2,
        logger=logger,
        callbacks=[Writer()],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(Model(), loader, loader)
    acc = _accumulator(logger)
    scalar_steps = [e.step for e in acc.Scalars("val/acc")]
    assert scalar_steps == [2, 5]  # 3 batches per epoch; Lightning logs before the last counts
    assert [e.step for e in acc.Histograms("srop/net")] == scalar_steps
    assert global_steps == [3, 6]  # what `trainer.global_step` would have given
