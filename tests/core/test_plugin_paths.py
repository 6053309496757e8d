"""Every file plugin refuses paths that leave the data directory, before touching anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.core.plugin_harness import StepFailed, run_plugin

INPUTS = ["Input.csv", "Input.json", "Input.xml", "Input.markdown", "Input.excel"]
OUTPUTS = ["Output.json", "Output.csv", "Output.html", "Output.excel", "Output.pdf"]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the data directory, with a file in it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("a,b\n1,2\n")
    return path


def _config(plugin: str, file_path: str) -> dict[str, Any]:
    config: dict[str, Any] = {"file_path": file_path}
    if plugin.startswith("Output."):
        config["input"] = [{"a": 1}]
    return config


@pytest.mark.parametrize("plugin", INPUTS + OUTPUTS)
def test_dot_dot_is_refused(plugin: str, data_dir: Path, outside: Path) -> None:
    with pytest.raises(StepFailed, match=r"file path '\.\./outside/secret\.txt' contains '\.\.'"):
        run_plugin(plugin, _config(plugin, "../outside/secret.txt"), data_dir)
    assert (outside / "secret.txt").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("plugin", INPUTS + OUTPUTS)
def test_absolute_path_outside_is_refused(plugin: str, data_dir: Path, outside: Path) -> None:
    target = str(outside / "secret.txt")
    with pytest.raises(StepFailed, match=r"is outside the data directory"):
        run_plugin(plugin, _config(plugin, target), data_dir)
    assert (outside / "secret.txt").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("plugin", INPUTS + OUTPUTS)
def test_symlink_out_is_refused(plugin: str, data_dir: Path, outside: Path) -> None:
    os.symlink(outside / "secret.txt", data_dir / "link.txt")
    os.symlink(outside, data_dir / "linkdir")
    for path in ("link.txt", "linkdir/secret.txt", "linkdir/new.txt"):
        with pytest.raises(StepFailed, match=r"leads \(through a symlink\) outside"):
            run_plugin(plugin, _config(plugin, path), data_dir)
    assert (outside / "secret.txt").read_text() == "a,b\n1,2\n"
    assert not (outside / "new.txt").exists()


@pytest.mark.parametrize("plugin", OUTPUTS)
def test_absolute_path_inside_the_data_dir_is_allowed(plugin: str, data_dir: Path) -> None:
    out = run_plugin(plugin, _config(plugin, str(data_dir / "ok" / "file.out")), data_dir)
    assert out["file_path"] == "ok/file.out"
    assert (data_dir / "ok" / "file.out").is_file()


def test_symlink_that_stays_inside_is_followed(data_dir: Path) -> None:
    (data_dir / "real.json").write_text('{"x": 1}')
    os.symlink(data_dir / "real.json", data_dir / "alias.json")
    assert run_plugin("Input.json", {"file_path": "alias.json"}, data_dir) == {"x": 1}
