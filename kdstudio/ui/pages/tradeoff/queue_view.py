"""The Tradeoff page's queue view: a sweep's runs in order, with their status and quality."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from kdstudio.core.sweep.queue import Sweep
from kdstudio.ui.pages.runs.model import STATUS_COLORS
from kdstudio.ui.widgets.common import named

STATUS_WORDS = {"pending": "waiting", "running": "running", "finished": "finished",
                "stopped": "stopped", "interrupted": "interrupted", "failed": "failed"}


def when(created: str) -> str:
    """'27 Nov 21:26' from an ISO timestamp."""
    try:
        return _dt.datetime.fromisoformat(created).strftime("%d %b %H:%M")
    except ValueError:
        return created


def sweep_text(s: Sweep) -> str:
    """How a sweep is named in the page's chooser."""
    teacher = Path(s.base.teacher.name.rstrip("/\\")).name or s.base.teacher.name
    return f"{when(s.created)} \u00b7 {teacher} \u00b7 {s.describe()}"


class QueueView(QTableWidget):
    """``run_activated(run_dir)`` when a started run's row is double-clicked."""

    run_activated = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, 4, parent)
        named(self, "sweepQueueTable", "Sweep queue",
              "The sweep's runs in the order they run, and where each stands; double-click a "
              "started one to open it.")
        self.setHorizontalHeaderLabels(["#", "Student", "Status", "Quality retained"])
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setMinimumHeight(120)
        self.cellDoubleClicked.connect(self._activated)

    def fill(self, sweep: Sweep | None, quality: dict[str, Any],
             exporting: Any = None) -> None:
        """Show the sweep's entries; ``quality`` maps run folders to quality retained;
        ``exporting`` is the entry whose int8 export is under way."""
        entries = sweep.entries if sweep else []
        self.setRowCount(len(entries))
        for i, e in enumerate(entries):
            status = sweep.entry_status(e)
            word = STATUS_WORDS.get(status, status)
            if exporting is not None and e.index == exporting.index:
                word = "exporting int8\u2026"
            elif e.note:
                word += " (no int8)"
            q = quality.get(e.run_dir)
            cells = [str(e.index + 1), e.label, word, "" if q is None else f"{q:.1%}"]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, e.run_dir)
                if c == 2:
                    item.setForeground(QBrush(QColor(STATUS_COLORS.get(status, "#6d6d6d"))))
                    item.setToolTip(e.error or e.note or e.run_dir or "Not started yet.")
                self.setItem(i, c, item)

    def status_texts(self) -> list[str]:
        return [self.item(i, 2).text() for i in range(self.rowCount())]

    def _activated(self, row: int, _col: int) -> None:
        item = self.item(row, 0)
        if item is not None and item.data(Qt.ItemDataRole.UserRole):
            self.run_activated.emit(item.data(Qt.ItemDataRole.UserRole))
