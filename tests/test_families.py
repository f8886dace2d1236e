"""Every timm family read right or skipped with a notice: nothing silent.

For each family (small configs, ``pretrained=False``, no download), the test hooks every block
the default choice takes, lays its raw output out itself from what it knows of the family
(row-major tokens after the family's prefix tokens; channels-last stages; NesT's blocks put
back with timm's own ``deblockify``) and compares the library's statistics with the float64
NumPy reference (Hiera's unrolled tokens laid out with timm's own ``Reroll``). Blocks whose
patches the family folds into the batch (MobileViT) must be listed in ``skipped`` with a
notice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference
from torch import Tensor, nn

from lightning_srop import SROPWarning, profile
from lightning_srop.layers import DEFAULT_LAYER_TYPES, resolve_layers

timm = pytest.importorskip("timm")

# raw block output -> (N, C, H, W) maps laid out by the test, or None: must be skipped
Lay = Callable[[str, nn.Module, Any], "np.ndarray | None"]


def row_major(prefix: int | Callable[[str], int] = 0) -> Lay:
    """Tokens ``(N, P + g*g, D)`` on a square grid, row-major after ``P`` prefix tokens."""

    def lay(name: str, module: nn.Module, out: Any) -> np.ndarray:
        t = (out[0] if isinstance(out, tuple) else out).detach().double()
        p = prefix(name) if callable(prefix) else prefix
        n, count, d = t.shape
        g = math.isqrt(count - p)
        assert g * g == count - p, (name, t.shape)
        return t[:, p:].reshape(n, g, g, d).permute(0, 3, 1, 2).numpy()

    return lay


def channels_last(name: str, module: nn.Module, out: Any) -> np.ndarray:
    return out.detach().double().permute(0, 3, 1, 2).numpy()


def nest_blocks(model: nn.Module) -> Lay:
    def lay(name: str, module: nn.Module, out: Any) -> np.ndarray:
        level = model.get_submodule(name.rsplit(".transformer_encoder", 1)[0])
        image = timm.models.nest.deblockify(out.detach(), level.block_size)  # timm's own
        return image.double().permute(0, 3, 1, 2).numpy()

    return lay


def skipped(name: str, module: nn.Module, out: Any) -> None:
    return None


def hiera_rerolled(model: nn.Module) -> Lay:
    def lay(name: str, module: nn.Module, out: Any) -> np.ndarray:
        index = int(name.split(".")[1])
        image = model.reroll(out.detach(), index)  # timm's own: (N, H, W, C)
        return image.double().permute(0, 3, 1, 2).numpy()

    return lay


def _nest() -> nn.Module:
    return timm.models.nest.Nest(
        img_size=32,
        patch_size=2,
        embed_dims=(16, 32, 32),
        num_heads=(1, 2, 2),
        depths=(1, 1, 1),
        num_levels=3,
    )


FAMILIES: dict[str, tuple[Callable[[], nn.Module], int, Callable[[nn.Module], Lay]]] = {
    # family: (builder, input size, the test's own layout of each default-chosen block)
    "vit": (
        lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2),
        32,
        lambda m: row_major(1),
    ),
    "vit_d_equals_l": (  # 64 features over 64 tokens: a token map, not attention
        lambda: timm.create_model(
            "vit_tiny_patch16_224",
            img_size=32,
            patch_size=4,
            depth=2,
            embed_dim=64,
            num_heads=2,
            class_token=False,
            global_pool="avg",
        ),
        32,
        lambda m: row_major(0),
    ),
    "deit_distilled": (
        lambda: timm.create_model(
            "deit_tiny_distilled_patch16_224", img_size=32, patch_size=4, depth=2
        ),
        32,
        lambda m: row_major(2),
    ),
    "vit_registers": (
        lambda: timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, reg_tokens=4
        ),
        32,
        lambda m: row_major(5),
    ),
    "cait": (
        lambda: timm.create_model(
            "cait_xxs24_224", img_size=32, patch_size=4, depth=2, depth_token_only=1
        ),
        32,
        lambda m: (
            lambda name, module, out: (
                None if "token_only" in name else row_major(0)(name, module, out)
            )
        ),
    ),
    "convit": (  # GPSA blocks (qk + v projections) before the class token joins
        lambda: timm.create_model(
            "convit_tiny", img_size=32, patch_size=4, depth=2, local_up_to_layer=1
        ),
        32,
        lambda m: row_major(lambda name: 0 if name == "blocks.0" else 1),
    ),
    "pvt_v2": (  # q + kv attention
        lambda: timm.create_model("pvt_v2_b0", depths=(1, 1, 1, 1)),
        64,
        lambda m: row_major(0),
    ),
    "twins_pcpvt": (
        lambda: timm.create_model("twins_pcpvt_small", img_size=64, depths=(1, 1, 1, 1)),
        64,
        lambda m: row_major(0),
    ),
    "twins_svt": (
        lambda: timm.create_model("twins_svt_small", img_size=64, depths=(1, 1, 1, 1)),
        64,
        lambda m: row_major(0),
    ),
    "swin": (
        lambda: timm.create_model(
            "swin_tiny_patch4_window7_224",
            img_size=32,
            window_size=4,
            depths=(1, 1),
            num_heads=(1, 2),
            embed_dim=16,
        ),
        32,
        lambda m: channels_last,
    ),
    "nest": (_nest, 32, nest_blocks),
    "levit": (  # LinearNorm projections (a Linear wrapped with a BatchNorm)
        lambda: timm.create_model("levit_128s", img_size=128),
        128,
        lambda m: row_major(0),
    ),
    "volo": (  # outlook attention (v + attention weights), channels-last; then class attention
        lambda: timm.create_model("volo_d1_224", img_size=64),
        64,
        lambda m: (
            lambda name, module, out: (
                row_major(1)(name, module, out)
                if name.startswith("post_network")
                else channels_last(name, module, out)
            )
        ),
    ),
    "coat": (
        lambda: timm.create_model("coat_lite_tiny", img_size=64),
        64,
        lambda m: row_major(1),
    ),
    "pit": (lambda: timm.create_model("pit_ti_224", img_size=64), 64, lambda m: row_major(1)),
    "xcit": (
        lambda: timm.create_model("xcit_nano_12_p16_224", img_size=64, depth=2),
        64,
        lambda m: row_major(lambda name: 1 if name.startswith("cls_attn") else 0),
    ),
    "swinv2_cr": (
        lambda: timm.create_model(
            "swinv2_cr_tiny_ns_224", img_size=64, depths=(1, 1, 1, 1), window_size=2
        ),
        64,
        lambda m: channels_last,
    ),
    "gcvit": (
        lambda: timm.create_model("gcvit_xxtiny", img_size=64),
        64,
        lambda m: channels_last,
    ),
    "eva02": (
        lambda: timm.create_model("eva02_tiny_patch14_224", img_size=56, depth=2),
        56,
        lambda m: row_major(1),
    ),
    "maxvit": (
        lambda: timm.create_model("maxvit_nano_rw_256", img_size=64, depths=(1, 1, 1, 1)),
        64,
        lambda m: lambda name, module, out: out.detach().double().numpy(),
    ),
    "hiera": (  # unrolled tokens, out of row order: put back as timm's own Reroll does
        lambda: timm.create_model(
            "hiera_tiny_224", img_size=64, embed_dim=16, num_heads=1, stages=(1, 2, 1, 1)
        ),
        64,
        hiera_rerolled,
    ),
    "mobilevit": (  # patches folded into the batch: skipped
        lambda: timm.create_model("mobilevit_xxs"),
        64,
        lambda m: (
            lambda name, module, out: (
                None if ".transformer." in name else channels_last(name, module, out)
            )
        ),
    ),
}


def _blocks(model: nn.Module) -> list[str]:
    return [n for n, m in resolve_layers(model) if not isinstance(m, DEFAULT_LAYER_TYPES)]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_blocks_read_right_or_skipped_with_a_notice(family: str) -> None:
    build, size, layout = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    lay = layout(model)
    blocks = _blocks(model)
    assert blocks, f"{family}: the default choice takes no block"
    images = [torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)]
    captured: dict[str, list[np.ndarray | None]] = {name: [] for name in blocks}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda m, a, o, name=name: captured[name].append(lay(name, m, o))
        )
        for name in blocks
    ]
    with torch.no_grad():
        for x in images:
            model(x)
    for handle in handles:
        handle.remove()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = profile(model, images)
    said = " ".join(str(w.message) for w in caught if w.category is SROPWarning)
    for name, maps in captured.items():
        if maps[0] is None:  # the test expects the library to refuse it, and say so
            assert name not in report.names, f"{family}: {name} measured"
            assert name in report.skipped and repr(name) in said, f"{family}: {name} silent"
            continue
        assert name in report.names, f"{family}: {name} not measured: {report.skipped.get(name)}"
        ref = np.concatenate([srop_reference(m).ravel() for m in maps if m is not None])
        valid = ref[~np.isnan(ref)]
        stats = report[name].stats
        assert stats["count"] == valid.size, (family, name)
        if not valid.size:  # every map flat, as the reference says too
            continue
        assert stats["mean"] == pytest.approx(valid.mean(), rel=1e-5), (family, name)
        assert stats["max"] == pytest.approx(valid.max(), rel=1e-5), (family, name)


def test_attention_tables_of_real_models_are_refused() -> None:
    """CaiT's talking heads and ConViT's positional attention, ``(N, L, L, heads)``, and the
    attention probabilities ``(N, heads, L, L)``: refused, never measured."""
    torch.manual_seed(0)
    cait = timm.create_model("cait_xxs24_224", img_size=32, patch_size=4, depth=2)
    convit = timm.create_model("convit_tiny", img_size=32, patch_size=4, depth=2)
    for model, pattern in (
        (cait, r"^blocks\.\d+\.attn\.(proj_l|proj_w|attn_drop)$"),
        (convit, r"attn\.(pos_proj|attn_drop)$"),
    ):
        for block in model.modules():
            if hasattr(block, "fused_attn"):
                block.fused_attn = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = profile(model.eval(), torch.randn(2, 3, 32, 32), layers=pattern)
        assert report.names == []
        chosen = [n for n, _ in resolve_layers(model, pattern)]
        assert set(report.skipped) == set(chosen)
        assert all("not a spatial map" in why for why in report.skipped.values())
        assert sum(w.category is SROPWarning for w in caught) == len(chosen)


def test_one_d_pool_over_a_flattened_grid_is_left_out() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AvgPool1d(2)

        def forward(self, x: Tensor) -> Tensor:
            return self.pool(self.conv(x).flatten(2))

    report = profile(Flat(), torch.randn(2, 3, 8, 8))
    assert report.names == ["conv"]
    assert "flattened 2-D grid" in report.skipped["pool"]
