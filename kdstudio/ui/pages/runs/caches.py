"""The teacher caches on this computer: size on disk, which runs used each, and deleting them.

A cache holds a teacher's top-k next-token answers for one data set and length, written by
one teacher pass; runs, resumes and the students of a sweep read it instead of running the
teacher. Deleting one loses nothing a run needs to show its results: the next run that
wants it writes it again.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.teacher_source import size_text
from kdstudio.ui.dialogs import show_error
from kdstudio.ui.glossary import attach

COLUMNS = [("Teacher", "The teacher whose answers are stored."),
           ("Answers kept per word", "How many of the teacher's likeliest next words are "
                                     "kept for each word of the data; the rest are too unlikely "
                                     "to matter."),
           ("Words stored", "How many words (tokens) of the training data have the teacher's "
                            "answers stored, each once."),
           ("Size", "Space on disk."),
           ("Disk per word", "Bytes on disk for each stored word's answers."),
           ("Created", "When the teacher pass wrote it."),
           ("Used by", "The runs that read it instead of running the teacher.")]


class TeacherCachesDialog(QDialog):
    """A table of the caches with a Delete button; reads the cache folder when opened."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from kdstudio.core.teacher_cache import cache_root

        self.setObjectName("teacherCachesDialog")
        self.setWindowTitle("Teacher caches")
        self.resize(900, 360)
        intro = QLabel(
            "A teacher cache holds a teacher's likeliest next words for one data set and "
            "length, written by one teacher pass. Runs, resumes and the students of a sweep on "
            "the same teacher, data and length read it instead of running the teacher at every "
            "step. Deleting one only costs a teacher pass the next time it is needed.<br>"
            f"<span style='color: #666666;'>Kept in {cache_root()}</span>")
        intro.setWordWrap(True)
        intro.setObjectName("cachesIntro")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("cachesTable")
        self.table.setAccessibleName("Teacher caches")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        for i, (title, tip) in enumerate(COLUMNS):
            item = QTableWidgetItem(title)
            item.setToolTip(tip)
            self.table.setHorizontalHeaderItem(i, item)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.total = QLabel()
        self.total.setObjectName("cachesTotal")
        self.delete_button = QPushButton("Delete...")
        self.delete_button.setObjectName("deleteCacheButton")
        self.delete_button.setToolTip("Delete the selected caches (asks first).")
        self.delete_button.clicked.connect(self.delete_selected)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        box.addButton(self.delete_button, QDialogButtonBox.ButtonRole.ActionRole)
        box.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.total)
        lay.addWidget(box)
        self.caches: list[Any] = []
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.refresh()
        attach(self)

    def refresh(self) -> None:
        from kdstudio.core.teacher_cache import list_caches

        self.caches = list_caches()
        self.table.setRowCount(len(self.caches))
        for row, c in enumerate(self.caches):
            used = ", ".join(c.used_by) if c.used_by else "no run yet"
            values = [c.teacher, str(c.k), f"{c.tokens:,}", size_text(c.size_bytes),
                      f"{c.bytes_per_token:.0f}", c.created[:16].replace("T", " "), used]
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                if 1 <= col <= 4:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(f"key {c.key}" if col == 0 else text)
                self.table.setItem(row, col, item)
        total = sum(c.size_bytes for c in self.caches)
        self.total.setText(f"{len(self.caches)} cache(s), {size_text(total)} on disk." if self.caches
                           else "No teacher caches yet. A run with the teacher cache set to "
                                "'Always', or a sweep of language models, writes one.")
        self._selection_changed()

    def _selection_changed(self) -> None:
        self.delete_button.setEnabled(bool(self.selected()))

    def selected(self) -> list[Any]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.caches[r] for r in rows if r < len(self.caches)]

    def delete_selected(self, *, confirm: bool = True) -> None:
        from kdstudio.core.teacher_cache import delete_cache

        chosen = self.selected()
        if not chosen:
            return
        size = size_text(sum(c.size_bytes for c in chosen))
        if confirm:
            answer = QMessageBox.question(
                self, "Delete teacher caches?" if len(chosen) > 1 else "Delete this teacher cache?",
                f"Delete {len(chosen)} teacher cache(s), {size} on disk? Runs that used them keep "
                "their results; a run that needs one again writes it with one teacher pass.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        for c in chosen:
            try:
                delete_cache(c.path)
            except (OSError, ValueError) as exc:
                show_error(self, "Could not delete the cache",
                           f"The cache {c.key[:12]} could not be deleted: {exc}. Check that no "
                           "run is reading it and that its folder is writable.")
                break
        self.refresh()
