"""Start the desktop app: Qt first, the window at once; torch only when it is needed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None, *, demo: bool = False) -> int:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1] if argv is None else argv)
    app.setApplicationName("KD Studio")
    app.setOrganizationName("kdstudio")
    app.setApplicationDisplayName("KD Studio")
    from kdstudio.ui.main_window import MainWindow, app_icon

    app.setWindowIcon(app_icon())
    window = MainWindow(demo=demo, deferred=True)
    window.show()
    shown_file = os.environ.get("KDSTUDIO_SHOWN_FILE")
    if shown_file:
        # Start-up measurements (packaging/build_frozen.py --measure): the Unix time at which the
        # event loop first runs with the window shown, written where the measurer asked.
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, lambda: Path(shown_file).write_text(f"{time.time():.3f}\n"))
    return app.exec()
