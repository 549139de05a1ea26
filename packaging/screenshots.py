"""Save a screenshot of each page of the app after a real demo run (the README shows them).

    QT_QPA_PLATFORM=offscreen python packaging/screenshots.py [--steps 180] [--out packaging/screenshots]

It runs the built-in demo in the window, compares teacher and student on one sentence,
then grabs every page at 1280x820.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PINNED = ["The match was called off because the pitch was flooded.",
          "Fresh bread and cheese from the Saturday market."]
PROBE = "Heavy snow is expected in the hills tonight."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=180)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "screenshots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KDSTUDIO_HOME", tempfile.mkdtemp(prefix="kd-shots-"))

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import (QAbstractItemView, QApplication, QLineEdit, QPlainTextEdit,
                                   QPushButton, QWidget)

    app = QApplication([])
    from kdstudio.ui.main_window import PAGE_KEYS, MainWindow

    w = MainWindow(demo=True)
    w.resize(1280, 820)
    w.show()
    cfg = w.ctx.config.with_overrides([f"training.max_steps={args.steps}"])
    cfg.evaluation.pinned_inputs = list(PINNED)
    w.ctx.replace_config(cfg)

    def text_of(name: str) -> str:
        widget = w.findChild(QWidget, name)
        if widget is None:
            return ""
        for child in [widget, *widget.findChildren(QWidget)]:
            if isinstance(child, (QPlainTextEdit,)):
                if child.toPlainText().strip():
                    return child.toPlainText()
            elif hasattr(child, "text") and callable(child.text) and str(child.text()).strip():
                if child is widget or not isinstance(child, QPushButton):
                    return str(child.text())
        return ""

    def compare() -> None:
        w.show_page("compare")
        box = w.findChild(QWidget, "compareInput")
        if isinstance(box, QPlainTextEdit):
            box.setPlainText(PROBE)
        elif isinstance(box, QLineEdit):
            box.setText(PROBE)
        button = w.findChild(QPushButton, "compareButton")
        tries = {"n": 0}

        def press_when_ready() -> None:  # the page loads the run's models first
            tries["n"] += 1
            if button is not None and button.isEnabled():
                button.click()
                QTimer.singleShot(500, wait_answer)
            elif tries["n"] < 240:
                QTimer.singleShot(250, press_when_ready)
            else:
                shoot()

        def wait_answer() -> None:
            tries["n"] += 1
            if text_of("studentOutput") or tries["n"] > 480:
                QTimer.singleShot(300, shoot)
            else:
                QTimer.singleShot(250, wait_answer)

        press_when_ready()

    def settle(seconds: float = 30.0) -> None:
        """Let the page's background jobs (previews, counts, model cards) finish first."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            if w.jobs.active() == 0:
                break
            time.sleep(0.02)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.01)

    def shoot() -> None:
        for i, key in enumerate(PAGE_KEYS, 1):
            w.show_page(key)
            settle()
            if key == "runs":  # show the finished run's figures and curves
                table = w.findChild(QAbstractItemView, "runsTable")
                if table is not None and table.model() is not None and table.model().rowCount():
                    table.selectRow(0)
                    settle()
            w.grab().save(str(out / f"{i}-{key}.png"))
        app.quit()

    w.ctx.run_finished.connect(lambda r: QTimer.singleShot(1500, compare))
    QTimer.singleShot(500, w.start_run)
    app.exec()
    print(f"Saved {len(PAGE_KEYS)} screenshots in {out}")


if __name__ == "__main__":
    main()
