"""Pinned inputs: a list the user edits, with the teacher's and the student's latest answers.

During a run, every evaluation (``Eval.samples``) updates the answers, so the user watches
the student's answers change; each student cell's tooltip holds its answer at every step.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.pages.compare.table import name_parts
from kdstudio.ui.widgets.common import keep_lines
from kdstudio.ui.widgets.pinned import PinnedEditor

MATCH = QColor(46, 160, 67, 45)  # a faint green behind a student answer equal to the teacher's


class PinnedPanel(QGroupBox):
    """The pinned inputs with their answers; the shared editor (``self.editor``) edits the list
    and writes the config. Emits ``inputs_edited(list)`` when the user pins or removes an input."""

    inputs_edited = Signal(list)

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__("Pinned inputs", parent)
        self.setObjectName("pinnedPanel")
        self._answers: dict[str, tuple[str, str]] = {}   # input -> (teacher, student)
        self._history: dict[str, list[tuple[int, str]]] = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        intro = QLabel("The student answers these at every evaluation during training, so you "
                       "can watch it learn. Changes apply to the next run.")
        intro.setWordWrap(True)
        lay.addWidget(intro)

        self.table = _Table(0, 2)
        self.table.setObjectName("pinnedTable")
        self.table.setAccessibleName("Pinned inputs and answers")
        name_parts(self.table, "pinnedTable")
        self.table.setHorizontalHeaderLabels(["Teacher's answer", "Student's answer"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(True)
        self.table.setShowGrid(False)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().sectionResized.connect(lambda *_: self.table.resizeRowsToContents())
        self.empty = QLabel("Nothing pinned yet. Type an input below and press Pin, or press "
                            "'Pin this input' under your own input.")
        self.empty.setObjectName("pinnedEmpty")
        keep_lines(self.empty)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color: palette(placeholder-text); padding: 16px;")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        lay.addWidget(self.stack, 1)

        self.status = QLabel()
        self.status.setObjectName("pinnedStatus")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: palette(placeholder-text);")
        lay.addWidget(self.status)

        self.editor = PinnedEditor(ctx, selected=self._selected)
        self.edit, self.add_button = self.editor.edit, self.editor.add_button
        self.remove_button = self.editor.remove_button
        self.editor.inputs_changed.connect(lambda _inputs: self._refill())
        self.editor.edited.connect(self.inputs_edited)
        self.table.itemSelectionChanged.connect(self.editor.update_buttons)
        lay.addWidget(self.editor)
        self.set_status("")
        self._refill()

    # -- the list ------------------------------------------------------------------------------
    def inputs(self) -> list[str]:
        return self.editor.inputs()

    def pin(self, text: str) -> bool:
        """Add an input (see PinnedEditor.pin); True when the list changed."""
        return self.editor.pin(text)

    def _selected(self) -> list[str]:
        """The pinned inputs of the selected rows (answers of an earlier run's inputs aside)."""
        keys = (i.data(Qt.ItemDataRole.UserRole) for i in self.table.selectedItems())
        return list(dict.fromkeys(k for k in keys if k))

    # -- answers -------------------------------------------------------------------------------
    def clear_answers(self, status: str = "") -> None:
        self._answers.clear()
        self._history.clear()
        self._refill()
        self.set_status(status)

    def show_samples(self, samples: list[dict[str, str]], status: str, step: int | None = None) -> None:
        """Show Eval.samples ([{"input", "teacher", "student"}]); keep a history by step."""
        for s in samples:
            text = s.get("input", "")
            self._answers[text] = (s.get("teacher", ""), s.get("student", ""))
            if step is not None:
                hist = self._history.setdefault(text, [])
                if not hist or hist[-1][0] != step:
                    hist.append((step, s.get("student", "")))
        self._refill()
        self.set_status(status)

    def answer(self, text: str) -> tuple[str, str] | None:
        return self._answers.get(text)

    def set_status(self, text: str) -> None:
        self.status.setText(text or "Answers appear here at the first evaluation of the next run.")

    def _refill(self) -> None:
        """Two rows per input: the input across both columns, then the two answers."""
        inputs = self.editor.inputs()
        extra = [x for x in self._answers if x not in inputs]
        rows = [(x, True) for x in inputs] + [(x, False) for x in extra]
        self.table.clearSpans()
        self.table.setRowCount(2 * len(rows))
        for i, (text, in_list) in enumerate(rows):
            teacher, student = self._answers.get(text, ("", ""))
            head = QTableWidgetItem(text if in_list else f"{text}  (pinned in that run only)")
            font = QFont(head.font())
            font.setBold(True)
            font.setItalic(not in_list)
            head.setFont(font)
            head.setToolTip(text if in_list else f"{text}\n(pinned in that run, not in the list "
                                                    "for the next run)")
            head.setBackground(self.palette().color(QPalette.ColorRole.AlternateBase))
            t_item = QTableWidgetItem(teacher or "–")
            t_item.setToolTip(teacher or "No answer yet: it is answered at the evaluations of the "
                                         "next run.")
            s_item = QTableWidgetItem(student or "–")
            hist = self._history.get(text, [])
            s_item.setToolTip("\n".join(f"step {st}: {a}" for st, a in hist) or student)
            if student and student == teacher:
                s_item.setBackground(MATCH)
                s_item.setToolTip(s_item.toolTip() + "\n(the same as the teacher's answer)")
            key = text if in_list else None
            for r, c, item in ((2 * i, 0, head), (2 * i + 1, 0, t_item), (2 * i + 1, 1, s_item)):
                item.setData(Qt.ItemDataRole.UserRole, key)
                item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
                self.table.setItem(r, c, item)
            self.table.setSpan(2 * i, 0, 1, 2)
        self.table.resizeRowsToContents()
        self.stack.setCurrentIndex(1 if rows else 0)
        self.editor.update_buttons()


class _Table(QTableWidget):
    """A table that asks for little height, so the panel shrinks before the figures above it."""

    def sizeHint(self) -> QSize:
        return QSize(300, 100)

