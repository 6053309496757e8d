"""Worker pools and autoscaling in the console (issue 10), driven as an operator would.

The Cluster panel starts a real local cluster (redis-server, ``mimir server``, workers of
two pools) from a cluster file; what the panels show comes from the backend and the API:
pools as groups with their replicas, a scale control per pool, the autoscaling policy
saved with ``PUT /api/v1/autoscaler/pools/{pool}`` (a 422 shown beside the fields), the
Workers panel grouped by pool with Drain and Stop, and the Dashboard's replicas per pool
with the autoscaler's decisions on the time axis. Every scenario has a deadline; waits are
on conditions, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("qasync")

from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialog, QFileDialog, QLineEdit

from mimir.app.services.timeseries import DashboardRecorder, ScaleDecision
from tests.app import test_console_panels
from tests.app.conftest import Stack
from tests.app.test_console_panels import Console, answer_confirmation, until

#: The console fixture: the real window with a LocalBackend on a qasync loop.
console = test_console_panels.console

#: Two pools: ``default`` autoscaled 1..4 on a backlog of 10 per replica, evaluated each
#: second; ``slow`` serving queue ``slow``, scaled by hand.
CLUSTER_FILE = """\
version: 1
autoscaler:
  period: 1
pools:
  default:
    replicas: 1
    min: 1
    max: 4
    autoscale: {target_backlog: 10, cooldown_up: 1, cooldown_down: 600}
  slow:
    queues: [slow]
    replicas: 1
    min: 0
    max: 3
"""

BROKEN_FILE = """\
version: 1
pools:
  default:
    min: 3
    max: 2
"""

SLOW_JOB = {
    "name": "slow-nap",
    "steps": [{"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": 0.5}}],
}


def deadline(scenario: Callable[[], Any], seconds: float) -> Callable[[], Any]:
    """``scenario`` that fails after ``seconds`` instead of hanging the suite."""
    return lambda: asyncio.wait_for(scenario(), seconds)


async def start_with_file(console: Console, path: Path) -> None:
    panel = console.window.cluster
    console.window.show_panel("cluster")
    assert await panel.load_cluster_file(path) is not None, panel.banner.text()
    QTest.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    await until(lambda: panel.busy, 5, "the start action to begin")
    await until(lambda: not panel.busy, 120, "the cluster to start")
    status = console.window.session.last_cluster_status
    assert status is not None and status.running, panel.banner.text()


def replicas_text(panel: Any, pool: str) -> str:
    group = panel.pools_box.group(pool)
    return group.replicas_label.text() if group is not None else ""


# ---------------------------------------------------------------------------- Qt-free


def test_scale_decisions_from_events_and_the_autoscaler_list_count_once() -> None:
    recorder = DashboardRecorder()
    decision = {
        "kind": "decision",
        "id": "1700000000000-0",
        "time": "2026-12-01T12:00:00.250Z",
        "pool": "default",
        "from": 1,
        "to": 4,
        "reason": "backlog 40 over 10 per replica",
    }
    first = recorder.add_decision(decision)
    assert first is not None and first.label == "default 1→4"
    assert recorder.add_decision(dict(decision)) is None  # the list repeats the event
    # A scaling command's end is a scale event too, but not a decision.
    assert recorder.add_decision({"kind": "result", "pool": "default", "to": 4}) is None
    older = {**decision, "id": "1699999990000-0", "time": "2026-12-01T11:59:00Z", "to": 2}
    recorder.add_autoscaler({"decisions": [decision, older]})  # newest first there
    assert [d.label for d in recorder.decisions] == ["default 1→2", "default 1→4"]
    assert ScaleDecision.from_payload({"pool": "default", "from": 1}) is None


def test_pool_series_keep_the_pools_there_are() -> None:
    recorder = DashboardRecorder()
    now = time.time()
    recorder.add_pools(
        {
            "slow": {"replicas": {"running": 2, "wanted": 3}, "queued": 7},
            "default": {"replicas": {"running": 1, "wanted": 1}, "queued": 0},
        },
        now,
    )
    assert recorder.pool_names == ["default", "slow"]
    assert recorder.series["replicas:slow"].last == 2 and recorder.series["queued:slow"].last == 7
    recorder.add_pools({"default": {"replicas": {"running": 1}, "queued": 3}}, now + 1)
    assert recorder.pool_names == ["default"] and "replicas:slow" not in recorder.series.series


# ---------------------------------------------------------------------------- real cluster


def test_cluster_panel_pools_scale_policy_and_dashboard_decisions(
    console: Console, tmp_path: Path
) -> None:
    window = console.window
    panel = window.cluster
    api = window.session.api
    good = tmp_path / "mimir-cluster.yaml"
    good.write_text(CLUSTER_FILE)
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_FILE)

    async def scenario() -> None:
        # A broken file is refused with its line; nothing is chosen.
        window.show_panel("cluster")
        assert await panel.load_cluster_file(broken) is None
        assert "line 5" in panel.banner.text() and "max" in panel.banner.text()
        assert panel.cluster_file is None

        # The file's pools are shown before Start, with what Start would run.
        assert await panel.load_cluster_file(good) is not None
        assert list(panel.pools_box.groups) == ["default", "slow"]
        assert replicas_text(panel, "slow").endswith("running · Start runs 1")

        await start_with_file(console, good)
        await until(
            lambda: (
                replicas_text(panel, "default").startswith("1 running")
                and replicas_text(panel, "slow").startswith("1 running")
            ),
            30,
            lambda: (
                f"both pools running: {replicas_text(panel, 'default')!r}, "
                f"{replicas_text(panel, 'slow')!r}"
            ),
        )
        default, slow = panel.pools_box.group("default"), panel.pools_box.group("slow")
        assert default is not None and slow is not None
        # The services table has one worker row per pool.
        names = {panel.table.item(r, 0).text() for r in range(panel.table.rowCount())}
        assert {"worker", "worker-slow"} <= names

        # The policies, from the server's autoscaler.
        await until(lambda: default.policy_available, 30, "the default pool's policy")
        assert default.autoscale_check.isChecked() and default.target_spin.value() == 10.0
        assert (default.min_spin.value(), default.max_spin.value()) == (1, 4)
        assert not slow.autoscale_check.isChecked()
        assert "autoscaler is on" in panel.pools_box.note.text(), panel.pools_box.note.text()

        # Scale slow to 2 from its group: Apply is off while it runs, then both agree.
        slow.replicas_spin.setValue(2)
        QTest.mouseClick(slow.apply_button, Qt.MouseButton.LeftButton)
        await until(lambda: panel.busy, 5, "the scale to begin")
        assert not slow.apply_button.isEnabled() and not default.apply_button.isEnabled()
        assert slow.apply_button.text() == "Scaling…" and panel.progress.isVisible()
        await until(lambda: not panel.busy, 60, "the scale to end")
        assert "failed" not in panel.banner.text(), panel.banner.text()
        assert replicas_text(panel, "slow") == "2 running of 2 wanted"
        assert replicas_text(panel, "default").startswith("1 running")
        assert slow.apply_button.isEnabled() and slow.replicas_spin.value() == 2

        # max < min: the server's 422 beside the fields; the edits stay, no traceback.
        slow.min_spin.setValue(3)
        slow.max_spin.setValue(1)
        assert slow.policy_note.text() == "unsaved changes" and slow.save_button.isEnabled()
        QTest.mouseClick(slow.save_button, Qt.MouseButton.LeftButton)
        await until(lambda: slow.policy_note.text().startswith("Not saved"), 10, "the 422")
        assert "max" in slow.policy_note.text(), slow.policy_note.text()
        assert (slow.min_spin.value(), slow.max_spin.value()) == (3, 1)
        # A valid policy is saved and read back; a reading does not undo it.
        slow.min_spin.setValue(0)
        slow.max_spin.setValue(2)
        slow.autoscale_check.setChecked(True)
        slow.target_spin.setValue(5.0)
        QTest.mouseClick(slow.save_button, Qt.MouseButton.LeftButton)
        await until(lambda: not slow.policy_edited and not slow.saving, 10, "the save")
        assert slow.policy_note.text() == "", slow.policy_note.text()
        state = await api.autoscaler()
        saved = state["pools"]["slow"]
        assert saved["policy"]["enabled"] and saved["policy"]["target_backlog"] == 5.0
        assert (saved["min"], saved["max"]) == (0, 2)
        await window.session.feed.read_autoscaler()
        assert slow.target_spin.value() == 5.0 and slow.max_spin.value() == 2

        # A queue nothing serves is a warning.
        await api.enqueue(pipeline=SLOW_JOB, count=2, queue="gpu")
        await until(
            lambda: (
                panel.pools_box.unserved_label.isVisible()
                and "'gpu'" in panel.pools_box.unserved_label.text()
            ),
            15,
            "the unserved queue's warning",
        )

        # A burst for default: the autoscaler takes it to 4; the Dashboard marks it.
        await api.enqueue(pipeline=SLOW_JOB, count=200)
        recorder = window.session.recorder
        # (The burst arrives over a moment: default may go 1→2, then 2→4.)
        up = await until(
            lambda: next(
                (d for d in recorder.decisions if d.pool == "default" and d.new == 4), None
            ),
            30,
            lambda: f"a decision default →4 (have {[d.label for d in recorder.decisions]})",
        )
        assert up.label == f"default {up.old}→4" and up.old < 4
        window.show_panel("dashboard")
        dashboard = window.dashboard
        await until(
            lambda: dashboard.redraw() or up in dashboard.shown_decisions,
            10,
            lambda: (
                f"{up} on the Dashboard's time axis (shown {dashboard.shown_decisions}, "
                f"now {time.time()})"
            ),
        )
        labels = [line.label.format for line, _ in dashboard.decision_lines]
        assert up.label in labels, labels
        # A console connecting now gets the same decision from GET /api/v1/autoscaler.
        fresh = DashboardRecorder()
        fresh.add_autoscaler(await api.autoscaler())
        assert any(d.id == up.id and d.label == up.label for d in fresh.decisions), [
            (d.id, d.label) for d in fresh.decisions
        ]
        assert len(dashboard.decision_lines) == len(dashboard.shown_decisions)
        await until(
            lambda: (recorder.series["replicas:default"].last or 0) >= 4,
            60,
            lambda: (
                f"4 default replicas plotted: pools {window.session.feed.last_pools}, "
                f"autoscaler {window.session.feed.last_autoscaler}"
            ),
        )
        window.show_panel("cluster")
        await until(
            lambda: replicas_text(panel, "default").startswith("4 running"),
            30,
            lambda: f"the Cluster panel to show 4: {replicas_text(panel, 'default')!r}",
        )
        assert default.last_decision is not None and default.last_decision.new == 4
        assert "autoscaler at" in default.status_label.text()

        # Stopped: no figure, policy or warning from when it ran stays on screen.
        QTest.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(panel, "Stop")
        await until(lambda: panel.busy, 5, "the stop to begin")
        await until(lambda: not panel.busy, 90, "the cluster to stop")
        for group in (default, slow):
            assert group.replicas_label.text().startswith("0 running"), group.replicas_label.text()
            assert group.figures_label.text() == "no reading", group.figures_label.text()
            assert not group.apply_button.isEnabled() and not group.target_spin.isEnabled()
        assert not panel.pools_box.unserved_label.isVisible()
        assert panel.pools_box.note.text() == ""

    console.run(deadline(scenario, 400))


def test_cluster_file_chosen_in_the_file_dialog(console: Console, tmp_path: Path) -> None:
    """'Cluster file…' opens a real file dialog; a broken file is refused with its line,
    a good one lists its pools before Start; 'Don't use it' forgets it."""
    window = console.window
    panel = window.cluster
    good = tmp_path / "mimir-cluster.yaml"
    good.write_text(CLUSTER_FILE)
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_FILE)

    async def pick(path: Path) -> None:
        QTest.mouseClick(panel.cluster_file_button, Qt.MouseButton.LeftButton)

        def open_dialog() -> Any:
            return next((d for d in panel.findChildren(QFileDialog) if d.isVisible()), None)

        dialog = await until(open_dialog, 5, "the file dialog")
        dialog.findChild(QLineEdit, "fileNameEdit").setText(str(path))
        await until(lambda: dialog.selectedFiles() == [str(path)], 5, dialog.selectedFiles)
        dialog.done(QDialog.DialogCode.Accepted)

    async def scenario() -> None:
        window.show_panel("cluster")
        await pick(broken)
        await until(lambda: "line 5" in panel.banner.text(), 10, panel.banner.text)
        assert panel.cluster_file is None and panel.cluster_file_label.isHidden()
        await pick(good)
        await until(lambda: panel.cluster_file is not None, 10, panel.banner.text)
        assert panel.cluster_file_label.text().startswith(f"Cluster file {good}: pool default")
        assert list(panel.pools_box.groups) == ["default", "slow"]
        slow = panel.pools_box.group("slow")
        assert slow is not None and not slow.apply_button.isEnabled()  # nothing runs yet
        QTest.mouseClick(panel.cluster_file_clear, Qt.MouseButton.LeftButton)
        assert panel.cluster_file is None and panel.cluster_file_label.isHidden()
        assert "slow" not in panel.pools_box.groups

    console.run(deadline(scenario, 60))


def test_workers_grouped_by_pool_drain_and_stop(console: Console, tmp_path: Path) -> None:
    window = console.window
    workers_panel = window.workers
    path = tmp_path / "mimir-cluster.yaml"
    path.write_text(CLUSTER_FILE.replace("autoscale: {", "autoscale: {enabled: false, "))

    def rows() -> list[tuple[str, str, str]]:
        table = workers_panel.table
        return [
            (table.item(r, 0).text(), table.item(r, 1).text(), table.item(r, 2).text())
            for r in range(table.rowCount())
        ]

    async def scenario() -> None:
        await start_with_file(console, path)
        await window.cluster.scale_pool("default", 2)
        window.show_panel("workers")
        await until(
            lambda: (
                [(name, pool) for name, pool, _ in rows()]
                == [("worker-1", "default"), ("worker-2", "default"), ("worker-slow-1", "slow")]
            ),
            40,
            lambda: f"three workers grouped by pool: {rows()}",
        )
        assert "pool <b>slow</b>: 1 worker" in workers_panel.pools_label.text()

        def actions(row: int) -> Any:
            return workers_panel.table.cellWidget(row, 3)

        # Drain asks first; Cancel changes nothing.
        QTest.mouseClick(actions(1).drain_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(workers_panel, "Cancel")
        await until(lambda: not workers_panel.acting, 5, "the question to close")
        assert [state for *_, state in rows()][1] != "draining"

        # Drain worker-2: "draining" at once, then it leaves; worker-1 stays.
        target = workers_panel.row_ids[1]
        QTest.mouseClick(actions(1).drain_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(workers_panel, "Drain")
        await until(lambda: not workers_panel.acting, 10, "the drain request")
        assert "asked to drain" in workers_panel.banner.text(), workers_panel.banner.text()
        assert rows()[1][2] == "draining" and not actions(1).drain_button.isEnabled()
        await until(
            lambda: target not in workers_panel.row_ids,
            40,
            lambda: f"the drained worker to leave: {rows()}",
        )
        assert [name for name, *_ in rows()] == ["worker-1", "worker-slow-1"]

        # Stop worker-slow-1: its pool is left without a live worker, which is a warning.
        QTest.mouseClick(actions(1).stop_button, Qt.MouseButton.LeftButton)
        await answer_confirmation(workers_panel, "Stop")
        await until(lambda: not workers_panel.acting, 10, "the stop request")
        await until(lambda: len(rows()) == 1, 40, lambda: f"the stopped worker gone: {rows()}")
        await until(
            lambda: "pool <b>slow</b>: no live worker" in workers_panel.pools_label.text(),
            10,
            lambda: f"the slow pool's warning: {workers_panel.pools_label.text()!r}",
        )
        # A worker gone meanwhile: the server's 404 in the banner, not a traceback.
        workers_panel.workers.append({"worker_id": "worker-gone-1", "pool": "default"})
        task = workers_panel.control("worker-gone-1", "stop")
        await answer_confirmation(workers_panel, "Stop")
        assert await task is False
        assert workers_panel.banner.text().startswith("Cannot stop"), workers_panel.banner.text()

    console.run(deadline(scenario, 300))


@pytest.fixture
def api_window(qapp: Any, tmp_path: Path, stack: Stack) -> Iterator[tuple[Any, Any]]:
    """The console on an API-only profile of a real server and worker (no cluster
    backend: the server's autoscaler is off and says why)."""
    import qasync

    from mimir.app.services.profiles import ConnectionProfile
    from mimir.app.ui.app import build_window, install_excepthook

    errors = install_excepthook(show_dialog=False)
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    window = build_window(settings)
    profile = ConnectionProfile("Test", "remote_api", api_url=stack.url)
    window.session.profiles.upsert(profile)
    window.session.profile = profile
    window.resize(1440, 900)
    try:
        yield window, loop
    finally:
        window.close()
        window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
        loop.close()
        asyncio.set_event_loop(None)
        del window
        gc.collect()
    assert not errors, errors[0]


def test_api_only_profile_shows_pools_from_the_api_and_saves_policies(
    api_window: tuple[Any, Any],
) -> None:
    window, loop = api_window
    panel = window.cluster

    async def scenario() -> None:
        window.show_panel("cluster")
        await until(
            lambda: (
                panel.pools_box.group("default") is not None
                and replicas_text(panel, "default") == "1 running of 1 wanted"
            ),
            30,
            lambda: f"the default pool from the API: {replicas_text(panel, 'default')!r}",
        )
        default = panel.pools_box.group("default")
        assert "waiting" in default.figures_label.text(), default.figures_label.text()
        # No backend: no scaling here, and the button says why.
        assert not default.apply_button.isEnabled()
        assert "needs a running cluster" in default.apply_button.toolTip()
        await until(lambda: default.policy_available, 30, "the policy from the API")
        note = panel.pools_box.note.text()
        assert note.startswith("The autoscaler is off:") and "nothing acts" in note, note

        # The server refuses max < min (422 naming the field); then saves a good one.
        default.min_spin.setValue(3)
        default.max_spin.setValue(1)
        QTest.mouseClick(default.save_button, Qt.MouseButton.LeftButton)
        await until(lambda: default.policy_note.text().startswith("Not saved"), 10, "422")
        assert "max" in default.policy_note.text(), default.policy_note.text()
        assert "border-color" in default.max_spin.styleSheet()  # the field it names
        default.min_spin.setValue(1)
        default.max_spin.setValue(3)
        assert default.max_spin.styleSheet() == ""  # an edit clears the mark
        default.target_spin.setValue(4.0)
        QTest.mouseClick(default.save_button, Qt.MouseButton.LeftButton)
        await until(lambda: not default.policy_edited, 10, "the policy saved")
        saved = (await window.session.api.autoscaler())["pools"]["default"]
        assert (saved["min"], saved["max"]) == (1, 3)
        assert saved["policy"]["target_backlog"] == 4.0

    async def session() -> None:
        window.show()
        window.start()
        try:
            await asyncio.wait_for(scenario(), 120)
        finally:
            await window.shutdown()  # (it cancels the tasks left: not from inside one)

    loop.run_until_complete(session())
