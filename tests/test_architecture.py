"""The layer contracts of STYLE.md hold, and every package is listed for installation."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_hold() -> None:
    # Run exactly as `make lint` does: from the root, against the installed packages.
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_import_linter_sees_every_package_of_code() -> None:
    """A package missing from root_packages would stand outside every contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    with_code = {
        package
        for package, folder in config["setuptools"]["package-dir"].items()
        if (ROOT / folder / "__init__.py").is_file()
        and any(path.name != "__init__.py" for path in (ROOT / folder).rglob("*.py"))
    }
    assert with_code == set(config["importlinter"]["root_packages"])


def test_every_python_package_is_installed() -> None:
    """A package directory missing from pyproject would vanish from ``pip install .``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            parts = [] if str(relative) == "." else list(relative.parts)
            found.add(".".join([package, *parts]))
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_dispatcher_lists_commands_without_importing_them() -> None:
    code = (
        "import sys; from mimir.core.cli import main; main(['--help']);"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'PySide6', 'fastapi', 'docker', 'qasync', 'pyqtgraph'}];"
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "worker" in result.stdout and "server" in result.stdout
