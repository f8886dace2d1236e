"""CUDA: the fused Triton path, its guard, the callback and the ImageNet recipe on a real GPU.

Skipped without CUDA. Every SROP is compared with the float64 NumPy reference of
``_srop_reference`` (SPEC.md "Precision": a map may differ only where its cumulative energy
is within rounding of ``kappa * E``, by one shell; at most 0.1 % of random maps), never with
the package's own output. Run by ``bash benchmarks/gpu_check.sh`` on a GPU machine.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _srop_reference import shell_distance, srop_reference_with_margin

from lightning_srop.functional import FusedKernelWarning, spectral_rolloff
from lightning_srop.functional._triton import triton_available
from lightning_srop.functional.spectral_rolloff import _spectral_rolloff_impl

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

srop_module = sys.modules["lightning_srop.functional.spectral_rolloff"]

# Shape classes: 1 x N (1-D as 2-D), odd and non-square, and the sizes of ImageNet CNNs.
SHAPES = [(1, 1000), (13, 17), (7, 7), (14, 14), (28, 28), (56, 56), (112, 112), (224, 224)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
PATHS = ["fused-float64", "fused-float32", "plain"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fused kernel (float64 or float32 accumulation) or the plain path, freshly checked."""
    monkeypatch.setattr(srop_module, "_FUSED_STATE", {})
    if request.param == "plain":
        monkeypatch.setenv("LIGHTNING_SROP_DISABLE_TRITON", "1")
    else:
        monkeypatch.delenv("LIGHTNING_SROP_DISABLE_TRITON", raising=False)
        monkeypatch.setenv("LIGHTNING_SROP_TRITON_ACCUMULATE", request.param.split("-")[1])
        if not triton_available(torch.device("cuda")):
            pytest.skip("Triton is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedKernelWarning)  # a real GPU passes the self-check
        yield request.param
    if request.param != "plain":
        assert all(srop_module._FUSED_STATE.values()), srop_module._FUSED_STATE


def _agreement(got: torch.Tensor, x: torch.Tensor, **kwargs: object) -> float:
    """Share of maps equal to the float64 reference; asserts the precision rule."""
    h, w = x.shape[-2:]
    want, margin = srop_reference_with_margin(x.detach().cpu().double().numpy(), **kwargs)  # type: ignore[arg-type]
    got_np = got.detach().cpu().double().numpy().ravel()
    want_np = want.ravel().astype(np.float32).astype(np.float64)
    assert np.array_equal(np.isnan(got_np), np.isnan(want_np))
    ok = ~np.isnan(want_np)
    differs = ok & (got_np != want_np)
    assert np.all(margin.ravel()[differs] < 1e-5), "SROP differs away from the threshold"
    if ok.any():
        assert int(shell_distance(got_np[ok], want_np[ok], h, w).max()) <= 1
    return 1.0 - float(np.mean(differs[ok])) if ok.any() else 1.0


def _random_maps(h: int, w: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = max(64, min(2048, 400_000 // (h * w)))
    x = torch.randn(n, h, w, generator=gen, dtype=torch.float64)
    x[: n // 3] = x[: n // 3].relu()  # post-ReLU
    x[n // 3 : n // 2] += 2.0  # offset
    return x.to(dtype)


def _cosine(h: int, w: int, k0: int, l0: int) -> torch.Tensor:
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * (k0 * i / h + l0 * j / w) + 0.3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("h", "w"), SHAPES, ids=str)
def test_random_maps_match_reference(path: str, h: int, w: int, dtype: torch.dtype) -> None:
    x = _random_maps(h, w, dtype, seed=h * 1000 + w)
    got = spectral_rolloff(x.cuda())
    assert got.is_cuda and got.dtype == torch.float32
    equal = _agreement(got, x)
    assert equal >= 0.999 if h * w <= 56 * 56 else equal >= 0.995


@pytest.mark.parametrize(("h", "w"), SHAPES, ids=str)
def test_cosines_have_their_analytic_srop(path: str, h: int, w: int) -> None:
    waves, expected = [], []
    for k0, l0 in [(0, 1), (h // 3, w // 4), (h // 2, w // 2), (1, w // 3)]:
        waves.append(_cosine(h, w, k0, l0))
        fy, fx = min(k0 % h, -k0 % h) / h, min(l0 % w, -l0 % w) / w  # folded to [0, 1/2]
        expected.append(math.hypot(fy, fx))
    x = torch.stack(waves).float().cuda()
    for kappa in (0.5, 0.85, 1.0):
        got = spectral_rolloff(x, kappa).cpu()
        for g, e in zip(got.tolist(), expected, strict=True):
            if e > 0:
                assert g == pytest.approx(e, rel=1e-6, abs=1e-7), (kappa, e)


@pytest.mark.parametrize("keep_dc", [False, True])
def test_channels_last_flat_invalid_and_keep_dc(path: str, keep_dc: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 24, 28, 28, generator=gen)
    x[0, 0] = 0.0
    x[0, 1] = 3.0
    x[1, 2, 3, 4] = math.nan
    x[2, 3, 0, 0] = math.inf
    cl = x.cuda().to(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    result = _spectral_rolloff_impl(cl, keep_dc=keep_dc)
    assert bool(result.flat[0, 0]) and bool(result.flat[0, 1]) != keep_dc
    assert bool(result.invalid[1, 2]) and bool(result.invalid[2, 3])
    assert int(result.invalid.sum()) == 2
    _agreement(result.srop, x, keep_dc=keep_dc)


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(torch.float32, 1e17), (torch.float32, 1e-25), (torch.bfloat16, 1e17), (torch.float64, 1e200)],
    ids=str,
)
def test_extreme_scales(path: str, dtype: torch.dtype, scale: float) -> None:
    x = _random_maps(16, 16, torch.float64, seed=9)
    x = x / x.abs().amax(dim=(-2, -1), keepdim=True)
    scaled = (x * scale).to(dtype)
    result = _spectral_rolloff_impl(scaled.cuda())
    assert not result.flat.any() and not result.invalid.any()
    _agreement(result.srop, scaled.double() / scale)


# ---------------------------------------------------------------- the guard on CUDA
@pytest.mark.parametrize("failure", ["raise", "wrong"])
def test_guard_falls_back_on_cuda(monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    if not triton_available(torch.device("cuda")):
        pytest.skip("Triton is not installed")
    monkeypatch.setattr(srop_module, "_FUSED_STATE", {})
    real = srop_module.triton_rolloff
    launches: list[int] = []

    def broken(spectrum: torch.Tensor, *args: object, **kwargs: object) -> object:
        launches.append(spectrum.shape[0])
        if failure == "raise":
            raise RuntimeError("CUDA error: an illegal instruction was encountered")
        srop, status = real(spectrum, *args, **kwargs)
        return srop.flip(0), status  # SROPs of the wrong maps

    monkeypatch.setattr(srop_module, "triton_rolloff", broken)
    x = _random_maps(28, 28, torch.float32, seed=1)
    with pytest.warns(FusedKernelWarning, match="plain PyTorch path"):
        got = spectral_rolloff(x.cuda())
    assert launches == [11]  # the self-check's maps only
    assert _agreement(got, x) >= 0.999
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedKernelWarning)
        again = spectral_rolloff(x.cuda() * 2.0)
    assert launches == [11]
    assert _agreement(again, x) >= 0.999


# ---------------------------------------------------------------- the callback, bf16-mixed
def test_callback_bf16_mixed_end_to_end(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_srop import SROPCallback

    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(32, 4),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
            x, y = batch
            self.log("val/loss", nn.functional.cross_entropy(self(x), y))

    gen = torch.Generator().manual_seed(1)
    images = torch.randn(48, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 4, (48,), generator=gen)
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    layers = ["net.0", "net.2", "net.3"]
    model = Net()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        callbacks=[SROPCallback(layers=layers, num_batches=None, stats=("mean",))],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(model, loader, verbose=False)

    # Reference: the same batches through the same model under the same autocast, hooked.
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: captured[name].append(o.detach().float().cpu())
        )
        for name in layers
    ]
    model = model.cuda().eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for x, _ in loader:
            model(x.cuda())
    for h in handles:
        h.remove()
    for name in layers:
        acts = torch.cat(captured[name])
        assert acts.dtype == torch.float32 and acts.shape[0] == 48
        want = srop_reference_with_margin(acts.double().numpy())[0]
        values = want[np.isfinite(want)]
        logged = float(trainer.callback_metrics[f"srop/{name}/mean"])
        assert logged == pytest.approx(values.mean(), rel=1e-3), name


# ---------------------------------------------------------------- the ImageNet recipe
def _cuda_recipe_args(root: Path, data: Path, arch: str) -> list[str]:
    pytest.importorskip("tensorboard")
    from test_recipes import _imagenet_args

    args = [a for a in _imagenet_args(root, data, arch) if a != "--trainer.accelerator=cpu"]
    return [*args, "--trainer.accelerator=gpu", "--trainer.precision=bf16-mixed"]


@pytest.fixture(scope="module")
def cuda_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 images of 64 px in train/ and val/, as test_recipes' image_folder."""
    image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("imagenet_cuda")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("n01440764", "n01443537")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                size = 8 if c == 0 else 64  # class 0 smooth, class 1 striped
                base = rng.uniform(0, 255, (size, size, 3)).astype(np.uint8)
                image.fromarray(base).resize((64, 64)).save(folder / f"{name}_{i}.JPEG")
    return root


def test_imagenet_recipe_fit_on_gpu(tmp_path: Path, cuda_image_folder: Path) -> None:
    from test_recipes import _events

    from recipes import imagenet

    root = tmp_path / "run"
    cli = imagenet.main(["fit", *_cuda_recipe_args(root, cuda_image_folder, "resnet18")])
    assert next(cli.model.parameters()).is_cuda
    events = _events(root / "tensorboard" / "version_0")
    for layer in ("model.conv1", "model.maxpool", "model.layer4.1.conv2"):
        values = [e.value for e in events.Scalars(f"srop/{layer}/mean")]
        assert len(values) == 1 and 0.0 < values[0] < math.sqrt(2) / 2
    assert len(events.Scalars("val/acc")) == 1


def test_imagenet_recipe_validate_only_on_gpu(tmp_path: Path, cuda_image_folder: Path) -> None:
    from test_recipes import _events, _read_csv

    from recipes import imagenet

    root = tmp_path / "run"
    args = _cuda_recipe_args(root, cuda_image_folder, "resnet18")
    cli = imagenet.main(["validate", *args, "--srop.num_batches=null"])
    assert cli.datamodule.train_set is None
    log_dir = root / "tensorboard" / "version_0"
    assert len(_events(log_dir).Scalars("srop/model.layer3.0.conv1/mean")) == 1
    rows = _read_csv(log_dir / "srop_summary.csv")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["srop/model.conv1/mean"]))
