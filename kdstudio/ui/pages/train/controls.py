"""The Train page's run controls: Start, Pause, Stop, and Resume for a stopped run."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from kdstudio.ui.context import AppContext


def _button(text: str, name: str, tip: str) -> QPushButton:
    b = QPushButton(text)
    b.setObjectName(name)
    b.setAccessibleName(text)
    b.setToolTip(tip)
    b.setMinimumHeight(30)
    return b


class RunControls(QWidget):
    """The buttons that start, pause and stop a run, and resume the stopped run on show;
    ``stopping`` says a stop was asked for (the run ends after the current step)."""

    stopping = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName("runControls")
        self.resume_dir = ""           # a stopped run that Resume continues
        self.run_button = _button("Start training", "runButton",
                                  "Check the settings and start distilling (Ctrl+R).")
        font = self.run_button.font()
        font.setBold(True)
        self.run_button.setFont(font)
        self.run_button.setDefault(True)
        self.pause_button = _button("Pause", "pauseButton", "Hold training between two steps; "
                                    "press again to continue.")
        self.stop_button = _button("Stop", "stopButton", "Stop after the current step and keep a "
                                   "checkpoint, so the run can be resumed.")
        self.resume_button = _button("Resume the stopped run", "resumeButton",
                                     "Continue the stopped run from its last checkpoint.")
        self.resume_button.setVisible(False)
        self.run_button.clicked.connect(lambda: self.ctx.start_run())
        self.pause_button.clicked.connect(self.ctx.pause_run)
        self.stop_button.clicked.connect(self._stop)
        self.resume_button.clicked.connect(self._resume)
        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        buttons.addWidget(self.run_button, 2)
        buttons.addWidget(self.pause_button, 1)
        buttons.addWidget(self.stop_button, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        lay.addLayout(buttons)
        lay.addWidget(self.resume_button)

    def _stop(self) -> None:
        self.ctx.stop_run()
        self.stop_button.setEnabled(False)
        self.stopping.emit()

    def _resume(self) -> None:
        if self.resume_dir:
            self.ctx.start_run(resume=Path(self.resume_dir))

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        if not running:
            self.pause_button.setText("Pause")
        if running:
            self.resume_button.setVisible(False)

    def set_paused(self, paused: bool) -> None:
        self.pause_button.setText("Continue" if paused else "Pause")
        self.pause_button.setAccessibleName(self.pause_button.text())

    def offer_resume(self, run_dir: str, on: bool) -> None:
        self.resume_dir = run_dir if on else ""
        self.resume_button.setVisible(on and bool(run_dir))
