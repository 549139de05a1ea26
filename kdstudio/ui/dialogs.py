"""Error and question dialogs with specific titles and plain sentences."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget


def show_error(parent: QWidget | None, title: str, message: str) -> QMessageBox:
    """A window-modal error that does not block the event loop (so nothing freezes behind it)."""
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorDialog")
    box.setAccessibleName(title)
    box.open()
    return box


def show_exception(parent: QWidget | None, exc: BaseException) -> QMessageBox:
    """An engine error shows its own title; anything else is an unexpected error."""
    from kdstudio.core.errors import KDStudioError

    if isinstance(exc, KDStudioError):  # config keys become the pages' controls
        from kdstudio.ui.widgets.config_words import app_words

        return show_error(parent, exc.title,
                          app_words(str(exc), parent.window() if parent is not None else None))
    return show_error(parent, "Unexpected error",
                      f"Something went wrong that KD Studio did not expect: "
                      f"{type(exc).__name__}: {exc}")


def show_warning(parent: QWidget | None, title: str, message: str) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("warningDialog")
    box.open()
    return box
