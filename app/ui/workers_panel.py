"""Workers panel: every live worker with its pool, heartbeat age, current jobs and counters.

Rows are grouped by pool (``default`` first) with a line per pool above the table. Each
row has **Drain** (finish the running jobs, take no more, exit) and **Stop** (hand the
running jobs back at once, exit); both ask first and name the worker they act on. A
worker asked to drain or stop shows it until its heartbeat says so or it is gone, so the
row never goes back to "idle" while the request travels.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.jobs import count_text
from mimir.app.services.timeseries import pool_order
from mimir.app.services.worker_names import worker_labels
from mimir.app.ui.common import Banner, panel_header
from mimir.app.ui.confirm import confirm
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtWorkersPanel", "WorkerActions"]

#: The actions (Drain, Stop) come right after the state they change; the worker's id
#: (``worker-<host>-<pid>``), host and pid are the name's tooltip.
_COLUMNS = [
    "Name",
    "Pool",
    "State",
    "",
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
_STATE = _COLUMNS.index("State")
_ACTIONS = _STATE + 1
_HEARTBEAT = _COLUMNS.index("Heartbeat")
_RIGHT = {_COLUMNS.index(c) for c in ("Slots", "Processed", "Succeeded", "Failed")} | {
    _COLUMNS.index("CPU"),
    _COLUMNS.index("Memory"),
}
_STATE_COLORS = {
    "draining": QColor("#E0B341"),
    "stopping": QColor("#FF6B6B"),
    "busy": QColor("#4C9AFF"),
    "idle": QColor("#9AA3B2"),
}

#: What each action does, for its confirmation.
_ACTION_TEXT = {
    "drain": (
        "Drain",
        "It finishes the jobs it runs now (within its grace period), takes no new ones and "
        "exits. What it cannot finish in time is handed back to the queue.",
    ),
    "stop": (
        "Stop",
        "It hands the jobs it runs now back to the queue at once (another worker runs them "
        "from the start) and exits.",
    ),
}


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


def _pool_of(worker: dict[str, Any]) -> str:
    return str(worker.get("pool") or "default")


class WorkerActions(QWidget):
    """A row's Drain and Stop buttons; ``worker_id`` is the worker the row shows now."""

    def __init__(self, panel: QtWorkersPanel) -> None:
        super().__init__()
        self.worker_id = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.setSpacing(4)
        self.drain_button = QPushButton("Drain")
        self.drain_button.setToolTip("Finish the running jobs, take no more, exit")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("Danger")
        self.stop_button.setToolTip("Hand the running jobs back to the queue and exit now")
        for button in (self.drain_button, self.stop_button):
            button.setStyleSheet("padding: 1px 6px;")
            button.setMinimumWidth(58)
            layout.addWidget(button)
        self.drain_button.clicked.connect(lambda: panel.control(self.worker_id, "drain"))
        self.stop_button.clicked.connect(lambda: panel.control(self.worker_id, "stop"))


class QtWorkersPanel(QWidget):
    def __init__(self, session: ConsoleSession | None) -> None:
        super().__init__()
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        root.addWidget(panel_header("Workers", "Live workers from their heartbeats, by pool"))
        self.summary = QLabel("No workers yet.")
        self.summary.setObjectName("Hint")
        root.addWidget(self.summary)
        #: One line per pool: its workers, busy slots, draining ones; a declared pool
        #: without a live worker is a warning.
        self.pools_label = QLabel("")
        self.pools_label.setWordWrap(True)
        self.pools_label.setTextFormat(Qt.TextFormat.RichText)
        root.addWidget(self.pools_label)
        self.banner = Banner()
        root.addWidget(self.banner)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(30)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setSectionResizeMode(_ACTIONS, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(_ACTIONS, 138)
        root.addWidget(self.table, 1)
        self.workers: list[dict[str, Any]] = []
        #: The pools the server declares (``GET /api/v1/pools``), for pools without workers.
        self.declared_pools: dict[str, dict[str, Any]] = {}
        #: Worker id → the action asked of it ("drain", "stop") until its heartbeat shows it.
        self.requested: dict[str, str] = {}
        #: Worker ids in row order (what each row's buttons act on).
        self.row_ids: list[str] = []
        #: The confirmation or request in flight (one at a time).
        self.acting = False
        self.session = session
        if session is not None:
            session.workers.connect(self.show_workers)
            session.pools.connect(self._on_pools)
            session.instances_changed.connect(lambda _i: self.show_workers(self.workers))
            if session.feed.last_pools:
                self.declared_pools = dict(session.feed.last_pools)

    def _names(self, workers: list[dict[str, Any]]) -> dict[str, str]:
        """The names the Dashboard and Logs use too (``worker-1`` …)."""
        if self.session is None:
            return worker_labels(workers, [])
        return self.session.worker_names(workers)

    def _on_pools(self, pools: dict[str, dict[str, Any]]) -> None:
        self.declared_pools = dict(pools)
        self._show_pools(self.workers)

    def state_of(self, worker: dict[str, Any]) -> str:
        """``stopping``, ``draining``, ``busy`` or ``idle``: what is asked wins over what
        the last heartbeat said, until the heartbeat catches up."""
        asked = self.requested.get(str(worker.get("worker_id")))
        if asked == "stop":
            return "stopping"
        if worker.get("draining") or asked == "drain":
            return "draining"
        return "busy" if worker.get("current_jobs") else "idle"

    def show_workers(self, workers: list[dict[str, Any]]) -> None:
        self.workers = list(workers)
        live = {str(w.get("worker_id")) for w in workers}
        for worker_id in [w for w in self.requested if w not in live]:
            del self.requested[worker_id]  # gone: the request is done
        for worker in workers:
            if worker.get("draining") and self.requested.get(str(worker.get("worker_id"))) == (
                "drain"
            ):
                del self.requested[str(worker.get("worker_id"))]  # the heartbeat says it now
        self.table.setRowCount(len(workers))
        slots = sum(int(w.get("concurrency", 0)) for w in workers)
        busy = sum(len(w.get("current_jobs") or []) for w in workers)
        done = sum(int(w.get("processed", 0)) for w in workers)
        self.summary.setText(
            f"{count_text(len(workers), 'worker')} · {busy}/{slots} slots busy · "
            f"{count_text(done, 'job')} processed"
        )
        self._show_pools(workers)
        names = self._names(workers)
        pools = pool_order([_pool_of(w) for w in workers])
        ordered = sorted(
            workers,
            key=lambda w: (
                pools.index(_pool_of(w)),
                _name_order(names.get(str(w.get("worker_id")), "")),
            ),
        )
        self.row_ids = [str(w.get("worker_id", "")) for w in ordered]
        previous_pool = None
        for row, worker in enumerate(ordered):
            age = float(worker.get("heartbeat_age_s", 0.0))
            current = worker.get("current_jobs") or []
            state = self.state_of(worker)
            pool = _pool_of(worker)
            cells = [
                names.get(str(worker.get("worker_id")), ""),
                pool,
                state,
                "",
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
                if column == 0:
                    item.setToolTip(
                        f"{worker.get('worker_id', '')} on {worker.get('hostname', '')}, "
                        f"pid {worker.get('pid', '')}"
                    )
                if column == _HEARTBEAT:
                    item.setForeground(_heartbeat_color(age))
                if column == _STATE:
                    item.setForeground(_STATE_COLORS[state])
                if column in _RIGHT:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                if column == 1:  # the pool's first row names it in bold: the groups show
                    font = item.font()
                    font.setBold(pool != previous_pool)
                    item.setFont(font)
            previous_pool = pool
            self._show_actions(row, str(worker.get("worker_id", "")), state)

    def _show_actions(self, row: int, worker_id: str, state: str) -> None:
        actions = self.table.cellWidget(row, _ACTIONS)
        if not isinstance(actions, WorkerActions):
            actions = WorkerActions(self)
            self.table.setCellWidget(row, _ACTIONS, actions)
        actions.worker_id = worker_id
        actions.drain_button.setEnabled(not self.acting and state in ("busy", "idle"))
        actions.stop_button.setEnabled(not self.acting and state != "stopping")

    def _show_pools(self, workers: list[dict[str, Any]]) -> None:
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for worker in workers:
            by_pool.setdefault(_pool_of(worker), []).append(worker)
        lines = []
        for pool in pool_order([*by_pool, *self.declared_pools]):
            members = by_pool.get(pool, [])
            if not members:
                queues = ", ".join((self.declared_pools.get(pool) or {}).get("queues") or [])
                served = f" (queues {queues})" if queues else ""
                lines.append(
                    f"<span style='color:#E0B341'>⚠ pool <b>{pool}</b>: no live worker; "
                    f"jobs for it{served} wait until one starts</span>"
                )
                continue
            slots = sum(int(w.get("concurrency", 0)) for w in members)
            busy = sum(len(w.get("current_jobs") or []) for w in members)
            draining = sum(1 for w in members if self.state_of(w) == "draining")
            extra = f", {draining} draining" if draining else ""
            lines.append(
                f"pool <b>{pool}</b>: {count_text(len(members), 'worker')}, "
                f"{busy}/{slots} slots busy{extra}"
            )
        self.pools_label.setText(" &nbsp;·&nbsp; ".join(lines))
        self.pools_label.setVisible(bool(lines))

    # ---------------------------------------------------------------- drain and stop

    @asyncSlot(str, str)
    async def control(self, worker_id: str, action: str) -> bool:
        """Ask, then have ``worker_id`` drain or stop; True when the server took it."""
        worker = next((w for w in self.workers if str(w.get("worker_id")) == worker_id), None)
        if worker is None or self.acting or self.session is None:
            return False
        name = self._names(self.workers).get(worker_id, worker_id)
        verb, detail = _ACTION_TEXT[action]
        self.acting = True
        self.show_workers(self.workers)  # the buttons off while the question is open
        try:
            if not await confirm(
                self,
                f"{verb} a worker",
                f"{verb} {name} ({worker_id}) of pool {_pool_of(worker)!r}?",
                verb,
                detail,
            ):
                return False
            try:
                await self.session.api.control_worker(worker_id, action)
            except ApiError as exc:
                self.banner.error(f"Cannot {action} {name}: {exc}")
                return False
            self.requested[worker_id] = action
            what = "drain" if action == "drain" else "stop"
            self.banner.ok(f"{name} was asked to {what}; it does so within one heartbeat.")
            return True
        finally:
            self.acting = False
            self.show_workers(self.workers)
