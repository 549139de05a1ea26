"""The Data page's preview table of the first rows, and its box of counts (rows, tokens)."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from kdstudio.core.tasks import Task, get_task
from kdstudio.ui.widgets.common import keep_lines

TEXT_TINT = QColor(46, 125, 220, 28)   # the column used as text
LABEL_TINT = QColor(60, 170, 90, 32)   # the column used as labels
MAX_CELL = 300


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "\u2026"


class PreviewTable(QTableWidget):
    """Read-only first rows; the text and label columns are tinted and their headers bold."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("previewTable")
        self.setAccessibleName("First rows of the data")
        self.setToolTip("The first rows of the chosen split. The tinted columns are the ones "
                        "used: blue for the text, green for the labels.")
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        # A long text wraps within its column (at most 520px wide) rather than being cut.
        self.setWordWrap(True)
        self.horizontalHeader().setObjectName("previewTableHeader")
        self.verticalHeader().setObjectName("previewTableRowHeader")
        self.findChild(QAbstractButton).setObjectName("previewTableCorner")
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().setDefaultSectionSize(24)
        self.columns: list[str] = []

    def show_rows(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        self.columns = list(columns)
        self.clear()
        self.setColumnCount(len(columns))
        self.setRowCount(len(rows))
        self.setHorizontalHeaderLabels(columns)
        for r, row in enumerate(rows):
            for c, name in enumerate(columns):
                value = row.get(name)
                item = QTableWidgetItem(_cell(value))
                item.setToolTip(str(value)[:2000] if value is not None else "")
                self.setItem(r, c, item)
        self.resizeColumnsToContents()
        for c in range(len(columns)):  # long texts must not push the other columns away
            self.setColumnWidth(c, min(max(self.columnWidth(c), 80), 520))
        self.resizeRowsToContents()

    def mark(self, text_column: str | None, label_column: str | None) -> None:
        """Tint and embolden the columns in use."""
        for c, name in enumerate(self.columns):
            role = "text" if name == text_column else "labels" if name == label_column else ""
            header = QTableWidgetItem(f"{name}  ({role})" if role else name)
            font = QFont(header.font())
            font.setBold(bool(role))
            header.setFont(font)
            header.setToolTip(f"Used as the {role}" if role else "Not used")
            self.setHorizontalHeaderItem(c, header)
            tint = TEXT_TINT if role == "text" else LABEL_TINT if role == "labels" else None
            for r in range(self.rowCount()):
                item = self.item(r, c)
                if item is not None:
                    item.setBackground(QBrush(tint) if tint else QBrush())


def _value_label(name: str, accessible: str) -> QLabel:
    label = QLabel("\u2013")
    label.setObjectName(name)
    label.setAccessibleName(accessible)
    return keep_lines(label)


class CountsBox(QGroupBox):
    """How much data there is: rows in the split, rows used for training and evaluation, tokens."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("How much data", parent)
        self.setObjectName("dataCountsBox")
        self.rows = _value_label("rowsLabel", "Rows in the split")
        self.used = _value_label("usedRowsLabel", "Rows for training and evaluation")
        self.tokens = _value_label("tokensLabel", "Tokens")
        self.tokens.setToolTip("Tokens are the pieces of words models read. Counted with the "
                               "teacher's tokenizer; on large data a sample is counted and "
                               "scaled up, so the figure is an estimate.")
        self.cut = _value_label("cutLabel", "Rows cut to the maximum length")
        self.classes = _value_label("classesLabel", "Classes")
        form = QFormLayout(self)
        form.setContentsMargins(12, 10, 12, 10)
        form.setVerticalSpacing(8)
        form.setLabelAlignment(form.labelAlignment())
        form.addRow("Rows in this split:", self.rows)
        form.addRow("Training / evaluation:", self.used)
        form.addRow("Tokens for training:", self.tokens)
        form.addRow("Rows cut short:", self.cut)
        form.addRow("Classes:", self.classes)
        self.form = form

    def clear_counts(self, message: str = "\u2013") -> None:
        for label in (self.rows, self.used, self.tokens, self.cut, self.classes):
            label.setText(message if label is self.rows else "\u2013")

    def set_preview(self, preview: Any, task: str | Task) -> None:
        task = get_task(task)
        self.rows.setText(f"{preview.num_rows:,}")
        names = list(preview.label_names or [])
        if task.needs_labels and names:
            shown = ", ".join(names[:8]) + (", \u2026" if len(names) > 8 else "")
            self.classes.setText(f"{len(names)}: {shown}")
        elif task.needs_labels:
            self.classes.setText("no label column found")
        elif task.uses_labels and preview.label_column:
            self.classes.setText(f"optional; '{preview.label_column}' is used to measure how "
                                 "often neighbours share a topic")
        else:
            self.classes.setText("not needed for this task")

    def set_counting(self) -> None:
        self.used.setText("counting\u2026")
        self.tokens.setText("counting\u2026")
        self.cut.setText("\u2013")

    def set_counts(self, est: Any, max_length: int, packed: bool, tokens_note: str = "") -> None:
        self.used.setText(f"{est.train_rows:,} / {est.eval_rows:,} rows")
        if est.tokens is None:
            self.tokens.setText(tokens_note or "unknown")
            self.cut.setText("\u2013")
            return
        approx = "" if est.exact else "about "
        how = ("counted exactly" if est.exact else
               f"estimated from {est.sampled_rows:,} of {est.train_rows:,} rows")
        used = (f"{approx}{est.used_tokens:,} used after cutting to {max_length}"
                if est.used_tokens != est.tokens else "")
        self.tokens.setText(f"{approx}{est.tokens:,} ({how})" + (f"; {used}" if used else ""))
        if packed:
            self.cut.setText(f"none: texts are joined into blocks of {max_length} tokens")
        else:
            share = "none" if est.cut_share == 0 else f"{est.cut_share:.0%}"
            self.cut.setText(f"{share} of the rows are longer than {max_length} tokens")

    def set_count_error(self, message: str) -> None:
        self.used.setText("\u2013")
        self.tokens.setText(message)
        self.cut.setText("\u2013")
