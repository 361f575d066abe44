"""The documentation site builds with ``mkdocs build --strict``: every link, anchor and page resolves.

mkdocs is a test dependency (requirements-dev.txt); without it these tests fail, they do
not skip. ``test_a_broken_link_fails_the_build`` proves the build test can fail: a copy of
the docs that builds, with one link broken, must not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
DOCS_DIR = REPO_DIR / "docs"
CONFIG = REPO_DIR / "mkdocs.yml"
#: Figures the hook in mkdocs.yml adds to the site (tools/mkdocs_hooks.py).
FIGURES = Path("bench") / "results"
SVG = "{http://www.w3.org/2000/svg}"


def build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m mkdocs build --strict`` of ``config`` into ``site_dir``, output captured."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2.0
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site_dir),
        ],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def warnings_of(result: subprocess.CompletedProcess[str]) -> str:
    """The build's WARNING and ERROR lines (with their indented continuations), or its whole output if none."""
    output = result.stdout + result.stderr
    lines: list[str] = []
    in_warning = False
    for line in output.splitlines():
        if line.startswith(("WARNING", "ERROR")):
            in_warning = True
        elif not line.startswith(" "):
            in_warning = False
        if in_warning:
            lines.append(line)
    return "\n".join(lines) or output


def copy_project(target: Path) -> Path:
    """Copy what the build reads (mkdocs.yml, docs/, its hooks, the figures) to ``target``; the copy's config."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(CONFIG, target / "mkdocs.yml")
    shutil.copytree(DOCS_DIR, target / "docs")
    import yaml  # installed with mkdocs

    for hook in yaml.safe_load(CONFIG.read_text()).get("hooks", []):
        (target / hook).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_DIR / hook, target / hook)
    (target / FIGURES).mkdir(parents=True)
    for figure in (REPO_DIR / FIGURES).glob("*.png"):
        shutil.copy2(figure, target / FIGURES / figure.name)
    return target / "mkdocs.yml"


def test_mkdocs_is_installed() -> None:
    result = subprocess.run([sys.executable, "-m", "mkdocs", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"mkdocs is missing: pip install -r requirements-dev.txt\n{result.stderr}"


def test_docs_build_strict(tmp_path: Path) -> None:
    result = build(CONFIG, tmp_path / "site")

    assert result.returncode == 0, f"mkdocs build --strict failed:\n{warnings_of(result)}"
    assert (tmp_path / "site" / "topology" / "index.html").is_file()
    assert (tmp_path / "site" / "topology.svg").is_file()


@pytest.fixture(scope="module")
def intact_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's docs that builds (so a failure of a broken copy is the broken link's)."""
    copy = tmp_path_factory.mktemp("docs") / "project"
    config = copy_project(copy)
    result = build(config, copy.parent / "site")
    assert result.returncode == 0, f"the unbroken copy does not build:\n{warnings_of(result)}"
    return copy


@pytest.mark.parametrize(
    ("page", "link", "broken"),
    [
        ("index.md", "(topology.md)", "(no-such-page.md)"),
        ("configuration.md", "(architecture.md#the-control-to-region-hop)", "(architecture.md#no-such-heading)"),
        ("topology.md", "(topology.svg)", "(no-such-figure.svg)"),
    ],
    ids=["page", "anchor", "figure"],
)
def test_a_broken_link_fails_the_build(intact_copy: Path, tmp_path: Path, page: str, link: str, broken: str) -> None:
    copy = shutil.copytree(intact_copy, tmp_path / "project")
    source = copy / "docs" / page
    text = source.read_text()
    assert link in text, f"docs/{page} no longer has the link {link}: pick another one for this test"
    source.write_text(text.replace(link, broken, 1))

    result = build(copy / "mkdocs.yml", tmp_path / "site")

    assert result.returncode != 0, f"mkdocs build --strict passed with the link {broken} in docs/{page}"
    assert broken.strip("()") in warnings_of(result)


def test_svg_figures_are_well_formed() -> None:
    figures = sorted(DOCS_DIR.rglob("*.svg"))
    assert figures, "docs/ has no SVG figure (docs/topology.svg)"
    for figure in figures:
        root = ElementTree.parse(figure).getroot()  # a figure of this repository, not untrusted input
        assert root.tag == f"{SVG}svg", f"{figure.name}: the root element is {root.tag}"
        assert root.get("viewBox"), f"{figure.name}: no viewBox, so it does not scale"
        assert root.find(f"{SVG}title") is not None, f"{figure.name}: no <title> for screen readers"
        texts = [text.text for text in root.iter(f"{SVG}text") if text.text and text.text.strip()]
        assert texts, f"{figure.name}: no text"
        referenced = [
            page for page in DOCS_DIR.rglob("*.md") if re.search(rf"\({re.escape(figure.name)}\)", page.read_text())
        ]
        assert referenced, f"{figure.name} is not shown on any page"
