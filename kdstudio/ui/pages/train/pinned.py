"""Inputs to watch during training (evaluation.pinned_inputs) and the student's answers to them."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.context import AppContext

MAX_PINNED = 20
EMPTY = ("No inputs yet. Add a sentence or a prompt above; during training the student's "
         "answers appear in the \u201cStudent's answers\u201d tab.")


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
    """A small editable list written to ctx.config.evaluation.pinned_inputs."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__("Inputs to watch", parent)
        self.setObjectName("pinnedBox")
        self.ctx = ctx
        self._updating = False
        about = QLabel("The student answers these at every evaluation, so you can watch its "
                       "answers approach the teacher's.")
        about.setObjectName("pinnedAbout")
        about.setWordWrap(True)
        self.list = _PinnedList()
        self.list.setObjectName("pinnedList")
        self.list.setAccessibleName("Inputs to watch")
        self.list.setToolTip("Double-click an input to edit it.")
        self.list.setMinimumHeight(60)
        self.edit = QLineEdit()
        self.edit.setObjectName("pinnedInputEdit")
        self.edit.setAccessibleName("New input to watch")
        self.edit.setPlaceholderText("Type an input and press Enter")
        self.edit.setToolTip("A prompt or sentence the student should answer during training.")
        self.add_button = QPushButton("Add")
        self.add_button.setObjectName("addPinnedButton")
        self.add_button.setAccessibleName("Add the input")
        self.add_button.setToolTip("Add this input to the list.")
        self.remove_button = QPushButton("Remove selected")
        self.remove_button.setObjectName("removePinnedButton")
        self.remove_button.setAccessibleName("Remove the selected input")
        self.remove_button.setToolTip("Remove the selected input from the list.")
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.edit, 1)
        row.addWidget(self.add_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        lay.addWidget(about)
        lay.addLayout(row)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignRight)

        self.edit.returnPressed.connect(self.add_current)
        self.add_button.clicked.connect(self.add_current)
        self.remove_button.clicked.connect(self.remove_selected)
        self.list.itemChanged.connect(lambda _item: self._write())
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.edit.textChanged.connect(self._update_buttons)
        ctx.config_changed.connect(lambda s: self.refresh() if s == "evaluation" and not self._updating else None)
        self.refresh()

    def inputs(self) -> list[str]:
        items = (self.list.item(i).text().strip() for i in range(self.list.count()))
        return [t for t in items if t]

    def refresh(self) -> None:
        self._updating = True
        try:
            self.list.clear()
            for text in self.ctx.config.evaluation.pinned_inputs:
                self._append(text)
        finally:
            self._updating = False
        self._update_buttons()

    def _append(self, text: str) -> None:
        item = QListWidgetItem(text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.list.addItem(item)

    def add_current(self) -> None:
        text = self.edit.text().strip()
        if not text or text in self.inputs() or self.list.count() >= MAX_PINNED:
            return
        self._updating = True
        try:
            self._append(text)
        finally:
            self._updating = False
        self.edit.clear()
        self._write()

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self._write()

    def _write(self) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.ctx.set_value("evaluation", "pinned_inputs", self.inputs())
        finally:
            self._updating = False
        self._update_buttons()

    def _update_buttons(self) -> None:
        text = self.edit.text().strip()
        self.add_button.setEnabled(bool(text) and self.list.count() < MAX_PINNED)
        self.remove_button.setEnabled(bool(self.list.selectedItems()))


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
