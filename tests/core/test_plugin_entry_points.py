"""A third-party plugin installed through the ``mimir.plugins`` entry-point group.

The test writes a real distribution (a module plus its ``.dist-info`` with
``entry_points.txt``) into a directory that it puts on the path, exactly as an
installed package looks to :mod:`importlib.metadata`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimir.core.engine import execute_pipeline
from mimir.core.pipeline import load_pipeline
from mimir.core.plugins import PluginRegistry
from mimir.core.plugins.builtin import BUILTIN_PLUGINS

PLUGIN_MODULE = """
from pydantic import Field

from mimir.core.plugins.base import Plugin, PluginConfig


class ShoutConfig(PluginConfig):
    text: str = Field(description="What to shout.")


class ShoutPlugin(Plugin[ShoutConfig]):
    plugin_type = "Acme"
    plugin_name = "shout"
    description = "Upper-case the text (a third-party plugin)."
    config_model = ShoutConfig

    async def run(self, config, run):
        return config.text.upper() + "!"
"""


def _install(site: Path, *, broken: bool = False) -> None:
    (site / "acme_mimir_shout.py").write_text(PLUGIN_MODULE)
    dist = site / "acme_mimir_shout-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-mimir-shout\nVersion: 1.0\n")
    entries = "[mimir.plugins]\nshout = acme_mimir_shout:ShoutPlugin\n"
    if broken:
        entries += "missing = acme_mimir_nothing_here:Plugin\n"
    (dist / "entry_points.txt").write_text(entries)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` holding the installed third-party distribution."""
    path = tmp_path / "site"
    path.mkdir()
    _install(path, broken=True)
    monkeypatch.syspath_prepend(str(path))
    yield path
    sys.modules.pop("acme_mimir_shout", None)


def _registry() -> PluginRegistry:
    registry = PluginRegistry()
    for plugin_class in BUILTIN_PLUGINS:
        registry.register(plugin_class)
    registry.load_entry_points()
    return registry


def test_an_installed_plugin_joins_the_registry_and_runs(site: Path, data_dir: Path) -> None:
    registry = _registry()
    assert "Acme.shout" in registry
    assert registry.get("Acme.shout").description.startswith("Upper-case the text")
    # A broken entry point is recorded, and the others still load.
    assert "missing" in registry.load_errors
    assert "ModuleNotFoundError" in registry.load_errors["missing"]

    pipeline = load_pipeline(
        {
            "name": "p",
            "steps": [
                {
                    "name": "s",
                    "plugin": "Acme.shout",
                    "config": {"text": "{{ who }}"},
                    "output": "o",
                }
            ],
        },
        registry=registry,
    )
    result = asyncio.run(
        execute_pipeline(pipeline, {"who": "mimir"}, data_dir=data_dir, registry=registry)
    )
    assert result.success and result.context["o"] == "MIMIR!"


def test_without_the_distribution_the_plugin_is_unknown() -> None:
    assert "Acme.shout" not in _registry()


def test_mimir_plugins_lists_it_with_its_schema(site: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run(
        [sys.executable, "-m", "mimir.core.cli", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    plugins = {p["name"]: p for p in json.loads(done.stdout)["plugins"]}
    assert plugins["Acme.shout"]["type"] == "Acme"
    assert plugins["Acme.shout"]["config_schema"]["required"] == ["text"]
    assert "entry point 'missing' not loaded" in done.stderr
    table = subprocess.run(
        [sys.executable, "-m", "mimir.core.cli", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert any(
        line.split()[:1] == ["Acme.shout"] and "third-party" in line
        for line in table.stdout.splitlines()
    ), table.stdout
