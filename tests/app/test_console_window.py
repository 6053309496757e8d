"""The main window without a cluster: remembered layout, profiles, errors shown in place."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from mimir.app.ui.app import build_window  # noqa: E402
from tests.helpers import free_port  # noqa: E402


@pytest.fixture
def loop(qapp: Any) -> Iterator[Any]:
    event_loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(event_loop)
    try:
        yield event_loop
    finally:
        event_loop.close()
        asyncio.set_event_loop(None)


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
        window.context.profiles.tokens._keyring = None  # this session's memory only
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
            assert window.context.profile.name == "remote"
            assert window.context.backend is None
            assert not panel.start_button.isEnabled()
            assert window.context.profiles.token("remote") == "very-secret-token"
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
