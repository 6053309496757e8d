"""Logs panel: the cluster's logs streamed per service, per worker or merged; filter, pause.

Choosing another source starts its stream on an empty view (lines of the last choice never
mix in). The view shows the start of its lines after a filter, not the end of the longest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from PySide6.QtGui import QFont, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mimir.app.cluster.base import ClusterError, ClusterStatus, LogLine
from mimir.app.cluster.instances import Instance
from mimir.app.services.jobs import count_text
from mimir.app.ui.common import Banner, panel_header
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtLogsPanel"]

logger = logging.getLogger(__name__)

#: Lines kept in memory (and shown) at most.
MAX_LINES = 5000


def _instance_order(instance: Instance) -> tuple[str, int]:
    """``worker-2`` before ``worker-10``."""
    head, _, tail = instance.name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (instance.name, 0)


class QtLogsPanel(QWidget):
    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.lines: deque[LogLine] = deque(maxlen=MAX_LINES)
        self.received = 0
        self._pending: list[LogLine] = []
        self._task: asyncio.Task[None] | None = None
        self._sources: list[tuple[str, str]] = []
        self._build()
        session.cluster_status.connect(self._on_status)
        session.instances_changed.connect(lambda _i: self._fill_sources())
        session.profile_changed.connect(lambda _p: self.restart_stream())

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Logs", "The cluster's services, streamed"))
        bar = QHBoxLayout()
        self.service_combo = QComboBox()
        self.service_combo.addItem("All services (merged)", None)
        self.service_combo.currentIndexChanged.connect(lambda _i: self.restart_stream())
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter lines…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._rerender)
        self.pause_box = QCheckBox("Pause")
        self.pause_box.toggled.connect(self._on_pause)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        self.count_label = QLabel("")
        self.count_label.setObjectName("Hint")
        bar.addWidget(self.service_combo)
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.count_label)
        bar.addWidget(self.pause_box)
        bar.addWidget(self.clear_button)
        root.addLayout(bar)
        # Below the toolbar: a message appearing never moves a control from under the pointer.
        self.banner = Banner()
        root.addWidget(self.banner)
        self.view = QPlainTextEdit()
        self.view.setObjectName("Code")
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(MAX_LINES)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = QFont("DejaVu Sans Mono")
        font.setPointSize(9)
        self.view.setFont(font)
        root.addWidget(self.view, 1)

    # ---------------------------------------------------------------- stream

    def _on_status(self, status: ClusterStatus) -> None:
        self._fill_sources(status)
        if status.running and (self._task is None or self._task.done()):
            self.restart_stream()

    def _fill_sources(self, status: ClusterStatus | None = None) -> None:
        """Each service, and each worker on its own (from the cluster's instances)."""
        status = status or self.session.last_cluster_status
        if status is None:
            return
        project = self.session.backend.project if self.session.backend else ""
        sources: list[tuple[str, str]] = []
        for service in status.services:
            if service.state == "missing":
                continue
            if service.kind == "worker":
                workers = sorted(
                    (i for i in self.session.instances if i.kind == "worker"),
                    key=_instance_order,
                )
                label = "worker (all)" if workers else service.name
                sources.append((label, service.name))
                for instance in workers:
                    short = instance.name.removeprefix(f"{project}-") if project else instance.name
                    sources.append((f"   {short}", instance.name))
            else:
                sources.append((service.name, service.name))
        if sources == self._sources:
            return
        self._sources = sources
        current = self.service_combo.currentData()
        self.service_combo.blockSignals(True)
        self.service_combo.clear()
        self.service_combo.addItem("All services (merged)", None)
        for label, name in sources:
            self.service_combo.addItem(label, name)
        index = self.service_combo.findData(current)
        self.service_combo.setCurrentIndex(max(0, index))
        self.service_combo.blockSignals(False)
        if current is not None and index < 0:  # the worker it showed is gone
            self.restart_stream()

    def restart_stream(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = None
        self.clear()  # the lines shown belong to the last choice
        if self.session.backend is None:
            self.banner.info("This profile talks to an API only: its logs are not reachable.")
            return
        self.banner.clear_message()
        service = self.service_combo.currentData()
        self._task = asyncio.ensure_future(self._follow([service] if service else None))

    async def _follow(self, services: list[str] | None) -> None:
        backend = self.session.backend
        assert backend is not None
        try:
            async for line in backend.logs(services, follow=True, tail=200):
                self.add_line(line)
        except asyncio.CancelledError:
            raise
        except ClusterError as exc:
            self.banner.info(f"No logs: {exc}")
        except Exception as exc:  # the stream ends; the panel stays usable
            logger.warning("log stream ended: %s", exc)
            self.banner.error(f"Log stream ended: {exc}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # ---------------------------------------------------------------- lines

    def _format(self, line: LogLine) -> str:
        return f"{line.service:<10} │ {line.line}"

    def _matches(self, line: LogLine) -> bool:
        needle = self.filter_edit.text().strip().lower()
        return not needle or needle in line.line.lower() or needle in line.service.lower()

    def add_line(self, line: LogLine) -> None:
        self.lines.append(line)
        self.received += 1
        if self.pause_box.isChecked():
            return
        if self._matches(line):
            self.view.appendPlainText(self._format(line))
        if self.received % 50 == 1:
            self.count_label.setText(count_text(len(self.lines), "line"))

    def _on_pause(self, paused: bool) -> None:
        if not paused:
            self._rerender()

    def _rerender(self) -> None:
        shown = [self._format(line) for line in self.lines if self._matches(line)]
        self.view.setPlainText("\n".join(shown[-MAX_LINES:]))
        # To the last line, at its start: the end of a long line would scroll right.
        self.view.moveCursor(QTextCursor.MoveOperation.End)
        self.view.moveCursor(QTextCursor.MoveOperation.StartOfLine)
        self.view.horizontalScrollBar().setValue(0)
        self.count_label.setText(f"{len(shown)} of {count_text(len(self.lines), 'line')}")

    def clear(self) -> None:
        self.lines.clear()
        self.view.clear()
        self.count_label.setText("")
