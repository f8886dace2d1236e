"""Nothing a user does breaks their run: one test per defect found by trying real set-ups.

Each test failed on the code before its fix (issue 11): spawned processes, two callbacks and
torch.compile's stance, TorchScript submodules, option range errors, class paths from YAML,
channels-last outputs, 1-D layers inside 2-D networks, and quiet defaults on 1 x 1 maps.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from _srop_reference import srop_reference as np_srop
from _trainers import quiet_trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback, SROPEngine, SROPOptions, SROPWarning, profile
from lightning_srop.layers import resolve_layers

# ------------------------------------------------------------------------------------------
# Models (module level: spawned processes unpickle them by name)
# ------------------------------------------------------------------------------------------


class SpawnCNN(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch[0]).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def val_data() -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 1, 12, 12, generator=g)
    x[:, :, ::3] += 1.0
    return TensorDataset(x, torch.zeros(32))


def reference_mean(model: nn.Module, x: Tensor, name: str) -> tuple[float, int]:
    outs: list[np.ndarray] = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda m, a, o: outs.append(o.detach().double().numpy())
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    ref = np_srop(np.concatenate(outs)).ravel()
    ref = ref[np.isfinite(ref)]
    return float(ref.mean()), int(ref.size)


# ------------------------------------------------------------------------------------------
# 1. Spawned processes (ddp_spawn): the callback pickles and merges
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_spawn_validate_and_fit_merge_all_batches(tmp_path: Path) -> None:
    data = val_data()
    loader = DataLoader(data, batch_size=8)
    model = SpawnCNN()
    cb = SROPCallback(num_batches=None, stats=("mean", "count"))
    t = quiet_trainer(tmp_path, [cb], devices=2, strategy="ddp_spawn")
    t.validate(model, loader, verbose=False)
    for name in ("features.0", "features.3"):
        mean, count = reference_mean(model, data.tensors[0], name)
        assert float(t.callback_metrics[f"srop/{name}/count"]) == count  # both halves, merged
        assert float(t.callback_metrics[f"srop/{name}/mean"]) == pytest.approx(mean, rel=1e-6)

    model = SpawnCNN()
    cb = SROPCallback(num_batches=None, stats=("mean", "count"))
    t = quiet_trainer(tmp_path, [cb], devices=2, strategy="ddp_spawn", max_epochs=2)
    t.fit(model, DataLoader(data, batch_size=8, shuffle=True), loader)
    # the main process gets the trained weights back: the last epoch measured those weights
    mean, count = reference_mean(model, data.tensors[0], "features.0")
    assert float(t.callback_metrics["srop/features.0/count"]) == count
    assert float(t.callback_metrics["srop/features.0/mean"]) == pytest.approx(mean, rel=1e-6)


def test_callback_pickles_without_engine_and_keeps_its_random_stream() -> None:
    import pickle
    from types import SimpleNamespace

    cb = SROPCallback(sample="random", seed=7, num_batches=3)
    cb._engine = SROPEngine(SpawnCNN())
    trainer: Any = SimpleNamespace(num_val_batches=[50])
    cb._choose_batches(trainer)  # advance the draws
    copy = pickle.loads(pickle.dumps(cb))
    assert copy.engine is None and copy.options == cb.options
    assert copy._choose_batches(trainer) == cb._choose_batches(trainer)
    assert cb._choose_batches(trainer) != cb._choose_batches(trainer)  # draws differ


# ------------------------------------------------------------------------------------------
# 2. Global state of torch: the compiler stance
# ------------------------------------------------------------------------------------------


def _compiles_after() -> bool:
    """Whether a fresh torch.compile still compiles (calls its backend)."""
    calls: list[int] = []

    def backend(gm: torch.fx.GraphModule, example: Any) -> Any:
        calls.append(1)
        return gm.forward

    fn = torch.compile(lambda x: x.sin() + 1, backend=backend)
    fn(torch.randn(3))
    torch._dynamo.reset()
    return bool(calls)


def test_two_callbacks_leave_the_compiler_stance_as_it_was(tmp_path: Path) -> None:
    model = SpawnCNN()
    model.features = torch.compile(model.features, backend="eager")  # compiled code inside
    loader = DataLoader(val_data(), batch_size=8)
    callbacks = [
        SROPCallback(prefix="a", layers=["features.0"]),
        SROPCallback(prefix="b", layers=["features.3"]),
    ]
    t = quiet_trainer(tmp_path, callbacks)
    t.validate(model, loader, verbose=False)
    assert "a/features.0/mean" in t.callback_metrics and "b/features.3/mean" in t.callback_metrics
    assert _compiles_after()


def test_engines_attach_and_detach_in_any_order() -> None:
    compiled = nn.Module()
    compiled.net = torch.compile(nn.Sequential(nn.Conv2d(1, 2, 3)), backend="eager")
    a, b, c = (SROPEngine(compiled) for _ in range(3))
    a.attach()
    b.attach()
    a.detach()
    c.attach()
    b.detach()
    c.detach()
    assert _compiles_after()
    with pytest.raises(RuntimeError, match="boom"), a.capture():
        b.attach()
        raise RuntimeError("boom")
    b.detach()
    assert _compiles_after()


def test_models_without_compiled_code_never_touch_the_stance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("set_stance called for a model without compiled code")

    monkeypatch.setattr(torch.compiler, "set_stance", forbidden)
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    with SROPEngine(net).capture():
        net(torch.randn(1, 1, 8, 8))


# ------------------------------------------------------------------------------------------
# 3. TorchScript and traced submodules
# ------------------------------------------------------------------------------------------


class WithScripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
            self.scripted = torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
            self.traced = torch.jit.trace(nn.Conv2d(2, 2, 3), torch.randn(1, 2, 8, 8))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.traced(self.scripted(x)))


def test_scripted_and_traced_submodules_resolve() -> None:
    net = WithScripted()
    assert [n for n, _ in resolve_layers(net)] == ["pool"]  # scripted convs are not Conv2d
    x = torch.randn(2, 1, 16, 16)
    engine = SROPEngine(net, ["traced", "pool"])
    with engine.capture():
        net(x)
    got = {r.name: r.stats for r in engine.reports()}
    assert set(got) == {"traced", "pool"}
    assert got["traced"]["mean"] == pytest.approx(reference_mean(net, x, "traced")[0], rel=1e-6)

    with pytest.warns(SROPWarning, match=r"'scripted.0' is, or lies inside, a torch.jit.script"):
        engine = SROPEngine(net, ["scripted.0", "pool"])
    assert engine.names == ["pool"]
    with pytest.raises(ValueError, match=r"every chosen layer \('scripted'\) .*torch.jit.script"):
        SROPEngine(net, ["scripted"])


def test_profile_and_callback_on_a_module_holding_a_scripted_submodule(tmp_path: Path) -> None:
    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = WithScripted()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.net(batch[0])

    report = profile(WithScripted(), torch.randn(2, 1, 16, 16))
    assert report.names == ["pool"]
    t = quiet_trainer(tmp_path, [SROPCallback()])
    t.validate(Lit(), DataLoader(val_data(), batch_size=8), verbose=False)
    assert "srop/net.pool/mean" in t.callback_metrics


# ------------------------------------------------------------------------------------------
# 7. Errors name the argument; numpy scalars are accepted
# ------------------------------------------------------------------------------------------


def test_seed_range_and_numpy_scalars() -> None:
    with pytest.raises(ValueError, match=r"SROPCallback: expected `seed` to be an int in \["):
        SROPCallback(seed=2**64)
    cb = SROPCallback(seed=np.int64(3), num_batches=np.int32(2), sample="random")
    assert cb.seed == 3 and cb.num_batches == 2 and isinstance(cb.num_batches, int)
    assert SROPCallback(seed=2**64 - 1).seed == 2**64 - 1
    assert SROPOptions(num_bins=np.int64(64)).num_bins == 64
    opts = SROPCallback(roll_percent=np.float32(0.85)).options
    assert isinstance(opts.roll_percent, float) and opts.roll_percent == pytest.approx(0.85)
    with pytest.raises(TypeError, match=r"`log_figure` to be a bool; got 'no'"):
        SROPCallback(log_figure="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`every_n_epochs` to be an int >= 1; got 0"):
        SROPCallback(every_n_epochs=0)


# ------------------------------------------------------------------------------------------
# 8. Module types from YAML / the command line
# ------------------------------------------------------------------------------------------


def test_dotted_class_paths_select_types() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
    assert SROPCallback(layers="torch.nn.Conv2d").layers is nn.Conv2d
    assert [n for n, _ in resolve_layers(net, "torch.nn.Conv2d")] == ["0", "3"]
    assert [n for n, _ in resolve_layers(net, ["torch.nn.MaxPool2d", "0"])] == ["0", "2"]
    assert [n for n, _ in resolve_layers(net, ["torch.nn.ReLU", "torch.nn.MaxPool2d"])] == [
        "1",
        "2",
    ]
    # a regular expression that is no class path stays a regular expression
    assert [n for n, _ in resolve_layers(net, r"^[03]$")] == ["0", "3"]
    with pytest.raises(ValueError, match=r"looks like a module class path, but it cannot be imp"):
        resolve_layers(net, "torch.nn.Conv9d")


def test_lightning_cli_yaml_layers_type_and_one_line_stats_error(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "cli.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from lightning.pytorch.cli import LightningCLI
            sys.path.insert(0, %r)
            from test_robustness import SpawnCNN, val_data
            import lightning.pytorch as L
            from torch.utils.data import DataLoader

            class Data(L.LightningDataModule):
                def val_dataloader(self):
                    return DataLoader(val_data(), batch_size=8)

            cli = LightningCLI(SpawnCNN, Data, run=False, save_config_callback=None)
            cb = cli.trainer.callbacks
            from lightning_srop import SROPCallback
            srop = [c for c in cb if isinstance(c, SROPCallback)][0]
            print("LAYERS", srop.layers.__name__)
            """
        )
        % str(Path(__file__).parent)
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            """
            trainer:
              logger: false
              callbacks:
                - class_path: lightning_srop.SROPCallback
                  init_args:
                    layers: torch.nn.Conv2d
                    stats: [mean, q75]
            """
        )
    )
    run = subprocess.run(
        [sys.executable, str(script), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "LAYERS Conv2d" in run.stdout

    config.write_text(config.read_text().replace("[mean, q75]", "[mean, average]"))
    run = subprocess.run(
        [sys.executable, str(script), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    # a parser error at parse time (stats is typed by its Literal), not a traceback from
    # inside the instantiation: one line names the key, the bad value and the choices
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert 'Parser key "stats"' in run.stderr
    lines = [line for line in run.stderr.splitlines() if "Got value: average" in line]
    assert len(lines) == 1 and "'mean', 'std'" in lines[0], run.stderr[-3000:]


# ------------------------------------------------------------------------------------------
# 9. Channels-last outputs
# ------------------------------------------------------------------------------------------


class SwinLike(nn.Module):
    """A conv stem, then (N, H, W, C) stages: LayerNorm and Linear over the last dim."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        return self.mlp(self.norm(h))


def test_channels_last_outputs_are_read_as_nhwc() -> None:
    torch.manual_seed(0)
    net = SwinLike()
    x = torch.randn(2, 3, 16, 12)  # H != W: a wrong axis pair would show
    outs: dict[str, Tensor] = {}
    for name in ("norm", "mlp"):
        net.get_submodule(name).register_forward_hook(
            lambda m, a, o, name=name: outs.__setitem__(name, o.detach())
        )
    with pytest.warns(SROPWarning, match=r"'norm' as NHWC \(LayerNorm acts on the last dim\)"):
        report = profile(net, x, layers=["norm", "mlp"])
    for name in ("norm", "mlp"):
        ref = np_srop(outs[name].permute(0, 3, 1, 2).double().numpy()).ravel()
        assert report[name].stats["count"] == ref.size == 2 * 8
        assert report[name].stats["mean"] == pytest.approx(ref.mean(), rel=1e-6)
        assert report[name].meta is not None and report[name].meta.layout == "NHWC"
        assert report[name].meta.map_size == (16, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)  # said explicitly: no notice
        explicit = profile(net, x, layers=["norm", "mlp"], layout="NHWC")
    assert explicit["norm"].stats["mean"] == report["norm"].stats["mean"]
    forced = profile(net, x, layers=["norm"], layout={"norm": "NCHW"})
    assert forced["norm"].meta is not None and forced["norm"].meta.map_size == (12, 8)


# ------------------------------------------------------------------------------------------
# 10. and 11. The default layer choice
# ------------------------------------------------------------------------------------------


class ECABlockNet(nn.Module):
    """A 2-D network with an ECA attention: a 1 -> 1 Conv1d over the pooled channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.eca = nn.Conv1d(1, 1, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        w = self.eca(self.gap(h).flatten(1).unsqueeze(1)).sigmoid()  # (N, 1, C)
        return self.pool(h * w.transpose(1, 2).unsqueeze(-1)).flatten(1)


class Audio(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5)
        self.pool = nn.MaxPool1d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x))


def test_default_leaves_out_channel_attention_conv1d_and_1x1_maps_quietly() -> None:
    net = ECABlockNet()
    # both dimensionalities are chosen; the ECA Conv1d (over pooled channels) is left out at
    # run time and listed, with the 1 x 1 maps
    assert [n for n, _ in resolve_layers(net)] == ["conv", "gap", "eca", "pool"]
    assert [n for n, _ in resolve_layers(Audio())] == ["conv", "pool"]  # a 1-D network
    with warnings.catch_warnings():
        warnings.simplefilter("error", SROPWarning)  # the default choice: no notice at all
        report = profile(net, torch.randn(2, 3, 16, 16))
    assert report.names == ["conv"]
    assert set(report.skipped) == {"gap", "eca", "pool"} and "1 x 1" in report.skipped["gap"]
    assert "ECA-style channel attention" in report.skipped["eca"]
    with pytest.warns(SROPWarning, match=r"'gap' \(AdaptiveAvgPool2d\) returned 1 x 1 maps"):
        named = profile(net, torch.randn(2, 3, 16, 16), layers=["conv", "gap"])
    assert named.names == ["conv"] and set(named.skipped) == {"gap"}
    # named explicitly, the ECA conv is measured like any Conv1d
    eca = profile(net, torch.randn(2, 3, 16, 16), layers=["eca"])
    assert eca.names == ["eca"] and eca["eca"].meta is not None and eca["eca"].meta.ndim == 1


# ------------------------------------------------------------------------------------------
# The baseline never stops training
# ------------------------------------------------------------------------------------------


class NoForward(L.LightningModule):
    """Calls its layers in the steps and defines no ``forward`` (a common style)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.net(batch[0]).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.net(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_baseline_on_a_module_without_forward_runs_its_validation_step(tmp_path: Path) -> None:
    """The baseline calls the model as validation does (``validation_step``), so a module
    without ``forward`` gets its baseline and its ``change``, and nothing is said."""
    loader = DataLoader(val_data(), batch_size=8)
    cb = SROPCallback()  # baseline=True by default
    t = quiet_trainer(tmp_path, [cb], max_epochs=2)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", SROPWarning)
        t.fit(NoForward(), loader, loader)
    assert not [w for w in said if "baseline" in str(w.message)]
    assert t.current_epoch == 2  # trained to the end
    assert cb.baseline_report is not None and cb.baseline_report.names == ["net.0", "net.1"]
    assert math.isfinite(float(t.callback_metrics["srop/net.0/change"]))
