"""The Tradeoff page's banner over a sweep that did not finish (or runs in another process)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from kdstudio.core.sweep.queue import Sweep
from kdstudio.ui.pages.tradeoff.queue_view import when
from kdstudio.ui.widgets.common import named


class ResumeBanner(QFrame):
    """Says why the sweep on show is unfinished; its Resume button emits ``resume_requested``."""

    resume_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sweepResumeBanner")
        self.setStyleSheet("QFrame#sweepResumeBanner { background: #fff4e0; "
                           "border: 1px solid #e0b060; border-radius: 4px; }")
        self.label = QLabel()
        self.label.setObjectName("sweepResumeText")
        self.label.setWordWrap(True)
        self.resume_button = named(QPushButton("Resume it"), "bannerResumeButton", "Resume it",
                                   "Run the rest of this sweep; a stopped run continues from its "
                                   "checkpoint.")
        self.resume_button.setMinimumHeight(30)
        self.resume_button.clicked.connect(lambda: self.resume_requested.emit())
        blay = QHBoxLayout(self)
        blay.setContentsMargins(10, 6, 10, 6)
        blay.addWidget(self.label, 1)
        blay.addWidget(self.resume_button)
        self.setVisible(False)

    def show_for(self, s: Sweep | None, queue_idle: bool) -> None:
        """Shown for a sweep on show that did not finish (when no queue runs here) or that
        runs in another process."""
        show = (s is not None and queue_idle and s.is_unfinished()
                and not s.runner_alive())
        if show:
            self.label.setText(f"<b>This sweep did not finish</b> ({when(s.created)}: "
                               f"{s.describe()}). Resume runs the rest; a stopped run "
                               "continues from its checkpoint.")
        elif s is not None and s.runner_alive():
            show = True
            self.label.setText(f"This sweep is running in another process (pid "
                               f"{s.runner.get('pid')}); its points appear as its runs "
                               "finish. Press Refresh in a while.")
        self.resume_button.setVisible(s is not None and not s.runner_alive())
        self.setVisible(show)
