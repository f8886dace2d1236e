"""The hook engine: layer choice, names, repeated calls, skipped outputs, units, hygiene."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference as np_srop_2d
from _srop_reference import srop_reference_1d as np_srop_1d
from torch import Tensor, nn

from lightning_srop import SROPEngine, SROPWarning
from lightning_srop.layers import clean_name, resolve_layers

# ------------------------------------------------------------------------------------------
# The test's own capture (references: tests/_srop_reference.py, float64 NumPy)
# ------------------------------------------------------------------------------------------


def capture_outputs(model: nn.Module, names: list[str], x: Tensor) -> dict[str, list[np.ndarray]]:
    """The test's own hooks: every output of each named module, as float64 arrays."""
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda m, a, o, n=n: out[n].append(o.detach().double().numpy())
        )
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


class Mixed(nn.Module):
    """Conv2d, pools, a Conv1d branch, a Linear and a shared ReLU called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.seq = nn.Conv1d(4, 2, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.relu(self.conv(x)))
        h = self.relu(self.conv2(h))
        s = self.seq(h.flatten(2))
        return self.fc(self.gap(h).flatten(1)) + s.mean()


# ------------------------------------------------------------------------------------------
# Layer choice and names
# ------------------------------------------------------------------------------------------


def test_layer_choices() -> None:
    net = Mixed()
    # the default takes 2-D and 1-D layers; a Conv1d over a flattened grid is left out at run
    # time (test_default_conv1d_of_a_2d_model_over_a_flattened_grid_is_left_out)
    assert [n for n, _ in resolve_layers(net)] == ["conv", "pool", "conv2", "gap", "seq"]
    assert [n for n, _ in resolve_layers(net, r"^conv")] == ["conv", "conv2"]
    assert [n for n, _ in resolve_layers(net, ["conv2", "relu", "conv2"])] == ["relu", "conv2"]
    assert [n for n, _ in resolve_layers(net, nn.Linear)] == ["fc"]
    assert [n for n, _ in resolve_layers(net, (nn.ReLU, nn.Conv1d))] == ["relu", "seq"]
    assert [n for n, _ in resolve_layers(net, lambda n, m: n.endswith("2"))] == ["conv2"]
    modules = dict(resolve_layers(net))
    assert modules["conv"] is net.conv


def test_unknown_names_list_close_valid_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown layer 'conv3' \(close valid names: 'conv', 'conv2'\)"
    ):
        resolve_layers(Mixed(), ["conv", "conv3"], owner="X")
    with pytest.raises(ValueError, match=r"X: `layers` names unknown layers 'a' \(.*\); 'b' \("):
        resolve_layers(Mixed(), ["a", "b"], owner="X")
    with pytest.raises(
        TypeError, match=r"`layers`: expected None, a regular expression.*got float 1.0"
    ):
        resolve_layers(Mixed(), 1.0)  # type: ignore[arg-type]


def test_wrapper_prefixes_are_stripped_but_user_names_kept() -> None:
    inner = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
    dp = nn.DataParallel(inner)
    assert [n for n, _ in resolve_layers(dp)] == ["0", "1"]
    compiled = nn.Module()
    compiled.net = torch.compile(nn.Sequential(nn.Conv2d(1, 2, 3)), backend="eager")
    assert [n for n, _ in resolve_layers(compiled)] == ["net.0"]
    assert resolve_layers(compiled, ["net._orig_mod.0"])[0][0] == "net.0"  # raw names work too
    user = nn.Module()
    user.module = nn.Sequential(nn.Conv2d(1, 2, 3))  # a user's attribute called "module"
    assert [n for n, _ in resolve_layers(user)] == ["module.0"]
    fsdp_like = nn.Module()
    fsdp_like._fsdp_wrapped_module = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert clean_name(fsdp_like, "_fsdp_wrapped_module.0") == "0"


# ------------------------------------------------------------------------------------------
# Values, dimensionality, repeated calls, skipped outputs
# ------------------------------------------------------------------------------------------


def test_values_match_reference_and_1d_is_auto_detected() -> None:
    torch.manual_seed(0)
    net = Mixed().eval()
    x = torch.randn(3, 3, 16, 16)
    engine = SROPEngine(net, ["conv", "pool", "seq"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here is skipped
        with engine.capture():
            net(x)
    reports = {r.name: r for r in engine.reports()}
    outs = capture_outputs(net, ["conv", "pool", "seq"], x)
    for name in ("conv", "pool"):
        ref = np_srop_2d(outs[name][0]).ravel()
        assert reports[name].stats["mean"] == pytest.approx(ref.mean(), rel=1e-6)
        assert reports[name].stats["count"] == ref.size
    ref1 = np_srop_1d(outs["seq"][0]).ravel()
    assert reports["seq"].stats["mean"] == pytest.approx(ref1.mean(), rel=1e-6)
    assert reports["seq"].stats["count"] == 3 * 2
    assert reports["seq"].edges[-1] == pytest.approx(0.5)  # a 1-D histogram range


@pytest.mark.parametrize("repeated", ["separate", "merge", "first"])
def test_repeated_module(repeated: str) -> None:
    torch.manual_seed(0)
    net = Mixed().eval()
    x = torch.randn(2, 3, 16, 16)
    engine = SROPEngine(net, ["relu"], repeated=repeated)  # type: ignore[arg-type]
    for _ in range(2):  # two batches: call indices restart with each batch
        with engine.capture():
            net(x)
    first, second = (np_srop_2d(o).ravel() for o in capture_outputs(net, ["relu"], x)["relu"])
    reports = {r.name: r.stats for r in engine.reports()}
    if repeated == "separate":
        assert list(reports) == ["relu", "relu#1"]
        assert reports["relu"]["count"] == 2 * first.size
        assert reports["relu#1"]["mean"] == pytest.approx(second.mean(), rel=1e-6)
    elif repeated == "merge":
        assert list(reports) == ["relu"]
        both = np.concatenate([first, second])
        assert reports["relu"]["count"] == 2 * both.size
        assert reports["relu"]["mean"] == pytest.approx(both.mean(), rel=1e-6)
    else:
        assert list(reports) == ["relu"]
        assert reports["relu"]["count"] == 2 * first.size
        assert reports["relu"]["mean"] == pytest.approx(first.mean(), rel=1e-6)


class Odd(nn.Module):
    """A tuple output, tokens without a grid, 1 x 1 maps, a 5-D tensor and a plain conv."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.tokens = nn.Linear(8, 8)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.conv3d = nn.Conv3d(1, 1, 1)
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        pooled, _ = self.pool(x)
        t = self.tokens(x.flatten(2)[..., :8])  # (N, 3, 8): a Linear over the last dim
        g = self.gap(x)
        v = self.conv3d(x[:, :1, None])
        return pooled.sum() + t.sum() + g.sum() + v.sum() + self.conv(x).sum()


def test_skipped_outputs_give_one_notice_per_layer() -> None:
    net = Odd()
    engine = SROPEngine(net, ["pool", "tokens", "gap", "conv3d", "conv"])
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with engine.capture(x):
                net(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, SROPWarning)]
    assert len(messages) == 3, messages
    assert any(
        "'tokens' (Linear) returned a 3-D tensor of shape (2, 3, 8)" in m
        and "layout={'tokens': 'tokens'}" in m
        and "grid=(h, w)" in m
        for m in messages
    )
    assert any("'gap' (AdaptiveAvgPool2d) returned 1 x 1 maps" in m for m in messages)
    assert any(
        "'conv3d' (Conv3d) returned a tensor of shape (2, 1, 1, 8, 8)" in m for m in messages
    )
    reports = {r.name: r for r in engine.reports()}
    assert list(reports) == ["pool", "conv"]
    # a tuple output is measured on its first tensor, and says so
    pooled = net.pool(x)[0].detach().double().numpy()
    ref = np_srop_2d(pooled).ravel()
    assert reports["pool"].stats["count"] == 3 * ref.size
    assert reports["pool"].stats["mean"] == pytest.approx(ref.mean(), rel=1e-6)
    assert reports["pool"].meta is not None and reports["pool"].meta.source == "[0]"


def test_ndim_1_reads_a_linear_output_as_channels_last() -> None:
    """(N, L, C) from a Linear: never measured across channels; with ndim=1 it is read as
    channels-last signals of length L, without it it is refused (no evidence of time)."""
    net = Odd()
    x = torch.randn(2, 3, 8, 8)
    engine = SROPEngine(net, ["tokens"], ndim=1)
    with (
        pytest.warns(SROPWarning, match=r"'tokens' as NLC \(Linear acts on the last dim\)"),
        engine.capture(x),
    ):
        net(x)
    (report,) = engine.reports()
    out = capture_outputs(net, ["tokens"], x)["tokens"][0]  # (N, L=3, C=8)
    ref = np_srop_1d(np.swapaxes(out, 1, 2)).ravel()  # the test lays it out itself
    assert report.stats["count"] == ref.size == 2 * 8
    assert report.stats["mean"] == pytest.approx(np.nanmean(ref), rel=1e-6)
    assert report.meta is not None and report.meta.layout == "NLC"
    auto = SROPEngine(net, ["tokens"])
    with pytest.warns(SROPWarning, match=r"cannot be told apart from tokens"), auto.capture(x):
        net(x)
    assert auto.reports() == [] and "tokens" in auto.skipped


def test_unit_input_divides_by_downscaling_of_each_batch() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.MaxPool2d(2)).eval()
    engine = SROPEngine(net, unit="input")
    xs = [torch.randn(2, 1, 16, 16), torch.randn(2, 1, 32, 32)]
    for x in xs:
        with engine.capture(x):
            net(x)
    reports = {r.name: r.stats for r in engine.reports()}
    for name, s in (("0", 2.0), ("1", 4.0)):
        ref = np.concatenate(
            [np_srop_2d(capture_outputs(net, [name], x)[name][0]).ravel() for x in xs]
        )
        assert reports[name]["mean"] == pytest.approx(ref.mean() / s, rel=1e-6)
    with pytest.raises(RuntimeError, match=r"`unit='input'` needs the input's spatial size"):
        other = SROPEngine(net, unit="input")
        with other.capture():
            net(xs[0])
    assert hooks_left(net) == 0


# ------------------------------------------------------------------------------------------
# Hygiene
# ------------------------------------------------------------------------------------------


def test_hooks_only_while_attached_and_removed_on_error() -> None:
    net = Mixed()
    engine = SROPEngine(net)
    assert hooks_left(net) == 0
    engine.attach()
    engine.attach()  # idempotent
    assert hooks_left(net) == engine.num_hooks == 5
    engine.detach()
    engine.detach()
    assert hooks_left(net) == 0
    with pytest.raises(ValueError, match="bad batch"), engine.capture():
        assert hooks_left(net) == 5
        raise ValueError("bad batch")
    assert hooks_left(net) == 0 and not engine.attached


def test_state_is_fixed_size_and_works_across_grad_modes() -> None:
    net = Mixed()
    engine = SROPEngine(net, ["conv"])

    def state_size() -> int:
        return sum(t.numel() for m in engine.metrics.values() for t in m.metric_state.values())

    sizes = []
    for i in range(4):
        mode: Any = torch.inference_mode() if i % 2 else torch.no_grad()
        with mode, engine.capture():
            net(torch.randn(2, 3, 8, 8))
        sizes.append(state_size())
    assert len(set(sizes)) == 1
    (report,) = engine.reports()
    assert report.stats["count"] == 4 * 2 * 4
    metric = engine.metrics["conv"]
    engine.reset()
    assert engine.metrics == {} and engine.reports() == []
    with torch.no_grad(), engine.capture():
        net(torch.randn(2, 3, 8, 8))
    assert engine.metrics["conv"] is metric  # reused, reset: nothing new allocated per epoch
    (report,) = engine.reports()
    assert report.stats["count"] == 2 * 4


def test_training_mode_forward_keeps_graph_and_values() -> None:
    """Hooks never touch autograd: gradients equal those of an unhooked model."""
    torch.manual_seed(0)
    net = Mixed()
    x = torch.randn(2, 3, 8, 8)
    net(x).sum().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    engine = SROPEngine(net)
    with engine.capture():
        net(x).sum().backward()
    assert all(
        torch.equal(a, p.grad)
        for a, p in zip(grads, [p for p in net.parameters() if p.grad is not None], strict=True)
    )


def test_compiled_error_mode_refuses_compiled_models() -> None:
    wrapped = nn.Module()
    wrapped.net = torch.compile(nn.Sequential(nn.Conv2d(1, 2, 3)), backend="eager")
    engine = SROPEngine(wrapped, compiled="error")
    with pytest.raises(RuntimeError, match=r"torch.compile'd code.*compiled='eager'"):
        engine.attach()
    assert hooks_left(wrapped) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unit": "pixel"}, r"`unit` to be one of 'layer', 'input'; got 'pixel'"),
        ({"repeated": "all"}, r"`repeated` to be one of 'separate', 'merge', 'first'; got 'all'"),
        ({"ndim": 0}, r"`ndim` to be None \(auto-detect\), 1 or 2; got 0"),
        ({"roll_percent": 0.0}, r"`roll_percent` in \(0, 1\], got 0.0"),
        ({"compiled": "no"}, r"`compiled` to be one of 'eager', 'error'; got 'no'"),
    ],
)
def test_engine_option_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match="SROPEngine: expected " + match):
        SROPEngine(Mixed(), **kwargs)


@pytest.mark.slow
def test_inductor_compiled_model_measured_like_the_eager_one() -> None:
    """The default backend (inductor): hooks fire under the engine, values equal eager ones."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()
    compiled = torch.compile(net)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        compiled(x)  # compiled before any hook exists
    engine = SROPEngine(compiled)
    assert engine.names == ["0", "2"]
    with torch.no_grad(), engine.capture():
        compiled(x)
    got = {r.name: r.stats for r in engine.reports()}
    ref = np_srop_2d(capture_outputs(net, ["0"], x)["0"][0]).ravel()
    assert got["0"]["count"] == ref.size
    assert got["0"]["mean"] == pytest.approx(ref.mean(), rel=1e-6)
    assert hooks_left(net) == 0
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x))  # still compiled and correct afterwards


def test_default_conv1d_of_a_2d_model_over_a_flattened_grid_is_left_out() -> None:
    net = Mixed().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)  # the default choice: a quiet skip
        engine = SROPEngine(net)
        x = torch.randn(2, 3, 16, 16)
        with engine.capture(x):
            net(x)
    assert [r.name for r in engine.reports()] == ["conv", "pool", "conv2"]
    assert "a flattened 2-D grid" in engine.skipped["seq"]
    named = SROPEngine(net, ["seq"])  # named, it is measured
    with named.capture(x):
        net(x)
    assert [r.name for r in named.reports()] == ["seq"]
