"""The package as users get it: optional dependencies optional in fact, built distributions.

- Without matplotlib (and without tensorboard, W&B, Pillow, torchvision), a real ``Trainer``
  fit with ``SROPCallback`` finishes, logs the SROP scalars and says at most once what it
  skipped; no figure is drawn for loggers that take no images. Simulated in a subprocess whose
  site-packages is this environment's without those distributions (code and metadata), and for
  real in a fresh virtual environment with the built wheel and no extras (slow).
- The wheel and sdist (``python -m build``): contents, ``twine check``, valid trove
  classifiers, the license file, and every imported distribution declared.
"""

from __future__ import annotations

import ast
import csv
import email
import email.message
import functools
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_srop.plots
from lightning_srop import SROPCallback, SROPWarning
from lightning_srop.loggers import loggers_taking

ROOT = Path(__file__).resolve().parents[1]
#: Largest radial frequency of a 2-D map, in cycles per pixel: the valid SROP range's end.
MAX_SROP = math.sqrt(2.0) / 2.0

# ------------------------------------------------------------------------------------------
# A tiny fit, run in-process and as a script in other environments
# ------------------------------------------------------------------------------------------

#: Fits a tiny CNN for two epochs with SROPCallback and prints one JSON line:
#: ``{"logger", "log_dir", "notices", "matplotlib", "srop_file"}``.
#: Usage: ``python fit.py OUT_DIR LOGGER [SITE_DIR ROOT]`` with LOGGER ``default``, ``csv`` or
#: ``tensorboard``; SITE_DIR (for ``python -I -S``) is added as site-packages and ROOT put
#: first on ``sys.path``.
FIT_SCRIPT = r"""
import sys

if len(sys.argv) > 3:
    import site

    site.addsitedir(sys.argv[3])
    sys.path.insert(0, sys.argv[4])

import importlib.util
import json
import warnings

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_srop
from lightning_srop import SROPCallback
from lightning_srop import SROPWarning

out, kind = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
L.seed_everything(0, verbose=False)


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(32, 1, 12, 12, generator=g), torch.randint(0, 3, (32,), generator=g))
if kind == "default":
    logger = True
elif kind == "csv":
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(out, name="csv", version=0)
else:
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(out, name="tb", version=0)
trainer = L.Trainer(
    max_epochs=2, accelerator="cpu", devices=1, logger=logger, callbacks=[SROPCallback()],
    default_root_dir=out, enable_progress_bar=False, enable_model_summary=False,
    enable_checkpointing=False, num_sanity_val_steps=0,
)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    trainer.fit(Tiny(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))
notices = [str(w.message) for w in caught if issubclass(w.category, SROPWarning)]
print(json.dumps({
    "logger": type(trainer.logger).__name__,
    "log_dir": trainer.logger.log_dir,
    "notices": notices,
    "matplotlib": importlib.util.find_spec("matplotlib") is not None,
    "srop_file": lightning_srop.__file__,
}))
"""


def _srop_columns(metrics_csv: Path) -> dict[str, list[float]]:
    """The SROP columns of a CSVLogger's metrics.csv: name -> values of the rows that have one."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = sorted(name for name in rows[0] if name.startswith("srop/")) if rows else []
    return {name: [float(r[name]) for r in rows if r[name] != ""] for name in columns}


def _check_srop_columns(metrics_csv: Path, epochs: int) -> None:
    columns = _srop_columns(metrics_csv)
    # Every Conv2d and pooling layer of the script's Tiny model, with the default statistics
    # and the change since the baseline (measured through its validation_step: it has no
    # forward).
    assert sorted(columns) == sorted(
        f"srop/net.{i}/{stat}" for i in (0, 2, 3) for stat in ("mean", "median", "change")
    )
    for name, values in columns.items():
        assert len(values) == epochs, (name, values)
        if name.endswith("/change"):
            assert all(abs(v) < 5.0 for v in values), (name, values)  # NaN fails too
        else:
            assert all(0.0 < v <= MAX_SROP for v in values), (name, values)


def _run_fit(python: list[str], out: Path, kind: str, *extra: str) -> dict[str, Any]:
    script = out / "fit.py"
    script.write_text(FIT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(MPLBACKEND="Agg", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [*python, str(script), str(out), kind, *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
        timeout=600,
    )
    print(proc.stdout, proc.stderr, sep="\n")  # shown by pytest on failure (and with -s)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["output"] = proc.stdout + proc.stderr
    return result


# ------------------------------------------------------------------------------------------
# Optional dependencies, simulated: site-packages without them
# ------------------------------------------------------------------------------------------

#: Distributions (and their import names) that `pip install lightning-srop` does not bring.
NOT_IN_BASE = {"matplotlib", "mpl_toolkits", "pylab", "pil", "pillow", "torchvision", "wandb"}
TENSORBOARD = {"tensorboard", "tensorboardx", "tensorboard_data_server"}


def _site_without(tmp_path: Path, hidden: set[str]) -> Path:
    """A site-packages of symbolic links to this environment's, less ``hidden`` distributions
    (code and metadata) and less lightning_srop itself (the checkout goes first instead)."""
    site = tmp_path / "site-packages"
    site.mkdir()
    sources = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    for source in sources:
        for entry in source.iterdir():
            name = entry.name.lower()
            stem = re.split(r"[-.]", name, maxsplit=1)[0]
            if stem in hidden or "lightning_srop" in name or (site / entry.name).exists():
                continue
            (site / entry.name).symlink_to(entry)
    return site


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "hidden"),
    [("default", NOT_IN_BASE | TENSORBOARD), ("tensorboard", NOT_IN_BASE)],
    ids=["no-extras-default-logger", "tensorboard-extra-only"],
)
def test_fit_without_optional_dependencies(tmp_path: Path, kind: str, hidden: set[str]) -> None:
    site = _site_without(tmp_path, hidden)
    out = tmp_path / "run"
    out.mkdir()
    result = _run_fit([sys.executable, "-I", "-S"], out, kind, str(site), str(ROOT))
    assert result["matplotlib"] is False  # the simulation holds
    assert Path(result["srop_file"]).resolve().parent == ROOT / "lightning_srop"
    notices: list[str] = result["notices"]
    assert len(notices) == len(set(notices)), notices  # each notice once in two epochs
    about_matplotlib = [n for n in notices if "matplotlib" in n]
    if kind == "default":
        # Without tensorboard Lightning's default logger is a CSVLogger, which takes no
        # images: no figure is attempted, so matplotlib is never mentioned.
        assert result["logger"] == "CSVLogger"
        assert about_matplotlib == []
        _check_srop_columns(Path(result["log_dir"]) / "metrics.csv", epochs=2)
    else:
        assert result["logger"] == "TensorBoardLogger"
        assert len(about_matplotlib) == 1, notices
        assert "pip install 'lightning-srop[plots]'" in about_matplotlib[0]
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        # every layer is a TensorBoard run of its own: {log_dir}/srop/{NN}-{layer}
        layer = EventAccumulator(str(Path(result["log_dir"]) / "srop" / "00-net.0"))
        layer.Reload()
        assert "srop/mean" in layer.Tags()["scalars"]
        assert "srop_histograms/per_map" in layer.Tags()["histograms"]  # no matplotlib needed
        main = EventAccumulator(result["log_dir"], size_guidance={"images": 0})
        main.Reload()
        assert main.Tags()["images"] == []


# ------------------------------------------------------------------------------------------
# No figure for loggers that take no images
# ------------------------------------------------------------------------------------------


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, logger: Any) -> list[str]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 1, 12, 12, generator=g), torch.randint(0, 3, (16,)))
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[SROPCallback()],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_Tiny(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    return [str(w.message) for w in caught if issubclass(w.category, SROPWarning)]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Titles of the figures SROPCallback draws (plots.plot_layer_profile calls)."""
    titles: list[str] = []
    real = lightning_srop.plots.plot_layer_profile

    def recording(*args: Any, **kwargs: Any) -> Any:
        titles.append(str(kwargs.get("title")))
        return real(*args, **kwargs)

    monkeypatch.setattr(lightning_srop.plots, "plot_layer_profile", recording)
    return titles


@pytest.mark.usefixtures("one_thread")
def test_no_figure_drawn_for_csv_logger_only(tmp_path: Path, drawn: list[str]) -> None:
    notices = _fit(tmp_path, CSVLogger(tmp_path, name="csv", version=0))
    assert drawn == []
    assert [n for n in notices if "no image support" in n] == [
        "SROPCallback: logger CSVLogger has no image support; the SROP figures are not written to it."
    ]
    columns = _srop_columns(tmp_path / "csv" / "version_0" / "metrics.csv")
    stats = ("mean", "median", "change")
    assert set(columns) == {f"srop/net.{i}/{s}" for i in (0, 2) for s in stats}


@pytest.mark.usefixtures("one_thread")
def test_figure_drawn_once_per_epoch_for_tensorboard(tmp_path: Path, drawn: list[str]) -> None:
    # The other side of the test above: the recording patch does see the callback's figures.
    notices = _fit(tmp_path, [TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path)])
    assert drawn == ["SROP per layer, epoch 0", "SROP per layer, epoch 1"]
    assert not [n for n in notices if "matplotlib" in n]


def test_loggers_taking(tmp_path: Path) -> None:
    tb, csv_a, csv_b = TensorBoardLogger(tmp_path), CSVLogger(tmp_path), CSVLogger(tmp_path)
    for output in ("histograms", "images"):
        split = loggers_taking([csv_a, tb, csv_b], output)  # type: ignore[arg-type]
        assert split.taking == [tb] and split.skipped == ["CSVLogger"]
    assert loggers_taking([], "images") == ([], [])
    with pytest.raises(ValueError, match=r"loggers_taking: expected `output` to be one of"):
        loggers_taking([tb], "figures")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Built distributions
# ------------------------------------------------------------------------------------------

#: What the source copy for the build leaves out (build products, caches, environments).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "lightning_logs",
    "runs",
    "outputs",
    "wandb",
    "data",
    "site",
)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"wheel": ..., "sdist": ...}`` built by ``python -m build`` (the wheel from the sdist)
    from a copy of the checkout, so that the checkout gets no build products."""
    base = tmp_path_factory.mktemp("dists")
    source, out = base / "source", base / "dist"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE, symlinks=True)
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="session")
def metadata(dists: dict[str, Path]) -> email.message.Message:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(wheel.read(name))


def _package_modules() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "lightning_srop").rglob("*.py"))


def test_wheel_contents(dists: dict[str, Path], metadata: email.message.Message) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        dist_info = f"lightning_srop-{metadata['Version']}.dist-info"
        license_text = wheel.read(f"{dist_info}/licenses/LICENSE").decode()
    package = sorted(n for n in names if not n.startswith(dist_info))
    assert package == sorted([*_package_modules(), "lightning_srop/py.typed"])
    assert sorted(n for n in names if n.startswith(dist_info)) == sorted(
        f"{dist_info}/{n}"
        for n in (
            "METADATA",
            "WHEEL",
            "RECORD",
            "top_level.txt",
            "entry_points.txt",  # the `lightning-srop` command
            "licenses/LICENSE",
        )
    )
    assert not [n for n in names if n.startswith(("tests/", "recipes/", "benchmarks/"))]
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a stub
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_sdist_contents(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for required in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"):
        assert required in names
    assert set(_package_modules()) | {"lightning_srop/py.typed"} <= names
    assert not [n for n in names if n.startswith(("tests/", "recipes/", "benchmarks/", "docs/"))]


def test_twine_check(dists: dict[str, Path]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            str(dists["wheel"]),
            str(dists["sdist"]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_classifiers_are_valid(metadata: email.message.Message) -> None:
    from trove_classifiers import classifiers as valid

    declared = metadata.get_all("Classifier") or []
    assert declared, "no classifiers"
    assert [c for c in declared if c not in valid] == []
    # An SPDX `license` expression replaces License :: classifiers (and may not be mixed).
    assert not [c for c in declared if c.startswith("License ::")]


def test_changelog_has_this_version(metadata: email.message.Message) -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert metadata["Version"] in headings


# ------------------------------------------------------------------------------------------
# Every imported distribution is declared
# ------------------------------------------------------------------------------------------

#: Imported, deliberately undeclared: Triton ships inside CUDA builds of PyTorch and is
#: optional (a fallback runs without it).
UNDECLARED_OK = {"triton"}
# The repository's own modules: the package, the recipes and the tests' helpers.
FIRST_PARTY = {
    "lightning_srop",
    "recipes",
    "tests",
    "conftest",
    *(path.stem for path in Path(__file__).parent.glob("_*.py")),  # the tests' helpers
    "test_robustness",
    "test_recipes",
    "sphinx_roles",  # docs/hooks/sphinx_roles.py, the docs build's griffe extension
}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level module names imported by ``path``: ``(at import time, lazily or guarded)``.

    Imports under ``if TYPE_CHECKING:`` are not run and are left out.
    """
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse, deferred)
                continue
            if isinstance(child, ast.Import):
                (lazy if deferred else eager).update(a.name.split(".")[0] for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                (lazy if deferred else eager).add(child.module.split(".")[0])
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            guarded = isinstance(child, ast.Try) and any(
                "ImportError" in ast.unparse(h.type) for h in child.handlers if h.type is not None
            )
            visit(child, deferred or nested or guarded)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return eager, lazy


def _requirements(metadata: email.message.Message) -> dict[str, set[str]]:
    """Extra (``""`` for the base) -> canonical names of the distributions it installs,
    with this project's own extras (``lightning-srop[...]``) expanded."""
    direct: dict[str, list[Requirement]] = {"": []}
    for extra in metadata.get_all("Provides-Extra") or []:
        direct[extra] = []
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        extra = next(
            (e for e in direct if e and req.marker and req.marker.evaluate({"extra": e})), ""
        )
        direct[extra].append(req)

    def names(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for req in direct[extra]:
            if canonicalize_name(req.name) == "lightning-srop":
                for sub in req.extras - seen:
                    out |= names(sub, seen | {extra})
            else:
                out.add(canonicalize_name(req.name))
        return out

    return {extra: names(extra) | (names("") if extra else set()) for extra in direct}


@functools.cache
def _providers() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())  # scans every installed dist


def _distributions_of(modules: set[str]) -> dict[str, set[str]]:
    """Third-party module -> canonical names of the installed distributions providing it."""
    providers = _providers()
    third_party = modules - set(sys.stdlib_module_names) - FIRST_PARTY - UNDECLARED_OK
    return {m: {canonicalize_name(d) for d in providers.get(m, [])} for m in sorted(third_party)}


@pytest.mark.parametrize(
    ("files", "eager_in", "lazy_in"),
    [
        ("lightning_srop/**/*.py", ("",), ("", "tensorboard", "wandb", "plots", "pandas", "cli")),
        ("recipes/**/*.py", ("recipes",), ("recipes",)),
        ("tests/*.py", ("test",), ("test",)),
        ("benchmarks/*.py", ("recipes",), ("recipes",)),
    ],
    ids=["package", "recipes", "tests", "benchmarks"],
)
def test_imports_are_declared(
    metadata: email.message.Message,
    files: str,
    eager_in: tuple[str, ...],
    lazy_in: tuple[str, ...],
) -> None:
    """Modules imported at import time come from ``eager_in`` extras ("" is the base), others
    (inside functions or guarded) from ``lazy_in``."""
    requirements = _requirements(metadata)
    eager: set[str] = set()
    lazy: set[str] = set()
    for path in sorted(ROOT.glob(files)):
        file_eager, file_lazy = _imports(path)
        eager |= file_eager
        lazy |= file_lazy
    assert eager, files
    for modules, extras in ((eager, eager_in), (lazy - eager, lazy_in)):
        allowed = set().union(*(requirements[e] for e in extras))
        undeclared = {
            module: dists
            for module, dists in _distributions_of(modules).items()
            if not dists or not dists & allowed
        }
        assert undeclared == {}, f"{files}: imported but not declared in {extras}"


def test_import_scan_sees_lazy_and_guarded_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport numpy as np\n"
        "if TYPE_CHECKING:\n    import pandas\n"
        "try:\n    import triton\nexcept ImportError:\n    pass\n"
        "def f():\n    from PIL import Image\n"
    )
    assert _imports(source) == ({"typing", "numpy"}, {"triton", "PIL"})


# ------------------------------------------------------------------------------------------
# The wheel in a fresh virtual environment, no extras (slow: installs PyTorch)
# ------------------------------------------------------------------------------------------


def _torch_spec() -> list[str]:
    """The ``torch`` requirement of ``TORCH_SPEC`` (environment, else the default of
    scripts/setup_venv.sh: one source for the pinned build)."""
    spec = os.environ.get("TORCH_SPEC")
    if not spec:
        setup = (ROOT / "scripts" / "setup_venv.sh").read_text()
        match = re.search(r'^TORCH_SPEC=\$\{TORCH_SPEC:-"([^"]+)"\}', setup, flags=re.MULTILINE)
        assert match, "scripts/setup_venv.sh: no TORCH_SPEC default"
        spec = match.group(1)
    torch_only = [s for s in spec.split() if canonicalize_name(Requirement(s).name) == "torch"]
    assert torch_only, f"TORCH_SPEC {spec!r} has no torch requirement"
    return torch_only


def _pip(python: Path, *args: str) -> None:
    # --no-compile: byte-compiling all of PyTorch took a third of the install (74 s instead of
    # 131 s on 2 cores); the fit compiles only what it imports.
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *args],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"pip install {args}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def bare_venv(tmp_path_factory: pytest.TempPathFactory, dists: dict[str, Path]) -> Iterator[Path]:
    """The python of a fresh virtual environment with PyTorch and the wheel, no extras."""
    venv = tmp_path_factory.mktemp("bare-venv")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _pip(python, *_torch_spec())
    torch_done = time.perf_counter()
    _pip(python, str(dists["wheel"]))
    print(
        f"bare venv: torch {torch_done - started:.0f} s, "
        f"wheel and dependencies {time.perf_counter() - torch_done:.0f} s"
    )
    yield python


@pytest.mark.slow
def test_wheel_without_extras_in_fresh_venv(bare_venv: Path, tmp_path: Path) -> None:
    missing = subprocess.run(
        [str(bare_venv), "-I", "-c", "import matplotlib"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "No module named 'matplotlib'" in missing.stderr
    result = _run_fit([str(bare_venv), "-I"], tmp_path, "csv")
    assert Path(result["srop_file"]).is_relative_to(bare_venv.parent.parent)  # the wheel's copy
    assert result["matplotlib"] is False and result["logger"] == "CSVLogger"
    notices: list[str] = result["notices"]
    assert len(notices) == len(set(notices)), notices  # each notice once in two epochs
    assert len([n for n in notices if "matplotlib" in n]) <= 1
    assert "Traceback" not in result["output"]
    _check_srop_columns(tmp_path / "csv" / "version_0" / "metrics.csv", epochs=2)
