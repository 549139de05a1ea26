"""Bad input through the window: each gives a titled dialog, the app keeps running, and
nothing saved is lost (a folder that is not a model dropped on the Models page, a broken CSV,
Start with a teacher that is not there, a damaged checkpoint on Resume)."""

import threading

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QAbstractButton, QMessageBox

from kdstudio.core.events import Step
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow
WAIT = 120000


def _dialog(widget):
    boxes = [b for b in widget.findChildren(QMessageBox, "errorDialog") if b.isVisible()]
    return boxes[0] if boxes else None


def test_a_folder_that_is_not_a_model_dropped_on_the_models_page(qtbot, tmp_path):
    w = open_window(qtbot, "models", demo=True)
    page = w.pages["models"]
    qtbot.waitUntil(lambda: page.ready, timeout=WAIT)
    # Dropped while the demo's own teacher still loads: the drop supersedes that load, the
    # dialog names what is wrong, and the run's teacher is loaded again.
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "beach.txt").write_text("not a model")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    centre = page.teacher_col.mapTo(page, page.teacher_col.rect().center())
    page.dropEvent(QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime,
                              Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: _dialog(page.teacher_chooser) is not None, timeout=WAIT)
    box = _dialog(page.teacher_chooser)
    assert box.windowTitle() == "Teacher could not be loaded"
    assert "holiday-photos" in box.text() and "no config.json" in box.text()
    assert w.isVisible() and w.ctx.config.teacher.name == "all-MiniLM-L6-v2"
    box.accept()
    qtbot.waitUntil(lambda: "22,713,216" in page.teacher_card.values["parameters"].text(),
                    timeout=WAIT)


def test_a_broken_csv_on_the_data_page(qtbot, tmp_path):
    w = open_window(qtbot, "data", demo=True)
    page = w.pages["data"]
    qtbot.waitUntil(lambda: page.table.rowCount() > 0, timeout=WAIT)
    broken = tmp_path / "reviews.csv"
    broken.write_text("review,sentiment\n")  # a header and no rows
    page.source.file_edit.setText(str(broken))
    qtbot.mouseClick(page.source.file_radio, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _dialog(page) is not None, timeout=WAIT)
    box = _dialog(page)
    assert box.windowTitle() == "Data problem"
    assert "reviews.csv" in box.text() and "is empty" in box.text()
    assert w.isVisible() and page.source.file_edit.text() == str(broken)
    box.accept()


def test_start_with_a_teacher_that_is_not_there(qtbot, tmp_path, tiny):
    w = open_window(qtbot, "train", demo=True)
    missing = tmp_path / "gone-teacher"
    w.ctx.replace_config(tiny_config("causal-lm", missing))
    page = w.pages["train"]
    with qtbot.waitSignal(w.ctx.run_finished, timeout=WAIT) as finished:
        qtbot.mouseClick(page.controls.run_button, Qt.MouseButton.LeftButton)
    assert finished.args[0] is None
    qtbot.waitUntil(lambda: _dialog(w) is not None, timeout=WAIT)
    box = _dialog(w)
    assert box.windowTitle() == "Model could not be loaded"
    assert "gone-teacher" in box.text() and "does not exist" in box.text()
    assert w.isVisible() and page.controls.run_button.isEnabled() and not w.training.is_running()
    box.accept()


def test_a_damaged_checkpoint_on_resume(qtbot, tiny):
    stop = threading.Event()
    cfg = tiny_config("causal-lm", tiny["gpt2"], name="damaged", training={"max_steps": 4})
    result = run_training(cfg, lambda e: stop.set() if isinstance(e, Step) else None, stop)
    assert result.status == "stopped"
    (cp,) = (result.run_dir / "checkpoints").iterdir()
    weights = cp / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # a crash mid-copy
    w = open_window(qtbot, "runs")
    page = w.pages["runs"]
    qtbot.waitUntil(lambda: page.proxy.rowCount() == 1, timeout=WAIT)
    with qtbot.waitSignal(page.details_shown, timeout=WAIT):
        page.select_paths([str(result.run_dir)])
    with qtbot.waitSignal(w.ctx.run_finished, timeout=WAIT):
        page.findChild(QAbstractButton, "resumeButton").click()
    qtbot.waitUntil(lambda: _dialog(w) is not None, timeout=WAIT)
    box = _dialog(w)
    assert box.windowTitle() == "Run problem"
    assert cp.name in box.text() and "damaged" in box.text()
    assert w.isVisible() and not w.training.is_running()
    # Nothing saved is lost: the checkpoint and the run stay, still resumable.
    assert weights.exists() and (result.run_dir / "config.toml").exists()
    import json

    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "stopped"
    box.accept()


def test_quality_above_100_percent_is_explained_in_the_app():
    from kdstudio.core.events import Finished
    from kdstudio.ui.pages.train.log import describe

    text, _ = describe(Finished(status="finished", run_dir="", summary={"quality_retained": 1.117}))
    assert "112% (above the teacher)" in text and "Above 100% means" in text
    text, _ = describe(Finished(status="finished", run_dir="", summary={"quality_retained": 0.9}))
    assert "90%" in text and "above" not in text
