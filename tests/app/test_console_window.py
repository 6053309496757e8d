"""The main window without a cluster: remembered layout, profiles, errors shown in place."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from mimir.app.ui.app import build_window  # noqa: E402
from tests.helpers import free_port  # noqa: E402


def _settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)


def test_window_remembers_last_panel_and_stores_geometry(loop: Any, tmp_path: Path) -> None:
    async def first() -> tuple[int, int]:
        window = build_window(_settings(tmp_path))
        window.show()
        window.move(37, 41)  # the offscreen screen is small: a position is what varies
        window.show_panel("jobs")
        window.save_layout()
        await window.shutdown()
        window.close()
        return window.x(), window.width()

    async def second() -> tuple[str, tuple[int, int]]:
        window = build_window(_settings(tmp_path))
        window.show()
        try:
            return window.current_panel(), (window.x(), window.width())
        finally:
            await window.shutdown()
            window.close()

    loop.run_until_complete(first())
    panel, _geometry = loop.run_until_complete(second())
    assert panel == "jobs"
    # Geometry is stored (Qt's restoreGeometry clamps it to the tiny offscreen screen, so
    # only its presence is checked here).
    assert _settings(tmp_path).value("window/geometry")


def test_remote_api_profile_has_no_cluster_controls_and_keeps_token_out_of_settings(
    loop: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)

    async def scenario() -> None:
        window = build_window(settings)
        window.session.profiles.tokens._keyring = None  # this session's memory only
        window.show()
        window.start()
        panel = window.cluster
        try:
            panel.name_edit.setText("remote")
            panel.kind_combo.setCurrentIndex(panel.kind_combo.findData("remote_api"))
            panel.url_edit.setText(f"http://127.0.0.1:{free_port()}")
            panel.token_edit.setText("very-secret-token")
            QTest.mouseClick(panel.save_profile_button, Qt.MouseButton.LeftButton)
            assert "saved" in panel.banner.text()
            assert window.session.profile.name == "remote"
            assert window.session.backend is None
            assert not panel.start_button.isEnabled()
            assert window.session.profiles.token("remote") == "very-secret-token"
            # Nothing answers there: the status bar and the table say so.
            await panel.refresh()
            assert panel.table.item(0, 1).text() == "unreachable"

            panel.url_edit.setText("ftp://nope")
            QTest.mouseClick(panel.save_profile_button, Qt.MouseButton.LeftButton)
            assert "http://" in panel.banner.text()
        finally:
            await window.shutdown()
            window.close()

    loop.run_until_complete(scenario())
    settings.sync()
    assert "very-secret-token" not in (tmp_path / "console.ini").read_text()


def _job(job_id: str, version: int, status: str, second: int, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "version": version,
        "status": status,
        "pipeline": "nap",
        "enqueued_at": f"2026-01-01T00:00:{second:02d}Z",
        **fields,
    }


def test_jobs_table_keeps_newest_first_sorts_on_click_and_details_follow(loop: Any) -> None:
    """Issue 13: a job listed after newer ones showed at the bottom of the newest-first
    table, no column sorted, and the details pane stayed on 'running' after a cancel."""
    from mimir.app.ui.jobs_panel import QtJobsPanel

    async def scenario() -> None:
        panel = QtJobsPanel(None)
        panel.resize(1100, 700)
        panel.show()
        model, proxy, table = panel.model, panel.proxy, panel.table

        def shown() -> list[str]:
            return [proxy.data(proxy.index(r, 0)) for r in range(proxy.rowCount())]

        model.upsert(_job("job-b", 1, "queued", 20))
        model.upsert(_job("job-c", 1, "queued", 30))
        model.upsert_many([_job("job-a", 1, "succeeded", 10), _job("job-d", 1, "queued", 40)])
        assert shown() == ["job-d", "job-c", "job-b", "job-a"]

        table.selectRow(1)  # job-c
        assert panel.selected_id == "job-c" and "Status      queued" in panel.details.toPlainText()
        model.upsert(
            _job("job-c", 2, "running", 30, worker_id="w1", started_at="2026-01-01T00:00:31Z")
        )
        model.upsert(_job("job-c", 4, "cancelled", 30, finished_at="2026-01-01T00:00:33Z"))
        model.upsert(_job("job-c", 3, "running", 30, cancel_requested=True))  # a late reply
        assert "Status      cancelled" in panel.details.toPlainText()
        assert "(ran 2.0 s)" in panel.details.toPlainText()
        assert not panel.cancel_button.isEnabled()  # a cancelled job offers no cancel

        # A click on the Status header sorts by it; the selection stays on its job.
        header = table.horizontalHeader()
        x = header.sectionViewportPosition(1) + 10
        QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
        statuses = [proxy.data(proxy.index(r, 1)) for r in range(proxy.rowCount())]
        assert statuses == sorted(statuses) or statuses == sorted(statuses, reverse=True)
        assert proxy.data(table.currentIndex().siblingAtColumn(0)) == "job-c"
        # Back to newest first: a new job lands on top.
        QTest.mouseClick(
            header.viewport(),
            Qt.MouseButton.LeftButton,
            pos=QPoint(header.sectionViewportPosition(6) + 10, 5),
        )
        if header.sortIndicatorOrder() != Qt.SortOrder.DescendingOrder:
            QTest.mouseClick(
                header.viewport(),
                Qt.MouseButton.LeftButton,
                pos=QPoint(header.sectionViewportPosition(6) + 10, 5),
            )
        model.upsert(_job("job-e", 1, "queued", 50))
        assert shown()[0] == "job-e"
        # The dead-letter filter: failed and dead jobs together.
        model.upsert(_job("job-f", 5, "failed", 55, error="boom"))
        model.upsert(_job("job-g", 5, "dead", 56, error="lost"))
        panel.status_combo.setCurrentIndex(
            panel.status_combo.findText("dead letter (failed + dead)")
        )
        assert sorted(shown()) == ["job-f", "job-g"]
        assert panel.count_label.text() == "2 of 7 jobs"
        panel.close()

    loop.run_until_complete(scenario())


def _lay_out(panel: Any) -> None:
    """Apply every layout of ``panel`` at once, outer ones first (twice: a nested
    layout's size comes from the outer one's pass)."""
    from PySide6.QtWidgets import QWidget

    for _ in range(2):
        for widget in [panel, *panel.findChildren(QWidget)]:
            if widget.layout() is not None:
                widget.layout().activate()


def test_banners_never_move_a_panels_toolbar(loop: Any, tmp_path: Path) -> None:
    """Issue 13: a banner appearing above the toolbar moved it 46 px under the pointer."""

    async def scenario() -> None:
        window = build_window(_settings(tmp_path))
        window.resize(1360, 860)
        window.show()
        try:
            for key, panel, button in (
                ("pipelines", window.pipelines, window.pipelines.run_button),
                ("jobs", window.jobs, window.jobs.cancel_button),
                ("cluster", window.cluster, window.cluster.stop_button),
                ("logs", window.logs, window.logs.clear_button),
                ("knowledge", window.knowledge, window.knowledge.run_button),
            ):
                window.show_panel(key)
                panel.banner.clear_message()
                _lay_out(panel)  # now: never processEvents inside the loop
                before = button.mapTo(window, QPoint(0, 0))
                panel.banner.error("Something went wrong\nover two lines")
                _lay_out(panel)
                assert panel.banner.isVisible() and panel.banner.height() > 30, key
                assert button.mapTo(window, QPoint(0, 0)) == before, key
        finally:
            await window.shutdown()
            window.close()

    loop.run_until_complete(scenario())


def test_local_profile_starts_on_its_own_port_and_says_so_when_taken(
    loop: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: the port of a local profile's API URL was ignored (only MIMIR_PORT
    counted), a clash pointed to a CLI flag the console does not have, and every launch
    said "This profile talks to an API only" above a cluster it could drive."""
    import socket

    from mimir.app.cluster.base import ClusterStatus, ServiceStatus
    from mimir.app.services.profiles import ConnectionProfile

    for name in ("state", "data", "pipelines"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"MIMIR_{name.upper()}_DIR", str(tmp_path / name))
    monkeypatch.delenv("MIMIR_PORT", raising=False)
    settings = _settings(tmp_path)

    async def scenario() -> None:
        window = build_window(settings)
        panel = window.cluster
        assert "API only" not in panel.step_label.text()  # before the profile is applied
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            profile = ConnectionProfile("Mine", "local_processes", f"http://127.0.0.1:{port}")
            window.session.profiles.upsert(profile)
            window.session.profile = profile
            window.show()
            window.start()
            try:
                assert window.session.backend is not None
                assert window.session.backend.api_port == port  # type: ignore[attr-defined]
                assert panel.profile_combo.currentText() == "Mine"
                assert panel.url_edit.text() == f"http://127.0.0.1:{port}"
                assert "API only" not in panel.step_label.text()
                await until_true(lambda: not panel.busy and panel.start_button.isEnabled())
                QTest.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
                await until_true(lambda: "in use" in panel.banner.text())
                text = panel.banner.text()
                assert f"port {port}" in text and "profile's API URL" in text, text
                assert "--port" not in text
                # A running cluster answering elsewhere (started with another port): said.
                assert not panel.api_note.isVisible()
                elsewhere = "http://127.0.0.1:9"
                running = [ServiceStatus("backend", "server", "running")]
                window.session.follow_cluster(ClusterStatus("local", "mimir", running, elsewhere))
                assert panel.api_note.isVisible() and elsewhere in panel.api_note.text()
                assert window.session.api.base_url == elsewhere
            finally:
                await window.shutdown()
                window.close()

    loop.run_until_complete(scenario())


async def until_true(condition: Any, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
