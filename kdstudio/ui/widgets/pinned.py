"""The one pinned-inputs editor: ``evaluation.pinned_inputs``, edited the same way on every page.

The editor is the input line, the Pin and Remove buttons and a note under them; it tidies
what is typed (spaces collapsed, blanks ignored), refuses duplicates and more than
``MAX_PINNED`` inputs, saying why, and writes the config field itself. A page shows the inputs
its own way (Compare with the answers, Train as a list) and tells the editor what the user
selected there:

    self.editor = PinnedEditor(ctx, selected=self._selected_inputs)
    self.editor.inputs_changed.connect(self._refill)   # the list changed: here, elsewhere, a new config
    view.itemSelectionChanged.connect(self.editor.update_buttons)
    lay.addWidget(self.editor)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from kdstudio.ui.widgets.common import fit_placeholder, named

MAX_PINNED = 20  # each one is answered at every evaluation: more would slow the run down


def tidy(text: str) -> str:
    """An input as it is pinned: one line, single spaces."""
    return " ".join(str(text).split())


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


class PinnedEditor(QWidget):
    """Edits ``ctx.config.evaluation.pinned_inputs``.

    ``inputs_changed(list)`` whenever the list changes, whoever changed it (the views redraw
    on it); ``edited(list)`` only after the user changed it here. ``selected()`` (given by the
    page) returns the inputs selected in the page's view, for Remove. ``narrow`` puts the
    buttons under the line, for a narrow column."""

    inputs_changed = Signal(list)
    edited = Signal(list)

    def __init__(self, ctx: Any, selected: Callable[[], list[str]] | None = None, *,
                 narrow: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("pinnedEditor")
        self.ctx = ctx
        self.selected = selected or (lambda: [])
        self._inputs: list[str] = list(ctx.config.evaluation.pinned_inputs)

        self.edit = named(QLineEdit(), "pinnedInputEdit", "New pinned input",
                          "A prompt or sentence the student should answer at every evaluation "
                          "during training.")
        fit_placeholder(self.edit, "Type an input to pin and press Enter\u2026")
        self.add_button = named(QPushButton("Pin"), "pinnedAddButton", "Pin the typed input",
                                f"Add the text on the left to the pinned inputs (at most "
                                f"{MAX_PINNED}).")
        self.remove_button = named(QPushButton("Remove"), "pinnedRemoveButton",
                                   "Remove the selected pinned inputs",
                                   "Remove the selected inputs from the list.")
        self.note = QLabel()
        self.note.setObjectName("pinnedNote")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #8a5a00;")
        self.note.setVisible(False)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        if narrow:
            lay.addWidget(self.edit)
            row.addStretch(1)
        else:
            row.addWidget(self.edit, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        lay.addLayout(row)
        lay.addWidget(self.note)

        self.edit.returnPressed.connect(self.pin_typed)
        self.edit.textChanged.connect(lambda _t: self.update_buttons())
        self.add_button.clicked.connect(self.pin_typed)
        self.remove_button.clicked.connect(self.remove_selected)
        ctx.config_replaced.connect(self.refresh)
        ctx.config_changed.connect(lambda section: self.refresh() if section == "evaluation" else None)
        self.update_buttons()

    # -- the list ------------------------------------------------------------------------------
    def inputs(self) -> list[str]:
        return list(self._inputs)

    def refresh(self) -> None:
        """Take the config's list (after a new config, or an edit elsewhere)."""
        inputs = list(self.ctx.config.evaluation.pinned_inputs)
        if inputs != self._inputs:
            self._inputs = inputs
            self.say("")
            self.inputs_changed.emit(self.inputs())
        self.update_buttons()

    def pin(self, text: str) -> bool:
        """Add an input; False (and a note saying why) when it is blank, pinned already or the
        list is full."""
        text = tidy(text)
        if not text:
            return False
        if text in self._inputs:
            self.say(f"'{_short(text)}' is already pinned.")
            return False
        if len(self._inputs) >= MAX_PINNED:
            self.say(f"{MAX_PINNED} inputs are the most that can be pinned: remove one first.")
            return False
        self._write(self._inputs + [text])
        return True

    def remove(self, texts: list[str]) -> bool:
        """Remove these inputs; True when the list changed."""
        gone = set(texts)
        keep = [x for x in self._inputs if x not in gone]
        if keep == self._inputs:
            return False
        self._write(keep)
        return True

    def replace(self, index: int, text: str) -> bool:
        """Change the input at ``index`` (edited in place); an emptied one is removed. False,
        with a note, when it would duplicate another."""
        if not 0 <= index < len(self._inputs):
            return False
        text = tidy(text)
        if text == self._inputs[index]:
            return False
        if text and text in self._inputs:
            self.say(f"'{_short(text)}' is already pinned.")
            return False
        new = list(self._inputs)
        if text:
            new[index] = text
        else:
            del new[index]
        self._write(new)
        return True

    def pin_typed(self) -> None:
        if self.pin(self.edit.text()):
            self.edit.clear()

    def remove_selected(self) -> None:
        self.remove(self.selected())

    def _write(self, inputs: list[str]) -> None:
        self._inputs = inputs
        self.say("")
        self.ctx.set_value("evaluation", "pinned_inputs", list(inputs))
        self.inputs_changed.emit(self.inputs())
        self.edited.emit(self.inputs())
        self.update_buttons()

    # -- showing -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A short note under the line (why an input was not pinned); '' hides it."""
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def update_buttons(self) -> None:
        full = len(self._inputs) >= MAX_PINNED
        self.add_button.setEnabled(bool(self.edit.text().strip()) and not full)
        self.add_button.setToolTip(
            f"{MAX_PINNED} inputs are pinned, the most there can be: remove one first." if full
            else f"Add the text on the left to the pinned inputs (at most {MAX_PINNED}).")
        self.remove_button.setEnabled(bool(self.selected()))
