"""The Compare page (placeholder until it is built)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..context import AppContext


class ComparePage(QWidget):
    title = "Compare"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName("comparePage")
        QVBoxLayout(self).addWidget(QLabel("Compare"))
