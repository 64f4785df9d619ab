"""The documentation: a short README that points into a MkDocs site built from ``docs/`` with
``--strict`` (a broken link or anchor, or a page left out of the navigation, fails the build)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip


def test_the_readme_stays_short_and_gives_the_ci_test_command():
    readme = (PROJECT_DIR / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make test" in readme and "make test" in (PROJECT_DIR / ".ci" / "run").read_text()
    # Every page it lists exists.
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (PROJECT_DIR / target).is_file(), target


def test_the_site_builds_strictly(tmp_path):
    out = _build(PROJECT_DIR, tmp_path / "site")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.parametrize(
    "breakage",
    [
        ("approval.md", "\n\nSee [the policy](authority.md#no-such-heading).\n"),  # a dead anchor
        ("approval.md", "\n\nSee [the page](no-such-page.md).\n"),  # a dead page
        ("orphan.md", "# A page nobody links to\n"),  # left out of the navigation
    ],
)
def test_a_broken_link_or_an_orphan_page_fails_the_build(tmp_path, breakage):
    root = tmp_path / "copy"
    shutil.copytree(PROJECT_DIR / "docs", root / "docs")
    shutil.copy(PROJECT_DIR / "mkdocs.yml", root / "mkdocs.yml")
    name, text = breakage
    with open(root / "docs" / name, "a") as handle:
        handle.write(text)
    out = _build(root, tmp_path / "site")
    assert out.returncode != 0, out.stderr[-2000:]
