"""The console against real remote engines (issue 19): one run per host, TLS and SSH.

Each test drives the real main window on a qasync loop with a ``remote_docker`` profile:
(SSH only) the unknown host key is answered through the host-key dialog's Accept button,
Start with 2 workers, Scale to 4 then 1 (the live heartbeats, the Workers panel and the
Cluster panel's table agreeing each time), a pipeline saved and 20 jobs enqueued from the
Pipelines panel, all 20 seen succeeded in the Jobs panel, worker lines arriving in the Logs
panel, the status bar's alerts light known, Stop (through its confirmation). Then the project
is cleaned through the session's backend and the inner engine, read through the fixture's own
socket, must hold nothing of it (a failed run's leftovers are removed there, then reported).

A screenshot of the window on the Cluster panel, connected, is saved to ``tmp_path``; with
``MIMIR_SCREENSHOTS=docs`` it goes to ``docs/remote-tls.png`` / ``docs/remote-ssh.png``.
Every wait has a deadline and runs on the loop (the GUI keeps painting); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.remote.conftest import REMOTE_TIMEOUT, RemoteHost, SshHost, TlsHost

pytestmark = [pytest.mark.docker, REMOTE_TIMEOUT]

pytest.importorskip("PySide6")
pytest.importorskip("qasync")

from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from mimir.app.services.profiles import ConnectionProfile  # noqa: E402
from tests.app.test_console_panels import until  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs"
JOBS = 20
PIPELINE = """\
name: {name}
description: sleeps a little, on a remote engine
steps:
  - name: nap
    plugin: Debug.sleep
    config: {{seconds: 0.01}}
    output: napped
"""


def click(button: Any) -> None:
    assert button.isEnabled(), f"{button.text()!r} is disabled"
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


async def answer_confirmation(parent: Any, choice: str) -> None:
    """Click ``choice`` in the confirmation ``parent`` opened."""
    from mimir.app.ui.confirm import CONFIRM_OBJECT_NAME

    def open_box() -> Any:
        boxes = parent.findChildren(QMessageBox, CONFIRM_OBJECT_NAME)
        return next((box for box in boxes if box.isVisible()), None)

    box = await until(open_box, 10, f"a confirmation from {type(parent).__name__}")
    [button] = [b for b in box.buttons() if b.text() == choice]
    click(button)


def screenshot_path(tmp_path: Path, role: str) -> Path:
    if os.environ.get("MIMIR_SCREENSHOTS") == "docs":
        return DOCS / f"remote-{role}.png"
    return tmp_path / f"remote-{role}.png"


def purge(host: RemoteHost, project: str) -> None:
    """Whatever of ``project`` a failed run left on the inner engine (the fixture's channel)."""
    engine = host.engine()
    label = {"label": f"io.mimir.project={project}"}
    for container in engine.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
    for volume in engine.volumes.list(filters=label):
        volume.remove(force=True)
    for network in engine.networks.list(filters=label):
        network.remove()


def run_console(
    qapp: Any,
    tmp_path: Path,
    host: RemoteHost,
    profile: ConnectionProfile,
    token: str | None,
    scenario: Callable[[Any], Awaitable[None]],
) -> None:
    """The real main window on a qasync loop with ``profile`` current; ``scenario(window)``
    runs on the loop, then the project is cleaned from the inner engine and the window shut."""
    import qasync

    from mimir.app.ui.app import build_window
    from mimir.app.ui.common import load_stylesheet

    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    window = build_window(settings)
    window.session.profiles.tokens._keyring = None  # the token stays in tmp, not the keyring
    window.session.profiles.upsert(profile, token)
    window.session.profiles.set_current(profile.name)
    window.session.profile = profile  # window.start() applies it, as at start-up
    previous_style = qapp.styleSheet()
    qapp.setStyleSheet(load_stylesheet())  # as the console draws itself (the screenshots)
    window.resize(1360, 860)

    async def main() -> None:
        window.show()
        window.start()
        try:
            await scenario(window)
        finally:
            backend = window.session.backend
            if backend is not None:
                # Stop's leftovers (volumes, network) go too; failures surface below.
                try:
                    await backend.clean()
                except Exception as exc:
                    print(f"clean through the backend failed: {exc}")
            await window.shutdown()

    try:
        loop.run_until_complete(main())
    finally:
        window.close()
        window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
        qapp.setStyleSheet(previous_style)
        loop.close()
        asyncio.set_event_loop(None)
        gc.collect()
        left = host.project_objects(profile.project)
        if any(left.values()):
            purge(host, profile.project)
    assert not any(left.values()), f"the console's clean left {left} on the {host.role} host"


def worker_replicas(panel: Any) -> str:
    """The Workers row's replica cell in the Cluster panel's table, or ""."""
    for row in range(panel.table.rowCount()):
        name = panel.table.item(row, 0)
        if name is not None and name.text().startswith("worker"):
            cell = panel.table.item(row, 3)
            return cell.text() if cell is not None else ""
    return ""


async def workers_agree(window: Any, count: int, timeout: float) -> None:
    """Heartbeats, the Workers panel and the Cluster panel's table all say ``count``."""

    def agreed() -> bool:
        stats = window.session.feed.last_stats or {}
        return (
            stats.get("workers") == count
            and len(window.workers.workers) == count
            and window.workers.table.rowCount() == count
            and worker_replicas(window.cluster) == str(count)
        )

    await until(
        agreed,
        timeout,
        lambda: (
            f"{count} workers: stats {window.session.feed.last_stats}, Workers panel "
            f"{len(window.workers.workers)}, Cluster table {worker_replicas(window.cluster)!r}"
        ),
    )


async def start(window: Any, workers: int) -> None:
    panel = window.cluster
    panel.workers_spin.setValue(workers)
    click(panel.start_button)
    await until(lambda: panel.busy, 10, "Start to begin")
    await until(
        lambda: not panel.busy,
        300,
        lambda: f"Start: {panel.banner.text()} {panel.step_label.text()}",
    )
    status = window.session.last_cluster_status
    assert status is not None and status.running, panel.banner.text()
    await workers_agree(window, workers, 120)


async def scale(window: Any, count: int) -> None:
    panel = window.cluster
    panel.workers_spin.setValue(count)
    click(panel.scale_button)
    await until(lambda: panel.busy, 10, "Scale to begin")
    await until(lambda: not panel.busy, 240, lambda: f"Scale: {panel.banner.text()}")
    assert "fail" not in panel.banner.text().lower(), panel.banner.text()
    await workers_agree(window, count, 120)


async def run_jobs(window: Any, tag: str) -> None:
    """A pipeline saved and enqueued from the Pipelines panel; the jobs succeeded in Jobs;
    worker lines in Logs."""
    pipelines = window.pipelines
    name = f"nap-{tag}"
    window.show_panel("pipelines")
    click(pipelines.new_button)
    pipelines.editor.setPlainText(PIPELINE.format(name=name))
    await until(lambda: pipelines.valid, 30, "the pipeline to validate")
    await pipelines.save()
    await until(
        lambda: any(
            pipelines.list.item(i).data(Qt.ItemDataRole.UserRole) == name
            for i in range(pipelines.list.count())
        ),
        30,
        lambda: f"{name} in the list: {pipelines.banner.text()!r}",
    )
    await pipelines.open_pipeline(name)
    pipelines.count_spin.setValue(JOBS)
    click(pipelines.enqueue_button)
    await until(lambda: len(pipelines.last_enqueued) == JOBS, 30, f"{JOBS} enqueued")

    window.show_panel("jobs")
    jobs = window.jobs

    def succeeded() -> int:
        return sum(
            1
            for job in pipelines.last_enqueued
            if (jobs.model.store.get(job) or {}).get("status") == "succeeded"
        )

    await until(lambda: succeeded() == JOBS, 120, lambda: f"{JOBS} succeeded, {succeeded()} so far")

    window.show_panel("logs")
    await until(
        lambda: any(line.service.startswith("worker") for line in window.logs.lines),
        60,
        lambda: f"worker lines in Logs ({len(window.logs.lines)} lines)",
    )


async def operate_and_shoot(
    window: Any, tag: str, shot: Path, access_running: Callable[[str], bool]
) -> None:
    """2 → 4 → 1 workers, jobs, logs; the Cluster panel screenshot, connected; Stop.
    ``access_running`` says whether the "API access" line is right while the cluster runs."""
    panel = window.cluster
    await start(window, 2)
    await until(lambda: access_running(panel.access_label.text()), 30, panel.access_label.text)
    await scale(window, 4)
    await scale(window, 1)
    await run_jobs(window, tag)
    window.show_panel("cluster")
    await workers_agree(window, 1, 60)
    await until(lambda: panel.workers_spin.value() == 1, 30, "the spin box to show 1")
    assert access_running(panel.access_label.text()), panel.access_label.text()
    # The status bar's alerts light polls every 15 s: it must have reached the API by now.
    indicator = window.alerts_indicator
    await until(lambda: "unknown" not in indicator.text(), 25, indicator.toolTip)
    window.grab().save(str(shot))
    assert shot.stat().st_size > 0
    click(panel.stop_button)
    await answer_confirmation(panel, "Stop")
    await until(lambda: panel.busy, 10, "Stop to begin")
    await until(lambda: not panel.busy, 180, lambda: f"Stop: {panel.banner.text()}")
    status = window.session.last_cluster_status
    assert status is not None and not status.running, panel.banner.text()


def test_console_drives_a_cluster_on_the_tls_host(
    qapp: Any, tmp_path: Path, tls_host: TlsHost
) -> None:
    profile = ConnectionProfile(
        "lab tls",
        "remote_docker",
        api_url=f"http://{tls_host.address}:18080",
        docker_host=tls_host.docker_host,
        project=f"ctls{os.getpid()}",
        tls_ca=str(tls_host.ca_path),
        tls_cert=str(tls_host.cert_path),
        tls_key=str(tls_host.key_path),
        api_access="published",
        api_bind=tls_host.address,
    )
    assert profile.problems(tls_host.token) == []
    shot = screenshot_path(tmp_path, "tls")

    async def scenario(window: Any) -> None:
        panel = window.cluster
        window.show_panel("cluster")
        access = f"API published on {tls_host.address}:18080 (token)"
        await until(lambda: panel.access_label.text() == access, 10, panel.access_label.text)
        await operate_and_shoot(window, "tls", shot, lambda text: text == access)

    run_console(qapp, tmp_path, tls_host.host, profile, tls_host.token, scenario)
    assert shot.exists()


def test_console_drives_a_cluster_on_the_ssh_host_after_accepting_its_key(
    qapp: Any, tmp_path: Path, ssh_host: SshHost
) -> None:
    known = tmp_path / "known_hosts"  # empty: the host's key is unknown to the console
    profile = ConnectionProfile(
        "lab ssh",
        "remote_docker",
        api_url="http://127.0.0.1:8080",
        docker_host=ssh_host.docker_host,
        project=f"cssh{os.getpid()}",
        ssh_identity=str(ssh_host.identity),
        ssh_known_hosts=str(known),
    )
    shot = screenshot_path(tmp_path, "ssh")
    expected_key = ssh_host.host_key_line.split()[-1]

    async def scenario(window: Any) -> None:
        panel = window.cluster
        window.show_panel("cluster")
        dialog = await until(
            lambda: panel.host_key_dialog,
            60,
            lambda: f"the host-key question: {panel.step_label.text()}",
        )
        await until(dialog.isVisible, 10, "the host-key dialog to show")
        assert not known.exists() or known.read_text() == ""
        click(dialog.accept_button)
        await until(
            lambda: known.exists() and expected_key in known.read_text(),
            10,
            "the accepted key in known_hosts",
        )
        await until(lambda: "trusted" in panel.banner.text(), 30, panel.banner.text)
        # Before Start the line says where the tunnel will lead; running, where it is open.
        await until(
            lambda: panel.access_label.text().startswith("API via SSH tunnel"),
            30,
            panel.access_label.text,
        )
        await operate_and_shoot(
            window, "ssh", shot, lambda text: text.startswith("API via SSH tunnel 127.0.0.1:")
        )

    run_console(qapp, tmp_path, ssh_host.host, profile, None, scenario)
    assert shot.exists()
    assert ssh_host.address in known.read_text(), "known_hosts names the host by its address"
