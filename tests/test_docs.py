"""The docs build into a site (strict: broken links and bad references fail), and the README
names the commands that CI and newcomers run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,  # a hung build fails here instead of stalling the suite
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    for name in (
        "spectral_rolloff",
        "SROPStatistics",
        "SROPCallback",
        "LayerReport",
        "SROPOptions",
        "SROPReport",
        "read_tensorboard",
        "plot_over_epochs",
        "SROPWarning",
        "SROPEngine",
    ):
        assert name in api, name
    assert (site / "images" / "srop_summary.png").is_file()
    pages = {p.relative_to(site): p.read_text() for p in site.rglob("*.html")}
    # Sphinx roles of the docstrings were rewritten (docs/hooks/sphinx_roles.py)
    for page, html in pages.items():
        raw = re.findall(r":(?:class|func|meth|attr|data|mod|math):`", html)
        assert not raw, (page, raw[:3])
    # math rendered at build time by KaTeX (docs/hooks/katex_math.py), none left for a script
    srop = pages[Path("srop") / "index.html"]
    assert srop.count('class="katex"') >= 10 and 'class="arithmatex"' not in srop
    assert 'class="katex"' in api  # :math: roles of docstrings
    assert not any('class="arithmatex"' in html for html in pages.values())
    assert (site / "javascripts" / "katex" / "katex.min.css").is_file()
    # cross-references instead of roles: a link to the documented SROPReport class
    assert 'href="#lightning_srop.report.SROPReport"' in api
    # the new pages, their screenshots and the changelog included from CHANGELOG.md
    dashboards = pages[Path("dashboards") / "index.html"]
    for image in ("time_series", "histograms", "images"):
        assert f"images/tensorboard_{image}.png" in dashboards
        assert (site / "images" / f"tensorboard_{image}.png").is_file()
    quickstart = pages[Path("quickstart") / "index.html"]
    assert "lightning_srop.SROPCallback" in quickstart and "torch.nn.Conv2d" in quickstart
    changelog = (ROOT / "CHANGELOG.md").read_text().splitlines()[2]
    assert changelog.split("[")[0].strip() in pages[Path("changelog") / "index.html"]
    assert "Spectral Roll-off Points Variations" in pages[Path("citation") / "index.html"]
    # every fence renders as code, "```python notest" (tests/test_docs_examples.py) included
    for page, html in pages.items():
        assert "```" not in html, page
    assert "ResNet18_Weights" in pages[Path("profile") / "index.html"]
    # no reference to notes that are not part of the repository
    for page, html in pages.items():
        assert "SPEC.md" not in html and "PERF_NOTES" not in html, page
    # no Markdown or reST left literal in the rendered text (code excluded): a list after a
    # code block that did not become a list, ``double backticks`` of a docstring whose bare
    # "\n" broke it apart, **bold** that did not render
    for page, html in pages.items():
        assert not re.search(r"^- <strong>|<p>- ", html, re.M), page
        text = re.sub(r"<(pre|code|script|style|textarea)\b.*?</\1>", " ", html, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", text)
        literal = re.findall(r".{0,40}(?:``|\*\*\w|\w\*\*|^\s*- \*\*).{0,40}", text, re.M)
        assert literal == [], (page, literal[:3])
    # the hero figure and the MLflow screenshot that the pages show
    assert (site / "images" / "mlflow_run.png").is_file()
    assert "images/mlflow_run.png" in pages[Path("dashboards") / "index.html"]
    assert "hero_figure.py" in pages[Path("index.html")]


def test_sphinx_roles_are_rewritten() -> None:
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        from sphinx_roles import rewrite
    finally:
        sys.path.pop(0)
    text = rewrite(
        ":class:`~lightning_srop.report.SROPReport`, :func:`torch.fft.fft2`, "
        ":meth:`SROPReport.to_json`, :math:`\\kappa E`"
    )
    assert text == (
        '<autoref identifier="lightning_srop.report.SROPReport" optional>'
        "<code>SROPReport</code></autoref>, `torch.fft.fft2()`, "
        "`SROPReport.to_json()`, $\\kappa E$"
    )


def test_readme_commands_exist_and_ci_calls_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    # install first: pip install (with extras) before the clone-only commands, said to need one
    for page in (readme, (ROOT / "docs" / "index.md").read_text()):
        demo = page.index("\nbash scripts/demo.sh")  # the command, in its code block
        assert page.index('pip install ".[') < demo
        assert "clone" in page[page.rindex("\n## ", 0, demo) : demo]
    assert (ROOT / "scripts" / "hero_figure.py").is_file()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert (ROOT / "docs" / "images" / "srop_summary.png").is_file()


# ------------------------------------------------------------------------------------------
# Docs that agree with the code, render as written, fit the page and name their packages
# ------------------------------------------------------------------------------------------

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n]*)$", re.M)


def _blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """``(info, first line number, lines)`` of every fenced block of a Markdown page."""
    blocks: list[tuple[str, int, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, info, body = match["fence"], match["info"].strip(), []
        start = i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(match["indent"]) :])
            i += 1
        blocks.append((info, start + 1, body))
        i += 1
    return blocks


def _prose(text: str) -> str:
    """A page without its fenced blocks."""
    lines = text.splitlines()
    keep, inside = [], None
    for line in lines:
        match = FENCE.match(line)
        if match is not None:
            inside = None if inside is not None else match["fence"]
            continue
        if inside is None:
            keep.append(line)
    return "\n".join(keep)


#: Code a reader types or copies (not program output, which is shown as printed).
TYPED = ("python", "python notest", "bash", "console", "yaml")
#: Characters of code that fit beside the copy button at 1280 px (docs/stylesheets/extra.css).
CODE_WIDTH = 88


def test_code_lines_fit_the_page_width() -> None:
    long = [
        f"{page.relative_to(ROOT)}:{start + k}: {len(line)} characters"
        for page in PAGES
        for info, start, body in _blocks(page.read_text())
        if info in TYPED
        for k, line in enumerate(body)
        if len(line) > CODE_WIDTH
    ]
    assert long == [], long


#: A module imported by a docs example -> words of which the page's prose must name one (the
#: extra that installs it, or the package).
NEEDS = {
    "timm": ("backbones", "timm"),
    "transformers": ("backbones", "transformers"),
    "torchvision": ("backbones", "torchvision", "cli"),
    "lightning_srop.data": ("scikit-learn", "cli"),
    "mlflow": ("mlflow",),
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow",),
    "wandb": ("wandb",),
    "pandas": ("pandas",),
    "matplotlib": ("plots", "matplotlib"),
    "tensorboard": ("tensorboard",),
}
IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w, ()]+)|import\s+([\w.]+))", re.M)


def _imported(code: str) -> set[str]:
    found: set[str] = set()
    for module, names, plain in IMPORT.findall(code):
        name = module or plain
        found |= {name, name.split(".")[0]}
        found |= {f"{module}.{n.strip(' ()')}" for n in names.split(",") if module}
    return found


def test_examples_name_the_packages_they_need() -> None:
    missing = []
    for page in PAGES:
        text = page.read_text()
        prose = _prose(text).lower()
        code = "\n".join("\n".join(b) for i, _, b in _blocks(text) if i.startswith("python"))
        for module in sorted(_imported(code) & set(NEEDS)):
            if not any(word in prose for word in NEEDS[module]):
                missing.append(
                    f"{page.relative_to(ROOT)}: imports {module}, names none of {NEEDS[module]}"
                )
    assert missing == [], missing
    # and the extras named exist
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in ("backbones", "mlflow", "cli", "plots", "tensorboard", "wandb", "pandas"):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), extra


def test_pages_whose_blocks_continue_say_so() -> None:
    # A page whose later blocks use names defined only by an earlier block says that its
    # blocks continue one session (tests/test_docs_examples.py runs them that way).
    backbones = _prose((ROOT / "docs" / "backbones.md").read_text())
    assert "continue one Python session" in backbones
    assert "runs as written" not in backbones


#: Claims the code contradicts, with the behaviour that contradicts them
#: (test_token_and_tuple_outputs_are_measured).
STALE = [
    re.compile(r"token[s]?( and tuple)? outputs are skipped", re.I),
    re.compile(r"read as tokens[^.]*are skipped", re.I),
    re.compile(r"tuple outputs are skipped", re.I),
    re.compile(r"\(`1 x 1` maps, tokens\)", re.I),
    re.compile(r"both figures", re.I),
]


def test_no_page_repeats_a_claim_the_code_contradicts() -> None:
    found = [
        f"{page.relative_to(ROOT)}: {m.group(0)!r}"
        for page in PAGES
        for pattern in STALE
        for m in pattern.finditer(" ".join(page.read_text().split()))
    ]
    assert found == [], found


def test_token_and_tuple_outputs_are_measured() -> None:
    """The behaviour the stale claims denied: a transformer block's tokens and a tuple output
    are measured as maps (so "tokens are skipped" cannot be written in the docs)."""
    import torch
    from torch import nn

    from lightning_srop import profile

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.attn(x, x, x, need_weights=False)[0]

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.conv(x), None

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 16, 4, stride=4)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grid = self.patch(x)
            tokens = grid.flatten(2).transpose(1, 2)
            for block in self.blocks:
                tokens = block(tokens)
            maps = tokens.transpose(1, 2).reshape(grid.shape)
            return self.pair(maps)[0]

    torch.manual_seed(0)
    report = profile(
        Tiny(), torch.randn(2, 3, 32, 32), layers=["blocks.0", "blocks.1", "pair"], grid=(8, 8)
    )
    assert report.names == ["blocks.0", "blocks.1", "pair"], report.skipped
    assert report["blocks.0"].meta.layout == "tokens"
    assert report["blocks.0"].meta.map_size == (8, 8)
    assert report["pair"].meta.map_size == (8, 8)
    assert int(report["pair"].stats["count"]) == 2 * 16
