"""Every ```python block of README.md and docs/*.md runs as written.

Sybil parses the pages; a page's blocks run in order in one namespace (what a reader gets by
pasting them one after the other into one interpreter), in a temporary working directory so
that logs and files they write stay out of the repository. A block that cannot run here (a
GPU, the internet) says so in its info string: ```python notest. Any other word after
``python`` fails, so a typo cannot silently skip a block. New pages are picked up by the glob.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from sybil import Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
NOTEST = "notest"

# Only blocks whose info string is exactly "python" run; "python notest" is skipped.
SYBIL = Sybil(parsers=[CodeBlockParser(language="python", evaluator=PythonEvaluator())])
FENCE = re.compile(r"^[ \t]*(?:`{3,}|~{3,})[ \t]*(\S[^\n]*)$", re.MULTILINE)
PYTHON_INFO = re.compile(r"(?:py|python|python3|pycon)(?:\s|$)")


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _visible_files() -> list[str]:
    """Entries of the repository root and docs/ (not hidden tool caches such as .ruff_cache)."""
    return sorted(
        p.relative_to(ROOT).as_posix()
        for folder in (ROOT, ROOT / "docs")
        for p in folder.iterdir()
        if not p.name.startswith(".")
    )


def _python_infos(page: Path) -> list[str]:
    return [
        info.strip()
        for info in FENCE.findall(page.read_text(encoding="utf-8"))
        if PYTHON_INFO.match(info.strip())
    ]


def test_every_page_is_collected() -> None:
    names = {_page_id(page) for page in PAGES}
    assert {"README.md", "docs/index.md", "docs/quickstart.md", "docs/profile.md"} <= names
    runnable = [page for page in PAGES if "python" in _python_infos(page)]
    assert len(runnable) >= 6, [_page_id(page) for page in runnable]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_blocks_are_marked_run_or_notest(page: Path) -> None:
    # Sybil would also run code hidden in HTML comments; examples are visible, or not run
    assert "invisible-code" not in page.read_text(encoding="utf-8"), _page_id(page)
    for info in _python_infos(page):
        assert info in ("python", f"python {NOTEST}"), (
            f"{_page_id(page)}: a fence with info string {info!r}; write ```python for a "
            f"block that runs, ```python {NOTEST} for one that cannot run in the tests"
        )


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _visible_files()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    document = SYBIL.parse(page)
    examples = list(document)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CI core: more threads only stall these small models
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on workers and small data
            for example in examples:
                example.evaluate()
    finally:
        torch.set_num_threads(threads)
    assert _visible_files() == before, "a docs example wrote into the repository"
