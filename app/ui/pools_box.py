"""The Cluster panel's worker pools: a row per pool with its replicas, its load, a scale
control and its autoscaling policy, editable in place.

What a row shows comes from three readings, each the newest of its kind: the cluster
backend's status (replicas running and wanted, per pool), ``GET /api/v1/pools`` (queues,
jobs waiting and running, the oldest job's age, jobs/s) and ``GET /api/v1/autoscaler``
(policy, min, max, whether it is scaling the pool, its last error). A field the operator
has changed and not saved is never overwritten by a reading; with no reading the row says
"no reading" and its policy fields "—", never numbers left from before. Before Start, a
chosen cluster file's pools show what Start would run. The box does no I/O itself: the
panel connects :attr:`PoolGroup.apply_requested` and :attr:`PoolGroup.save_requested` to
the backend and the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mimir.app.services.jobs import count_text, format_seconds
from mimir.app.services.timeseries import ScaleDecision, pool_order
from mimir.core.pools import AutoscalePolicy

__all__ = ["COLUMNS", "PoolGroup", "PoolsBox", "policy_body"]

_WARNING = "color: #E0B341;"
_ERROR = "color: #FF6B6B;"
#: Replicas a spin box offers (the server caps them at its MIMIR_MAX_WORKERS).
MAX_REPLICAS = 256


def policy_body(
    enabled: bool,
    minimum: int,
    maximum: int | None,
    target: float,
    base: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``PUT /api/v1/autoscaler/pools/{pool}`` body: the policy the server holds
    (``base``, its other fields kept) with what the group edits."""
    known = set(AutoscalePolicy.model_fields)
    body = {k: v for k, v in (base or {}).items() if k in known}
    body.update(enabled=enabled, target_backlog=target, min=minimum, max=maximum)
    return body


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


class PoolGroup(QObject):
    """One pool's row of the box: replicas running/wanted, its load, a scale control and
    its policy; under it a line for a refused save, the autoscaler's last decision and
    warnings (hidden when there is nothing to say)."""

    #: pool, replicas: the operator pressed Apply
    apply_requested = Signal(str, int)
    #: pool, the PUT body: the operator pressed Save
    save_requested = Signal(str, object)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        #: The policy as the server last said it (``None``: not read yet or unavailable).
        self.policy: dict[str, Any] | None = None
        self.running: int | None = None
        self.wanted: int | None = None
        self.planned = False
        self.figures: dict[str, Any] | None = None
        self._filling = False
        #: The operator changed the replicas or the policy and has not applied/saved it.
        self.replicas_edited = False
        self.policy_edited = False
        #: An Apply or Save of this group is in flight.
        self.scaling_to: int | None = None
        self.saving = False
        self.busy = False  # the panel runs an action (this pool's or another's)
        self.can_scale = False  # a backend drives the cluster and it runs

        self.name_label = QLabel(f"<b>{name}</b>")
        self.name_label.setTextFormat(Qt.TextFormat.RichText)
        self.replicas_label = QLabel("—")
        self.figures_label = QLabel("")
        self.figures_label.setObjectName("Hint")
        self.replicas_spin = QSpinBox()
        self.replicas_spin.setRange(0, MAX_REPLICAS)
        self.replicas_spin.setMinimumWidth(72)
        self.replicas_spin.setToolTip(f"How many workers pool {name} should run")
        self.replicas_spin.valueChanged.connect(self._replicas_changed)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip(f"Scale pool {name} to this many workers")
        self.apply_button.clicked.connect(
            lambda: self.apply_requested.emit(self.name, self.replicas_spin.value())
        )
        self.autoscale_check = QCheckBox("on")
        self.autoscale_check.setToolTip(
            "Let the server's autoscaler size this pool on its backlog (jobs waiting and "
            "running per replica)"
        )
        self.min_spin = QSpinBox()
        self.min_spin.setRange(0, MAX_REPLICAS)
        self.max_spin = QSpinBox()
        self.max_spin.setRange(0, MAX_REPLICAS)
        self.target_spin = QDoubleSpinBox()
        self.target_spin.setRange(0.0, 1_000_000.0)
        self.target_spin.setDecimals(1)
        self.target_spin.setSuffix(" /replica")
        self.target_spin.setToolTip("Jobs (waiting or running) per replica the autoscaler aims at")
        self.target_spin.setMinimumWidth(120)
        self.target_spin.valueChanged.connect(self._policy_changed)
        for spin in (self.min_spin, self.max_spin):
            spin.setMinimumWidth(68)
            spin.valueChanged.connect(self._policy_changed)
        self.autoscale_check.toggled.connect(self._policy_changed)
        self.save_button = QPushButton("Save policy")
        self.save_button.clicked.connect(self._save)
        #: The policy's numbers; "—" (their special value, -1) while there is none to show.
        self._policy_spins: list[QSpinBox | QDoubleSpinBox] = [
            self.min_spin,
            self.max_spin,
            self.target_spin,
        ]
        self.policy_expected = False
        #: The cells of the pool's row, in the box's columns.
        self.cells: list[QWidget] = [
            self.name_label,
            self.replicas_label,
            self.figures_label,
            self.replicas_spin,
            self.apply_button,
            self.autoscale_check,
            self.min_spin,
            self.max_spin,
            self.target_spin,
            self.save_button,
        ]
        #: The line under the row: a refused save (the server's 422 naming the field) or
        #: "unsaved changes", the autoscaler's last decision, warnings.
        self.details = QWidget()
        self.details.setObjectName("PoolDetails")
        line = QHBoxLayout(self.details)
        line.setContentsMargins(0, 0, 0, 4)
        self.policy_note = QLabel("")
        self.policy_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel("")
        self.status_label.setObjectName("Hint")
        self.warning_label = QLabel("")
        self.warning_label.setStyleSheet(_WARNING)
        for label in (self.policy_note, self.status_label, self.warning_label):
            label.setWordWrap(True)
            line.addWidget(label, 1)
        self.last_decision: ScaleDecision | None = None
        #: The autoscaler runs a scaling command of this pool now; why its last one failed.
        self.acting = False
        self.last_error = ""
        self.policy_available = False
        self._field_error = ""
        #: The server's max was "none" (the cluster's limit): saved as none unless changed.
        self._max_unset = False
        self._update()

    def delete(self) -> None:
        for widget in [*self.cells, self.details]:
            widget.hide()
            widget.deleteLater()
        self.deleteLater()

    # ---------------------------------------------------------------- operator edits

    def _replicas_changed(self) -> None:
        if not self._filling:
            self.replicas_edited = True
            self._update()

    def _policy_changed(self) -> None:
        if not self._filling:
            self.policy_edited = True
            self._field_error = ""
            for widget in (self.autoscale_check, self.min_spin, self.max_spin, self.target_spin):
                widget.setStyleSheet("")
            self._update()

    def _save(self) -> None:
        maximum: int | None = self.max_spin.value()
        if self._max_unset and maximum == MAX_REPLICAS:
            maximum = None
        self.saving = True
        self._update()
        self.save_requested.emit(
            self.name,
            policy_body(
                self.autoscale_check.isChecked(),
                self.min_spin.value(),
                maximum,
                self.target_spin.value(),
                self.policy,
            ),
        )

    # ---------------------------------------------------------------- readings

    def show_replicas(self, running: int | None, wanted: int | None, planned: bool = False) -> None:
        """The backend's (or the API's) replicas; ``None`` when unknown. ``planned``:
        ``wanted`` is what Start would run (the cluster file's), not what runs now."""
        self.running, self.wanted, self.planned = running, wanted, planned
        self._update()

    def show_figures(self, figures: Mapping[str, Any] | None) -> None:
        """``GET /api/v1/pools``'s entry for this pool (``None``: no reading now)."""
        self.figures = dict(figures) if figures is not None else None
        self._update()

    def show_policy(
        self, entry: Mapping[str, Any] | None, *, planned: bool = False, expected: bool = True
    ) -> None:
        """``GET /api/v1/autoscaler``'s entry for this pool, or the PUT's answer (editable);
        with ``planned`` the cluster file's (what Start would set; read-only). ``None``: no
        policy to show: the fields are blank ("—"), and say so when one was ``expected``
        (the cluster runs)."""
        self.policy_available = entry is not None and not planned
        self.policy_expected = expected and not planned
        if entry is None:
            self.policy = None
            if not self.policy_edited:
                self._filling = True
                for spin in self._policy_spins:
                    spin.setSpecialValueText("—")  # shown at the minimum, -1 here
                    spin.setMinimum(-1)
                    spin.setValue(-1)
                self.autoscale_check.setChecked(False)
                self._filling = False
            self.acting, self.last_error = False, ""
            self._update()
            return
        policy = entry.get("policy")
        self.policy = dict(policy) if isinstance(policy, Mapping) else None
        if not self.policy_edited:
            self._filling = True
            try:
                for spin in self._policy_spins:
                    spin.setSpecialValueText("")  # 0 is a value now (min 0: scale to zero)
                    spin.setMinimum(0)
                self.autoscale_check.setChecked(bool(self.policy and self.policy.get("enabled")))
                self.min_spin.setValue(_int(entry.get("min")) or 0)
                maximum = _int(entry.get("max"))
                self._max_unset = maximum is None
                if maximum is None and planned:  # the cluster's limit, not known here
                    self.max_spin.setSpecialValueText("—")
                    self.max_spin.setMinimum(-1)
                    self.max_spin.setValue(-1)
                else:
                    self.max_spin.setValue(MAX_REPLICAS if maximum is None else maximum)
                target = (self.policy or {}).get("target_backlog")
                default = AutoscalePolicy.model_fields["target_backlog"].default
                self.target_spin.setValue(float(target if target is not None else default))
            finally:
                self._filling = False
        self.acting = bool(entry.get("acting"))
        self.last_error = str(entry.get("last_error") or "")
        self._update()

    def show_decision(self, decision: ScaleDecision) -> None:
        if self.last_decision is None or decision.t >= self.last_decision.t:
            self.last_decision = decision
            self._update()

    def policy_saved(self, entry: Mapping[str, Any] | None) -> None:
        self.saving = False
        self.policy_edited = False
        self._field_error = ""
        if entry is not None:
            self.show_policy(entry)
        self._update()

    def policy_refused(self, message: str, fields: list[str] | None = None) -> None:
        """A 422 (or another failure): the server's message beside the fields, the fields
        it names outlined; the edits stay as the operator made them."""
        self.saving = False
        self._field_error = message
        widgets = {
            "enabled": self.autoscale_check,
            "min": self.min_spin,
            "max": self.max_spin,
            "target_backlog": self.target_spin,
        }
        for name in fields or []:
            widget = widgets.get(name.rsplit(".", 1)[-1])
            if widget is not None:
                widget.setStyleSheet("border-color: #FF6B6B;")
        self._update()

    def scaled(self) -> None:
        self.scaling_to = None
        self.replicas_edited = False
        self._update()

    # ---------------------------------------------------------------- drawing

    def update_view(self) -> None:
        self._update()

    def _update(self) -> None:
        running = "—" if self.running is None else str(self.running)
        wanted = f" of {self.wanted} wanted" if self.wanted is not None else ""
        if self.planned:
            wanted = f" · Start runs {self.wanted}"
        self.replicas_label.setText(f"{running} running{wanted}")
        figures = self.figures
        if figures is None:
            self.figures_label.setText("no reading")
        else:
            queues = ", ".join(figures.get("queues") or [])
            self.name_label.setText(
                f"<b>{self.name}</b><br><span style='color:#8A93A3'>"
                f"{'queue' if len(figures.get('queues') or []) == 1 else 'queues'} {queues}"
                "</span>"
                if queues
                else f"<b>{self.name}</b>"
            )
            rate = figures.get("jobs_per_sec")
            parts = [
                f"{int(figures.get('queued') or 0)} waiting",
                f"{int(figures.get('running') or 0)} running",
                f"oldest {format_seconds(figures.get('oldest_age_s')) or '—'}",
                f"{float(rate):.1f} jobs/s" if rate is not None else "",
            ]
            self.figures_label.setText(" · ".join(p for p in parts if p))
        if (
            not self.replicas_edited
            and self.scaling_to is None
            and not self.replicas_spin.hasFocus()
        ):
            target = self.wanted if self.wanted is not None else self.running
            if target is not None:
                self._filling = True
                self.replicas_spin.setValue(target)
                self._filling = False
        idle = not self.busy
        self.replicas_spin.setEnabled(idle and self.can_scale)
        self.apply_button.setEnabled(idle and self.can_scale)
        self.apply_button.setText("Scaling…" if self.scaling_to is not None else "Apply")
        self.apply_button.setToolTip(
            f"Scale pool {self.name} to this many workers"
            if self.can_scale
            else "Scaling needs a running cluster that this profile drives"
        )
        editable = self.policy_available and not self.saving
        for widget in (self.autoscale_check, self.min_spin, self.max_spin, self.target_spin):
            widget.setEnabled(editable)
        self.save_button.setEnabled(editable and self.policy_edited)
        self.save_button.setText("Saving…" if self.saving else "Save policy")
        if self._field_error:
            self.policy_note.setStyleSheet(_ERROR)
            self.policy_note.setText(self._field_error)
        elif self.policy_edited:
            self.policy_note.setStyleSheet(_WARNING)
            self.policy_note.setText("unsaved changes")
        elif not self.policy_available and self.policy_expected and self.policy is None:
            self.policy_note.setStyleSheet("")
            self.policy_note.setText("policy: no reading from the server's autoscaler")
        else:
            self.policy_note.setStyleSheet("")
            self.policy_note.setText("")
        status = []
        if self.scaling_to is not None:
            status.append(f"scaling to {count_text(self.scaling_to, 'worker')}…")
        if self.last_decision is not None:
            decision = self.last_decision
            at = datetime.fromtimestamp(decision.t).strftime("%H:%M:%S")
            why = f" ({decision.reason})" if decision.reason else ""
            status.append(f"autoscaler at {at}: {decision.old}→{decision.new}{why}")
        if self.acting:
            status.append("the autoscaler is scaling it…")
        self.status_label.setText(" · ".join(status))
        self.status_label.setVisible(bool(status))
        self.policy_note.setVisible(bool(self.policy_note.text()))
        warning = (
            f"⚠ the autoscaler's last scaling failed: {self.last_error}" if self.last_error else ""
        )
        if figures is not None and self.running == 0 and int(figures.get("queued") or 0) > 0:
            autoscaled = bool(self.policy and self.policy.get("enabled"))
            warning = (warning + "\n" if warning else "") + (
                f"⚠ {count_text(int(figures.get('queued') or 0), 'job')} wait and no worker "
                + ("runs: the autoscaler wakes it" if autoscaled else "runs: scale it up")
            )
        self.warning_label.setText(warning)
        self.warning_label.setVisible(bool(warning))
        if self.details.parentWidget() is not None:  # never a window of its own
            self.details.setVisible(bool(self.policy_note.text() or status or warning))


#: The columns of the pools' grid (a pool's cells, :attr:`PoolGroup.cells`, in order).
COLUMNS = [
    "Pool",
    "Replicas",
    "Load",
    "Scale to",
    "",
    "Autoscale",
    "Min",
    "Max",
    "Target backlog",
    "",
]


class PoolsBox(QGroupBox):
    """Every pool of the cluster, ``default`` first, a row each under one header; a line
    for the autoscaler's state and one for queues nothing serves."""

    def __init__(self) -> None:
        super().__init__("Worker pools")
        self.root = QVBoxLayout(self)
        self.root.setSpacing(4)
        self.note = QLabel("")
        self.note.setObjectName("Hint")
        self.note.setWordWrap(True)
        self.root.addWidget(self.note)
        self.unserved_label = QLabel("")
        self.unserved_label.setStyleSheet(_WARNING)
        self.unserved_label.setWordWrap(True)
        self.unserved_label.hide()
        self.root.addWidget(self.unserved_label)
        self.groups: dict[str, PoolGroup] = {}
        self._holder = QWidget()
        self._holder.setObjectName("PoolsGrid")
        self.setStyleSheet("#PoolsGrid, #PoolDetails { background: transparent; }")
        self.grid = QGridLayout(self._holder)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(4)
        for column, title in enumerate(COLUMNS):
            header = QLabel(title)
            header.setObjectName("Hint")
            self.grid.addWidget(header, 0, column)
        self.grid.setColumnStretch(COLUMNS.index("Load"), 1)
        self.root.addWidget(self._holder)

    def group(self, name: str) -> PoolGroup | None:
        return self.groups.get(name)

    def set_pools(self, names: list[str]) -> list[PoolGroup]:
        """Rows for ``names`` (in the console's order); rows of other pools go. The new
        groups, for the panel to connect."""
        ordered = pool_order(names)
        if ordered == list(self.groups):
            return []
        added = []
        for group in self.groups.values():
            for widget in [*group.cells, group.details]:
                self.grid.removeWidget(widget)
        for name in [n for n in self.groups if n not in ordered]:
            self.groups.pop(name).delete()
        for name in ordered:
            if name not in self.groups:
                self.groups[name] = PoolGroup(name)
                added.append(self.groups[name])
        self.groups = {name: self.groups[name] for name in ordered}
        for index, group in enumerate(self.groups.values()):
            row = 1 + 2 * index
            for column, widget in enumerate(group.cells):
                self.grid.addWidget(widget, row, column)
            self.grid.addWidget(group.details, row + 1, 1, 1, len(COLUMNS) - 1)
            group.update_view()
        self.setVisible(bool(ordered))
        return added

    def show_unserved(self, queues: list[str]) -> None:
        if queues:
            listed = ", ".join(repr(q) for q in queues)
            self.unserved_label.setText(
                f"⚠ Jobs wait in {'a queue' if len(queues) == 1 else 'queues'} no pool or "
                f"live worker serves: {listed}. They run once a pool serving "
                f"{'it' if len(queues) == 1 else 'them'} starts."
            )
        self.unserved_label.setVisible(bool(queues))

    def show_note(self, text: str) -> None:
        self.note.setText(text)
        self.note.setVisible(bool(text))
