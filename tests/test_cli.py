"""The ``lightning-srop`` command line: help, one-line errors, end-to-end runs read back."""

from __future__ import annotations

import csv
import dataclasses
import os
import runpy
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from matplotlib.image import imread
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from lightning_srop import SROPOptions, SROPReport, profile
from lightning_srop.cli import PROG, build_options, build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _make_folder(root: Path, per_class: tuple[int, int], size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for c, count in enumerate(per_class):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(count):
            coarse = rng.uniform(0, 255, (size // 4, size // 4, 3)).astype(np.uint8)
            image = Image.fromarray(coarse).resize((size, size)) if c == 0 else None
            if image is None:
                image = Image.fromarray(rng.uniform(0, 255, (size, size, 3)).astype(np.uint8))
            image.save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 images of 32 px (class 0 smooth, class 1 noise)."""
    return _make_folder(tmp_path_factory.mktemp("images"), (4, 4))


def _reference_loader(
    folder: Path, size: int, batch_size: int
) -> DataLoader[tuple[torch.Tensor, int]]:
    """The images as the CLI documents them: resize, center crop, ImageNet normalization."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose(
        [T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    return DataLoader(ImageFolder(str(folder), transform=transform), batch_size=batch_size)


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# help, entry points, option flags


def test_main_help_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "examples:" in out
    for command in ("profile", "compare", "export"):
        assert command in out


@pytest.mark.parametrize("command", ["profile", "compare", "export"])
def test_subcommand_help_shows_examples(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith(f"usage: {PROG} {command}")
    assert "examples:" in out and f"\n  {PROG} {command} " in out


def test_python_dash_m_runs_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning_srop", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "lightning_srop" / "__main__.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"{PROG} 0.")


def test_console_script_declared_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["scripts"]["lightning-srop"]
    assert target == "lightning_srop.cli:main"
    module, _, name = target.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is main


def test_every_option_field_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """Flags come from SROPOptions' fields: a new option is a new (dashed) flag."""
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    help_text = capsys.readouterr().out
    fields = [f.name for f in dataclasses.fields(SROPOptions) if f.name != "owner"]
    for name in fields:
        assert f"--{name.replace('_', '-')} " in help_text, name
    from lightning_srop.options import UNIT_CHOICES

    # choices from the Literal
    assert f"--unit {{{','.join(UNIT_CHOICES)}}}" in help_text


def test_flags_build_one_validated_options_object() -> None:
    parser = build_parser()
    flags = ["--unit", "input", "--roll-percent", "0.9", "--stats", "mean", "q75"]
    flags += ["--layers", "conv1", "maxpool", "--layout", "conv1=NHWC", "--keep-dc"]
    flags += ["--num-batches", "all", "--ndim", "2", "--num-bins", "64"]
    args = parser.parse_args(["profile", "--model", "m", "--data", "d", *flags])
    options = build_options(args.profile)
    assert options == SROPOptions(
        layers=["conv1", "maxpool"],
        num_batches=None,
        roll_percent=0.9,
        keep_dc=True,
        ndim=2,
        unit="input",
        layout={"conv1": "NHWC"},
        stats=("mean", "q75"),
        num_bins=64,
    )
    # unset flags keep the dataclass defaults, and profile's own default for num_batches (all);
    # one --layers value is a pattern, one --layout value the layout of every layer
    plain = parser.parse_args(["profile", "--model", "m", "--data", "d"])
    assert build_options(plain.profile) == SROPOptions(num_batches=None)
    one = ["--layers", "conv\\d", "--layout", "NHWC", "--num-batches", "3", "--stats", "q95"]
    args = parser.parse_args(["profile", "--model", "m", "--data", "d", *one])
    assert build_options(args.profile) == SROPOptions(
        layers="conv\\d", layout="NHWC", num_batches=3, stats=["q95"]
    )
    # jsonargparse's own spellings work as well
    native = ["--roll_percent=0.9", "--stats=[mean,q75]", "--keep_dc=false", "--layout={a: NLC}"]
    args = parser.parse_args(["profile", "--model", "m", "--data", "d", *native])
    assert build_options(args.profile) == SROPOptions(
        num_batches=None, roll_percent=0.9, stats=["mean", "q75"], layout={"a": "NLC"}
    )


# --------------------------------------------------------------------------------------------
# bad arguments: one line, exit code 2


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--unit", "px"], "invalid choice: 'px'"),
        (["--roll-percent", "2"], "--roll-percent in (0, 1]"),
        (["--num-bins", "1"], "--num-bins"),
        (["--stats", "average"], "invalid choice: 'average'"),
        (["--num-batches", "many"], "--num-batches"),
        (["--layout", "conv1=sideways"], "layout['conv1']"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_option_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], folder: Path, extra: list[str], expected: str
) -> None:
    line = _error_line(capsys, ["profile", "--model", "resnet18", "--data", str(folder), *extra])
    assert line.startswith(f"{PROG} profile: error: ")
    assert expected in line


def test_unknown_model_suggests_close_names(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    line = _error_line(capsys, ["profile", "--model", "resnet181", "--data", str(folder)])
    assert line.startswith(f"{PROG} profile: error: --model 'resnet181'")
    assert "resnet18" in line.split("Did you mean", 1)[1]


def test_missing_data_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    line = _error_line(capsys, ["profile", "--model", "resnet18", "--data", str(missing)])
    assert line.startswith(f"{PROG} profile: error: --data ")
    assert "no such image folder" in line


def test_unknown_layer_and_weights(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    base = ["profile", "--model", "resnet18", "--data", str(folder)]
    line = _error_line(capsys, [*base, "--layers", "conv1", "layer1.0.conv9"])
    assert "layer1.0.conv9" in line and "--layers" in line
    line = _error_line(capsys, [*base, "--weights", "NOPE"])
    assert "IMAGENET1K_V1" in line  # the valid choices are listed


def test_missing_required_argument(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(capsys, ["profile", "--model", "resnet18"])
    assert "--data" in line


def test_weights_that_cannot_download_fail_in_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    folder: Path,
) -> None:
    import torchvision.models._api as api

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    code = main(["profile", "--model", "resnet18", "--weights", "DEFAULT", "--data", str(folder)])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "https://download.pytorch.org/models/resnet18" in lines[0]
    assert str(tmp_path / "hub") in lines[0] and "--weights none" in lines[0]


# --------------------------------------------------------------------------------------------
# profile end to end


def test_profile_resnet18_on_image_folder(
    capsys: pytest.CaptureFixture[str], folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["profile", "--model", "resnet18", "--data", str(folder), "--image-size", "32"]
    code = main([*argv, "--batch-size", "4", "--seed", "3", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0

    from torchvision.models import resnet18

    torch.manual_seed(3)
    model = resnet18(weights=None)
    expected = profile(model, _reference_loader(folder, 32, 4))

    saved = SROPReport.from_json(out / "report.json")
    assert saved.layers == expected.layers  # exact: same weights, same images, same order
    assert saved.num_batches == 2 and saved.model == "ResNet" and saved.label == "resnet18"
    assert saved.layers[0].stats["count"] == 8 * 64  # 8 images x 64 channels of conv1
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["layer"] for r in rows] == expected.names
    assert float(rows[0]["mean"]) == pytest.approx(expected.layers[0].stats["mean"], rel=1e-12)

    image = imread(out / "report.png")
    assert image.shape[1] > 300 and image.shape[0] > 200
    assert image[..., :3].std() > 0.01  # not a blank canvas

    assert expected.table() in printed
    assert str(out / "report.json") in printed
    assert "8 images" in printed and " s (" in printed


def test_profile_checkpointed_lightning_module(
    capsys: pytest.CaptureFixture[str], folder: Path, tmp_path: Path
) -> None:
    from lightning.pytorch import Trainer

    from tests._cli_module import Tiny

    torch.manual_seed(123)  # not the CLI's seed: equal values prove the weights were loaded
    module = Tiny(channels=6)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    checkpoint = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(checkpoint)

    out = tmp_path / "out"
    code = main(
        [
            *("profile", "--model", "tests._cli_module.Tiny", "--checkpoint", str(checkpoint)),
            *("--data", str(folder), "--image-size", "32", "--batch-size", "3"),
            *("--out", str(out), "--device", "cpu", "--unit", "input", "--stats", "mean", "count"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    saved = SROPReport.from_json(out / "report.json")
    expected = profile(
        module, _reference_loader(folder, 32, 3), unit="input", stats=["mean", "count"]
    )
    assert saved.names == ["net.0", "net.2", "net.3"]
    assert saved.layers == expected.layers
    assert saved["net.0"].meta is not None and saved["net.0"].meta.channels == 6  # hparams
    assert saved.options["unit"] == "input" and saved.options["stats"] == ["mean", "count"]
    assert "count" in capsys.readouterr().out


def test_profile_on_bundled_digits_replicates_channels(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "digits"
    code = main(
        [
            *("profile", "--model", "tests._cli_module.Tiny", "--data", "digits"),
            *("--device", "cpu", "--batch-size", "50", "--num-batches", "2", "--out", str(out)),
        ]
    )
    assert code == 0, capsys.readouterr().err
    saved = SROPReport.from_json(out / "report.json")
    assert saved.num_batches == 2
    assert saved["net.0"].meta is not None and saved["net.0"].meta.map_size == (28, 28)
    assert saved["net.0"].stats["count"] + saved["net.0"].stats["flat"] == 100 * 4


@pytest.mark.slow
def test_profile_ddp_two_cpu_processes_equals_one_process(tmp_path: Path) -> None:
    """DDP through Lightning (2 CPU processes) measures each image exactly once: 9 images,
    batch size 2, so a padding sampler would measure one twice."""
    images = _make_folder(tmp_path / "images", (5, 4))
    common = ["profile", "--model", "resnet18", "--data", str(images), "--image-size", "32"]
    common += ["--batch-size", "2", "--seed", "5"]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "lightning_srop", *common),
            *("--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"),
            *("--out", str(tmp_path / "ddp")),
        ],
        cwd=ROOT,
        env={**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("depth  layer") == 1  # rank zero prints, once
    assert "9 images" in result.stdout and "2 processes" in result.stdout

    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "one")]) == 0
    ddp = SROPReport.from_json(tmp_path / "ddp" / "report.json")
    one = SROPReport.from_json(tmp_path / "one" / "report.json")
    assert ddp.names == one.names and len(one) > 10
    assert one["conv1"].stats["count"] == 9 * 64
    for a, b in zip(ddp, one, strict=True):
        assert a.stats["count"] == b.stats["count"], a.name
        assert np.array_equal(a.counts, b.counts), a.name
        assert a.stats["mean"] == pytest.approx(b.stats["mean"], rel=1e-6), a.name
    assert (tmp_path / "ddp" / "report.png").is_file()


# --------------------------------------------------------------------------------------------
# compare and export


def _saved_reports(tmp_path: Path) -> tuple[Path, Path, SROPReport, SROPReport]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    x = torch.randn(4, 1, 16, 16)
    noise, smooth = profile(net, x), profile(net, x.cumsum(-1).cumsum(-2))
    (tmp_path / "noise").mkdir()
    (tmp_path / "smooth").mkdir()
    noise.to_json(tmp_path / "noise" / "report.json")
    smooth.to_json(tmp_path / "smooth" / "report.json")
    return tmp_path / "noise" / "report.json", tmp_path / "smooth" / "report.json", noise, smooth


def test_compare_two_reports_to_png_and_csv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b, noise, smooth = _saved_reports(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--labels", "x", "y", "--log", "--out", str(out)]) == 0
    with (out / "compare.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["layer", "x", "y"]
    assert [r[0] for r in rows[1:]] == noise.names
    for row, n, s in zip(rows[1:], noise, smooth, strict=True):
        assert float(row[1]) == n.stats["mean"] and float(row[2]) == s.stats["mean"]
    assert smooth["0"].stats["mean"] < noise["0"].stats["mean"]
    assert imread(out / "compare.png").shape[1] > 300
    printed = capsys.readouterr().out
    assert "x" in printed.splitlines()[1] and str(out / "compare.csv") in printed

    # default labels: the folder of each report.json; --unit input divides by the downscaling
    out2 = tmp_path / "cmp2"
    assert main(["compare", str(a), str(b), "--unit", "input", "--out", str(out2)]) == 0
    with (out2 / "compare.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["layer", "noise", "smooth"]
    pool = next(r for r in rows if r[0] == "1")
    assert float(pool[1]) == pytest.approx(noise["1"].stats["mean"] / 2)


def test_compare_csv_writes_nan_as_every_csv_does(tmp_path: Path) -> None:
    """A layer only one report has: its missing mean is ``nan`` (report.CSV_NAN), as in
    ``report.csv``/``srop.csv``, and pandas reads it back as NaN."""
    import math

    import pandas as pd

    from lightning_srop.report import CSV_NAN

    torch.manual_seed(0)
    x = torch.randn(4, 1, 16, 16)
    short = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2))
    long = nn.Sequential(*short, nn.Conv2d(4, 4, 3))
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    profile(short, x).to_json(tmp_path / "short" / "report.json")
    profile(long, x).to_json(tmp_path / "long" / "report.json")
    out = tmp_path / "cmp"
    paths = [str(tmp_path / "short" / "report.json"), str(tmp_path / "long" / "report.json")]
    assert main(["compare", *paths, "--out", str(out)]) == 0
    with (out / "compare.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["layer", "short", "long"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert rows[3][1] == CSV_NAN == "nan" and math.isnan(float(rows[3][1]))
    assert all(math.isfinite(float(cell)) for row in rows[1:] for cell in row[2:])
    table = pd.read_csv(out / "compare.csv", dtype={"layer": str}).set_index("layer")
    assert math.isnan(table.loc["2", "short"]) and not table["long"].isna().any()


def test_compare_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a, b, _, _ = _saved_reports(tmp_path)
    line = _error_line(capsys, ["compare", str(a), str(b), "--labels", "only-one"])
    assert line.startswith(f"{PROG} compare: error: --labels")
    line = _error_line(capsys, ["compare", str(a), str(tmp_path / "missing.json")])
    assert "missing.json" in line


def _saved_run(directory: Path, reports: list[SROPReport]) -> Path:
    """A run directory as ``SROPCallback(save_reports=True)`` leaves it: one JSON per epoch."""
    directory.mkdir(parents=True)
    for report in reports:
        report.to_json(directory / f"epoch={report.epoch}-step={report.step}.json")
    return directory


def _epoch_reports() -> list[SROPReport]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2))
    x = torch.randn(2, 1, 16, 16)
    return [
        dataclasses.replace(profile(net, x * (e + 1) + x.cumsum(-1) * e), epoch=e, step=10 * e)
        for e in range(3)
    ]


def test_export_writes_csv_json_png(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reports = _epoch_reports()
    run, out = _saved_run(tmp_path / "version_0", reports), tmp_path / "exp"
    assert main(["export", str(run), "--out", str(out)]) == 0
    with (out / "srop.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["epoch"], r["layer"]) for r in rows] == [
        (str(e), name) for e in range(3) for name in ("0", "1")
    ]
    assert float(rows[-1]["mean"]) == reports[-1]["1"].stats["mean"]
    import json

    data = json.loads((out / "srop.json").read_text())
    assert [SROPReport.from_dict(r) for r in data["reports"]] == reports
    assert imread(out / "srop.png").shape[1] > 300
    assert "epoch 2" in capsys.readouterr().out


def test_compare_reads_run_directories_through_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a, _, _, _ = _saved_reports(tmp_path)
    reports = _epoch_reports()
    run = _saved_run(tmp_path / "version_3", reports)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(run), "--out", str(out)]) == 0
    with (out / "compare.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["layer", "noise", "version_3 epoch 2"]  # the run's last epoch
    row = next(r for r in rows if r[0] == "0")
    assert float(row[2]) == reports[-1]["0"].stats["mean"]


def test_export_of_a_directory_without_srop_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "empty_run"
    run.mkdir()
    line = _error_line(capsys, ["export", str(run), "--out", str(tmp_path / "out")])
    assert line.startswith(f"{PROG} export: error: read_run: nothing SROP-like in ")
    assert "TensorBoard event files" in line


def test_export_draws_the_change_heatmap_of_a_run_with_a_baseline(tmp_path: Path) -> None:
    reports = [
        dataclasses.replace(
            r,
            layers=tuple(
                dataclasses.replace(layer, extra={"change": 0.1 * r.epoch - 0.05 * layer.depth})
                for layer in r.layers
            ),
        )
        for r in _epoch_reports()
    ]
    run, out = _saved_run(tmp_path / "version_0", reports), tmp_path / "exp"
    assert main(["export", str(run), "--out", str(out)]) == 0
    height, width = imread(out / "srop_change.png").shape[:2]
    assert height > 300 and width > 300
    plain = _saved_run(tmp_path / "plain" / "version_0", _epoch_reports())
    assert main(["export", str(plain), "--out", str(tmp_path / "exp2")]) == 0
    assert not (tmp_path / "exp2" / "srop_change.png").exists()  # no baseline, no heatmap


def test_quiet_lightning_leaves_global_state_as_it_was() -> None:
    # The command line's Trainer run silences Lightning for its own duration only.
    import logging
    import warnings

    from lightning_srop.cli.trainer import _quiet_lightning

    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    filters = list(warnings.filters)
    with _quiet_lightning():
        assert logger.level == logging.WARNING
        assert len(warnings.filters) > len(filters)
    assert logger.level == level
    assert warnings.filters == filters
