"""Dashboard panel: KPI cards and live pyqtgraph plots of the queue, throughput, worker
pools and workers.

The pools' row plots each pool's running replicas next to its queue depth (jobs waiting),
with the autoscaler's decisions marked on the time axis of both: a dashed vertical line
at each, labelled ``default 1→4`` on the replicas plot.

Samples go into bounded ring buffers (Qt-free :mod:`~mimir.app.services.timeseries`); a
1 Hz timer redraws. Curves are created once and updated with ``setData``; each is capped
to a few hundred points by peak downsampling, and plots clip to view, so an hour of data
costs the same to draw as a minute.
"""

from __future__ import annotations

import time
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from mimir.app.services.timeseries import DashboardRecorder, ScaleDecision, peak_downsample
from mimir.app.ui.common import Card, panel_header
from mimir.app.ui.session import ConsoleSession

__all__ = ["QtDashboardPanel"]

WINDOWS = {"Last 5 minutes": 300.0, "Last hour": 3600.0}
#: Points per curve after downsampling; enough for a full-width plot.
MAX_POINTS = 600
_PALETTE = ["#4C9AFF", "#4CC38A", "#E0B341", "#FF6B6B", "#B39DDB", "#36C5D6", "#FF9F5A"]

# Antialiasing and grid lines triple the cost of a repaint in the raster engine; without
# them an hour of six series repaints well inside a frame.
pg.setConfigOptions(antialias=False, background="#1A1E25", foreground="#9AA3B2")


def _pen(color: str, width: float = 1.0) -> Any:
    return pg.mkPen(color=color, width=width)


class QtDashboardPanel(QWidget):
    """Live plots; feed it with :meth:`add_stats` / :meth:`add_workers` (the session does)."""

    def __init__(
        self, session: ConsoleSession | None, recorder: DashboardRecorder | None = None
    ) -> None:
        super().__init__()
        self.session = session
        # The session records from start-up; the panel may be built later and draws it.
        self.recorder = recorder or (session.recorder if session else DashboardRecorder())
        self.series = self.recorder.series
        self.window_seconds = 300.0
        self._worker_ids: list[str] = []
        #: Worker id → the name its curves carry in the legends.
        self.worker_names: dict[str, str] = {}
        self._pool_names: list[str] = []
        #: The decision markers drawn now: (line on the replicas plot, line on the depth plot).
        self.decision_lines: list[tuple[Any, Any]] = []
        #: The decisions those markers show, in the same order (for tests and tooltips).
        self.shown_decisions: list[ScaleDecision] = []
        self._build()
        if session is not None:
            session.stats.connect(self._show_cards)
        self._show_cards(self.recorder.last_stats)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        self.redraw()

    # ---------------------------------------------------------------- layout

    def _plot(self, title: str, unit: str = "") -> pg.PlotItem:
        plot = self.graphics.addPlot(title=f"<span style='color:#D7DCE4'>{title}</span>")
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.setLabel("bottom", "minutes ago")
        if unit:
            plot.setLabel("left", unit)
        plot.addLegend(offset=(8, 4), labelTextColor="#C9CFD9", brush=pg.mkBrush("#1A1E25CC"))
        plot.getViewBox().setLimits(yMin=0)
        return plot

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 16, 20, 16)
        root.setSpacing(10)
        head = QHBoxLayout()
        head.addWidget(
            panel_header("Dashboard", "Queue, throughput, worker pools and workers, live"), 1
        )
        self.window_combo = QComboBox()
        self.window_combo.addItems(list(WINDOWS))
        self.window_combo.currentTextChanged.connect(self._on_window)
        head.addWidget(QLabel("Window"))
        head.addWidget(self.window_combo)
        root.addLayout(head)

        cards = QGridLayout()
        cards.setSpacing(10)
        self.cards = {
            "queued": Card("Queued", "#D7DCE4"),
            "running": Card("Running", "#4C9AFF"),
            "workers": Card("Workers alive", "#36C5D6"),
            "succeeded": Card("Succeeded", "#4CC38A"),
            "failed": Card("Failed", "#FF6B6B"),
            "dead": Card("Dead letter", "#FF4D8D"),
            "rate": Card("Completed / s", "#E0B341"),
        }
        for column, card in enumerate(self.cards.values()):
            cards.addWidget(card, 0, column)
        root.addLayout(cards)

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.ci.setSpacing(12)
        root.addWidget(self.graphics, 1)
        self.depth_plot = self._plot("Queue depth and running jobs", "jobs")
        self.rate_plot = self._plot("Completed and failed per second", "jobs/s")
        self.graphics.nextRow()
        self.replicas_plot = self._plot("Replicas per pool (running) and autoscaler decisions")
        self.pool_depth_plot = self._plot("Queue depth per pool (waiting)", "jobs")
        self.graphics.nextRow()
        self.workers_plot = self._plot("Workers alive")
        self.cpu_plot = self._plot("Worker CPU", "%")
        self.mem_plot = self._plot("Worker memory", "MiB")
        self.graphics.ci.layout.setColumnStretchFactor(0, 3)
        # The top rows' two plots span the three columns of the bottom row.
        for row, plot in ((0, self.rate_plot), (1, self.pool_depth_plot)):
            self.graphics.ci.removeItem(plot)
            self.graphics.ci.addItem(plot, row=row, col=1, colspan=2)
        self.replicas_plot.getAxis("left").setTickSpacing(minor=1)

        self.curves: dict[str, Any] = {}
        for name, label, color, plot in (
            ("q:high", "high", "#FF6B6B", self.depth_plot),
            ("q:normal", "normal", "#4C9AFF", self.depth_plot),
            ("q:low", "low", "#9AA3B2", self.depth_plot),
            ("running", "running", "#4CC38A", self.depth_plot),
            ("completed", "completed/s", "#4CC38A", self.rate_plot),
            ("failed", "failed/s", "#FF6B6B", self.rate_plot),
            ("workers", "workers", "#36C5D6", self.workers_plot),
        ):
            curve = plot.plot([], [], name=label, pen=_pen(color))
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
            self.curves[name] = curve
        self.workers_curve_fill = self.curves["workers"]
        self.workers_curve_fill.setFillLevel(0)
        self.workers_curve_fill.setBrush(pg.mkBrush("#36C5D633"))

    def _on_window(self, text: str) -> None:
        self.window_seconds = WINDOWS.get(text, 300.0)
        self.redraw()

    # ---------------------------------------------------------------- data in

    def add_stats(self, stats: dict[str, Any], t: float | None = None) -> None:
        """Record one queue-status sample (the session does this for live data)."""
        self.recorder.add_stats(stats, time.time() if t is None else t)
        self._show_cards(stats)

    def add_workers(self, workers: list[dict[str, Any]], t: float | None = None) -> None:
        self.recorder.add_workers(workers, time.time() if t is None else t)

    def _show_cards(self, stats: dict[str, Any]) -> None:
        if not stats:
            return
        totals = stats.get("totals") or {}
        self.cards["queued"].set(stats.get("queue_length", 0))
        self.cards["running"].set(stats.get("running", 0))
        self.cards["workers"].set(stats.get("workers", 0))
        self.cards["succeeded"].set(totals.get("succeeded", 0))
        self.cards["failed"].set(totals.get("failed", 0))
        self.cards["dead"].set(stats.get("dead", totals.get("dead", 0)))
        self.cards["rate"].set(f"{float(stats.get('completed_per_sec', 0.0)):.1f}")

    def _rebuild_pool_curves(self) -> None:
        for plot in (self.replicas_plot, self.pool_depth_plot):
            for key in [k for k in self.curves if k.split(":", 1)[0] in ("replicas", "queued")]:
                plot.removeItem(self.curves[key])
            if plot.legend is not None:
                plot.legend.clear()
        for key in [k for k in self.curves if k.split(":", 1)[0] in ("replicas", "queued")]:
            del self.curves[key]
        for index, pool in enumerate(self._pool_names):
            color = _PALETTE[index % len(_PALETTE)]
            for prefix, plot in (
                ("replicas", self.replicas_plot),
                ("queued", self.pool_depth_plot),
            ):
                curve = plot.plot(
                    [], [], name=pool, pen=_pen(color, 2.0 if prefix == "replicas" else 1.0)
                )
                curve.setDownsampling(auto=True, method="peak")
                curve.setClipToView(True)
                self.curves[f"{prefix}:{pool}"] = curve

    def _pool_color(self, pool: str) -> str:
        index = self._pool_names.index(pool) if pool in self._pool_names else len(self._pool_names)
        return _PALETTE[index % len(_PALETTE)]

    def _draw_decisions(self, now: float, span: float) -> None:
        """A dashed line at each decision in the window, on both pool plots; the replicas
        plot's says ``pool from→to``. Lines are reused, never piled up."""
        shown = [d for d in self.recorder.decisions if now - span <= d.t <= now + 1.0]
        while len(self.decision_lines) < len(shown):
            lines = []
            for plot, labelled in ((self.replicas_plot, True), (self.pool_depth_plot, False)):
                line = pg.InfiniteLine(
                    angle=90,
                    movable=False,
                    label="" if labelled else None,
                    labelOpts={"position": 0.97, "anchors": [(0, 0), (1, 0)]} if labelled else None,
                )
                plot.addItem(line, ignoreBounds=True)
                lines.append(line)
            self.decision_lines.append((lines[0], lines[1]))
        while len(self.decision_lines) > len(shown):
            for line, plot in zip(
                self.decision_lines.pop(), (self.replicas_plot, self.pool_depth_plot), strict=True
            ):
                plot.removeItem(line)
        for index, (decision, (labelled, plain)) in enumerate(
            zip(shown, self.decision_lines, strict=True)
        ):
            color = self._pool_color(decision.pool)
            pen = pg.mkPen(color=color, width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
            x = (decision.t - now) / 60.0
            for line in (labelled, plain):
                line.setPen(pen)
                line.setPos(x)
            if labelled.label is not None:
                # The four newest decisions are labelled, each at its own height, the newest
                # highest (no two labels overlap); older ones keep their line and tooltip.
                rank = len(shown) - 1 - index
                labelled.label.setFormat(decision.label if rank < 4 else "")
                labelled.label.setColor(color)
                labelled.label.setPosition(0.97 - 0.09 * min(rank, 3))
            labelled.setToolTip(
                f"{decision.label}" + (f": {decision.reason}" if decision.reason else "")
            )
        self.shown_decisions = shown

    def _rebuild_worker_curves(self) -> None:
        for plot in (self.cpu_plot, self.mem_plot):
            plot.clear()
            if plot.legend is not None:
                plot.legend.clear()

        def name_of(wid: str) -> str:
            return self.worker_names.get(wid, wid.removeprefix("worker-"))

        def natural(wid: str) -> tuple[str, int]:  # worker-2 before worker-10
            head, _, tail = name_of(wid).rpartition("-")
            return (head, int(tail)) if tail.isdigit() else (name_of(wid), 0)

        for index, wid in enumerate(sorted(self._worker_ids, key=natural)):
            color = _PALETTE[index % len(_PALETTE)]
            name = name_of(wid)
            for prefix, plot in (("cpu", self.cpu_plot), ("mem", self.mem_plot)):
                curve = plot.plot([], [], name=name, pen=_pen(color))
                curve.setDownsampling(auto=True, method="peak")
                curve.setClipToView(True)
                self.curves[f"{prefix}:{wid}"] = curve
        for key in [k for k in self.curves if k[:4] in ("cpu:", "mem:")]:
            if key[4:] not in self._worker_ids:
                del self.curves[key]

    # ---------------------------------------------------------------- drawing

    def _current_worker_names(self) -> dict[str, str]:
        if self.session is None:
            return {w: w.removeprefix("worker-") for w in self.recorder.worker_ids}
        return self.session.worker_names()

    def redraw(self) -> None:
        names = self._current_worker_names()
        if self.recorder.worker_ids != self._worker_ids or names != self.worker_names:
            self._worker_ids = list(self.recorder.worker_ids)
            self.worker_names = names
            self._rebuild_worker_curves()
        if self.recorder.pool_names != self._pool_names:
            self._pool_names = list(self.recorder.pool_names)
            self._rebuild_pool_curves()
        now = time.time()
        span = self.window_seconds
        for name, curve in self.curves.items():
            if name not in self.series.series:
                continue
            t, v = self.series[name].window(span, now)
            t, v = peak_downsample(t, v, MAX_POINTS)
            curve.setData((t - now) / 60.0, v)
        self._draw_decisions(now, span)
        # Replicas from 0, with room above the highest for the decisions' labels.
        highest = max(
            (
                float(self.series[k].window(span, now)[1].max(initial=0.0))
                for k in self.curves
                if k.startswith("replicas:") and k in self.series.series
            ),
            default=0.0,
        )
        self.replicas_plot.setYRange(0, max(1.0, highest) * 1.8 + 0.5, padding=0)
        for plot in (
            self.depth_plot,
            self.rate_plot,
            self.replicas_plot,
            self.pool_depth_plot,
            self.workers_plot,
            self.cpu_plot,
            self.mem_plot,
        ):
            plot.setXRange(-span / 60.0, 0, padding=0.01)
