"""``profile``: offline per-layer statistics without a Trainer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _srop_reference import srop_reference as np_srop
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import STATISTICS
from lightning_srop.profile import profile


class Net(nn.Module):
    """Registration order differs from forward order; BatchNorm and Dropout see the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(4, 4, 3, padding=1)
        self.early = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fail = False

    def forward(self, x: Tensor) -> Tensor:
        if self.fail:
            self.early(x)
            raise RuntimeError("model failed")
        h = self.pool(self.bn(self.early(x)))
        return self.drop(self.late(h))


def reference(model: Net, xs: list[Tensor], name: str) -> np.ndarray:
    """SROPs of every map of ``name`` over ``xs``, captured by the test's own hook, eval mode."""
    outs: list[np.ndarray] = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda m, a, o: outs.append(o.detach().double().numpy())
    )
    was = model.training
    model.eval()
    with torch.no_grad():
        for x in xs:
            model(x)
    model.train(was)
    handle.remove()
    return np.concatenate([np_srop(o) for o in outs])


def test_profile_values_order_and_batch_forms() -> None:
    torch.manual_seed(0)
    model = Net()
    xs = [torch.randn(2, 3, 12, 12) for _ in range(3)]
    ys = [torch.zeros(2) for _ in xs]
    for data in (
        list(zip(xs, ys, strict=True)),  # (x, y) tuples
        [{"input": x, "y": y} for x, y in zip(xs, ys, strict=True)],  # dicts
        DataLoader(TensorDataset(torch.cat(xs), torch.cat(ys)), batch_size=2),
        xs,
    ):
        out = profile(model, data).as_dict()
        assert list(out) == ["early", "pool", "late"]  # forward order, not registration order
        for name in out:
            ref = reference(model, xs, name)
            assert set(out[name]) == set(STATISTICS)
            assert out[name]["mean"] == pytest.approx(ref.mean(), rel=1e-6)
            assert out[name]["count"] == ref.size
            assert out[name]["max"] == pytest.approx(ref.max(), rel=1e-6)


def test_single_tensor_num_batches_stats_and_units() -> None:
    torch.manual_seed(1)
    model = Net()
    xs = [torch.randn(2, 3, 16, 16) for _ in range(4)]
    out = profile(model, xs, num_batches=2, layers=["pool"], unit="input").as_dict(
        ["mean", "count"]
    )
    ref = reference(model, xs[:2], "pool")
    assert out == {"pool": {"mean": pytest.approx(ref.mean() / 2, rel=1e-6), "count": ref.size}}
    one = profile(model, xs[0], layers="^early$").as_dict(("median",))
    assert list(one) == ["early"] and set(one["early"]) == {"median"}
    reports = profile(model, xs[0], layers=nn.Conv2d).layers
    assert [(r.name, r.depth) for r in reports] == [("early", 0), ("late", 1)]
    assert int(reports[0].counts.sum()) == 2 * 4


def test_model_mode_and_state_restored_and_no_hooks_left() -> None:
    model = Net()
    model.train()
    model.bn.eval()  # a mixed mode
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, torch.randn(4, 3, 12, 12), device="cpu")
    assert {n: m.training for n, m in model.named_modules()} == modes
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # BatchNorm running stats too
    model.fail = True
    with pytest.raises(RuntimeError, match="model failed"):
        profile(model, torch.randn(4, 3, 12, 12))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_package_attribute_is_callable_after_submodule_import() -> None:
    import lightning_srop.profile

    out = lightning_srop.profile(Net(), torch.randn(2, 3, 8, 8), layers=["early"]).as_dict(
        ["count"]
    )
    assert out == {"early": {"count": 8.0}}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"data": "abc"},
            TypeError,
            r"`data` to be a tensor batch, a list of image tensors .* or an iterable of batches",
        ),
        (
            {"data": [{"x": torch.zeros(1)}]},
            ValueError,
            r"`input_key`='input'; the batch has keys \['x'\]",
        ),
        ({"data": [3]}, TypeError, r"expected a batch that is a tensor, a tuple/list .*got int"),
        (
            {"num_batches": 0},
            ValueError,
            r"`num_batches` to be None \(all batches\) or an int >= 1; got 0",
        ),
        (
            {"stats": ["mean", "avg"]},
            ValueError,
            r"unknown statistic\(s\) \['avg'\]; valid choices: mean",
        ),
        ({"stats": "mean"}, ValueError, r"`stats` to be a non-empty sequence of statistic names"),
        ({"unit": "px"}, ValueError, r"`unit` to be one of 'layer', 'input'; got 'px'"),
        ({"layers": ["erly"]}, ValueError, r"unknown layer 'erly' \(close valid names: 'early'"),
        ({"model": "net"}, TypeError, r"`model` to be a torch.nn.Module, got str"),
    ],
)
def test_profile_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"model": Net(), "data": torch.randn(2, 3, 8, 8)}
    args.update(kwargs)
    with pytest.raises(error, match="profile: .*" + match):
        profile(args.pop("model"), args.pop("data"), **args)
