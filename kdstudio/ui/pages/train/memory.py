"""The memory line above the Run button: needed against free, amber with a suggestion when short."""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout, QWidget

from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.widgets.common import keep_lines

STYLES = {
    "ok": "QFrame#memoryFrame { background: #eef7ee; border: 1px solid #9ccc9c; border-radius: 4px; }",
    "warning": "QFrame#memoryFrame { background: #fff4d6; border: 1px solid #e0a800; border-radius: 4px; }",
    "unknown": "QFrame#memoryFrame { background: palette(window); border: 1px solid palette(mid); border-radius: 4px; }",
}


class MemoryLine(QFrame):
    """Shows a core.estimate.MemoryEstimate; ``apply_requested(changes)`` takes the suggestion."""

    apply_requested = Signal(dict)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("memoryFrame")
        self.label = QLabel("Memory: not estimated yet.")
        self.label.setObjectName("memoryEstimate")
        self.label.setAccessibleName("Memory estimate")
        keep_lines(self.label)  # wrapped: as tall as its lines at any width and scale
        self.label.setToolTip("A rough estimate of the memory training needs (teacher, student, "
                              "optimizer state, activations) against what the device has free.")
        self.apply_button = QPushButton("Apply suggestion")
        self.apply_button.setObjectName("applySuggestionButton")
        self.apply_button.setAccessibleName("Apply the memory suggestion")
        self.apply_button.setToolTip("Change the settings as suggested.")
        self.apply_button.setVisible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(6)
        lay.addWidget(self.label)
        lay.addWidget(self.apply_button, 0, Qt.AlignmentFlag.AlignRight)
        self.changes: dict[str, Any] = {}
        self._latest = LatestJob()
        self.apply_button.clicked.connect(lambda: self.apply_requested.emit(dict(self.changes)))
        self._level("unknown")

    @property
    def level(self) -> str:
        return str(self.property("level"))

    def _level(self, level: str) -> None:
        self.setProperty("level", level)
        self.setStyleSheet(STYLES[level])

    def estimate(self, jobs: Any, config: Any, teacher_info: dict | None) -> None:
        """Estimate ``config`` in a job; an answer to an older request is dropped."""
        cfg = copy.deepcopy(config)

        def job() -> Any:
            from kdstudio.core.plan.memory import estimate_for_config

            return estimate_for_config(cfg, teacher_info)

        self.set_busy()
        self._latest.submit(job, self.set_estimate, lambda exc: self.set_error(str(exc)), runner=jobs)

    def set_busy(self) -> None:
        self.label.setText("Memory: estimating\u2026")
        self.apply_button.setVisible(False)
        self._level("unknown")

    def set_error(self, reason: str) -> None:
        self.label.setText(f"Memory estimate unavailable: {reason}")
        self.apply_button.setVisible(False)
        self._level("unknown")

    def set_estimate(self, est: Any) -> None:
        from kdstudio.core.plan.memory import (
            format_mb,  # no torch: safe on the GUI thread
        )

        need = format_mb(est.needed_mb)
        self.changes = dict(est.changes)
        if est.fits is None:
            self.label.setText(f"Memory: about {need} needed; free memory on {est.device} is "
                               f"unknown ({est.note}). {est.suggestion}".strip())
            self._level("warning" if est.suggestion else "unknown")
        elif est.fits:
            self.label.setText(f"Memory: about {need} needed; {format_mb(est.available_mb)} "
                               f"free on {est.device}.")
            self._level("ok")
        else:
            self.label.setText(f"<b>Memory: about {need} needed, but only "
                               f"{format_mb(est.available_mb)} is free on {est.device}.</b> "
                               f"{est.suggestion}")
            self._level("warning")
        self.apply_button.setVisible(est.fits is not True and bool(self.changes))
