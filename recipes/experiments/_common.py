"""Helpers shared by the experiments: data, training, SROP through the package's public API
(:func:`lightning_srop.profile`), seed statistics (bootstrap intervals, verdicts), CSV output."""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPReport, profile
from lightning_srop.report import write_csv as report_csv

__all__ = [
    "RULE",
    "VERDICTS",
    "Timer",
    "benchmark_pool",
    "bootstrap_interval",
    "command_line",
    "digit_data",
    "downscale_bank",
    "ds_means",
    "evaluate",
    "imagenet_normalize",
    "layer_means",
    "load_images",
    "read_csv",
    "save_reports",
    "seed_list",
    "spearman",
    "summarize",
    "train_model",
    "verdict",
    "write_csv",
]

R = TypeVar("R")

#: The verdicts of :func:`verdict`.
VERDICTS: Final[tuple[str, ...]] = ("holds", "reversed", "inconclusive")

#: How a verdict is decided; written as the first line of every summary CSV.
RULE: Final[str] = (
    "per-seed paired difference d (paper direction: d < 0 unless stated); 95 % percentile "
    "bootstrap interval of the mean of d over seeds (10000 resamples, numpy default_rng(0)); "
    "interval entirely on the paper's side of 0 -> holds; entirely on the other side -> "
    "reversed; containing 0 -> inconclusive. With 3 seeds the interval is [min, max] of the "
    "seed values, so holds means every seed agrees"
)


def digit_data(
    data: str = "digits",
    data_dir: str = "data",
    *,
    download: bool = False,
    max_train: int | None = None,
    max_val: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and validation digits as ``(N, 1, 28, 28)`` floats in [0, 1] with labels.

    ``data="digits"``: scikit-learn's digits (offline), split 80/20 with ``seed``;
    ``data="mnist"``: torchvision's MNIST from ``data_dir`` (downloaded with ``download``).
    ``max_train`` / ``max_val`` keep the first samples of a seeded shuffle.
    """
    if data == "digits":
        from recipes.data import digits_tensors, split_indices

        images, labels = digits_tensors(28)
        train_idx, val_idx = split_indices(len(labels), 0.2, seed)
        tx, ty, vx, vy = images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
    elif data == "mnist":
        from recipes.mnist import DigitsDataModule

        module = DigitsDataModule("mnist", data_dir=data_dir, download=download)
        train, val = module._mnist(train=True), module._mnist(train=False)
        tx = train.data.unsqueeze(1).float() / 255.0  # type: ignore[attr-defined]
        ty = train.targets.clone()  # type: ignore[attr-defined]
        vx = val.data.unsqueeze(1).float() / 255.0  # type: ignore[attr-defined]
        vy = val.targets.clone()  # type: ignore[attr-defined]
    else:
        raise ValueError(f"data={data!r} is not one of ('digits', 'mnist')")
    generator = torch.Generator().manual_seed(seed)
    if max_train is not None:
        keep = torch.randperm(len(ty), generator=generator)[:max_train]
        tx, ty = tx[keep], ty[keep]
    if max_val is not None:
        keep = torch.randperm(len(vy), generator=generator)[:max_val]
        vx, vy = vx[keep], vy[keep]
    return tx, ty, vx, vy


def train_model(
    model: pl.LightningModule,
    train_x: Tensor,
    train_y: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    callbacks: Sequence[pl.Callback] = (),
    val: tuple[Tensor, Tensor] | None = None,
) -> pl.LightningModule:
    """Fit ``model`` with a quiet, deterministic Lightning ``Trainer`` on CPU tensors."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True, generator=generator
    )
    val_loader = DataLoader(TensorDataset(*val), batch_size=512) if val is not None else None
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if val_loader is not None else 0,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*`val_dataloader`.*")
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer.fit(model, loader, val_loader)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


def layer_means(
    model: nn.Module, x: Tensor, layers: Sequence[str] | None = None, **changes: Any
) -> dict[str, float]:
    """Mean SROP of each measured layer of ``model`` on ``x`` (``{name: mean}``), measured by
    :func:`lightning_srop.profile` (eval mode, no grad); ``layers=None`` = profile's default
    choice (every conv and pooling layer)."""
    report = profile(model, x, layers=None if layers is None else list(layers), **changes)
    return {layer.name: layer.stats["mean"] for layer in report}


def benchmark_pool(times: int = 1) -> nn.Sequential:
    """The paper's benchmark downscaling as a module: max pooling with kernel 2 and stride 2,
    ``times`` times (``times = 0``: identity)."""
    return nn.Sequential(*[nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(times)])


def downscale_bank(times: int) -> nn.Sequential:
    """A module whose children ``x1``, ``x2``, ``x4``, ... output the input after 0, 1, 2, ...
    benchmark pools: profile it to get the SROP of "downscaling alone" (the paper's ``ds``)."""
    children: list[tuple[str, nn.Module]] = [("x1", nn.Identity())]
    children += [(f"x{2 ** (i + 1)}", nn.MaxPool2d(kernel_size=2, stride=2)) for i in range(times)]
    return nn.Sequential(OrderedDict(children))


def ds_means(x: Tensor, downscales: Iterable[float]) -> dict[int, float]:
    """``{downscale: mean SROP of x after log2(downscale) benchmark pools}`` via ``profile``.

    Every output is stated to be ``(N, C, H, W)`` maps: ``x1`` is an ``Identity`` (no layout
    of its own), and a one-channel square image is otherwise refused as attention-like."""
    times = {max(0, round(math.log2(d))) for d in downscales}
    names = [f"x{2**t}" for t in sorted(times)]
    report = profile(
        downscale_bank(max(times)), x, layers=names, layout=dict.fromkeys(names, "NCHW")
    )
    return {2**t: report[f"x{2**t}"].stats["mean"] for t in sorted(times)}


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_images(image_dir: str | None, num: int, size: int, seed: int) -> Tensor:
    """``num`` RGB images in [0, 1] as ``(num, 3, size, size)``.

    ``image_dir=None``: random crops (``seed``) of scikit-learn's two sample photos (offline).
    Else the images under ``image_dir`` (recursive; an ImageNet-style ``val/<class>/*.JPEG``
    folder works): a seeded random choice of ``num`` of them (all if fewer), each resized
    (short side) and center-cropped to ``size``, as torchvision's evaluation transform does.
    """
    if image_dir is None:
        from recipes.data import photo_crops

        return photo_crops(num, size, seed=seed)
    from PIL import Image
    from torchvision import transforms as T

    root = Path(image_dir)
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    paths = (
        sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes) if root.is_dir() else []
    )
    if not paths:
        raise FileNotFoundError(
            f"no images (*.jpg, *.png, ...) found under {root}: give --image-dir a folder of "
            "images, e.g. an ImageNet validation folder, or leave it out to use the sample photos"
        )
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))
    chosen = [paths[i] for i in order[:num].tolist()]
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in chosen])


def imagenet_normalize(images: Tensor) -> Tensor:
    """ImageNet mean/std normalization of ``(N, 3, H, W)`` images in [0, 1]."""
    return (images - IMAGENET_MEAN) / IMAGENET_STD


# --------------------------------------------------------------------------------------------
# statistics over seeds


def seed_list(seed: int, seeds: int) -> list[int]:
    """The seeds of a run: ``seed, seed + 1, ..., seed + seeds - 1``."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return [seed + i for i in range(seeds)]


def bootstrap_interval(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile bootstrap interval.

    Resamples ``values`` with replacement ``resamples`` times (``numpy.random.default_rng(seed)``,
    so the interval is reproducible), takes each resample's mean and returns the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means. One value gives
    ``(v, v, v)``. NaN values are an error (a missing measurement must not pass silently).
    """
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap_interval: no values")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"bootstrap_interval: non-finite values {data.tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_interval: level must be in (0, 1), got {level}")
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    # the interval holds the mean (float rounding of equal values aside)
    return mean, float(min(low, mean)), float(max(high, mean))


def verdict(low: float, high: float, direction: int = -1) -> str:
    """The verdict for a difference whose interval is ``[low, high]`` (see :data:`RULE`).

    ``direction = -1``: the paper expects the difference below 0; ``+1``: above 0.
    """
    if direction not in (-1, 1):
        raise ValueError(f"direction must be -1 or +1, got {direction}")
    if low > high:
        raise ValueError(f"verdict: low {low} > high {high}")
    if high < 0.0:
        return "holds" if direction == -1 else "reversed"
    if low > 0.0:
        return "holds" if direction == 1 else "reversed"
    return "inconclusive"


#: Summary columns after an experiment's own key columns.
SUMMARY_COLUMNS: Final[tuple[str, ...]] = (
    "quantity",
    "paper_direction",
    "seeds",
    "mean",
    "low",
    "high",
    "verdict",
)

#: Colors of the verdicts in figures (``n/a``: a quantity the paper states no direction for).
VERDICT_COLORS: Final[dict[str, str]] = {
    "holds": "tab:green",
    "reversed": "tab:red",
    "inconclusive": "tab:gray",
    "n/a": "black",
}


def summarize(
    key: Mapping[str, Any], quantity: str, values: Sequence[float], direction: int | None = None
) -> dict[str, Any]:
    """One summary row: ``key`` columns, then :data:`SUMMARY_COLUMNS`.

    ``values`` are per-seed values of ``quantity``; with ``direction`` (-1: the paper expects
    them below 0, +1: above) they are a paired difference and get a :func:`verdict`, without
    it the verdict is ``n/a``. NaN values (a layer whose maps were all flat in some seed, e.g.
    dead ReLUs feeding it) are left out and ``seeds`` counts the values used; with none left
    the row has NaN statistics and, with a direction, the verdict ``inconclusive``.
    """
    finite = [float(v) for v in values if math.isfinite(v)]
    if finite:
        mean, low, high = bootstrap_interval(finite)
    else:
        mean = low = high = math.nan
    if direction is None:
        decided = "n/a"
    else:
        decided = verdict(low, high, direction) if finite else "inconclusive"
    return {
        **key,
        "quantity": quantity,
        "paper_direction": {None: "none", -1: "< 0", 1: "> 0"}[direction],
        "seeds": len(finite),
        "mean": mean,
        "low": low,
        "high": high,
        "verdict": decided,
    }


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (average ranks for ties); NaN when one
    of them is constant."""
    x, y = _ranks(a), _ranks(b)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"spearman: need two sequences of equal length >= 2, got {len(x)}, {len(y)}"
        )
    x, y = x - x.mean(), y - y.mean()
    norm = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / norm if norm > 0 else math.nan


def _ranks(values: Sequence[float]) -> np.ndarray:
    data = np.asarray(list(values), dtype=np.float64)
    order = np.argsort(data, kind="stable")
    ranks = np.empty(len(data), dtype=np.float64)
    ranks[order] = np.arange(len(data), dtype=np.float64)
    for value in np.unique(data):
        tied = data == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def write_csv(
    path: Path, rows: Sequence[Mapping[str, Any]], *, comments: Sequence[str] = ()
) -> Path:
    """Write ``rows`` (dicts with the same keys) to ``path``; floats with 6 significant digits.

    Each of ``comments`` becomes a leading ``# ...`` line (e.g. ``rule: ...``); read the file
    back with :func:`read_csv`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError("no rows to write")
    with path.open("w", newline="") as handle:
        for comment in comments:
            handle.write(f"# {comment}\n")
        cells = [{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]
        report_csv(handle, cells, list(rows[0]))
    return path


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(comment lines without '# ', rows)`` of a CSV written by :func:`write_csv`."""
    with path.open() as handle:
        lines = handle.read().splitlines()
    comments = [line[2:] for line in lines if line.startswith("# ")]
    body = [line for line in lines if not line.startswith("#")]
    return comments, list(csv.DictReader(body))


def save_reports(path: Path, reports: Mapping[str, SROPReport]) -> Path:
    """Save labelled reports as one JSON file: ``{label: report JSON}``."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({k: json.loads(r.with_label(k).to_json()) for k, r in reports.items()}) + "\n"
    )
    return path


class Timer:
    """Wall-clock seconds since creation (``elapsed``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def command_line(
    run: Callable[..., R],
    argv: Sequence[str] | None,
    *,
    description: str,
    check: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> R:
    """Parse ``argv`` into the arguments of an experiment's ``run`` and call it: the one way
    the experiments build their command lines.

    Every parameter of ``run`` is a flag, spelled with dashes (``max_train`` -> ``--max-train``),
    its type read from the annotation by jsonargparse (``Literal`` -> choices, ``int | None``,
    ``Path``), its default from the signature and its help from the ``Args:`` section of
    ``run``'s docstring. A ``Sequence[X]`` takes one or more values (``--weights 0 0.5``), a
    ``bool`` that defaults to ``False`` is a bare switch (``--download``). ``out_dir`` defaults
    to ``runs/experiments/<the experiment's file name>``. One flag is the command line's own:
    ``--threads N`` (torch intra-op threads; 0 = torch's default), applied before ``run``.
    ``check`` gets the parsed arguments and returns an error message (or ``None``); errors
    print the usage and exit with code 2, as argparse does.
    """
    import inspect
    import typing

    from docstring_parser import parse as parse_docstring
    from jsonargparse import ArgumentParser

    helps = {p.arg_name: p.description or "" for p in parse_docstring(run.__doc__ or "").params}
    hints = typing.get_type_hints(run)
    parser = ArgumentParser(description=description)
    for name, param in inspect.signature(run).parameters.items():
        hint = hints[name]
        default = param.default
        if name == "out_dir" and default is inspect.Parameter.empty:
            default = Path("runs/experiments") / Path(inspect.getfile(run)).stem
        if default is inspect.Parameter.empty:
            raise TypeError(f"command_line: {run.__qualname__}({name}) needs a default")
        flag = "--" + name.replace("_", "-")
        help_text = helps.get(name, "")
        if typing.get_origin(hint) in (Sequence, list, tuple):
            (item,) = set(typing.get_args(hint)) - {Ellipsis}
            parser.add_argument(flag, type=item, nargs="+", default=list(default), help=help_text)
        elif hint is bool and default is False:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, type=hint, default=default, help=help_text)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = torch's default); 1 is fastest for these tiny models "
        "on a busy or small CPU",
    )
    namespace = parser.parse_args(list(argv) if argv is not None else None)
    arguments = {k: v for k, v in vars(namespace).items() if k != "threads"}
    problem = _check_seeds(arguments) or (check(arguments) if check is not None else None)
    if problem is not None:
        parser.error(problem)
    if namespace.threads > 0:
        torch.set_num_threads(namespace.threads)
    return run(**arguments)


def _check_seeds(arguments: Mapping[str, Any]) -> str | None:
    seeds = arguments.get("seeds", 1)
    return f"--seeds must be >= 1, got {seeds}" if seeds < 1 else None
