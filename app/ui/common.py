"""Small widgets every panel uses: the error/info banner, titles, KPI cards, styling."""

from __future__ import annotations

import logging

from PySide6.QtCore import QDir, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

__all__ = ["STATUS_COLORS", "Banner", "Card", "load_stylesheet", "panel_header"]

logger = logging.getLogger(__name__)


#: Colour of each job/service state, shared by tables and plots.
STATUS_COLORS: dict[str, QColor] = {
    "queued": QColor("#9AA3B2"),
    "scheduled": QColor("#B39DDB"),
    "running": QColor("#4C9AFF"),
    "succeeded": QColor("#4CC38A"),
    "failed": QColor("#FF6B6B"),
    "cancelled": QColor("#C9A227"),
    "dead": QColor("#FF4D8D"),
    "healthy": QColor("#4CC38A"),
    "unhealthy": QColor("#FF6B6B"),
    "starting": QColor("#E0B341"),
    "stopped": QColor("#8A93A3"),
    "missing": QColor("#6C7586"),
    "stale": QColor("#E0B341"),
}


def load_stylesheet() -> str:
    """The console's stylesheet, shipped as package data (``mimir.resources``)."""
    from mimir.core.resources import ResourceError, stylesheet

    try:
        path = stylesheet()
        QDir.addSearchPath("styles", str(path.parent))  # url(styles:arrow-up.png) …
        return path.read_text(encoding="utf-8")
    except (ResourceError, OSError) as exc:
        logger.warning("stylesheet not found: %s", exc)
        return ""


class Banner(QLabel):
    """An inline message: errors stay visible in the panel, not only in a log.

    A message may name its ``source`` (``"list"``, ``"query"`` …): when that source later
    succeeds, ``clear_message(source=…)`` takes its message away and leaves others. Panels
    place the banner below their toolbar, so showing it never moves a button away from
    under the pointer.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setMinimumHeight(36)
        self.setMargin(8)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.source = ""
        self.hide()

    def _show(self, kind: str, text: str, source: str) -> None:
        self.source = source
        self.setObjectName(kind)
        self.setStyleSheet("")  # re-polish with the new object name
        self.style().unpolish(self)
        self.style().polish(self)
        self.setText(text)
        self.show()

    def error(self, text: str, source: str = "") -> None:
        self._show("BannerError", text, source)

    def info(self, text: str, source: str = "") -> None:
        self._show("BannerInfo", text, source)

    def ok(self, text: str, source: str = "") -> None:
        self._show("BannerOk", text, source)

    def clear_message(self, source: str | None = None) -> None:
        """Hide the message (with ``source``: only a message from that source)."""
        if source is not None and self.source != source:
            return
        self.source = ""
        self.hide()
        self.setText("")


def panel_header(title: str, subtitle: str) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    head = QLabel(title)
    head.setObjectName("PanelTitle")
    sub = QLabel(subtitle)
    sub.setObjectName("PanelSubtitle")
    layout.addWidget(head)
    layout.addWidget(sub)
    return box


class Card(QFrame):
    """A KPI tile: a big number over a small caption."""

    def __init__(self, label: str, color: str = "#FFFFFF") -> None:
        super().__init__()
        self.setObjectName("Card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        layout.setSpacing(2)
        self.value = QLabel("—")
        self.value.setObjectName("CardValue")
        self.value.setStyleSheet(f"color: {color};")
        caption = QLabel(label)
        caption.setObjectName("CardLabel")
        layout.addWidget(self.value)
        layout.addWidget(caption)

    def set(self, value: object) -> None:
        self.value.setText(str(value))
