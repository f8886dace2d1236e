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
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert (ROOT / "docs" / "images" / "srop_summary.png").is_file()
