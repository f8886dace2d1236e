"""End-to-end tests of the MNIST and ImageNet recipes: real Trainers through the LightningCLI
entry points on data the tests generate or scikit-learn ships, outputs read back."""

from __future__ import annotations

import csv
import math
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _wandb_reader import read_wandb_records as _wandb_records
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_srop import SROPWarning
from lightning_srop.layers import resolve_layers
from recipes import imagenet, mnist
from recipes.blurpool import BlurPool2d, antialias_resnet, binomial_filter

pytestmark = pytest.mark.usefixtures("one_thread")


CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
MNIST_LAYERS = (
    "features.conv1",
    "features.pool1",
    "features.conv2",
    "features.down",
    "features.conv3",
)


def _events(log_dir: Path) -> EventAccumulator:
    """The run of ``log_dir`` itself (not the layer runs below it)."""
    files = list(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {log_dir}"
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _srop_scalars(log_dir: Path) -> dict[str, list[float]]:
    """``srop/{layer}/{stat}`` -> values, read from the layer runs the callback writes as
    TensorBoard runs ``{log_dir}/srop/{NN}-{layer}/`` holding the tags ``srop/{stat}``."""
    out: dict[str, list[float]] = {}
    for run in sorted((log_dir / "srop").iterdir()):
        layer = run.name.split("-", 1)[1]
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[f"srop/{layer}/{tag.removeprefix('srop/')}"] = [e.value for e in acc.Scalars(tag)]
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _png_shape(path: Path) -> tuple[int, ...]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image).shape


def _tiny_trainer_args(root: Path, epochs: int = 2) -> list[str]:
    return [
        f"--trainer.max_epochs={epochs}",
        f"--trainer.default_root_dir={root}",  # moves the logger's save_dir too
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.limit_train_batches=4",
        "--trainer.log_every_n_steps=1",
    ]


# --------------------------------------------------------------------------------------------
# MNIST recipe


def test_short_spellings() -> None:
    assert mnist.normalize_args([]) == ["fit"]
    assert mnist.normalize_args(["--data", "mnist"]) == ["fit", "--data.dataset", "mnist"]
    assert mnist.normalize_args(["--data=digits"]) == ["fit", "--data.dataset=digits"]
    assert mnist.normalize_args(["validate", "--data", "mnist"]) == [
        "validate",
        "--data.dataset",
        "mnist",
    ]
    # a data module class path is left alone
    assert mnist.normalize_args(["fit", "--data", "x.Y"]) == ["fit", "--data", "x.Y"]


@pytest.mark.slow
def test_mnist_recipe_digits_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "run"
    cli = mnist.main(["--config", str(CONFIGS / "mnist.yaml"), *_tiny_trainer_args(root)])
    assert cli.datamodule.dataset == "digits"
    out = capsys.readouterr().out
    log_dir = root / "tensorboard" / "version_0"
    assert f"Logs:        {log_dir}" in out
    command = f"tensorboard --logdir {root / 'tensorboard'} --samples_per_plugin images=0,"
    assert command in out  # 0 = keep every epoch's images (TensorBoard's default keeps 10)
    assert "Smoothing to 0" in out
    png = log_dir / "srop_summary.png"
    assert f"Summary:     {png}" in out

    events = _events(log_dir)
    tags = set(events.Tags()["scalars"])
    srop = _srop_scalars(log_dir)
    # The five layers that SmallCNN's docstring and the recipes page describe, no ReLU.
    assert {t.split("/")[1] for t in srop} == set(MNIST_LAYERS)
    for layer in MNIST_LAYERS:
        for stat in ("mean", "median"):
            values = srop[f"srop/{layer}/{stat}"]
            assert len(values) == 2  # one per validation epoch, none from the sanity check
            assert all(0.0 < v < math.sqrt(2) / 2 for v in values)
    assert {"val/acc", "val/loss", "train/loss", "train/acc"} <= tags
    assert len(events.Scalars("val/acc")) == 2

    rows = _read_csv(log_dir / "srop_summary.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row, value in zip(rows, srop["srop/features.conv1/mean"], strict=True):
        assert float(row["srop/features.conv1/mean"]) == pytest.approx(value, rel=1e-6)
    for row, event in zip(rows, events.Scalars("val/acc"), strict=True):
        assert float(row["val/acc"]) == pytest.approx(event.value, rel=1e-6)
    height, width, _ = _png_shape(png)
    assert width > 800 and height > 300


def test_mnist_recipe_layers_without_config_are_the_documented_five() -> None:
    cli = mnist.main(["--trainer.max_epochs=1", "--trainer.logger=false"], run=False)
    callback = next(c for c in cli.trainer.callbacks if type(c).__name__ == "SROPCallback")
    names = tuple(name for name, _ in resolve_layers(cli.model, callback.layers))
    assert names == MNIST_LAYERS


def test_mnist_recipe_log_directories_follow_default_root_dir(tmp_path: Path) -> None:
    """``--trainer.default_root_dir`` moves a logger left at the recipe's ``save_dir``; an
    explicit ``--trainer.logger.init_args.save_dir`` is kept."""
    config = ["--config", str(CONFIGS / "mnist.yaml")]
    moved = mnist.main([*config, f"--trainer.default_root_dir={tmp_path / 'a'}"], run=False)
    assert moved.trainer.logger.save_dir == str(tmp_path / "a")  # type: ignore[union-attr]
    kept = mnist.main(
        [
            *config,
            f"--trainer.default_root_dir={tmp_path / 'a'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'b'}",
        ],
        run=False,
    )
    assert kept.trainer.logger.save_dir == str(tmp_path / "b")  # type: ignore[union-attr]


def test_mnist_recipe_says_once_when_fewer_batches_are_measured(tmp_path: Path) -> None:
    with pytest.warns(SROPWarning) as caught:
        cli = mnist.main(
            [
                "--config",
                str(CONFIGS / "mnist.yaml"),
                *_tiny_trainer_args(tmp_path, epochs=2),
                "--trainer.limit_val_batches=1",
                "--srop.num_batches=4",
                "--summary.verbose=false",
            ]
        )
    said = [str(w.message) for w in caught if "fewer than `num_batches`=4" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]  # two measured epochs, one notice
    assert "measured 1 validation batch(es)" in said[0] and "limit_val_batches" in said[0]
    callback = next(c for c in cli.trainer.callbacks if type(c).__name__ == "SROPCallback")
    assert callback.last_report.num_batches == 1


def test_mnist_recipe_wandb_config(wandb_offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path = wandb_offline
    root = tmp_path / "run"
    cli = mnist.main(
        [
            "--config",
            str(CONFIGS / "mnist.yaml"),
            "--config",
            str(CONFIGS / "mnist_wandb.yaml"),
            *_tiny_trainer_args(root, epochs=1),
        ]
    )
    cli.trainer.logger.experiment.finish()  # type: ignore[union-attr]
    out = capsys.readouterr().out
    assert "W&B:         wandb sync" in out and "tensorboard --logdir" not in out
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = runs[0] / "files"
    assert (files / "srop_summary.png").is_file() and (files / "srop_summary.csv").is_file()
    expected = {"srop/features.conv1/mean", "srop/features.down/median", "val/acc"}
    (run_file,) = runs[0].glob("run-*.wandb")
    deadline = time.monotonic() + 30  # the wandb service may still be writing
    while True:
        keys: set[str] = set()
        for record in _wandb_records(run_file):
            if record.WhichOneof("record_type") == "history":
                keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        if expected <= keys or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert expected <= keys, sorted(keys)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """torchvision's raw MNIST format: big-endian magic (0, 0, 0x08 = ubyte, ndim), dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 96, n_test: int = 40) -> None:
    from recipes.data import digits_tensors

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = digits_tensors(28)
    images = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    labels = labels.numpy()
    _write_idx(raw / "train-images-idx3-ubyte", images[:n_train])
    _write_idx(raw / "train-labels-idx1-ubyte", labels[:n_train])
    _write_idx(raw / "t10k-images-idx3-ubyte", images[n_train : n_train + n_test])
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[n_train : n_train + n_test])


def test_mnist_recipe_loads_torchvision_mnist_files(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "data")
    root = tmp_path / "run"
    cli = mnist.main(
        [
            "--data",
            "mnist",
            f"--data.data_dir={tmp_path / 'data'}",
            "--data.download=false",
            "--data.batch_size=32",
            *_tiny_trainer_args(root, epochs=1),
        ]
    )
    module = cli.datamodule
    assert module.dataset == "mnist"
    assert len(module.train_set) == 96 and len(module.val_set) == 40
    x, y = module.val_set[0]
    assert x.shape == (1, 28, 28) and isinstance(y, int)
    events = _events(root / "tensorboard" / "version_0")
    assert len(_srop_scalars(root / "tensorboard" / "version_0")["srop/features.down/mean"]) == 1
    assert len(events.Scalars("val/acc")) == 1


def test_mnist_missing_files_error_says_what_and_where(tmp_path: Path) -> None:
    module = mnist.DigitsDataModule("mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(RuntimeError) as info:
        module.setup("fit")
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "--data digits" in message


def test_digits_data_module_split() -> None:
    module = mnist.DigitsDataModule(limit_train_samples=100)
    module.setup("fit")
    assert len(module.train_set) == 100
    assert len(module.val_set) == round(1797 * 0.2)
    x, _ = module.val_set[0]
    assert x.shape == (1, 28, 28) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="dataset='cifar'"):
        mnist.DigitsDataModule("cifar")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# ImageNet recipe


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 images of 64 px in train/ and val/ (class 0 smooth, class 1 striped)."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("n01440764", "n01443537")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                base = (
                    rng.uniform(0, 255, (8, 8, 3)) if c == 0 else rng.uniform(0, 255, (64, 64, 3))
                )
                image = Image.fromarray(base.astype(np.uint8)).resize((64, 64))
                image.save(folder / f"{name}_{i}.JPEG" if split == "train" else folder / f"{i}.png")
    return root


def _imagenet_args(root: Path, data: Path, arch: str) -> list[str]:
    return [
        "--config",
        str(CONFIGS / "imagenet.yaml"),
        f"--model.arch={arch}",
        "--model.num_classes=2",
        "--model.lr=0.01",
        f"--data.data_dir={data}",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--data.image_size=48",
        "--data.resize_size=56",
        "--data.pin_memory=false",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.benchmark=false",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet18_blurpool"])
def test_imagenet_recipe_fit(
    tmp_path: Path, image_folder: Path, arch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    args = ["fit", *_imagenet_args(root, image_folder, arch)]
    if arch.endswith("blurpool"):  # the default choice skips BlurPool2d; pick it by regex
        args.append(r"--srop.layers=^model\.(conv1|maxpool\.1|layer2\.0\.conv1\.[01])$")
    cli = imagenet.main(args)
    model = cli.model.model
    blurs = [m for m in model.modules() if isinstance(m, BlurPool2d)]
    assert len(blurs) == (7 if arch.endswith("blurpool") else 0)  # maxpool + 3 x (conv1, down)
    log_dir = root / "tensorboard" / "version_0"
    events = _events(log_dir)
    srop = _srop_scalars(log_dir)
    if arch == "resnet18":
        expected = {
            "model.conv1",
            "model.maxpool",
            "model.layer2.0.conv1",
            "model.layer2.0.downsample.0",
            "model.layer4.1.conv2",
        }
    else:
        expected = {
            "model.conv1",
            "model.maxpool.1",
            "model.layer2.0.conv1.0",
            "model.layer2.0.conv1.1",
        }
        assert {t.split("/")[1] for t in srop} == expected
    for layer in expected:
        values = srop[f"srop/{layer}/mean"]
        assert len(values) == 1 and 0.0 < values[0] < math.sqrt(2) / 2
    assert len(events.Scalars("val/acc")) == 1 and len(events.Scalars("val/acc5")) == 1
    assert _png_shape(log_dir / "srop_summary.png")[1] > 500
    assert "tensorboard --logdir" in capsys.readouterr().out


def test_imagenet_recipe_log_directory_follows_default_root_dir(
    tmp_path: Path, image_folder: Path
) -> None:
    args = [a for a in _imagenet_args(tmp_path, image_folder, "resnet18") if "save_dir" not in a]
    cli = imagenet.main(args, run=False)
    assert cli.trainer.logger.save_dir == str(tmp_path)  # type: ignore[union-attr]


def test_imagenet_recipe_validate_only(tmp_path: Path, image_folder: Path) -> None:
    root = tmp_path / "run"
    cli = imagenet.main(
        ["validate", *_imagenet_args(root, image_folder, "resnet18"), "--srop.num_batches=null"]
    )
    assert cli.datamodule.train_set is None  # validate never builds the training set
    log_dir = root / "tensorboard" / "version_0"
    assert len(_srop_scalars(log_dir)["srop/model.layer3.0.conv1/mean"]) == 1
    rows = _read_csv(log_dir / "srop_summary.csv")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["srop/model.conv1/mean"]))
    assert _png_shape(log_dir / "srop_summary.png")[0] > 300


def test_imagenet_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid choices: alexnet, vgg11, vgg16"):
        imagenet.build_model("resnet19")
    with pytest.raises(ValueError, match="valid choices: DEFAULT, IMAGENET1K_V1"):
        imagenet.build_model("resnet18", weights="IMAGENET9K")
    module = imagenet.ImageNetDataModule(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"expected .*train/<class name>/<image files>"):
        module.setup("fit")


def test_pretrained_weights_without_network_say_where_the_file_goes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import urllib.error

    import torch.hub

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as info:
        imagenet.build_model("resnet18_blurpool", weights="DEFAULT")
    message = str(info.value)
    assert "resnet18.IMAGENET1K_V1" in message and "--model.weights null" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "resnet50"])
def test_imagenet_archs_build_and_run(arch: str) -> None:
    model = imagenet.build_model(arch, num_classes=3)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


# --------------------------------------------------------------------------------------------
# BlurPool


def test_binomial_filter_and_blurpool() -> None:
    torch.testing.assert_close(binomial_filter(3)[1], torch.tensor([2.0, 4.0, 2.0]) / 16)
    assert float(binomial_filter(5).sum()) == pytest.approx(1.0)
    pool = BlurPool2d(2, filter_size=3, stride=2)
    constant = torch.full((1, 2, 10, 10), 3.0)
    torch.testing.assert_close(pool(constant), torch.full((1, 2, 5, 5), 3.0))
    # the Nyquist-frequency checkerboard is removed entirely by the [1, 2, 1] filter
    i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((-1.0) ** (i + j)).view(1, 1, 16, 16).repeat(1, 2, 1, 1)
    assert pool(checker).abs().max() < 1e-6
    assert torch.nn.functional.max_pool2d(checker, 2).abs().min() == 1.0  # max pool aliases it


def test_antialias_resnet_keeps_parameters() -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    plain = resnet18()
    before = {k: v.clone() for k, v in plain.named_parameters()}
    blurred = antialias_resnet(plain)
    after = [v for _, v in blurred.named_parameters()]
    assert len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(after, before.values(), strict=True))
    assert blurred(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(TypeError, match="torchvision ResNet"):
        antialias_resnet(torch.nn.Conv2d(1, 1, 1))


def test_imagenet_recipe_ddp_two_cpu_processes(tmp_path: Path, image_folder: Path) -> None:
    """The same config under DDP (2 CPU processes, gloo), launched as users do: a subprocess
    running ``python -m recipes.imagenet`` (Lightning re-launches the command per rank)."""
    import subprocess
    import sys

    root = tmp_path / "run"
    args = [a for a in _imagenet_args(root, image_folder, "resnet18") if a != "--trainer.devices=1"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipes.imagenet",
            "fit",
            *args,
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--trainer.max_epochs=2",
            "--threads=1",
            "--data.batch_size=2",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Summary:") == 1  # rank zero only
    versions = list((root / "tensorboard").iterdir())
    assert [v.name for v in versions] == ["version_0"]
    values = _srop_scalars(versions[0])["srop/model.layer2.0.conv1/mean"]
    assert len(values) == 2 and all(0.0 < v < math.sqrt(2) / 2 for v in values)
    rows = _read_csv(versions[0] / "srop_summary.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
