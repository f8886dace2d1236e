"""Layout rules on tensors the test builds itself: attention tables in every axis order,
token maps as wide as they are long, features-last outputs off any grid, token reorderings,
and the notices a user sees (their class, where they point, when they appear)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference
from torch import Tensor, nn

from lightning_srop import SROPWarning, profile
from lightning_srop.layouts import Evidence, Reading, Refusal, read_layout


def evidence_with_tokens(grid: tuple[int, int] = (8, 8), batch: int = 2) -> Evidence:
    """What a ViT's forward pass has shown: the image's grid, the patch grid, its tokens."""
    ev = Evidence()
    ev.start_pass((batch, 3, 32, 32), (32, 32))
    patches = torch.zeros(batch, 16, *grid)
    ev.note(patches, Reading("NCHW"))
    tokens = torch.zeros(batch, grid[0] * grid[1] + 1, 16)
    ev.note(tokens, Reading("tokens", grid=grid, prefix=1))
    return ev


def read(module: nn.Module, tensor: Tensor, ev: Evidence, **options: object) -> object:
    settings: dict[str, object] = dict(
        source="",
        explicit="auto",
        explicit_for_layer=False,
        grid=None,
        prefix_tokens=None,
        ndim=None,
    )
    settings.update(options)
    return read_layout("layer", module, tensor, evidence=ev, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (nn.Dropout(), (2, 4, 65, 65)),  # (N, heads, L, L) probabilities
        (nn.Linear(4, 4), (2, 65, 65, 4)),  # (N, L, L, heads): CaiT's talking heads
        (nn.Linear(3, 4), (2, 64, 64, 4)),  # ConViT's positional attention (no class token)
        (nn.Identity(), (65, 65)),  # (L, L) a relative-position table
        (nn.Identity(), (2, 65, 65)),  # (N, L, L) one head
    ],
)
def test_attention_tables_are_refused_in_every_axis_order(
    module: nn.Module, shape: tuple[int, ...]
) -> None:
    ev = evidence_with_tokens()
    grids = set(ev.grids)
    reading = read(module, torch.rand(shape), ev)
    assert isinstance(reading, Refusal)
    assert "attention" in reading.reason and "not a spatial map" in reading.reason
    assert ev.grids == grids  # a refused table is never grid evidence


def test_a_global_layout_does_not_read_a_table() -> None:
    ev = evidence_with_tokens()
    reading = read(nn.Linear(4, 4), torch.rand(2, 65, 65, 4), ev, explicit="NHWC")
    assert isinstance(reading, Refusal) and "attention" in reading.reason


def test_a_token_map_as_wide_as_it_is_long_is_a_map() -> None:
    ev = Evidence()
    ev.start_pass((2, 3, 32, 32), (32, 32))
    ev.note(torch.zeros(2, 64, 8, 8), Reading("NCHW"))  # the patch embedding: 64 features
    reading = read(nn.LayerNorm(64), torch.rand(2, 64, 64), ev)
    assert isinstance(reading, Reading)
    assert (reading.layout, reading.grid, reading.prefix) == ("tokens", (8, 8), 0)


def test_an_image_sized_square_is_not_attention() -> None:
    ev = Evidence()
    ev.start_pass((2, 1, 28, 28), (28, 28))
    reading = read(nn.Identity(), torch.rand(2, 1, 28, 28), ev)
    assert isinstance(reading, Reading) and reading.layout == "NCHW"


def test_features_last_off_every_grid_is_not_read() -> None:
    # NesT-like (N, T, n, C) blocked tokens out of a Linear: 16 x 196 is no grid of a 56 x 56
    ev = Evidence()
    ev.start_pass((2, 3, 56, 56), (56, 56))
    reading = read(nn.Linear(8, 8), torch.rand(2, 16, 196, 8), ev)
    assert isinstance(reading, Refusal) and "no grid seen" in reading.reason
    on_grid = read(nn.Linear(8, 8), torch.rand(2, 14, 14, 8), ev)
    assert isinstance(on_grid, Reading) and on_grid.layout == "NHWC"


class Reorder(nn.Module):
    """Tokens out of row order (a fixed permutation, as timm's Hiera ``Unroll``)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.register_buffer(
            "order", torch.randperm(count, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.order]


class Scrambled(nn.Module):
    """A conv patch embedding, row-major tokens, a reordering, then a block."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.reorder = Reorder(64)
        self.blocks = nn.Sequential(nn.LayerNorm(8))

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return self.blocks(self.reorder(tokens))


def test_tokens_after_a_reordering_are_not_read_as_a_grid() -> None:
    net = Scrambled()
    with pytest.warns(SROPWarning, match=r"'reorder' \(Reorder\) reorders the tokens"):
        report = profile(net, torch.randn(2, 3, 32, 32), layers=["proj", "blocks.0"])
    assert report.names == ["proj"] and "blocks.0" in report.skipped
    net.reorder.order = torch.arange(64)  # no reordering: the same model reads
    report = profile(net, torch.randn(2, 3, 32, 32), layers=["proj", "blocks.0"])
    assert report.names == ["proj", "blocks.0"]


# ------------------------------------------------------------------------------------------
# Notices: stated layouts are silent, contradictions are said, the class and the user's line
# ------------------------------------------------------------------------------------------


def test_stated_layout_silences_every_layer_it_covers() -> None:
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2)
    images = torch.randn(4, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = profile(vit, images, layout="tokens", grid=(8, 8), prefix_tokens=1)
    assert [str(w.message) for w in caught if w.category is SROPWarning] == []
    assert report.names == ["patch_embed.proj", "blocks.0", "blocks.1"]


def test_a_stated_layout_that_the_type_disproves_gets_one_notice() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    x = torch.randn(2, 3, 12, 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = profile(net, [x, x], layout={"0": "NHWC"})
    said = [w for w in caught if w.category is SROPWarning]
    assert len(said) == 1
    assert "layer '0' (Conv2d) was given `layout`='NHWC'" in str(said[0].message)
    assert "channels first ('NCHW')" in str(said[0].message)
    assert said[0].filename == __file__  # the user's call, not a line of the package
    # read as stated: the (N, C, H, W) output's last axis taken as channels
    maps = net(x).detach().permute(0, 3, 1, 2).double().numpy()
    expected = srop_reference(maps).ravel()
    assert report["0"].stats["mean"] == pytest.approx(np.nanmean(expected), rel=1e-5)
    # a global layout is for the layers that need it: the type decides, and says so once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = profile(net, x, layout="NHWC")
    said = [w for w in caught if w.category is SROPWarning]
    assert len(said) == 1 and "it is read as 'NCHW'" in str(said[0].message)
    assert report["0"].meta is not None and report["0"].meta.layout == "NCHW"


SCRIPT = """
import torch
import lightning.pytorch  # Lightning's warning formatter, as in any Lightning project
from torch import nn
from lightning_srop import profile

net = nn.Sequential(nn.Conv2d(3, 4, 3))
report = profile(net, torch.randn(2, 3, 8, 8), layout={"0": "NHWC"})
"""


@pytest.mark.parametrize("folder", ["project", "my_lightning_project"])
def test_a_terminal_shows_the_class_and_the_users_line(tmp_path: Path, folder: str) -> None:
    # Lightning's formatter drops the category of any warning whose file path holds
    # "lightning": the class must still show, and the line must be the user's.
    script = tmp_path / folder / "train.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(SCRIPT))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "", "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=True,
    )
    lines = [line for line in done.stderr.splitlines() if "layout" in line]
    assert lines[0].startswith(f"{script}:8: SROPWarning: profile: layer '0' (Conv2d)")
    if "lightning" not in str(script):  # Python's own format adds the user's source line
        assert len(lines) == 2 and lines[1].strip().startswith("report = profile(net")
    else:  # Lightning's format: one line, the class carried by the message
        assert len(lines) == 1
        assert "SROPWarning: SROPWarning" not in lines[0]


def test_a_notice_at_the_end_of_a_capture_points_at_the_with_line() -> None:
    from lightning_srop import SROPEngine

    net = nn.Sequential(nn.Identity())
    engine = SROPEngine(net, layers=["0"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with engine.capture():  # no input recorded: the reading is PyTorch's convention
            net(torch.randn(2, 4, 5, 6))
    said = [w for w in caught if w.category is SROPWarning]
    assert len(said) == 1 and "by inference" in str(said[0].message)
    assert said[0].filename == __file__
