"""Start the desktop app: Qt first, the window at once; torch only when it is needed."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None, *, demo: bool = False) -> int:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1] if argv is None else argv)
    app.setApplicationName("KD Studio")
    app.setOrganizationName("kdstudio")
    app.setApplicationDisplayName("KD Studio")
    from kdstudio.ui.main_window import MainWindow, app_icon

    app.setWindowIcon(app_icon())
    window = MainWindow(demo=demo)
    window.show()
    return app.exec()
