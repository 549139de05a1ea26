"""Small helpers every page uses."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtWidgets import QComboBox, QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str, accessible: str, tip: str = "") -> W:
    """Give a widget its objectName, accessible name and tooltip (tests and screen readers use them)."""
    widget.setObjectName(name)
    if isinstance(widget, QComboBox):  # its popup list is a widget of its own
        widget.view().setObjectName(f"{name}Popup")
    widget.setAccessibleName(accessible)
    if tip:
        widget.setToolTip(tip)
    return widget
