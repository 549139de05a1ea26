"""The Compare page's line for a run that read its teacher's answers from the cache: what
needs the teacher itself (answers side by side on new text), and a button to load it."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

# summary.json's teacher_targets.teacher_weights (core.setup.Targets): what the run did with
# the teacher's weights. Older runs have no such key: they held the teacher.
NEVER, LET_GO = "never loaded", "let go after its pass"


def teacher_not_held(summary: dict[str, Any]) -> bool:
    """True for a run whose steps and measurements read the teacher's cached answers, so its
    teacher is not loaded until the user asks for it."""
    return (summary.get("teacher_targets") or {}).get("teacher_weights") in (NEVER, LET_GO)


def note_text(summary: dict[str, Any]) -> str:
    """The line that says what needs the teacher itself, with the size of its weights."""
    how = (summary.get("teacher_targets") or {}).get("teacher_weights")
    first = ("This run read the teacher's answers from its cache and never loaded the teacher."
             if how == NEVER else
             "This run read the teacher's answers from its cache; it read the teacher's "
             "weights once (for the pass that wrote the cache, or to derive the student) and "
             "then let them go.")
    mb = summary.get("teacher_size_mb")
    if isinstance(mb, (int, float)) and mb > 0:
        size = f"its weights, {mb:,.0f} MB" if mb >= 100 else \
            f"its weights, {mb:.1f} MB" if mb >= 1 else f"its weights, {mb:.2f} MB"
    else:  # a run that did not measure its teacher's files
        size = "its weights"
    return (f"{first} Side-by-side answers on new text need the teacher itself ({size}); the "
            "figures on the right and the pinned answers do not.")


class TeacherNote(QFrame):
    """The note and its "Load the teacher" button; emits load_requested."""

    load_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("compareTeacherNote")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 8)
        self.text = QLabel()
        self.text.setObjectName("compareTeacherNoteText")
        self.text.setWordWrap(True)
        self.button = QPushButton("Load the teacher")
        self.button.setObjectName("compareLoadTeacherButton")
        self.button.setAccessibleName("Load the teacher")
        self.button.setToolTip("Loads the teacher (in the background) so that it answers your "
                               "input beside the student.")
        self.button.clicked.connect(self.load_requested)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.button)
        self.hide()

    def show_for(self, summary: dict[str, Any]) -> None:
        """Show the note for a run that did not hold its teacher; hide it for any other."""
        self.setVisible(teacher_not_held(summary))
        self.text.setText(note_text(summary))
        self.button.setEnabled(True)
        self.button.setVisible(True)

    def loading(self) -> None:
        self.button.setEnabled(False)

    def loaded(self) -> None:
        self.text.setText("The teacher is loaded: type an input and press Compare to see both "
                          "answers side by side.")
        self.button.setVisible(False)

    def failed(self) -> None:
        self.button.setEnabled(True)
