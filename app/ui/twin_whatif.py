"""The Knowledge panel's what-if: a base scenario and one change (an entity's capacity,
demand or lead time by a percentage, or the entity out of service for some days), run
with several seeds as a batch of jobs on the workers (``POST /api/v1/twins/{id}/whatif``),
followed to the end (done/total), then the distribution of the key metrics: base and
variant mean with their p5-p95 whiskers, and which entities were the bottleneck how often.

The variant's bar is green when its mean is better for the operator than the base's, red
when worse, blue when the metric is neither (utilisation); the base's bar is grey.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from mimir.app.services.api import ApiError
from mimir.app.services.twins import (
    KEY_METRICS,
    PARAMETERS,
    SHARE_METRICS,
    DistributionRow,
    bottleneck_rows,
    describe_change,
    distribution_rows,
    outage_change,
    parameter_change,
)
from mimir.app.ui.common import Banner, data_table, set_row, table_item
from mimir.app.ui.twin_runs import VERDICT_COLORS

__all__ = ["WhatIfView"]

OUTAGE = "outage"
BASE_COLOR = "#8A93A3"
NEUTRAL_COLOR = "#4C9AFF"
#: How often a running batch is read.
POLL_SECONDS = 0.5


class WhatIfView(QWidget):
    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.twin_id: str | None = None
        self.labels: dict[str, str] = {}
        self.scenario_names: dict[str, str] = {}
        self._history_reads = 0  # an older list answering late never replaces a newer one
        self.batch: dict[str, Any] | None = None  # the last answer for the batch shown
        self.change_text = ""
        self.plots: list[Any] = []
        self.graphics: Any = None
        self._task: asyncio.Task[None] | None = None

        root = QVBoxLayout(self)
        root.setContentsMargins(0, 8, 0, 0)
        root.setSpacing(8)
        form = QHBoxLayout()
        self.scenario_combo = QComboBox()
        self.scenario_combo.setMinimumWidth(150)
        self.scenario_combo.setToolTip("The base scenario")
        self.target_combo = QComboBox()
        self.target_combo.setMinimumWidth(150)
        self.target_combo.setToolTip("The entity the change applies to")
        self.change_combo = QComboBox()
        for parameter, label in PARAMETERS.items():
            self.change_combo.addItem(label, parameter)
        self.change_combo.addItem("Out of service", OUTAGE)
        self.change_combo.currentIndexChanged.connect(lambda _i: self._change_kind())
        self.percent_spin = QDoubleSpinBox()
        self.percent_spin.setRange(-100.0, 500.0)
        self.percent_spin.setDecimals(0)
        self.percent_spin.setSingleStep(5)
        self.percent_spin.setValue(-30.0)
        self.percent_spin.setSuffix(" %")
        self.days_spin = QSpinBox()
        self.days_spin.setRange(1, 10_000)
        self.days_spin.setValue(10)
        self.days_spin.setPrefix("for ")
        self.days_spin.setSuffix(" days")
        self.from_spin = QSpinBox()
        self.from_spin.setRange(0, 1_000_000)
        self.from_spin.setValue(20)
        self.from_spin.setPrefix("from day ")
        self.seeds_spin = QSpinBox()
        self.seeds_spin.setRange(1, 100)
        self.seeds_spin.setValue(10)
        self.seeds_spin.setSuffix(" seeds")
        self.seeds_spin.setToolTip("Each seed runs the base and the variant once")
        self.run_button = QPushButton("Run what-if")
        self.run_button.setObjectName("Primary")
        self.run_button.clicked.connect(self.start)
        form.addWidget(QLabel("Base"))
        form.addWidget(self.scenario_combo)
        form.addWidget(QLabel("Change"))
        for widget in (
            self.target_combo,
            self.change_combo,
            self.percent_spin,
            self.days_spin,
            self.from_spin,
            self.seeds_spin,
            self.run_button,
        ):
            form.addWidget(widget)
        form.addStretch(1)
        root.addLayout(form)
        progress = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v of %m runs")
        self.progress.setMaximumWidth(320)
        self.progress.hide()
        self.status_label = QLabel("")
        self.status_label.setObjectName("Hint")
        self.status_label.setWordWrap(True)
        self.history_combo = QComboBox()
        self.history_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.history_combo.setMaximumWidth(480)
        self.history_combo.setToolTip("The twin's earlier what-ifs: choose one to show it again")
        self.history_combo.activated.connect(self._history_chosen)
        progress.addWidget(self.progress)
        progress.addWidget(self.status_label, 1)
        progress.addWidget(self.history_combo)
        root.addLayout(progress)
        self.banner = Banner()
        root.addWidget(self.banner)
        self.legend = QLabel(
            "Bars: the mean over the seeds; whiskers: p5 to p95. Base in grey; the variant "
            "green when better, red when worse, blue when neither (utilisation)."
        )
        self.legend.setObjectName("Hint")
        self.legend.hide()
        root.addWidget(self.legend)
        # The plots (pyqtgraph, imported when the first distribution is drawn).
        self.plot_holder = QVBoxLayout()
        root.addLayout(self.plot_holder, 5)
        bottom = QHBoxLayout()
        self.table = data_table(
            ["Metric", "Base mean (p5\u2013p95)", "Variant mean (p5\u2013p95)", "Δ mean"],
            (140, 220, 220),
        )
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.bottlenecks = data_table(
            ["Bottleneck", "Top, base", "Top, variant", "Days, base", "Days, variant"],
        )
        self.bottlenecks.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.bottlenecks.setToolTip(
            "Top: the share of the seeds in which the entity was the top bottleneck (longest "
            "over the threshold); Days: its mean days as a bottleneck over the seeds"
        )
        for table in (self.table, self.bottlenecks):
            # Columns as wide as their contents, the last one the rest (no manual resize:
            # resizing a stretched last column left a scroll bar over a table that fit).
            header = table.horizontalHeader()
            header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
            header.setSectionResizeMode(table.columnCount() - 1, QHeaderView.ResizeMode.Stretch)
        bottom.addWidget(self.table, 1)
        bottom.addWidget(self.bottlenecks, 1)
        self._bottom = bottom
        root.addLayout(bottom, 3)
        self._change_kind()

    def _change_kind(self) -> None:
        outage = self.change_combo.currentData() == OUTAGE
        self.percent_spin.setVisible(not outage)
        self.days_spin.setVisible(outage)
        self.from_spin.setVisible(outage)

    def set_twin(
        self, twin_id: str | None, scenarios: list[dict[str, Any]], entities: list[dict[str, Any]]
    ) -> None:
        if twin_id != self.twin_id:
            self.stop()
            self.twin_id = twin_id
            self.clear()
        current = self.scenario_combo.currentData()
        self.scenario_combo.clear()
        for scenario in scenarios:
            self.scenario_combo.addItem(scenario.get("name") or scenario["id"], scenario["id"])
        if current is not None and (index := self.scenario_combo.findData(current)) >= 0:
            self.scenario_combo.setCurrentIndex(index)
        target = self.target_combo.currentData()
        self.labels = {e["id"]: e.get("label") or e["id"] for e in entities}
        self.target_combo.clear()
        for entity in sorted(entities, key=lambda e: (e.get("label") or e["id"]).lower()):
            self.target_combo.addItem(entity.get("label") or entity["id"], entity["id"])
        if target is not None and (index := self.target_combo.findData(target)) >= 0:
            self.target_combo.setCurrentIndex(index)
        self.scenario_names = {s["id"]: s.get("name") or s["id"] for s in scenarios}
        self.run_button.setEnabled(bool(twin_id and scenarios and entities))

    def clear(self) -> None:
        self.batch = None
        self.legend.hide()
        self.progress.hide()
        self.status_label.setText("")
        self.table.setRowCount(0)
        self.bottlenecks.setRowCount(0)
        for plot in self.plots:
            plot.clear()
            plot.setTitle("")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def change(self) -> dict[str, Any]:
        """The change the form describes, as the API takes it."""
        target = str(self.target_combo.currentData() or "")
        kind = self.change_combo.currentData()
        if kind == OUTAGE:
            return outage_change(target, self.days_spin.value(), self.from_spin.value())
        return parameter_change(target, str(kind), self.percent_spin.value())

    @asyncSlot()
    async def start(self) -> None:
        await self.run_whatif()

    async def run_whatif(self) -> None:
        """Queue the batch the form describes; a task follows it (:meth:`follow`)."""
        twin_id, scenario_id = self.twin_id, self.scenario_combo.currentData()
        if not twin_id or not scenario_id or self.target_combo.currentData() is None:
            self.status_label.setText("Choose a twin, a base scenario and an entity.")
            return
        try:
            change = self.change()
        except ValueError as exc:
            self.banner.error(str(exc), source="whatif")
            return
        self.stop()
        self.clear()
        seeds = self.seeds_spin.value()
        self.change_text = (
            f"{describe_change(change, self.labels)} · base {self.scenario_combo.currentText()}"
            f" · {seeds} seed{'s' if seeds != 1 else ''}"
        )
        self.run_button.setEnabled(False)
        self.status_label.setText(f"Queueing {self.change_text}…")
        try:
            answer = await self.session.api.start_whatif(
                twin_id, scenario_id, [change], seeds=seeds
            )
        except ApiError as exc:
            self.banner.error(f"What-if refused: {exc}", source="whatif")
            self.status_label.setText("")
            self.run_button.setEnabled(True)
            return
        self.banner.clear_message(source="whatif")
        if answer.get("warning"):  # accepted all the same (no worker, identical seeds)
            self.banner.info(f"Note: {answer['warning']}", source="whatif-warning")
        else:
            self.banner.clear_message(source="whatif-warning")
        batch_id = str(answer["batch_id"])
        total = int(answer.get("runs") or answer.get("total") or 2 * seeds)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.progress.show()
        self.status_label.setText(f"{self.change_text}: queued")
        self._task = asyncio.ensure_future(self.follow(twin_id, batch_id))
        await self.load_history(select=batch_id)

    async def load_history(self, select: str | None = None) -> None:
        """The twin's what-ifs in the history combo, newest first (``select``: that one)."""
        twin_id = self.twin_id
        self._history_reads += 1
        read = self._history_reads
        if not twin_id:
            self.history_combo.clear()
            return
        try:
            batches = await self.session.api.list_whatifs(twin_id)
        except ApiError:
            return  # the combo keeps what it had; the form still works
        if twin_id != self.twin_id or read != self._history_reads:
            return  # a newer read (after a new batch) answers instead
        select = select or self.history_combo.currentData()
        self.history_combo.clear()
        self.history_combo.addItem(
            f"Earlier what-ifs ({len(batches)})" if batches else "No earlier what-ifs", None
        )
        for batch in reversed(batches):
            self.history_combo.addItem(self._batch_title(batch), batch.get("batch_id"))
        if select is not None and (index := self.history_combo.findData(select)) > 0:
            self.history_combo.setCurrentIndex(index)

    def _batch_title(self, batch: dict[str, Any]) -> str:
        changes = [c for c in batch.get("changes") or [] if isinstance(c, dict)]
        what = " + ".join(describe_change(c, self.labels) for c in changes) or "no change"
        seeds = batch.get("seeds") or []
        count = len(seeds) if isinstance(seeds, list) else int(seeds or 0)
        scenario = self.scenario_names.get(batch.get("scenario_id", ""), batch.get("scenario_id"))
        return f"{what} · base {scenario} · {count} seed{'s' if count != 1 else ''}"

    def _history_chosen(self, index: int) -> None:
        batch_id = self.history_combo.itemData(index)
        if batch_id and self.twin_id and (self.batch or {}).get("batch_id") != batch_id:
            self.show_earlier(str(batch_id))

    def show_earlier(self, batch_id: str) -> None:
        """Show an earlier batch (followed to its end if it still runs)."""
        twin_id = self.twin_id
        if not twin_id:
            return
        self.stop()
        self.clear()
        self.change_text = self.history_combo.currentText()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.show()
        self._task = asyncio.ensure_future(self.follow(twin_id, batch_id))

    async def follow(self, twin_id: str, batch_id: str) -> None:
        """Read the batch until it ends, showing done/total; then its distribution."""
        try:
            while twin_id == self.twin_id:
                try:
                    batch = await self.session.api.get_whatif(twin_id, batch_id)
                except ApiError as exc:
                    self.banner.error(f"Cannot read the what-if: {exc}", source="whatif")
                    if exc.status == 404:
                        return  # deleted with its twin, or another server's
                    await asyncio.sleep(2.0)
                    continue
                self.banner.clear_message(source="whatif")
                self.show_progress(batch)
                if batch.get("status") in ("succeeded", "failed"):
                    self.show_batch(batch)
                    if self.history_combo.findData(batch_id) < 0:
                        await self.load_history(select=batch_id)
                    return
                # Hidden (another panel or tab): read less often until shown again.
                await asyncio.sleep(POLL_SECONDS if self.isVisible() else 5.0)
        finally:
            self.run_button.setEnabled(bool(self.twin_id))

    def show_progress(self, batch: dict[str, Any]) -> None:
        total = int(batch.get("total") or self.progress.maximum() or 1)
        done = int(batch.get("done") or 0)
        self.progress.setRange(0, total)
        self.progress.setValue(min(done, total))
        failed = int(batch.get("failed") or 0)
        text = f"{self.change_text}: {batch.get('status', '?')}"
        if failed:
            text += f", {failed} of {total} runs failed"
        self.status_label.setText(text)

    def show_batch(self, batch: dict[str, Any]) -> None:
        """The distribution of a finished batch (tables and plots)."""
        self.batch = batch
        self.show_progress(batch)
        if batch.get("status") == "failed":
            failed = int(batch.get("failed") or 0)
            errors = [e for e in batch.get("errors") or [] if isinstance(e, dict)]
            why = batch.get("error") or (errors[0].get("error") if errors else None)
            self.banner.error(
                f"The what-if failed: {failed} of {batch.get('total')} runs failed"
                + (f" ({why})" if why else "")
                + "; the figures below are of the runs that succeeded.",
                source="whatif",
            )
        rows = distribution_rows(batch)
        self.table.setRowCount(len(rows))
        for row, line in enumerate(rows):
            delta = table_item(line.delta)
            if (color := VERDICT_COLORS.get(line.verdict)) is not None:
                delta.setForeground(color)
            set_row(
                self.table,
                row,
                [
                    table_item(line.label, line.metric),
                    table_item(line.base_text),
                    table_item(line.variant_text),
                    delta,
                ],
            )
        ranking = bottleneck_rows(batch)
        self.bottlenecks.setRowCount(len(ranking))
        for row, cells in enumerate(ranking):
            set_row(self.bottlenecks, row, [table_item(text) for text in cells])
        # Each table's share of the width as its contents need (neither cut nor scrolled
        # while both fit).
        for index, table in enumerate((self.table, self.bottlenecks)):
            header = table.horizontalHeader()
            last = table.columnCount() - 1
            needed = sum(
                max(table.sizeHintForColumn(c), header.sectionSizeHint(c)) for c in range(last)
            )
            # The stretched last column keeps at least the default section's width.
            needed += max(table.sizeHintForColumn(last), header.defaultSectionSize())
            # + the frame and a little room: one pixel short shows a scroll bar.
            self._bottom.setStretch(index, needed + 2 * table.frameWidth() + 12)
        self._plot([r for r in rows if r.metric in KEY_METRICS])
        self.legend.show()

    def _plot(self, rows: list[DistributionRow]) -> None:
        import numpy as np
        import pyqtgraph as pg

        if self.graphics is None:
            self.graphics = pg.GraphicsLayoutWidget()
            self.graphics.setMinimumHeight(200)
            self.plot_holder.addWidget(self.graphics)
        self.graphics.clear()
        self.plots = []
        for column, row in enumerate(rows):
            plot = self.graphics.addPlot(row=0, col=column)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            plot.setMenuEnabled(False)
            scale = 100.0 if row.metric in SHARE_METRICS else 1.0
            unit = " (%)" if scale == 100.0 else ""
            plot.setTitle(f"{row.label}{unit}", color="#C9CFD9", size="10pt")
            xs, means, lows, highs, brushes = [], [], [], [], []
            color = VERDICT_COLORS.get(row.verdict)
            variant_color = color.name() if color is not None else NEUTRAL_COLOR
            for x, (stats, brush) in enumerate(
                ((row.base, BASE_COLOR), (row.variant, variant_color))
            ):
                if stats is None:
                    continue
                mean, p5, p95 = (value * scale for value in stats)
                xs.append(float(x))
                means.append(mean)
                lows.append(max(mean - p5, 0.0))
                highs.append(max(p95 - mean, 0.0))
                brushes.append(pg.mkBrush(brush))
            if xs:
                plot.addItem(
                    pg.BarGraphItem(
                        x=xs, height=means, width=0.6, brushes=brushes, pen=pg.mkPen(None)
                    )
                )
                plot.addItem(
                    pg.ErrorBarItem(
                        x=np.array(xs),
                        y=np.array(means),
                        top=np.array(highs),
                        bottom=np.array(lows),
                        beam=0.25,
                        pen=pg.mkPen("#E6E9EF", width=2),
                    )
                )
                top = max(m + h for m, h in zip(means, highs, strict=True))
                plot.setYRange(0, top * 1.12 if top > 0 else 1.0, padding=0)
            plot.setXRange(-0.6, 1.6, padding=0)
            plot.getAxis("bottom").setTicks([[(0.0, "base"), (1.0, "variant")]])
            self.plots.append(plot)
