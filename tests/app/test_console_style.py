"""The console's stylesheet as an operator sees it: rendered offscreen, pixels checked."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("PySide6")

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QSpinBox, QWidget

from mimir.app.ui.common import load_stylesheet


def _styled(*widgets: QWidget) -> QWidget:
    host = QWidget()
    host.setStyleSheet(load_stylesheet())
    layout = QHBoxLayout(host)
    for widget in widgets:
        layout.addWidget(widget)
    host.resize(480, 60)
    host.show()
    return host


def test_disabled_danger_button_looks_disabled_and_spinbox_arrows_show(qapp: Any) -> None:
    """Issue 13: a disabled Danger button looked enabled (no ``:disabled`` rule), and the
    spin box's arrows were invisible (dark on dark)."""
    enabled, disabled = QPushButton("Stop"), QPushButton("Stop")
    for button in (enabled, disabled):
        button.setObjectName("Danger")
    disabled.setEnabled(False)
    spin = QSpinBox()
    spin.setValue(2)
    host = _styled(enabled, disabled, spin)
    qapp.processEvents()

    def fill(button: QPushButton) -> QColor:
        image = button.grab().toImage()
        return image.pixelColor(6, image.height() // 2)  # inside, left of the text

    on, off = fill(enabled), fill(disabled)
    assert abs(on.lightness() - off.lightness()) + abs(on.saturation() - off.saturation()) > 20, (
        on.name(),
        off.name(),
    )
    image = spin.grab().toImage()
    arrows = [
        image.pixelColor(x, y).lightness()
        for x in range(image.width() - 20, image.width())
        for y in range(image.height())
    ]
    assert max(arrows) > 140, "no light arrow pixels at the spin box's right edge"
    host.close()
