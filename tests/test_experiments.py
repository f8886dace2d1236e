"""The paper's sanity checks as experiments: tiny runs through their command-line entry points,
CSV and PNG read back; effect directions checked only where robust at this size."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recipes.experiments import architecture_variation, input_variation, training_stages

pytestmark = pytest.mark.usefixtures("one_thread")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _assert_png(path: Path, min_width: int = 600) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width >= min_width and height >= 300


# --------------------------------------------------------------------------------------------
# input variation


def test_mix_cases() -> None:
    digits = torch.rand(6, 1, 28, 28)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, pattern = input_variation.mix(digits, labels, 0.0, "I", seed=0)
    assert torch.equal(mixed, digits)
    mixed, pattern = input_variation.mix(digits, labels, 1.0, "I", seed=0)
    assert torch.equal(mixed, pattern) and 0.0 <= float(pattern.min()) <= float(pattern.max()) <= 1
    # CASE I: the grating is the label's; CASE II: drawn independently of the label
    generator = torch.Generator().manual_seed(0)
    many = torch.arange(1000) % 10
    assert torch.equal(input_variation.pattern_index(many, "I", generator), many)
    noise = input_variation.pattern_index(many, "II", generator)
    assert set(noise.tolist()) == set(range(10))
    assert 0.05 < float((noise == many).float().mean()) < 0.15  # chance level, 1 / 10
    # the gratings are distinct: a cosine at frequency f has its SROP near f
    freqs, _ = input_variation.grating_bank()
    assert len(set(freqs.tolist())) == 10
    from lightning_srop import spectral_rolloff

    _, pattern = input_variation.mix(digits, labels, 1.0, "I", seed=0)
    srop = spectral_rolloff(pattern[:, 0])
    torch.testing.assert_close(srop, freqs[labels], atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="case='III'"):
        input_variation.mix(digits, labels, 0.5, "III", seed=0)


def test_input_variation_end_to_end(tmp_path: Path) -> None:
    rows = input_variation.main(
        [
            "--out-dir",
            str(tmp_path),
            "--weights",
            "0",
            "0.9",
            "--epochs",
            "4",
            "--max-train",
            "500",
            "--max-val",
            "150",
        ]
    )
    table = _read_csv(tmp_path / "input_variation.csv")
    assert len(table) == len(rows) == 4
    assert [(r["case"], float(r["w"])) for r in table] == [
        ("I", 0.0),
        ("I", 0.9),
        ("II", 0.0),
        ("II", 0.9),
    ]
    layer_cols = [
        f"{kind}/{layer}"
        for kind in ("mixed_srop", "pattern_srop")
        for layer in input_variation.LAYERS
    ]
    assert list(table[0]) == [
        "case",
        "w",
        "accuracy",
        "input_srop",
        "mixed_srop",
        "pattern_srop",
        *layer_cols,
    ]
    for row in table:
        values = [float(v) for k, v in row.items() if k != "case"]
        assert all(math.isfinite(v) for v in values)
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert all(0.0 < float(row[c]) < math.sqrt(2) / 2 for c in layer_cols)
        means = [float(row[f"mixed_srop/{layer}"]) for layer in input_variation.LAYERS]
        assert float(row["mixed_srop"]) == pytest.approx(sum(means) / len(means), rel=1e-5)
    by = {(r["case"], float(r["w"])): r for r in table}
    # w = 0: both cases see the very same digits and train the very same model
    for key in ("accuracy", "mixed_srop", "input_srop"):
        assert by[("I", 0.0)][key] == by[("II", 0.0)][key]
    # the same pattern bank in both cases: input spectra agree, only the labels differ
    assert float(by[("I", 0.9)]["input_srop"]) == pytest.approx(
        float(by[("II", 0.9)]["input_srop"]), abs=0.02
    )
    # robust direction: a label-carrying pattern is learnable, a random one is not
    assert float(by[("I", 0.9)]["accuracy"]) > float(by[("II", 0.9)]["accuracy"]) + 0.3
    assert float(by[("II", 0.9)]["accuracy"]) < 0.4
    # the paper's claim, which held at this size for seeds 0, 1 and 2 (margins 0.004 to 0.018):
    # the trained network keeps a useful pattern's SROP lower than a noise pattern's
    assert float(by[("I", 0.9)]["pattern_srop"]) < float(by[("II", 0.9)]["pattern_srop"])
    _assert_png(tmp_path / "input_variation.png")


# --------------------------------------------------------------------------------------------
# architecture variation


def test_architecture_variation_end_to_end(tmp_path: Path) -> None:
    architecture_variation.main(
        [
            "--out-dir",
            str(tmp_path),
            "--num-images",
            "6",
            "--image-size",
            "64",
            "--models",
            "resnet18",
            "resnet18_blurpool",
            "vgg16",
            "--num-random",
            "2",
        ]
    )
    table = _read_csv(tmp_path / "architecture_variation.csv")
    assert list(table[0]) == [
        "part",
        "model",
        "layer",
        "kind",
        "kernel",
        "stride",
        "srop",
        "benchmark_srop",
        "normalized",
        "normalized_std",
    ]
    for row in table:
        srop, bench, norm = (float(row[k]) for k in ("srop", "benchmark_srop", "normalized"))
        assert all(math.isfinite(v) and v > 0 for v in (srop, bench, norm))
        assert norm == pytest.approx(srop / bench, rel=1e-4)
    ops = {r["layer"]: float(r["normalized"]) for r in table if r["part"] == "op"}
    assert ops["maxpool k2 s2 (VGG, benchmark)"] == 1.0  # the benchmark against itself
    # VGG's pools are the benchmark pool itself, applied to their own inputs
    vgg = [float(r["normalized"]) for r in table if r["model"] == "vgg16"]
    assert len(vgg) == 5 and all(v == 1.0 for v in vgg)
    # robust directions on natural images: low-pass before subsampling lowers SROP
    assert ops["blurpool5 s2"] < ops["blurpool3 s2"] < ops["avgpool k2 s2"] < 1.0
    assert ops["random conv k3 s2"] > 1.0
    resnet = {r["layer"]: float(r["normalized"]) for r in table if r["model"] == "resnet18"}
    blur = {r["layer"]: float(r["normalized"]) for r in table if r["model"] == "resnet18_blurpool"}
    assert list(resnet) == list(blur) and len(resnet) == 8  # the same units, matched by name
    assert resnet["conv1"] == pytest.approx(blur["conv1"])  # same weights, unchanged stem
    assert blur["maxpool"] < resnet["maxpool"]
    assert sum(blur.values()) < sum(resnet.values())
    _assert_png(tmp_path / "architecture_variation.png")


def test_architecture_variation_image_dir(tmp_path: Path) -> None:
    images = tmp_path / "images" / "class_a"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / f"{i}.png")
    loaded = architecture_variation.load_images(str(tmp_path / "images"), 5, 32, seed=0)
    assert loaded.shape == (3, 3, 32, 32) and 0.0 <= float(loaded.min()) <= float(loaded.max()) <= 1
    with pytest.raises(FileNotFoundError, match="no images"):
        architecture_variation.load_images(str(tmp_path / "missing"), 5, 32, seed=0)
    with pytest.raises(SystemExit):
        architecture_variation.main(["--models", "resnet19"])


# --------------------------------------------------------------------------------------------
# training stages


def test_training_stages_end_to_end(tmp_path: Path) -> None:
    training_stages.main(
        ["--out-dir", str(tmp_path), "--epochs", "2", "--max-train", "400", "--num-profile", "64"]
    )
    table = _read_csv(tmp_path / "training_stages.csv")
    assert list(table[0]) == [
        "stage",
        "epoch",
        "layer",
        "depth",
        "downscale",
        "mean_srop",
        "log_mean_srop",
        "accuracy",
    ]
    stages = list(dict.fromkeys(r["stage"] for r in table))
    assert stages == ["randomized", "epoch 1", "trained", "ds"]
    layers = list(training_stages.LAYERS)
    for stage in stages:
        sel = [r for r in table if r["stage"] == stage]
        assert [r["layer"] for r in sel] == layers
        assert [int(r["downscale"]) for r in sel] == [1, 2, 2, 4, 4]
        for r in sel:
            assert float(r["log_mean_srop"]) == pytest.approx(
                math.log(float(r["mean_srop"])), abs=1e-5
            )
            assert 0.0 < float(r["mean_srop"]) < math.sqrt(2) / 2
            if stage != "ds":
                assert 0.0 <= float(r["accuracy"]) <= 1.0
    # "ds" at full resolution is the input's own SROP; pooling to the same size gives equal values
    ds = {r["layer"]: float(r["mean_srop"]) for r in table if r["stage"] == "ds"}
    assert (
        ds["features.pool1"] == ds["features.conv2"] and ds["features.down"] == ds["features.conv3"]
    )
    _assert_png(tmp_path / "training_stages.png")


def test_training_stages_profile_matches_spectral_rolloff() -> None:
    from lightning_srop import spectral_rolloff
    from recipes.experiments._common import capture
    from recipes.mnist import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(8, 1, 28, 28)
    means = training_stages._profile(model, x)
    with torch.no_grad(), capture(model, training_stages.LAYERS) as store:
        model(x)
    for name in training_stages.LAYERS:
        srop = spectral_rolloff(store[name].double())
        expected = float(srop[~srop.isnan()].mean())
        assert means[name] == pytest.approx(expected, abs=1e-4)
