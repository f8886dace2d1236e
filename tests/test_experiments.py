"""The paper's sanity checks as experiments: tiny runs (2 seeds) through their command-line
entry points, CSVs and PNGs read back and checked for consistency (columns, conditions, seeds,
intervals holding their means, verdicts following the stated rule); effect directions checked
only where they held for every seed tried at this size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from PIL import Image

from recipes.experiments import (
    architecture_variation,
    input_variation,
    training_stages,
    vit_training_stages,
)
from recipes.experiments._common import (
    RULE,
    SUMMARY_COLUMNS,
    VERDICTS,
    command_line,
    read_csv,
    verdict,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _read_csv(path: Path) -> list[dict[str, str]]:
    comments, rows = read_csv(path)
    assert comments == []
    return rows


def _read_summary(path: Path, key_columns: list[str], seeds: int) -> list[dict[str, str]]:
    """Read a summary CSV and check it: the rule line, the columns, intervals holding their
    means, verdicts following the rule from the written interval."""
    comments, rows = read_csv(path)
    assert comments == [f"rule: {RULE}"]
    assert rows and list(rows[0]) == [*key_columns, *SUMMARY_COLUMNS]
    directions = {"< 0": -1, "> 0": 1}
    for row in rows:
        mean, low, high = (float(row[k]) for k in ("mean", "low", "high"))
        assert 0 < int(row["seeds"]) <= seeds, row
        assert low <= mean <= high, row
        if row["paper_direction"] == "none":
            assert row["verdict"] == "n/a"
        else:
            assert row["verdict"] in VERDICTS
            assert row["verdict"] == verdict(low, high, directions[row["paper_direction"]]), row
    return rows


def _pick(rows: list[dict[str, str]], **match: Any) -> dict[str, str]:
    found = [r for r in rows if all(r[k] == str(v) for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def _assert_png(path: Path, min_width: int = 600) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width >= min_width and height >= 300


# --------------------------------------------------------------------------------------------
# the command line (one builder for the three experiments)


def _toy_run(
    out_dir: Path,
    *,
    weights: Sequence[float] = (0.0, 0.5),
    data: Literal["digits", "mnist"] = "digits",
    max_train: int | None = None,
    download: bool = False,
    seeds: int = 3,
) -> dict[str, Any]:
    """A run function as the experiments write them.

    Args:
        out_dir: where to write
        weights: pattern weights
        data: which digits
        max_train: keep this many
        download: download if missing
        seeds: number of seeds
    """
    return {"out_dir": out_dir, "weights": weights, "data": data, "max_train": max_train}


def test_command_line_from_signature(capsys: pytest.CaptureFixture[str]) -> None:
    got = command_line(_toy_run, [], description="toy")
    assert got == {
        "out_dir": Path("runs/experiments/test_experiments"),
        "weights": [0.0, 0.5],
        "data": "digits",
        "max_train": None,
    }
    argv = ["--out-dir", "x", "--weights", "0", "0.25", "1", "--data", "mnist"]
    got = command_line(_toy_run, [*argv, "--max-train", "7", "--download"], description="toy")
    assert got == {
        "out_dir": Path("x"),
        "weights": [0.0, 0.25, 1.0],
        "data": "mnist",
        "max_train": 7,
    }
    with pytest.raises(SystemExit):
        command_line(_toy_run, ["--help"], description="toy")
    shown = capsys.readouterr().out
    for flag, text in [("--max-train", "keep this many"), ("--download", "download if missing")]:
        assert flag in shown and text in shown
    assert "{digits,mnist}" in shown and "--threads" in shown
    bad = [["--data", "emnist"], ["--seeds", "0"], ["--max-train", "x"], ["--max_train", "3"]]
    for argv in bad:
        with pytest.raises(SystemExit) as stop:
            command_line(_toy_run, argv, description="toy")
        assert stop.value.code == 2, argv
    assert "--seeds must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "flags"),
    [
        (input_variation, ["--weights", "--cases", "--max-train", "--max-val", "--download"]),
        (architecture_variation, ["--image-dir", "--num-images", "--image-size", "--models"]),
        (training_stages, ["--num-profile", "--arch", "--weights", "--max-train", "--data-dir"]),
        (
            vit_training_stages,
            ["--image-size", "--patch-size", "--embed-dim", "--depth", "--num-heads", "--lr"],
        ),
    ],
)
def test_experiment_flags(
    module: Any, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    for flag in [*flags, "--out-dir", "--seed", "--seeds", "--threads"]:
        assert f"{flag} " in shown, flag
    assert f"runs/experiments/{module.__name__.rsplit('.', 1)[-1]}" in shown


def test_input_variation_weights_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        input_variation.main(["--weights", "0.5", "1.5"])
    assert stop.value.code == 2
    assert "--weights must lie in [0, 1], got 1.5" in capsys.readouterr().err


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


def test_input_variation_same_inputs_for_both_cases(tmp_path: Path) -> None:
    """Both cases are measured on one pattern set fixed before training (and the same mixed
    images): at w = 0, where both cases train the very same model, every layer's difference is
    exactly 0 in every seed, and so is the summary's (verdict inconclusive)."""
    digits, labels = torch.rand(5, 1, 28, 28), torch.tensor([3, 1, 4, 1, 5])
    patterns = input_variation.measurement_patterns(labels, 28, seed=7)
    assert torch.equal(patterns, input_variation.measurement_patterns(labels, 28, seed=7))
    assert torch.equal(patterns, input_variation.mix(digits, labels, 1.0, "I", seed=7)[1])
    tiny = ["--weights", "0", "0.5", "--epochs", "1", "--max-train", "120", "--max-val", "40"]
    rows, table = input_variation.main(["--out-dir", str(tmp_path), *tiny, "--seeds", "2"])
    by = {(r["seed"], r["case"], r["w"], r["layer"]): r for r in rows}
    for seed in (0, 1):
        for layer in input_variation.LAYERS:
            a, b = by[(seed, "I", 0.0, layer)], by[(seed, "II", 0.0, layer)]
            for key in ("pattern_srop", "mixed_srop", "accuracy"):
                assert a[key] == b[key], (seed, layer, key)
    diffs = [
        r for r in table if r["w"] == 0.0 and r["quantity"] == "pattern_srop[I] - pattern_srop[II]"
    ]
    assert len(diffs) == len(input_variation.LAYERS) + 1  # every layer and their mean
    for r in diffs:
        assert (r["mean"], r["low"], r["high"], r["verdict"]) == (0.0, 0.0, 0.0, "inconclusive")
    # at w > 0 the cases train different models: there the differences are measurements
    assert any(
        by[(0, "I", 0.5, layer)]["pattern_srop"] != by[(0, "II", 0.5, layer)]["pattern_srop"]
        for layer in input_variation.LAYERS
    )


def test_input_variation_end_to_end(tmp_path: Path) -> None:
    rows, table = input_variation.main(
        [
            "--out-dir",
            str(tmp_path),
            "--weights",
            "0",
            "0.9",
            "--epochs",
            "3",
            "--max-train",
            "400",
            "--max-val",
            "100",
            "--seeds",
            "2",
        ]
    )
    raw = _read_csv(tmp_path / "input_variation.csv")
    layers = list(input_variation.LAYERS)
    assert list(raw[0]) == [
        "seed",
        "case",
        "w",
        "layer",
        "depth",
        "accuracy",
        "pattern_srop",
        "mixed_srop",
        "input_srop",
    ]
    assert len(raw) == len(rows) == 2 * 2 * 2 * len(layers)
    assert {(r["seed"], r["case"], float(r["w"])) for r in raw} == {
        (s, c, w) for s in ("0", "1") for c in ("I", "II") for w in (0.0, 0.9)
    }
    for r in raw:
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        for k in ("pattern_srop", "mixed_srop", "input_srop"):
            assert 0.0 < float(r[k]) < math.sqrt(2) / 2
    by = {(r["seed"], r["case"], float(r["w"]), r["layer"]): r for r in raw}
    for s in ("0", "1"):
        # w = 0: both cases see the very same digits and train the very same model
        for layer in layers:
            a, b = by[(s, "I", 0.0, layer)], by[(s, "II", 0.0, layer)]
            assert (a["accuracy"], a["mixed_srop"], a["pattern_srop"]) == (
                b["accuracy"],
                b["mixed_srop"],
                b["pattern_srop"],
            )
        # the same pattern bank in both cases: input spectra agree, only the labels differ
        assert float(by[(s, "I", 0.9, layers[0])]["input_srop"]) == pytest.approx(
            float(by[(s, "II", 0.9, layers[0])]["input_srop"]), abs=0.02
        )
    summary = _read_summary(
        tmp_path / "input_variation_summary.csv", ["w", "layer", "depth"], seeds=2
    )
    assert len(summary) == len(table)
    # per w: accuracy of both cases and their difference; per w and layer (and the mean over
    # layers): both cases' pattern SROP and the difference
    assert len(summary) == 2 * (3 + (len(layers) + 1) * 3)
    for w in ("0", "0.9"):
        for layer in [*layers, "mean over layers"]:
            _pick(summary, w=w, layer=layer, quantity="pattern_srop[I] - pattern_srop[II]")
    # robust: a label-carrying pattern is learnable, a random one is not (every seed)
    acc = _pick(summary, w="0.9", layer="-", quantity="accuracy[I] - accuracy[II]")
    assert acc["verdict"] == "holds" and float(acc["low"]) > 0.3
    assert float(_pick(summary, w="0.9", layer="-", quantity="accuracy[II]")["high"]) < 0.4
    # w = 0: the same model in both cases; the difference of accuracies is exactly 0
    same = _pick(summary, w="0", layer="-", quantity="accuracy[I] - accuracy[II]")
    assert float(same["mean"]) == 0.0 and same["verdict"] == "inconclusive"
    _assert_png(tmp_path / "input_variation.png")


# --------------------------------------------------------------------------------------------
# architecture variation


def _check_architecture(
    tmp_path: Path, seeds: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    raw = _read_csv(tmp_path / "architecture_variation.csv")
    assert list(raw[0]) == [
        "seed",
        "part",
        "model",
        "layer",
        "kind",
        "kernel",
        "stride",
        "srop",
        "benchmark_srop",
        "normalized",
    ]
    assert sorted({int(r["seed"]) for r in raw}) == list(range(seeds))
    for row in raw:
        srop, bench, norm = (float(row[k]) for k in ("srop", "benchmark_srop", "normalized"))
        assert all(math.isfinite(v) and v > 0 for v in (srop, bench, norm))
        assert norm == pytest.approx(srop / bench, rel=1e-4)
    summary = _read_summary(
        tmp_path / "architecture_variation_summary.csv", ["part", "model", "layer", "kind"], seeds
    )
    return raw, summary


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
            "--seeds",
            "2",
        ]
    )
    raw, summary = _check_architecture(tmp_path, 2)
    ops = {r["layer"]: r for r in summary if r["part"] == "op" and r["quantity"] == "normalized"}
    bench = ops[architecture_variation.BENCHMARK]
    assert (bench["mean"], bench["low"], bench["high"]) == ("1", "1", "1")  # against itself
    # VGG's pools are the benchmark pool itself, applied to their own inputs
    vgg = [float(r["normalized"]) for r in raw if r["model"] == "vgg16"]
    assert len(vgg) == 2 * 5 and all(v == 1.0 for v in vgg)
    # robust directions on natural images: low-pass before subsampling lowers SROP
    for name in ("blurpool3 s2", "blurpool5 s2", "maxblurpool (max k2 s1 + blur3 s2)"):
        assert _pick(summary, layer=name, quantity="normalized - 1")["verdict"] == "holds"
    assert float(ops["random conv k3 s2"]["low"]) > 1.0
    diff = "normalized - normalized[resnet18]"
    units = [r for r in summary if r["model"] == "resnet18_blurpool" and r["quantity"] == diff]
    assert len(units) == 8 + 1  # the same units, matched by name, and their mean
    stem = _pick(units, layer="conv1")  # same weights, unchanged stem: exactly no difference
    assert float(stem["mean"]) == 0.0 and stem["verdict"] == "inconclusive"
    assert _pick(units, layer="maxpool")["verdict"] == "holds"
    assert _pick(units, layer="all units (mean)")["verdict"] == "holds"
    _assert_png(tmp_path / "architecture_variation.png")


def _image_folder(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for label in ("n01440764", "n01443537"):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.JPEG", format="JPEG")
    return root


def _random_instead_of_pretrained(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """No download here: ``build_model(arch, "DEFAULT")`` builds random weights instead, and
    records which weights were asked for."""
    import recipes.imagenet

    asked: list[str | None] = []
    real = recipes.imagenet.build_model

    def fake(arch: str, weights: str | None = None, **kwargs: Any) -> torch.nn.Module:
        asked.append(weights)
        return real(arch, None, **kwargs)

    monkeypatch.setattr(recipes.imagenet, "build_model", fake)
    return asked


def test_architecture_variation_image_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _image_folder(tmp_path / "val")
    loaded = architecture_variation.load_images(str(images), 4, 32, seed=0)
    assert loaded.shape == (4, 3, 32, 32) and 0.0 <= float(loaded.min()) <= float(loaded.max()) <= 1
    # each seed draws another choice of images; all of them when there are fewer
    assert not torch.equal(loaded, architecture_variation.load_images(str(images), 4, 32, seed=1))
    assert architecture_variation.load_images(str(images), 50, 32, seed=0).shape[0] == 6
    with pytest.raises(FileNotFoundError, match="no images"):
        architecture_variation.load_images(str(tmp_path / "missing"), 5, 32, seed=0)
    with pytest.raises(SystemExit):
        architecture_variation.main(["--models", "resnet19"])
    asked = _random_instead_of_pretrained(monkeypatch)
    out = tmp_path / "out"
    architecture_variation.main(
        [
            "--out-dir",
            str(out),
            "--image-dir",
            str(images),
            "--num-images",
            "4",
            "--image-size",
            "64",
            "--models",
            "resnet18",
            "--weights",
            "DEFAULT",
            "--seeds",
            "2",
        ]
    )
    assert "DEFAULT" in asked
    _check_architecture(out, 2)
    _assert_png(out / "architecture_variation.png")


def test_blurpool_equals_kornia() -> None:
    """recipes.blurpool.BlurPool2d is kornia's BlurPool2D / MaxBlurPool2D with zero padding,
    and agrees with it away from the borders with antialiased-cnns' reflect padding."""
    import kornia

    from recipes.blurpool import BlurPool2d

    x = torch.randn(2, 3, 17, 16)
    for size in range(1, 6):
        theirs = kornia.filters.BlurPool2D(size, stride=2)(x)
        torch.testing.assert_close(BlurPool2d(3, size, 2, pad_mode="zeros")(x), theirs)
        ours = BlurPool2d(3, size, 2)(x)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours[..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1])
    max_blur = torch.nn.Sequential(torch.nn.MaxPool2d(2, 1), BlurPool2d(3, 3, 2, pad_mode="zeros"))
    torch.testing.assert_close(max_blur(x), kornia.filters.MaxBlurPool2D(3, 2, 2)(x))
    with pytest.raises(ValueError, match="pad_mode"):
        BlurPool2d(3, pad_mode="circular")


# --------------------------------------------------------------------------------------------
# training stages


def test_shuffled_labels_are_a_permutation() -> None:
    labels = torch.arange(200) % 10
    shuffled = training_stages.shuffled_labels(labels, seed=3)
    assert torch.equal(torch.sort(shuffled).values, torch.sort(labels).values)  # a permutation
    assert torch.equal(shuffled, training_stages.shuffled_labels(labels, seed=3))  # seeded
    assert not torch.equal(shuffled, training_stages.shuffled_labels(labels, seed=4))
    assert float((shuffled == labels).float().mean()) < 0.25  # chance level is 0.1


def _check_stages(path: Path, seeds: int) -> list[dict[str, str]]:
    raw = _read_csv(path)
    assert list(raw[0]) == [
        "seed",
        "layer",
        "depth",
        "condition",
        "epoch",
        "accuracy",
        "mean_srop",
        "log_mean_srop",
        "flat_fraction",
    ]
    assert sorted({int(r["seed"]) for r in raw}) == list(range(seeds))
    assert {r["condition"] for r in raw} <= set(training_stages.CONDITIONS)
    for r in raw:
        if math.isfinite(float(r["mean_srop"])):
            assert float(r["log_mean_srop"]) == pytest.approx(
                math.log(float(r["mean_srop"])), abs=1e-5
            )
            assert 0.0 < float(r["mean_srop"]) < math.sqrt(2) / 2
        assert 0.0 <= float(r["flat_fraction"]) <= 1.0
    return raw


def _seed_stages(raw: list[dict[str, str]], seed: str, layers: list[str]) -> list[dict[str, str]]:
    """One seed's rows, checked: every stage in order, each with every layer in forward order
    and one accuracy per model and stage (NaN for the "ds" benchmark)."""
    mine = [r for r in raw if r["seed"] == seed]
    conditions = [(r["condition"], int(r["epoch"])) for r in mine]
    assert list(dict.fromkeys(conditions)) == [
        ("randomized", 0),
        ("trained", 1),
        ("trained", 2),
        ("shuffled_labels", 1),
        ("shuffled_labels", 2),
        ("ds", -1),
    ]
    for condition, epoch in dict.fromkeys(conditions):
        sel = [r for r in mine if (r["condition"], int(r["epoch"])) == (condition, epoch)]
        assert [r["layer"] for r in sel] == layers
        assert [int(r["depth"]) for r in sel] == list(range(len(layers)))
        accuracy = {r["accuracy"] for r in sel}
        assert len(accuracy) == 1  # one accuracy per model and stage
        value = float(accuracy.pop())
        assert math.isnan(value) if condition == "ds" else 0.0 <= value <= 1.0
    return mine


def test_training_stages_end_to_end(tmp_path: Path) -> None:
    training_stages.main(
        [
            "--out-dir",
            str(tmp_path),
            "--epochs",
            "2",
            "--max-train",
            "300",
            "--num-profile",
            "64",
            "--seeds",
            "2",
        ]
    )
    raw = _check_stages(tmp_path / "training_stages.csv", 2)
    layers = list(training_stages.LAYERS)
    for s in ("0", "1"):
        mine = _seed_stages(raw, s, layers)
        # "ds": pooling to the same size gives equal values
        ds = {r["layer"]: r["mean_srop"] for r in mine if r["condition"] == "ds"}
        assert ds["features.pool1"] == ds["features.conv2"]
        assert ds["features.down"] == ds["features.conv3"]
    summary = _read_summary(tmp_path / "training_stages_summary.csv", ["layer", "depth"], seeds=2)
    for layer in layers:
        for quantity in (
            "mean_srop[randomized]",
            "mean_srop[trained]",
            "mean_srop[shuffled_labels]",
            "mean_srop[ds]",
            "log_srop[trained - randomized]",
            "log_srop[trained - shuffled_labels]",
            "spearman[accuracy, mean_srop]",
        ):
            _pick(summary, layer=layer, quantity=quantity)
    for condition in ("trained", "shuffled_labels"):
        _pick(summary, layer="-", quantity=f"accuracy[{condition}]")
    _assert_png(tmp_path / "training_stages.png")
    _assert_png(tmp_path / "training_stages_reports.png", min_width=500)
    import json

    from lightning_srop import SROPReport

    saved = json.loads((tmp_path / "training_stages_reports.json").read_text())
    assert list(saved) == ["randomized", "trained", "shuffled_labels"]
    report = SROPReport.from_dict(saved["trained"])
    assert report.names == layers and report.label == "trained"


def test_training_stages_pretrained_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _image_folder(tmp_path / "val")
    asked = _random_instead_of_pretrained(monkeypatch)
    out = tmp_path / "out"
    training_stages.main(
        [
            "--out-dir",
            str(out),
            "--image-dir",
            str(images),
            "--arch",
            "resnet18",
            "--weights",
            "DEFAULT",
            "--num-images",
            "4",
            "--image-size",
            "64",
            "--seeds",
            "2",
        ]
    )
    assert asked.count("DEFAULT") == 2 and asked.count(None) == 2
    raw = _check_stages(out / "training_stages.csv", 2)
    assert {r["condition"] for r in raw} == {"randomized", "trained", "ds"}
    assert {r["layer"] for r in raw} >= {"conv1", "maxpool", "layer4.1.conv2"}
    summary = _read_summary(out / "training_stages_summary.csv", ["layer", "depth"], seeds=2)
    assert all("shuffled" not in r["quantity"] for r in summary)
    _pick(summary, layer="conv1", quantity="log_srop[trained - randomized]")
    with pytest.raises(SystemExit):
        training_stages.main(["--image-dir", str(images), "--arch", "resnet19"])


# --------------------------------------------------------------------------------------------
# training stages in a vision transformer


def test_vit_training_stages_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    vit_training_stages.main(
        [
            "--out-dir",
            str(tmp_path),
            "--epochs",
            "2",
            "--max-train",
            "128",
            "--num-profile",
            "32",
            "--embed-dim",
            "16",
            "--depth",
            "2",
            "--num-heads",
            "2",
            "--seeds",
            "2",
        ]
    )
    raw = _check_stages(tmp_path / "vit_training_stages.csv", 2)
    # profile's default choice on the ViT: the patch embedding and every block, in order
    layers = ["vit.patch_embed.proj", "vit.blocks.0", "vit.blocks.1"]
    for s in ("0", "1"):
        mine = _seed_stages(raw, s, layers)
        # every layer is on the 8 x 8 patch grid: one benchmark (two k2 pools of 32 x 32)
        assert len({r["mean_srop"] for r in mine if r["condition"] == "ds"}) == 1
        # trained and control start from one randomized network, written once
        assert sum(r["condition"] == "randomized" for r in mine) == len(layers)
    summary = _read_summary(
        tmp_path / "vit_training_stages_summary.csv", ["layer", "depth"], seeds=2
    )
    for layer in layers:
        for quantity in (
            "mean_srop[randomized]",
            "mean_srop[trained]",
            "mean_srop[shuffled_labels]",
            "mean_srop[ds]",
        ):
            assert _pick(summary, layer=layer, quantity=quantity)["verdict"] == "n/a"
        for quantity in (
            "log_srop[trained - randomized]",
            "log_srop[trained - shuffled_labels]",
            "spearman[accuracy, mean_srop]",
        ):
            row = _pick(summary, layer=layer, quantity=quantity)
            assert row["paper_direction"] == "< 0" and row["seeds"] == "2"
            # the verdict rule, from the per-seed values in the rows
            per_seed = []
            for s in ("0", "1"):
                final = {
                    c: max(
                        (
                            r
                            for r in raw
                            if (r["seed"], r["layer"], r["condition"]) == (s, layer, c)
                        ),
                        key=lambda r: int(r["epoch"]),
                    )
                    for c in ("randomized", "trained", "shuffled_labels")
                }
                if quantity.startswith("log_srop"):
                    control = quantity.removesuffix("]").rsplit(" - ", 1)[1]
                    per_seed.append(
                        float(final["trained"]["log_mean_srop"])
                        - float(final[control]["log_mean_srop"])
                    )
            if per_seed:
                mean, low, high = (float(row[k]) for k in ("mean", "low", "high"))
                assert mean == pytest.approx(sum(per_seed) / 2, abs=2e-5)
                assert (low, high) == pytest.approx((min(per_seed), max(per_seed)), abs=2e-5)
                assert row["verdict"] == verdict(min(per_seed), max(per_seed))
    for condition in ("trained", "shuffled_labels"):
        _pick(summary, layer="-", quantity=f"accuracy[{condition}]")
    _assert_png(tmp_path / "vit_training_stages.png")
    _assert_png(tmp_path / "vit_training_stages_reports.png", min_width=500)
    import json

    from lightning_srop import SROPReport

    saved = json.loads((tmp_path / "vit_training_stages_reports.json").read_text())
    assert list(saved) == ["randomized", "trained", "shuffled_labels"]
    report = SROPReport.from_dict(saved["trained"])
    assert report.names == layers
    for name in layers[1:]:  # blocks read as tokens on the patch grid, class token left out
        meta = report[name].meta
        assert meta is not None and meta.layout == "tokens"
        assert meta.map_size == (8, 8) and meta.prefix_tokens == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-size", "30"], "must be a multiple of --patch-size 4"),
        (["--image-size", "4"], "too small"),
        (["--embed-dim", "30"], "must be a multiple of --num-heads 4"),
    ],
)
def test_vit_training_stages_checks(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        vit_training_stages.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
