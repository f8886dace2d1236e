"""The architecture-families experiment (:mod:`recipes.experiments.families`) and its generated
shapes data (:func:`recipes.data.shapes_tensors`): shape masks against analytic areas, the
grid rule against grids stated by hand, the verdict on H against the stated rule on made-up
verdicts, the group means against a hand computation, and a tiny end-to-end run read back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lightning_srop import profile
from recipes.data import SHAPE_CLASSES, _shape_mask, shapes_tensors
from recipes.experiments import families
from recipes.experiments._common import RULE, VERDICTS, read_csv, verdict

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shapes_are_deterministic_balanced_and_in_range() -> None:
    x, y = shapes_tensors(60, 32, seed=3)
    assert x.shape == (60, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.bincount(y).tolist() == [10] * len(SHAPE_CLASSES)
    again, labels = shapes_tensors(60, 32, seed=3)
    assert torch.equal(x, again) and torch.equal(y, labels)
    other, _ = shapes_tensors(60, 32, seed=4)
    assert not torch.equal(x, other)
    with pytest.raises(ValueError, match="need num >= 1"):
        shapes_tensors(0)


@pytest.mark.parametrize(
    ("label", "area"),
    [
        (0, math.pi),  # disk of radius R
        (1, math.pi * (1 - 0.55**2)),  # ring between 0.55 R and R
        (2, 1.6**2),  # square of side 1.6 R
        (3, 3 * math.sqrt(3) / 4),  # equilateral triangle of inradius R / 2
        (4, 2 * (0.6 * 2) - 0.6**2),  # two 0.6 R x 2 R arms, overlap counted once
        (5, 2 * (0.3 * 2)),  # two 0.3 R x 2 R bars
    ],
)
def test_shape_masks_have_their_analytic_area(label: int, area: float) -> None:
    radius, n = 40.0, 200
    c = np.arange(n, dtype=np.float64) - n / 2 + 0.5  # pixel centers, symmetric about 0
    v, u = np.meshgrid(c, c, indexing="ij")
    counted = float(_shape_mask(label, u, v, radius).sum())
    assert counted == pytest.approx(area * radius**2, rel=0.03)


def _grids(model: nn.Module, layers: list[str], **options: Any) -> list[dict[str, Any]]:
    report = profile(model, torch.randn(4, 1, 32, 32), layers=layers, **options)
    return families.layer_table(report, (32, 32))


def test_layer_table_reads_grids_from_the_forward_pass() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 32, same as the input
        nn.Conv2d(4, 4, 2, stride=2),  # 16: the first layer after a downscaling
        nn.Conv2d(4, 4, 3, padding=1),  # 16
        nn.MaxPool2d(2),  # 8
        nn.Conv2d(4, 4, 3, padding=1),  # 8
    )
    rows = _grids(net, ["0", "1", "2", "3", "4"])
    assert [r["grid"] for r in rows] == ["32x32", "16x16", "16x16", "8x8", "8x8"]
    assert [r["prev_grid"] for r in rows] == ["32x32", "32x32", "16x16", "16x16", "8x8"]
    assert [r["after_downscaling"] for r in rows] == [False, True, False, True, False]
    assert [r["kind"] for r in rows] == ["Conv2d", "Conv2d", "Conv2d", "MaxPool2d", "Conv2d"]
    # measuring only some layers: the previous *measured* layer decides
    assert [r["after_downscaling"] for r in _grids(net, ["2", "4"])] == [True, True]


# each family's grids as its docstring states them; the experiment reads them from the model
STATED = {
    "cnn": (["32x32", "16x16", "16x16", "8x8", "8x8"], [0, 1, 0, 1, 0]),
    "resnet": (["32x32"] * 3 + ["16x16"] * 2 + ["8x8"] * 2, [0, 0, 0, 1, 0, 1, 0]),
    "convnext": (["16x16"] * 3 + ["8x8"] * 3, [1, 0, 0, 1, 0, 0]),
    "vit": (["8x8"] * 5, [1, 0, 0, 0, 0]),
    "swin": (["16x16"] * 3 + ["8x8"] * 3, [1, 0, 0, 1, 0, 0]),
}


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_family_builds_and_measures_its_layers(name: str) -> None:
    family = families.FAMILIES[name]
    model = family.build(6)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (3, 6)
    report = profile(model, x, layers=list(family.layers), **family.options(model))
    assert list(report.names) == list(family.layers)
    rows = families.layer_table(report, (32, 32))
    grids, after = STATED[name]
    assert [r["grid"] for r in rows] == grids
    assert [r["after_downscaling"] for r in rows] == [bool(a) for a in after]


def _cell(after: bool, decided: str) -> dict[str, Any]:
    return {"after_downscaling": after, "verdict": decided, "seeds": 3}


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ([(True, "holds"), (True, "holds"), (False, "inconclusive"), (False, "reversed")], "holds"),
        ([(True, "holds"), (True, "inconclusive"), (False, "reversed")], "inconclusive"),
        ([(True, "holds"), (True, "reversed"), (False, "reversed")], "refuted"),
        ([(True, "holds"), (False, "holds"), (False, "reversed")], "refuted"),
        ([(False, "reversed")], "inconclusive"),  # nothing after a downscaling: no test
    ],
)
def test_h_verdict_follows_the_rule(cells: list[tuple[bool, str]], expected: str) -> None:
    row = families._h_row("digits", "randomized", "q", [_cell(*c) for c in cells])
    assert row["verdict"] == expected


def _rows(layer: str, seed: int, trained: float, randomized: float) -> list[dict[str, Any]]:
    base = {"layer": layer, "seed": seed, "accuracy": 0.5, "mean_srop": 0.3}
    return [
        {**base, "condition": "randomized", "epoch": 0, "log_mean_srop": randomized},
        {**base, "condition": "trained", "epoch": 1, "log_mean_srop": trained + 1.0},
        {**base, "condition": "trained", "epoch": 2, "log_mean_srop": trained},  # the last
        {**base, "condition": "shuffled_labels", "epoch": 2, "log_mean_srop": randomized},
    ]


def test_h_table_group_means_by_hand() -> None:
    # family a: layer p after a downscaling, q same grid; family b: r after a downscaling
    diffs = {("a", "p"): [-0.2, -0.4], ("a", "q"): [0.1, 0.3], ("b", "r"): [-0.6, 0.0]}
    runs: dict[tuple[str, str], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for fam, after in (("a", {"p": True, "q": False}), ("b", {"r": True})):
        rows = [
            row
            for layer in after
            for seed in (0, 1)
            for row in _rows(layer, seed, diffs[fam, layer][seed], 0.0)
        ]
        layers = [{"layer": name, "after_downscaling": a} for name, a in after.items()]
        runs[fam, "digits"] = rows, layers
    table = [
        {
            "data": "digits",
            "quantity": f"log_srop[trained - {c}]",
            "after_downscaling": a,
            "verdict": "inconclusive",
            "seeds": 2,
        }
        for c in families.CONTROLS
        for a in (True, True, False)
    ]
    out = families.h_table(runs, table)
    got = {(r["control"], r["group"]): r for r in out}
    down = got["randomized", "after downscaling"]
    # per seed: mean of p and r -> seed 0 (-0.2 - 0.6) / 2 = -0.4, seed 1 (-0.4 + 0) / 2 = -0.2
    assert down["mean"] == pytest.approx(-0.3) and down["seeds"] == 2
    assert (down["low"], down["high"]) == pytest.approx((-0.4, -0.2), abs=1e-9)
    assert down["verdict"] == "holds"
    same = got["randomized", "same grid"]
    assert same["mean"] == pytest.approx(0.2) and same["verdict"] == "holds"  # > 0: not a fall
    contrast = got["randomized", "after - same"]
    assert contrast["mean"] == pytest.approx(-0.5)  # seeds: -0.5, -0.5
    assert got["randomized", "H"]["verdict"] == "inconclusive"  # every layer inconclusive
    # the control equals the randomized network here, so the same numbers come out
    assert got["shuffled_labels", "after downscaling"]["mean"] == pytest.approx(-0.3)


def test_families_flags_and_bad_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        families.main(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    for flag in ["--data", "--families", "--epochs", "--max-train", "--reuse", "--seeds"]:
        assert f"{flag} " in shown, flag
    for argv in (["--families", "lenet"], ["--data", "cifar"], ["--epochs", "0"]):
        with pytest.raises(SystemExit) as stop:
            families.main(argv)
        assert stop.value.code == 2, argv
    assert "valid choices: cnn, resnet, convnext, vit, swin" in capsys.readouterr().err


@pytest.mark.slow
def test_families_end_to_end(tmp_path: Path) -> None:
    argv = ["--out-dir", str(tmp_path), "--families", "cnn", "convnext", "--seeds", "2"]
    argv += ["--epochs", "1", "--max-train", "96", "--num-profile", "48"]
    table, h_rows = families.main(argv)
    comments, rows = read_csv(tmp_path / "families_summary.csv")
    assert comments == [f"rule: {RULE}"]
    assert {(r["data"], r["family"]) for r in rows} == {
        (d, f) for d in ("digits", "shapes") for f in ("cnn", "convnext")
    }
    directions = {"< 0": -1, "> 0": 1}
    for r in rows:
        low, mean, high = float(r["low"]), float(r["mean"]), float(r["high"])
        assert low <= mean <= high, r
        if r["paper_direction"] in directions:
            assert r["verdict"] == verdict(low, high, directions[r["paper_direction"]]), r
    layers = read_csv(tmp_path / "cnn_shapes_layers.csv")[1]
    assert [r["after_downscaling"] for r in layers] == ["False", "True", "False", "True", "False"]
    comments, h_read = read_csv(tmp_path / "families_h.csv")
    assert comments == [f"rule: {RULE}", f"H: {families.H_RULE}"]
    for h in (r for r in h_read if r["group"] == "H"):
        cells = [
            {**r, "after_downscaling": r["after_downscaling"] == "True"}
            for r in rows
            if r["data"] == h["data"] and r["quantity"] == f"log_srop[trained - {h['control']}]"
        ]
        assert len(cells) == 11  # 5 cnn layers + 6 convnext layers
        assert all(c["verdict"] in VERDICTS for c in cells)
        redo = families._h_row(h["data"], h["control"], "q", cells)
        assert h["verdict"] == redo["verdict"] and h["note"] == redo["note"]
    with Image.open(tmp_path / "families.png") as image:
        assert image.format == "PNG" and image.size[0] >= 1000
    # --reuse reads the rows back instead of training: the same tables come out
    (tmp_path / "families_summary.csv").unlink()
    again, h_again = families.main([*argv, "--reuse"])
    # (the rows were written with 6 significant digits, so the numbers agree to that)
    reread = read_csv(tmp_path / "families_summary.csv")[1]
    assert len(reread) == len(rows)
    numbers = ("mean", "low", "high")
    for got, want in zip(reread, rows, strict=True):
        assert {k: v for k, v in got.items() if k not in numbers} == {
            k: v for k, v in want.items() if k not in numbers
        }
        for k in numbers:
            assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-4, abs=2e-5), (got, k)
    assert len(again) == len(table) and len(h_again) == len(h_rows)
