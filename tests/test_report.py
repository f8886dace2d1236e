"""SROPReport: the same numbers from profile and the callback, exact JSON round trips, tables."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _srop_reference import srop_reference as np_srop
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import STATISTICS, SROPCallback, SROPReport, compare, profile


class Lit(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, stride=2),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0])


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, 1, 16, 16, generator=g).cumsum(-1)
    return TensorDataset(x, torch.zeros(24))


def test_profile_equals_callback_for_the_same_batches(tmp_path: Path) -> None:
    model = Lit()
    loader = DataLoader(data(), batch_size=8)
    cb = SROPCallback(num_batches=2, save_reports=True)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(model, loader, verbose=False)
    offline = profile(model, loader, num_batches=2)
    assert cb.last_report is not None
    assert offline.names == cb.last_report.names == ["features.0", "features.2", "features.3"]
    for mine, theirs in zip(offline, cb.last_report, strict=True):
        assert mine.stats.keys() == theirs.stats.keys()
        for key in STATISTICS:
            assert mine.stats[key] == pytest.approx(theirs.stats[key], rel=1e-12, nan_ok=True)
        assert np.array_equal(mine.counts, theirs.counts)
        assert mine.meta == theirs.meta
    # the layer's own description, checked against the model
    meta = {r.name: r.meta for r in offline}
    assert meta["features.0"] is not None and meta["features.0"].map_size == (16, 16)
    assert meta["features.2"].channels == 4 and meta["features.2"].downscale == 2.0  # type: ignore[union-attr]
    assert meta["features.3"].map_size == (3, 3)  # type: ignore[union-attr]
    assert meta["features.3"].downscale == pytest.approx(16 / 3)  # type: ignore[union-attr]
    assert offline.skipped.keys() == {"features.4"}  # 1 x 1 maps, the default choice: quiet
    assert offline.num_batches == 2 and cb.last_report.num_batches == 2
    # values against the float64 reference
    x = torch.cat([b[0] for b in list(loader)[:2]])
    with torch.no_grad():
        ref = np_srop(model.features[0](x).double().numpy()).ravel()
    assert offline["features.0"].stats["mean"] == pytest.approx(ref.mean(), rel=1e-6)
    # the saved report reads back equal
    (saved,) = sorted((tmp_path / "srop_reports").glob("*.json"))
    assert SROPReport.from_json(saved) == cb.last_report


def test_json_round_trip_is_exact_and_csv_table_pandas() -> None:
    model = Lit()
    x = data().tensors[0]
    x[0, 0] = 1.0  # a constant map: flat, its statistics still finite
    report = profile(model, x, label="trained", unit="input")
    text = report.to_json()
    back = SROPReport.from_json(text)
    assert back == report
    for a, b in zip(report, back, strict=True):
        assert a.stats == pytest.approx(b.stats, nan_ok=True, rel=0, abs=0)
        assert a.edges.dtype == b.edges.dtype == np.float64
        assert np.array_equal(a.counts, b.counts) and np.array_equal(a.edges, b.edges)
    assert json.loads(text)["options"]["unit"] == "input"
    assert back.label == "trained" and back.model == "Lit"
    changed = json.loads(text)
    changed["layers"][0]["counts"][3] += 1
    assert SROPReport.from_dict(changed) != report  # equality sees one histogram count

    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["layer"] for r in rows] == report.names
    assert float(rows[0]["mean"]) == report.layers[0].stats["mean"]
    assert rows[1]["map_size"] == "8x8" and rows[1]["module_type"] == "MaxPool2d"
    table = report.table()
    assert table.splitlines()[0].split()[:4] == ["depth", "layer", "type", "maps"]
    assert "features.2" in table and "skipped: features.4" in table
    assert repr(report).startswith("SROPReport(Lit, 3 layers, 1 batches")
    import pandas as pd

    frame = report.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == report.names


def test_from_json_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        SROPReport.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="expected report format 1, got None"):
        SROPReport.from_json("{}")
    report = profile(Lit(), data().tensors[0][:2])
    with pytest.raises(KeyError, match=r"no layer 'conv'; layers: 'features.0'"):
        report["conv"]
    with pytest.raises(ValueError, match=r"unknown statistic\(s\) \['avg'\]"):
        report.as_dict(["avg"])


def test_compare_aligns_layers_by_name_and_draws_one_line_per_report(tmp_path: Path) -> None:
    model = Lit()
    x = data().tensors[0]
    smooth = profile(model, x, label="smooth")
    rough = profile(model, torch.randn_like(x), layers=["features.0", "features.3"], label="noise")
    path = tmp_path / "a.json"
    rough.to_json(path)
    figure = compare([smooth, path], log=True)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "features.0",
        "features.2",
        "features.3",
    ]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert set(lines) == {"smooth", "noise"}
    assert lines["smooth"][1] == pytest.approx(smooth["features.2"].stats["mean"])
    assert math.isnan(lines["noise"][1])  # not measured there: a gap
    assert ax.get_yscale() == "log"
    per_input = compare([smooth], unit="input")
    y = per_input.axes[0].get_lines()[0].get_ydata()
    assert y[1] == pytest.approx(smooth["features.2"].stats["mean"] / 2.0)
    with pytest.raises(ValueError, match="one label per report"):
        compare([smooth], labels=["a", "b"])


def test_tag_scheme_round_trip() -> None:
    # Every encoder of the tag scheme against its decoder, with a separator of another kind.
    from lightning_srop.tags import (
        depth_labels,
        histogram_key,
        join_tag,
        layer_run_histogram_tag,
        layer_run_key,
        logger_prefix_splits,
        scalar_key,
        split_depth_label,
        with_logger_prefix,
    )

    index = {f"block.{i}": i for i in range(12)}
    labels = depth_labels(index, index)
    assert labels["block.3"] == "03-block.3" and labels["block.11"] == "11-block.11"
    assert sorted(labels.values()) == [labels[n] for n in index]  # forward order
    assert [split_depth_label(labels[n]) for n in index] == list(enumerate(index))
    assert split_depth_label("block.3") is None
    for sep in ("/", "."):
        tag = join_tag("srop", "03-a/b", "q75", separator=sep)
        assert scalar_key(tag, "srop", sep) == ("03-a/b", "q75")
        assert scalar_key(join_tag("srop", "a", "loss", separator=sep), "srop", sep) is None
        assert histogram_key(join_tag("srop", "a", separator=sep), "srop", sep) == (
            "a",
            "per_map",
        )
        per_sample = join_tag("srop", "a", "per_sample_mean", separator=sep)
        assert histogram_key(per_sample, "srop", sep) == ("a", "per_sample_mean")
        assert layer_run_key(join_tag("srop", "change", separator=sep), "srop", sep) == (
            "scalar",
            "change",
        )
        hist = layer_run_histogram_tag("srop", "per_sample_mean", sep)
        assert hist == f"srop_histograms{sep}per_sample_mean"
        assert layer_run_key(hist, "srop", sep) == ("histogram", "per_sample_mean")
    tagged = with_logger_prefix("my-srop/mean", "exp")
    assert tagged == "exp-my-srop/mean" and with_logger_prefix("srop/mean", "") == "srop/mean"
    assert ("exp", "my-srop") in logger_prefix_splits("exp-my-srop")
    assert logger_prefix_splits("srop") == [("", "srop")]
