"""MkDocs hooks (``hooks:`` in mkdocs.yml): the benchmark figures, which live outside docs/.

docs/benchmarks.md shows the figures ``make bench`` writes to ``bench/results/*.png`` with
links such as ``../bench/results/summary.png``, which work where the repository is read
as files. A site is built from docs/ only, so this hook adds those figures to the site
as ``bench/results/<name>.png`` and points the pages' links there. A link to a figure
that does not exist is left as it is, and the strict build reports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

#: The figures' folder, relative to the repository root (the folder of mkdocs.yml).
FIGURES = "bench/results"


def _figures_dir(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent / FIGURES


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add every ``bench/results/*.png`` to the site, under the same path."""
    folder = _figures_dir(config)
    for figure in sorted(folder.glob("*.png")):
        files.append(File.generated(config, f"{FIGURES}/{figure.name}", abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files, **kwargs: Any) -> str:
    """Point links to ``<repository>/bench/results/*.png`` at the copies added by :func:`on_files`."""
    depth = page.file.src_uri.count("/")
    outside = re.escape("../" * (depth + 1) + FIGURES + "/")
    inside = "../" * depth + FIGURES + "/"
    return re.sub(rf"\]\({outside}([^)\s]+\.png)\)", rf"]({inside}\1)", markdown)
