"""The systemd units in ``packaging/systemd``: checked by ``systemd-analyze verify``, and
their command lines run the way systemd would run them, as far as a host without systemd
as PID 1 allows.

What is checked: the unit files' syntax, every setting's value, that ExecStart's binary
exists and is executable (``verify`` does that; the units are rendered with ExecStart
pointing at this checkout's ``.venv/bin/mimir``); that the server's and a worker's real
command lines, with the units' environment, serve requests and run jobs under
``MemoryDenyWriteExecute=`` (its seccomp rules, installed by ``tests/mdwe_exec.py``), make
only system calls in ``@system-service`` (traced with strace), and stop cleanly on SIGTERM
within ``TimeoutStopSec=``. What is not: the sandbox as a whole (``ProtectSystem=``, the
``mimir`` user, ``StateDirectory=``, namespaces, the address-family filter): that needs
systemd as PID 1 (``systemd-run`` and ``systemctl`` cannot work here).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.core.plugin_harness import stub_server
from tests.helpers import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "packaging" / "systemd"
UNIT_NAMES = ("mimir-server.service", "mimir-worker@.service")
INSTALLED = "/opt/mimir/venv/bin/mimir"
MIMIR = Path(sys.executable).parent / "mimir"
MDWE_EXEC = ROOT / "tests" / "mdwe_exec.py"


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/system-deps.sh)")
    return path


def _render(directory: Path, text_by_name: dict[str, str]) -> list[Path]:
    """Write units into ``directory`` with ExecStart at this checkout's ``mimir``."""
    paths = []
    for name, text in text_by_name.items():
        path = directory / name
        path.write_text(text.replace(INSTALLED, str(MIMIR)))
        paths.append(path)
    return paths


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    # --man=no: no man pages here to look Documentation= up in. SYSTEMD_LOG_LEVEL keeps
    # every warning; SYSTEMD_PAGER off for a plain pipe.
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_PAGER": "", "LC_ALL": "C"}
    return subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=paths[0].parent,
    )


def _complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Lines of ``verify`` output about our units (it may also mention the host's)."""
    text = result.stdout + result.stderr
    mentions = ("mimir-server", "mimir-worker", str(MIMIR))
    return [line for line in text.splitlines() if any(m in line for m in mentions)]


@pytest.fixture(scope="module")
def units() -> dict[str, str]:
    return {name: (UNITS / name).read_text() for name in UNIT_NAMES}


# --------------------------------------------------------------------------- verify


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path, units: dict[str, str]) -> None:
    assert MIMIR.exists(), f"{MIMIR} is missing (pip install -e .)"
    for text in units.values():
        assert f"ExecStart={INSTALLED} " in text  # the documented install path
    paths = _render(tmp_path, units)
    result = _verify(paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _complaints(result) == [], result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("ProtectSystem=strict", "ProtectSystem=strikt"), "Failed to parse protect system value"),
        (("NoNewPrivileges=yes", "NoNewPrivilege=yes"), "Unknown key 'NoNewPrivilege'"),
        (("AF_UNIX", "AF_UNIKS"), "Failed to parse address family"),
        (
            ("SystemCallFilter=@system-service", "SystemCallFilter=@system-servise"),
            "system-servise",
        ),
        ((f"ExecStart={INSTALLED}", "ExecStart=/nonexistent/mimir"), "is not executable"),
    ],
)
def test_verify_catches_a_broken_unit(
    tmp_path: Path, units: dict[str, str], change: tuple[str, str], expected: str
) -> None:
    old, new = change
    broken = {name: text.replace(old, new) for name, text in units.items()}
    assert broken != units
    result = _verify(_render(tmp_path, broken))
    complaints = _complaints(result)
    assert any(expected in line for line in complaints), result.stdout + result.stderr


def test_worker_stop_timeout_outlasts_its_grace(units: dict[str, str]) -> None:
    from mimir.worker.worker import WorkerConfig

    worker = _unit_settings(units["mimir-worker@.service"])
    grace = WorkerConfig(redis_url="redis://unused").grace  # MIMIR_WORKER_GRACE's default
    assert worker["KillSignal"] == ["SIGTERM"] and worker["KillMode"] == ["mixed"]
    assert _seconds(worker["TimeoutStopSec"][0]) >= grace + 10
    assert "%i" in worker["Description"][0]


def test_env_example_names_only_variables_mimir_or_the_units_read(units: dict[str, str]) -> None:
    example = (UNITS / "mimir.env.example").read_text()
    names = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert {"MIMIR_API_TOKEN", "REDIS_URL", "MIMIR_DATA_DIR", "MIMIR_PIPELINES_DIR"} <= names
    sources = "\n".join(
        path.read_text(errors="replace")
        for folder in ("core", "server", "worker")
        for path in (ROOT / folder).rglob("*.py")
    )
    sources += "\n".join(units.values())
    unknown = sorted(name for name in names if not re.search(rf"\b{name}\b", sources))
    assert unknown == []
    for line in example.splitlines():  # systemd's format: VAR=value, comments on their own
        assert not line.strip() or line.startswith("#") or re.fullmatch(r"[A-Z0-9_]+=\S*", line)


# --------------------------------------------------------------------------- run


def _unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit, every value of each key in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def _command(
    text: str, overrides: dict[str, str], instance: str = "1"
) -> tuple[list[str], dict[str, str]]:
    """ExecStart= as systemd would run it: Environment=, then the env file's overrides,
    ``${VAR}`` expanded, ``%i`` the instance; the binary this checkout's ``mimir``."""
    settings = _unit_settings(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for assignment in settings.get("Environment", []):
        for pair in shlex.split(assignment):
            key, _, value = pair.partition("=")
            env[key] = value
    env.update(overrides)
    (exec_start,) = settings["ExecStart"]
    argv = [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], arg).replace("%i", instance)
        for arg in shlex.split(exec_start.replace(INSTALLED, str(MIMIR)))
    ]
    return argv, env


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    trace: Path | None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _start(
    name: str, argv: list[str], env: dict[str, str], directory: Path, traced: bool
) -> Running:
    log = directory / f"{name}.log"
    trace = directory / f"{name}.strace" if traced else None
    prefix = [sys.executable, str(MDWE_EXEC)]
    if trace is not None:
        strace = shutil.which("strace")
        assert strace
        prefix = [strace, "-f", "-qq", "-o", str(trace), *prefix]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*prefix, *argv], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory
        )
    return Running(name, process, log, trace)


def _stop(running: Running, timeout: float) -> float:
    """SIGTERM, as systemd's KillSignal=; the seconds it took to exit 0."""
    started = time.monotonic()
    target = running.process.pid
    if running.trace is not None:  # the command is strace's child (strace exits with its code)
        import psutil

        (child,) = psutil.Process(target).children()
        target = child.pid
    os.kill(target, signal.SIGTERM)
    try:
        code = running.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait(timeout=10)
        raise AssertionError(f"{running.name} ignored SIGTERM for {timeout}s") from None
    assert code == 0, (code, running.output())
    return time.monotonic() - started


def _syscall_groups() -> dict[str, set[str]]:
    """``systemd-analyze syscall-filter``: each @group's members, groups expanded."""
    out = subprocess.run(
        [_systemd_analyze(), "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    raw: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            raw[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            raw[current].append(line.strip())

    def expand(group: str) -> set[str]:
        members: set[str] = set()
        for item in raw.get(group, []):
            members |= expand(item) if item.startswith("@") else {item}
        return members

    return {group: expand(group) for group in raw}


def _syscalls(trace: Path) -> set[str]:
    names = set()
    for line in trace.read_text(errors="replace").splitlines():
        match = re.match(r"\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
        if match:
            names.add(match.group(1))
    return names


@pytest.fixture
def host_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), directory=tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


_TURTLE = "@prefix e: <http://example.org/> . e:pump e:flow 42 ."


def _pipeline(api_url: str) -> dict[str, object]:
    """AI, processing, a file written, outbound HTTP, then a pause of ``{{ pause }}`` s."""
    return {
        "name": "systemd-check",
        "steps": [
            {
                "name": "ask",
                "plugin": "AI.mock",
                "config": {"prompt": "hi", "task": "complete"},
                "output": "a",
            },
            {
                "name": "fetch",
                "plugin": "Input.api",
                "config": {"url": api_url},
                "output": "fetched",
            },
            {
                "name": "keep",
                "plugin": "Data_Processing.transform",
                "config": {"input": [{"x": 1}, {"x": 2}], "filter": "x > 1"},
                "output": "kept",
            },
            {
                "name": "write",
                "plugin": "Output.json",
                "config": {"input": "{{ kept }}", "file_path": "out/k.json"},
            },
            {"name": "pause", "plugin": "Debug.sleep", "config": {"seconds": "{{ pause }}"}},
        ],
    }


def test_server_and_worker_command_lines_run_under_the_units_restrictions(
    tmp_path: Path, units: dict[str, str], host_redis: RedisServer
) -> None:
    """The units' own command lines, under MemoryDenyWriteExecute='s rules and traced:
    the API answers (Oxigraph store, execute), a worker runs a job, both stop on SIGTERM
    (the worker finishing its running job first) within TimeoutStopSec=, and every
    system call either made is in @system-service."""
    # make test installs strace (scripts/system-deps.sh): without it this would check less.
    assert shutil.which("strace"), "strace is missing: apt-get install strace"
    traced = True
    port = free_port()
    state = tmp_path / "var-lib-mimir"
    overrides = {  # what /etc/mimir/mimir.env would say, pointed at this test's files
        "REDIS_URL": host_redis.url,
        "MIMIR_PORT": str(port),
        "MIMIR_DATA_DIR": str(state / "data"),
        "MIMIR_PIPELINES_DIR": str(state / "pipelines"),
        "MIMIR_STATE_DIR": str(state / "state"),
        "MIMIR_KEY_PREFIX": f"systemd-test-{port}:",
    }
    server_argv, server_env = _command(units["mimir-server.service"], overrides)
    worker_argv, worker_env = _command(units["mimir-worker@.service"], overrides, instance="1")
    assert server_argv == [str(MIMIR), "server", "--host", "127.0.0.1"]
    assert worker_argv == [str(MIMIR), "worker", "--queues", "default"]
    server = _start("server", server_argv, server_env, tmp_path, traced)
    worker = _start("worker", worker_argv, worker_env, tmp_path, traced)
    try:
        with (
            stub_server() as stand_in,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
        ):

            def healthy() -> bool:
                assert server.process.poll() is None, server.output()
                try:
                    return api.get("/health").json().get("redis") == "ok"
                except httpx.HTTPError:
                    return False

            wait_until(healthy, timeout=60, message="the server's /health")
            loaded = api.post("/api/v1/ontologies", json={"name": "plant", "content": _TURTLE})
            assert loaded.status_code == 201, loaded.text
            rows = api.post("/api/v1/kg/query", json={"query": "SELECT ?o WHERE { ?s ?p ?o }"})
            assert rows.json()["results"]["bindings"][0]["o"]["value"] == "42", rows.text
            pipeline = _pipeline(f"http://localhost:{stand_in.base_url.rsplit(':', 1)[1]}/data")
            ran = api.post(
                "/api/v1/pipelines/execute", json={"pipeline": pipeline, "context": {"pause": 0}}
            )
            assert ran.json()["success"] is True, ran.text
            assert ran.json()["context"]["fetched"]["json"] == {"ok": True}, ran.text
            job = api.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline": pipeline, "context": {"pause": 3}},
            )
            job_id = job.json()["job_id"]

            def pausing() -> bool:  # every step done but the last, the pause
                assert worker.process.poll() is None, worker.output()
                record = api.get(f"/api/v1/queue/jobs/{job_id}").json()
                assert record["status"] in ("queued", "running"), record
                return (record.get("progress") or {}).get("step") == 4

            wait_until(pausing, timeout=60, message="the job to reach its pause")
            worker_settings = _unit_settings(units["mimir-worker@.service"])
            _stop(worker, _seconds(worker_settings["TimeoutStopSec"][0]))
            record = api.get(f"/api/v1/queue/jobs/{job_id}").json()
            assert record["status"] == "succeeded", record  # finished within its grace
        server_settings = _unit_settings(units["mimir-server.service"])
        _stop(server, _seconds(server_settings["TimeoutStopSec"][0]))
    finally:
        for running_process in (server, worker):
            if running_process.process.poll() is None:
                running_process.process.kill()
                running_process.process.wait(timeout=10)
    allowed = _syscall_groups()["@system-service"]
    for running_process in (server, worker):
        assert running_process.trace is not None
        used = _syscalls(running_process.trace)
        assert len(used) > 30, used  # the trace is real
        assert sorted(used - allowed) == [], running_process.name


def test_mdwe_exec_really_refuses_writable_executable_memory(tmp_path: Path) -> None:
    """The rules the run above relies on: W+X mappings and mprotect to exec are refused
    under ``tests/mdwe_exec.py`` and allowed without it."""
    probe = (
        "import ctypes, mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('wx-mapped')\n"
        "except OSError as exc:\n"
        "    print('wx-refused', exc.errno)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.mmap.restype = ctypes.c_void_p\n"
        "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,"
        " ctypes.c_int, ctypes.c_long]\n"
        "page = libc.mmap(None, 4096, 3, 0x22, -1, 0)\n"  # RW, MAP_PRIVATE|MAP_ANONYMOUS
        "done = libc.mprotect(ctypes.c_void_p(page), 4096, 5)\n"  # READ|EXEC
        "print('mprotect-exec', done, ctypes.get_errno())\n"
    )
    plain = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert plain.stdout.split("\n")[:2] == ["wx-mapped", "mprotect-exec 0 0"], plain
    confined = subprocess.run(
        [sys.executable, str(MDWE_EXEC), sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert confined.stdout.split("\n")[:2] == ["wx-refused 1", "mprotect-exec -1 1"], confined
