"""Make every screenshot the README shows, from the current app, after real runs.

    QT_QPA_PLATFORM=offscreen python packaging/screenshots.py [--steps 180] [--lm-steps 120]
        [--sweep-steps 60] [--out packaging/screenshots]

1-6: the built-in demo run in the window, teacher and student compared on one sentence, then
the Models, Method, Data, Train, Compare and Runs pages. 7: the language-model demo on the
Compare page, with the per-token strip for "The museum". 8: the Tradeoff page after a sweep of
the language-model demo's students with 1 to 3 layers, each also exported as int8 ONNX (the
diamonds). All at 1280x820. Takes a while: it runs the demo, the language-model demo and a
sweep of three students.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PINNED = ["The match was called off because the pitch was flooded.",
          "Fresh bread and cheese from the Saturday market."]
PROBE = "Heavy snow is expected in the hills tonight."
LM_PROBE = "The museum"
SIZE = (1280, 820)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=180, help="the embedding demo's steps")
    ap.add_argument("--lm-steps", type=int, default=120, help="the language-model demo's steps")
    ap.add_argument("--sweep-steps", type=int, default=60, help="steps of each sweep student")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "screenshots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KDSTUDIO_HOME", tempfile.mkdtemp(prefix="kd-shots-"))

    from PySide6.QtWidgets import (QAbstractItemView, QApplication, QLineEdit, QMessageBox,
                                   QPlainTextEdit, QPushButton, QWidget)

    app = QApplication([])
    from kdstudio.ui.main_window import PAGE_KEYS, MainWindow

    w = MainWindow(demo=True)
    w.resize(*SIZE)
    w.show()

    def wait_until(done: Callable[[], bool], seconds: float, what: str) -> None:
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() > end:
                raise SystemExit(f"screenshots: gave up waiting for {what} after {seconds:.0f} s")
            app.processEvents()
            time.sleep(0.02)

    def settle(seconds: float = 60.0) -> None:
        """Let the page's background jobs (previews, counts, model cards) finish first."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and w.jobs.active():
            app.processEvents()
            time.sleep(0.02)
        for _ in range(25):
            app.processEvents()
            time.sleep(0.01)

    finished: list[object] = []
    w.ctx.run_finished.connect(finished.append)

    def run(overrides: list[str], pinned: list[str] | None = None) -> None:
        cfg = w.ctx.config.with_overrides(overrides)
        if pinned is not None:
            cfg.evaluation.pinned_inputs = list(pinned)
        w.ctx.replace_config(cfg)
        settle()
        before = len(finished)
        w.start_run()
        wait_until(lambda: len(finished) > before, 3600, "the run")
        settle()

    def compare(text: str, answered: Callable[[], bool]) -> None:
        w.show_page("compare")
        settle()
        box = w.findChild(QWidget, "compareInput")
        if isinstance(box, QPlainTextEdit):
            box.setPlainText(text)
        elif isinstance(box, QLineEdit):
            box.setText(text)
        button = w.findChild(QPushButton, "compareButton")
        wait_until(lambda: button is not None and button.isEnabled(), 600, "Compare to load the run")
        button.click()
        wait_until(lambda: answered() and not w.jobs.active(), 600, "the comparison")
        settle()

    def shoot(name: str) -> None:
        w.grab().save(str(out / name))
        print(f"  {out / name}")

    # 1-6: the built-in demo.
    run([f"training.max_steps={args.steps}"], PINNED)
    compare(PROBE, lambda: True)  # the click submits the job: done when jobs are idle
    for i, key in enumerate(PAGE_KEYS[:6], 1):
        w.show_page(key)
        settle()
        if key == "runs":  # show the finished run's figures and curves
            table = w.findChild(QAbstractItemView, "runsTable")
            if table is not None and table.model() is not None and table.model().rowCount():
                table.selectRow(0)
                settle()
        shoot(f"{i}-{key}.png")

    # 7: the language-model demo, compared token by token.
    from kdstudio.ui.pages.compare.token_strip import TokenStrip

    w.load_demo("causal-lm")
    run([f"training.max_steps={args.lm_steps}"])
    strip = w.findChild(TokenStrip, "tokenStrip")
    compare(LM_PROBE, lambda: strip is not None and bool(strip.tokens()))
    shoot("7-compare-lm.png")

    # 8: a sweep of the language-model demo's students, each also exported as int8 ONNX.
    w.ctx.replace_config(w.ctx.config.with_overrides([f"training.max_steps={args.sweep_steps}"]))
    w.show_page("tradeoff")
    page = w.pages["tradeoff"]
    wait_until(lambda: bool(page.setup.layer_boxes), 300, "the teacher's layers")
    page.setup.check_layers([1, 2, 3])
    page.setup.int8_box.setChecked(True)
    settle()
    page.start_clicked()
    wait_until(lambda: page.confirm_dialog is not None, 300, "the sweep's plan")
    done: list[str] = []
    page.queue.done.connect(done.append)
    page.confirm_dialog.button(QMessageBox.StandardButton.Yes).click()
    wait_until(lambda: bool(done), 7200, "the sweep")
    settle()
    shoot("8-tradeoff.png")
    w.close()
    print(f"Saved 8 screenshots in {out}")


if __name__ == "__main__":
    main()
