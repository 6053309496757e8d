"""Workers panel: every live worker with its heartbeat age, current jobs and counters."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mimir.app.services.jobs import count_text
from mimir.app.services.worker_names import worker_labels
from mimir.app.ui.common import panel_header
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtWorkersPanel"]

_COLUMNS = [
    "Name",
    "Worker",
    "Host",
    "PID",
    "Queues",
    "Slots",
    "Heartbeat",
    "Current jobs",
    "Processed",
    "Succeeded",
    "Failed",
    "CPU",
    "Memory",
]


def _heartbeat_color(age: float) -> QColor:
    if age < 3:
        return QColor("#4CC38A")
    if age < 10:
        return QColor("#E0B341")
    return QColor("#FF6B6B")


def _name_order(name: str) -> tuple[str, int]:
    """``worker-2`` before ``worker-10``."""
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, 0)


class QtWorkersPanel(QWidget):
    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Workers", "Live workers from their heartbeats"))
        self.summary = QLabel("No workers yet.")
        self.summary.setObjectName("Hint")
        root.addWidget(self.summary)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(_COLUMNS.index("Current jobs"), QHeaderView.ResizeMode.Stretch)
        root.addWidget(self.table, 1)
        self.workers: list[dict[str, Any]] = []
        self.session = session
        if session is not None:
            session.workers.connect(self.show_workers)
            session.instances_changed.connect(lambda _i: self.show_workers(self.workers))

    def _names(self, workers: list[dict[str, Any]]) -> dict[str, str]:
        """The names the Dashboard and Logs use too (``worker-1`` …)."""
        if self.session is None:
            return worker_labels(workers, [])
        return self.session.worker_names(workers)

    def show_workers(self, workers: list[dict[str, Any]]) -> None:
        self.workers = list(workers)
        self.table.setRowCount(len(workers))
        slots = sum(int(w.get("concurrency", 0)) for w in workers)
        busy = sum(len(w.get("current_jobs") or []) for w in workers)
        done = sum(int(w.get("processed", 0)) for w in workers)
        self.summary.setText(
            f"{count_text(len(workers), 'worker')} · {busy}/{slots} slots busy · "
            f"{count_text(done, 'job')} processed"
        )
        names = self._names(workers)
        ordered = sorted(workers, key=lambda w: _name_order(names.get(str(w.get("worker_id")), "")))
        for row, worker in enumerate(ordered):
            age = float(worker.get("heartbeat_age_s", 0.0))
            current = worker.get("current_jobs") or []
            cells = [
                names.get(str(worker.get("worker_id")), ""),
                str(worker.get("worker_id", "")),
                str(worker.get("hostname", "")),
                str(worker.get("pid", "")),
                ", ".join(worker.get("queues") or []),
                str(worker.get("concurrency", "")),
                f"{age:.1f} s ago",
                f"{len(current)}: " + ", ".join(j[:8] for j in current[:4]) if current else "idle",
                str(worker.get("processed", 0)),
                str(worker.get("succeeded", 0)),
                str(worker.get("failed", 0)),
                f"{float(worker.get('cpu_percent', 0.0)):.0f} %",
                f"{int(worker.get('memory_bytes', 0)) / 2**20:.0f} MiB",
            ]
            for column, text in enumerate(cells):
                item = self.table.item(row, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(row, column, item)
                item.setText(text)
                if column == 6:
                    item.setForeground(_heartbeat_color(age))
                if column in (3, 5, 8, 9, 10, 11, 12):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                if column == 7 and worker.get("draining"):
                    item.setText(item.text() + " (draining)")
