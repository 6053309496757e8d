"""Logs panel: the cluster's logs streamed per service, per worker or merged; filter, pause.

Choosing another source starts its stream on an empty view (lines of the last choice never
mix in). The view shows the start of its lines after a filter, not the end of the longest.

JSON lines (``MIMIR_LOG_FORMAT=json``) show as time (local), level (coloured: debug grey,
info green, warning amber, error red), logger, message, then the job id as a link (a click
opens the job: :attr:`QtLogsPanel.open_job`) and the context the line carries; any other
line shows as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections import deque

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QMouseEvent, QTextCursor
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
from mimir.app.services.loglines import JsonLine, parse_json_line, shown_time
from mimir.app.ui.common import DIM_COLOR, LEVEL_COLORS, LINK_COLOR, Banner, panel_header
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtLogsPanel"]

logger = logging.getLogger(__name__)

#: Lines kept in memory (and shown) at most.
MAX_LINES = 5000


def _instance_order(instance: Instance) -> tuple[str, int]:
    """``worker-2`` before ``worker-10``."""
    head, _, tail = instance.name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (instance.name, 0)


#: The href of a job id's link in the view.
JOB_LINK = "job:"


class LogView(QPlainTextEdit):
    """The panel's text view: ``link_clicked(href)`` when a link (a job id) is clicked,
    the pointer a hand over a link."""

    link_clicked = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.viewport().setMouseTracking(True)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        super().mouseMoveEvent(event)
        over_link = bool(self.anchorAt(event.position().toPoint()))
        self.viewport().setCursor(
            Qt.CursorShape.PointingHandCursor if over_link else Qt.CursorShape.IBeamCursor
        )

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        href = self.anchorAt(event.position().toPoint())
        super().mouseReleaseEvent(event)
        # A click, not the end of a selection drag that happens to stop on a link.
        left = event.button() == Qt.MouseButton.LeftButton
        if href and left and not self.textCursor().hasSelection():
            self.link_clicked.emit(href)


def _span(text: str, color: str | None = None, bold: bool = False) -> str:
    style = (f"color:{color};" if color else "") + ("font-weight:600;" if bold else "")
    escaped = html.escape(text, quote=False)
    return f'<span style="{style}">{escaped}</span>' if style else escaped


def json_line_html(service: str, record: JsonLine, width: int = 10) -> str:
    """One JSON record as a line of the view (HTML, spaces kept). The job id is a link:
    where the message names the job, that mention; else ``job <id>`` before the message,
    where a long line never pushes it out of view."""
    dim = DIM_COLOR.name()
    level = LEVEL_COLORS.get(record.level)
    message_colour = dim if record.level == "DEBUG" else None
    parts = [
        _span(f"{service:<{width}} │ "),
        _span(shown_time(record.time), dim),
        " ",
        _span(f"{record.level:<7}", level.name() if level else None, bold=True),
        " ",
        _span(f"{record.logger}:", dim),
        " ",
    ]
    job_id = record.job_id
    if job_id and job_id in record.message:
        before, _, after = record.message.partition(job_id)
        parts += [
            _span(before, message_colour),
            _link(job_id, job_id),
            _span(after, message_colour),
        ]
    else:
        if job_id:
            parts += [_link(job_id, f"job {job_id[:12]}"), " "]
        parts.append(_span(record.message, message_colour))
    shown = {k: v for k, v in record.context.items() if k != "worker_id"}  # the service says
    if shown:
        parts.append(_span("  " + " ".join(f"{k}={v}" for k, v in shown.items()), dim))
    if record.exc:
        last = record.exc.strip().splitlines()[-1] if record.exc.strip() else ""
        parts.append(_span(f"  ⤷ {last}", LEVEL_COLORS["ERROR"].name()))
    return f'<span style="white-space:pre">{"".join(parts)}</span>'


def _link(job_id: str, text: str) -> str:
    href = html.escape(JOB_LINK + job_id)
    return f'<a href="{href}" style="color:{LINK_COLOR.name()};">{html.escape(text)}</a>'


class QtLogsPanel(QWidget):
    #: The operator clicked a job id in a JSON line: that job's id.
    open_job = Signal(str)

    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.lines: deque[LogLine] = deque(maxlen=MAX_LINES)
        self.received = 0
        #: Width of the service column: 10, or the longest service name seen.
        self._width = 10
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
        self.view = LogView()
        self.view.link_clicked.connect(self._on_link)
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
        return f"{line.service:<{self._width}} │ {line.line}"

    def _matches(self, line: LogLine, record: JsonLine | None) -> bool:
        needle = self.filter_edit.text().strip().lower()
        if not needle or needle in line.service.lower():
            return True
        # A JSON line by what it shows (its keys would match every line).
        return needle in (record.text if record is not None else line.line).lower()

    def _append(self, line: LogLine, record: JsonLine | None) -> None:
        if record is None:
            self.view.appendPlainText(self._format(line))
        else:
            self.view.appendHtml(json_line_html(line.service, record, self._width))

    def _on_link(self, href: str) -> None:
        if href.startswith(JOB_LINK) and len(href) > len(JOB_LINK):
            self.open_job.emit(href[len(JOB_LINK) :])

    def add_line(self, line: LogLine) -> None:
        self.lines.append(line)
        self.received += 1
        if self.pause_box.isChecked():
            return
        if len(line.service) > self._width:  # e.g. worker-slow-1: the column widens
            self._width = len(line.service)
            self._rerender()
            return
        record = parse_json_line(line.line)
        if self._matches(line, record):
            self._append(line, record)
        if self.received % 50 == 1:
            self.count_label.setText(count_text(len(self.lines), "line"))

    def _on_pause(self, paused: bool) -> None:
        if not paused:
            self._rerender()

    def _rerender(self) -> None:
        self._width = max([10, *(len(line.service) for line in self.lines)])
        parsed = [(line, parse_json_line(line.line)) for line in self.lines]
        shown = [(line, record) for line, record in parsed if self._matches(line, record)]
        self.view.clear()
        for line, record in shown[-MAX_LINES:]:
            self._append(line, record)
        # To the last line, at its start: the end of a long line would scroll right.
        self.view.moveCursor(QTextCursor.MoveOperation.End)
        self.view.moveCursor(QTextCursor.MoveOperation.StartOfLine)
        self.view.horizontalScrollBar().setValue(0)
        self.count_label.setText(f"{len(shown)} of {count_text(len(self.lines), 'line')}")

    def clear(self) -> None:
        self.lines.clear()
        self._width = 10
        self.view.clear()
        self.count_label.setText("")
