"""Asking the operator whether to trust an SSH host key the known-hosts file lacks.

The dialog shows the host, its port and each key's type and SHA256 fingerprint (what
``ssh-keygen -lf`` prints on the host, to compare out of band). Reject is the default
button: Enter or Escape never trusts a host. The dialog only asks; the Cluster panel
writes the accepted keys (``accept_host_key``) and retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

__all__ = ["HostKeyDialog"]


def _where(host: str, port: int | None) -> str:
    return host if port in (None, 22) else f"[{host}]:{port}"


class HostKeyDialog(QDialog):
    """ "Trust this host?" for ``keys`` (objects with ``key_type`` and ``fingerprint``)."""

    def __init__(
        self,
        parent: QWidget | None,
        host: str,
        port: int | None,
        keys: Sequence[Any],
        known_hosts: str = "",
    ) -> None:
        super().__init__(parent)
        self.setObjectName("HostKeyDialog")
        self.setWindowTitle("Unknown SSH host key")
        self.setMinimumWidth(620)
        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        where = _where(host, port)
        self.question = QLabel(f"<b>Trust this host?</b> {where} is not in your known hosts.")
        self.question.setWordWrap(True)
        layout.addWidget(self.question)
        self.explanation = QLabel(
            "Compare the fingerprints with what the host's administrator sees "
            "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the host). If they differ, "
            "someone may be posing as the host: reject."
        )
        self.explanation.setObjectName("Hint")
        self.explanation.setWordWrap(True)
        layout.addWidget(self.explanation)

        self.table = QTableWidget(len(keys), 2)
        self.table.setHorizontalHeaderLabels(["Key type", "Fingerprint"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        for row, key in enumerate(keys):
            kind = QTableWidgetItem(str(key.key_type))
            fingerprint = QTableWidgetItem(str(key.fingerprint))
            fingerprint.setFont(mono)
            fingerprint.setToolTip(str(key.fingerprint))
            self.table.setItem(row, 0, kind)
            self.table.setItem(row, 1, fingerprint)
        self.table.resizeColumnToContents(0)
        self.table.setColumnWidth(0, max(self.table.columnWidth(0), 160))
        self.table.setFixedHeight(
            self.table.horizontalHeader().sizeHint().height()
            + max(1, len(keys)) * self.table.verticalHeader().defaultSectionSize()
            + 6
        )
        layout.addWidget(self.table)
        target = known_hosts or "your known-hosts file"
        self.where_label = QLabel(f"Accepted keys are added to {target}.")
        self.where_label.setObjectName("Hint")
        self.where_label.setWordWrap(True)
        self.where_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.where_label)

        self.buttons = QDialogButtonBox()
        self.accept_button = QPushButton("Accept")
        self.accept_button.setObjectName("Danger")
        self.reject_button = QPushButton("Reject")
        self.buttons.addButton(self.accept_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(self.reject_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.accept_button.setAutoDefault(False)
        self.reject_button.setAutoDefault(True)
        self.reject_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.reject_button.setFocus()

    def fingerprints(self) -> list[str]:
        """The fingerprints shown, in order (tests, screenshots)."""
        items = (self.table.item(row, 1) for row in range(self.table.rowCount()))
        return [item.text() for item in items if item is not None]
