"""A YAML code editor: line numbers, syntax highlighting, and a marked error line."""

from __future__ import annotations

import re

from PySide6.QtCore import QRect, QRegularExpression, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QPainter,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import QPlainTextEdit, QTextEdit, QWidget

__all__ = ["QtYamlEditor", "YamlHighlighter", "declared_name", "first_error_line"]


def _format(color: str, bold: bool = False, italic: bool = False) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(color))
    if bold:
        fmt.setFontWeight(QFont.Weight.Bold)
    fmt.setFontItalic(italic)
    return fmt


class YamlHighlighter(QSyntaxHighlighter):
    """Keys, strings, numbers, booleans, comments and ``{{ templates }}``."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self.rules: list[tuple[QRegularExpression, QTextCharFormat]] = [
            (QRegularExpression(r"^\s*-?\s*[\w.\-]+(?=\s*:)"), _format("#7CC4FF")),
            (QRegularExpression(r"\b(true|false|null|yes|no)\b"), _format("#FF9F5A")),
            (QRegularExpression(r"(?<![\w.])-?\d+(\.\d+)?\b"), _format("#E0B341")),
            (QRegularExpression(r"\"[^\"]*\"|'[^']*'"), _format("#A8E6A1")),
            (
                QRegularExpression(r"\b(Input|Output|Data_Processing|AI|Debug)\.\w+"),
                _format("#C792EA", bold=True),
            ),
            (QRegularExpression(r"\{\{[^}]*\}\}"), _format("#36C5D6", bold=True)),
            (QRegularExpression(r"^\s*-(?=\s)"), _format("#8A93A3")),
            (QRegularExpression(r"(^|\s)#.*$"), _format("#6C7586", italic=True)),
        ]

    def highlightBlock(self, text: str) -> None:
        for pattern, fmt in self.rules:
            matches = pattern.globalMatch(text)
            while matches.hasNext():
                match = matches.next()
                self.setFormat(match.capturedStart(), match.capturedLength(), fmt)


class _LineNumbers(QWidget):
    def __init__(self, editor: QtYamlEditor) -> None:
        super().__init__(editor)
        self.editor = editor

    def sizeHint(self) -> QSize:
        return QSize(self.editor.line_number_width(), 0)

    def paintEvent(self, event) -> None:
        self.editor.paint_line_numbers(event)


class QtYamlEditor(QPlainTextEdit):
    """The editor; :meth:`mark_error` underlines a line and tints its number."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Code")
        font = QFont("DejaVu Sans Mono")
        font.setStyleHint(QFont.StyleHint.Monospace)
        font.setPointSize(10)
        self.setFont(font)
        self.setTabStopDistance(self.fontMetrics().horizontalAdvance(" ") * 2)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.highlighter = YamlHighlighter(self.document())
        self.numbers = _LineNumbers(self)
        self.error_line: int | None = None
        self.error_message = ""
        self.blockCountChanged.connect(self._update_margin)
        self.updateRequest.connect(self._on_update_request)
        self.cursorPositionChanged.connect(self._refresh_selections)
        self._update_margin()

    # ---------------------------------------------------------------- gutter

    def line_number_width(self) -> int:
        digits = max(3, len(str(self.blockCount())))
        return 14 + self.fontMetrics().horizontalAdvance("9") * digits

    def _update_margin(self) -> None:
        self.setViewportMargins(self.line_number_width(), 0, 0, 0)

    def _on_update_request(self, rect: QRect, dy: int) -> None:
        if dy:
            self.numbers.scroll(0, dy)
        else:
            self.numbers.update(0, rect.y(), self.numbers.width(), rect.height())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        rect = self.contentsRect()
        self.numbers.setGeometry(
            QRect(rect.left(), rect.top(), self.line_number_width(), rect.height())
        )

    def paint_line_numbers(self, event) -> None:
        painter = QPainter(self.numbers)
        painter.fillRect(event.rect(), QColor("#111419"))
        block = self.firstVisibleBlock()
        number = block.blockNumber()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        bottom = top + round(self.blockBoundingRect(block).height())
        height = self.fontMetrics().height()
        current = self.textCursor().blockNumber()
        while block.isValid() and top <= event.rect().bottom():
            if block.isVisible() and bottom >= event.rect().top():
                line = number + 1
                if line == self.error_line:
                    painter.fillRect(0, top, self.numbers.width(), height, QColor("#4A2228"))
                    painter.setPen(QColor("#FF8A8A"))
                elif number == current:
                    painter.setPen(QColor("#D7DCE4"))
                else:
                    painter.setPen(QColor("#545C6B"))
                painter.drawText(
                    0, top, self.numbers.width() - 6, height, Qt.AlignmentFlag.AlignRight, str(line)
                )
            block = block.next()
            top = bottom
            bottom = top + round(self.blockBoundingRect(block).height())
            number += 1
        painter.end()

    # ---------------------------------------------------------------- error marking

    def mark_error(self, line: int | None, message: str = "") -> None:
        """Mark 1-based ``line`` as wrong (``None`` clears)."""
        self.error_line = line
        self.error_message = message
        self._refresh_selections()
        self.numbers.update()

    def _refresh_selections(self) -> None:
        selections: list[QTextEdit.ExtraSelection] = []
        current = QTextEdit.ExtraSelection()
        current.format.setBackground(QColor("#1A1E26"))
        current.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        current.cursor = self.textCursor()
        current.cursor.clearSelection()
        selections.append(current)
        if self.error_line is not None:
            block = self.document().findBlockByNumber(self.error_line - 1)
            if block.isValid():
                error = QTextEdit.ExtraSelection()
                error.format.setBackground(QColor("#3A1D22"))
                error.format.setUnderlineColor(QColor("#FF6B6B"))
                error.format.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
                error.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
                error.cursor = QTextCursor(block)
                error.cursor.movePosition(
                    QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor
                )
                selections.append(error)
        self.setExtraSelections(selections)


def first_error_line(errors: list[dict]) -> tuple[int | None, str]:
    """The first issue's line (1-based) and a readable message for all issues."""
    line = next((e.get("line") for e in errors if e.get("line")), None)
    parts = []
    for issue in errors:
        where = []
        if issue.get("line"):
            where.append(f"line {issue['line']}")
        if issue.get("step_name"):
            where.append(f"step {issue['step_name']!r}")
        if issue.get("field"):
            where.append(f"field {issue['field']}")
        prefix = f"{', '.join(where)}: " if where else ""
        parts.append(prefix + str(issue.get("message", "")))
    return line, "\n".join(parts)


_NAME_RE = re.compile(r"^name:\s*['\"]?([\w.\-]+)", re.MULTILINE)


def declared_name(yaml_text: str) -> str | None:
    match = _NAME_RE.search(yaml_text)
    return match.group(1) if match else None
