"""Inputs to watch during training (evaluation.pinned_inputs) and the student's answers to them."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.context import AppContext
from kdstudio.ui.widgets.pinned import PinnedEditor

EMPTY = ("No inputs yet. Type a sentence or a prompt below and press Pin; during training the "
         "student's answers appear in the \u201cStudent's answers\u201d tab.")


class _PinnedList(QListWidget):
    """A list that says what it is for while it is empty."""

    def paintEvent(self, event: Any) -> None:
        super().paintEvent(event)
        if self.count() == 0:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            rect = self.viewport().rect().adjusted(10, 8, -10, -8)
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap), EMPTY)


class PinnedInputs(QGroupBox):
    """The pinned inputs as an editable list (double-click one to change it); the shared
    editor (``self.editor``) adds, removes and writes ctx.config.evaluation.pinned_inputs."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__("Inputs to watch", parent)
        self.setObjectName("pinnedBox")
        self.ctx = ctx
        about = QLabel("The student answers these at every evaluation, so you can watch its "
                       "answers approach the teacher's.")
        about.setObjectName("pinnedAbout")
        about.setWordWrap(True)
        self.list = _PinnedList()
        self.list.setObjectName("pinnedList")
        self.list.setAccessibleName("Inputs to watch")
        self.list.setToolTip("Double-click an input to edit it.")
        self.list.setMinimumHeight(60)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.editor = PinnedEditor(ctx, selected=lambda: [i.text() for i in self.list.selectedItems()],
                                   narrow=True)
        self.edit, self.add_button = self.editor.edit, self.editor.add_button
        self.remove_button = self.editor.remove_button
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        lay.addWidget(about)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.editor)

        self.editor.inputs_changed.connect(self._show)
        self.list.itemChanged.connect(self._item_edited)
        self.list.itemSelectionChanged.connect(self.editor.update_buttons)
        self._show(self.editor.inputs())

    def inputs(self) -> list[str]:
        return self.editor.inputs()

    def refresh(self) -> None:
        self.editor.refresh()
        self._show(self.editor.inputs())

    def _show(self, inputs: list[str]) -> None:
        if [self.list.item(i).text() for i in range(self.list.count())] == inputs:
            return
        self.list.blockSignals(True)
        try:
            self.list.clear()
            for text in inputs:
                item = QListWidgetItem(text)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
        finally:
            self.list.blockSignals(False)
        self.editor.update_buttons()

    def _item_edited(self, item: QListWidgetItem) -> None:
        # Applied after the edit is committed: the list may be rebuilt, which must not happen
        # while the item is still being written.
        row, text = self.list.row(item), item.text()

        def apply() -> None:
            self.editor.replace(row, text)
            self._show(self.editor.inputs())  # a refused edit shows the old text again

        QTimer.singleShot(0, self, apply)


class AnswersTable(QWidget):
    """The student's (and teacher's) answers to the watched inputs at the latest evaluation;
    each student answer's tooltip lists its answers at every evaluation so far."""

    CAPTION = "The student's answers to the inputs you watch appear here at each evaluation."

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._history: dict[str, list[tuple[int, str]]] = {}
        self.caption = QLabel(self.CAPTION)
        self.caption.setObjectName("answersCaption")
        self.caption.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("answersTable")
        self.table.setAccessibleName("The student's answers")
        self.table.setHorizontalHeaderLabels(["Input", "Student", "Teacher"])
        self.table.horizontalHeader().setObjectName("answersTableHeader")
        self.table.verticalHeader().setObjectName("answersTableRowHeader")
        self.table.findChild(QAbstractButton).setObjectName("answersTableCorner")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.setAlternatingRowColors(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.caption)
        lay.addWidget(self.table, 1)

    def clear(self) -> None:
        """A new run: no answers, no history."""
        self.table.setRowCount(0)
        self._history.clear()
        self.caption.setText(self.CAPTION)

    def history(self, text: str) -> list[tuple[int, str]]:
        """The student's answers to one input so far, as (step, answer)."""
        return list(self._history.get(text, []))

    def show_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        self.caption.setText(f"Answers at step {step}:")
        self.table.setRowCount(len(samples))
        for r, s in enumerate(samples):
            text, student = str(s.get("input", "") or ""), str(s.get("student", "") or "")
            hist = self._history.setdefault(text, [])
            if hist and hist[-1][0] == step:  # the final evaluation repeats the last step
                hist[-1] = (step, student)
            else:
                hist.append((step, student))
            for c, key in enumerate(("input", "student", "teacher")):
                value = str(s.get(key, "") or "")
                item = QTableWidgetItem(value)
                item.setToolTip(value)
                self.table.setItem(r, c, item)
            if len(hist) > 1:
                self.table.item(r, 1).setToolTip(
                    "The student's answer at each evaluation:\n"
                    + "\n".join(f"step {st}: {a}" for st, a in hist))
        self.table.resizeRowsToContents()
