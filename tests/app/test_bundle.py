"""The PyInstaller bundle: build it from mimir.spec, then run it as a user without Debian's
Redis would (PATH without redis-server: the bundle's own must do).

Slow (minutes; the first run also makes build/bundle-venv): marked ``bundle`` so it runs
apart from the fast suite (``-m bundle``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bundle, pytest.mark.slow]

#: Issue 13: 306 MB as it was, 262 MB trimmed by hand; the spec and the build go further.
#: Megabytes as du -sh counts them (MiB), of the files' own sizes.
MAX_BUNDLE_MB = 220


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/mimir of a fresh build (packaging/build-console.sh, from build/bundle-venv)."""
    tmp = tmp_path_factory.mktemp("bundle")
    dist, work = tmp / "dist", tmp / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env.update(DIST_DIR=str(dist), WORK_DIR=str(work))
    build = subprocess.run(
        [str(ROOT / "packaging" / "build-console.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    program = dist / "mimir" / "mimir"
    assert program.is_file()
    return dist / "mimir"


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """No project settings and no redis-server on PATH (an empty bin folder only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"}
    (tmp_path / "bin").mkdir()
    env.update(
        PATH=str(tmp_path / "bin"),
        QT_QPA_PLATFORM="offscreen",
        MIMIR_STATE_DIR=str(tmp_path / "state"),
        MIMIR_DATA_DIR=str(tmp_path / "data"),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
    )
    yield env


def _size_mb(folder: Path) -> float:
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_dir()) / 2**20


@pytest.mark.timeout(1800)
def test_the_bundle_is_small_and_its_libraries_all_resolve(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = _size_mb(bundle)
    with capsys.disabled():
        print(f"\nbundle {bundle}: {size:.1f} MiB (limit {MAX_BUNDLE_MB} MiB)")
    assert size <= MAX_BUNDLE_MB
    internal = bundle / "_internal"
    # What the trim must have left out, and what it must have kept.
    for gone in ("PySide6/Qt/translations", "PySide6/Qt/lib/libQt6Quick.so.6",
                 "PySide6/Qt/lib/libQt6Pdf.so.6", "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
                 "PySide6/Qt/plugins/imageformats/libqjpeg.so",
                 "mypy", "pytest", "pygments"):  # fmt: skip
        assert not (internal / gone).exists(), gone
    for kept in ("PySide6/Qt/plugins/platforms/libqxcb.so",
                 "PySide6/Qt/plugins/platforms/libqoffscreen.so", "bin/redis-server",
                 "mimir/resources/styles/dark.qss", "mimir/resources/pipelines/test_pipeline.yaml",
                 "mimir/packaging/Dockerfile.backend"):  # fmt: skip
        assert (internal / kept).exists(), kept
    # No library the trim dropped is still wanted: every ELF file's DT_NEEDED resolves in the
    # bundle (the bootloader puts _internal on LD_LIBRARY_PATH) or on the system.
    unresolved = []
    for path in sorted(internal.rglob("*.so*")):
        if path.is_symlink() or not path.is_file():
            continue
        done = subprocess.run(
            ["ldd", str(path)],
            env={"LD_LIBRARY_PATH": str(internal)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        unresolved += [f"{path.relative_to(internal)}: {line.strip()}"
                       for line in done.stdout.splitlines() if "not found" in line]  # fmt: skip
    assert unresolved == []


def test_the_console_smoke_runs_styled_with_the_bundles_own_redis(
    bundle: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    smoke = subprocess.run(
        [str(bundle / "mimir"), "--smoke"],
        env=user_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = smoke.stdout + smoke.stderr
    assert smoke.returncode == 0, output[-4000:]
    assert "smoke: window shown, cluster up" in output
    assert "stylesheet not found" not in output, output[-4000:]


def test_server_embedded_starts_the_bundles_redis_and_workers(
    bundle: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(bundle / "mimir"), "server", "--embedded", "--port", str(port), "--workers", "1"],
        env=user_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                return answer.status_code == 200 and answer.json().get("redis") == "ok"
            except httpx.HTTPError:
                return server.poll() is not None  # ended: fail below with its output

        wait_until(healthy, timeout=90, interval=0.2, message="the bundle's server")
        assert server.poll() is None
        pid = int((tmp_path / "state" / "embedded-redis" / "redis.pid").read_text())
        executable = os.readlink(f"/proc/{pid}/exe")
        assert executable == str(bundle / "_internal" / "bin" / "redis-server")
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output[-4000:]
    assert re.search(r"Embedded Redis at redis://127\.0\.0\.1:\d+/0", output), output[-4000:]


def test_the_pdf_and_excel_example_runs_without_pillow(
    bundle: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    """The spec leaves Pillow out (fpdf2 needs it only for images): Output.pdf still works."""
    data = Path(user_env["MIMIR_DATA_DIR"])
    data.mkdir()
    shutil.copy(ROOT / "resources" / "data" / "sales.csv", data)
    done = subprocess.run(
        [
            str(bundle / "mimir"),
            "run",
            str(ROOT / "resources" / "pipelines" / "sales_report_pdf.yaml"),
        ],
        env=user_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Pillow" not in done.stderr, done.stderr[-2000:]
    assert (data / "reports" / "sales_summary.pdf").read_bytes().startswith(b"%PDF-")
    assert (data / "reports" / "sales.xlsx").is_file()


def test_the_headless_commands_ride_along(bundle: Path, user_env: dict[str, str]) -> None:
    for command in (["worker", "--help"], ["server", "--help"], ["cluster", "--help"]):
        answer = subprocess.run(
            [str(bundle / "mimir"), *command],
            env=user_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert answer.returncode == 0, (command, answer.stdout[-2000:], answer.stderr[-2000:])


@pytest.mark.docker
def test_cluster_build_from_the_bundle_refuses_and_says_where_to_build(
    bundle: Path, user_env: dict[str, str]
) -> None:
    from mimir.app.cluster.selection import docker_engine_answers

    # `make test` starts dockerd (scripts/system-deps.sh): no engine is a broken setup.
    assert docker_engine_answers(), "no Docker engine answers: run scripts/system-deps.sh as root"
    before = sorted(p.relative_to(bundle) for p in bundle.rglob("*"))
    answer = subprocess.run(
        [str(bundle / "mimir"), "cluster", "build", "--backend", "docker"],
        env={**user_env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = answer.stdout + answer.stderr
    assert answer.returncode == 1, output[-3000:]
    assert "this bundle cannot build images" in output and "source checkout" in output, output
    assert "No module named pip" not in output
    assert sorted(p.relative_to(bundle) for p in bundle.rglob("*")) == before  # nothing written
