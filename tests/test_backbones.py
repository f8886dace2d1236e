"""Every backbone measured right: token grids, channels-last outputs, 1-D and mixed models,
attention refused, any batch format, ``unit="input"`` that holds.

Each check captures the outputs with the test's own hooks, lays them out itself (from what
the test knows of the model: its patch grid, its prefix tokens, where its channels are) and
compares with the float64 NumPy reference of ``tests/_srop_reference.py``. Models are built
from small configs (timm, transformers, torchvision), never downloaded. Every check also
asserts that no hook is left and that the model's output is bit-identical with and without
the measurement.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from _srop_reference import srop_reference as np_srop_2d
from _srop_reference import srop_reference_1d as np_srop_1d
from torch import Tensor, nn

from lightning_srop import SROPCallback, SROPWarning, profile
from lightning_srop.layers import resolve_layers

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")

Layout = Callable[[Any], np.ndarray]  # a raw module output -> (N, C, H, W) or (N, C, L) maps


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def tokens(grid: tuple[int, int], prefix: int, first: bool = False) -> Layout:
    """The test's own layout of ``(N, prefix + h*w, D)`` tokens (``first``: a tuple's [0])."""

    def lay(out: Any) -> np.ndarray:
        t = (out[0] if first else out).detach().float()
        n, _, d = t.shape
        return t[:, prefix:].reshape(n, *grid, d).permute(0, 3, 1, 2).double().numpy()

    return lay


def nhwc(out: Any) -> np.ndarray:
    return out.detach().float().permute(0, 3, 1, 2).double().numpy()


def nlc(out: Any) -> np.ndarray:
    return out.detach().float().transpose(1, 2).double().numpy()


def plain(out: Any) -> np.ndarray:
    return out.detach().float().double().numpy()


def reference(maps: np.ndarray) -> np.ndarray:
    return (np_srop_2d(maps) if maps.ndim == 4 else np_srop_1d(maps)).ravel()


def measure(
    model: nn.Module,
    batches: list[Any],
    expected: dict[str, Layout],
    *,
    call: Callable[[nn.Module, Any], Any] = lambda m, b: m(b),
    **options: Any,
) -> Any:
    """Profile ``model`` and compare each expected layer with the reference of the test's own
    capture; check hooks and outputs. Returns the report."""
    model.eval()
    captured: dict[str, list[np.ndarray]] = {name: [] for name in expected}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda m, a, o, name=name: captured[name].append(expected[name](o))
        )
        for name in expected
    ]
    with torch.no_grad():
        before = [call(model, b) for b in batches]
    for h in handles:
        h.remove()
    during: list[Any] = []
    report = profile(model, batches, forward=lambda m, b: during.append(call(m, b)), **options)
    assert hooks_left(model) == 0
    for a, b in zip(before, during, strict=True):
        assert _same(a, b), "the measured forward changed the model's output"
    for name, maps in captured.items():
        ref = np.concatenate([reference(m) for m in maps])
        valid = ref[~np.isnan(ref)]
        layer = report[name]
        assert layer.stats["count"] == valid.size, name
        assert layer.stats["mean"] == pytest.approx(valid.mean(), rel=1e-5), name
        assert layer.stats["max"] == pytest.approx(valid.max(), rel=1e-5), name
        width = layer.edges[1] - layer.edges[0]
        assert abs(layer.stats["median"] - np.median(valid)) <= width, name
    return report


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) if a is not None else b is None


def vit_config(**extra: Any) -> dict[str, Any]:
    return dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=4,
        **extra,
    )


# ------------------------------------------------------------------------------------------
# Vision transformers: the default choice is the patch embedding and every block
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "prefix"),
    [("vit", 1), ("deit_distilled", 2), ("registers", 5), ("beit", 1), ("data2vec", 1)],
)
def test_vit_family_blocks_read_over_the_patch_grid(family: str, prefix: int) -> None:
    torch.manual_seed(0)
    if family == "vit":
        model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2)
    elif family == "deit_distilled":
        model = timm.create_model(
            "deit_tiny_distilled_patch16_224", img_size=32, patch_size=4, depth=2
        )
    elif family == "registers":
        config = transformers.Dinov2WithRegistersConfig(**vit_config(num_register_tokens=4))
        model = transformers.Dinov2WithRegistersModel(config)
    elif family == "beit":
        model = transformers.BeitModel(transformers.BeitConfig(**vit_config()))
    else:  # its blocks return tuples: the hidden state first
        config = transformers.Data2VecVisionConfig(**vit_config())
        model = transformers.Data2VecVisionModel(config)
    blocks = [n for n, _ in resolve_layers(model) if n != _patch_conv(model)]
    assert len(blocks) == 2  # every transformer block is in the default choice
    first = family == "data2vec"
    expected = {name: tokens((8, 8), prefix, first=first) for name in blocks}
    expected[_patch_conv(model)] = plain
    with pytest.warns(SROPWarning, match=rf"tokens on 8x8 \(\+{prefix} prefix\)"):
        report = measure(model, [torch.randn(2, 3, 32, 32)], expected)
    assert report.names == [_patch_conv(model), *blocks]  # forward order
    for name in blocks:
        meta = report[name].meta
        assert meta is not None and meta.layout == "tokens" and meta.prefix_tokens == prefix
        assert meta.map_size == (8, 8) and meta.inferred


def _patch_conv(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def test_hugging_face_vit_non_square_input_and_explicit_tokens_are_silent() -> None:
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(**vit_config()))
    blocks = [n for n, _ in resolve_layers(model) if "projection" not in n]
    call = lambda m, b: m(b, interpolate_pos_encoding=True)  # noqa: E731
    x = torch.randn(2, 3, 32, 48)  # an 8 x 12 patch grid
    measure(model, [x], {name: tokens((8, 12), 1) for name in blocks}, call=call)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)  # stated explicitly: no notice
        measure(
            model,
            [x],
            {name: tokens((8, 12), 1) for name in blocks},
            call=call,
            layers=blocks,
            layout="tokens",
            grid=(8, 12),
            prefix_tokens=1,
        )


def test_swin_stages_with_patch_merging_and_tuple_outputs() -> None:
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4
    )
    model = transformers.SwinModel(config)
    names = [n for n, _ in resolve_layers(model) if "blocks" in n]
    assert names == ["encoder.layers.0.blocks.0", "encoder.layers.1.blocks.0"]
    expected = {
        names[0]: tokens((8, 8), 0, first=True),  # a tuple: the hidden state first
        names[1]: tokens((4, 4), 0, first=True),  # after patch merging
    }
    report = measure(model, [torch.randn(2, 3, 32, 32)], expected)
    assert report[names[1]].meta is not None and report[names[1]].meta.source == "[0]"
    # timm's Swin keeps its stages channels-last (N, H, W, C)
    timm_swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=32,
        window_size=4,
        depths=(1, 1),
        num_heads=(1, 2),
        embed_dim=16,
    )
    measure(
        timm_swin,
        [torch.randn(2, 3, 32, 32)],
        {"layers.0.blocks.0": nhwc, "layers.1.blocks.0": nhwc},
    )


def test_segformer_token_stages() -> None:
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        num_attention_heads=[1, 2],
        patch_sizes=[7, 3],
        strides=[4, 2],
        mlp_ratios=[2, 2],
    )
    model = transformers.SegformerModel(config)
    expected = {"stages.0.blocks.0": tokens((8, 8), 0), "stages.1.blocks.0": tokens((4, 4), 0)}
    report = measure(model, [torch.randn(2, 3, 32, 32)], expected)
    assert "stages.0.blocks.0.mlp.dwconv.dwconv" in report.names  # real maps stay measured


# ------------------------------------------------------------------------------------------
# ConvNeXt: channels-last outputs of any module, H == W == C included
# ------------------------------------------------------------------------------------------


def test_convnext_gelu_grn_layernorm_channels_last_even_when_h_equals_w_equals_c() -> None:
    torch.manual_seed(0)
    # hidden size 8 on an 8 x 8 grid: every (N, 8, 8, 8) output reads both ways
    config = transformers.ConvNextV2Config(num_stages=1, hidden_sizes=[8], depths=[1])
    model = transformers.ConvNextV2Model(config)
    block = "encoder.stages.0.layers.0"
    expected = {f"{block}.{part}": nhwc for part in ("layernorm", "pwconv1", "act", "grn")}
    expected[f"{block}.dwconv"] = plain
    measure(model, [torch.randn(2, 3, 32, 32)], expected, layers=list(expected))
    # timm's ConvNeXt with a Linear MLP: norm, fc1 and GELU on (N, H, W, C)
    net = timm.create_model("convnext_atto", conv_mlp=False)
    names = ["stages.0.blocks.0.norm", "stages.0.blocks.0.mlp.fc1", "stages.0.blocks.0.mlp.act"]
    measure(net, [torch.randn(2, 3, 64, 64)], dict.fromkeys(names, nhwc), layers=names)


class Ambiguous(nn.Module):
    """A channels-last map of 8 x 8 x 8 whose producer leaves no trace of its layout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x).permute(0, 2, 3, 1) * 2)


def test_ambiguous_channels_last_is_not_guessed() -> None:
    net = Ambiguous()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(SROPWarning, match=r"'act' \(GELU\) returned \(2, 8, 8, 8\).*layout="):
        report = profile(net, x, layers=["act"])
    assert report.names == [] and "act" in report.skipped
    measure(net, [x], {"act": nhwc}, layers=["act"], layout={"act": "NHWC"})


# ------------------------------------------------------------------------------------------
# Not maps: attention probabilities and relative-position bias tables
# ------------------------------------------------------------------------------------------


def test_attention_probabilities_and_bias_tables_are_refused() -> None:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2)
    for block in vit.blocks:
        block.attn.fused_attn = False  # attention probabilities pass through attn_drop
    with pytest.warns(SROPWarning, match=r"attn_drop' \(Dropout\).*attention probabilities"):
        report = profile(vit, torch.randn(2, 3, 32, 32), layers=r"attn_drop$|^blocks\.0$")
    assert report.names == ["blocks.0"]
    assert {"blocks.0.attn.attn_drop", "blocks.1.attn.attn_drop"} <= set(report.skipped)
    beit = transformers.BeitModel(
        transformers.BeitConfig(**vit_config(use_relative_position_bias=True))
    )
    with pytest.warns(SROPWarning, match=r"relative_position_bias.*not a spatial map"):
        tables = profile(beit, torch.randn(2, 3, 32, 32), layers=r"relative_position_bias$")
    assert tables.names == [] and len(tables.skipped) == 2
    assert hooks_left(vit) == hooks_left(beit) == 0


# ------------------------------------------------------------------------------------------
# Any batch: detection and Hugging Face dict batches
# ------------------------------------------------------------------------------------------


def test_detection_model_on_images_and_targets_batches() -> None:
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96
    ).eval()
    images = [torch.rand(3, 60, 80), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 20.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    stem = "backbone.body.0.0"
    captured: list[np.ndarray] = []
    handle = model.get_submodule(stem).register_forward_hook(
        lambda m, a, o: captured.append(plain(o))
    )
    with torch.no_grad():
        before = model(images)
    handle.remove()
    for data in ([(images, targets)], images):  # (images, targets) batches, or one image list
        report = profile(model, data)
        ref = reference(captured[0])
        assert report[stem].stats["count"] == np.count_nonzero(~np.isnan(ref))
        assert report[stem].stats["mean"] == pytest.approx(np.nanmean(ref), rel=1e-5)
        assert report.num_batches == 1 and hooks_left(model) == 0
    with torch.no_grad():
        after = model(images)
    assert _same(before, after)
    with pytest.raises(RuntimeError, match=r"list of images, which the model resizes inside"):
        profile(model, images, unit="input")


def test_hugging_face_dict_batch_through_forward() -> None:
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(
        transformers.ViTConfig(**vit_config(num_labels=3))
    )
    batch = {"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.tensor([0, 2])}
    blocks = [n for n, _ in resolve_layers(model) if "projection" not in n]
    report = measure(
        model,
        [batch],
        {name: tokens((8, 8), 1) for name in blocks},
        call=lambda m, b: m(**b).logits,
    )
    assert report[blocks[0]].meta is not None and report[blocks[0]].meta.downscale is None
    with pytest.raises(ValueError, match=r"input_key`='pixel_values'.*forward=lambda"):
        profile(model, [batch])
    keyed = profile(model, [batch], input_key="pixel_values", unit="input")
    assert keyed[blocks[0]].meta is not None and keyed[blocks[0]].meta.downscale == 4.0


# ------------------------------------------------------------------------------------------
# 1-D and mixed audio models
# ------------------------------------------------------------------------------------------


class CNN1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 9, stride=4)
        self.relu1 = nn.ReLU()
        self.norm = nn.GroupNorm(2, 8)
        self.gelu = nn.GELU()
        self.conv2 = nn.Conv1d(8, 16, 5, stride=2)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.conv2(self.gelu(self.norm(self.relu1(self.conv1(x))))))


def test_1d_cnn_activations_and_a_global_layout() -> None:
    torch.manual_seed(0)
    net = CNN1d()
    x = torch.randn(2, 1, 400)
    names = ["relu1", "norm", "gelu", "relu2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)  # read from their inputs: nothing to say
        measure(net, [x], dict.fromkeys(names, plain), layers=r"relu|norm|gelu")
    # a global channels-last layout describes 4-D outputs: Conv1d outputs stay (N, C, L), as
    # their type proves, with nothing to say (a global layout of another rank covers them)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)
        measure(net, [x], {"conv1": plain, "conv2": plain}, layout="NHWC")


class Sequence1d(nn.Module):
    """A temporal Conv1d, then a Linear and GELU over (N, L, C) frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(80, 32, 3, padding=1)
        self.proj = nn.Linear(32, 24)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.proj(self.conv(x.transpose(1, 2)).transpose(1, 2)))


@pytest.mark.parametrize("ndim", [None, 1])
def test_n_l_c_outputs_are_channels_last_never_across_channels(ndim: int | None) -> None:
    torch.manual_seed(0)
    net = Sequence1d()
    x = torch.randn(2, 50, 80)  # (N, T, F) frames
    expected = {"conv": plain, "proj": nlc, "act": nlc}
    with pytest.warns(SROPWarning, match=r"'proj' as NLC"):
        report = measure(net, [x], expected, layers=list(expected), ndim=ndim)
    assert report["proj"].meta is not None and report["proj"].meta.map_size == (50,)
    assert report["proj"].stats["count"] == 2 * 24  # 24 channels of length 50, not 50 of 24


class Spectrogram(nn.Module):
    """STFT -> 2-D front-end -> temporal Conv1d, beside an ECA channel attention."""

    def __init__(self) -> None:
        super().__init__()
        self.front = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.temporal = nn.Conv1d(4 * 8, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.eca = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, wave: Tensor) -> Tensor:
        window = torch.hann_window(62)
        spec = torch.stft(wave, 62, hop_length=16, window=window, return_complex=True).abs()
        h = self.front(spec[:, None, :16])  # (N, 4, 8, T / 2)
        weights = self.eca(self.gap(h).flatten(1)[:, None]).sigmoid()  # (N, 1, 4)
        h = h * weights.transpose(1, 2)[..., None]
        return self.temporal(h.flatten(1, 2)).mean(-1)


def test_spectrogram_front_end_temporal_conv1d_by_default_eca_left_out() -> None:
    torch.manual_seed(0)
    net = Spectrogram()
    wave = torch.randn(2, 4000)
    assert [n for n, _ in resolve_layers(net)] == ["front", "temporal", "gap", "eca"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)  # the default choice: quiet skips
        report = measure(net, [wave], {"front": plain, "temporal": plain})
    assert report.names == ["front", "temporal"]
    assert "ECA-style channel attention" in report.skipped["eca"]


def test_unit_input_is_the_same_at_batch_1_and_8_for_an_stft_front_end() -> None:
    torch.manual_seed(0)
    net = Spectrogram().eval()
    wave = torch.randn(8, 4000)
    one = profile(net, [wave[i : i + 1] for i in range(8)], unit="input")
    eight = profile(net, wave, unit="input")
    for name in ("front", "temporal"):
        assert one[name].stats["mean"] == pytest.approx(eight[name].stats["mean"], rel=1e-9)
        meta = eight[name].meta
        assert meta is not None and meta.downscale is not None
        # the time axis of the input: 4000 samples -> 251 STFT frames -> stride 2
        assert meta.downscale == pytest.approx(4000 / meta.map_size[-1])
        limit = 0.5 * math.sqrt(2) if meta.ndim == 2 else 0.5
        assert eight[name].stats["max"] <= limit / meta.downscale  # within the input's Nyquist
    with pytest.raises(RuntimeError, match=r"input's axes cannot be told.*input_layout="):
        profile(Sequence1d(), torch.randn(2, 50, 80), layers=["conv"], unit="input")
    framed = profile(
        Sequence1d(), torch.randn(2, 50, 80), layers=["conv"], unit="input", input_layout="NLC"
    )
    assert framed["conv"].meta is not None and framed["conv"].meta.downscale == 1.0


def test_unit_input_quantiles_when_the_downscaling_changes_between_batches() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.AvgPool2d(2)).eval()
    small, large = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 64, 64)
    net_in = profile(net, [large, small], unit="input", layers=["1"])  # s = 4, then 4 again
    assert net_in["1"].meta is not None
    # a layer whose downscaling changes: pooling to a fixed size
    pooled = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(8)).eval()
    report = profile(pooled, [small, large], unit="input", layers=["1"])  # s = 2, then 8
    values = []
    for x, s in ((small, 2.0), (large, 8.0)):
        with torch.no_grad():
            maps = pooled(x).double().numpy()
        values.append(reference(maps) / s)
    truth = np.concatenate(values)
    width = report["1"].edges[1] - report["1"].edges[0]
    assert report["1"].edges[-1] >= truth.max()  # the range widened: nothing clamped
    for stat, q in (("q05", 5), ("q25", 25), ("median", 50), ("q75", 75), ("q95", 95)):
        assert abs(report["1"].stats[stat] - np.percentile(truth, q)) <= width, stat
    assert report["1"].stats["max"] == pytest.approx(truth.max(), rel=1e-6)


# ------------------------------------------------------------------------------------------
# The callback on a vision transformer in a real Trainer
# ------------------------------------------------------------------------------------------


class ViTModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, num_classes=3
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_callback_on_a_vit_in_a_trainer(tmp_path: Path, precision: str) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 3, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    module = ViTModule()
    captured: dict[str, list[np.ndarray]] = {"blocks.0": [], "blocks.1": []}
    for name in captured:
        module.net.get_submodule(name).register_forward_hook(
            lambda m, a, o, name=name: (
                captured[name].append(tokens((8, 8), 1)(o)) if not m.training else None
            )
        )
    callback = SROPCallback(num_batches=2, log_histograms=False, log_figure=False)
    trainer = pl.Trainer(
        max_epochs=1,
        precision=precision,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SROPWarning)
        trainer.fit(module, loader, loader)
    report = callback.last_report
    assert report is not None
    assert report.names == ["net.patch_embed.proj", "net.blocks.0", "net.blocks.1"]
    # the last validation run's first two batches are what was measured
    for name in ("blocks.0", "blocks.1"):
        maps = captured[name][-4:-2]
        ref = np.concatenate([reference(m) for m in maps])
        layer = report[f"net.{name}"]
        assert layer.stats["count"] == np.count_nonzero(~np.isnan(ref))
        assert layer.stats["mean"] == pytest.approx(np.nanmean(ref), rel=1e-5)
        metric = trainer.callback_metrics[f"srop/net.{name}/change"]
        assert math.isfinite(float(metric))
    assert callback.baseline_report is not None
    assert callback.baseline_report.names == report.names
    assert hooks_left(module) == len(captured)  # only the test's own hooks


class SquareImages(nn.Module):
    """One-channel 28 x 28 images through a module of no known type: 28 could be a token
    count (5 x 5 + 3), but the input's own grid says these are images."""

    def __init__(self) -> None:
        super().__init__()
        self.identity = nn.Identity()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.identity(x))


def test_square_images_are_not_taken_for_attention() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)
        measure(
            SquareImages(),
            [torch.randn(4, 1, 28, 28)],
            {"identity": plain, "conv": plain},
            layers=["identity", "conv"],
        )


@pytest.mark.parametrize(
    "name",
    ["tv:resnet18", "tv:mobilenet_v3_small", "tv:convnext_tiny", "timm:ecaresnet26t"],
)
def test_cnn_default_choice_is_unchanged_convs_and_pools_read_by_type(name: str) -> None:
    """On CNNs the default choice measures every conv and pooling output, read as (N, C, H, W)
    by the module's type: no inference, no notice (ECA's Conv1d is left out quietly)."""
    from lightning_srop.layers import DEFAULT_LAYER_TYPES_2D

    torch.manual_seed(0)
    source, arch = name.split(":")
    model = (
        torchvision.models.get_model(arch, weights=None)
        if source == "tv"
        else timm.create_model(arch, pretrained=False)
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)
        report = profile(model, torch.randn(2, 3, 64, 64))
    two_d = [n for n, m in model.named_modules() if isinstance(m, DEFAULT_LAYER_TYPES_2D)]
    assert report.names == [n for n in two_d if n not in report.skipped]
    assert all(
        r.meta is not None and r.meta.layout == "NCHW" and not r.meta.inferred
        for r in report.layers
    )
    assert all("1 x 1" in why or "ECA" in why for why in report.skipped.values())
    assert hooks_left(model) == 0
