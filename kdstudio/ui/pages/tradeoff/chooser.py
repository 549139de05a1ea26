"""The Tradeoff page's chooser of the sweep on show: every sweep on this computer."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from kdstudio.core.sweep.queue import Sweep
from kdstudio.ui.pages.tradeoff.queue_view import sweep_text
from kdstudio.ui.widgets.common import named


class SweepChooser(QWidget):
    """'Sweep:' and a list of sweeps, newest first; ``picked(folder)`` when the user picks one."""

    picked = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = named(QComboBox(), "sweepCombo", "Sweep on show",
                           "Every sweep on this computer, newest first.")
        self.combo.activated.connect(lambda _i: self._combo_picked())
        chooser = QHBoxLayout(self)
        chooser.setContentsMargins(0, 0, 0, 0)
        chooser.addWidget(QLabel("Sweep:"))
        chooser.addWidget(self.combo, 1)

    def fill(self, sweeps: list[Sweep]) -> None:
        """List these sweeps (quietly: filling picks nothing)."""
        self.combo.blockSignals(True)
        self.combo.clear()
        for s in sweeps:
            self.combo.addItem(sweep_text(s), str(s.folder))
            self.combo.setItemData(self.combo.count() - 1, s.id, Qt.ItemDataRole.ToolTipRole)
        self.combo.blockSignals(False)

    def _combo_picked(self) -> None:
        folder = self.combo.currentData()
        if folder:
            self.picked.emit(Path(folder))
