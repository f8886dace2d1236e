"""The docs build into a site (strict: broken links and bad references fail), and the README
names the commands that CI and newcomers run."""

from __future__ import annotations

import os
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
    for name in ("spectral_rolloff", "SROPStatistics", "SROPCallback", "LayerReport"):
        assert name in api, name
    assert (site / "images" / "srop_summary.png").is_file()


def test_readme_commands_exist_and_ci_calls_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert (ROOT / "docs" / "images" / "srop_summary.png").is_file()
