"""The console's main window: navigation, the panels, a status bar; remembers its layout."""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from mimir.app.cluster.base import ClusterStatus
from mimir.app.services.jobs import count_text
from mimir.app.ui.alerts_panel import AlertsIndicator, QtAlertsPanel
from mimir.app.ui.cluster_panel import QtClusterPanel
from mimir.app.ui.history_panel import PAGE as HISTORY_PAGE
from mimir.app.ui.history_panel import QtHistoryPanel
from mimir.app.ui.jobs_panel import QtJobsPanel
from mimir.app.ui.knowledge_panel import QtKnowledgePanel
from mimir.app.ui.logs_panel import QtLogsPanel
from mimir.app.ui.pipelines_panel import QtPipelinesPanel
from mimir.app.ui.schedules_panel import QtSchedulesPanel
from mimir.app.ui.session import ConsoleSession
from mimir.app.ui.workers_panel import QtWorkersPanel

__all__ = ["PANELS", "QtMainWindow"]

logger = logging.getLogger(__name__)

#: Navigation order: (key, label).
PANELS = [
    ("cluster", "Cluster"),
    ("dashboard", "Dashboard"),
    ("pipelines", "Pipelines"),
    ("jobs", "Jobs"),
    ("history", "History"),
    ("schedules", "Schedules"),
    ("alerts", "Alerts"),
    ("workers", "Workers"),
    ("logs", "Logs"),
    ("knowledge", "Knowledge"),
]

_MODE_TEXT = {
    "events": ("#4CC38A", "Connected · live events"),
    "polling": ("#E0B341", "Connected · polling"),
    "offline": ("#FF6B6B", "Offline"),
    "stopped": ("#8A93A3", "Not connected"),
}


class QtMainWindow(QMainWindow):
    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.setWindowTitle("Mimir AIP Console")
        self.resize(1360, 860)
        self.setMinimumSize(960, 620)

        self.cluster = QtClusterPanel(session)
        # The dashboard (pyqtgraph) is built just after the window shows: it is the one
        # slow panel to create, and the session records its data from the start anyway.
        self._dashboard: QWidget | None = None
        self._dashboard_slot = QWidget()
        self.pipelines = QtPipelinesPanel(session)
        self.jobs = QtJobsPanel(session)
        self.history = QtHistoryPanel(session)
        self.schedules = QtSchedulesPanel(session)
        self.alerts = QtAlertsPanel(session)
        self.workers = QtWorkersPanel(session)
        self.logs = QtLogsPanel(session)
        self.knowledge = QtKnowledgePanel(session)
        self.panels: dict[str, QWidget] = {
            "cluster": self.cluster,
            "dashboard": self._dashboard_slot,
            "pipelines": self.pipelines,
            "jobs": self.jobs,
            "history": self.history,
            "schedules": self.schedules,
            "alerts": self.alerts,
            "workers": self.workers,
            "logs": self.logs,
            "knowledge": self.knowledge,
        }

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        side = QWidget()
        side.setFixedWidth(190)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.setSpacing(0)
        brand = QLabel("◆ Mimir AIP")
        brand.setObjectName("Brand")
        sub = QLabel("Operator console")
        sub.setObjectName("BrandSub")
        side_layout.addWidget(brand)
        side_layout.addWidget(sub)
        self.nav = QListWidget()
        self.nav.setObjectName("NavList")
        self.nav.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for _key, label in PANELS:
            self.nav.addItem(label)
        side_layout.addWidget(self.nav, 1)
        self.stack = QStackedWidget()
        for key, _label in PANELS:
            self.stack.addWidget(self.panels[key])
        self.nav.currentRowChanged.connect(self._on_nav)
        layout.addWidget(side)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        for number in range(min(len(PANELS), 10)):  # Ctrl+1 … Ctrl+9, Ctrl+0
            QShortcut(QKeySequence(f"Ctrl+{(number + 1) % 10}"), self).activated.connect(
                lambda n=number: self.nav.setCurrentRow(n)
            )

        self.connection_label = QLabel()
        self.cluster_label = QLabel()
        self.profile_label = QLabel()
        self.alerts_indicator = AlertsIndicator(session)
        self.alerts_indicator.clicked.connect(lambda: self.show_panel("alerts"))
        self.alerts_indicator.changed.connect(lambda _a: self.alerts.refresh())
        self.schedules.open_run.connect(self._open_run)
        self.logs.open_job.connect(self._open_run)  # a job id clicked in a JSON log line
        self.statusBar().addWidget(self.connection_label)
        self.statusBar().addWidget(self.cluster_label)
        self.statusBar().addPermanentWidget(self.alerts_indicator)
        self.statusBar().addPermanentWidget(self.profile_label)
        session.connection.connect(self._on_connection)
        session.cluster_status.connect(self._on_cluster)
        session.profile_changed.connect(lambda p: self._on_profile(p.name))
        self._on_connection("stopped", "")
        self._on_profile(session.profile.name)
        self.cluster_label.setText("Cluster: unknown")
        self._restore()

    @property
    def dashboard(self):  # -> QtDashboardPanel, imported on first use
        if self._dashboard is None:
            from mimir.app.ui.dashboard_panel import QtDashboardPanel

            panel = QtDashboardPanel(self.session)
            index = self.stack.indexOf(self._dashboard_slot)
            current = self.stack.currentIndex()
            self.stack.insertWidget(index, panel)
            self.stack.removeWidget(self._dashboard_slot)
            self._dashboard_slot.deleteLater()
            self.panels["dashboard"] = panel
            self.stack.setCurrentIndex(current)
            self._dashboard = panel
        return self._dashboard

    # ---------------------------------------------------------------- navigation

    def show_panel(self, key: str) -> None:
        self.nav.setCurrentRow([k for k, _ in PANELS].index(key))

    def current_panel(self) -> str:
        return PANELS[max(0, self.nav.currentRow())][0]

    def _open_run(self, job_id: str) -> None:
        """Show one run in History (from the Schedules panel's recent runs, or a job id
        clicked in the Logs panel): its stored run, or the job live while it runs."""
        self.show_panel("history")
        self.history.show_run(job_id)

    def _on_nav(self, row: int) -> None:
        if row < 0:
            return
        key = PANELS[row][0]
        if key == "dashboard":
            self.dashboard  # noqa: B018 (built on first view)
        self.stack.setCurrentIndex(row)
        if key == "jobs":
            self.jobs.refresh()
        elif key == "history" and len(self.history.runs) <= HISTORY_PAGE:
            self.history.refresh()
        elif key == "pipelines" and self.pipelines.list.count() == 0:
            self.pipelines.refresh_list()
        elif key == "knowledge" and not self.knowledge.available:
            self.knowledge.check_available()

    # ---------------------------------------------------------------- status bar

    def _on_connection(self, mode: str, message: str) -> None:
        color, text = _MODE_TEXT.get(mode, ("#8A93A3", mode))
        self.connection_label.setText(f"<span style='color:{color}'>●</span> {text}")
        self.connection_label.setToolTip(message or self.session.api.base_url)

    def _on_cluster(self, status: ClusterStatus) -> None:
        workers = sum(s.replicas for s in status.services if s.kind == "worker")  # all pools
        state = "running" if status.running else "stopped"
        where = f" · {status.api_url}" if status.api_url else ""
        self.cluster_label.setText(
            f"Cluster {status.project} ({status.backend}): {state} · "
            f"{count_text(workers, 'worker')}{where}"
        )

    def _on_profile(self, name: str) -> None:
        self.profile_label.setText(f"Profile: {name}")

    # ---------------------------------------------------------------- persistence

    def _restore(self) -> None:
        settings = self.session.settings
        geometry = settings.value("window/geometry")
        if isinstance(geometry, QByteArray | bytes) and geometry:
            self.restoreGeometry(QByteArray(geometry))
        last = str(settings.value("window/panel", "cluster") or "cluster")
        keys = [k for k, _ in PANELS]
        self.nav.setCurrentRow(keys.index(last) if last in keys else 0)

    def save_layout(self) -> None:
        self.session.settings.setValue("window/geometry", self.saveGeometry())
        self.session.settings.setValue("window/panel", self.current_panel())
        self.session.settings.sync()

    def start(self) -> None:
        """Connect: apply the current profile, start the feed, first refreshes."""
        self.session.apply_profile(self.session.profile)
        self.session.start()
        QTimer.singleShot(0, self.pipelines.refresh_list)
        QTimer.singleShot(50, lambda: self.dashboard)
        # A child timer, not QTimer.singleShot: shutdown() stops every child timer, so a
        # window shut down within its first half second never polls alerts afterwards.
        first_alerts = QTimer(self)
        first_alerts.setSingleShot(True)
        first_alerts.timeout.connect(self.alerts_indicator.start)
        first_alerts.start(500)

    async def shutdown(self) -> None:
        """Stop timers, streams and the client; cancel what the panels still run."""
        for timer in self.findChildren(QTimer):
            timer.stop()
        await self.logs.stop()
        await self.history.stop()
        await self.session.close()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_layout()
        super().closeEvent(event)
