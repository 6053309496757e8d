"""The example pipelines and the data they read, for a console whose server has none yet.

Pipelines go to any server through its API (``PUT /api/v1/pipelines/{name}``); their data
files (``sales.csv``, ``article.md``) can only be copied where the console can write the
server's data directory: a local-process cluster's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mimir.core.resources import example_data_dir, pipelines_dir

__all__ = ["copy_example_data", "example_pipelines"]


def example_pipelines() -> list[tuple[str, str]]:
    """``(name, YAML text)`` of each example pipeline, by file name."""
    folder = pipelines_dir()
    return [
        (path.stem, path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("*.yaml"))
        if path.is_file()
    ]


def copy_example_data(data_dir: Path) -> list[str]:
    """Copy the examples' data files into ``data_dir`` (none already there is replaced);
    the names copied."""
    source = example_data_dir()
    copied: list[str] = []
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = data_dir / path.relative_to(source)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(str(path.relative_to(source)))
    return copied
